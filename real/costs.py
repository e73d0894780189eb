"""Micro-measurement of this machine's per-parameter kernels, for the simulator's timing model.

The simulator charges every update a read (copy of θ), an update (θ −= η·g), for Leashed-SGD
a fused copy-and-apply (dst = src − η·g), and one compare-and-swap per publish or claim.
The records of a real run cannot separate these from the compute (the timestamps bracket
them together), so calibration measures them here with the same loops and the same atomic
the engines use: single thread, warm caches, no contention.  The figures are seconds per
parameter (copy, apply, fused) and seconds per operation (CAS).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit

from stalesgd.memory import line_copy, line_zeros

from .atomics import atomic_cas

__all__ = ["measure_costs"]


@njit(nogil=True)
def _copy_loop(dst, src, reps):
    for _ in range(reps):
        for j in range(src.shape[0]):
            dst[j] = src[j]


@njit(nogil=True)
def _apply_loop(theta, grad, eta, reps):
    for _ in range(reps):
        for j in range(theta.shape[0]):
            theta[j] -= eta * grad[j]


@njit(nogil=True)
def _fused_loop(dst, src, grad, eta, reps):
    for _ in range(reps):
        for j in range(src.shape[0]):
            dst[j] = src[j] - eta * grad[j]


@njit(nogil=True)
def _cas_loop(arr, reps):
    for r in range(reps):
        atomic_cas(arr, 0, r, r + 1)


def _time_per_call(fn: Callable[..., None], args: tuple, budget: float = 0.004,
                   repeats: int = 5) -> float:
    """Median seconds per repetition of ``fn(*args, reps)``, each timing ~``budget`` seconds."""
    fn(*args, 1)  # compile
    reps = 16
    while True:
        t = time.perf_counter()
        fn(*args, reps)
        dt = time.perf_counter() - t
        if dt >= budget or reps >= 1 << 24:
            break
        reps *= 4 if dt < budget / 8 else 2
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args, reps)
        times.append((time.perf_counter() - t) / reps)
    return float(np.median(times))


def measure_costs(n_params: int, dtype: str = "float64") -> dict[str, Any]:
    """Per-parameter copy, apply and fused copy-apply costs (seconds) and one uncontended
    compare-and-swap (seconds), measured on this machine with the engines' loops.

    Returns ``read_per_param``, ``update_per_param``, ``fused_per_param``, ``cas_cost``,
    ``cas_source`` (how the CAS figure was obtained), ``n_params`` and ``dtype``.
    """
    if isinstance(n_params, bool) or int(n_params) != n_params or int(n_params) < 1:
        raise ValueError(f"n_params={n_params!r} is not allowed; must be an integer >= 1")
    n = int(n_params)
    rng = np.random.default_rng(0)
    # on cache lines: where malloc puts an array decides half the time that it sits 16
    # bytes off a 32-byte boundary, which applied 25-40 % slower in float64 here, so the
    # figures would change from one call to the next.  (The engines' θ of lock, Hogwild! and
    # sync is on a line; Leashed-SGD's pool rows and the Ray workers' copies need not be.)
    src = line_copy(rng.standard_normal(n).astype(dtype))
    dst = line_zeros(n, dtype)
    grad = line_copy(rng.standard_normal(n).astype(dtype) * 1e-6)
    copy = _time_per_call(_copy_loop, (dst, src))
    apply = _time_per_call(_apply_loop, (dst, grad, 1e-3))
    fused = _time_per_call(_fused_loop, (dst, src, grad, 1e-3))
    cas = _time_per_call(_cas_loop, (np.zeros(8, dtype=np.int64),))
    return {
        "read_per_param": copy / n,
        "update_per_param": apply / n,
        "fused_per_param": fused / n,
        "cas_cost": cas,
        "cas_source": "micro-benchmark (uncontended)",
        "n_params": n,
        "dtype": str(dtype),
    }
