"""The real engine: run one resolved experiment point on this machine's CPU.

``run_real(spec)`` builds the problem, starts one thread per worker, each
running one long nopython loop of :mod:`stalesgd.real.workers`, and watches
them from the calling thread: it evaluates the loss on consistent snapshots
at the configured cadence, refreshes adaptive step-size tables, enforces the
stop rules (updates, time budget, target loss), shows a progress bar, and
turns Ctrl-C, NaN or overflow into a clean stop.  The per-update logs the
workers filled become the run record of DESIGN §3.

Elastic parallelism (issue 8): the run's controller (:mod:`stalesgd.elastic`) runs in the
monitor, in wall time.  It starts from the evaluation at t = 0, is asked again whenever its
phase ends (the monitor then polls every :data:`ELASTIC_POLL_SECONDS`), sees the loss of a
consistent snapshot (racy for ``hogwild``, which has none), and sets ``ctrl[C_ACTIVE]``:
workers 0..m−1 run, the others park in short sleeps.  The record gets the m(t) trace
(``control`` table, with ``t_set``, the time the new m was published) and CPU-seconds.
"""

from __future__ import annotations

import math
import resource
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from stalesgd.algorithms import Algorithm, get_algorithm
from stalesgd.elastic import Controller, make_controller
from stalesgd.experiment import RunSpec
from stalesgd.machine import peak_rss_bytes
from stalesgd.problems.registry import Problem, make_problem
from stalesgd.progress import RunProgress
from stalesgd.records import RunRecord, UpdateLog, engine_summary
from stalesgd.seeds import worker_seeds
from stalesgd.stepsize import default_tau_max, make_rule

from . import workers as W
from .clock import new_timespec, python_now
from .placement import core_round_trip_ns
from .threads import compile_for

#: Rows preallocated for the per-update log when only a time budget is given;
#: a run that fills them stops (recorded as ``stop_reason = "log-full"``).
DEFAULT_LOG_CAPACITY = 2_000_000
#: How often the monitor wakes up to check stop rules and the progress bar.
POLL_SECONDS = 0.01
#: The monitor's poll interval while an elastic controller is active (phases end on time).
ELASTIC_POLL_SECONDS = 0.001


def leashed_pool_size(workers: int) -> int:
    """Buffers Leashed-SGD can ever hold at once: per worker one it reads or
    copies from and one it writes, plus the published one.  A worker claims
    only while it holds one buffer itself, so a free one always exists."""
    return 2 * workers + 1


@dataclass
class _Shared:
    """Arrays shared by all workers of one run."""

    theta: np.ndarray
    ctrl: np.ndarray
    tables: np.ndarray
    log_worker: np.ndarray
    log_tread: np.ndarray
    log_tapply: np.ndarray
    log_tau: np.ndarray
    log_eta: np.ndarray

    # Leashed-SGD only: the buffer pool, reference counts and its extra logs.
    pool: np.ndarray | None = None
    refs: np.ndarray | None = None
    log_attempts: np.ndarray | None = None
    drops: tuple[np.ndarray, ...] = ()

    @staticmethod
    def allocate(theta: np.ndarray, table: np.ndarray, capacity: int,
                 leashed_workers: int = 0) -> _Shared:
        tables = np.empty((2, table.shape[0]), dtype=np.float64)
        tables[0] = table
        tables[1] = table
        extra: dict[str, Any] = {}
        ctrl = W.new_control()
        if leashed_workers:
            size = leashed_pool_size(leashed_workers)
            pool = np.zeros((size, theta.shape[0]), dtype=theta.dtype)
            pool[0] = theta
            refs = np.zeros(size, dtype=np.int64)
            refs[0] = 1  # the publish reference of the initial vector
            ctrl = W.new_leashed_control(size)
            extra = dict(pool=pool, refs=refs,
                         log_attempts=np.ones(capacity, dtype=np.int32),
                         drops=(np.full(capacity, -1, dtype=np.int32),
                                np.zeros(capacity, dtype=np.float64),
                                np.zeros(capacity, dtype=np.float64),
                                np.zeros(capacity, dtype=np.int64),
                                np.zeros(capacity, dtype=np.int32)))
        return _Shared(
            **extra,
            theta=theta,
            ctrl=ctrl,
            tables=tables,
            log_worker=np.full(capacity, -1, dtype=np.int32),
            log_tread=np.zeros(capacity, dtype=np.float64),
            log_tapply=np.zeros(capacity, dtype=np.float64),
            log_tau=np.zeros(capacity, dtype=np.int64),
            log_eta=np.zeros(capacity, dtype=np.float64),
        )

    def logs(self) -> tuple[np.ndarray, ...]:
        return (self.log_worker, self.log_tread, self.log_tapply, self.log_tau, self.log_eta)


