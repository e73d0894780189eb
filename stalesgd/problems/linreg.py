"""Linear least squares: the strongly convex reference problem.

Model ``f(x) = x · θ`` with ``θ`` of length ``d`` and **no bias term** (add a
constant column to ``X`` if one is wanted).  Loss convention:

    F(θ) = ½ · mean_i (x_i · θ − y_i)²

so the gradient is ``Xᵀ(Xθ − y)/n`` and the Hessian is ``XᵀX/n``: its
largest and smallest eigenvalues are the smoothness ``L`` and strong
convexity ``μ`` constants (exposed by the registry's ``Problem``).
``y`` has the parameter dtype.  ``loss_kernel`` returns the summed loss
``½ Σ r_i²`` and 0 correct predictions.

Workspace for a batch of B rows: ``B·d`` (gathered rows) + ``B`` (residuals).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from stalesgd.jitcache import cached
from stalesgd.problems._kernels import (
    check_scheme,
    gather_rows,
    init_weight,
    n_cols,
    scalar_like,
)
from stalesgd.problems.base import Model, resolve_dtype


@cached
@njit(nogil=True, fastmath=False)
def _residuals(theta, X, y, idx, ws):
    """Gather the minibatch, r = X[idx] θ − y[idx]; returns (rows, r, ½Σr² in float64)."""
    B = idx.shape[0]
    d = n_cols(X)
    Xb = ws[: B * d].reshape((B, d))
    r = ws[B * d : B * d + B]
    gather_rows(X, idx, Xb)
    np.dot(Xb, theta, r)
    half_sq = 0.0
    for i in range(B):
        v = r[i] - y[idx[i]]
        r[i] = v
        half_sq += 0.5 * np.float64(v) * np.float64(v)
    return Xb, r, half_sq


@cached
@njit(nogil=True, fastmath=False)
def linreg_grad_kernel(theta, X, y, idx, grad, ws, dims):
    """½·mean squared residual of ``X[idx]`` and its gradient ``Xᵀr/B`` into ``grad``."""
    B = idx.shape[0]
    Xb, r, half_sq = _residuals(theta, X, y, idx, ws)
    inv_b = scalar_like(1.0 / B, ws)
    for i in range(B):
        r[i] *= inv_b
    np.dot(Xb.T, r, grad)
    return half_sq / B


@cached
@njit(nogil=True, fastmath=False)
def linreg_loss_kernel(theta, X, y, idx, ws, dims):
    """Summed ½ squared residuals over ``X[idx]`` and 0 (no accuracy for regression)."""
    _, _, half_sq = _residuals(theta, X, y, idx, ws)
    return half_sq, 0


@dataclass(kw_only=True)
class LinearRegression(Model):
    """Least squares without bias: ``LinearRegression(n_features=d, dtype="float64")``.

    Default initialisation: Glorot uniform with fan_in = d, fan_out = 1.
    """

    n_features: int

    def __post_init__(self) -> None:
        self.dtype = resolve_dtype(self.dtype)
        if int(self.n_features) <= 0:
            raise ValueError(f"n_features={self.n_features!r} is not allowed; must be positive")
        d = int(self.n_features)
        self.name = "linreg"
        self.dims = np.array([d], dtype=np.int64)
        self.layers = {"w": (0, (d,))}
        self.n_params = d
        self.is_classifier = False

    @property
    def grad_kernel(self) -> Any:
        """``linreg_grad_kernel`` (contract in ``base``)."""
        return linreg_grad_kernel

    @property
    def loss_kernel(self) -> Any:
        """``linreg_loss_kernel`` (contract in ``base``)."""
        return linreg_loss_kernel

    def workspace_size(self, batch: int) -> int:
        """Gathered rows plus residuals: ``batch * (d + 1)``."""
        if int(batch) <= 0:
            raise ValueError(f"batch={batch!r} is not allowed; must be positive")
        return int(batch) * (int(self.n_features) + 1)

    def init_params(self, seed: int, scheme: str = "default") -> np.ndarray:
        """Seeded weights (``default`` = ``glorot``; ``he`` and ``normal`` as in ``base``)."""
        check_scheme(scheme)
        s = "glorot" if scheme == "default" else scheme
        d = int(self.n_features)
        rng = np.random.default_rng(seed)
        return init_weight(rng, d, 1, s, (d,)).astype(self.dtype)
