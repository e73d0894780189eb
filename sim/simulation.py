"""One simulated run: the machine, the shared state, the stop rules and the event loop.

:class:`Simulation` holds what the workers share (the version counter ``v``, the active
workers, the ``sync`` barrier), its stop rules and controls, and runs the workers in one of
two event loops with the same interface (clock, timers, waking parked workers, stopping):

* the SimPy processes of :mod:`~stalesgd.sim.model`, the definition of each algorithm
  (:class:`SimPyLoop`); hooks that need a Python call per read or apply run here;
* the compiled loop of :mod:`~stalesgd.sim.fastloop`, which runs the same model without
  SimPy and gives the same records bit for bit, a few dozen times faster.

Update rows go to a :class:`~stalesgd.sim.buffers.RowBuffer`, chunk by chunk, so memory does
not grow with the length of a run.  A :class:`ReplayHook` sees every read and apply
(numeric replay); controllers act through :meth:`Simulation.set_active`,
:meth:`Simulation.watch` and :meth:`Simulation.call_after`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np
import simpy

from stalesgd.algorithms import algorithm_names, asynchronous_names, get_algorithm

from .buffers import RowBuffer, RowSink
from .fastcore import stall_limit
from .fastloop import CompiledLoop, SimulationStalled, compiled
from .machine import Lock, Machine
from .network import PS, Network
from .timing import Sampler, Timing

__all__ = ["ReplayHook", "SimPyLoop", "Simulation", "SimulationStalled"]


class ReplayHook:
    """Callbacks for numeric replay; the base class does nothing (timing-only mode).

    ``read`` is called when a worker takes its snapshot at version ``version``;
    ``apply`` when its gradient (computed at ``t0``) is applied on top of version
    ``t1`` and returns the step size used (NaN in timing-only mode); ``apply_mean``
    is the ``sync`` round update of the given workers' gradients; ``drop`` when a
    gradient is discarded.  A hook with these methods runs on the SimPy processes; the
    compiled loop records a plain numeric replay's reads and applies itself
    (:meth:`inline`).
    """

    def read(self, worker: int, version: int) -> None:
        """Worker ``worker`` reads θ at ``version``."""

    def apply(self, worker: int, t0: int, t1: int) -> float:
        """Apply ``worker``'s gradient (read at ``t0``) onto version ``t1``; return η."""
        return math.nan

    def apply_mean(self, workers: Sequence[int], version: int) -> float:
        """Apply the mean gradient of ``workers`` (all read at ``version``); return η."""
        return math.nan

    def drop(self, worker: int, t0: int) -> None:
        """``worker`` discards its gradient computed at ``t0``."""

    def bind(self, sim: Simulation) -> None:
        """Called once when the run starts (t = 0, before any worker's first step): the hook
        may read the clock (``sim.now``), schedule callbacks (:meth:`Simulation.call_after`)
        and call :meth:`Simulation.stop`."""

    def flush(self) -> None:
        """Called before update rows leave the simulation and when the run ends: a hook that
        defers work (batched numerics) finishes it here and may still call
        :meth:`Simulation.stop_retroactively`."""

    def inline(self) -> object | None:
        """This hook if the compiled loop can record its reads and applies itself (as
        :meth:`~stalesgd.sim.replay.NumericReplay.inline`), or None: its methods must be
        called, so the run uses the SimPy processes."""
        return None


class SimPyLoop:
    """The SimPy event loop: one process per worker (:mod:`~stalesgd.sim.model`)."""

    name = "simpy"

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.env = sim.env
        self._stop = sim.env.event()

    @property
    def now(self) -> float:
        """The simulated time."""
        return float(self.env.now)

    def call_after(self, delay: float, callback: Callable[[], None] | None) -> None:
        """Call ``callback()`` ``delay`` simulated seconds from now (None: end the run)."""
        run = self.request_stop if callback is None else callback
        self.env.timeout(delay).callbacks.append(lambda _event: run())

    def set_active(self, n: int) -> None:
        """Wake the parked workers among ``0..n-1``, in worker order."""
        parked = self.sim.parked
        for w in sorted(parked):
            if w < n:
                parked.pop(w).succeed()

    def request_stop(self) -> None:
        """End the run at the current instant (events already due at it still happen)."""
        if not self._stop.triggered:
            self._stop.succeed()

    def start(self, starters: Sequence[Callable[[], None]]) -> None:
        """Start one process per worker and, right after their first steps, ``starters``."""
        sim = self.sim
        process = get_algorithm(sim.algorithm).implementation(
            "sim" if sim.ps is None else "sim-ps")
        for w in range(sim.workers):
            self.env.process(process(sim, w))
        if starters:
            self.env.process(self._start(starters))

    @staticmethod
    def _start(starters: Sequence[Callable[[], None]]) -> Generator[simpy.Event, None, None]:
        for fn in starters:
            fn()
        yield from ()

    def run(self) -> None:
        """Run until the stop event, or until nothing is left to happen."""
        try:
            self.env.run(until=self._stop)
        except RuntimeError as exc:  # every worker parked and nothing left to happen
            if "No scheduled events left" not in str(exc):
                raise

    @property
    def preemptions(self) -> int:
        """Workers descheduled at a scheduler tick."""
        return self.sim.machine.preemptions

    @property
    def lock_contended(self) -> int:
        """Lock acquisitions that had to wait."""
        return self.sim.lock.contended


