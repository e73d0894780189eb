"""Entry point of the simulator's timing-only mode: ``simulate_timing`` -> :class:`SimResult`.

This builds the timing models and the per-worker random streams from a seed,
runs :class:`~stalesgd.sim.simulation.Simulation` and hands back the per-update
columns (named as the run-record ``updates`` table, DESIGN §3) with the run's
counters.  Numeric replay plugs in through ``hook`` (a
:class:`~stalesgd.sim.simulation.ReplayHook`), elastic control through ``controller``
(:func:`elastic_control`); the ``sim`` engine builds on this function.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from stalesgd.algorithms import algorithm_names

from .buffers import COLUMNS, DTYPES, RowSink
from .network import Network
from .simulation import ReplayHook, Simulation
from .timing import Scaled, Timing, as_timings, parse_duration, per_param, worker_factors

if TYPE_CHECKING:
    from stalesgd.elastic import Controller

__all__ = [
    "Columns",
    "Control",
    "SimResult",
    "attach_controller",
    "check_controller_replay",
    "elastic_control",
    "elastic_summary",
    "net_rngs",
    "simulate_timing",
    "worker_rngs",
    "DEFAULT_TIME_SLICE",
    "READ_COST_PER_PARAM",
    "UPDATE_COST_PER_PARAM",
]

#: scheduler time slice of the simulated machine (seconds)
DEFAULT_TIME_SLICE = 4e-3
#: default copy cost per parameter (seconds): ~8 bytes at ~16 GB/s
READ_COST_PER_PARAM = 0.5e-9
#: default apply cost per parameter (seconds): read gradient, read-modify-write θ
UPDATE_COST_PER_PARAM = 1.0e-9
#: the entropy that sets the network-delay streams apart from the timing streams
NET_STREAM = 0x6E6574

TimingSpec = str | float | Timing | Sequence[str | float | Timing]
#: a controller: called once at t = 0, right after every worker's first step; it acts
#: through :meth:`Simulation.set_active`, :meth:`Simulation.watch` and
#: :meth:`Simulation.call_after`
Control = Callable[[Simulation], None]


@dataclass
class SimResult:
    """What one simulated run produced.

    ``updates`` holds the columns ``k, worker, t_read, t_apply, tau, eta, attempts,
    dropped`` (one row per update, dropped gradients as rows with ``k = -1``), or is the
    row sink the rows went to; the counters are over those rows.
    """

    algorithm: str
    workers: int
    cores: int
    seed: int
    updates: Mapping[str, np.ndarray] | RowSink
    n_updates: int
    duration: float
    failed_publishes: int
    dropped: int
    preemptions: int
    lock_contended: int
    wall_seconds: float
    interrupted: bool = False
    active_changes: list[tuple[float, int]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Applied updates per simulated second."""
        return self.n_updates / self.duration if self.duration > 0 else math.inf

    @property
    def tau(self) -> np.ndarray:
        """Staleness of the applied (not dropped) updates, in apply order."""
        return self.updates["tau"][~self.updates["dropped"]]

    @property
    def updates_per_wall_second(self) -> float:
        """Simulation speed: applied updates per second of wall-clock time."""
        return self.n_updates / self.wall_seconds if self.wall_seconds > 0 else math.inf

    def summary(self) -> dict[str, Any]:
        """Run-level numbers for the ``runs`` table (engine-specific extras included)."""
        return {
            "engine": "sim",
            "algorithm": self.algorithm,
            "workers": self.workers,
            "seed": self.seed,
            "updates": self.n_updates,
            "seconds": self.duration,
            "updates_per_s": self.throughput,
            "cores": self.cores,
            "failed_publishes": self.failed_publishes,
            "dropped": self.dropped,
            "preemptions": self.preemptions,
            "lock_contended": self.lock_contended,
            "wall_seconds": self.wall_seconds,
        }


