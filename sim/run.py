"""The ``sim`` engine: one resolved experiment point (a :class:`RunSpec`) simulated to a run record.

``run_sim(spec)`` builds the problem, the step-size rule and the timing model of
``spec.sim`` (DESIGN §6), runs :func:`~stalesgd.sim.engine.simulate_timing` with, unless
``timing_only``, the :class:`~stalesgd.sim.replay.NumericReplay` hook, and writes the same
record as the real engine (DESIGN §3): one row per update (dropped gradients included),
streamed to the run's update log chunk by chunk while the simulation runs, evaluations on the
simulated clock, and one summary row whose ``seconds`` and ``updates_per_s`` are in
*simulated* time (``wall_seconds`` is the simulation's own run time).  Stop rules:
``updates``, ``seconds`` (simulated) and ``target_loss`` (numeric mode).  Ctrl-C ends the
run and the partial record is returned with ``interrupted = True``, as the real engine does
(the runner keeps it and stops the sweep).  :func:`validate` refuses, before anything runs,
settings the simulator cannot run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from stalesgd.algorithms import Algorithm, algorithm_names, get_algorithm
from stalesgd.experiment import (
    DEFAULT_PS_COSTS,
    DEFAULT_SIM_COMPUTE,
    DEFAULT_TIME_SLICE,
    PER_PARAM,
    ExperimentError,
    RunSpec,
    server_shards,
)
from stalesgd.problems.registry import Problem, check_problem, make_problem
from stalesgd.progress import RunProgress
from stalesgd.records import RunRecord, UpdateLog, engine_summary
from stalesgd.seeds import worker_seeds
from stalesgd.slowdown import slowdown_factors
from stalesgd.stepsize import default_tau_max, make_rule
from stalesgd.units import adds_delay

from .batches import BatchStream
from .collisions import CollisionCounter, ReplayCollisions
from .engine import (
    READ_COST_PER_PARAM,
    UPDATE_COST_PER_PARAM,
    SimResult,
    attach_controller,
    check_controller_replay,
    elastic_summary,
    simulate_timing,
)
from .network import Network
from .pipeline import THREADS_ENV, threads_allowed, threads_from_env
from .replay import NumericReplay
from .simulation import Simulation
from .stepsizes import StepSizes
from .timing import (
    Deterministic,
    Empirical,
    Gamma,
    LogNormal,
    Timing,
    parse_duration,
    parse_timing,
)
from .updates import apply_step

__all__ = ["SimRun", "run_sim", "validate", "ALGORITHM_OPTIONS", "CalibratedTiming",
           "calibrated_timing", "MIN_TIME_SLICE"]

#: ``algorithm.options`` the simulator reads (durations, e.g. ``"2us"``): lock hand-over
#: latency and the cost of one atomic / compare-and-swap.  Other keys are rejected.
ALGORITHM_OPTIONS = ("lock_handover", "cas_cost")
#: progress-bar refresh, in applied updates
MONITOR_EVERY = 512
#: the shortest scheduler time slice the simulator accepts (seconds): a slice is an event
#: of the simulation, and shorter ones only make it slower, not more exact
MIN_TIME_SLICE = 1e-6
#: a calibration the runner fits from the same experiment's real runs, resolved later
_AUTO = "auto"


def validate(spec: RunSpec) -> None:
    """Raise :class:`~stalesgd.experiment.ExperimentError` for settings the simulator cannot
    run: an unknown algorithm or algorithm option, a worker count the algorithm does not
    allow, a controller that measures the loss in timing-only mode, an unusable calibration
    file, a time slice below :data:`MIN_TIME_SLICE`, a worker cycle (compute, read,
    update, compare-and-swap) that takes no time at all, on which the simulated clock would
    never move, or a numeric replay thread count (:data:`~stalesgd.sim.pipeline.THREADS_ENV`)
    that is not one.  Cheap: no problem data is loaded."""
    algorithm = _algorithm(spec)
    options = _algorithm_options(spec.algorithm.options)
    if spec.sim.topology == "ps" and options:
        key = next(iter(options))
        raise ExperimentError(f"algorithm.options.{key}", spec.algorithm.options[key],
                              "no lock or compare-and-swap options with sim.topology = 'ps' "
                              "(the servers apply updates one at a time; their costs are "
                              "sim.latency, sim.per_byte and sim.server_time)",
                              "cannot be used")
    check_controller_replay(spec.controller.name, bool(spec.sim.timing_only))
    if not spec.sim.timing_only:
        try:
            threads_from_env()
        except ValueError:
            raise ExperimentError(THREADS_ENV, os.environ[THREADS_ENV], threads_allowed(),
                                  "(an environment variable) is not allowed") from None
    calibration = spec.sim.calibration
    if calibration == _AUTO:
        return  # (checked once the runner has fitted it)
    cal = None if calibration is None else _load_calibration(spec)
    timing = _timing_kwargs(spec, options, cal, n_params=1)
    for key, per_param in (("read", READ_COST_PER_PARAM), ("update", UPDATE_COST_PER_PARAM)):
        if timing[key] is None:  # the default: a cost per parameter, and there is one at least
            timing[key] = per_param
    if timing["time_slice"] < MIN_TIME_SLICE:
        key = "sim.time_slice" if spec.sim.time_slice is not None else "sim.calibration"
        value = spec.sim.time_slice if spec.sim.time_slice is not None else calibration
        raise ExperimentError(key, value, f"a time slice of at least {MIN_TIME_SLICE * 1e6:g}us",
                              f"gives a time slice of {timing['time_slice']!r} s, too short")
    if timing["cores"] < 1:
        raise ExperimentError("sim.calibration", calibration, "a calibration with >= 1 core",
                              "gives no cores")
    costs = [timing["read"], timing["update"]]
    if "cas" in algorithm.cycle.once + algorithm.cycle.per_attempt:
        costs.append(timing["cas_cost"])
    means = [t.mean for t in _as_list(timing["compute"])] + [
        t.mean for c in costs for t in _as_list(c)]
    if spec.sim.topology == "ps":  # messages and the servers take time too
        means += [parse_duration(getattr(spec.sim, key) or DEFAULT_PS_COSTS[key])
                  for key in ("latency", "server_time")]
    if not any(x > 0 for x in means):
        key, value = ("sim.compute", spec.sim.compute) if cal is None else (
            "sim.calibration", calibration)
        raise ExperimentError(key, value, "timings whose compute, read or update time (or "
                              "compare-and-swap cost) is positive",
                              "makes every worker's cycle take no time: the simulated clock "
                              "would never move")


def _as_list(spec: Any) -> list[Timing]:
    items = spec if isinstance(spec, list | tuple) else [spec]
    return [parse_timing(x) for x in items]


def _algorithm(spec: RunSpec) -> Algorithm:
    try:
        algorithm = get_algorithm(spec.algorithm.name)
    except LookupError as exc:
        raise ExperimentError("algorithm.name", spec.algorithm.name,
                              ", ".join(algorithm_names())) from exc
    fixed = algorithm.fixed_workers
    if fixed is not None and spec.workers != fixed:
        raise ExperimentError("workers", spec.workers,
                              f"{fixed} with algorithm {spec.algorithm.name!r}")
    return algorithm


def _algorithm_options(options: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in options.items():
        if key not in ALGORITHM_OPTIONS:
            raise ExperimentError(f"algorithm.options.{key}", value,
                                  f"for the sim engine: {', '.join(ALGORITHM_OPTIONS)}",
                                  "is an unknown option")
        try:
            out[key] = parse_duration(value)
        except ValueError as exc:
            raise ExperimentError(f"algorithm.options.{key}", value,
                                  "a duration such as '2us' or a number of seconds",
                                  f"is not allowed ({exc})") from None
    return out


def _timing_kwargs(spec: RunSpec, options: dict[str, float], cal: Any,
                   n_params: int, coords: float | None = None) -> dict[str, Any]:
    """The timing keyword arguments of :func:`simulate_timing` for ``spec`` (a calibration's
    included); ``read``/``update`` are None for the per-parameter defaults of a dense
    problem.  ``coords``: on a sparse problem, the coordinates an update touches (the
    per-parameter defaults are then charged for those, as
    :meth:`stalesgd.algorithms.Algorithm.sim_costs` says)."""
    sim = spec.sim
    kwargs: dict[str, Any] = dict(
        cores=sim.cores if sim.cores is not None else spec.workers,
        compute=sim.compute or DEFAULT_SIM_COMPUTE,
        read=None if sim.read == PER_PARAM else sim.read,
        update=None if sim.update == PER_PARAM else sim.update,
        time_slice=parse_duration(sim.time_slice or DEFAULT_TIME_SLICE),
        lock_handover=options.get("lock_handover", 0.0),
        cas_cost=options.get("cas_cost", 0.0),
        # a slowed-down worker's compute time is multiplied by its factor
        slow={w: f for w, f in
              enumerate(slowdown_factors(spec.slowdown, spec.workers).tolist()) if f != 1.0})
    if coords is not None:
        costs = get_algorithm(spec.algorithm.name).sim_costs(
            n_params, READ_COST_PER_PARAM, UPDATE_COST_PER_PARAM,
            READ_COST_PER_PARAM + UPDATE_COST_PER_PARAM, 0.0, coords=coords)
        for key in ("read", "update"):
            if kwargs[key] is None:
                kwargs[key] = costs[key]
    if cal is not None:
        kwargs.update(calibrated_timing(cal, spec, options, n_params, coords).kwargs)
    return kwargs


def network(spec: RunSpec, problem: Problem, calibrated: dict[str, float] | None = None
            ) -> Network:
    """The parameter servers' network of a run with topology ``ps``: the experiment's costs,
    else the ``calibrated`` ones (:attr:`CalibratedTiming.network`), else
    :data:`~stalesgd.experiment.DEFAULT_PS_COSTS`; θ's bytes, ``[dist]``'s shards
    (``hogwild``; the others have one server) and added message delay."""
    sim = spec.sim
    calibrated = calibrated or {}
    cost = {key: (parse_duration(getattr(sim, key)) if getattr(sim, key) is not None
                  else calibrated[key] if key in calibrated else parse_duration(default))
            for key, default in DEFAULT_PS_COSTS.items()}
    delay = spec.dist.net_delay
    return Network(latency=cost["latency"], per_byte=cost["per_byte"],
                   serve=cost["server_time"], jitter=calibrated.get("jitter", 0.0),
                   cores=calibrated.get("cores", 0.0),
                   theta_bytes=n_params_bytes(problem),
                   shards=server_shards(spec, problem.model.n_params),
                   delay=None if delay is None else parse_timing(delay))


def _show(bar: RunProgress) -> Callable[[Simulation], None]:
    """A simulation monitor that moves ``bar`` (simulated seconds for a time budget)."""

    def monitor(sim: Simulation) -> None:
        bar.update(sim.v, sim.now)

    return monitor


class _Rows:
    """The run's update log as the simulation's row sink: step sizes of a timing-only run
    are looked up chunk by chunk (η of the rule at each τ, as a replay would apply), and
    dropped gradients are logged with η = 0, as the real engine logs them."""

    def __init__(self, log: UpdateLog, step: StepSizes, timing_only: bool,
                 collisions: CollisionCounter | None = None) -> None:
        self.log = log
        self.step = step
        self.timing_only = timing_only
        self.collisions = collisions

    def add(self, columns: Mapping[str, np.ndarray]) -> None:
        cols = dict(columns)
        dropped = cols["dropped"]
        eta = cols["eta"]
        if self.timing_only:
            applied = ~dropped
            eta[applied] = self.step.etas(cols["tau"][applied], cols["worker"][applied])
        eta[dropped] = 0.0
        if self.collisions is not None:
            self.collisions.add(cols)
        self.log.add(cols)


class SimRun:
    """One run of the ``sim`` engine; :meth:`run` returns its :class:`RunRecord`.

    ``problem`` and ``theta0`` replace the spec's problem and initial parameters
    (tests, custom models), as for the real engine; ``fast=False`` runs the SimPy processes
    even where the compiled loop applies (comparisons).
    """

    def __init__(self, spec: RunSpec, progress: bool = True, problem: Problem | None = None,
                 theta0: np.ndarray | None = None, updates: UpdateLog | None = None,
                 fast: bool = True) -> None:
        validate(spec)
        self.algorithm = _algorithm(spec)
        self.options = _algorithm_options(spec.algorithm.options)
        self.calibration = None if spec.sim.calibration is None else _load_calibration(spec)
        self.spec = spec
        self.progress = progress
        self.fast = fast
        self.m = spec.workers
        p = spec.problem
        self.problem = problem if problem is not None else make_problem(
            p.name, dtype=p.dtype, **p.options)
        self.rule = make_rule(spec.stepsize.rule, workers=self.algorithm.update_streams(self.m),
                              lr=spec.stepsize.lr,
                              **spec.stepsize.options)
        # a sparse problem's updates copy and write only the coordinates they touch
        self.coords = (self.problem.coords_per_update(p.batch) if self.problem.sparse
                       else None)
        # ... and their collision rate is counted (asynchronous algorithms; sync applies
        # every update at τ = 0): by numeric replay as it applies them, else from the rows
        self.counts_collisions = self.problem.sparse and spec.algorithm.name != "sync"
        self.collisions: CollisionCounter | ReplayCollisions | None = None
        self.tau_max = default_tau_max(self.m)
        self.step = StepSizes(self.rule, self.tau_max, float(spec.stepsize.lr))
        self.timing_only = bool(spec.sim.timing_only)
        self.theta0 = theta0
        self.hook: NumericReplay | None = None
        self.log = updates if updates is not None else UpdateLog(spec.record.rows,
                                                                 run_id=spec.run_id)

    # ------------------------------------------------------------------ numerics
    def _make_hook(self) -> NumericReplay:
        spec = self.spec
        ev, stop = spec.eval, spec.stop
        hook = NumericReplay(
            self.problem, self.m, self.step, batch=spec.problem.batch, seed=spec.seed,
            theta0=self.theta0, every_updates=ev.every_updates, every_seconds=ev.every_seconds,
            split=ev.split, max_rows=ev.max_rows, target_loss=stop.target_loss,
            at_target=stop.at_target, sampling=spec.problem.sampling,
            count_collisions=self.counts_collisions)
        # compile every kernel before the clock starts (as the real engine does)
        theta = hook.theta.copy()
        grad = np.zeros_like(theta)
        idx = np.zeros(spec.problem.batch, dtype=np.int64)
        self.problem.loss_grad(theta, idx, grad, hook.ws)
        BatchStream(0, 2, 1, spec.problem.sampling).next()  # (epochs: its compiled draw)
        apply_step(theta, grad, 0.0)
        self.problem.evaluate(theta, ev.split, 8)
        scratch = self.rule.estimator(self.tau_max)  # an online rule's kernel, on a throwaway
        if scratch is not None:
            scratch.update(np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64))
        return hook

    def _collision_count(self) -> CollisionCounter | ReplayCollisions | None:
        """Where the run's collision rate is counted: numeric replay's sparse gradients as
        they are applied, or (timing-only, or replay with dense gradients) the rows."""
        if not self.counts_collisions:
            return None
        if self.hook is not None and self.hook.collisions is not None:
            return self.hook.collisions
        p = self.spec.problem
        return CollisionCounter(self.problem, self.m, p.batch, self.spec.seed, p.sampling)

    def _most_active(self) -> int:
        """The most workers active at once: all of them, or the highest level an elastic
        controller set."""
        if self.controller is None:
            return self.m
        levels = self.controller.trace_columns()["m"]
        return int(levels.max()) if levels.size else self.m

    # ------------------------------------------------------------------ the run
    def run(self) -> RunRecord:
        """Simulate to a stop rule and return the record (partial if interrupted)."""
        spec = self.spec
        stop = spec.stop
        self.hook = None if self.timing_only else self._make_hook()
        self.collisions = self._collision_count()
        row_counter = self.collisions if isinstance(self.collisions, CollisionCounter) else None
        n_params = self.problem.model.n_params
        bar = RunProgress(self.progress, stop.updates, stop.seconds, unit="sim-s")
        kwargs = _timing_kwargs(spec, self.options, None, n_params, self.coords)
        kwargs.update(
            updates=stop.updates, seconds=stop.seconds, seed=spec.seed,
            persistence=spec.algorithm.persistence, n_params=n_params, hook=self.hook,
            monitor=_show(bar) if bar.enabled else None, monitor_every=MONITOR_EVERY,
            rows=_Rows(self.log, self.step, self.timing_only, row_counter), fast=self.fast)
        if self.calibration is not None:
            self.calibrated = calibrated_timing(self.calibration, spec, self.options, n_params,
                                                self.coords)
            kwargs.update(self.calibrated.kwargs)
        if spec.sim.topology == "ps":
            self.network = network(spec, self.problem, None if self.calibration is None
                                   else self.calibrated.network)
            kwargs["network"] = self.network
        # elastic parallelism control: None for the static baseline
        self.controller, kwargs["controller"] = attach_controller(spec, self.m, self.hook)
        try:
            # BLAS inside the gradient kernels runs single-threaded, as in the real engine
            with threadpool_limits(limits=1):
                res = simulate_timing(spec.algorithm.name, self.m, **kwargs)
        finally:
            bar.close()
        return self._record(res)

    def _record(self, res: SimResult) -> RunRecord:
        spec, hook = self.spec, self.hook
        stats = self.log.close()
        n = stats.applied
        if hook is not None:
            hook.finish(res.duration, n, res.interrupted)
        evals = hook.evals.arrays() if hook is not None else _no_evals()
        reason = hook.stop_reason if hook is not None else ""
        if res.interrupted:
            reason = "interrupted"
        elif not reason:
            if spec.stop.updates is not None and n >= spec.stop.updates:
                reason = "updates"
            elif spec.stop.seconds is not None and res.duration >= spec.stop.seconds:
                reason = "seconds"
            else:
                reason = "stopped"
        diverged = bool(hook is not None and hook.diverged)
        summary = engine_summary("sim", spec, evals, stats, res.duration, diverged,
                                 res.interrupted)
        theta_nbytes = n_params_bytes(self.problem)
        summary.update(
            # the real engine's buffers; a pool's high-water mark is not simulated
            peak_param_bytes=self.algorithm.param_bytes(theta_nbytes, self._most_active()),
            peak_rss_bytes=None,  # the simulated machine's RSS is not modelled
            stop_reason=reason,
            worker_seeds=",".join(str(s) for s in worker_seeds(spec.seed, self.m)),
            stepsize_tables=self.step.n_tables,
            cores=res.cores,
            timing_only=self.timing_only,
            compute=spec.sim.compute or DEFAULT_SIM_COMPUTE,
            read=spec.sim.read,
            update=spec.sim.update,
            time_slice=spec.sim.time_slice or DEFAULT_TIME_SLICE,
            preemptions=res.preemptions,
            lock_contended=res.lock_contended,
            wall_seconds=res.wall_seconds,
            sim_updates_per_wall_s=res.updates_per_wall_second,
            event_loop=res.config["event_loop"],
        )
        if hook is not None:
            summary["replay_threads"] = hook.threads
            choice = hook.loop_choice
            if choice is not None:
                summary.update(replay_parallel_batches=choice.batches[1],
                               replay_one_core_batches=choice.batches[0])
        summary["topology"] = spec.sim.topology
        if spec.sim.topology == "ps":
            net = self.network
            summary.update(latency=net.latency, per_byte=net.per_byte, server_time=net.serve,
                           network_jitter=net.jitter, network_cores=net.cores,
                           shards=net.shards,
                           net_delay=spec.dist.net_delay)
        if self.coords is not None:  # the coordinates the timing model charged an update for
            summary.update(sparse=True, coords_per_update=self.coords)
            if self.collisions is not None:
                summary["collision_rate"] = self.collisions.rate
        if self.calibration is not None:
            summary.update(self.calibrated.summary)
            summary["cores"] = res.cores
        if spec.algorithm.name == "leashed":
            summary.update(
                persistence=float(spec.algorithm.persistence),
                failed_publishes=res.failed_publishes,
                tries_per_update=stats.attempts_sum / n if n else math.nan,
                pool_high_water=None,  # the buffer pool is not modelled by the simulator
                pool_high_water_bytes=None,
            )
        summary.update(elastic_summary(self.controller, res))
        return RunRecord(summary=summary, updates=self.log, evals=evals,
                         control=self.controller.trace_columns())


# ---------------------------------------------------------------------------------------------
# Calibration: a timing model fitted to a real run (``stalesgd calibrate``, analysis/calibrate.py)
# ---------------------------------------------------------------------------------------------

_CAL_ALLOWED = "a calibration file written by `stalesgd calibrate REAL_DIR` (JSON)"


def _load_calibration(spec: RunSpec):
    """Load ``spec.sim.calibration`` (a path, relative to the working directory) and check
    that it was fitted to this run's problem, batch and dtype."""
    from stalesgd.calibration import CalibrationError, check_compatible, load_calibration

    try:
        cal = load_calibration(spec.sim.calibration)
        p = spec.problem
        check_compatible(cal, p.name, p.batch, p.dtype,
                         check_problem(p.name, p.options, p.dtype).n_params)
    except CalibrationError as exc:
        raise ExperimentError("sim.calibration", spec.sim.calibration, _CAL_ALLOWED,
                              f"cannot be used: {exc}") from None
    return cal


