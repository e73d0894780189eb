"""The distributed engine ``ray``: asynchronous SGD as parameter-server training on Ray.

``run_ray(spec)`` joins (or starts) a Ray cluster, puts θ on server actors
(:mod:`~stalesgd.real.ps.server`: one for ``seq``/``lock``/``sync``/``leashed``, K shards
for ``hogwild``) and one worker actor per worker (:mod:`~stalesgd.real.ps.worker`, spread
over the nodes), shares the training data through Ray's object store, and watches the run
from the calling process, the driver: it takes the servers' update rows into the run's
:class:`~stalesgd.records.UpdateLog` as the run goes on, evaluates the loss on snapshots at
the configured cadence, enforces the stop rules (updates, time budget, target loss,
divergence), shows a progress bar, and turns Ctrl-C into a clean stop that keeps every row.
Its actors are killed at the end of the run, whatever ended it.

One clock: every process's monotonic clock, shifted by its offset from the driver's
(estimated by a ping exchange at start, recorded per worker), so that times in the record
are seconds since the run's start on the driver's clock.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from stalesgd.algorithms import UnknownAlgorithmError, get_algorithm
from stalesgd.divergence import diverged
from stalesgd.elastic import Controller, make_controller, published_summary
from stalesgd.experiment import ExperimentError, RunSpec, server_shards
from stalesgd.machine import peak_rss_bytes
from stalesgd.problems.registry import Problem, make_problem
from stalesgd.progress import RunProgress
from stalesgd.records import EvalLog, RunRecord, UpdateLog, engine_summary
from stalesgd.seeds import worker_seeds
from stalesgd.slowdown import slowdown_factors
from stalesgd.stepsize import default_tau_max, make_rule

from .cluster import check_address, clock_offset, connect, import_ray, ray_installed
from .server import ParameterServer, RoundServer, Shard
from .worker import Worker, WorkerSetup

__all__ = ["RayRun", "run_ray", "validate_ray"]

#: how often the driver checks the stop rules and takes the servers' rows
POLL_SECONDS = 0.02
#: how long the driver waits for the workers to see the stop before it kills them
STOP_GRACE_SECONDS = 10.0
#: largest update budget (the record's exact indices)
MAX_UPDATES = 1 << 53


def validate_ray(spec: RunSpec) -> None:
    """Raise :class:`ExperimentError` for a run the distributed engine cannot run as given
    (and :class:`EngineNotAvailable` when Ray is not installed)."""
    try:
        alg = get_algorithm(spec.algorithm.name)
    except UnknownAlgorithmError as exc:
        raise ExperimentError("algorithm.name", spec.algorithm.name,
                              str(exc).rpartition("allowed: ")[2]) from None
    if "ray" not in alg.implementations:
        raise ExperimentError("algorithm.name", alg.name, "an algorithm with a parameter-server "
                              "implementation", problem="does not run in the ray engine")
    if alg.fixed_workers is not None and spec.workers != alg.fixed_workers:
        raise ExperimentError("workers", spec.workers, f"{alg.fixed_workers} for algorithm "
                              f"{alg.name!r}")
    if spec.stop.updates is not None and spec.stop.updates > MAX_UPDATES:
        raise ExperimentError("stop.updates", spec.stop.updates, f"at most {MAX_UPDATES}")
    if not ray_installed():
        import_ray()  # raises EngineNotAvailable with the install hint
    address = spec.dist.address
    if address is not None and address != "auto":
        check_address(address)  # a cluster that does not answer: before anything runs



def worker_placements(ray: Any, m: int) -> list[Any]:
    """Where each of ``m`` worker actors goes: on a cluster of several nodes, worker w on
    node w mod (nodes), so that workers are spread over the machines every time (Ray's
    ``SPREAD`` is best effort and sometimes put every worker on one node, and a soft affinity
    let a busy node's workers go to the head: all four on one of three nodes in a loaded
    test run; the actors take no CPU, so any alive node can host them); on one node,
    ``SPREAD``."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
    if len(nodes) < 2:
        return ["SPREAD"] * m
    return [NodeAffinitySchedulingStrategy(node_id=nodes[w % len(nodes)], soft=False)
            for w in range(m)]

