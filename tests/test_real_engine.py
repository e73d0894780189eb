"""Correctness of the real engine: exact update counts, τ as DESIGN §4 defines it under
forced interleavings, Leashed-SGD's retries, drops and pool, sync against an averaged
sequential reference, the streamed record, stop rules, divergence and interruption."""

from __future__ import annotations

import _thread
import dataclasses
import inspect
import math
import threading
from dataclasses import dataclass, field

import numpy as np
import pytest
from numba import njit
from stalesgd.real import control as C
from stalesgd.real import engine
from stalesgd.real.atomics import atomic_add
from stalesgd.real.engine import RealRun, final_params, run_real, validate_real
from stalesgd.real.pool import acquire_latest, pool_size, release
from stalesgd.real.record import ring_rows
from stalesgd.real.schedule import make_script
from stalesgd.real.workers import WORKER_ARGS

from stalesgd.algorithms import ALGORITHMS
from stalesgd.data.dataset import Dataset
from stalesgd.experiment import ExperimentError, expand, experiment_from_flags
from stalesgd.problems._kernels import n_rows
from stalesgd.problems.base import Model
from stalesgd.problems.registry import Problem
from stalesgd.records import UpdateLog
from stalesgd.seeds import worker_seeds
from stalesgd.stepsize import tail_table


def make_spec(algorithm: str, workers: int, *, problem: str = "logreg-synthetic",
              updates: int | None = 4000, seconds: float | None = None, lr: float = 0.05,
              stepsize: str = "constant", seed: int = 0, quiet: bool = False, **kw):
    """A real run's spec; ``quiet``: no evaluations while it runs (only at both ends)."""
    exp = experiment_from_flags("real", problem=problem, algorithm=algorithm, workers=workers,
                                updates=updates, seconds=seconds, lr=lr, stepsize=stepsize,
                                seed=seed, **kw)
    spec = expand(exp)[0]
    if quiet:
        spec = dataclasses.replace(spec, eval=dataclasses.replace(
            spec.eval, every_updates=None, every_seconds=1e9))
    return spec


def applied_rows(updates) -> dict[str, np.ndarray]:
    """The applied updates' columns of a record, in k order."""
    keep = ~np.asarray(updates["dropped"])
    order = np.argsort(np.asarray(updates["k"])[keep])
    return {c: np.asarray(updates[c])[keep][order] for c in ("k", "worker", "tau", "eta",
                                                             "attempts")}


# --- a model that makes torn reads and lost updates visible -------------------------------


@njit(nogil=True)
def _counting_grad(theta, X, y, idx, grad, ws, dims):
    """Gradient −1 everywhere (so θ ← θ + η per update); counts reads of θ whose
    coordinates are not all equal (torn) into the shared counter y[0]."""
    first = theta[0]
    torn = 0
    for j in range(theta.shape[0]):
        if theta[j] != first:
            torn = 1
        grad[j] = -1.0
    if torn:
        atomic_add(y, 0, 1)
    return 0.0


@njit(nogil=True)
def _counting_loss(theta, X, y, idx, ws, dims):
    return 0.0, 0


@dataclass
class CountingModel(Model):
    size: int = 2000
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float64))

    def __post_init__(self):
        self.name = "counting"
        self.n_params = self.size
        self.dims = np.zeros(1, dtype=np.int64)
        self.layers = {"theta": (0, (self.size,))}

    @property
    def grad_kernel(self):
        return _counting_grad

    @property
    def loss_kernel(self):
        return _counting_loss

    def workspace_size(self, batch: int) -> int:
        return 1

    def init_params(self, seed: int, scheme: str = "default") -> np.ndarray:
        return np.zeros(self.size, dtype=self.dtype)


def counting_problem(size: int = 2000) -> Problem:
    X = np.zeros((4, 1))
    y = np.zeros(4, dtype=np.int64)  # y[0] is the torn-read counter
    data = Dataset("counting", X, y, X.copy(), np.zeros(4, dtype=np.int64), 2, (1,))
    return Problem("counting", CountingModel(size=size), data)