@dataclass
class CalibratedTiming:
    """What a calibration contributes to one simulation: keyword arguments of
    :func:`~stalesgd.sim.engine.simulate_timing` and fields for the run summary."""

    kwargs: dict[str, Any]
    summary: dict[str, Any]
    #: topology ``ps``: the fitted latency, per_byte, server_time (seconds), the shared
    #: machine's cores and this configuration's jitter (None: a calibration of shared memory)
    network: dict[str, float] | None = None


def _compute_timing(model: dict[str, Any], parametric: bool) -> Timing:
    if parametric:
        fit = model["fit"]
        if fit["cv"] <= 0:
            return Deterministic(float(fit["mean"]))
        cls = Gamma if fit["kind"] == "gamma" else LogNormal
        return cls(float(fit["mean"]), float(fit["cv"]))
    return Empirical(np.asarray(model["samples_ns"], dtype=np.float64) * 1e-9)


#: what a prediction (a worker count the calibration did not measure) takes its compute model
#: from: ``"nearest"``, the same algorithm's measured configuration with the most workers not
#: above it (its co-running workers' compute and, Hogwild!, its write time), or ``"pooled"``,
#: every configuration of the file pooled.  On the full out-of-sample matrix
#: (``docs/fidelity.md``: four models, batch 16 and 128, lock/Hogwild!/Leashed-SGD at m = 4
#: and 8 predicted from m <= 2 on 2 cores, three repetitions), measured twice on 2026-12-07,
#: nearest met TV <= 0.10 in 15 and 17 of 48 cells (median TV 0.126 both times) against 9 and
#: 9 for pooled (0.154, 0.163), and updates/s within 10 % in 30 of 48 against 25.  (An earlier
#: matrix of the MLP alone had favoured pooled: median TV 0.146 against 0.168.)
PREDICT_FROM = "nearest"


