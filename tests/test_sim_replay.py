"""The simulator's numeric replay, the ``sim`` engine and the i.i.d.-staleness mode."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import pytest
from stalesgd.app.cli import main
from stalesgd.sim import run_iid_staleness, run_sim
from stalesgd.sim.batches import BatchStream, mt_draw
from stalesgd.sim.run import SimRun
from stalesgd.sim.stepsizes import StepSizes

from stalesgd.experiment import (
    AlgorithmSpec,
    ExperimentError,
    expand,
    experiment_from_flags,
)
from stalesgd.problems.registry import make_problem
from stalesgd.records import EVALS_SCHEMA, RUNS_SCHEMA, UPDATES_SCHEMA, load_results
from stalesgd.seeds import worker_seeds
from stalesgd.stepsize import make_rule


def sim_spec(problem="logreg-synthetic", algorithm="lock", workers=1, *, updates=2000,
             seconds=None, lr=0.05, stepsize="constant", seed=0, target_loss=None,
             persistence=None, **sim):
    """A resolved ``sim`` RunSpec built through the command-line path (same validation)."""
    exp = experiment_from_flags("sim", problem=problem, algorithm=algorithm, workers=workers,
                                stepsize=stepsize, lr=lr, updates=updates, seconds=seconds,
                                target_loss=target_loss, seed=seed, persistence=persistence,
                                sim=sim or None)
    return expand(exp)[0]


def replay(spec):
    """Run ``spec`` and return (record, final θ of the replay)."""
    run = SimRun(spec, progress=False)
    rec = run.run()
    return rec, (None if run.hook is None else run.hook.theta.copy())


def sequential_sgd(problem, updates, lr, batch, seed, eval_every):
    """Plain sequential SGD written out by hand: worker 0's minibatch stream, θ -= η g."""
    theta = problem.init_params(seed)
    grad = np.zeros_like(theta)
    ws = problem.workspace(batch)
    d = problem.dataset
    rs = np.random.RandomState(worker_seeds(seed, 1)[0])
    losses = [problem.evaluate(theta)[0]]
    for k in range(updates):
        idx = rs.randint(0, d.X_train.shape[0], size=batch).astype(np.int64)
        problem.model.grad_kernel(theta, d.inputs("train"), d.y_train, idx, grad, ws,
                                  problem.model.dims)
        for j in range(theta.shape[0]):
            theta[j] -= lr * grad[j]
        if (k + 1) % eval_every == 0:
            losses.append(problem.evaluate(theta)[0])
    return theta, np.array(losses)


@pytest.fixture(scope="module")
def logreg():
    return make_problem("logreg-synthetic")


@pytest.fixture(scope="module")
def linreg():
    return make_problem("linreg-synthetic")


# ------------------------------------------------------------------ building blocks


def test_batch_stream_chunks_equal_single_draws():
    s = BatchStream(1234, 977, 7)
    got = np.concatenate([s.next().copy() for _ in range(600)])  # crosses two refills
    rs = np.random.RandomState(1234)
    want = np.array([rs.randint(0, 977) for _ in range(got.size)])
    assert np.array_equal(got, want)


def test_worker_seeds_distinct_and_stable():
    a = worker_seeds(5, 4)
    assert len(set(a)) == 4 and worker_seeds(5, 4) == a
    assert worker_seeds(5, 1)[0] == a[0]  # worker w's stream does not depend on m
    with pytest.raises(ValueError, match="seed"):
        worker_seeds(-1, 2)


def test_stepsizes_vectorised_equals_one_by_one():
    rng = np.random.default_rng(0)
    tau = rng.geometric(0.25, 500) - 1
    worker = np.arange(500) % 4
    rule = make_rule("tail", workers=4, lr=0.1)
    one = StepSizes(rule, 64)
    a = np.array([one.eta(int(t), int(w)) for t, w in zip(tau, worker, strict=True)])
    b = StepSizes(make_rule("tail", workers=4, lr=0.1), 64).etas(tau, worker)
    assert np.array_equal(a, b)
    assert one.n_tables == 1
    assert np.all(a[:40] == 0.1) and not np.all(a == 0.1)  # s = 1 until the first table