def run_counting(algorithm: str, workers: int, updates: int, schedule=None):
    spec = make_spec(algorithm, workers, updates=updates, lr=1.0, quiet=True)
    problem = counting_problem()
    run = RealRun(spec, progress=False, problem=problem, schedule=schedule)
    record = run.run()
    return run, record, int(problem.dataset.y_train[0]), final_params(run)


# --- one description per algorithm ----------------------------------------------------------


def test_every_real_worker_takes_the_one_argument_list():
    for alg in ALGORITHMS.values():
        fn = alg.implementation("real")
        assert tuple(inspect.signature(fn.py_func).parameters) == WORKER_ARGS, alg.name


def test_the_real_package_has_no_import_circle():
    from test_layering import cycles, import_graph

    graph = import_graph("stalesgd.real")
    assert "stalesgd.real.engine" in graph["stalesgd.real"]
    assert cycles(graph) == []


def test_the_engine_check_refuses_what_it_cannot_run():
    with pytest.raises(ExperimentError, match=r"stop.updates = 9007199254740993 .*at most "
                                              r"9007199254740992"):
        validate_real(make_spec("lock", 2, updates=2**53 + 1))
    big = dataclasses.replace(make_spec("seq", 1), workers=2)
    with pytest.raises(ExperimentError, match="workers = 2 .*allowed: 1 for algorithm 'seq'"):
        validate_real(big)
    bad = dataclasses.replace(big, algorithm=dataclasses.replace(big.algorithm, name="magic"))
    with pytest.raises(ExperimentError, match="magic.*seq, sync, lock, hogwild, leashed"):
        RealRun(bad)
    validate_real(make_spec("leashed", 8, updates=2**53))  # the largest budget is fine


# --- exact counts and staleness ----------------------------------------------------------


@pytest.mark.parametrize("algorithm,workers", [("seq", 1), ("lock", 2), ("hogwild", 2),
                                               ("sync", 2), ("leashed", 2), ("lock", 4)])
def test_update_indices_are_exact(algorithm, workers):
    rec = run_real(make_spec(algorithm, workers, updates=3000), progress=False)
    u = rec.updates
    applied = ~u["dropped"]
    assert np.array_equal(u["k"][applied], np.arange(3000))  # drained in order, each once
    assert rec.summary["updates"] == 3000
    assert rec.summary["stop_reason"] == "updates"
    assert np.all(u["tau"][applied] <= u["k"][applied])
    assert np.all(u["t_apply"] >= u["t_read"])
    if algorithm in ("seq", "sync"):
        assert np.all(u["tau"] == 0)
    assert set(np.unique(u["worker"])) <= set(range(workers))


def test_lock_tau_counts_the_updates_applied_between_read_and_apply():
    """Under the lock, read and apply are totally ordered by their time stamps, so
    τ_k must equal the number of other updates applied between k's read and apply."""
    rec = run_real(make_spec("lock", 2, updates=30000), progress=False)
    u = rec.updates
    order = np.argsort(u["k"])
    t_read, t_apply, tau = u["t_read"][order], u["t_apply"][order], u["tau"][order]
    assert np.all(np.diff(t_apply) > 0)
    between = np.searchsorted(t_apply, t_apply) - np.searchsorted(t_apply, t_read)
    assert np.array_equal(between, tau)


#: worker 1 reads first, worker 0 applies twice meanwhile, then they alternate:
#: v=0: w1 reads (t0=0), w0 reads (0), w0 applies k=0 (τ 0), reads (1), applies k=1 (τ 0),
#: reads (2); w1 applies k=2 (τ 2−0), reads (3); w0 applies k=3 (τ 3−2); w1 applies k=4 (τ 1)
TURNS = [(1, "read"), (0, "read"), (0, "apply"), (0, "read"), (0, "apply"), (0, "read"),
         (1, "apply"), (1, "read"), (0, "apply"), (1, "apply")]


@pytest.mark.parametrize("algorithm", ["lock", "hogwild"])
def test_tau_under_a_forced_interleaving(algorithm):
    run = RealRun(make_spec(algorithm, 2, updates=5, quiet=True), progress=False,
                  schedule=make_script(TURNS))
    u = applied_rows(run.run().updates)
    assert u["k"].tolist() == [0, 1, 2, 3, 4]
    assert u["worker"].tolist() == [0, 0, 1, 0, 1]
    assert u["tau"].tolist() == [0, 0, 2, 1, 1]


