"""Minibatch sampling: rows with replacement or reshuffled epochs, the same in every engine."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from numba import njit
from stalesgd.analysis.load import config_key
from stalesgd.real.engine import RealRun, final_params
from stalesgd.real.sampling import (
    batch_rows,
    draw_batch,
    first_epoch,
    new_sampler,
    next_rows,
    sampler_bytes,
)
from stalesgd.sim.batches import BatchStream
from stalesgd.sim.run import SimRun

from stalesgd.experiment import ExperimentError, expand, experiment_from_flags


@njit
def _worker_draws(sampler, seed, n_rows, k):
    """``k`` minibatches as a real worker draws them after seeding its generator."""
    np.random.seed(seed)
    rows = batch_rows(sampler)
    out = np.empty((k, rows.shape[0]), np.int64)
    for i in range(k):
        draw_batch(sampler, rows, n_rows)
        out[i] = rows
    return out


@pytest.mark.parametrize("n_rows,batch", [(1, 1), (2, 1), (7, 3), (1000, 16), (5003, 128)])
@pytest.mark.parametrize("sampling", ["replacement", "epochs"])
def test_the_simulators_stream_draws_the_workers_rows(n_rows, batch, sampling):
    want = _worker_draws(new_sampler(batch, n_rows, sampling), 11, n_rows, 60)
    stream = BatchStream(11, n_rows, batch, sampling)
    got = np.concatenate([np.stack([stream.next().copy() for _ in range(30)]),
                          stream.take(30)])
    np.testing.assert_array_equal(got, want)


def test_epochs_use_every_row_once_and_reshuffle():
    n, batch = 1000, 8  # 125 minibatches an epoch
    rows = _worker_draws(new_sampler(batch, n, "epochs"), 3, n, 375).reshape(3, n)
    for epoch in rows:
        np.testing.assert_array_equal(np.sort(epoch), np.arange(n))
    assert not np.array_equal(rows[0], rows[1]) and not np.array_equal(rows[1], rows[2])
    assert not np.array_equal(rows[0], np.arange(n))  # shuffled before the first epoch
    # with replacement, the same number of draws repeats rows and misses others
    once = _worker_draws(new_sampler(batch, n, "replacement"), 3, n, 125).ravel()
    assert np.unique(once).size < n


def test_a_minibatch_straddling_an_epoch_ends_it_and_starts_the_next():
    n, batch = 7, 3
    rows = _worker_draws(new_sampler(batch, n, "epochs"), 5, n, 7).ravel()  # 3 epochs
    for epoch in rows.reshape(3, n):
        assert sorted(epoch) == list(range(n))


@njit
def _peeks_and_draws(sampler, seed, n_rows, k, first):
    """``k`` times: the rows :func:`next_rows` announces (−1 where none), then the rows drawn."""
    np.random.seed(seed)
    rows = batch_rows(sampler)
    if first:
        first_epoch(sampler, rows, n_rows)
    told = np.full((k, rows.shape[0]), -1, np.int64)
    drawn = np.empty((k, rows.shape[0]), np.int64)
    for i in range(k):
        ahead = next_rows(sampler, rows, n_rows)
        told[i, :ahead.shape[0]] = ahead
        draw_batch(sampler, rows, n_rows)
        drawn[i] = rows
    return told, drawn


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("sampling", ["replacement", "epochs"])
def test_next_rows_tells_the_next_minibatch_without_changing_the_draws(sampling, first):
    n, batch, k = 10, 3, 40
    told, drawn = _peeks_and_draws(new_sampler(batch, n, sampling), 7, n, k, first)
    np.testing.assert_array_equal(drawn, _worker_draws(new_sampler(batch, n, sampling), 7, n, k))
    known = (told >= 0).all(axis=1)
    np.testing.assert_array_equal(told[known], drawn[known])
    assert ((told[~known] == -1).all())  # a minibatch is told whole or not at all
    if sampling == "replacement":  # drawn one ahead: always known, the first once drawn
        assert known[1:].all() and known[0] == first
    else:  # known unless it reaches into the next epoch's permutation (not shuffled yet)
        assert 0 < (~known).sum() <= -(-k * batch // n) + 1 and known.sum() > k // 2


def test_a_sampler_holds_the_permutation_only_for_epochs():
    assert sampler_bytes(16, 60000, "replacement") == 8 * (18 + 16)  # the next minibatch
    assert sampler_bytes(16, 60000, "epochs") == 8 * (18 + 60000)
    with pytest.raises(ValueError, match="allowed: replacement, epochs"):
        new_sampler(16, 100, "shuffle")
    with pytest.raises(ValueError, match="allowed: replacement, epochs"):
        BatchStream(0, 100, 16, "shuffle")


def _spec(engine, algorithm, workers, sampling, updates=1500, **kw):
    exp = experiment_from_flags(engine, problem="logreg-synthetic", algorithm=algorithm,
                                workers=workers, updates=updates, lr=0.1, seed=3,
                                sampling=sampling, **kw)
    return expand(exp)[0]


def _quiet(spec):
    return dataclasses.replace(spec, eval=dataclasses.replace(
        spec.eval, every_updates=None, every_seconds=1e9))


def _real_equals_replay(real_spec, sim_spec) -> np.ndarray:
    """Run both; the replay's θ must be the real run's bit for bit.  Returns that θ."""
    real = RealRun(real_spec, progress=False)
    real.run()
    sim = SimRun(sim_spec, progress=False)
    sim.run()
    np.testing.assert_array_equal(sim.hook.theta, final_params(real))
    return final_params(real)


def test_real_seq_and_the_replay_walk_the_same_epochs_bit_for_bit():
    thetas = {}
    for sampling in ("replacement", "epochs"):
        real = RealRun(_quiet(_spec("real", "seq", 1, sampling)), progress=False)
        rec = real.run()
        assert rec.summary["sampling"] == sampling
        sim = SimRun(_quiet(_spec("sim", "seq", 1, sampling)), progress=False)
        sim_rec = sim.run()
        np.testing.assert_array_equal(sim.hook.theta, final_params(real))
        assert sim_rec.summary["final_loss"] == rec.summary["final_loss"]
        thetas[sampling] = final_params(real)
    assert not np.array_equal(thetas["replacement"], thetas["epochs"])


SMALL = {"n_train": 250, "n_test": 100}  # 16 rows a minibatch: epochs straddle minibatches


@pytest.mark.parametrize("algorithm", ["lock", "hogwild", "leashed"])
def test_every_real_algorithm_runs_many_epochs(algorithm):
    rec = RealRun(_quiet(_spec("real", algorithm, 2, "epochs", updates=600,
                               problem_options=SMALL)), progress=False).run()
    assert rec.summary["updates"] == 600 and np.isfinite(rec.summary["final_loss"])
    assert rec.summary["sampling"] == "epochs"


def test_sync_workers_walk_their_epochs_as_the_replay_does_bit_for_bit():
    """sync is deterministic with any number of workers: two real workers, each through
    ~19 epochs of 250 rows, give the replay's θ."""
    theta = _real_equals_replay(*(_quiet(_spec(e, "sync", 2, "epochs", updates=300,
                                               problem_options=SMALL)) for e in ("real", "sim")))
    plain = RealRun(_quiet(_spec("real", "sync", 2, "replacement", updates=300,
                                 problem_options=SMALL)), progress=False)
    plain.run()
    assert not np.array_equal(final_params(plain), theta)


