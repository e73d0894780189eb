"""Numeric replay on several threads gives the one-core replay's results bit for bit.

Each run is replayed with the one-core loop (``STALESGD_REPLAY_THREADS=1``) and with the
pipeline on 2 and 3 threads (3: more threads than this machine may have cores, so tasks are
computed in other interleavings); θ, every update row, every evaluation and the summary must
be the same bits.  Sizes are tiny: what is checked is the order of the arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest
from stalesgd.app.cli import main
from stalesgd.sim.pipeline import (
    THREADS_ENV,
    THREADS_PER_CORE,
    LoopChoice,
    max_replay_threads,
    replay_threads,
)
from stalesgd.sim.replay import NumericReplay
from stalesgd.sim.run import SimRun
from stalesgd.sim.stepsizes import StepSizes

from stalesgd.experiment import expand, experiment_from_flags
from stalesgd.machine import usable_cores
from stalesgd.problems.registry import make_problem
from stalesgd.stepsize import make_rule

THREADS = (2, 3)
#: summary fields that measure the wall clock or say how the replay ran, not what it gave
WALL = {"wall_seconds", "sim_updates_per_wall_s", "replay_threads", "replay_parallel_batches",
        "replay_one_core_batches"}


def spec_of(problem="logreg-synthetic", algorithm="lock", workers=4, *, updates=1200,
            lr=0.1, stepsize="constant", dtype="float64", target_loss=None, persistence=None,
            controller=None, controller_options=None, **sim):
    exp = experiment_from_flags("sim", problem=problem, algorithm=algorithm, workers=workers,
                                stepsize=stepsize, lr=lr, updates=updates, dtype=dtype,
                                target_loss=target_loss, seed=5, persistence=persistence,
                                controller=controller, controller_options=controller_options,
                                sim={"compute": "exp:1ms", **sim})
    return expand(exp)[0]


def replay_with(spec, threads, monkeypatch):
    """(record, final θ, threads used) of ``spec`` replayed on ``threads`` threads."""
    monkeypatch.setenv(THREADS_ENV, str(threads))
    run = SimRun(spec, progress=False)
    rec = run.run()
    return rec, run.hook.theta.copy(), run.hook.threads


def assert_same_run(a, b):
    (rec_a, theta_a, _), (rec_b, theta_b, _) = a, b
    assert np.array_equal(theta_a, theta_b, equal_nan=True)
    for table in ("updates", "evals", "control"):
        x, y = getattr(rec_a, table), getattr(rec_b, table)
        assert x.keys() == y.keys()
        for col in x:
            assert np.array_equal(x[col], y[col], equal_nan=True), (table, col)
    assert {k: v for k, v in rec_a.summary.items() if k not in WALL} == \
        {k: v for k, v in rec_b.summary.items() if k not in WALL}


def check_every_thread_count(spec, monkeypatch):
    """Replay ``spec`` on 1, 2 and 3 threads; all must agree. Returns the one-core run."""
    serial = replay_with(spec, 1, monkeypatch)
    assert serial[2] == 1
    for threads in THREADS:
        parallel = replay_with(spec, threads, monkeypatch)
        assert parallel[2] == threads
        assert_same_run(serial, parallel)
    return serial


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("algorithm,workers,extra", [
    ("seq", 1, {}),
    ("sync", 3, {}),
    ("lock", 4, {"stepsize": "tail"}),
    ("hogwild", 4, {}),
    ("leashed", 4, {"persistence": 1, "update": "det:200us", "stepsize": "tail"}),
])
def test_parallel_replay_is_the_one_core_replay(monkeypatch, algorithm, workers, extra, dtype):
    rec = check_every_thread_count(
        spec_of(algorithm=algorithm, workers=workers, dtype=dtype, **extra), monkeypatch)[0]
    assert rec.summary["updates"] == 1200 and len(rec.evals["loss"]) > 2
    if algorithm == "leashed":
        assert rec.summary["dropped"] > 0  # drops: a worker reads again without an apply
    if extra.get("stepsize") == "tail":
        assert rec.summary["stepsize_tables"] >= 1  # an online rule switched tables


def test_parallel_replay_mlp_with_more_workers_than_threads(monkeypatch):
    spec = spec_of("mlp-synthetic", workers=6, updates=400, lr=0.05, cores=3)
    check_every_thread_count(spec, monkeypatch)


def test_parallel_replay_of_an_elastic_run(monkeypatch):
    spec = spec_of(workers=6, updates=3000, controller="window",
                   controller_options={"probe": 300, "execute": 600})
    rec = check_every_thread_count(spec, monkeypatch)[0]
    assert len(np.unique(rec.control["m"])) > 1  # the controller changed the level


def test_parallel_replay_stops_at_the_same_target(monkeypatch):
    rec = check_every_thread_count(spec_of(workers=3, updates=20000, target_loss=0.45),
                                   monkeypatch)[0]
    assert rec.summary["stop_reason"] == "target" and rec.summary["updates"] < 20000


def test_parallel_replay_diverges_at_the_same_read(monkeypatch):
    """A huge step makes a minibatch loss overflow inside a batch of buffered ops: the run is
    cut at that read, on any number of threads."""
    spec = spec_of("linreg-synthetic", workers=4, updates=5000, lr=1e3)
    rec = check_every_thread_count(spec, monkeypatch)[0]
    s = rec.summary
    assert s["diverged"] and s["stop_reason"] == "diverged" and s["updates"] < 5000


class StopRecorder:
    """Stands in for the simulation: records where the replay stops the run."""

    def __init__(self):
        self.stops = []

    def stop_retroactively(self, rows, t):
        self.stops.append((rows, t))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_first_non_finite_read_and_theta_before_it(dtype):
    """Straight on the batched replay: one buffer of m reads, then rounds of (apply w, read
    w), where one apply takes a step so large that the reads after it are all non-finite.
    The first of them in op order stops the run, and θ is the one just before it, as on one
    core (several non-finite reads are in flight at once on several threads)."""
    problem = make_problem("linreg-synthetic", dtype=dtype)
    m, huge_at = 4, 11
    huge = 1e200 if dtype == "float64" else 1e38

    def run(threads):
        step = StepSizes(make_rule("constant", workers=m, lr=0.1), 8)
        hook = NumericReplay(problem, m, step, batch=8, seed=1, threads=threads)
        hook.sim = StopRecorder()
        for w in range(m):
            hook.ops.read(w, rows=w, t=float(w), fed=0)
        for k in range(40):
            w = k % m
            hook.ops.apply((w << 1) | 1, huge if k == huge_at else 0.01)
            hook.ops.read(w, rows=m + k, t=float(m + k), fed=0)
        hook.flush()
        return hook.sim.stops, hook.diverged, hook.theta.copy()

    stops, diverged, theta = run(1)
    assert diverged and stops == [(m + huge_at, float(m + huge_at))]
    assert not np.all(np.abs(theta) < 1e20)  # θ after the huge step, before the read
    for threads in (2, 3, 4):
        got_stops, got_diverged, got_theta = run(threads)
        assert (got_stops, got_diverged) == (stops, diverged)
        assert np.array_equal(got_theta, theta, equal_nan=True)


@pytest.mark.parametrize("n_train", [1, 300])
def test_minibatches_drawn_or_given_in_read_order(n_train):
    """The hook's own calls, without a simulation: with one training row the minibatches are
    not drawn inside the compiled loop but handed to it in read order; both ways, any thread
    count gives the one-core θ."""
    problem = make_problem("linreg-synthetic", n_train=n_train, n_test=10)
    m = 3

    def theta_after(threads):
        hook = NumericReplay(problem, m, StepSizes(make_rule("constant", workers=m, lr=0.01), 8),
                             batch=4, seed=2, threads=threads)
        version = 0
        for w in range(m):
            hook.read(w, version)
        for k in range(60):
            w = k % m
            hook.apply(w, max(0, version - m + 1), version)
            version += 1
            hook.read(w, version)
        return hook.theta.copy()

    want = theta_after(1)
    for threads in THREADS:
        assert np.array_equal(theta_after(threads), want)


class Alternate:
    """A loop choice that runs the batches on the pipeline and on one core in turn."""

    def __init__(self):
        self.calls = []

    def use_pipeline(self):
        return len(self.calls) % 2 == 0

    def record(self, pipeline, seconds, reads):
        self.calls.append(pipeline)

    def next_is_trial(self):
        return len(self.calls) % 3 == 0  # (batch sizes vary too)


def test_batches_on_the_pipeline_and_on_one_core_in_turn_give_the_one_core_replay():
    """The automatic choice may move a run between the two loops from one batch to the next
    (the gradient of a read in one batch applied in a later one): θ stays the same bits."""
    problem = make_problem("mlp-synthetic", n_train=300, n_test=10)
    m = 4

    def theta_after(threads, choice):
        hook = NumericReplay(problem, m, StepSizes(make_rule("constant", workers=m, lr=0.05), 8),
                             batch=4, seed=3, threads=threads)
        hook.loop_choice = choice
        version = 0
        for w in range(m):
            hook.read(w, version)
        for k in range(90):
            w = (3 * k) % m
            hook.apply(w, max(0, version - m + 1), version)
            version += 1
            hook.read(w, version)
            if k % 7 == 6:
                hook.flush()  # one batch
        return hook.theta.copy()

    want = theta_after(1, None)
    choice = Alternate()
    assert np.array_equal(theta_after(2, choice), want)
    assert True in choice.calls and False in choice.calls


def test_the_loop_choice_keeps_the_faster_loop_and_times_the_other_again():
    first = LoopChoice.FIRST_RETRY
    choice = LoopChoice(gradient_floor=1.0)

    trials = []

    def batch(seconds_per_read):
        trials.append(choice.next_is_trial())
        pipeline = choice.use_pipeline()
        choice.record(pipeline, 100 * seconds_per_read[pipeline], 100)
        return pipeline

    # a pipeline faster than one gradient per read: the one-core loop, which cannot be faster
    # than that, is never tried
    assert [batch({True: 0.6, False: 1.3}) for _ in range(20)] == [True] * 20
    assert trials == [True] + [False] * 19  # (the first batch is a trial: short)
    choice.record(False, 50.0, 3)  # a few reads flushed for an evaluation: not timed
    assert choice.one_core_cost is None and choice.batches == [1, 20]
    choice.batches[0] = 0
    # the host moves the cores apart: the pipeline takes 3 gradients' time per read; the
    # one-core loop takes over and the pipeline is tried again after `first` batches, then
    # after twice as many while it keeps losing
    far = {True: 3.0, False: 1.3}
    trials.clear()
    got = [batch(far) for _ in range(1 + first + 1 + 2 * first + 1)]
    assert got == [True] + [False] * first + [True] + [False] * (2 * first) + [True]
    assert trials == [g and i > 0 for i, g in enumerate(got)]  # each retry of the pipeline
    assert choice.retry == 4 * first
    # the cores are near again: the pipeline wins its next try and stays; the one-core loop,
    # timed now, is tried again after `first` batches, and less often while it keeps losing
    near = {True: 0.6, False: 1.3}
    # (the try that wins is the first of those batches)
    got = [batch(near) for _ in range(4 * first + first + 1 + 2 * first + 1)]
    assert got == [False] * (4 * first) + [True] * first + [False] + [True] * (2 * first) + \
        [False]
    assert choice.batches == [7 * first + 2, 20 + 3 + 3 * first]


def test_thread_count_setting(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "3")
    assert replay_threads(8, lambda: 0.0) == 3
    monkeypatch.setenv(THREADS_ENV, "1")
    assert replay_threads(8, lambda: 1.0) == 1
    monkeypatch.delenv(THREADS_ENV)
    assert replay_threads(1, lambda: 1.0) == 1  # one worker: one gradient in flight
    assert replay_threads(8, lambda: 1e-7) == 1  # a tiny gradient: the pipeline costs more
    most = max_replay_threads()
    assert most == THREADS_PER_CORE * (usable_cores() or 1)
    monkeypatch.setenv(THREADS_ENV, str(most))
    assert replay_threads(8, lambda: 1.0) == most
    # (999 threads on 2 cores spun against each other: a 3-second replay took 3 min 42 s)
    for bad in ("0", "two", "-1", "1.5", str(most + 1), "999"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(ValueError, match=f"{THREADS_ENV}='{bad}' is not allowed; use a "
                                             f"whole number from 1 to {most} "):
            replay_threads(4, lambda: 1.0)
    problem = make_problem("logreg-synthetic")
    for bad in (0, most + 1):
        with pytest.raises(ValueError, match=f"threads {bad} is not allowed"):
            NumericReplay(problem, 2, StepSizes(make_rule("constant", workers=2, lr=0.1), 8),
                          batch=8, seed=0, threads=bad)


def test_cli_names_a_bad_thread_count(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(THREADS_ENV, "many")
    code = main(["sim", "--problem", "logreg-synthetic", "--algorithm", "lock", "--workers", "2",
                 "--updates", "10", "--out", str(tmp_path), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert THREADS_ENV in err and "'many'" in err and "whole number" in err


def test_the_run_record_says_how_the_replay_ran(monkeypatch):
    """`replay_threads` always; with the automatic choice, the batches each loop ran."""
    import stalesgd.sim.pipeline as pipeline

    spec = spec_of(workers=3, updates=9000)  # (several batches of buffered ops)
    rec, _, threads = replay_with(spec, 2, monkeypatch)
    assert threads == 2 and rec.summary["replay_threads"] == 2
    assert "replay_parallel_batches" not in rec.summary  # (a set count: no choice made)
    if (usable_cores() or 1) < 2:
        pytest.skip("one usable core: the automatic choice runs no pipeline")
    monkeypatch.delenv(THREADS_ENV)
    monkeypatch.setattr(pipeline, "MIN_GRADIENT_SECONDS", 0.0)  # any gradient is worth it
    run = SimRun(spec, progress=False)
    s = run.run().summary
    assert s["replay_threads"] == min(usable_cores(), 3)
    batches = s["replay_parallel_batches"] + s["replay_one_core_batches"]
    assert s["replay_parallel_batches"] >= 1 and batches == run.hook.loop_choice.batches[0] + \
        run.hook.loop_choice.batches[1] >= 3
    timing_only = SimRun(spec_of(workers=3, updates=100, timing_only=True), progress=False)
    assert "replay_threads" not in timing_only.run().summary


@pytest.mark.parametrize("algorithm", ["lock", "hogwild"])
def test_reshuffled_epochs_replay_alike_on_every_thread_count(algorithm, monkeypatch):
    """With ``sampling = "epochs"`` the minibatches come from the workers' streams in read
    order (not drawn inside the loops): every thread count still gives the same run."""
    exp = experiment_from_flags("sim", problem="logreg-synthetic", algorithm=algorithm,
                                workers=4, updates=1200, lr=0.1, seed=5, sampling="epochs",
                                problem_options={"n_train": 700},
                                sim={"compute": "exp:1ms"})
    serial = check_every_thread_count(expand(exp)[0], monkeypatch)
    assert serial[0].summary["sampling"] == "epochs"
    assert np.isfinite(serial[0].summary["final_loss"])


def test_each_replay_thread_has_a_workspace_on_lines_of_its_own():
    """A workspace 16 bytes off a 32-byte boundary made LeNet-5's gradient 13-18 % slower, and
    two threads' workspaces on one cache line would take it from each other on every write."""
    problem = make_problem("mlp-synthetic", n_train=300, n_test=10)
    hook = NumericReplay(problem, 4, StepSizes(make_rule("constant", workers=4, lr=0.05), 8),
                         batch=4, seed=3, threads=3)
    spaces = [hook.ws, *hook._pipeline.ws]
    lines = [set(range(a.ctypes.data // 64, (a.ctypes.data + a.nbytes - 1) // 64 + 1))
             for a in spaces]
    assert all(a.ctypes.data % 64 == 0 and a.size >= hook.ws.size for a in spaces)
    assert all(not (lines[i] & lines[j]) for i in range(4) for j in range(i + 1, 4))