def publish(w: int) -> list[tuple[int, str]]:
    """One Leashed-SGD publish attempt of worker ``w``: take the latest vector, claim one,
    copy and apply, compare-and-swap."""
    return [(w, "apply"), (w, "claim"), (w, "copy"), (w, "publish")]


def update(w: int) -> list[tuple[int, str]]:
    """Worker ``w`` reads, computes and publishes with nobody in between."""
    return [(w, "read"), *publish(w)]


def test_leashed_tau_and_retries_under_a_forced_interleaving():
    # both read version 0; both take it to apply; w0 publishes version 1 first, so w1's
    # compare-and-swap fails and it retries on version 1: τ = 1 − 0, two attempts
    turns = [(0, "read"), (1, "read"), (0, "apply"), (1, "apply"), (0, "claim"),
             (0, "copy"), (0, "publish"), (1, "claim"), (1, "copy"), (1, "publish"),
             *publish(1)]
    run = RealRun(make_spec("leashed", 2, updates=2, quiet=True), progress=False,
                  schedule=make_script(turns))
    rec = run.run()
    u, s = applied_rows(rec.updates), rec.summary
    assert u["worker"].tolist() == [0, 1]
    assert u["tau"].tolist() == [0, 1]
    assert u["attempts"].tolist() == [1, 2]
    assert (s["failed_publishes"], s["failed_publishes_at_stop"], s["dropped"]) == (1, 0, 0)
    assert s["tries_per_update"] == 1.5


@pytest.mark.parametrize("persistence", [0, 1, 2, 3])
def test_leashed_persistence_drops_and_retries_exactly(persistence):
    """Worker 1's first gradient fails ``p`` times (w0 publishes between its take and its
    compare-and-swap) and then succeeds; its second fails p + 1 times and is dropped."""
    p = persistence
    fail_once = [(1, "apply"), (1, "claim"), (1, "copy"), *update(0), (1, "publish")]
    turns = [(1, "read"), *fail_once * p, *publish(1),
             (1, "read"), *fail_once * (p + 1),
             *update(1)]
    run = RealRun(make_spec("leashed", 2, updates=2 * p + 3, persistence=p, quiet=True),
                  progress=False, schedule=make_script(turns))
    rec = run.run()
    u, s = applied_rows(rec.updates), rec.summary
    assert u["k"].tolist() == list(range(2 * p + 3))
    assert u["worker"].tolist() == [0] * p + [1] + [0] * (p + 1) + [1]
    assert u["tau"].tolist() == [0] * p + [p] + [0] * (p + 1) + [0]
    assert u["attempts"].tolist() == [1] * p + [p + 1] + [1] * (p + 1) + [1]
    drops = rec.updates["dropped"]
    assert rec.updates["worker"][drops].tolist() == [1]
    assert rec.updates["tau"][drops].tolist() == [p]  # taken at version 2p+1, read at p+1
    assert rec.updates["attempts"][drops].tolist() == [p + 1]
    assert rec.updates["k"][drops].tolist() == [-1] and rec.updates["eta"][drops][0] == 0.0
    assert (s["failed_publishes"], s["dropped"], s["failed_publishes_at_stop"]) == (
        2 * p + 1, 1, 0)
    assert s["persistence"] == float(p)