def calibrated_timing(cal, spec: RunSpec, options: dict[str, float],
                      n_params: int, coords: float | None = None) -> CalibratedTiming:
    """The timing model of ``cal`` (a :class:`stalesgd.analysis.calibrate.Calibration`) for
    ``spec``.

    Compute: the measured configuration (same algorithm and workers) if the file has it,
    worker ``w`` resampling its own measured durations and workers beyond the measured ones
    that configuration's pooled durations; otherwise, per :data:`PREDICT_FROM`, the same
    algorithm's nearest measured configuration (its workers, and its Hogwild! write time)
    or the file's pooled model for every worker.  Resampling is empirical unless the file's
    ``default_model`` is ``parametric`` (then the fitted gamma/log-normal).  Read/update/CAS:
    the file's per-parameter costs (``hogwild`` reads 0, ``leashed`` applies with the fused
    copy-apply).  Cores, time slice and lock hand-over: the file's; cores are the *effective*
    cores the measured configuration got (``effective_cores``: fewer than the machine's when
    other load shared it), for a prediction those of the nearest configuration when it got
    fewer cores than it had workers, else the file's ``effective_cores``.

    Explicit settings win over the file: ``sim.compute``/``sim.time_slice`` whenever given,
    ``sim.read``/``sim.update`` when not ``per-param``, ``sim.cores`` when set,
    ``algorithm.options.lock_handover``/``cas_cost`` when given.

    The run is labelled ``prediction = True`` unless the file measured exactly this
    (algorithm, workers) on as many (effective) cores as simulated, counting no more cores
    than workers.
    """
    sim, d, m = spec.sim, cal.data, spec.workers
    alg = spec.algorithm.name
    if cal.topology != sim.topology:
        fitted = ("runs of the distributed engine (engine ray)" if cal.topology == "ps"
                  else "runs of the thread engine (engine real)")
        raise ExperimentError("sim.calibration", str(sim.calibration),
                              f"a calibration of topology {sim.topology!r} (this one was "
                              f"fitted to {fitted}: simulate it with sim.topology = "
                              f"{cal.topology!r})", "does not fit this simulation")
    kwargs: dict[str, Any] = {}
    overridden = []
    algorithm = get_algorithm(alg)
    entry = cal.configuration(alg, m) if algorithm.calibratable else None
    source = entry
    if source is None and algorithm.calibratable and PREDICT_FROM == "nearest":
        source = cal.nearest_configuration(alg, m)
    if cal.topology == "ps" and algorithm.calibratable:
        # compute as the algorithm's fewest workers did: the shared machine makes the waits
        source = cal.nearest_configuration(alg, 1)  # for a core (analysis/calibrate_ps.py)
    parametric = d["default_model"] == "parametric"
    if sim.compute is not None:
        overridden.append("compute")
    else:
        pooled = source["compute"] if source is not None else d["pooled"]
        base = _compute_timing(pooled, parametric)
        comp = [base] * m
        if source is not None and not parametric and cal.topology != "ps":
            for w, ns in enumerate(source["per_worker_ns"][:m]):
                if ns:
                    comp[w] = Empirical(np.asarray(ns, dtype=np.float64) * 1e-9)
        kwargs["compute"] = comp
    net = None
    if cal.topology == "ps":  # the servers copy and apply whole vectors
        costs = {"read": d["read_per_param"] * n_params,
                 "update": d["update_per_param"] * n_params, "cas": 0.0}
        net = {k: float(d["network"][k]) for k in ("latency", "per_byte", "server_time",
                                                   "cores")}
        net["jitter"] = cal.network_jitter(alg, m)
    else:
        costs = algorithm.sim_costs(n_params, d["read_per_param"], d["update_per_param"],
                                    d["fused_per_param"], d["cas_cost"], coords=coords)
    if sim.read == PER_PARAM:
        kwargs["read"] = costs["read"]
    else:
        overridden.append("read")
    if sim.update == PER_PARAM:
        kwargs["update"] = costs["update"]
        if source is not None and source.get("hogwild_write_s") is not None:
            kwargs["update"] = float(source["hogwild_write_s"])  # the measured, contended write
    else:
        overridden.append("update")
    if entry is not None:
        measured_cores = int(entry["effective_cores"])
    elif source is not None and int(source["workers"]) > int(source["effective_cores"]):
        # the nearest configuration got fewer cores than it had workers (other load): the
        # prediction runs on what its compute times were measured on, not on the cores that
        # another algorithm's runs happened to get
        measured_cores = int(source["effective_cores"])
    else:
        measured_cores = int(d.get("effective_cores", d["cores"]))
    if cal.topology == "ps":  # a core per worker process: the measured compute times hold
        measured_cores = m  # the waits for one (analysis/calibrate_ps.py)
    cores = int(sim.cores) if sim.cores is not None else measured_cores
    kwargs["cores"] = cores
    if sim.time_slice is None:
        kwargs["time_slice"] = float(d["time_slice"])
    else:
        overridden.append("time_slice")
    kwargs["lock_handover"] = options.get("lock_handover", float(d["lock_handover"]))
    kwargs["cas_cost"] = options.get("cas_cost", float(costs["cas"]))
    # (cores beyond the workers change nothing: one worker on 2 cores is one on 1; the file
    # measured no slowed-down worker, see analysis.calibrate)
    same_cores = min(cores, m) == min(measured_cores, m)
    exact = (entry is not None and same_cores
             and spec.slowdown is None
             and (cal.topology != "ps" or (not adds_delay(spec.dist.net_delay) and (
                 alg != "hogwild"
                 or server_shards(spec, n_params) == d["network"].get("shards")))))
    summary = {
        "calibrated": True,
        "calibration": str(sim.calibration),
        "calibration_match": (("exact" if same_cores else
                               f"exact configuration, measured on {measured_cores} cores, "
                               f"simulated on {cores}") if entry is not None
                              else "pooled" if source is None
                              else f"nearest (m={source['workers']})"),
        "calibration_model": "parametric" if parametric else "empirical",
        "calibration_overrides": ",".join(overridden),
        "prediction": not exact,
        # beyond the worker counts its calibration was restricted to: out of sample
        "calibration_scope": (cal.scope if cal.max_workers is not None
                              and m > cal.max_workers else None),
        "time_slice": (f"{kwargs['time_slice'] * 1e3:.6g}ms" if "time_slice" in kwargs
                       else str(sim.time_slice)),
    }
    if net is not None:
        overridden += [k for k in ("latency", "per_byte", "server_time")
                       if getattr(sim, k) is not None]
        summary["calibration_overrides"] = ",".join(overridden)
    if "compute" not in overridden:
        summary["compute"] = f"calibrated ({summary['calibration_model']})"
    for key in ("read", "update"):
        if key not in overridden:
            summary[key] = f"calibrated det:{kwargs[key] * 1e9:.6g}ns"
    return CalibratedTiming(kwargs=kwargs, summary=summary, network=net)


def n_params_bytes(problem: Problem) -> int:
    """Bytes of one parameter vector of ``problem``."""
    return int(problem.model.n_params) * int(np.dtype(problem.model.dtype).itemsize)


def _no_evals() -> dict[str, np.ndarray]:
    return {"t": np.zeros(0), "k": np.zeros(0, np.int64), "loss": np.zeros(0),
            "accuracy": np.zeros(0), "active_workers": np.zeros(0, np.int32)}


def run_sim(spec: RunSpec, progress: bool = True, updates: UpdateLog | None = None
            ) -> RunRecord:
    """Simulate ``spec`` (numeric replay unless ``spec.sim.timing_only``) and return its run
    record (DESIGN §3), ``engine = "sim"``, times in simulated seconds."""
    return SimRun(spec, progress, updates=updates).run()
