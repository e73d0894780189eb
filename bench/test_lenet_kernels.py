"""LeNet-5 gradient-kernel benchmark: one SGD update = gradient + θ -= η g, batch 16 and 128.

Timed function: one Numba call doing ``R`` updates in a loop (gradient kernel
on the next minibatch, then the SGD step), so no Python runs per update.
Each result's ``extra_info`` records, measured in the same run with BLAS on
one thread (see ``conftest.py``):

* ``updates_per_s`` (median round) and ``gflops``: nominal FLOPs per update =
  3 × forward, forward = Σ 2·outputs·kernel_volume over the convolutions plus
  2·in·out over the dense layers (backward ≈ 2 × forward);
* ``gflops_executed``: what the kernel really multiplies (conv1's input
  gradient is never formed: backward = 2 × forward − conv1);
  targets: ``vs_gemm`` ≥ 0.60 at batch 16, ≥ 0.75 at batch 128;
* ``gemm_gflops``: single-core GEMM of the same precision (conftest's
  ``gemm`` yardstick) and ``vs_gemm`` = gflops / gemm_gflops.

Data are random images; speed does not depend on their values.  ``bench/lenet_roofline.py``
measures the same ratio with the yardstick re-measured alternately (steadier on a loaded
machine) and compares with another checkout.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_kernels import run_updates

from stalesgd.problems.lenet import LeNet5

N_ROWS = 2048
ETA = 1e-3
SAMPLES = 6400  # rows per timed call: R = SAMPLES // batch updates


@pytest.mark.bench
@pytest.mark.parametrize("batch", [16, 128])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=["28x28x1", "32x32x3"])
def test_lenet_update(benchmark, gemm, shape, dtype, batch):
    model = LeNet5(shape, fc84=True, dtype=dtype)
    rng = np.random.default_rng(0)
    X = rng.uniform(0.0, 1.0, (N_ROWS, model.n_features)).astype(dtype)
    y = rng.integers(0, 10, N_ROWS).astype(np.int64)
    theta = model.init_params(0)
    grad = np.empty_like(theta)
    ws = model.workspace(batch)
    R = SAMPLES // batch
    idx_all = rng.permutation(N_ROWS).astype(np.int64)
    args = (model.grad_kernel, theta, X, y, idx_all, batch, grad, ws, model.dims, ETA)
    run_updates(*args, 5)  # compile, then let caches and the allocator settle

    ref = gemm(dtype)
    loss = benchmark.pedantic(run_updates, args=(*args, R), rounds=5, iterations=1,
                              warmup_rounds=1)
    assert np.isfinite(loss)
    ups = R / benchmark.stats.stats.median
    fwd, bwd = model.flops(batch)
    gflops = ups * 3 * fwd / 1e9
    benchmark.extra_info.update(
        {
            "model": f"lenet5-{'x'.join(map(str, shape))}-fc84",
            "batch": batch,
            "dtype": dtype,
            "updates_per_call": R,
            "updates_per_s": ups,
            "flops_per_update": 3 * fwd,
            "gflops": gflops,
            "gflops_executed": ups * (fwd + bwd) / 1e9,
            "vs_gemm": gflops / float(ref["gemm_gflops"]),
            **ref,
        }
    )