class Columns:
    """A :class:`RowSink` that keeps every row in memory; :meth:`arrays` joins them."""

    def __init__(self) -> None:
        self._parts: list[dict[str, np.ndarray]] = []

    def add(self, columns: Mapping[str, np.ndarray]) -> None:
        """Keep the rows."""
        self._parts = [*self._parts, dict(columns)]

    def arrays(self) -> dict[str, np.ndarray]:
        """Every row kept, one array per column."""
        if not self._parts:
            return {c: np.zeros(0, DTYPES[c]) for c in COLUMNS}
        if len(self._parts) == 1:
            return dict(self._parts[0])
        return {c: np.concatenate([p[c] for p in self._parts]) for c in COLUMNS}


def worker_rngs(
    seed: int, workers: int
) -> list[tuple[np.random.Generator, np.random.Generator, np.random.Generator]]:
    """Independent ``(compute, read, update)`` generators per worker, spawned from ``seed``.

    Worker ``w``'s streams come from ``SeedSequence(seed).spawn(workers)[w].spawn(3)``,
    so they do not depend on how many other streams are drawn from.
    """
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed {seed!r} must be an integer >= 0")
    out = []
    for ss in np.random.SeedSequence(int(seed)).spawn(int(workers)):
        c, r, u = (np.random.Generator(np.random.PCG64(s)) for s in ss.spawn(3))
        out.append((c, r, u))
    return out


def net_rngs(seed: int, workers: int) -> list[np.random.Generator]:
    """Per worker, the generator of the added delays of its messages (topology ``ps``):
    streams of ``seed`` apart from :func:`worker_rngs`' (``SeedSequence((seed, NET_STREAM))``
    spawned per worker), so a network delay changes no compute, read or update time."""
    return [np.random.Generator(np.random.PCG64(s))
            for s in np.random.SeedSequence((int(seed), NET_STREAM)).spawn(int(workers))]