class RayRun:
    """One run of the distributed engine; ``run()`` returns its :class:`RunRecord`."""

    def __init__(self, spec: RunSpec, progress: bool = True, problem: Problem | None = None,
                 theta0: np.ndarray | None = None, updates: UpdateLog | None = None) -> None:
        validate_ray(spec)
        self.spec = spec
        self.progress = progress
        self.algorithm = get_algorithm(spec.algorithm.name)
        self.log = updates if updates is not None else UpdateLog(spec.record.rows,
                                                                 run_id=spec.run_id)
        p = spec.problem
        self.problem = problem if problem is not None else make_problem(
            p.name, dtype=p.dtype, **p.options)
        self.m = spec.workers
        self.seeds = worker_seeds(spec.seed, self.m)
        self.rule = make_rule(spec.stepsize.rule, workers=self.algorithm.update_streams(self.m),
                              lr=spec.stepsize.lr, **spec.stepsize.options)
        self.tau_max = default_tau_max(self.m)
        self.theta0 = self.problem.init_params(spec.seed) if theta0 is None else theta0.copy()
        self.n_max = int(spec.stop.updates) if spec.stop.updates else MAX_UPDATES
        self.sharded = self.algorithm.name == "hogwild"
        n = self.theta0.shape[0]
        k = server_shards(spec, n)
        self.bounds = tuple(int(b) for b in np.linspace(0, n, k + 1).round().astype(np.int64))
        self.evals = EvalLog()
        c = spec.controller
        self.controller: Controller = make_controller(c.name, self.m, **c.options)
        self.elastic = not (c.name == "static" and self.controller.level == self.m)
        self.active = self.m
        self.t_set: list[float] = []  # when each controller decision was sent
        self.first_loss: float | None = None
        self.diverged = False
        self.stop_reason = ""
        self.interrupted = False
        self.cluster = ""
        self.servers: list[Any] = []
        self.workers: list[Any] = []
        self.offsets: list[float] = []
        self.worker_nodes: list[str] = []
        self.server_nodes: list[str] = []
        self.lost = 0
        self.worker_counters: list[dict[str, Any]] = []
        self.server_counters: dict[str, Any] = {}
        #: θ at the end of the run (None until it ended)
        self.final_theta: np.ndarray | None = None

    # ----- actors --------------------------------------------------------------------------

    def _start_actors(self, ray: Any) -> None:
        spec = self.spec
        cls = {"hogwild": Shard, "sync": RoundServer}.get(self.algorithm.name, ParameterServer)
        server_cls = ray.remote(num_cpus=0)(cls)
        if self.sharded:
            b = self.bounds
            self.servers = [server_cls.remote(s, self.theta0[b[s]:b[s + 1]],
                                              self.rule if s == 0 else None, self.tau_max,
                                              spec.stepsize.lr, self.n_max)
                            for s in range(len(b) - 1)]
        else:
            self.servers = [server_cls.remote(self.algorithm.name, self.theta0, self.rule,
                                              self.tau_max, spec.stepsize.lr, self.n_max,
                                              self.m)]
        persistence = spec.algorithm.persistence
        setup = WorkerSetup(algorithm=self.algorithm.name, batch=spec.problem.batch,
                            sampling=spec.problem.sampling,
                            lr=float(spec.stepsize.lr),
                            persistence=-1 if math.isinf(persistence) else int(persistence),
                            bounds=self.bounds,
                            slowdown=tuple(slowdown_factors(spec.slowdown,
                                                            self.m).tolist()),
                            net_delay=spec.dist.net_delay)
        problem_ref = ray.put(self.problem)
        # a second thread per worker actor takes the driver's park/resume and end
        worker_cls = ray.remote(num_cpus=0, max_concurrency=2)(Worker)
        places = worker_placements(ray, self.m)
        self.workers = [worker_cls.options(scheduling_strategy=places[w]).remote(
                            w, self.seeds[w], problem_ref, setup, self.servers)
                        for w in range(self.m)]
        ray.get([a.prepare.remote() for a in [*self.servers, *self.workers]])
        self.worker_nodes = ray.get([w.node.remote() for w in self.workers])
        self.server_nodes = ray.get([s.node.remote() for s in self.servers])
        self.offsets = [clock_offset(w) for w in self.workers]
        self.server_offsets = [clock_offset(s) for s in self.servers]

    def _kill_actors(self, ray: Any) -> None:
        for actor in [*self.workers, *self.servers]:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass

    # ----- the driver ----------------------------------------------------------------------

    def _take_rows(self, ray: Any) -> None:
        """Move the rows the servers logged since the last call into the update log."""
        rows = ray.get(self.servers[0].take_rows.remote())
        if len(rows["k"]):
            self.log.add(rows)

    def _snapshot(self, ray: Any) -> tuple[np.ndarray, int]:
        """θ and its version: one consistent read of the server, or (hogwild) each shard's
        slice as it is then."""
        parts = ray.get([s.snapshot.remote() for s in self.servers])
        theta = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        return theta, int(parts[0][1])

    def _evaluate(self, ray: Any, t: float) -> float:
        theta, k = self._snapshot(ray)
        ev = self.spec.eval
        with np.errstate(all="ignore"):
            loss, acc = self.problem.evaluate(theta, ev.split, ev.max_rows)
        self.evals.add(t, k, loss, acc, self.active)
        if diverged(loss, self.first_loss):
            self.diverged = True
            self._request_stop(ray, "diverged")
        if self.first_loss is None:
            self.first_loss = float(loss)
        return loss

    def _request_stop(self, ray: Any, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        for s in self.servers:
            s.stop_run.remote(reason)
        for w in self.workers:  # parked, spinning or delayed workers ask no server
            w.end.remote()

    def _control(self, ray: Any, t: float, k: int, start: bool = False) -> None:
        """Ask the controller for m (at the start, or when its phase ended) and park or
        resume the workers accordingly (workers 0..m−1 active)."""
        ctl = self.controller
        loss = None
        if ctl.needs_loss:
            theta, k = self._snapshot(ray)
            ev = self.spec.eval
            with np.errstate(all="ignore"):
                loss = float(self.problem.evaluate(theta, ev.split, ev.max_rows)[0])
        m = ctl.start(t, k, loss) if start else ctl.observe(t, k, loss)
        if m != self.active or start:
            self.active = m
            sent = [w.set_active.remote(i < m) for i, w in enumerate(self.workers)]
            if start:  # every worker knows before the run starts
                ray.get(sent)
        self.t_set.append(t)

    def _interrupt(self, signum: int, frame: Any) -> None:
        self.interrupted = True

    def _monitor(self, ray: Any, running: list[Any], origin: float) -> None:
        spec = self.spec
        stop, ev = spec.stop, spec.eval
        bar = RunProgress(self.progress, stop.updates, stop.seconds)
        next_eval_t = ev.every_seconds or math.inf
        next_eval_k = ev.every_updates or math.inf
        stopping_since = math.inf
        try:
            while running:
                if time.monotonic() - stopping_since > STOP_GRACE_SECONDS:
                    for w in self.workers:  # a worker that does not see the stop
                        ray.kill(w)
                    stopping_since = math.inf
                done, running[:] = ray.wait(running, num_returns=len(running),
                                            timeout=POLL_SECONDS)
                self._collect(ray, done)
                now = time.monotonic() - origin
                if self.interrupted:
                    self._request_stop(ray, "interrupted")
                k, stopped, reason = ray.get(self.servers[0].status.remote())
                if stopped and not self.stop_reason:
                    self.stop_reason = reason
                self._take_rows(ray)
                bar.update(k, now)
                if stopped:
                    if stopping_since == math.inf:  # (the servers stopped it themselves)
                        for w in self.workers:
                            w.end.remote()
                    stopping_since = min(stopping_since, time.monotonic())
                    continue
                if self.elastic and self.controller.due(now, k):
                    self._control(ray, now, k)
                if now >= next_eval_t or k >= next_eval_k:
                    loss = self._evaluate(ray, now)
                    bar.loss(loss)
                    while next_eval_t <= now:
                        next_eval_t += ev.every_seconds or math.inf
                    while next_eval_k <= k:
                        next_eval_k += ev.every_updates or math.inf
                    if stop.target_loss is not None and stop.at_target \
                            and loss <= stop.target_loss:
                        self._request_stop(ray, "target")
                if stop.seconds is not None and now >= stop.seconds:
                    self._request_stop(ray, "seconds")
        finally:
            bar.close()

    def _collect(self, ray: Any, done: list[Any]) -> None:
        """Counters of workers that ended; a worker whose process died is counted lost."""
        for ref in done:
            try:
                self.worker_counters.append(ray.get(ref))
            except ray.exceptions.RayActorError:
                self.lost += 1
                if self.lost == self.m:
                    self._request_stop(ray, "workers lost")

    def run(self) -> RunRecord:
        """Run to a stop rule and return the record (partial if interrupted)."""
        ray = import_ray()
        self.cluster = connect(self.spec.dist.address)
        seconds = 0.0
        try:
            with _ctrl_c_sets_flag(self._interrupt):
                self._start_actors(ray)
                origin = time.monotonic()
                self._evaluate(ray, 0.0)
                if self.elastic:  # the workers start parked or not, as it chooses
                    self._control(ray, 0.0, 0, start=True)
                ray.get([s.start.remote(origin + off)
                         for s, off in zip(self.servers, self.server_offsets, strict=True)])
                running = [w.run.remote(origin + off)
                           for w, off in zip(self.workers, self.offsets, strict=True)]
                try:
                    self._monitor(ray, running, origin)
                    seconds = time.monotonic() - origin
                    self._take_rows(ray)
                    self.server_counters = ray.get(self.servers[0].counters.remote())
                    self._evaluate(ray, seconds)
                    self.final_theta = self._snapshot(ray)[0]
                except ray.exceptions.RayActorError:
                    # a server died: the rows taken so far are the record
                    seconds = time.monotonic() - origin
                    self.stop_reason = "server lost"
        finally:
            self._kill_actors(ray)
        return self._record(seconds)

    def _record(self, seconds: float) -> RunRecord:
        spec = self.spec
        stats = self.log.close()
        reason = self.stop_reason or ("updates" if stats.applied >= self.n_max else "stopped")
        evals = self.evals.arrays()
        div = self.diverged or reason == "diverged"
        if div:
            reason = "diverged"
        sc = self.server_counters
        summary = engine_summary(
            "ray", spec, evals, stats, seconds, div, self.interrupted,
            peak_rss_bytes=peak_rss_bytes(),
            stop_reason="interrupted" if self.interrupted else reason,
            worker_seeds=",".join(str(s) for s in self.seeds),
            stepsize_tables=int(sc.get("stepsize_tables", 0)),
            cluster=self.cluster,
            shards=len(self.servers),
            worker_nodes=",".join(self.worker_nodes),
            server_nodes=",".join(self.server_nodes),
            clock_offsets=",".join(f"{o:.6f}" for o in self.offsets),
            workers_lost=self.lost,
            net_delay=spec.dist.net_delay,
            worker_cpu=",".join(f"{c.get('gradient_seconds', math.nan):.4f}"
                                for c in self.worker_counters),
            **published_summary(self.controller, self.t_set, seconds, self.m),
        )
        if "persistence" in self.algorithm.options:
            n = stats.applied
            summary.update(persistence=float(spec.algorithm.persistence),
                           failed_publishes=int(sc.get("failed_publishes", 0)),
                           failed_publishes_at_stop=int(sc.get("failed_publishes_at_stop", 0)),
                           tries_per_update=(sc.get("success_tries", 0) / n) if n else math.nan)
        control = self.controller.trace_columns()
        control["t_set"] = np.asarray(self.t_set[: len(control["t"])], dtype=np.float64)
        return RunRecord(summary=summary, updates=self.log, evals=evals, control=control)

@contextmanager
def _ctrl_c_sets_flag(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Within the block, Ctrl-C calls ``handler`` (which asks the run to stop) instead of
    raising KeyboardInterrupt; only in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_ray(spec: RunSpec, progress: bool = True, updates: UpdateLog | None = None
            ) -> RunRecord:
    """Run ``spec`` on the distributed engine and return its run record (DESIGN §3); the
    update rows go to ``updates`` (default: a log in memory) while the run goes on."""
    return RayRun(spec, progress, updates=updates).run()
