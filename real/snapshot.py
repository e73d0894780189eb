"""Copies of θ for the monitor (evaluations, the elastic controller, the final parameters),
taken while the workers run and without stopping them.

Which copy an algorithm gets follows from its registry facts
(:mod:`stalesgd.algorithms`): a pooled algorithm (Leashed-SGD) copies its published
vector, which is immutable; another consistent one copies θ under the lock its workers
apply under; an inconsistent one (Hogwild!) copies θ as it is, racing the workers, since no
consistent state exists.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

from stalesgd.algorithms import Algorithm
from stalesgd.jitcache import cached

from .atomics import atomic_load
from .control import C_LOCK, C_VERSION
from .pool import acquire_latest, release
from .spinlock import spin_lock_acquire, spin_lock_release

__all__ = ["snapshot_function", "snapshot_locked", "snapshot_pooled", "snapshot_racy"]


@njit(nogil=True, inline="always")
def _copy(src: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = src`` for two 1-D arrays of one length, as a plain loop: the slice
    assignment compiles NumPy's broadcasting and its error messages (string formatting),
    about 20 MB of compiler memory per snapshot function."""
    if out.shape[0] != src.shape[0]:
        raise ValueError("snapshot: the output and the parameter vector differ in length")
    for j in range(src.shape[0]):
        out[j] = src[j]


@cached
@njit(nogil=True)
def snapshot_locked(pool: np.ndarray, refs: np.ndarray, out: np.ndarray,
                    ctrl: np.ndarray) -> int:
    """Copy θ (``pool[0]``) under the lock (a consistent snapshot); return its version."""
    spin_lock_acquire(ctrl, C_LOCK)
    _copy(pool[0], out)
    v = atomic_load(ctrl, C_VERSION)
    spin_lock_release(ctrl, C_LOCK)
    return v


@cached
@njit(nogil=True)
def snapshot_racy(pool: np.ndarray, refs: np.ndarray, out: np.ndarray,
                  ctrl: np.ndarray) -> int:
    """Copy θ (``pool[0]``) without a lock and return the version read before the copy."""
    v = atomic_load(ctrl, C_VERSION)
    _copy(pool[0], out)
    return v


@cached
@njit(nogil=True)
def snapshot_pooled(pool: np.ndarray, refs: np.ndarray, out: np.ndarray,
                    ctrl: np.ndarray) -> int:
    """Copy the published vector of the pool (consistent: published vectors are
    immutable) and return its version."""
    size = pool.shape[0]
    p = acquire_latest(refs, ctrl, size)
    b = p % size
    _copy(pool[b], out)
    release(refs, b, ctrl)
    return p // size


def snapshot_function(alg: Algorithm) -> Callable[..., int]:
    """The snapshot that fits ``alg``: ``fn(pool, refs, out, ctrl) -> version``."""
    if alg.pooled:
        return snapshot_pooled
    return snapshot_locked if alg.consistent else snapshot_racy
