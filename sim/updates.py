"""The update arithmetic of numeric replay, written once for every loop that applies one.

θ ← θ − η g element by element, exactly as the real engine's workers do, and the ``sync``
round's θ ← θ − (η/m) Σ_w g_w summed in worker order as the real ``sync`` loop: the one-core
replay, the several-core pipeline and the i.i.d.-staleness mode all call these, so their θ
are the same bits.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from stalesgd.jitcache import cached

__all__ = ["apply_mean_step", "apply_step"]


@cached
@njit(nogil=True)
def apply_step(theta: np.ndarray, grad: np.ndarray, eta: float) -> None:
    """θ ← θ − η g element by element, exactly as the real engine's workers do."""
    for j in range(theta.shape[0]):
        theta[j] -= eta * grad[j]


@cached
@njit(nogil=True)
def apply_mean_step(theta: np.ndarray, grads: np.ndarray, eta: float) -> None:
    """θ ← θ − (η/m) Σ_w g_w over the m rows of ``grads``, summed in row order per element."""
    m = grads.shape[0]
    scale = eta / m
    for j in range(theta.shape[0]):
        acc = 0.0
        for v in range(m):
            acc += grads[v, j]
        theta[j] -= scale * acc