# ------------------------------------------------------------------ numeric replay


@pytest.mark.parametrize("algorithm", ["seq", "lock", "hogwild", "leashed"])
def test_one_worker_replay_is_sequential_sgd_bit_for_bit(logreg, algorithm):
    spec = sim_spec(algorithm=algorithm, updates=600, lr=0.1, seed=3)
    rec, theta = replay(spec)
    want_theta, want_losses = sequential_sgd(logreg, 600, 0.1, 16, 3, spec.eval.every_updates)
    assert np.array_equal(theta, want_theta)
    assert np.array_equal(rec.evals["loss"], want_losses)
    assert np.all(rec.updates["tau"] == 0) and np.all(rec.updates["eta"] == 0.1)


def test_iid_point_mass_at_zero_is_sequential_sgd(linreg):
    seed, n = 7, 500
    out = np.empty(linreg.model.n_params)
    rec = run_iid_staleness(linreg, [1.0], updates=n, lr=0.05, seed=seed, eval_every=50,
                            final_params=out)
    theta, losses = sequential_sgd(linreg, n, 0.05, 16, seed, 50)
    assert np.array_equal(out, theta)
    assert np.array_equal(rec.evals["loss"], losses)
    # … and the simulator's numeric replay of `seq` with the same seed
    sim_rec, sim_theta = replay(sim_spec("linreg-synthetic", "seq", updates=n, seed=seed))
    assert np.array_equal(sim_theta, out)
    assert np.all(rec.updates["tau"] == 0)


def test_iid_reads_the_iterate_tau_updates_back(linreg):
    """τ ≡ 3: update k uses the gradient at θ_{max(k−3, 0)} — checked against a loop that keeps
    every iterate."""
    n, seed, lr = 40, 2, 0.05
    pdf = [0.0, 0.0, 0.0, 1.0]
    out = np.empty(linreg.model.n_params)
    rec = run_iid_staleness(linreg, pdf, updates=n, lr=lr, seed=seed, final_params=out)
    thetas = [linreg.init_params(seed)]
    grad = np.zeros_like(thetas[0])
    ws = linreg.workspace(16)
    rs = np.random.RandomState(worker_seeds(seed, 1)[0])
    d = linreg.dataset
    for k in range(n):
        idx = rs.randint(0, d.X_train.shape[0], size=16).astype(np.int64)
        linreg.model.grad_kernel(thetas[max(k - 3, 0)], d.inputs("train"), d.y_train, idx,
                                 grad, ws, linreg.model.dims)
        thetas.append(thetas[-1] - lr * grad)
    assert np.array_equal(rec.updates["tau"], np.minimum(np.arange(n), 3))
    assert np.array_equal(rec.updates["t_read"], np.maximum(np.arange(n) - 3, 0))
    assert np.array_equal(out, thetas[-1])


def test_iid_geometric_staleness_hurts_at_the_same_lr(linreg):
    m, n, lr = 8, 1000, 0.2
    geo = (1 / m) * (1 - 1 / m) ** np.arange(80)
    geo /= geo.sum()
    fresh, stale, taus = [], [], []
    for seed in range(5):
        fresh.append(run_iid_staleness(linreg, [1.0], updates=n, lr=lr, seed=seed,
                                       split="train", eval_every=n).summary["final_loss"])
        r = run_iid_staleness(linreg, geo, updates=n, lr=lr, seed=seed, split="train",
                              eval_every=n)
        stale.append(r.summary["final_loss"])
        taus.append(r.updates["tau"])
    assert np.mean(stale) > np.mean(fresh)
    assert abs(np.concatenate(taus).mean() - (m - 1)) < 0.5  # the drawn law is the given one