class Simulation:
    """One simulated run: the machine, the shared state and the workers.

    ``compute``, ``read`` and ``update`` are per-worker timing models; ``rngs`` the
    per-worker ``(compute, read, update)`` generators.  With ``network``, the workers talk
    to parameter servers (:mod:`~stalesgd.sim.psmodel`; ``net_rngs``: each worker's
    generator of added message delays) instead of sharing θ.  Call :meth:`run` once.
    """

    def __init__(
        self,
        algorithm: str,
        workers: int,
        *,
        cores: int,
        compute: Sequence[Timing],
        read: Sequence[Timing],
        update: Sequence[Timing],
        rngs: Sequence[tuple[np.random.Generator, np.random.Generator, np.random.Generator]],
        persistence: int | None = None,
        time_slice: float = 4e-3,
        lock_handover: float = 0.0,
        cas_cost: float = 0.0,
        hook: ReplayHook | None = None,
        network: Network | None = None,
        net_rngs: Sequence[np.random.Generator] | None = None,
    ) -> None:
        if algorithm not in algorithm_names():
            raise ValueError(f"algorithm {algorithm!r} is not known; allowed: "
                             f"{', '.join(algorithm_names())}")
        if int(workers) < 1:
            raise ValueError(f"workers {workers!r} must be >= 1")
        if algorithm == "seq" and workers != 1:
            raise ValueError(f"algorithm 'seq' runs one worker, got workers={workers}")
        if persistence is not None and int(persistence) < 0:
            raise ValueError(f"persistence {persistence!r} must be >= 0 or None (unbounded)")
        for name, val in (("lock_handover", lock_handover), ("cas_cost", cas_cost)):
            if not (math.isfinite(val) and val >= 0):
                raise ValueError(f"{name} {val!r} must be a finite number of seconds >= 0")
        m = int(workers)
        for name, seq in (("compute", compute), ("read", read), ("update", update), ("rngs", rngs)):
            if len(seq) != m:
                raise ValueError(f"{name} has {len(seq)} entries, expected one per worker ({m})")
        self.algorithm = algorithm
        self.workers = m
        self.env = simpy.Environment()
        self.machine = Machine(self.env, cores, time_slice, m)
        self.oversubscribed = m > self.machine.cores
        self.lock = Lock(self.env, float(lock_handover))
        self.persistence = None if persistence is None else int(persistence)
        self.lock_handover = float(lock_handover)
        self.cas_cost = float(cas_cost)
        self.hook = hook
        #: the servers and network of topology ``ps`` (None: shared memory)
        self.ps = None if network is None else PS(self.env, network, m, net_rngs)
        self.samplers = [
            (Sampler(compute[w], rngs[w][0]), Sampler(read[w], rngs[w][1]),
             Sampler(update[w], rngs[w][2]))
            for w in range(m)
        ]
        """Per worker, the (compute, read, update) duration samplers."""
        # shared state
        self.v = 0
        self.active = m
        self.active_changes: list[tuple[float, int]] = [(0.0, m)]
        #: SimPy: the parked workers' wake-up events
        self.parked: dict[int, simpy.Event] = {}
        # sync barrier: the workers arrived in this round, its event and start time
        self.arrived: list[int] = []
        self.round_event = self.env.event()
        self.round_start = 0.0
        #: the row buffer of the run (made by :meth:`run`)
        self.rows: RowBuffer | None = None
        self._loop: SimPyLoop | CompiledLoop | None = None
        self._target: int | None = None
        self._stopped = False
        self._stopped_at: float | None = None
        self._stall_t = -1.0
        self._stall_n = 0
        self._stall_max = stall_limit()
        #: the version at which :meth:`check_due` must run next (stop rules, progress, watch)
        self.next_check: float = math.inf
        self._monitor: Callable[[Simulation], None] | None = None
        self._monitor_every = 1
        self._next_tick: float = math.inf
        # a one-shot callback at a number of applied updates (elastic controllers)
        self._watch_k: float = math.inf
        self._watch: Callable[[Simulation], None] | None = None
        #: True when Ctrl-C ended :meth:`run` (the rows logged so far are kept)
        self.interrupted = False
        self.duration = 0.0
        #: which event loop ran: "compiled" or "simpy"
        self.path = ""
        self.preemptions = 0
        self.lock_contended = 0

    # ------------------------------------------------------------------ the clock, control
    @property
    def now(self) -> float:
        """The simulated time (seconds)."""
        return 0.0 if self._loop is None else self._loop.now

    @property
    def rows_logged(self) -> int:
        """Update rows logged so far."""
        return 0 if self.rows is None else self.rows.total

    def call_after(self, delay: float, callback: Callable[[], None]) -> None:
        """Call ``callback()`` ``delay`` simulated seconds from now (timed evaluations,
        controllers).  Only while the simulation runs (from :meth:`ReplayHook.bind` on)."""
        if not (delay >= 0.0 and math.isfinite(delay)):
            raise ValueError(f"delay {delay!r} must be a finite number of seconds >= 0")
        self._loop.call_after(float(delay), callback)

    def set_active(self, n: int) -> None:
        """Run only workers ``0..n-1`` from now on (elastic parallelism).

        Workers with index ``>= n`` park at their next loop boundary; parked workers
        with index ``< n`` resume at once.  Only for the asynchronous algorithms.
        """
        if self.algorithm not in asynchronous_names():
            raise ValueError(
                f"set_active needs an asynchronous algorithm ({', '.join(asynchronous_names())}), "
                f"not {self.algorithm!r}"
            )
        n = int(n)
        if not 0 <= n <= self.workers:
            raise ValueError(f"active workers {n!r} must be in 0..{self.workers}")
        self.active = n
        self.active_changes.append((self.now, n))
        self._loop.set_active(n)

    def watch(self, k: float, callback: Callable[[Simulation], None]) -> None:
        """Call ``callback(sim)`` once, right after the update that brings ``v`` to ``k`` is
        applied and logged (a later call replaces an earlier watch; ``inf`` clears it).

        This is how a controller acts after a number of updates without polling; the
        callback may call :meth:`set_active` and :meth:`watch` again."""
        self._watch_k = float(k)
        self._watch = callback if math.isfinite(self._watch_k) else None
        self.next_check = min(self.next_check, self._watch_k)

    def work(self, w: int, d: float) -> Generator[simpy.Event, None, None]:
        """(SimPy) Worker ``w`` computes ``d`` seconds: on the machine every process shares
        (the parameter-server topology's ``Network.cores``), else through the scheduler when
        workers outnumber cores, else as a plain timeout."""
        if self.ps is not None and self.ps.cpu is not None:
            yield from self.ps.cpu.run(d)
        elif self.oversubscribed:
            yield from self.machine.run(w, d)
        elif d > 0.0:
            yield self.env.timeout(d)

    def block(self, w: int, event: simpy.Event) -> Generator[simpy.Event, None, Any]:
        """(SimPy) Worker ``w`` waits for ``event`` without a core (when workers outnumber
        cores it gives its core up, and queues for one when woken); returns its value."""
        if self.oversubscribed:
            self.machine.release(w)
        value = yield event
        if self.oversubscribed:
            yield from self.machine.acquire(w)
        return value

    def park(self, w: int) -> Generator[simpy.Event, None, None]:
        """(SimPy) Worker ``w`` waits, without a core, until :meth:`set_active` includes it."""
        self.parked[w] = ev = self.env.event()
        yield from self.block(w, ev)

    def applied(self) -> None:
        """(SimPy) Bookkeeping after ``v`` was incremented and the row logged: the clock must
        move, and :meth:`check_due` runs when ``v`` reaches :attr:`next_check`."""
        now = self.env.now
        if now == self._stall_t:
            self._stall_n += 1
            if self._stall_n > self._stall_max:
                raise SimulationStalled.at(now, self._stall_max)
        else:
            self._stall_t = now
            self._stall_n = 0
        if self.v >= self.next_check:
            self.check_due()

    def check_due(self) -> None:
        """Stop at the target number of updates, call the progress monitor every
        ``monitor_every`` updates, fire a due :meth:`watch`; set :attr:`next_check`."""
        v = self.v
        target = math.inf if self._target is None else self._target
        if v >= target:
            self.stop()
        if self._monitor is not None and v >= self._next_tick:
            self._monitor(self)
            self._next_tick = v + self._monitor_every
        if v >= self._watch_k:
            callback, self._watch, self._watch_k = self._watch, None, math.inf
            if callback is not None and not self.stopped:
                callback(self)
        self.next_check = target if v < target else math.inf
        if self._monitor is not None:
            self.next_check = min(self.next_check, self._next_tick)
        self.next_check = min(self.next_check, self._watch_k)

    def stop(self, *, after_current: bool = False) -> None:
        """End the run at the current simulated time; later rows are not part of the run.

        ``after_current=True`` keeps the row being logged now: use it only from inside
        :meth:`ReplayHook.apply`/:meth:`ReplayHook.apply_mean`, whose row the model logs
        right after the hook returns.  Calling it again does nothing.
        """
        if self._stopped:
            return
        self._stopped = True
        self.rows.cut(self.rows.total + (1 if after_current else 0))
        self._loop.request_stop()

    def stop_retroactively(self, rows: int, t: float) -> None:
        """End the run as of an earlier instant ``t`` at which ``rows`` rows were logged (for
        hooks that find out late, e.g. a divergence in batched numerics).  Rows from there on
        are not part of the run and the duration is ``t``; an earlier stop is kept."""
        limit = self.rows.limit
        if limit is not None and limit <= rows:
            return
        self.rows.cut(int(rows))
        self._stopped_at = float(t)
        self._stopped = True
        self._loop.request_stop()

    @property
    def stopped(self) -> bool:
        """True once a stop rule (or :meth:`stop`) ended the run; numerics must then freeze."""
        return self._stopped

    # ------------------------------------------------------------------ running
    def run(
        self,
        updates: int | None,
        seconds: float | None,
        rows: RowSink,
        *,
        monitor: Callable[[Simulation], None] | None = None,
        monitor_every: int = 1024,
        starters: Sequence[Callable[[Simulation], None]] = (),
        fast: bool = True,
    ) -> None:
        """Simulate until ``updates`` updates were applied or ``seconds`` simulated seconds passed.

        Update rows go to ``rows`` a chunk at a time.  ``monitor(sim)`` is called every
        ``monitor_every`` applied updates (progress bars); each of ``starters(sim)`` once at
        t = 0, right after every worker's first step (controllers).  At least one stop rule
        is required.  Ctrl-C ends the run cleanly: :attr:`interrupted` is set and the rows
        logged so far are kept.

        The compiled loop runs whenever the algorithm has a compiled step and the hook, if
        any, can be recorded inline (:meth:`ReplayHook.inline`); ``fast=False`` forces the
        SimPy processes.  :attr:`path` tells which one ran (``"compiled"``/``"simpy"``).
        """
        if self.rows is not None:
            raise RuntimeError("a Simulation can run only once; build a new one")
        if updates is None and seconds is None:
            raise ValueError("give a stop rule: updates=N and/or seconds=T")
        if updates is not None and int(updates) < 1:
            raise ValueError(f"updates {updates!r} must be >= 1")
        if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"seconds {seconds!r} must be a finite number > 0")
        if int(monitor_every) < 1:
            raise ValueError(f"monitor_every {monitor_every!r} must be >= 1")
        hook = self.hook
        self.rows = RowBuffer(rows, before_handover=None if hook is None else hook.flush)
        inline = None if hook is None else hook.inline()
        if (fast and self.ps is None and compiled(self.algorithm)
                and (hook is None or inline is not None)):
            self._loop = CompiledLoop(self, inline)
        else:
            self._loop = SimPyLoop(self)
        self.path = self._loop.name
        self._target = None if updates is None else int(updates)
        self._monitor = monitor
        self._monitor_every = int(monitor_every)
        self._next_tick = self._monitor_every if monitor is not None else math.inf
        self.next_check = min(math.inf if self._target is None else self._target,
                              self._next_tick, self._watch_k)
        if seconds is not None:
            self.call_after(float(seconds), self.stop)
        if hook is not None:
            hook.bind(self)
        self._loop.start([lambda fn=fn: fn(self) for fn in starters])
        try:
            self._loop.run()
        except KeyboardInterrupt:
            self.interrupted = True
            if not self._stopped:
                self.rows.cut(self.rows.total)
        self.duration = self.now
        self._finish()

    def _finish(self) -> None:
        """Let the hook finish deferred work, hand the last rows over, take the counters."""
        if self.hook is not None:
            self.hook.flush()
        if self._stopped_at is not None:
            self.duration = min(self.duration, self._stopped_at)
        self.rows.handover()
        self.preemptions = self._loop.preemptions
        self.lock_contended = self._loop.lock_contended