def test_leashed_pool_high_water_reaches_the_bound_with_the_monitor_holding_a_vector():
    """m = 2: the monitor's snapshot holds vector 0 (version 0); w0 holds version 1 to apply;
    w1 holds version 2 (published) and has claimed a vector for version 3: four in use, and
    w0's claim takes the fifth, the last of a pool of 2m + 1, without waiting."""
    turns = [*update(1),  # version 1
             (0, "read"), (0, "apply"),  # w0 holds version 1
             *update(1),  # version 2
             (1, "read"), (1, "apply"), (1, "claim"),  # w1 holds version 2 and a new vector
             (0, "claim"),  # the fifth vector
             (0, "copy"), (1, "copy"), (1, "publish"),  # version 3
             (0, "publish"),  # fails: w0 took version 1
             *publish(0)]  # version 4 on version 3: τ = 3 − 1
    run = RealRun(make_spec("leashed", 2, updates=4, quiet=True), progress=False,
                  schedule=make_script(turns))
    sh = run.shared
    monitor = acquire_latest(sh.refs, sh.ctrl, sh.pool.shape[0])  # a snapshot held all along
    rec = run.run()
    u, s = applied_rows(rec.updates), rec.summary
    assert u["worker"].tolist() == [1, 1, 1, 0]
    assert u["tau"].tolist() == [0, 0, 0, 2]
    assert u["attempts"].tolist() == [1, 1, 1, 2]
    assert s["pool_high_water"] == pool_size(2) == sh.pool.shape[0] == 5
    assert s["pool_claim_waits"] == 0
    assert s["pool_high_water_bytes"] == 5 * sh.theta.nbytes
    release(sh.refs, monitor % 5, sh.ctrl)
    # the accounting is back to the published vector alone
    assert int(sh.ctrl[C.C_IN_USE]) == 1 and sh.refs.tolist() == [0, 0, 0, 0, 1]


def test_a_script_that_does_not_fit_the_workers_is_a_clear_error():
    run = RealRun(make_spec("lock", 2, updates=5, quiet=True), progress=False,
                  schedule=make_script([(0, "apply")]))
    with pytest.raises(ValueError, match="turn 0 of the script is worker 0 at gate 'apply'"):
        run.run()
    with pytest.raises(ValueError, match="gate 'later' is not known; allowed: read, apply"):
        make_script([(0, "later")])


# --- sync and one worker against a sequential reference --------------------------------


@njit
def _draws(seed, rounds, batch, rows):
    """A worker's minibatches: its seed, then one draw per row, as the workers draw."""
    np.random.seed(seed)
    out = np.empty((rounds, batch), np.int64)
    for r in range(rounds):
        for i in range(batch):
            out[r, i] = np.random.randint(0, rows)
    return out


@njit
def _averaged_sgd(kernel, theta, X, y, idx, grads, ws, dims, eta):
    """Each round: every worker's gradient on the same θ, then θ −= η · their mean (summed in
    worker order, as sync's worker 0 does)."""
    m, rounds = idx.shape[0], idx.shape[1]
    for r in range(rounds):
        for w in range(m):
            kernel(theta, X, y, idx[w, r], grads[w], ws, dims)
        scale = eta / m
        for j in range(theta.shape[0]):
            acc = 0.0
            for w in range(m):
                acc += grads[w, j]
            theta[j] -= scale * acc


def averaged_reference(spec, problem, rounds: int) -> np.ndarray:
    d = problem.dataset
    X = d.inputs("train")
    idx = np.stack([_draws(s, rounds, spec.problem.batch, n_rows(X))
                    for s in worker_seeds(spec.seed, spec.workers)])
    theta = problem.init_params(spec.seed)
    grads = np.zeros((spec.workers, theta.shape[0]), theta.dtype)
    _averaged_sgd(problem.model.grad_kernel, theta, X, d.y_train, idx, grads,
                  problem.workspace(spec.problem.batch), problem.model.dims,
                  float(spec.stepsize.lr))
    return theta


@pytest.mark.parametrize("algorithm,workers,problem", [
    ("sync", 2, "logreg-synthetic"), ("sync", 4, "logreg-synthetic"),
    ("sync", 2, "mlp-synthetic"), ("sync", 4, "mlp-synthetic"),
    ("seq", 1, "mlp-synthetic"), ("lock", 1, "mlp-synthetic"), ("hogwild", 1, "mlp-synthetic"),
    ("leashed", 1, "mlp-synthetic")])
def test_runs_equal_the_averaged_sequential_reference_bit_for_bit(algorithm, workers,
                                                                  problem):
    spec = make_spec(algorithm, workers, problem=problem, updates=300, seed=3, quiet=True)
    run = RealRun(spec, progress=False)
    run.run()
    assert np.array_equal(final_params(run), averaged_reference(spec, run.problem, 300))


# --- consistency -------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["lock", "leashed"])
def test_consistent_algorithms_never_tear_or_lose_updates(algorithm):
    run, rec, torn, theta = run_counting(algorithm, 2, 3000)
    assert torn == 0
    assert np.all(theta == 3000.0)  # no update lost
    if algorithm == "leashed":
        assert run.shared.refs.sum() == 1  # only the published vector is held
        assert int(run.shared.ctrl[C.C_IN_USE]) == 1
        assert 2 <= rec.summary["pool_high_water"] <= pool_size(2)


