"""The arithmetic of the distributed engine, compiled: the same loops, in the same order, as
the thread engine's workers (:mod:`stalesgd.real.workers`), so that one worker's run equals
the thread engine's ``seq`` bit for bit (same minibatch draws, same update rounding)."""

from __future__ import annotations

import numpy as np
from numba import njit

from stalesgd.jitcache import cached

from ..sampling import draw_batch

__all__ = ["apply_mean", "apply_step", "draw_rows", "publish_step", "seed_draws"]


@cached
@njit(nogil=True)
def seed_draws(seed: int) -> None:
    """Seed this thread's minibatch draws (Numba's generator, as the thread workers do)."""
    np.random.seed(seed)


@cached
@njit(nogil=True)
def draw_rows(sampler: np.ndarray, rows: np.ndarray, n_rows: int) -> None:
    """The next minibatch into ``rows``, as the thread engine's workers draw it
    (:func:`stalesgd.real.sampling.draw_batch`)."""
    draw_batch(sampler, rows, n_rows)


@cached
@njit(nogil=True)
def apply_step(theta: np.ndarray, grad: np.ndarray, eta: float) -> None:
    """θ ← θ − η g, element by element."""
    for j in range(theta.shape[0]):
        theta[j] -= eta * grad[j]


@cached
@njit(nogil=True)
def publish_step(dst: np.ndarray, src: np.ndarray, grad: np.ndarray, eta: float) -> None:
    """dst ← src − η g (Leashed-SGD's new vector)."""
    for j in range(dst.shape[0]):
        dst[j] = src[j] - eta * grad[j]


@cached
@njit(nogil=True)
def apply_mean(theta: np.ndarray, grads: np.ndarray, eta: float) -> None:
    """θ ← θ − (η/m) Σ_w g_w over the m rows of ``grads``, summed in worker order."""
    n_workers = grads.shape[0]
    scale = eta / n_workers
    for j in range(theta.shape[0]):
        acc = 0.0
        for w in range(n_workers):
            acc += grads[w, j]
        theta[j] -= scale * acc