def test_iid_bad_input_is_named(linreg):
    with pytest.raises(ValueError, match="sum to 1"):
        run_iid_staleness(linreg, [0.5, 0.2], updates=10, lr=0.1)
    with pytest.raises(ValueError, match="updates"):
        run_iid_staleness(linreg, [1.0], updates=0, lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        run_iid_staleness(linreg, [1.0], updates=10, lr=-1.0)


def test_iid_huge_lr_diverges_without_crashing(linreg):
    rec = run_iid_staleness(linreg, [0.5, 0.5], updates=5000, lr=1e3, seed=0)
    assert rec.summary["diverged"] and rec.summary["stop_reason"] == "diverged"
    assert rec.summary["updates"] < 5000


def test_lock_round_robin_tau_and_training(logreg):
    m = 4
    spec = sim_spec(workers=m, updates=3000, lr=0.1, compute="det:1ms", update="det:20us")
    rec, _ = replay(spec)
    tau = rec.updates["tau"]
    assert np.all(tau[m:] == m - 1)
    loss = rec.evals["loss"]
    assert loss[-1] < 0.6 * loss[0]
    assert np.all(rec.updates["eta"] == 0.1)
    assert rec.summary["mean_tau"] == pytest.approx(m - 1, abs=0.01)


@pytest.mark.parametrize("algorithm", ["hogwild", "leashed", "sync"])
def test_other_algorithms_train(algorithm):
    spec = sim_spec(algorithm=algorithm, workers=4, updates=2000, lr=0.1, persistence=1,
                    compute="exp:1ms", update="det:200us")
    rec, _ = replay(spec)
    assert rec.evals["loss"][-1] < 0.6 * rec.evals["loss"][0]
    s = rec.summary
    assert s["updates"] == 2000 and not s["diverged"]
    if algorithm == "leashed":
        drops = rec.updates["dropped"]
        assert s["dropped"] == drops.sum() > 0  # persistence 1 with a slow apply drops some
        assert np.all(rec.updates["eta"][drops] == 0.0) and np.all(rec.updates["k"][drops] == -1)
        assert s["tries_per_update"] >= 1.0
    if algorithm == "sync":
        assert np.all(rec.updates["tau"] == 0)


def test_online_tail_builds_tables_during_replay():
    spec = sim_spec(workers=4, updates=1500, lr=0.1, stepsize="tail", compute="exp:1ms")
    rec, _ = replay(spec)
    assert rec.summary["stepsize_tables"] >= 1
    eta = rec.updates["eta"]
    assert eta[0] == 0.1 and len(np.unique(eta)) > 1  # s = 1, then the learned table
    # the same τ sequence in timing-only mode gives the same step sizes (same rule, same feed)
    timing, _ = replay(sim_spec(workers=4, updates=1500, lr=0.1, stepsize="tail",
                                compute="exp:1ms", timing_only=True))
    assert np.array_equal(timing.updates["tau"], rec.updates["tau"])
    assert np.array_equal(timing.updates["eta"], eta)


def test_huge_lr_marks_the_run_diverged_and_stops():
    spec = sim_spec("linreg-synthetic", workers=2, updates=5000, lr=1e3, compute="exp:1ms")
    rec, _ = replay(spec)
    s = rec.summary
    assert s["diverged"] and s["stop_reason"] == "diverged" and not s["converged"]
    assert s["updates"] < 5000 and len(rec.updates["k"]) == s["updates"]


def test_target_loss_stops_the_run():
    spec = sim_spec(workers=2, updates=20000, lr=0.1, target_loss=0.45, compute="exp:1ms")
    rec, _ = replay(spec)
    s = rec.summary
    assert s["stop_reason"] == "target" and s["converged"]
    assert s["updates"] < 20000
    assert s["updates_to_target"] == s["updates"] == rec.evals["k"][-1]
    assert rec.evals["loss"][-1] <= 0.45 < rec.evals["loss"][-2]
    assert s["time_to_target"] == pytest.approx(rec.updates["t_apply"].max())


def test_evaluations_on_the_simulated_clock():
    exp = experiment_from_flags("sim", problem="logreg-synthetic", algorithm="lock", workers=2,
                                seconds=0.5, sim={"compute": "exp:1ms"})
    spec = expand(exp)[0]
    assert spec.eval.every_seconds == pytest.approx(0.01)
    rec, _ = replay(spec)
    t = rec.evals["t"]
    np.testing.assert_allclose(t[:-1], 0.01 * np.arange(len(t) - 1), rtol=0, atol=1e-12)
    assert t[-1] == pytest.approx(0.5) and rec.summary["seconds"] == pytest.approx(0.5)
    # k at each evaluation = updates applied by then
    applied = np.searchsorted(np.sort(rec.updates["t_apply"]), t, side="right")
    assert np.array_equal(rec.evals["k"], applied)


def test_same_seed_same_record_bit_for_bit():
    def once():
        rec, theta = replay(sim_spec(algorithm="leashed", workers=3, updates=1500, lr=0.1,
                                     stepsize="tail", persistence=2, compute="gamma:1ms:0.5",
                                     update="det:100us", cores=2))
        return rec, theta

    (a, ta), (b, tb) = once(), once()
    assert np.array_equal(ta, tb)
    for table in ("updates", "evals"):
        x, y = getattr(a, table), getattr(b, table)
        assert x.keys() == y.keys()
        for col in x:
            assert np.array_equal(x[col], y[col], equal_nan=True), (table, col)
    skip = {"wall_seconds", "sim_updates_per_wall_s"}
    assert {k: v for k, v in a.summary.items() if k not in skip} == \
        {k: v for k, v in b.summary.items() if k not in skip}
    other, _ = replay(sim_spec(algorithm="leashed", workers=3, updates=1500, lr=0.1,
                               stepsize="tail", persistence=2, compute="gamma:1ms:0.5",
                               update="det:100us", cores=2, seed=1))
    assert not np.array_equal(other.evals["loss"], a.evals["loss"])


# ------------------------------------------------------------------ the engine


def test_timing_only_runs_1e5_updates_fast():
    t0 = time.process_time()  # (CPU time: a busy machine's waits for a core do not count)
    rec = run_sim(sim_spec(workers=8, updates=100_000, compute="exp:1ms", timing_only=True),
                  progress=False)
    wall = time.process_time() - t0
    s = rec.summary
    assert s["updates"] == 100_000 and len(rec.updates["k"]) == 100_000
    assert len(rec.evals["k"]) == 0 and math.isnan(s["final_loss"])
    assert np.all(rec.updates["eta"] == 0.05)  # lr·s(τ) from the constant table
    assert s["mean_tau"] == pytest.approx(7.0, abs=0.2)  # geometric, mean m − 1
    assert wall < 5.0, f"timing-only 1e5 updates took {wall:.1f} s of CPU"


def test_cli_writes_a_results_folder(tmp_path):
    code = main(["sim", "--problem", "logreg-synthetic", "--algorithm", "leashed",
                 "--workers", "3", "--compute", "exp:1ms", "--update", "det:100us",
                 "--stepsize", "tail", "--updates", "1500", "--persistence", "1",
                 "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    (folder,) = list(tmp_path.iterdir())
    res = load_results(folder)
    assert list(res.updates.columns) == UPDATES_SCHEMA.names
    assert list(res.evals.columns) == EVALS_SCHEMA.names
    assert list(res.runs.columns[: len(RUNS_SCHEMA.names)]) == RUNS_SCHEMA.names
    run = res.runs.iloc[0]
    assert run["engine"] == "sim" and run["algorithm"] == "leashed" and run["workers"] == 3
    assert int(run["updates"]) == 1500 == int((~res.updates["dropped"]).sum())
    assert run["stepsize_tables"] >= 1 and run["stop_reason"] == "updates"
    assert res.updates["dropped"].sum() == run["dropped"] > 0
    assert len(res.evals) > 10 and res.evals["loss"].iloc[-1] < res.evals["loss"].iloc[0]
    assert (folder / "config.toml").exists() and (folder / "machine.json").exists()


def test_cli_timing_only_and_bad_input(tmp_path, capsys):
    code = main(["sim", "--problem", "logreg-synthetic", "--algorithm", "lock", "--workers", "4",
                 "--compute", "det:1ms", "--update", "det:10us", "--timing-only",
                 "--updates", "2000", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    res = load_results(next(tmp_path.iterdir()))
    assert len(res.updates) == 2000 and len(res.evals) == 0
    assert bool(res.runs["timing_only"].iloc[0])
    code = main(["sim", "--problem", "logreg-synthetic", "--algorithm", "lock", "--workers", "2",
                 "--calibration", "fit.json", "--out", str(tmp_path), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "fit.json" in err and "does not exist" in err


def test_engine_rejects_unknown_algorithm_options():
    exp = experiment_from_flags("sim", problem="logreg-synthetic", algorithm="lock", workers=2,
                                updates=10)
    spec = expand(exp)[0]
    bad = replace(spec, algorithm=AlgorithmSpec(name="lock", options={"handover": "1us"}))
    with pytest.raises(ExperimentError, match="algorithm.options.handover"):
        run_sim(bad, progress=False)
    ok = replace(spec, algorithm=AlgorithmSpec(name="lock", options={"lock_handover": "5us"}))
    assert run_sim(ok, progress=False).summary["updates"] == 10


def test_interrupt_returns_the_partial_record(monkeypatch):
    """Ctrl-C inside the simulation: the run ends, the record so far comes back interrupted."""
    from stalesgd.sim import replay as replay_mod

    calls = {"n": 0}
    original = replay_mod.NumericReplay.apply

    def apply(self, worker, t0, t1):
        calls["n"] += 1
        if calls["n"] == 300:
            raise KeyboardInterrupt
        return original(self, worker, t0, t1)

    monkeypatch.setattr(replay_mod.NumericReplay, "apply", apply)
    rec = run_sim(sim_spec(workers=2, updates=5000, compute="exp:1ms"), progress=False)
    s = rec.summary
    assert s["interrupted"] and s["stop_reason"] == "interrupted"
    assert 0 < s["updates"] < 5000 and len(rec.updates["k"]) == s["updates"]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm, workers, dtype",
                         [("seq", 1, "float64"), ("seq", 1, "float32"), ("sync", 2, "float64")])
def test_replay_equals_the_real_engine_bit_for_bit(algorithm, workers, dtype):
    """Where the real engine's interleaving is fixed (seq, sync), the simulator's numeric
    replay reproduces it exactly: same minibatches, same arithmetic, same final θ."""
    from stalesgd.real.engine import RealRun, final_params

    def spec(engine):
        exp = experiment_from_flags(engine, problem="logreg-synthetic", algorithm=algorithm,
                                    workers=workers, updates=1500, seed=3, dtype=dtype)
        return expand(exp)[0]

    real = RealRun(spec("real"), progress=False)
    real_rec = real.run()
    sim_rec, sim_theta = replay(spec("sim"))
    assert np.array_equal(final_params(real), sim_theta)
    assert np.array_equal(real_rec.updates["eta"], sim_rec.updates["eta"])
    assert np.array_equal(real_rec.updates["tau"], sim_rec.updates["tau"])


# ------------------------------------------------------------------ minibatch draws


@pytest.mark.parametrize("n_rows", [1, 2, 3, 977, 1024, 1025, 65536, 2**31 + 5, 2**32, 2**33])
@pytest.mark.parametrize("batch", [1, 16])
def test_batch_stream_and_compiled_draws_equal_randint(n_rows, batch):
    """The vectorised stream and the compiled Mersenne Twister give randint's indices."""
    stream = BatchStream(77, n_rows, batch)
    got = np.concatenate([stream.next().copy() for _ in range(300)] +
                         [stream.take(257).ravel(), stream.next()])
    want = np.random.RandomState(77).randint(0, n_rows, size=got.size, dtype=np.int64)
    assert np.array_equal(got, want)
    fresh = BatchStream(77, n_rows, batch)
    if fresh.mask:  # the compiled draws (used inside the batched replay)
        key, pos = fresh.mt_state()
        keys = np.zeros((2, 624), np.uint32)
        keys[1] = key
        p = np.array([0, pos])
        out = np.zeros(batch, np.int64)
        drawn = []
        for _ in range(558):
            mt_draw(keys, p, 1, n_rows, fresh.mask, out)
            drawn.append(out.copy())
        assert np.array_equal(np.concatenate(drawn), want)
    else:
        assert n_rows == 1 or n_rows >= 2**32


def test_batch_stream_take_equals_next():
    a = BatchStream(99, 1000, 5)
    b = BatchStream(99, 1000, 5)
    got = np.concatenate([a.take(3), a.take(700), a.take(1)])
    want = np.stack([b.next().copy() for _ in range(704)])
    assert np.array_equal(got, want)