def test_hogwild_taking_turns_neither_tears_nor_loses():
    """Forced to take turns, Hogwild! has no race: every read whole, every update kept."""
    turns = [(0, "read"), (0, "apply"), (1, "read"), (1, "apply")] * 100  # 200 updates
    run, rec, torn, theta = run_counting("hogwild", 2, 200, schedule=make_script(turns))
    assert torn == 0 and np.all(theta == 200.0)
    assert applied_rows(rec.updates)["tau"].tolist() == [0] * 200


def test_hogwild_racing_applies_each_update_at_most_once_per_coordinate():
    run, rec, torn, theta = run_counting("hogwild", 2, 3000)
    lost = 3000.0 - theta  # element updates lost to races (measured, not forbidden)
    assert np.all(lost >= 0) and np.all(lost <= 3000)
    assert np.all(theta == np.round(theta))  # whole updates only: η = 1, g = −1
    print(f"hogwild: {torn} torn reads of 3000, up to {lost.max():.0f} lost element updates")


def test_leashed_unbounded_persistence_drops_nothing():
    rec = run_real(make_spec("leashed", 4, updates=4000), progress=False)
    s, u = rec.summary, rec.updates
    assert s["dropped"] == 0
    # every failed publish belongs to a logged update, except those of gradients that
    # were still retrying when the run reached its last update
    assert int(u["attempts"].sum()) == (
        4000 + s["failed_publishes"] - s["failed_publishes_at_stop"])
    assert 0 <= s["failed_publishes_at_stop"] <= s["failed_publishes"]


# --- the streamed record ------------------------------------------------------------------


@pytest.mark.parametrize("algorithm,persistence", [("lock", None), ("hogwild", None),
                                                   ("leashed", 0)])
def test_a_run_much_longer_than_the_ring_keeps_every_row_once(monkeypatch, algorithm,
                                                              persistence):
    monkeypatch.setattr(engine, "RING_ROWS", 64)
    monkeypatch.setattr(engine, "DRAIN_ROWS", 16)
    kw = {} if persistence is None else {"persistence": persistence}
    run = RealRun(make_spec(algorithm, 2, updates=20_000, **kw), progress=False)
    assert ring_rows(run.shared.ring) == 64
    rec = run.run()
    u = rec.updates
    applied = ~u["dropped"]
    assert np.array_equal(u["k"][applied], np.arange(20_000))  # in order, each once
    assert rec.summary["record_waits"] > 0  # the workers waited for room, losing nothing
    if algorithm == "leashed":
        assert int((~applied).sum()) == rec.summary["dropped"] == rec.summary[
            "failed_publishes"]


def test_the_record_reaches_the_folder_while_the_run_goes_on(tmp_path):
    log = UpdateLog("all", folder=tmp_path, run_id="r0000", chunk_rows=50_000)
    seen: list[tuple[int, bool]] = []  # (chunk files, log closed) while the run goes on
    done = threading.Event()

    def watch():
        while not done.wait(0.02):
            seen.append((len(log.files), log.closed))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        rec = RealRun(make_spec("lock", 2, updates=None, seconds=1.0), progress=False,
                      updates=log).run()
    finally:
        done.set()
        watcher.join()
    assert any(files > 0 and not closed for files, closed in seen)
    assert rec.summary["stop_reason"] == "seconds"
    k = np.sort(np.asarray(rec.updates["k"]))
    assert np.array_equal(k, np.arange(rec.summary["updates"]))


def test_rows_every_n_keep_a_sample_and_count_every_update():
    rec = run_real(make_spec("hogwild", 2, updates=5000, log_rows="every:100"),
                   progress=False)
    assert rec.updates["k"].tolist() == list(range(0, 5000, 100))
    assert rec.summary["updates"] == 5000 and rec.summary["logged_rows"] == 50
    assert rec.update_stats.tau_counts.sum() == 5000


# --- stop rules, divergence, interruption ------------------------------------------------


