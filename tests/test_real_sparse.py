"""The real engine on sparse problems: updates write only the touched coordinates, the same
results as the dense path where the order of operations is the same, and the collision
rate under forced interleavings."""

from __future__ import annotations

import copy
import dataclasses
import inspect

import numpy as np
import pytest
from numba import njit
from stalesgd.real.engine import RealRun, final_params, run_real
from stalesgd.real.schedule import make_script
from stalesgd.real.sparse_workers import SPARSE_WORKER_ARGS
from test_real_engine import TURNS, _draws, averaged_reference, make_spec

from stalesgd.algorithms import ALGORITHMS
from stalesgd.problems import make_problem
from stalesgd.problems._kernels import n_rows
from stalesgd.problems.linear import LinearClassifier, linear_sparse_grad_kernel
from stalesgd.seeds import worker_seeds

SMALL = {"n_train": 400, "n_test": 100, "n_features": 2000, "nnz": 15}


def sparse_spec(algorithm: str, workers: int, problem: str = "logreg-sparse",
                n_train: int = 400, **kw):
    return make_spec(algorithm, workers, problem=problem,
                     problem_options={**SMALL, "n_train": n_train}, **kw)


def test_every_sparse_worker_takes_the_one_argument_list():
    for alg in ALGORITHMS.values():
        fn = alg.implementation("real", sparse=True)
        assert tuple(inspect.signature(fn.py_func).parameters) == SPARSE_WORKER_ARGS, alg.name
    with pytest.raises(LookupError, match="no sparse implementation in engine 'sim'"):
        ALGORITHMS["lock"].implementation("sim", sparse=True)


@njit(nogil=True)
def _allocating_sparse_kernel(theta, X, y, idx, gidx, gval, ws, dims):
    """The linear model's sparse kernel on a fresh copy of θ: it allocates, as a plug-in's
    kernel may."""
    return linear_sparse_grad_kernel(theta.copy(), X, y, idx, gidx, gval, ws, dims)


class _AllocatingLinear(LinearClassifier):
    @property
    def sparse_grad_kernel(self):
        return _allocating_sparse_kernel


@pytest.mark.parametrize("algorithm", ["hogwild", "lock"])
def test_a_sparse_kernel_that_allocates_runs_in_loops_with_reference_counting(algorithm):
    spec = sparse_spec(algorithm, 1, updates=200, seed=2, quiet=True)
    builtin = RealRun(spec, progress=False)
    assert builtin.worker_function is ALGORITHMS[algorithm].implementation("real", sparse=True)
    builtin.run()
    problem = make_problem(spec.problem.name, **spec.problem.options)
    model = copy.copy(problem.model)
    model.__class__ = _AllocatingLinear
    run = RealRun(spec, progress=False, problem=dataclasses.replace(problem, model=model))
    assert run.worker_function.targetoptions["_nrt"] is True
    run.run()
    assert np.array_equal(final_params(run), final_params(builtin))


@pytest.mark.parametrize(("algorithm", "workers", "problem"), [
    ("seq", 1, "logreg-sparse"), ("lock", 2, "logreg-sparse"), ("hogwild", 2, "logreg-sparse"),
    ("leashed", 2, "logreg-sparse"), ("sync", 2, "logreg-sparse"),
    pytest.param("hogwild", 2, "svm-sparse", marks=pytest.mark.slow),
    pytest.param("lock", 2, "softmax-sparse", marks=pytest.mark.slow)])
def test_sparse_runs_count_exactly_learn_and_record_collisions(algorithm, workers, problem):
    spec = sparse_spec(algorithm, workers, problem, n_train=6000, updates=3000, lr=1.0,
                       batch=4)
    run = RealRun(spec, progress=False)
    assert run.sparse
    rec = run.run()
    s, u = rec.summary, rec.updates
    assert np.array_equal(np.sort(u["k"][~u["dropped"]]), np.arange(3000))
    assert s["sparse"] is True and 0.0 <= s["collision_rate"] <= 1.0
    per_update = s["coords_per_update"] / (workers if algorithm == "sync" else 1)
    k = run.problem.model.outputs
    assert k * 5 < per_update <= 4 * (15 + 1) * k  # a few rows' features, not all 2000
    if algorithm == "sync":
        assert s["collision_rate"] == 0.0
    loss = rec.evals["loss"]
    assert loss[-1] < loss[0]
    # memory: θ (or the pool), lock's copies, snapshot, and the small sparse buffers
    assert s["peak_param_bytes"] < 20 * run.shared.theta.nbytes


