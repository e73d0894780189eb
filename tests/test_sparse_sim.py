"""The simulator's numeric replay on a sparse problem: sparse gradients, applied where they
write, the same θ as dense ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from stalesgd.sim import iid
from stalesgd.sim.replay import NumericReplay
from stalesgd.sim.stepsizes import StepSizes
from test_real_engine import _draws
from test_real_sparse import _sync_reference
from test_sim_engine import _iid_by_hand
from test_sim_replay import replay, sequential_sgd

from stalesgd.experiment import expand, experiment_from_flags
from stalesgd.problems.registry import make_problem
from stalesgd.seeds import worker_seeds

OPTIONS = {"n_train": 1000, "n_test": 200, "n_features": 3000, "nnz": 20}


def sparse_sim_spec(algorithm: str, workers: int, updates: int, lr: float, seed: int):
    exp = experiment_from_flags("sim", problem="logreg-sparse", algorithm=algorithm,
                                workers=workers, lr=lr, updates=updates, seed=seed,
                                problem_options=dict(OPTIONS))
    return expand(exp)[0]


def test_one_worker_sparse_replay_is_sequential_sgd_bit_for_bit():
    spec = sparse_sim_spec("lock", 1, 300, 1.0, 3)
    rec, theta = replay(spec)
    problem = make_problem("logreg-sparse", seed=0, **OPTIONS)
    want_theta, want_losses = sequential_sgd(problem, 300, 1.0, 16, 3, spec.eval.every_updates)
    assert np.array_equal(theta, want_theta)
    assert np.array_equal(rec.evals["loss"], want_losses)


@pytest.mark.parametrize("algorithm", ["lock", "hogwild"])
def test_sparse_replay_applies_each_gradient_of_the_version_it_read(algorithm):
    """θ_{k+1} = θ_k − η·g(θ_{k−τ}, the worker's next minibatch), written out with dense
    gradients and every version kept, equals the sparse replay bit for bit."""
    workers, n, seed = 4, 240, 7
    spec = sparse_sim_spec(algorithm, workers, n, 1.0, seed)
    rec, theta = replay(spec)
    problem = make_problem("logreg-sparse", seed=0, **OPTIONS)
    model, d = problem.model, problem.dataset
    assert rec.summary["mean_tau"] > 0.5  # (stale reads: versions other than the latest)
    draws = [np.random.RandomState(s) for s in worker_seeds(seed, workers)]
    versions = [problem.init_params(seed)]
    grad, ws = np.zeros_like(versions[0]), problem.workspace(spec.problem.batch)
    order = np.argsort(rec.updates["k"])
    for w, k, tau in zip(rec.updates["worker"][order], rec.updates["k"][order],
                         rec.updates["tau"][order], strict=True):
        idx = draws[w].randint(0, d.n_train, size=spec.problem.batch).astype(np.int64)
        model.grad_kernel(versions[k - tau], d.inputs("train"), d.y_train, idx, grad, ws,
                          model.dims)
        nxt = versions[k].copy()
        for j in range(nxt.shape[0]):
            nxt[j] -= 1.0 * grad[j]
        versions.append(nxt)
    assert len(versions) == n + 1
    assert np.array_equal(theta, versions[-1])


@pytest.mark.parametrize("workers", [2, 3])
def test_sparse_sync_replay_subtracts_each_workers_gradient_as_the_real_engine(workers):
    """A sparse sync round subtracts η/m times each worker's gradient in worker order, as
    the real engine's sparse sync does (its reference in test_real_sparse)."""
    rounds, seed = 60, 5
    spec = sparse_sim_spec("sync", workers, rounds, 1.0, seed)
    _, theta = replay(spec)
    problem = make_problem("logreg-sparse", seed=0, **OPTIONS)
    d = problem.dataset
    idx = np.stack([_draws(s, rounds, spec.problem.batch, d.n_train)
                    for s in worker_seeds(seed, workers)])
    want = problem.init_params(seed)
    _sync_reference(problem.model.grad_kernel, want, d.inputs("train"), d.y_train, idx,
                    np.zeros((workers, want.shape[0])), problem.workspace(spec.problem.batch),
                    problem.model.dims, 1.0)
    assert np.array_equal(theta, want)


def test_sparse_replay_runs_on_one_core_whatever_the_threads():
    spec = sparse_sim_spec("hogwild", 4, 50, 1.0, 0)
    problem = make_problem("logreg-sparse", seed=0, **OPTIONS)
    hook = NumericReplay(problem, 4, StepSizes.from_table([1.0], 1.0), batch=16, seed=0,
                         threads=2)
    assert hook.sparse and hook.threads == 1
    # a batch whose sparse buffers (batch × (20 + 1) coordinates, 16 bytes each) outgrow a
    # dense gradient (3001 × 8 bytes) keeps dense gradients
    big = NumericReplay(problem, 4, StepSizes.from_table([1.0], 1.0), batch=160, seed=0)
    assert not big.sparse and big.store.shape == (4, problem.model.n_params)
    rec, _ = replay(spec)
    assert rec.summary["replay_threads"] == 1


def test_hogwild_replay_on_many_workers_learns():
    rec, _ = replay(sparse_sim_spec("hogwild", 8, 1500, 2.0, 0))
    assert rec.summary["mean_tau"] > 1
    assert rec.evals["loss"][-1] < rec.evals["loss"][0] - 0.01


def test_coords_per_update_counts_the_sparse_gradients_coordinates():
    problem = make_problem("logreg-sparse", seed=0, **OPTIONS)
    X = problem.dataset.X_train
    row_nnz = np.diff(X.indptr)
    # batch 1: a row's features and the bias, over the same seeded draws
    rows = np.random.default_rng(0).integers(0, X.shape[0], size=(256, 1))
    assert problem.coords_per_update(1) == float(np.mean(row_nnz[rows[:, 0]] + 1))
    # batch 16: the distinct features of the 16 rows, fewer than 16 rows' worth
    c16 = problem.coords_per_update(16)
    assert 1 + 10 * row_nnz.mean() < c16 < 16 * (row_nnz.mean() + 1)
    dense = make_problem("logreg-synthetic")
    assert dense.coords_per_update(16) == dense.model.n_params


def test_sparse_costs_charge_the_coordinates_an_update_touches():
    from stalesgd.algorithms import get_algorithm

    n, c = 10_000, 40.0
    costs = {a: get_algorithm(a).sim_costs(n, 1e-9, 2e-9, 2.5e-9, 5e-8, coords=c)
             for a in ("lock", "hogwild", "leashed")}
    assert costs["lock"] == {"read": 1e-9 * c, "update": 2e-9 * c, "cas": 5e-8}
    assert costs["hogwild"] == {"read": 0.0, "update": 2e-9 * c, "cas": 5e-8}
    # Leashed-SGD publishes a whole vector: it copies all n, then applies the c
    assert costs["leashed"] == {"read": 1e-9 * n, "update": 2e-9 * c, "cas": 5e-8}
    dense = get_algorithm("leashed").sim_costs(n, 1e-9, 2e-9, 2.5e-9, 5e-8)
    assert dense["update"] == pytest.approx((2.5e-9 - 1e-9) * n)


def test_sparse_sim_runs_record_the_coordinates_the_timing_model_charged():
    from stalesgd.sim.run import run_sim

    spec = sparse_sim_spec("hogwild", 4, 2000, 1.0, 0)
    spec = dataclasses.replace(spec, sim=dataclasses.replace(spec.sim, timing_only=True))
    rec = run_sim(spec, progress=False)
    problem = make_problem("logreg-sparse", seed=0, **OPTIONS)
    assert rec.summary["sparse"] is True
    assert rec.summary["coords_per_update"] == problem.coords_per_update(spec.problem.batch)


def _reference_collisions(problem, workers, batch, seed, worker, k, tau, dropped):
    """Collided / written coordinates counted in plain Python (the module docstring's rule)."""
    from stalesgd.sim.batches import BatchStream

    from stalesgd.seeds import worker_seeds

    X = problem.dataset.X_train
    d = X.shape[1]
    streams = [BatchStream(s, X.shape[0], batch) for s in worker_seeds(seed, workers)]
    writers: dict[int, int] = {}
    written = collided = 0
    for w, kk, t, drop in zip(worker, k, tau, dropped, strict=True):
        rows = streams[w].next().copy()
        if drop:
            continue
        coords = {d}  # the bias
        for r in rows:
            coords |= set(X.indices[X.indptr[r]:X.indptr[r + 1]].tolist())
        for j in coords:
            collided += writers.get(j, 0) > kk - t
            writers[j] = kk + 1
        written += len(coords)
    return collided / written


def test_collisions_are_counted_from_each_workers_minibatches_and_read_versions():
    from stalesgd.sim.collisions import CollisionCounter

    problem = make_problem("logreg-sparse", seed=0, **OPTIONS)
    rng = np.random.default_rng(1)
    n, workers, batch = 600, 3, 4
    worker = rng.integers(0, workers, n)
    k = np.arange(n)
    tau = np.minimum(rng.integers(0, 6, n), k)
    dropped = rng.random(n) < 0.1
    counter = CollisionCounter(problem, workers, batch, seed=7)
    for a in range(0, n, 250):  # in chunks, as rows leave the simulation
        counter.add({"worker": worker[a:a + 250], "k": k[a:a + 250], "tau": tau[a:a + 250],
                     "dropped": dropped[a:a + 250]})
    want = _reference_collisions(problem, workers, batch, 7, worker, k, tau, dropped)
    assert 0 < want < 1
    assert counter.rate == want


@pytest.mark.parametrize("model", ["logreg", "svm"])
def test_numeric_replay_counts_the_coordinates_each_applied_gradient_writes(model):
    """Replay counts collisions with the gradient it applies (at the version read), as the
    real engine does: a reference keeps every version and stamps the non-zero coordinates of
    each update's gradient in the order of k.  With the hinge loss, rows beyond the margin
    write nothing, so the timing-only count (gradients at θ0) is higher; with the logistic
    loss every feature of the minibatch is written at any θ, and the two counts agree."""
    from stalesgd.sim.run import run_sim

    workers, n, seed = 4, 600, 5
    name = f"{model}-sparse"
    exp = experiment_from_flags("sim", problem=name, algorithm="hogwild", workers=workers,
                                lr=0.5, updates=n, seed=seed, problem_options=dict(OPTIONS))
    spec = expand(exp)[0]
    rec, _ = replay(spec)
    problem = make_problem(name, seed=0, **OPTIONS)
    model_, d = problem.model, problem.dataset
    draws = [np.random.RandomState(s) for s in worker_seeds(seed, workers)]
    versions = [problem.init_params(seed)]
    grad, ws = np.zeros_like(versions[0]), problem.workspace(spec.problem.batch)
    writers = np.zeros(model_.n_params, np.int64)
    written = collided = written_at_theta0 = 0
    order = np.argsort(rec.updates["k"])
    for w, k, tau, eta in zip(rec.updates["worker"][order], rec.updates["k"][order],
                              rec.updates["tau"][order], rec.updates["eta"][order],
                              strict=True):
        idx = draws[w].randint(0, d.n_train, size=spec.problem.batch).astype(np.int64)
        model_.grad_kernel(versions[k - tau], d.inputs("train"), d.y_train, idx, grad, ws,
                           model_.dims)
        coords = np.flatnonzero(grad)
        collided += int(np.count_nonzero(writers[coords] > k - tau))
        writers[coords] = k + 1
        written += coords.size
        versions.append(versions[k] - eta * grad)
        g0 = np.zeros_like(grad)
        model_.grad_kernel(versions[0], d.inputs("train"), d.y_train, idx, g0, ws, model_.dims)
        written_at_theta0 += np.count_nonzero(g0)
    assert rec.summary["collision_rate"] == collided / written
    timing = dataclasses.replace(spec, sim=dataclasses.replace(spec.sim, timing_only=True))
    at_theta0 = run_sim(timing, progress=False).summary["collision_rate"]
    if model == "svm":
        assert written < written_at_theta0
        assert at_theta0 != rec.summary["collision_rate"]
    else:
        assert written == written_at_theta0
        assert at_theta0 == rec.summary["collision_rate"]


def test_sparse_sim_runs_record_a_collision_rate_that_grows_with_staleness():
    from stalesgd.sim.run import run_sim

    rates = {}
    for algorithm, workers, timing_only in (("hogwild", 1, True), ("hogwild", 16, True),
                                             ("hogwild", 16, False), ("sync", 4, True)):
        spec = sparse_sim_spec(algorithm, workers, 1500, 1.0, 0)
        spec = dataclasses.replace(spec, sim=dataclasses.replace(
            spec.sim, timing_only=timing_only, cores=16))
        rates[algorithm, workers, timing_only] = run_sim(spec, progress=False).summary.get(
            "collision_rate", float("nan"))
    assert rates["hogwild", 1, True] == 0.0
    assert rates["hogwild", 16, True] > 0.05
    # numeric replay simulates the same timing (the same rows) and, for the logistic loss,
    # writes the same coordinates as the gradients at θ0: the same count
    assert rates["hogwild", 16, False] == rates["hogwild", 16, True]
    assert np.isnan(rates["sync", 4, True])  # every sync update is applied at τ = 0


def test_reports_show_the_collision_rate_of_sparse_runs(tmp_path):
    from stalesgd.analysis import analyse
    from stalesgd.analysis.report import runs_display
    from stalesgd.app.cli import main

    argv = ["--algorithm", "hogwild", "--workers", "4", "--updates", "500", "--timing-only",
            "--no-progress"]
    assert main(["sim", "--problem", "logreg-sparse", *[f"-o{k}={v}" for k, v in
                                                          OPTIONS.items()],
                 "--out", str(tmp_path / "sparse"), *argv]) == 0
    assert main(["sim", "--problem", "logreg-synthetic", "--out", str(tmp_path / "dense"),
                 *argv]) == 0
    (sparse,) = (tmp_path / "sparse").iterdir()
    (dense,) = (tmp_path / "dense").iterdir()
    table = runs_display(analyse([sparse], run_fits=False))
    assert {"coords / update", "collision rate"} <= set(table.columns)
    rate = float(table["collision rate"].iloc[0])
    assert 0 < rate < 1
    assert "collision rate" not in runs_display(analyse([dense], run_fits=False)).columns
    mixed = runs_display(analyse([sparse, dense], run_fits=False))
    assert "collision rate" in mixed.columns  # a dense run's cell stays empty


@pytest.mark.parametrize("lr,batch", [(1.0, 1), (1.0, 3), (5e307, 1)])
def test_the_iid_mode_rewinds_a_sparse_problem_by_its_undo_log_to_the_same_bits(lr, batch):
    """On a sparse problem the i.i.d.-staleness mode keeps θ_k and an undo log of the last
    τmax updates' writes instead of τmax + 1 whole iterates: it reads θ_{k−τ} back from the
    log and gives the bits of the recursion written out with every iterate kept and the
    dense kernel, the log wrapped hundreds of times, an online rule refreshing, and a run
    that overflows part-way through a compiled stretch."""
    problem = make_problem("logreg-sparse", seed=0, **OPTIONS)
    pdf, options, updates = [1 / 9] * 9, {"refresh_every": 7}, 3000
    eval_every = 500 if lr < 1e300 else 10**6  # (an overflowing θ: minibatch losses decide)
    chosen = iid._iterates(problem, problem.init_params(3), np.asarray(pdf), batch)
    assert isinstance(chosen, iid._UndoLog)  # (not the ring: it is the one compared)
    out = np.zeros(problem.model.n_params, problem.model.dtype)
    with np.errstate(all="ignore"):
        rec = iid.run_iid_staleness(problem, pdf, updates=updates, lr=lr, stepsize="tail",
                                    stepsize_options=options, batch=batch, seed=3,
                                    eval_every=eval_every, final_params=out)
        theta, etas, tables, losses = _iid_by_hand(problem, pdf, updates, lr, "tail",
                                                   options, 3, eval_every, batch=batch)
    assert np.array_equal(out, theta)
    assert np.array_equal(rec.updates["eta"], etas)
    assert rec.summary["stepsize_tables"] == tables
    assert np.array_equal(rec.evals["loss"][:len(losses)], losses)
    assert rec.summary["peak_param_bytes"] < 3 * out.nbytes  # (the ring: 9 iterates)
    if lr > 1:  # (diverged in the first stretch, the log wrapped many times before)
        assert rec.summary["diverged"] and 100 < etas.size < iid.CHUNK
    else:
        assert not rec.summary["diverged"] and etas.size == updates


def test_the_iid_mode_keeps_whole_iterates_where_rewinding_would_touch_more():
    """The undo log rewinds E[τ] updates of a minibatch's capacity: with large batches or
    long tails the ring of whole iterates is the cheaper one, and is chosen."""
    problem = make_problem("logreg-sparse", seed=0, **OPTIONS)
    theta = problem.init_params(0)
    assert isinstance(iid._iterates(problem, theta, np.array([1.0]), 1), iid._UndoLog)
    assert isinstance(iid._iterates(problem, theta, np.array([1.0]), 200), iid._RingOfIterates)
    assert isinstance(iid._iterates(problem, theta, np.full(401, 1 / 401), 1),
                      iid._RingOfIterates)
    dense = make_problem("logreg-synthetic")
    assert isinstance(iid._iterates(dense, dense.init_params(0), np.array([1.0]), 1),
                      iid._RingOfIterates)