def test_time_budget_stops_the_run():
    rec = run_real(make_spec("lock", 2, updates=None, seconds=0.5), progress=False)
    assert rec.summary["stop_reason"] == "seconds"
    assert 0.5 <= rec.summary["seconds"] < 3.0
    assert rec.summary["updates"] > 0


def test_a_run_lasts_until_its_workers_leave_not_until_the_monitor_looks(monkeypatch):
    """``seconds`` (and so updates/s) ends when the last worker leaves its loop: a monitor
    that wakes only every 2 s must not stretch a run of a few milliseconds to 2 s."""
    monkeypatch.setattr(engine, "POLL_SECONDS", 2.0)
    rec = run_real(make_spec("hogwild", 1, updates=2000, quiet=True), progress=False)
    s = rec.summary
    assert s["updates"] == 2000 and s["stop_reason"] == "updates"
    last_apply = float(np.max(rec.updates["t_apply"]))
    assert last_apply <= s["seconds"] < 1.0  # (the old end: the monitor's wake-up, >= 2 s)
    # the evaluation after the workers left saw the θ of the run's end: it is dated then
    assert rec.evals["t"][-1] == s["seconds"] and rec.evals["k"][-1] == 2000


def test_a_target_seen_after_the_workers_left_is_reached_within_the_run():
    """The monitor may see the target only once the workers have left (their last update
    reached it): the time to target is then the run's end, not the monitor's clock."""
    first = run_real(make_spec("seq", 1, updates=2000, quiet=True), progress=False)
    target = float(first.evals["loss"][-1])  # θ after the 2000 updates (seq: the same again)
    rec = run_real(make_spec("seq", 1, updates=2000, quiet=True, target_loss=target),
                   progress=False)
    s = rec.summary
    assert s["updates_to_target"] == 2000
    assert float(np.max(rec.updates["t_apply"])) <= s["time_to_target"] <= s["seconds"]


def test_target_loss_stops_the_run_and_is_recorded():
    spec = make_spec("lock", 2, updates=200000, lr=0.1)
    spec = dataclasses.replace(spec, stop=dataclasses.replace(spec.stop, target_loss=0.45),
                               eval=dataclasses.replace(spec.eval, every_updates=None,
                                                        every_seconds=0.02))
    rec = run_real(spec, progress=False)
    s = rec.summary
    assert s["stop_reason"] == "target"
    assert s["converged"] and s["time_to_target"] > 0
    assert s["updates"] < 200000
    assert rec.evals["loss"][-1] <= 0.45 + 0.05


def test_a_nan_gradient_is_recorded_as_divergence_not_raised():
    rec = run_real(make_spec("hogwild", 2, updates=20000, lr=1e6,
                             problem="linreg-synthetic"), progress=False)
    assert rec.summary["diverged"] is True
    assert rec.summary["converged"] is False
    assert rec.summary["stop_reason"] == "diverged"


def test_a_loss_blowing_up_ten_thousandfold_stops_the_run_as_diverged():
    """logreg's loss stays finite however large η is: the blow-up rule catches it."""
    spec = make_spec("lock", 2, updates=2_000_000, lr=1e10)
    rec = run_real(spec, progress=False)
    s = rec.summary
    assert s["diverged"] is True and s["stop_reason"] == "diverged"
    assert np.all(np.isfinite(rec.evals["loss"]))
    assert rec.evals["loss"][-1] > 1e4 * max(rec.evals["loss"][0], 1.0)
    assert s["updates"] < 2_000_000


def test_interrupt_stops_workers_and_keeps_the_partial_record():
    spec = make_spec("lock", 2, updates=None, seconds=30.0)
    timer = threading.Timer(1.0, _thread.interrupt_main)
    timer.start()
    try:
        rec = run_real(spec, progress=False)
    finally:
        timer.cancel()
    s = rec.summary
    assert s["interrupted"] is True and s["stop_reason"] == "interrupted"
    assert s["seconds"] < 10
    assert np.array_equal(rec.updates["k"], np.arange(s["updates"]))
    assert s["updates"] > 0


def test_oversubscribed_workers_all_take_turns_on_the_cores():
    rec = run_real(make_spec("lock", 8, updates=None, seconds=1.0), progress=False)
    per_worker = np.bincount(rec.updates["worker"], minlength=8)
    assert rec.summary["workers_applied"] == int(np.count_nonzero(per_worker)) == 8