@pytest.mark.parametrize("algorithm", ["seq", "lock", "hogwild", "leashed"])
def test_one_worker_equals_dense_sgd_bit_for_bit_and_never_collides(algorithm):
    spec = sparse_spec(algorithm, 1, updates=300, seed=3, quiet=True)
    run = RealRun(spec, progress=False)
    rec = run.run()
    assert np.array_equal(final_params(run), averaged_reference(spec, run.problem, 300))
    assert rec.summary["collision_rate"] == 0.0


@njit
def _sync_reference(kernel, theta, X, y, idx, grads, ws, dims, eta):
    """Each round: every worker's dense gradient on the same θ, then θ −= (η/m)·g_w worker
    after worker (the order sync's sparse worker 0 subtracts them in)."""
    m, rounds = idx.shape[0], idx.shape[1]
    scale = eta / m
    for r in range(rounds):
        for w in range(m):
            kernel(theta, X, y, idx[w, r], grads[w], ws, dims)
        for w in range(m):
            for j in range(theta.shape[0]):
                theta[j] -= scale * grads[w, j]


@pytest.mark.parametrize("workers", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_sync_equals_its_sequential_reference_bit_for_bit(workers):
    spec = sparse_spec("sync", workers, updates=200, seed=5, quiet=True)
    run = RealRun(spec, progress=False)
    run.run()
    p, d = run.problem, run.problem.dataset
    X = d.inputs("train")
    idx = np.stack([_draws(s, 200, spec.problem.batch, n_rows(X))
                    for s in worker_seeds(spec.seed, workers)])
    theta = p.init_params(spec.seed)
    _sync_reference(p.model.grad_kernel, theta, X, d.y_train, idx,
                    np.zeros((workers, theta.shape[0])), p.workspace(spec.problem.batch),
                    p.model.dims, float(spec.stepsize.lr))
    assert np.array_equal(final_params(run), theta)


def _supports(run, spec, rounds: int) -> list[list[set[int]]]:
    """The coordinates each worker's r-th gradient touches (features of its rows, bias)."""
    d = run.problem.dataset
    X = d.X_train
    out = []
    for s in worker_seeds(spec.seed, spec.workers):
        batches = _draws(s, rounds, spec.problem.batch, X.shape[0])
        out.append([{int(c) for r in b for c in X.indices[X.indptr[r]:X.indptr[r + 1]]}
                    | {X.n_cols} for b in batches])
    return out


@pytest.mark.parametrize("algorithm", ["lock", "hogwild"])
def test_collision_rate_under_a_forced_interleaving(algorithm):
    """TURNS (see the dense engine tests) applies k = 0..4 by workers 0, 0, 1, 0, 1 with
    τ = 0, 0, 2, 1, 1: update k collides on its coordinates that an update in [t0, k) wrote."""
    spec = sparse_spec(algorithm, 2, updates=5, quiet=True, batch=3)
    run = RealRun(spec, progress=False, schedule=make_script(TURNS))
    rec = run.run()
    sup = _supports(run, spec, 3)
    order = [sup[0][0], sup[0][1], sup[1][0], sup[0][2], sup[1][1]]
    t0 = [0, 1, 0, 2, 3]
    collided = sum(len(order[k] & set().union(*order[t0[k]:k])) for k in range(5))
    written = sum(len(s) for s in order)
    assert collided > 0  # the bias at least
    assert rec.summary["coords_per_update"] == written / 5
    assert rec.summary["collision_rate"] == collided / written


def test_dense_runs_have_no_sparse_fields():
    rec = run_real(make_spec("hogwild", 1, updates=200, quiet=True), progress=False)
    assert "collision_rate" not in rec.summary and "sparse" not in rec.summary


def test_the_sharing_benchmark_runs_both_layouts_and_prints_their_ratios():
    """``bench/sparse_sharing.py`` on a tiny set: every configuration runs each repeat and
    the summary gives both layouts' ratios."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "bench" / "sparse_sharing.py"
    out = subprocess.run([sys.executable, str(script), "--repeats", "2", "--epochs", "2",
                          "--n-train", "400", "--n-features", "300", "--nnz", "10"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[0].startswith("logreg-sparse 400 rows × 300 features")
    assert sum(line.startswith("shared θ ") and "own θ " in line for line in lines) == 2
    for layout in ("shared", "own"):
        summary = next(line for line in lines if line.strip().startswith(f"{layout} θ: "))
        assert float(summary.split("median ")[1].split()[0]) > 0  # (timings: in benchmarks)