@dataclass
class _Evals:
    t: list[float] = field(default_factory=list)
    k: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    active: list[int] = field(default_factory=list)

    def add(self, t: float, k: int, loss: float, acc: float, active: int) -> None:
        self.t.append(t)
        self.k.append(k)
        self.loss.append(loss)
        self.accuracy.append(acc)
        self.active.append(active)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "t": np.asarray(self.t, dtype=np.float64),
            "k": np.asarray(self.k, dtype=np.int64),
            "loss": np.asarray(self.loss, dtype=np.float64),
            "accuracy": np.asarray(self.accuracy, dtype=np.float64),
            "active_workers": np.asarray(self.active, dtype=np.int32),
        }


def _check_spec(spec: RunSpec) -> Algorithm:
    """The spec's algorithm entry, if this engine runs it with the spec's workers."""
    alg = get_algorithm(spec.algorithm.name)
    if "real" not in alg.implementations:
        raise ValueError(f"algorithm {alg.name!r} does not run in the real engine")
    if alg.fixed_workers is not None and spec.workers != alg.fixed_workers:
        raise ValueError(f"algorithm {alg.name!r} runs exactly {alg.fixed_workers} worker(s), "
                         f"got workers={spec.workers}")
    return alg


class RealRun:
    """One run of the real engine; ``run()`` returns its :class:`RunRecord`."""

    def __init__(self, spec: RunSpec, progress: bool = True, problem: Problem | None = None,
                 theta0: np.ndarray | None = None, updates: UpdateLog | None = None) -> None:
        """``problem`` and ``theta0`` replace the spec's problem and initial
        parameters (for tests and custom models); ``updates`` is the log the update rows go
        to (default: one in memory)."""
        self.algorithm = _check_spec(spec)
        self.log = updates if updates is not None else UpdateLog(spec.record.rows,
                                                                 run_id=spec.run_id)
        self.spec = spec
        self.progress = progress
        p = spec.problem
        self.problem: Problem = problem if problem is not None else make_problem(
            p.name, dtype=p.dtype, **p.options)
        self.m = spec.workers
        self.round_trip_ns = (math.nan, math.nan)  # measured by run() (m > 1)
        self.leashed = spec.algorithm.name == "leashed"
        self.seeds = worker_seeds(spec.seed, self.m)
        self.rule = make_rule(spec.stepsize.rule, workers=self.m, lr=spec.stepsize.lr,
                              **spec.stepsize.options)
        self.tau_max = default_tau_max(self.m)
        self.estimator = self.rule.estimator(self.tau_max)
        self.fed = 0  # log rows already handed to the estimator
        theta = self.problem.init_params(spec.seed) if theta0 is None else theta0.copy()
        self.capacity = int(spec.stop.updates) if spec.stop.updates else DEFAULT_LOG_CAPACITY
        self.shared = _Shared.allocate(theta, self.rule.table(self.tau_max), self.capacity,
                                       self.m if self.leashed else 0)
        self.snapshot = np.empty_like(theta)
        c = spec.controller
        self.controller: Controller = make_controller(c.name, self.m, **c.options)
        self.elastic = not (c.name == "static" and self.controller.level == self.m)
        self.active = self.m
        self.t_set: list[float] = []  # when each controller decision was published
        self.worker_cpu = np.zeros(self.m, dtype=np.float64)
        self.evals = _Evals()
        self.stop_reason = ""
        self.interrupted = False
        self.worker_error: BaseException | None = None

    # ----- workers -------------------------------------------------------------------------

    def _worker_calls(self, shared: _Shared, n_max: int, t_origin: float,
                      count: int | None = None):
        """(function, args) for each of ``count`` workers (default: all), with private
        buffers preallocated."""
        count = self.m if count is None else count
        prob, spec = self.problem, self.spec
        d = prob.dataset
        dims = prob.model.dims
        n_params = prob.model.n_params
        batch = spec.problem.batch
        alg = spec.algorithm.name
        lr = float(spec.stepsize.lr)
        persistence = spec.algorithm.persistence
        persistence = -1 if math.isinf(persistence) else int(persistence)
        calls = []
        grads = np.zeros((count, n_params), dtype=prob.model.dtype)
        # elastic runs: workers own their private buffers (allocated while active, freed while
        # parked; passed empty here); static runs preallocate them
        owned = self.elastic and alg != "sync"
        dtype = prob.model.dtype

        def buffer() -> np.ndarray:
            return np.zeros(0 if owned else n_params, dtype=dtype)

        for w in range(count):
            batch_idx = np.zeros(batch, dtype=np.int64)
            ws = prob.workspace(batch)
            common = (d.inputs("train"), d.y_train, batch_idx)
            tail = (shared.ctrl, shared.tables, lr, n_max, t_origin, new_timespec())
            if alg == "leashed":
                args = (prob.model.grad_kernel, w, self.seeds[w], shared.pool, shared.refs,
                        *common, buffer(), ws, dims, *tail,
                        persistence, *shared.logs(), shared.log_attempts, *shared.drops)
                calls.append((W.leashed_worker, args))
                continue
            if alg == "sync":
                fn, private, grad = W.sync_worker, grads, grads[w]
            elif alg == "hogwild":
                fn, private, grad = W.hogwild_worker, shared.theta[:0], buffer()
            else:
                fn, private, grad = W.lock_worker, buffer(), buffer()
            args = (prob.model.grad_kernel, w, self.seeds[w], shared.theta, private, *common,
                    grad, ws, dims, *tail, *shared.logs())
            calls.append((fn, args))
        return calls

    def _param_bytes(self) -> int:
        """Peak bytes of parameter-sized buffers.

        lock/seq: θ plus each worker's private copy and gradient; hogwild: θ and
        a gradient per worker; sync: θ and the m gradients; leashed: the pool's
        high-water mark of buffers in use plus a gradient per worker.  The
        monitor's snapshot is counted for all.  Elastic runs: instead of a buffer set per
        worker, the most bytes the workers held at once (parked workers free theirs).
        """
        nbytes = self.shared.theta.nbytes
        high = int(self.shared.ctrl[W.C_HIGH_WATER]) if self.leashed else None
        if self.elastic and self.spec.algorithm.name != "sync":
            held = int(self.shared.ctrl[W.C_WORKER_BYTES_HIGH])
            pool = high if high is not None else 1
            return nbytes * pool + held + self.snapshot.nbytes
        return self.algorithm.param_bytes(nbytes, self.m, pool_high_water=high)

    def _compile(self) -> None:
        """Compile every kernel for this run's exact types before any thread starts:
        each worker function runs once against throwaway state with a zero budget."""
        dummy = _Shared.allocate(self.shared.theta.copy(), self.shared.tables[0], 1,
                                 1 if self.leashed else 0)
        for fn, args in self._worker_calls(dummy, 0, python_now(), count=1):
            compile_for(fn, args)
            fn(*args)
        self._take_snapshot(dummy)
        # the atomics the monitor calls from Python (a first call would compile mid-run)
        W.atomic_store(dummy.ctrl, W.C_ACTIVE, W.atomic_load(dummy.ctrl, W.C_ACTIVE))
        self.problem.evaluate(self.shared.theta, self.spec.eval.split, 8)
        if self.estimator is not None:  # its njit state update, on a throwaway estimator
            one = np.zeros(1, dtype=np.int64)
            self.rule.estimator(self.tau_max).update(one, one)

    # ----- monitor -------------------------------------------------------------------------

    def _take_snapshot(self, shared: _Shared | None = None) -> int:
        sh = self.shared if shared is None else shared
        if self.leashed:
            return W.snapshot_leashed(sh.pool, sh.refs, self.snapshot, sh.ctrl)
        if self.spec.algorithm.name == "hogwild":
            return W.snapshot_racy(sh.theta, self.snapshot, sh.ctrl)
        return W.snapshot_locked(sh.theta, self.snapshot, sh.ctrl)

    def _evaluate(self, t_origin: float) -> float:
        k = self._take_snapshot()
        t = python_now() - t_origin
        ev = self.spec.eval
        with np.errstate(all="ignore"):
            loss, acc = self.problem.evaluate(self.snapshot, ev.split, ev.max_rows)
        self.evals.add(t, k, loss, acc, self.active)
        if not math.isfinite(loss):
            W.atomic_store(self.shared.ctrl, W.C_DIVERGED, 1)
            W.atomic_store(self.shared.ctrl, W.C_STOP, 1)
            self.stop_reason = self.stop_reason or "diverged"
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
            k = int(W.atomic_load(self.shared.ctrl, W.C_VERSION))
            t, loss = python_now() - t_origin, None
        m = ctl.start(t, k, loss) if start else ctl.observe(t, k, loss)
        if m != self.active or start:
            self.active = m
            W.atomic_store(self.shared.ctrl, W.C_ACTIVE, m if self.elastic else W.ALL_ACTIVE)
        self.t_set.append(python_now() - t_origin)

    def _refresh_stepsize(self) -> None:
        """Hand the online estimator the staleness logged since the last call, in the
        order the updates were applied, and publish its new table, if any, by
        switching the double-buffered table (workers are never stopped)."""
        if self.estimator is None:
            return
        sh = self.shared
        k = min(int(W.atomic_load(sh.ctrl, W.C_VERSION)), self.capacity)
        rows = sh.log_worker[self.fed:k]
        incomplete = np.flatnonzero(rows < 0)
        end = self.fed + (int(incomplete[0]) if incomplete.size else rows.size)
        if end <= self.fed:
            return
        table = self.estimator.update(sh.log_tau[self.fed:end], sh.log_worker[self.fed:end])
        self.fed = end
        if table is None:
            return
        spare = 1 - int(W.atomic_load(sh.ctrl, W.C_TABLE))
        sh.tables[spare, :] = table
        W.atomic_store(sh.ctrl, W.C_TABLE, spare)

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
        try:
            while any(t.is_alive() for t in threads):
                time.sleep(poll)
                now = python_now() - t_origin
                k = int(W.atomic_load(sh.ctrl, W.C_VERSION))
                bar.update(k, now)
                if self.elastic and ctl.due(now, k) and W.atomic_load(sh.ctrl, W.C_STOP) == 0:
                    self._control(t_origin)
                self._refresh_stepsize()
                if now >= next_eval_t or k >= next_eval_k:
                    loss = self._evaluate(t_origin)
                    while next_eval_t <= now:
                        next_eval_t += ev.every_seconds
                    while next_eval_k <= k:
                        next_eval_k += ev.every_updates
                    bar.loss(loss)
                    if target is not None and stop.at_target and loss <= target:
                        self._request_stop("target")
                if stop.seconds is not None and now >= stop.seconds:
                    self._request_stop("seconds")
        except KeyboardInterrupt:
            self.interrupted = True
            self._request_stop("interrupted")
            for t in threads:
                t.join()
        finally:
            bar.close()

    def _request_stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        W.atomic_store(self.shared.ctrl, W.C_STOP, 1)

    # ----- the run -------------------------------------------------------------------------

    def run(self) -> RunRecord:
        """Run to a stop rule and return the record (partial if interrupted)."""
        with threadpool_limits(limits=1):
            self._compile()
            rt_start = core_round_trip_ns() if self.m > 1 else math.nan
            t_origin = python_now()
            calls = self._worker_calls(self.shared, self.capacity, t_origin)
            threads = [threading.Thread(target=self._guarded, args=(fn, args, i), daemon=True,
                                        name=f"stalesgd-worker-{i}")
                       for i, (fn, args) in enumerate(calls)]
            self._evaluate(t_origin)
            self._control(t_origin, start=True)
            cpu0 = _process_cpu()
            for t in threads:
                t.start()
            self._monitor(threads, t_origin)
            for t in threads:
                t.join()
            t_end = python_now() - t_origin
            self.cpu_seconds = _process_cpu() - cpu0
            if self.worker_error is not None:
                raise self.worker_error
            if not self.interrupted:
                self._evaluate(t_origin)
            rt_end = core_round_trip_ns() if self.m > 1 else math.nan
        # the CPUs' placement on the host, at both ends of the run (see real/placement.py)
        self.round_trip_ns = (rt_start, rt_end)
        return self._record(t_end)

    def _guarded(self, fn, args, index: int) -> None:
        cpu0 = time.thread_time()
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            self.worker_error = exc
            W.atomic_store(self.shared.ctrl, W.C_STOP, 1)
        finally:
            self.worker_cpu[index] = time.thread_time() - cpu0

    def _update_columns(self) -> dict[str, np.ndarray]:
        sh = self.shared
        n = min(int(sh.ctrl[W.C_VERSION]), self.capacity)
        done = sh.log_worker[:n] >= 0  # a row interrupted mid-write is left out
        rows = int(done.sum())
        cols = {
            "k": np.arange(n, dtype=np.int64)[done],
            "worker": sh.log_worker[:n][done].astype(np.int32),
            "t_read": sh.log_tread[:n][done],
            "t_apply": sh.log_tapply[:n][done],
            "tau": sh.log_tau[:n][done],
            "eta": sh.log_eta[:n][done],
            "attempts": (sh.log_attempts[:n][done] if self.leashed
                         else np.ones(rows, dtype=np.int32)),
            "dropped": np.zeros(rows, dtype=bool),
        }
        if self.leashed:
            d_worker, d_tread, d_tapply, d_tau, d_attempts = sh.drops
            nd = min(int(sh.ctrl[W.C_DROPPED]), d_worker.shape[0])
            ok = d_worker[:nd] >= 0
            drops = {
                "k": np.full(int(ok.sum()), -1, dtype=np.int64),
                "worker": d_worker[:nd][ok].astype(np.int32),
                "t_read": d_tread[:nd][ok],
                "t_apply": d_tapply[:nd][ok],
                "tau": d_tau[:nd][ok],
                "eta": np.zeros(int(ok.sum())),
                "attempts": d_attempts[:nd][ok],
                "dropped": np.ones(int(ok.sum()), dtype=bool),
            }
            cols = {c: np.concatenate([cols[c], drops[c]]) for c in cols}
        return cols

    def _record(self, seconds: float) -> RunRecord:
        spec, sh = self.spec, self.shared
        n = min(int(sh.ctrl[W.C_VERSION]), self.capacity)
        updates = self._update_columns()
        evals = self.evals.arrays()
        diverged = bool(sh.ctrl[W.C_DIVERGED])
        if not self.stop_reason:
            if n >= self.capacity:
                self.stop_reason = "updates" if spec.stop.updates else "log-full"
            else:
                self.stop_reason = "stopped"
        self.log.add(updates)
        stats = self.log.close()
        summary = engine_summary(
            "real", spec, evals, stats, seconds, diverged, self.interrupted,
            peak_param_bytes=self._param_bytes(),
            peak_rss_bytes=peak_rss_bytes(),
            stop_reason=self.stop_reason,
            worker_seeds=",".join(str(s) for s in self.seeds),
            stepsize_tables=self.estimator.n_tables if self.estimator is not None else 0,
            core_round_trip_ns_start=self.round_trip_ns[0],
            core_round_trip_ns_end=self.round_trip_ns[1],
            **self._elastic_summary(seconds),
        )
        if self.leashed:
            summary.update(
                persistence=float(spec.algorithm.persistence),
                failed_publishes=int(sh.ctrl[W.C_FAILED]),
                failed_publishes_at_stop=int(sh.ctrl[W.C_FAILED_AT_STOP]),
                tries_per_update=(int(sh.ctrl[W.C_SUCCESS_TRIES]) / n) if n else math.nan,
                pool_high_water=int(sh.ctrl[W.C_HIGH_WATER]),
                pool_high_water_bytes=int(sh.ctrl[W.C_HIGH_WATER]) * sh.theta.nbytes,
            )
        control = self.controller.trace_columns()
        control["t_set"] = np.asarray(self.t_set[: len(control["t"])], dtype=np.float64)
        return RunRecord(summary=summary, updates=self.log, evals=evals, control=control)

    def _elastic_summary(self, seconds: float) -> dict[str, Any]:
        """Controller, CPU-seconds (the process during the run, monitor included; the worker
        threads' own, total and per worker) and the time-averaged number of active workers."""
        from stalesgd.elastic import cpu_seconds_from_trace

        tr = self.controller.trace
        changes = [(min(ts, seconds), p.m) for ts, p in zip(self.t_set, tr, strict=False)]
        changes[0] = (0.0, changes[0][1])
        busy = cpu_seconds_from_trace(changes, seconds)
        return {
            "controller": self.controller.name,
            "cpu_seconds": float(getattr(self, "cpu_seconds", math.nan)),
            "worker_cpu_seconds": float(self.worker_cpu.sum()),
            "worker_cpu": ",".join(f"{c:.4f}" for c in self.worker_cpu),
            "mean_active": busy / seconds if seconds > 0 else float(self.m),
            "controller_changes": int(sum(1 for a, b in zip(tr, tr[1:], strict=False)
                                          if a.m != b.m)),
        }


def _process_cpu() -> float:
    """User + system CPU-seconds of this process so far (all threads)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime




def run_real(spec: RunSpec, progress: bool = True, updates: UpdateLog | None = None
             ) -> RunRecord:
    """Run ``spec`` on the real engine and return its run record (DESIGN §3); the update
    rows go to ``updates`` (default: a log in memory)."""
    return RealRun(spec, progress, updates=updates).run()


def final_params(run: RealRun) -> np.ndarray:
    """The parameters a finished run ended with (the published vector for leashed)."""
    out = np.empty_like(run.snapshot)
    sh = run.shared
    if run.leashed:
        W.snapshot_leashed(sh.pool, sh.refs, out, sh.ctrl)
    else:
        out[:] = sh.theta
    return out