def simulate_timing(
    algorithm: str,
    workers: int,
    *,
    cores: int,
    compute: TimingSpec,
    read: TimingSpec | None = None,
    update: TimingSpec | None = None,
    updates: int | None = None,
    seconds: float | None = None,
    seed: int = 0,
    persistence: int | float | None = None,
    time_slice: float | str = DEFAULT_TIME_SLICE,
    lock_handover: float | str = 0.0,
    cas_cost: float | str = 0.0,
    n_params: int = 0,
    slow: Mapping[int, float] | None = None,
    spread: float = 1.0,
    active_schedule: Sequence[tuple[float, int]] | None = None,
    controller: Control | None = None,
    hook: ReplayHook | None = None,
    monitor: Callable[[Simulation], None] | None = None,
    monitor_every: int = 1024,
    rows: RowSink | None = None,
    fast: bool = True,
    network: Network | None = None,
) -> SimResult:
    """Simulate ``workers`` workers running ``algorithm`` on ``cores`` cores, timing only.

    ``compute``/``read``/``update`` are timing specs (``'exp:2ms'``, ``'det:0'``,
    ``'gamma:2ms:0.5'``, ``'lognormal:2ms:0.5'``, a number of seconds, a
    :class:`~stalesgd.sim.timing.Timing`, or one per worker).  ``read``/``update``
    default to a per-parameter cost times ``n_params``.  ``slow``/``spread`` scale
    the compute time per worker (see :func:`~stalesgd.sim.timing.worker_factors`).
    ``persistence`` bounds ``leashed`` retries (``None`` or ``inf``: unbounded).
    ``active_schedule`` is a list of ``(time, active_workers)`` changes (elastic);
    ``controller`` a :data:`Control` for custom control.  Stops after ``updates`` applied
    updates or ``seconds`` simulated seconds, whichever first, or when ``hook`` stops the
    simulation.  ``monitor(sim)`` is called every ``monitor_every`` applied updates
    (progress).  The rows go to ``rows`` chunk by chunk (default: kept in memory and
    returned as columns).  Ctrl-C ends the run early with ``interrupted = True`` and the
    rows logged so far.  ``fast=False`` runs the SimPy processes even where the compiled
    loop applies (:meth:`Simulation.run`).  ``network``: the workers talk to parameter
    servers over it (topology ``ps``, :mod:`~stalesgd.sim.psmodel`) instead of sharing θ;
    its added message delays are drawn from streams of ``seed`` of their own.
    """
    if algorithm not in algorithm_names():
        raise ValueError(f"algorithm {algorithm!r} is not known; allowed: "
                         f"{', '.join(algorithm_names())}")
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        raise ValueError(f"workers {workers!r} must be an integer >= 1")
    m = int(workers)
    if isinstance(cores, bool) or not isinstance(cores, int | np.integer) or cores < 1:
        raise ValueError(f"cores {cores!r} must be an integer >= 1")
    if isinstance(n_params, bool) or not isinstance(n_params, int | np.integer) or n_params < 0:
        raise ValueError(f"n_params {n_params!r} must be an integer >= 0")
    if persistence is not None and math.isinf(persistence):
        persistence = None
    if persistence is not None and (persistence < 0 or int(persistence) != persistence):
        raise ValueError(f"persistence {persistence!r} must be an integer >= 0, None or inf")

    factors = worker_factors(m, slow=slow, spread=spread)
    comp = [
        t if f == 1.0 else Scaled(t, float(f))
        for t, f in zip(as_timings(compute, m), factors, strict=True)
    ]
    rd = as_timings(per_param(READ_COST_PER_PARAM, n_params) if read is None else read, m)
    up = as_timings(per_param(UPDATE_COST_PER_PARAM, n_params) if update is None else update, m)

    sim = Simulation(
        algorithm,
        m,
        cores=int(cores),
        compute=comp,
        read=rd,
        update=up,
        rngs=worker_rngs(seed, m),
        persistence=None if persistence is None else int(persistence),
        time_slice=parse_duration(time_slice),
        lock_handover=parse_duration(lock_handover),
        cas_cost=parse_duration(cas_cost),
        hook=hook,
        network=network,
        net_rngs=None if network is None else net_rngs(seed, m),
    )
    starters = [] if not active_schedule else [_schedule(active_schedule)]
    if controller is not None:
        starters.append(controller)
    sink = Columns() if rows is None else rows

    t_wall = time.perf_counter()
    sim.run(updates, seconds, sink, monitor=monitor,
            monitor_every=monitor_every, starters=starters, fast=fast)
    wall = time.perf_counter() - t_wall

    buffer = sim.rows
    return SimResult(
        algorithm=algorithm,
        workers=m,
        cores=int(cores),
        seed=int(seed),
        updates=sink.arrays() if rows is None else sink,
        n_updates=buffer.applied,
        duration=sim.duration,
        failed_publishes=buffer.failed,
        dropped=buffer.dropped,
        preemptions=sim.preemptions,
        lock_contended=sim.lock_contended,
        wall_seconds=wall,
        interrupted=sim.interrupted,
        active_changes=list(sim.active_changes),
        config={
            "compute": repr(compute),
            "read": repr(read),
            "update": repr(update),
            "updates": updates,
            "seconds": seconds,
            "persistence": persistence,
            "time_slice": parse_duration(time_slice),
            "lock_handover": parse_duration(lock_handover),
            "cas_cost": parse_duration(cas_cost),
            "n_params": int(n_params),
            "speed_factors": factors.tolist(),
            "event_loop": sim.path,
            "topology": "shared" if network is None else "ps",
        },
    )


def _schedule(steps: Sequence[tuple[float, int]]) -> Control:
    """A control that sets the active workers at the given simulated times."""
    steps = sorted((float(t), int(n)) for t, n in steps)
    if steps[0][0] < 0:
        raise ValueError(f"active_schedule times must be >= 0, got {steps[0][0]!r}")

    def start(sim: Simulation) -> None:
        pending = iter(steps)

        def next_step() -> None:
            for t, n in pending:
                if t > sim.now:
                    sim.call_after(t - sim.now, lambda n=n: (sim.set_active(n), next_step()))
                    return
                sim.set_active(n)

        next_step()

    return start


