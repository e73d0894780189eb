"""The real engine: run one resolved experiment point on this machine's CPU.

``run_real(spec)`` builds the problem, starts one thread per worker, each running one long
nopython loop of :mod:`stalesgd.real.workers` (the function the algorithm registry names),
and watches them from the calling thread, the monitor.  The monitor drains the update
record the workers write into a ring (:mod:`stalesgd.real.record`) while they run, in
order, into the run's :class:`~stalesgd.records.UpdateLog` and the online step-size
estimator; evaluates the loss on consistent snapshots at the configured cadence; refreshes
adaptive step-size tables; enforces the stop rules (updates, time budget, target loss,
divergence); shows a progress bar; and turns Ctrl-C into a clean stop that keeps every row.
Memory does not grow with the run's length: the ring is a fixed size and the update log
writes its chunks to the results folder as they fill.

The threads are all started first and released together, so that with more workers than
cores none gets a head start; the operating system's time slices then share the cores
among them (``workers_applied`` in the record counts the workers that applied an update).

Elastic parallelism: the run's controller (:mod:`stalesgd.elastic`) runs in the monitor,
in wall time.  It starts from the evaluation at t = 0, is asked again whenever its phase
ends (the monitor then polls every :data:`ELASTIC_POLL_SECONDS`), sees the loss of a
snapshot (racy for an inconsistent algorithm), and sets ``ctrl[C_ACTIVE]``: workers
0..m−1 run, the others park.  The record gets the m(t) trace (``control`` table, with
``t_set``, the time the new m was published) and CPU-seconds.
"""

from __future__ import annotations

import math
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from stalesgd.algorithms import Algorithm, UnknownAlgorithmError, get_algorithm
from stalesgd.divergence import diverged
from stalesgd.elastic import Controller, make_controller, published_summary
from stalesgd.experiment import ExperimentError, RunSpec
from stalesgd.jitcache import specialise
from stalesgd.machine import peak_rss_bytes, usable_cores
from stalesgd.memory import line_copy, line_width, line_zeros
from stalesgd.problems.registry import Problem, make_problem
from stalesgd.progress import RunProgress
from stalesgd.records import EvalLog, RunRecord, UpdateLog, engine_summary
from stalesgd.seeds import worker_seeds
from stalesgd.slowdown import slowdown_factors
from stalesgd.stepsize import default_tau_max, make_rule

from .atomics import atomic_load, atomic_store
from .clock import new_timespec, python_now
from .control import (
    ALL_ACTIVE,
    C_ACTIVE,
    C_CLAIM_WAITS,
    C_DEADLINE_NS,
    C_DIVERGED,
    C_DRAINED,
    C_FAILED,
    C_FAILED_AT_STOP,
    C_HIGH_WATER,
    C_ORIGIN_NS,
    C_READY,
    C_RECORD_WAITS,
    C_SPIN_START,
    C_SPINNING,
    C_START,
    C_STOP,
    C_SUCCESS_TRIES,
    C_TABLE,
    C_TIMED_OUT,
    C_VERSION,
    C_WORKER_BYTES_HIGH,
    NO_DEADLINE,
    new_control,
)
from .load import cpu_counters, machine_load
from .placement import core_round_trip_ns
from .pool import pool_size
from .record import DrainBuffer, close_record, new_ring, release_rows, ring_rows
from .sampling import new_sampler
from .schedule import script_error
from .snapshot import snapshot_function
from .sparse_workers import S_COLLIDED, S_WRITTEN, STATS_WIDTH, loop_for_kernels
from .stream import RecordStream
from .threads import compile_for

__all__ = ["RING_ROWS", "RealRun", "SparseBuffers", "final_params", "max_updates",
           "run_real", "validate_real"]

