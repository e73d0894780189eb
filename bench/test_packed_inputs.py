"""Packed image inputs (uint8 pixels + per-channel coefficients) against a dense float copy.

Image data sets are kept packed (``Dataset.pixel_coef``): the same model inputs bit for bit
in a quarter (float32) of the memory.  This benchmark measures what the packing costs or
saves in updates/s: the bare SGD loop on MNIST with the packed inputs and with
``Dataset.features("train")`` (the dense copy), alternated in one run; it records the ratio
and both data sizes.  The trajectories are checked equal (same losses) before timing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stalesgd.problems.registry import make_problem

pytestmark = pytest.mark.bench

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CASES = [("mlp-mnist", 16, 4000), ("mlp-mnist", 128, 800), ("lenet-mnist", 16, 600)]


@pytest.mark.parametrize("name,batch,n", CASES, ids=[f"{c[0]}-b{c[1]}" for c in CASES])
def test_packed_vs_dense_inputs(benchmark, bare_sgd, name, batch, n):
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"MNIST not found under {SHARED_DATA} (see ../shared/data/README)")
    problem = make_problem(name, dtype="float32", data_dir=str(SHARED_DATA))
    d = problem.dataset
    assert d.packed
    dense = d.features("train")
    theta = problem.init_params(0)
    idx = np.arange(batch, dtype=np.int64) * 7
    g1, g2 = np.zeros_like(theta), np.zeros_like(theta)
    ws = problem.workspace(batch)
    k = problem.model.grad_kernel
    l1 = k(theta, d.inputs("train"), d.y_train, idx, g1, ws, problem.model.dims)
    l2 = k(theta, dense, d.y_train, idx, g2, ws, problem.model.dims)
    assert l1 == l2 and np.array_equal(g1, g2)

    packed_s, dense_s = [], []
    for _ in range(3):  # alternate, so that drift on a shared machine hits both alike
        packed_s.append(bare_sgd(problem, batch, n, repeats=1))
        dense_s.append(bare_sgd(problem, batch, n, repeats=1, inputs=dense))
    benchmark.pedantic(bare_sgd, args=(problem, batch, n, 1), rounds=1, iterations=1)
    packed_ups, dense_ups = n / np.median(packed_s), n / np.median(dense_s)
    benchmark.extra_info.update({
        "problem": name, "batch": batch, "dtype": "float32",
        "packed_updates_per_s": packed_ups, "dense_updates_per_s": dense_ups,
        "packed_vs_dense": packed_ups / dense_ups,
        "packed_train_bytes": int(d.X_train.nbytes), "dense_train_bytes": int(dense.nbytes),
    })