def elastic_control(ctl: Controller, loss: Callable[[Simulation], float] | None = None
                    ) -> Control:
    """A :data:`Control` (for ``simulate_timing(controller=...)``) that lets the elastic
    controller ``ctl`` (:mod:`stalesgd.elastic`) set the active workers in simulated time.

    At t = 0 the controller starts with ``loss(sim)`` (an evaluation of the replayed θ, i.e.
    a consistent snapshot; None when ``loss`` is None); after that it is called exactly when
    its phase ends: after ``ctl.next_k`` applied updates (a :meth:`Simulation.watch`, fired
    right after that update is logged, so the evaluation sees θ_k) or at simulated time
    ``ctl.next_t``.  :meth:`Simulation.set_active` is called only when m changes, so
    ``sim.active_changes`` holds the m(t) steps and ``ctl.trace`` every decision.
    """
    if ctl.needs_loss and loss is None:
        raise ValueError(f"the {ctl.name} controller needs a loss (numeric replay), not "
                         "timing-only mode")

    def start(sim: Simulation) -> None:
        generation = [0]

        def measure() -> float | None:
            return None if loss is None else float(loss(sim))

        def arm() -> None:
            generation[0] += 1
            g = generation[0]
            sim.watch(ctl.next_k, lambda _sim: fire(g))
            if math.isfinite(ctl.next_t):
                sim.call_after(max(0.0, ctl.next_t - sim.now), lambda: fire(g))

        def fire(g: int) -> None:
            if g != generation[0] or sim.stopped:
                return  # superseded by a later decision, or the run is over
            t, k = sim.now, sim.v
            if ctl.due(t, k):
                m = ctl.observe(t, k, measure())
                if m != sim.active:
                    sim.set_active(m)
            arm()

        m = ctl.start(sim.now, sim.v, measure())
        if m != sim.active:
            sim.set_active(m)
        arm()

    return start


def check_controller_replay(name: str, timing_only: bool) -> None:
    """Refuse (:class:`~stalesgd.experiment.ExperimentError`) a controller that measures the
    loss in a timing-only run, where no loss exists."""
    from stalesgd.elastic import CONTROLLERS
    from stalesgd.experiment import ExperimentError

    cls = CONTROLLERS.get(name)
    if timing_only and cls is not None and cls.needs_loss:
        raise ExperimentError("controller.name", name,
                              "static or schedule with sim.timing_only = true (the "
                              f"{name} controller measures the loss, which needs numeric "
                              "replay)")


def attach_controller(spec: Any, workers: int, hook: Any | None
                      ) -> tuple[Controller, Control | None]:
    """The elastic controller of a run spec (``spec.controller``) and, unless it is the plain
    ``static`` baseline (all workers, nothing to do), its :data:`Control`.

    Its progress signal is the loss of the replayed θ evaluated as the run's ``[eval]``
    evaluations are (same split and rows).  Controllers that need a loss cannot run in
    timing-only mode (an :class:`~stalesgd.experiment.ExperimentError`)."""
    from stalesgd.elastic import make_controller

    c = spec.controller
    ctl = make_controller(c.name, workers, **c.options)
    if c.name == "static" and ctl.level == workers:
        ctl.start(0.0, 0, None)  # the one-row trace: m = M from the start
        return ctl, None
    check_controller_replay(c.name, timing_only=hook is None)

    def loss(_sim: Simulation) -> float:
        with np.errstate(all="ignore"):
            return float(hook.problem.evaluate(hook.theta, hook.split, hook.max_rows)[0])

    return ctl, elastic_control(ctl, None if hook is None else loss)


def elastic_summary(ctl: Controller, res: SimResult) -> dict[str, Any]:
    """Run-summary values of elastic control: the controller, the CPU-seconds the active
    workers used (∫ min(m(t), cores) dt: a parked worker uses no core, an active one a whole
    core, as a real worker that computes or spins does) and the time-averaged m."""
    from stalesgd.elastic import cpu_seconds_from_trace

    changes = list(res.active_changes)
    duration = res.duration
    busy = cpu_seconds_from_trace(changes, duration)
    return {
        "controller": ctl.name,
        "cpu_seconds": cpu_seconds_from_trace(changes, duration, res.cores),
        "mean_active": busy / duration if duration > 0 else float(res.workers),
        "controller_changes": len(changes) - 1,
    }