def test_iid_runs_record_their_sampling():
    from stalesgd.sim.iid import run_iid_staleness

    from stalesgd.problems import make_problem

    problem = make_problem("linreg-synthetic", n_train=100, n_test=20)
    rec = run_iid_staleness(problem, [1.0], updates=50, lr=0.01, sampling="epochs")
    assert rec.summary["sampling"] == "epochs"


@pytest.mark.parametrize("algorithm,dtype,sampling", [
    ("hogwild", "float64", "epochs"), ("lock", "float64", "epochs"),
    ("hogwild", "float32", "epochs"), ("lock", "float32", "replacement"),
    ("leashed", "float32", "epochs")])
def test_sparse_problems_sample_epochs_in_real_runs_and_the_replay(algorithm, dtype, sampling):
    _real_equals_replay(*(_quiet(expand(experiment_from_flags(
        e, problem="logreg-sparse", algorithm=algorithm, workers=1, updates=800, lr=0.3,
        seed=1, batch=4, sampling=sampling, dtype=dtype,
        problem_options={"n_train": 500, "n_features": 300, "nnz": 8, "n_test": 100}))[0])
        for e in ("real", "sim")))


def test_the_setting_is_checked_and_named_in_reports():
    with pytest.raises(ExperimentError, match="problem.sampling.*allowed: replacement, epochs"):
        _spec("real", "lock", 2, "shuffled")
    with pytest.raises(ExperimentError, match="is not a problem option.*--sampling"):
        _spec("real", "lock", 2, "replacement", problem_options={"sampling": "epochs"})
    spec = _spec("sim", "lock", 2, "epochs")
    assert spec.problem.sampling == "epochs"
    row = {"problem": "logreg-synthetic", "algorithm": "lock", "workers": 2,
           "stepsize": "constant", "lr": 0.1, "batch": 16, "dtype": "float64"}
    assert "sampling" not in config_key({**row, "sampling": "replacement"})
    assert "sampling" not in config_key(row)  # older folders: no column
    assert config_key({**row, "sampling": "epochs"}).endswith("sampling=epochs")


