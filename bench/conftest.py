"""Shared set-up for the kernel benchmarks: single-threaded BLAS and a GEMM yardstick.

Every benchmark here runs with BLAS held to one thread (threadpoolctl, for
NumPy's and SciPy's OpenBLAS alike; Numba calls SciPy's), because that is how
the worker kernels run.  ``gemm_reference(dtype)`` measures, once per run and
per precision, the single-core GEMM GFLOP/s that kernel results are compared
with.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache

import numpy as np
import pytest
import scipy.linalg.cython_blas  # noqa: F401  - load SciPy's BLAS so threadpoolctl can limit it
from numba import njit
from threadpoolctl import threadpool_limits

from stalesgd.problems._kernels import n_rows

#: The yardstick GEMM: a standard square size (n = 1024, 2n³ FLOPs per product).
GEMM_N = 1024


@pytest.fixture(scope="session", autouse=True)
def blas_one_thread():
    """Hold every BLAS library to one thread for the whole benchmark session."""
    with threadpool_limits(limits=1):
        yield


@njit(nogil=True)
def _numba_gemm(a, b, c, reps):
    for _ in range(reps):
        np.dot(a, b, c)


def best_seconds(fn: Callable[[], object], rounds: int = 7) -> float:
    """Shortest wall time of ``rounds`` calls of ``fn`` after one warm-up call.

    The best time is used for the *yardsticks* (GEMM, NumPy reference): it is
    the least disturbed by other processes on a shared machine, which makes the
    yardstick as high, and the kernels' ratios to it as strict, as possible.
    """
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(min(times))


@cache
def gemm_reference(dtype: str) -> dict[str, float | str]:
    """Single-core GEMM GFLOP/s of ``dtype`` on a 1024³ product, measured now.

    Measured through NumPy (its OpenBLAS) and through Numba's ``np.dot`` (SciPy's
    OpenBLAS, the one the kernels call); ``gemm_gflops`` is the larger, so the
    kernels are held to the best this core does.
    """
    dt = np.dtype(dtype)
    rng = np.random.default_rng(0)
    a = rng.random((GEMM_N, GEMM_N)).astype(dt)
    b = rng.random((GEMM_N, GEMM_N)).astype(dt)
    c = np.empty((GEMM_N, GEMM_N), dtype=dt)
    reps = 4 if dt == np.float32 else 2
    flops = 2.0 * GEMM_N**3 * reps
    with threadpool_limits(limits=1):
        t_np = best_seconds(lambda: [np.dot(a, b, out=c) for _ in range(reps)])
        t_nb = best_seconds(lambda: _numba_gemm(a, b, c, reps))
    g_np, g_nb = flops / t_np / 1e9, flops / t_nb / 1e9
    return {
        "gemm_gflops": max(g_np, g_nb),
        "gemm_numpy_gflops": g_np,
        "gemm_numba_gflops": g_nb,
        "gemm_shape": f"{GEMM_N}x{GEMM_N}x{GEMM_N}",
    }


@pytest.fixture(scope="session")
def gemm() -> Callable[[str], dict[str, float | str]]:
    """``gemm(dtype)`` -> the run's single-core GEMM yardstick (see ``gemm_reference``)."""
    return gemm_reference


@pytest.fixture(scope="session")
def best_time() -> Callable[..., float]:
    """``best_time(fn, rounds=7)`` -> shortest wall time of ``fn()`` (see ``best_seconds``)."""
    return best_seconds


@njit(nogil=True)
def _bare_sgd(kernel, theta, X, y, idx, grad, ws, dims, n):
    rows = n_rows(X)
    for _ in range(n):
        for i in range(idx.shape[0]):
            idx[i] = np.random.randint(0, rows)
        kernel(theta, X, y, idx, grad, ws, dims)
        for j in range(theta.shape[0]):
            theta[j] -= 0.01 * grad[j]


def bare_sgd_seconds(problem, batch: int, n: int, repeats: int = 3, inputs=None) -> float:
    """Median wall time of ``n`` plain SGD steps (minibatch draw, gradient kernel, update) in
    one nopython loop: what an engine or the simulator cannot avoid, the yardstick for their
    overhead.  ``inputs`` replaces the data set's training inputs (e.g. a dense float copy)."""
    theta = problem.init_params(0)
    d = problem.dataset
    X = d.inputs("train") if inputs is None else inputs
    args = (problem.model.grad_kernel, theta, X, d.y_train,
            np.zeros(batch, np.int64), np.zeros_like(theta), problem.workspace(batch),
            problem.model.dims)
    _bare_sgd(*args, 10)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _bare_sgd(*args, n)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


@pytest.fixture(scope="session")
def bare_sgd():
    """:func:`bare_sgd_seconds`, for benchmarks to compare against."""
    return bare_sgd_seconds
