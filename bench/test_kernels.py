"""Gradient-kernel benchmarks: MLP 784-128-10, one SGD update = gradient + θ -= η g.

Timed function: one Numba call that does ``R`` updates in a loop (gradient
kernel on a fresh minibatch, then the SGD step), so Python overhead is
excluded.  Each result's ``extra_info`` records, all measured in the same run
with BLAS on one thread:

* ``updates_per_s`` and ``gflops`` (nominal FLOPs per update
  ``3 · 2B(784·128 + 128·10)``: the forward pass and twice that backward);
  ``gflops_executed`` counts what the kernel really multiplies (the first
  layer's input gradient is never formed, so backward is ≈ 1× forward);
* ``gemm_gflops``: single-core GEMM of the same precision (see conftest);
* ``numpy_updates_per_s``: the same update written in plain NumPy, one
  Python step per update, as the reference.

The kernel's rate comes from the *median* of the timed rounds; the
yardsticks (GEMM, NumPy) from their *best* round — on a shared machine this
errs against the kernel.

Targets: batch 128 at ≥ 60 % of ``gemm_gflops``; batch 16 no slower
than NumPy.  Data are random (784 features, 10 classes); speed does not
depend on their values.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from stalesgd.problems._kernels import sgd_step
from stalesgd.problems.mlp import MLP

N_ROWS = 4096
SIZES = (784, 128, 10)
ETA = 1e-3


@njit(nogil=True)
def run_updates(grad_kernel, theta, X, y, idx_all, batch, grad, ws, dims, eta, n_updates):
    """``n_updates`` SGD updates on consecutive minibatches of ``idx_all`` (wrapping)."""
    per_pass = idx_all.shape[0] // batch
    loss = 0.0
    for k in range(n_updates):
        j = k % per_pass
        loss = grad_kernel(theta, X, y, idx_all[j * batch : (j + 1) * batch], grad, ws, dims)
        sgd_step(theta, grad, eta)
    return loss


def numpy_update(theta, X, y, idx, eta, views):
    """The same MLP update in plain NumPy (fresh temporaries, as NumPy code is written)."""
    W1, b1, W2, b2 = views
    Xb = X[idx]
    Z1 = Xb @ W1 + b1
    A1 = np.maximum(Z1, 0)
    Z2 = A1 @ W2 + b2
    Z2 -= Z2.max(axis=1, keepdims=True)
    P = np.exp(Z2)
    P /= P.sum(axis=1, keepdims=True)
    B = len(idx)
    rows = np.arange(B)
    loss = -np.log(P[rows, y[idx]]).mean()
    P[rows, y[idx]] -= 1
    P /= B
    gW2 = A1.T @ P
    gb2 = P.sum(axis=0)
    dZ1 = (P @ W2.T) * (Z1 > 0)
    gW1 = Xb.T @ dZ1
    gb1 = dZ1.sum(axis=0)
    W1 -= eta * gW1
    b1 -= eta * gb1
    W2 -= eta * gW2
    b2 -= eta * gb2
    return loss


def nominal_flops(batch: int) -> float:
    """Issue's count: forward 2B(784·128 + 128·10), backward twice that."""
    fwd = 2.0 * batch * (SIZES[0] * SIZES[1] + SIZES[1] * SIZES[2])
    return 3.0 * fwd


def executed_flops(batch: int) -> float:
    """GEMM FLOPs the kernel performs: forward, weight gradients, one input gradient."""
    fwd = 2.0 * batch * (SIZES[0] * SIZES[1] + SIZES[1] * SIZES[2])
    return 2.0 * fwd + 2.0 * batch * SIZES[1] * SIZES[2]


@pytest.mark.bench
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch", [16, 128])
def test_mlp_update(benchmark, gemm, best_time, batch, dtype):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N_ROWS, SIZES[0])).astype(dtype)
    y = rng.integers(0, SIZES[-1], size=N_ROWS).astype(np.int64)
    model = MLP(n_features=SIZES[0], n_classes=SIZES[-1], hidden=SIZES[1:-1], dtype=dtype)
    theta = model.init_params(0)
    grad = np.empty_like(theta)
    ws = model.workspace(batch)
    idx_all = rng.permutation(N_ROWS).astype(np.int64)
    n_updates = 2000 if batch == 16 else 400
    args = (model.grad_kernel, theta, X, y, idx_all, batch, grad, ws, model.dims, ETA)
    run_updates(*args, 50)  # compile and let the allocator and caches settle

    ref = gemm(dtype)

    # NumPy reference, same run, same thread limits
    theta_np = model.init_params(0)
    views = tuple(model.view(theta_np, k) for k in ("W1", "b1", "W2", "b2"))
    n_np = n_updates // 2
    batches = [idx_all[(k * batch) % (N_ROWS - batch) :][:batch] for k in range(n_np)]
    for k in range(20):
        numpy_update(theta_np, X, y, batches[k], ETA, views)
    def numpy_run():
        for idx in batches:
            numpy_update(theta_np, X, y, idx, ETA, views)

    numpy_ups = n_np / best_time(numpy_run, rounds=5)

    loss = benchmark.pedantic(
        run_updates, args=(*args, n_updates), rounds=5, iterations=1, warmup_rounds=1
    )
    assert np.isfinite(loss)
    seconds = benchmark.stats.stats.median
    ups = n_updates / seconds
    gflops = ups * nominal_flops(batch) / 1e9
    benchmark.extra_info.update(
        {
            "model": "mlp-784-128-10",
            "batch": batch,
            "dtype": dtype,
            "updates_per_call": n_updates,
            "updates_per_s": ups,
            "gflops": gflops,
            "gflops_executed": ups * executed_flops(batch) / 1e9,
            "numpy_updates_per_s": numpy_ups,
            "numpy_gflops": numpy_ups * nominal_flops(batch) / 1e9,
            **ref,
        }
    )