def test_the_memory_check_counts_the_epoch_permutations():
    """Real runs and numeric replay keep one permutation per worker, a timing-only sparse
    simulation one per worker for its collision count; with replacement none is counted."""
    from stalesgd.app.preflight import check_memory

    def spec(engine, sampling, timing_only=False):
        s = expand(experiment_from_flags(
            engine, problem="logreg-sparse", algorithm="hogwild", workers=16, updates=10,
            sampling=sampling, problem_options={"n_train": 1_000_000, "nnz": 1}))[0]
        return dataclasses.replace(s, sim=dataclasses.replace(s.sim, timing_only=timing_only))

    one = 16 * 8 * 1_000_000  # bytes of the workers' permutations
    room = one + one // 2  # above the data, parameters and one set, below two sets
    for s in (spec("real", "epochs"), spec("sim", "epochs"), spec("sim", "epochs", True),
              spec("sim", "replacement")):
        check_memory([s], room)
    for s in (spec("real", "epochs"), spec("sim", "epochs"), spec("sim", "epochs", True)):
        with pytest.raises(ExperimentError, match="GiB of epoch permutations.*--sampling "
                                                  "replacement"):
            check_memory([s], one // 2)
    check_memory([spec("sim", "replacement")], one // 2)


SWEEP = """
name = "sampling-sweep"
engine = "sim"
workers = 2
seeds = [0]
[problem]
name = "logreg-synthetic"
options = { n_train = 500, n_test = 100 }
[stop]
updates = 300
[sim]
compute = "exp:1ms"
[sweep]
"problem.sampling" = ["replacement", "epochs"]
"""


def test_a_sweep_over_sampling_names_its_configurations_as_single_runs_do(tmp_path):
    from stalesgd.analysis.load import load_folders
    from stalesgd.app.cli import main

    exp = tmp_path / "sweep.toml"
    exp.write_text(SWEEP)
    assert main(["run", str(exp), "--out", str(tmp_path / "res"), "--no-progress",
                 "--no-report"]) == 0
    (folder,) = (tmp_path / "res").iterdir()
    runs = load_folders([folder]).runs
    assert "problem.sampling" not in runs.columns
    assert sorted(runs["sampling"]) == ["epochs", "replacement"]
    keys = sorted(config_key(row) for _, row in runs.iterrows())
    assert keys[1].endswith("float64 sampling=epochs") and "sampling" not in keys[0]