# --- the online step size -------------------------------------------------------------------


def tail_window(tau: np.ndarray, worker: np.ndarray, workers: int, warmup: int,
                window: int, patience: float) -> np.ndarray:
    """The τ the online TAIL-τ estimate is built from (DESIGN §5), from the updates in the
    order they were applied: each worker's updates after its first ``warmup``, its next
    ``window``; the window closes once every worker has given its own, or after
    patience · (warmup + window) · m updates."""
    seen = np.zeros(workers, dtype=np.int64)
    taken = []
    full = 0
    limit = int(np.ceil(patience * (warmup + window) * workers))
    for i, (t, w) in enumerate(zip(tau, worker, strict=True)):
        n = seen[w]
        seen[w] += 1
        if warmup <= n < warmup + window:
            taken.append(t)
            full += n == warmup + window - 1
        if taken and (full >= workers or i + 1 >= limit):
            return np.asarray(taken)
    raise AssertionError("the window never closed")


def test_online_tail_table_is_tail_table_of_the_window_it_saw():
    spec = make_spec("lock", 2, updates=20_000, stepsize="tail", problem="mlp-synthetic")
    run = RealRun(spec, progress=False)
    rec = run.run()
    assert rec.summary["stepsize_tables"] == 1
    u = applied_rows(rec.updates)
    o = run.rule.options
    window = tail_window(u["tau"], u["worker"], 2, o["warmup"], o["window"], o["patience"])
    expected = tail_table(np.bincount(np.minimum(window, run.tau_max),
                                      minlength=run.tau_max + 1), run.tau_max, o["A"])
    active = run.shared.tables[int(run.shared.ctrl[C.C_TABLE])]
    assert np.array_equal(active, expected)
    # each update used s = 1 (before the table) or the table at its τ
    lr = spec.stepsize.lr
    with_table = lr * expected[np.minimum(u["tau"], run.tau_max)]
    assert np.all((u["eta"] == lr) | (u["eta"] == with_table))
    assert np.all(u["eta"][:10] == lr)
    assert np.any(u["eta"] != lr) or np.all(expected == 1.0)


def test_a_deadline_beyond_the_clock_means_none_and_a_tiny_one_ends_the_run():
    """``--seconds 1e10`` once overflowed the deadline in nanoseconds (recorded as diverged);
    a tiny budget once made the monitor count evaluation times up one by one."""
    far = RealRun(make_spec("lock", 2, updates=300, seconds=1e10), progress=False).run()
    assert far.summary["stop_reason"] == "updates" and far.summary["updates"] == 300
    assert not far.summary["diverged"]
    short = RealRun(make_spec("lock", 2, updates=None, seconds=1e-9), progress=False).run()
    assert short.summary["stop_reason"] == "seconds"


def test_next_evaluation_skips_missed_ones_in_one_step():
    from stalesgd.real.engine import _next_multiple

    assert _next_multiple(1.0, 0.5, 0.2) == 1.0  # not due yet
    assert _next_multiple(1.0, 0.5, 1.0) == 1.5
    assert _next_multiple(1.0, 0.5, 2.7) == 3.0
    assert _next_multiple(2e-11, 2e-11, 30.0) > 30.0  # 1.5e12 steps: one computation
    assert _next_multiple(math.inf, None, 5.0) == math.inf
    assert _next_multiple(100, 100, 250) == 300


def test_workers_leave_the_start_line_spinning_when_each_has_a_core():
    """With no more workers than cores all wait the last stretch spinning (they leave within
    a spin of each other, not a nap apart); with more they keep napping."""
    from stalesgd.real.control import C_SPINNING

    from stalesgd.machine import usable_cores

    cores = usable_cores() or 1
    few = RealRun(make_spec("lock", min(2, cores), updates=200, quiet=True), progress=False)
    few.run()
    assert int(few.shared.ctrl[C_SPINNING]) == min(2, cores)
    many = RealRun(make_spec("lock", cores + 1, updates=200, quiet=True), progress=False)
    many.run()
    assert int(many.shared.ctrl[C_SPINNING]) == 0