#: Rows of a run's update ring (64 bytes each, 32 MB): the record's memory whatever the
#: run's length.  It holds about a second of the fastest runs' rows, so that the workers
#: seldom wait while the update log writes a chunk file (about a second per 2^20 rows).
RING_ROWS = 1 << 19
#: Rows the monitor copies out of a ring per call (its reused output columns).
DRAIN_ROWS = 1 << 16
#: How often the monitor wakes up to check the stop rules.
POLL_SECONDS = 0.01
#: How often it drains the record (sooner when a quarter of the ring waits)
DRAIN_SECONDS = 0.05
#: The monitor's poll interval while an elastic controller is active (phases end on time).
ELASTIC_POLL_SECONDS = 0.001
#: Update indices are stored exactly in float64 record rows: up to 2^53.
MAX_INDEX = 1 << 53


def max_updates(alg: Algorithm, workers: int) -> int:
    """The largest update budget a run of ``alg`` on ``workers`` workers can count: the
    record's exact indices, and for a pooled algorithm the version tag (version · pool
    size + vector must fit in an int64)."""
    limit = MAX_INDEX
    if alg.pooled:
        limit = min(limit, (2**63 - 1) // pool_size(workers) - 1)
    return limit


def validate_real(spec: RunSpec) -> None:
    """Raise :class:`ExperimentError` for a run the real engine cannot run as given."""
    try:
        alg = get_algorithm(spec.algorithm.name)
    except UnknownAlgorithmError as exc:
        raise ExperimentError("algorithm.name", spec.algorithm.name,
                              str(exc).rpartition("allowed: ")[2]) from None
    if "real" not in alg.implementations:
        raise ExperimentError("algorithm.name", alg.name, "an algorithm with a real "
                              "implementation", problem="does not run in the real engine")
    if alg.fixed_workers is not None and spec.workers != alg.fixed_workers:
        raise ExperimentError("workers", spec.workers, f"{alg.fixed_workers} for algorithm "
                              f"{alg.name!r}")
    limit = max_updates(alg, spec.workers)
    if spec.stop.updates is not None and spec.stop.updates > limit:
        raise ExperimentError("stop.updates", spec.stop.updates, f"at most {limit} for "
                              f"{alg.name!r} with {spec.workers} workers (the record's exact "
                              "update indices)")


@dataclass
class SparseBuffers:
    """The sparse workers' gradient rows, statistics and coordinate stamps (see
    :mod:`stalesgd.real.sparse_workers`), preallocated for the whole run."""

    gidx: np.ndarray
    gval: np.ndarray
    stats: np.ndarray
    writers: np.ndarray

    @staticmethod
    def allocate(workers: int, capacity: int, n_params: int, dtype: np.dtype) -> SparseBuffers:
        """Rows of ``capacity`` coordinates per worker, each row on cache lines of its own
        (``gidx`` and ``gval`` rows of one length, whatever a kernel checks)."""
        width = max(line_width(capacity, np.int64), line_width(capacity, dtype))
        return SparseBuffers(
            gidx=line_zeros((workers, width), np.int64),
            gval=line_zeros((workers, width), dtype),
            stats=line_zeros((workers, line_width(STATS_WIDTH, np.int64)), np.int64),
            writers=np.zeros(n_params, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return int(self.gidx.nbytes + self.gval.nbytes + self.stats.nbytes
                   + self.writers.nbytes)

    def summary(self, applied: int) -> dict[str, Any]:
        """The run record's sparse fields: coordinates written per update, collision rate."""
        written = int(self.stats[:, S_WRITTEN].sum())
        collided = int(self.stats[:, S_COLLIDED].sum())
        return {"sparse": True,
                "coords_per_update": written / applied if applied else math.nan,
                "collision_rate": collided / written if written else math.nan}


@dataclass
class SharedState:
    """The arrays a run's workers and monitor share (see :data:`~.workers.WORKER_ARGS`;
    sparse problems: :data:`~.sparse_workers.SPARSE_WORKER_ARGS`)."""

    pool: np.ndarray
    refs: np.ndarray
    grads: np.ndarray
    ctrl: np.ndarray
    tables: np.ndarray
    ring: np.ndarray
    drops: np.ndarray
    sparse: SparseBuffers | None = None

    @property
    def theta(self) -> np.ndarray:
        """θ of a run with one shared vector (a pooled run's first pool vector)."""
        return self.pool[0]

    @staticmethod
    def allocate(alg: Algorithm, theta: np.ndarray, table: np.ndarray, workers: int,
                 owned: bool, ring_rows: int, sparse_capacity: int = 0) -> SharedState:
        """State for ``workers`` workers of ``alg`` starting from ``theta``: a pool of
        vectors if it is pooled (else θ alone), one gradient row per worker (empty rows
        when the workers own their buffers, or with ``sparse_capacity`` > 0 sparse rows of
        that many coordinates instead), the step-size tables, and the record rings
        (a ring of dropped gradients if it can drop any)."""
        size = pool_size(workers) if alg.pooled else 1
        pool = line_zeros((size, theta.shape[0]), theta.dtype)
        pool[0] = theta
        refs = line_zeros(size, np.int64)
        refs[0] = 1  # the publish reference of the initial vector (pooled runs)
        # a gradient row per worker, on cache lines of its own
        width = 0 if owned or sparse_capacity else line_width(theta.shape[0], theta.dtype)
        tables = np.empty((2, table.shape[0]), dtype=np.float64)
        tables[:] = table
        drops = "persistence" in alg.options
        return SharedState(pool=pool, refs=refs,
                           grads=line_zeros((workers, width), theta.dtype),
                           ctrl=new_control(pooled=alg.pooled), tables=tables,
                           ring=new_ring(ring_rows), drops=new_ring(ring_rows if drops else 1),
                           sparse=SparseBuffers.allocate(workers, sparse_capacity,
                                                         theta.shape[0], theta.dtype)
                           if sparse_capacity else None)


class RealRun:
    """One run of the real engine; ``run()`` returns its :class:`RunRecord`."""

    def __init__(self, spec: RunSpec, progress: bool = True, problem: Problem | None = None,
                 theta0: np.ndarray | None = None, updates: UpdateLog | None = None,
                 schedule: np.ndarray | None = None) -> None:
        """``problem`` and ``theta0`` replace the spec's problem and initial parameters (for
        tests and custom models); ``updates`` is the log the update rows go to (default:
        one in memory); ``schedule`` forces an interleaving of the workers (a script of
        :func:`stalesgd.real.schedule.make_script`, for tests)."""
        validate_real(spec)
        self.algorithm = alg = get_algorithm(spec.algorithm.name)
        self.snapshot_function = snapshot_function(alg)
        self.log = updates if updates is not None else UpdateLog(spec.record.rows,
                                                                 run_id=spec.run_id)
        self.spec = spec
        self.progress = progress
        p = spec.problem
        self.problem: Problem = problem if problem is not None else make_problem(
            p.name, dtype=p.dtype, **p.options)
        # sparse problems: updates write only the coordinates their gradient touches (those
        # loops take their two kernels as arguments); a dense problem's loop is bound to the
        # model's gradient kernel (cached on disk)
        self.sparse = self.problem.sparse
        model = self.problem.model
        self.worker_function = (
            loop_for_kernels(alg.implementation("real", sparse=True),
                             (model.sparse_grad_kernel, model.support_copy_kernel))
            if self.sparse else specialise(alg.implementation("real"), model.grad_kernel))
        self.sparse_capacity = (self.problem.model.sparse_capacity(spec.problem.batch)
                                if self.sparse else 0)
        self.m = spec.workers
        self.round_trip_ns = (math.nan, math.nan)  # measured by run() (m > 1)
        self.seeds = worker_seeds(spec.seed, self.m)
        self.rule = make_rule(spec.stepsize.rule, workers=self.algorithm.update_streams(self.m),
                              lr=spec.stepsize.lr,
                              **spec.stepsize.options)
        self.tau_max = default_tau_max(self.m)
        self.estimator = self.rule.estimator(self.tau_max)
        theta = self.problem.init_params(spec.seed) if theta0 is None else theta0.copy()
        self.n_max = int(spec.stop.updates) if spec.stop.updates else max_updates(alg, self.m)
        c = spec.controller
        self.controller: Controller = make_controller(c.name, self.m, **c.options)
        self.elastic = not (c.name == "static" and self.controller.level == self.m)
        self.schedule = None if schedule is None else np.asarray(schedule, dtype=np.int64)
        self.shared = SharedState.allocate(alg, theta, self.rule.table(self.tau_max), self.m,
                                           owned=self.elastic and not self.sparse,
                                           sparse_capacity=self.sparse_capacity,
                                           ring_rows=min(RING_ROWS, self.n_max))
        self.stream: RecordStream | None = None  # started by run()
        self.snapshot = np.empty_like(theta)
        self.active = self.m
        self.t_set: list[float] = []  # when each controller decision was published
        self.worker_cpu = np.zeros(self.m, dtype=np.float64)
        self.worker_left = np.full(self.m, -math.inf)  # monotonic time each left its loop
        self.evals = EvalLog()
        self.first_loss: float | None = None
        self.cpu_seconds = math.nan
        self.cpu_start = math.nan
        self.load_start = self.load_end = None  # the machine's CPU counters (real/load.py)
        self.stop_reason = ""
        self.interrupted = False
        self.worker_error: BaseException | None = None

    # ----- workers -------------------------------------------------------------------------

    def _worker_calls(self, shared: SharedState, n_max: int, count: int | None = None,
                      script: np.ndarray | None = None, warm_up: bool = False
                      ) -> list[tuple[Any, tuple]]:
        """(function, args) for each of ``count`` workers (default: all); ``warm_up``: for
        the compile run (full speed: a slowed-down worker would spin there)."""
        count = self.m if count is None else count
        prob, spec, alg = self.problem, self.spec, self.algorithm
        d = prob.dataset
        n_params = prob.model.n_params
        batch = spec.problem.batch
        persistence = spec.algorithm.persistence
        persistence = -1 if math.isinf(persistence) else int(persistence)
        # a private copy of θ for algorithms that hold one besides their gradient; workers
        # that own their buffers (elastic dense runs) allocate it themselves
        owns = self.elastic and not self.sparse
        copy_len = n_params if alg.buffers_per_worker > 1 and not owns else 0
        slow = slowdown_factors(None if warm_up else spec.slowdown, self.m)

        def sampler() -> np.ndarray:  # each worker's own, on cache lines of its own
            return new_sampler(batch, d.n_train, spec.problem.sampling, line_zeros)

        calls = []
        for w in range(count):
            if self.sparse:
                sp = shared.sparse
                args = (prob.model.sparse_grad_kernel, prob.model.support_copy_kernel, w,
                        self.seeds[w], slow[w], shared.pool, shared.refs,
                        line_zeros(copy_len, prob.model.dtype), sp.gidx, sp.gval, sp.stats,
                        sp.writers, d.inputs("train"), d.y_train, sampler(),
                        line_copy(prob.workspace(batch)),
                        prob.model.dims, shared.ctrl, shared.tables, float(spec.stepsize.lr),
                        n_max, persistence, new_timespec(), shared.ring, shared.drops, script)
                calls.append((self.worker_function, args))
                continue
            args = (w, self.seeds[w], slow[w], shared.pool, shared.refs,
                    line_zeros(copy_len, prob.model.dtype), shared.grads,
                    d.inputs("train"), d.y_train, sampler(),
                    line_copy(prob.workspace(batch)), prob.model.dims, shared.ctrl, shared.tables,
                    float(spec.stepsize.lr), n_max, persistence, new_timespec(),
                    shared.ring, shared.drops, script)
            calls.append((self.worker_function, args))
        return calls

    def _param_bytes(self) -> int | None:
        """Peak bytes of parameter-sized buffers (the registry's formula with the measured
        pool high-water mark).  Elastic runs: instead of a buffer set per worker, the most
        bytes the workers held at once (parked workers free theirs)."""
        sh = self.shared
        nbytes = sh.theta.nbytes
        high = int(sh.ctrl[C_HIGH_WATER]) if self.algorithm.pooled else None
        if self.sparse:  # θ (or the pool), lock's copies, the snapshot, the sparse buffers
            copies = self.m if self.algorithm.buffers_per_worker > 1 else 0
            return nbytes * ((high if high is not None else 1) + copies + 1) + sh.sparse.nbytes
        if self.elastic:
            held = int(sh.ctrl[C_WORKER_BYTES_HIGH])
            return nbytes * (high if high is not None else 1) + held + self.snapshot.nbytes
        return self.algorithm.param_bytes(nbytes, self.m, pool_high_water=high)

    def _compile(self) -> None:
        """Compile every kernel for this run's exact types before any thread starts: the
        worker function runs once against throwaway state with a zero budget."""
        dummy = SharedState.allocate(self.algorithm, self.shared.theta.copy(),
                                     self.shared.tables[0], 1,
                                     owned=self.elastic and not self.sparse,
                                     sparse_capacity=self.sparse_capacity,
                                     ring_rows=1)
        dummy.ctrl[C_START] = 1  # past the start line at once
        script = None if self.schedule is None else self.schedule[:0]
        for fn, args in self._worker_calls(dummy, 0, count=1, script=script, warm_up=True):
            compile_for(fn, args)
            fn(*args)
        self._take_snapshot(dummy)
        # what the monitor calls from Python (a first call would compile mid-run)
        atomic_store(dummy.ctrl, C_ACTIVE, atomic_load(dummy.ctrl, C_ACTIVE))
        DrainBuffer(1, dropped=False).drain(dummy.ring, 0, 0, 0)
        release_rows(dummy.ctrl, C_DRAINED, 0)
        close_record(dummy.ctrl)
        self.problem.evaluate(self.shared.theta, self.spec.eval.split, 8)
        if self.estimator is not None:  # its njit state update, on a throwaway estimator
            one = np.zeros(1, dtype=np.int64)
            self.rule.estimator(self.tau_max).update(one, one)

    # ----- monitor -------------------------------------------------------------------------

    def _take_snapshot(self, shared: SharedState | None = None) -> int:
        """Copy θ into the monitor's snapshot; returns its version (Hogwild!: the updates
        claimed, of which none past the budget is ever applied)."""
        sh = self.shared if shared is None else shared
        return min(int(self.snapshot_function(sh.pool, sh.refs, self.snapshot, sh.ctrl)),
                   self.n_max)

    def _evaluate(self, t_origin: float) -> float:
        k = self._take_snapshot()
        t = python_now() - t_origin
        ev = self.spec.eval
        with np.errstate(all="ignore"):
            loss, acc = self.problem.evaluate(self.snapshot, ev.split, ev.max_rows)
        self.evals.add(t, k, loss, acc, self.active)
        if diverged(loss, self.first_loss):
            atomic_store(self.shared.ctrl, C_DIVERGED, 1)
            self._request_stop("diverged")
        if self.first_loss is None:
            self.first_loss = float(loss)
        return loss

    def _control(self, t_origin: float, start: bool = False) -> None:
        """Ask the controller for m (at the start, or when its phase ended) and publish it."""
        ctl = self.controller
        if ctl.needs_loss:
            k = self._take_snapshot()
            t = python_now() - t_origin
            ev = self.spec.eval
            with np.errstate(all="ignore"):
                loss = float(self.problem.evaluate(self.snapshot, ev.split, ev.max_rows)[0])
        else:
            k = int(atomic_load(self.shared.ctrl, C_VERSION))
            t, loss = python_now() - t_origin, None
        m = ctl.start(t, k, loss) if start else ctl.observe(t, k, loss)
        if m != self.active or start:
            self.active = m
            atomic_store(self.shared.ctrl, C_ACTIVE, m if self.elastic else ALL_ACTIVE)
        self.t_set.append(python_now() - t_origin)

    def _feed_estimator(self, tau: np.ndarray, worker: np.ndarray) -> None:
        """Hand the estimator the τ of updates just drained (in update order) and publish
        its new table, if any, by switching the double-buffered table."""
        table = self.estimator.update(tau, worker)
        if table is None:
            return
        sh = self.shared
        spare = 1 - int(atomic_load(sh.ctrl, C_TABLE))
        sh.tables[spare, :] = table
        atomic_store(sh.ctrl, C_TABLE, spare)

    def _monitor(self, threads: list[threading.Thread], t_origin: float) -> None:
        spec, sh = self.spec, self.shared
        stop, ev = spec.stop, spec.eval
        target = stop.target_loss
        bar = RunProgress(self.progress, stop.updates, stop.seconds)
        next_eval_t = ev.every_seconds or math.inf
        next_eval_k = ev.every_updates or math.inf
        ctl = self.controller
        # Evaluations due every N updates are taken at the first poll after update N, so poll
        # at the fine interval then (≈1000 wake-ups/s, a few % of one core).
        poll = ELASTIC_POLL_SECONDS if self.elastic or ev.every_updates else POLL_SECONDS
        backlog = ring_rows(sh.ring) // 4  # rows waiting that make a drain due at once
        last_drain = -math.inf
        stream = self.stream
        try:
            while any(t.is_alive() for t in threads):
                time.sleep(poll)
                now = python_now() - t_origin
                k = int(atomic_load(sh.ctrl, C_VERSION))
                if now - last_drain >= DRAIN_SECONDS or k - stream.drained >= backlog:
                    stream.drain()
                    last_drain = now
                bar.update(k, now)
                if atomic_load(sh.ctrl, C_DIVERGED):
                    self._request_stop("diverged")
                if atomic_load(sh.ctrl, C_TIMED_OUT):
                    self._request_stop("seconds")
                if self.elastic and ctl.due(now, k) and atomic_load(sh.ctrl, C_STOP) == 0:
                    self._control(t_origin)
                if now >= next_eval_t or k >= next_eval_k:
                    loss = self._evaluate(t_origin)
                    next_eval_t = _next_multiple(next_eval_t, ev.every_seconds, now)
                    next_eval_k = _next_multiple(next_eval_k, ev.every_updates, k)
                    bar.loss(loss)
                    if target is not None and stop.at_target and loss <= target:
                        self._request_stop("target")
                if stop.seconds is not None and now >= stop.seconds:
                    self._request_stop("seconds")
        finally:
            bar.close()

    def _join_draining(self, threads: list[threading.Thread]) -> None:
        """Wait for the workers to end, draining the record meanwhile (a worker waiting for
        room in the ring ends only once its row has been taken)."""
        for t in threads:
            while t.is_alive():
                self.stream.drain()
                t.join(POLL_SECONDS)

    def _interrupt(self, signum: int, frame: Any) -> None:
        """Ctrl-C while the workers run: stop them and keep the record (a flag the monitor
        sees, not an exception that could cut the record's bookkeeping short)."""
        self.interrupted = True
        self._request_stop("interrupted")

    def _request_stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        atomic_store(self.shared.ctrl, C_STOP, 1)

    # ----- the run -------------------------------------------------------------------------

    def run(self) -> RunRecord:
        """Run to a stop rule and return the record (partial if interrupted)."""
        with threadpool_limits(limits=1):
            self._compile()
            rt_start = core_round_trip_ns() if self.m > 1 else math.nan
            sh = self.shared
            calls = self._worker_calls(sh, self.n_max, script=self.schedule)
            threads = [threading.Thread(target=self._guarded, args=(fn, args, i), daemon=True,
                                        name=f"stalesgd-worker-{i}")
                       for i, (fn, args) in enumerate(calls)]
            self.stream = RecordStream(self.log, sh.ring, sh.drops, sh.ctrl, self.n_max, self.m,
                                       min(DRAIN_ROWS, self.n_max),
                                       on_applied=None if self.estimator is None
                                       else self._feed_estimator)
            try:
                with _ctrl_c_calls(self._interrupt):
                    t_origin = self._start(threads)
                    self._monitor(threads, t_origin)
                    self._join_draining(threads)
                    # the run lasted until its last worker left its loop (not until the
                    # monitor, waking every POLL_SECONDS, saw that it had)
                    left = float(self.worker_left.max())
                    t_end = max((left if math.isfinite(left) else python_now()) - t_origin, 0.0)
                    self.cpu_seconds = _process_cpu() - self.cpu_start
                    self.load_end = cpu_counters()
                    self.stream.close()
            except BaseException:
                close_record(sh.ctrl)  # no one drains any more: let the workers end
                self._request_stop("error")
                atomic_store(sh.ctrl, C_START, 1)
                raise
            if self.worker_error is not None:
                raise self.worker_error
            problem = None if self.schedule is None else script_error(self.schedule, sh.ctrl)
            if problem is not None:
                raise ValueError(f"schedule: {problem}")
            try:  # the θ the run reached, also when interrupted (a second Ctrl-C skips it)
                self._evaluate(t_origin)
            except KeyboardInterrupt:
                if not self.interrupted:
                    raise
                self.interrupted = True
            rt_end = core_round_trip_ns() if self.m > 1 else math.nan
        # the CPUs' placement on the host, at both ends of the run (see real/placement.py)
        self.round_trip_ns = (rt_start, rt_end)
        return self._record(t_end)

    def _start(self, threads: list[threading.Thread]) -> float:
        """Start every worker thread, wait until all stand at the start line, set the time
        origin, evaluate at t = 0, let the controller choose m, and release them together.
        Returns the origin (seconds on the monotonic clock)."""
        ctrl = self.shared.ctrl
        for t in threads:
            if self.interrupted:
                break  # Ctrl-C while the threads start: those started stop at the line
            t.start()
        while int(atomic_load(ctrl, C_READY)) < len(threads) and not self.interrupted:
            if self.worker_error is not None or not all(t.is_alive() for t in threads):
                break  # a worker failed before the start line: the run ends at once
            time.sleep(0.001)
        if len(threads) <= (usable_cores() or 1):  # spin the last stretch: leave together
            atomic_store(ctrl, C_SPIN_START, 1)
            while (int(atomic_load(ctrl, C_SPINNING)) < int(atomic_load(ctrl, C_READY))
                   and not self.interrupted and self.worker_error is None
                   and all(t.is_alive() for t in threads)):
                time.sleep(0.0005)
        origin_ns = time.monotonic_ns()
        t_origin = origin_ns * 1e-9  # the float the workers compute from the same integer
        atomic_store(ctrl, C_ORIGIN_NS, origin_ns)
        if self.spec.stop.seconds is not None:  # (beyond NO_DEADLINE: none, not an overflow)
            deadline_ns = min(origin_ns + self.spec.stop.seconds * 1e9, float(NO_DEADLINE))
            atomic_store(ctrl, C_DEADLINE_NS, int(deadline_ns))
        self._evaluate(t_origin)
        self._control(t_origin, start=True)
        self.cpu_start = _process_cpu()
        self.load_start = cpu_counters()
        atomic_store(ctrl, C_START, 1)
        return t_origin

    def _guarded(self, fn: Any, args: tuple, index: int) -> None:
        cpu0 = time.thread_time()
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            self.worker_error = exc
            atomic_store(self.shared.ctrl, C_STOP, 1)
        finally:
            self.worker_cpu[index] = time.thread_time() - cpu0
            self.worker_left[index] = python_now()

    def _final_stop_reason(self) -> str:
        if self.stop_reason:
            return self.stop_reason
        if self.shared.ctrl[C_DIVERGED]:
            return "diverged"
        if self.shared.ctrl[C_TIMED_OUT]:
            return "seconds"
        return "updates" if self.stream.drained >= self.n_max else "stopped"

    def _record(self, seconds: float) -> RunRecord:
        spec, sh, alg = self.spec, self.shared, self.algorithm
        self.stop_reason = self._final_stop_reason()
        stats = self.log.close()
        n = stats.applied
        evals = self.evals.arrays()
        # an evaluation taken after the workers left saw the θ they left at `seconds` (its
        # time would otherwise put a target reached by the run after the run's end)
        np.minimum(evals["t"], seconds, out=evals["t"])
        summary = engine_summary(
            "real", spec, evals, stats, seconds, bool(sh.ctrl[C_DIVERGED]), self.interrupted,
            peak_param_bytes=self._param_bytes(),
            peak_rss_bytes=peak_rss_bytes(),
            stop_reason=self.stop_reason,
            worker_seeds=",".join(str(s) for s in self.seeds),
            stepsize_tables=self.estimator.n_tables if self.estimator is not None else 0,
            core_round_trip_ns_start=self.round_trip_ns[0],
            core_round_trip_ns_end=self.round_trip_ns[1],
            **self._load_summary(),
            workers_applied=int(np.count_nonzero(self.stream.applied_by_worker)),
            record_waits=int(sh.ctrl[C_RECORD_WAITS]),
            **self._elastic_summary(seconds),
        )
        if "persistence" in alg.options:
            summary["persistence"] = float(spec.algorithm.persistence)
        if sh.sparse is not None:
            summary.update(sh.sparse.summary(n))
        if alg.pooled:
            high = int(sh.ctrl[C_HIGH_WATER])
            summary.update(
                failed_publishes=int(sh.ctrl[C_FAILED]),
                failed_publishes_at_stop=int(sh.ctrl[C_FAILED_AT_STOP]),
                tries_per_update=(int(sh.ctrl[C_SUCCESS_TRIES]) / n) if n else math.nan,
                pool_high_water=high,
                pool_high_water_bytes=high * sh.theta.nbytes,
                pool_claim_waits=int(sh.ctrl[C_CLAIM_WAITS]),
            )
        control = self.controller.trace_columns()
        control["t_set"] = np.asarray(self.t_set[: len(control["t"])], dtype=np.float64)
        return RunRecord(summary=summary, updates=self.log, evals=evals, control=control)

    def _load_summary(self) -> dict[str, float]:
        """The shares of the machine's CPU time during the run that other processes and the
        hypervisor took (:mod:`stalesgd.real.load`)."""
        load = machine_load(self.load_start, self.load_end)
        return {"other_cpu_share": load.other, "steal_share": load.steal}

    def _elastic_summary(self, seconds: float) -> dict[str, Any]:
        """Controller, CPU-seconds (the process during the run, monitor included; the worker
        threads' own, total and per worker) and the time-averaged number of active workers."""
        return {
            **published_summary(self.controller, self.t_set, seconds, self.m),
            "cpu_seconds": float(self.cpu_seconds),
            "worker_cpu_seconds": float(self.worker_cpu.sum()),
            "worker_cpu": ",".join(f"{c:.4f}" for c in self.worker_cpu),
        }


@contextmanager
def _ctrl_c_calls(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Within the block, Ctrl-C (SIGINT) calls ``handler`` instead of raising
    KeyboardInterrupt (only the main thread can be interrupted, so elsewhere nothing
    changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _next_multiple(due: float, every: float | None, now: float) -> float:
    """The first of ``due, due + every, due + 2·every, …`` after ``now`` (``due`` itself
    when it is later): the next evaluation, skipping those a slow poll missed, in one step
    however short ``every`` is."""
    if not every or due > now:
        return due
    return due + (math.floor((now - due) / every) + 1) * every


def _process_cpu() -> float:
    """User + system CPU-seconds of this process so far (all threads)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def run_real(spec: RunSpec, progress: bool = True, updates: UpdateLog | None = None
             ) -> RunRecord:
    """Run ``spec`` on the real engine and return its run record (DESIGN §3); the update
    rows go to ``updates`` (default: a log in memory) while the run goes on."""
    return RealRun(spec, progress, updates=updates).run()


def final_params(run: RealRun) -> np.ndarray:
    """The parameters a finished run ended with (the published vector of a pooled run)."""
    out = np.empty_like(run.snapshot)
    sh = run.shared
    run.snapshot_function(sh.pool, sh.refs, out, sh.ctrl)
    return out
