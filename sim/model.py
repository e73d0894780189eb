"""Workers as SimPy processes running the algorithms of DESIGN §4 in simulated time.

State is the version counter ``v`` (number of updates applied).  A worker reads
at version ``t0``, computes, and applies at ``t1``; the record holds
``tau = t1 - t0`` for every update, and dropped gradients (``leashed``) as rows
with ``k = -1``.  Numerics are not simulated here: a :class:`ReplayHook` is
called at every read and apply with ``(worker, version)`` so that numeric replay
can evaluate the real gradient kernels at the θ each simulated read saw.

Timing per algorithm (``r`` read/copy, ``c`` compute, ``u`` update/apply,
``h`` lock hand-over, ``a`` atomic/compare-and-swap cost):

* ``seq``: one worker; ``t0 = v`` at the read, ``r + c + u``, then ``v += 1``.
* ``sync``: all active workers read the same θ (``r + c`` each), wait at a
  barrier; the last to arrive applies the mean gradient (``u``), one version per
  round, ``tau = 0``.
* ``lock``: under the lock ``t0 = v`` and copy (``r``); compute outside (``c``);
  under the lock apply (``u``), ``tau = v - t0``, ``v += 1``.  A released lock
  wakes its longest waiter, who retries ``h`` later; whoever asks first gets it
  (see :class:`~stalesgd.sim.machine.Lock`).
* ``hogwild``: ``t0 = v`` at the read start, ``r + c + u`` with no waiting, then an
  atomic fetch-add (``a``) gives ``t1`` and increments ``v``.
* ``leashed``: take the latest published version ``t0`` (``a``), compute on it
  (``c``); then per attempt copy the latest (``t1``, ``r``), apply (``u``) and
  publish by compare-and-swap (``a``), which fails if another publish landed since
  the copy; retry up to ``persistence`` times, then drop (``persistence=0`` drops
  at the first failure, ``None`` never drops).

Event loops: :meth:`Simulation.run` uses the heap-based loop of
:mod:`stalesgd.sim.fastpath` when every worker has its own core and no controller,
timed SimPy process or lock hand-over latency is involved (the common case: a few
times faster, the same records); otherwise the SimPy processes below run.  A hook that
starts SimPy processes must do so in :meth:`ReplayHook.bind` (they are then detected and
the SimPy loop is used), not later during the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence

import numpy as np
import simpy

from stalesgd.algorithms import algorithm_names, asynchronous_names, get_algorithm

from .fastpath import fast_path_blocker, run_fast
from .machine import Lock, Machine
from .timing import Sampler, Timing

__all__ = ["ReplayHook", "Simulation", "UpdateLog", "hogwild_process", "leashed_process",
           "lock_process", "sync_process"]


class ReplayHook:
    """Callbacks for numeric replay; the base class does nothing (timing-only mode).

    ``read`` is called when a worker takes its snapshot at version ``version``;
    ``apply`` when its gradient (computed at ``t0``) is applied on top of version
    ``t1`` and returns the step size used (NaN in timing-only mode); ``apply_mean``
    is the ``sync`` round update of the given workers' gradients; ``drop`` when a
    gradient is discarded.
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
        """Called once by :class:`Simulation` before it runs, so the hook can read the
        simulated clock (``sim.env.now``), start SimPy processes and call
        :meth:`Simulation.stop`."""

    def flush(self) -> None:
        """Called once when the run ends, before its results are read: a hook that defers
        work (batched numerics) finishes it here and may still call
        :meth:`Simulation.stop_retroactively`."""


class UpdateLog:
    """Preallocated, growable per-update columns (the run-record ``updates`` table)."""

    __slots__ = ("n", "k", "worker", "t_read", "t_apply", "tau", "eta", "attempts", "dropped")

    def __init__(self, capacity: int) -> None:
        cap = max(int(capacity), 16)
        self.n = 0
        self.k = np.empty(cap, np.int64)
        self.worker = np.empty(cap, np.int32)
        self.t_read = np.empty(cap, np.float64)
        self.t_apply = np.empty(cap, np.float64)
        self.tau = np.empty(cap, np.int64)
        self.eta = np.empty(cap, np.float64)
        self.attempts = np.empty(cap, np.int32)
        self.dropped = np.empty(cap, np.bool_)

    _COLS = ("k", "worker", "t_read", "t_apply", "tau", "eta", "attempts", "dropped")
    #: values of the columns a fill may leave out (one attempt, not dropped)
    _DEFAULTS = {"attempts": 1, "dropped": False}

    def add(
        self,
        k: int,
        worker: int,
        t_read: float,
        t_apply: float,
        tau: int,
        eta: float,
        attempts: int,
        dropped: bool,
    ) -> None:
        """Append one row, doubling the arrays when full."""
        i = self.n
        if i == self.k.shape[0]:
            self._grow()
        self.k[i] = k
        self.worker[i] = worker
        self.t_read[i] = t_read
        self.t_apply[i] = t_apply
        self.tau[i] = tau
        self.eta[i] = eta
        self.attempts[i] = attempts
        self.dropped[i] = dropped
        self.n = i + 1

    def _grow(self) -> None:
        for name in self._COLS:
            old = getattr(self, name)
            new = np.empty(2 * old.shape[0], old.dtype)
            new[: old.shape[0]] = old
            setattr(self, name, new)

    def fill(self, rows: object) -> None:
        """Replace the contents by ``rows`` (an object with one sequence per column, as the
        fast path collects them) and set :attr:`n` to their length."""
        n = len(rows.k)
        if n > self.k.shape[0]:
            for name in self._COLS:
                setattr(self, name, np.empty(n, getattr(self, name).dtype))
        for name in self._COLS:
            vals = getattr(rows, name)
            if len(vals) == n:
                getattr(self, name)[:n] = vals
            elif len(vals) == 0 and name in self._DEFAULTS:
                getattr(self, name)[:n] = self._DEFAULTS[name]
            else:
                raise ValueError(f"column {name!r} has {len(vals)} rows, expected {n}")
        self.n = n

    def columns(self, n: int | None = None) -> dict[str, np.ndarray]:
        """The first ``n`` rows (default all) as a dict of contiguous arrays (copies)."""
        n = self.n if n is None else n
        return {name: getattr(self, name)[:n].copy() for name in self._COLS}


class Simulation:
    """One simulated run: the machine, the shared state and one SimPy process per worker.

    ``compute``, ``read`` and ``update`` are per-worker timing models; ``rngs`` the
    per-worker ``(compute, read, update)`` generators.  Call :meth:`run` once.
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
        capacity: int = 1 << 16,
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
        self.log = UpdateLog(capacity)
        self.samplers = [
            (Sampler(compute[w], rngs[w][0]), Sampler(read[w], rngs[w][1]),
             Sampler(update[w], rngs[w][2]))
            for w in range(m)
        ]
        """Per worker, the (compute, read, update) duration samplers."""
        # shared state
        self.v = 0
        self.failed_publishes = 0
        self.dropped = 0
        self.active = m
        self.active_changes: list[tuple[float, int]] = [(0.0, m)]
        self._parked: dict[int, simpy.Event] = {}
        # sync barrier: the workers arrived in this round, its event and start time
        self.arrived: list[int] = []
        self.round_event = self.env.event()
        self.round_start = 0.0
        # stopping
        self._stop_ev = self.env.event()
        self._target: int | None = None
        self._rows_at_stop: int | None = None
        self._ran = False
        # per-update bookkeeping runs only when v reaches _next_check (one comparison per update)
        self._next_check: float = math.inf
        self._monitor: Callable[[Simulation], None] | None = None
        self._monitor_every = 1
        self._next_tick: float = math.inf
        # a one-shot callback at a number of applied updates (elastic controllers)
        self._watch_k: float = math.inf
        self._watch: Callable[[Simulation], None] | None = None
        #: True when Ctrl-C ended :meth:`run` (the rows logged so far are kept)
        self.interrupted = False
        self.duration = 0.0
        self._stopped_at: float | None = None
        #: which event loop ran: "fast" (:mod:`stalesgd.sim.fastpath`) or "simpy"
        self.path = ""
        if hook is not None:
            hook.bind(self)

    # ------------------------------------------------------------------ control
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
        self.active_changes.append((self.env.now, n))
        for w in sorted(self._parked):
            if w < n:
                self._parked.pop(w).succeed()

    def watch(self, k: float, callback: Callable[[Simulation], None]) -> None:
        """Call ``callback(sim)`` once, right after the update that brings ``v`` to ``k`` is
        applied and logged (a later call replaces an earlier watch; ``inf`` clears it).

        This is how a controller acts after a number of updates without polling; the
        callback may call :meth:`set_active` and :meth:`watch` again."""
        self._watch_k = float(k)
        self._watch = callback if math.isfinite(self._watch_k) else None
        self._next_check = min(self._next_check, self._watch_k)

    def park(self, w: int) -> Generator[simpy.Event, None, None]:
        """Worker ``w`` waits, without a core, until :meth:`set_active` includes it again."""
        if self.oversubscribed:
            self.machine.release(w)
        ev = self.env.event()
        self._parked[w] = ev
        yield ev
        if self.oversubscribed:
            yield from self.machine.acquire(w)

    def applied(self) -> None:
        """Bookkeeping after ``v`` was incremented (and the row logged): stop at the target
        number of updates, call the progress monitor every ``monitor_every`` updates."""
        if self.v >= self._next_check:
            self._check()

    def _check(self) -> None:
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
        self._next_check = target if v < target else math.inf
        if self._monitor is not None:
            self._next_check = min(self._next_check, self._next_tick)
        self._next_check = min(self._next_check, self._watch_k)

    def stop(self, *, after_current: bool = False) -> None:
        """End the run at the current simulated time; later rows are not part of the run.

        ``after_current=True`` keeps the row being logged now: use it only from inside
        :meth:`ReplayHook.apply`/:meth:`ReplayHook.apply_mean`, whose row the model logs
        right after the hook returns.  Calling it again does nothing.
        """
        if self._rows_at_stop is not None:
            return
        self._rows_at_stop = self.log.n + (1 if after_current else 0)
        if not self._stop_ev.triggered:
            self._stop_ev.succeed()

    def stop_retroactively(self, rows: int, t: float) -> None:
        """End the run as of an earlier instant ``t`` at which ``rows`` rows were logged (for
        hooks that find out late, e.g. a divergence in batched numerics).  Rows from there on
        are not part of the run and the duration is ``t``; an earlier stop is kept."""
        if self._rows_at_stop is not None and self._rows_at_stop <= rows:
            return
        self._rows_at_stop = int(rows)
        self._stopped_at = float(t)
        if not self._stop_ev.triggered:
            self._stop_ev.succeed()

    @property
    def stopped(self) -> bool:
        """True once a stop rule (or :meth:`stop`) ended the run; numerics must then freeze."""
        return self._rows_at_stop is not None

    # ------------------------------------------------------------------ running
    def run(
        self,
        updates: int | None = None,
        seconds: float | None = None,
        controller: Callable[[Simulation], Generator[simpy.Event, None, None]] | None = None,
        monitor: Callable[[Simulation], None] | None = None,
        monitor_every: int = 1024,
        fast: bool = True,
    ) -> None:
        """Simulate until ``updates`` updates were applied or ``seconds`` simulated seconds passed.

        ``controller(sim)``, if given, is started as a SimPy process (e.g. to call
        :meth:`set_active` at chosen times).  ``monitor(sim)`` is called every
        ``monitor_every`` applied updates (progress bars).  At least one stop rule is
        required.  Ctrl-C ends the run cleanly: :attr:`interrupted` is set and the rows
        logged so far are kept.

        With ``fast`` (the default) the run uses the heap-based event loop of
        :mod:`stalesgd.sim.fastpath` whenever it applies (no oversubscription, no
        controller, see :func:`~stalesgd.sim.fastpath.fast_path_blocker`): same model, a
        fraction of the cost.  :attr:`path` tells which one ran (``"fast"``/``"simpy"``).
        """
        if self._ran:
            raise RuntimeError("a Simulation can run only once; build a new one")
        self._ran = True
        if updates is None and seconds is None:
            raise ValueError("give a stop rule: updates=N and/or seconds=T")
        if updates is not None and int(updates) < 1:
            raise ValueError(f"updates {updates!r} must be >= 1")
        if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"seconds {seconds!r} must be a finite number > 0")
        self._target = None if updates is None else int(updates)
        if int(monitor_every) < 1:
            raise ValueError(f"monitor_every {monitor_every!r} must be >= 1")
        self._monitor = monitor
        self._monitor_every = int(monitor_every)
        self._next_tick = self._monitor_every if monitor is not None else math.inf
        self._next_check = min(math.inf if self._target is None else self._target,
                               self._next_tick, self._watch_k)
        env = self.env
        if fast and fast_path_blocker(self, controller) is None:
            self.path = "fast"
            try:
                run_fast(self, math.inf if seconds is None else float(seconds))
            finally:
                self._finish()
            return
        self.path = "simpy"
        process = get_algorithm(self.algorithm).implementation("sim")
        for w in range(self.workers):
            env.process(process(self, w))
        if controller is not None:
            env.process(controller(self))
        if seconds is not None:
            timer = env.timeout(float(seconds))
            timer.callbacks.append(self._time_up)
        try:
            env.run(until=self._stop_ev)
        except RuntimeError as exc:  # every worker parked and nothing left to happen
            if "No scheduled events left" not in str(exc):
                raise
        except KeyboardInterrupt:
            self.interrupted = True
            if self._rows_at_stop is None:
                self._rows_at_stop = self.log.n
        self.duration = float(env.now)
        self._finish()

    def _finish(self) -> None:
        """Let the hook finish deferred work; a retroactive stop sets the duration."""
        if self.hook is not None:
            self.hook.flush()
        if self._stopped_at is not None:
            self.duration = min(self.duration, self._stopped_at)

    def _time_up(self, _event: simpy.Event) -> None:
        self.stop()

    @property
    def rows(self) -> int:
        """Number of rows that belong to the run (rows logged after the stop are discarded)."""
        return self.log.n if self._rows_at_stop is None else self._rows_at_stop


# ---------------------------------------------------------------------------------------------
# The algorithms as SimPy processes (the registry of stalesgd.algorithms names them)
# ---------------------------------------------------------------------------------------------

def hogwild_process(sim: Simulation, w: int) -> Generator[simpy.Event, None, None]:
    env, log, hook = sim.env, sim.log, sim.hook
    comp, rd, upd = sim.samplers[w]
    mach = sim.machine if sim.oversubscribed else None
    cas = sim.cas_cost
    while True:
        if w >= sim.active:
            yield from sim.park(w)
            continue
        t_read = env.now
        t0 = sim.v
        if hook is not None:
            hook.read(w, t0)
        d = rd.next() + comp.next()
        u = upd.next()
        d += cas
        if mach is None:
            if d > 0.0:
                yield env.timeout(d)
        else:
            yield from mach.run(w, d)
        # As the real worker: the update index is claimed (fetch-add) before the
        # element-wise update, so τ counts the claims between the read and this claim,
        # not those made while this worker writes.
        t1 = sim.v
        sim.v = t1 + 1
        eta = math.nan if hook is None else hook.apply(w, t0, t1)
        log.add(t1, w, t_read, env.now + u, t1 - t0, eta, 1, False)
        sim.applied()
        if mach is None:
            if u > 0.0:
                yield env.timeout(u)
        elif u > 0.0:
            yield from mach.run(w, u)

def lock_process(sim: Simulation, w: int) -> Generator[simpy.Event, None, None]:
    env, log, hook, lock = sim.env, sim.log, sim.hook, sim.lock
    comp, rd, upd = sim.samplers[w]
    mach = sim.machine if sim.oversubscribed else None

    def release_cb(_event: simpy.Event) -> None:
        lock.release()

    while True:
        if w >= sim.active:
            yield from sim.park(w)
            continue
        # read under the lock
        ev = lock.try_acquire()
        while ev is not None:
            if mach is not None:
                mach.release(w)
            yield ev
            if mach is not None:
                yield from mach.acquire(w)
            ev = lock.retry()
        t_read = env.now
        t0 = sim.v
        if hook is not None:
            hook.read(w, t0)
        r = rd.next()
        c = comp.next()
        if mach is None:
            # the release at the end of the copy is a callback, not a process step:
            # the worker sleeps once for copy + compute (same timing, fewer events)
            if r > 0.0:
                env.timeout(r).callbacks.append(release_cb)
            else:
                lock.release()
            if r + c > 0.0:
                yield env.timeout(r + c)
        else:
            if r > 0.0:
                yield from mach.run(w, r)
            lock.release()
            # compute outside the lock
            if c > 0.0:
                yield from mach.run(w, c)
        # apply under the lock
        ev = lock.try_acquire()
        while ev is not None:
            if mach is not None:
                mach.release(w)
            yield ev
            if mach is not None:
                yield from mach.acquire(w)
            ev = lock.retry()
        t1 = sim.v
        d = upd.next()
        if d > 0.0:
            if mach is None:
                yield env.timeout(d)
            else:
                yield from mach.run(w, d)
        sim.v = t1 + 1
        eta = math.nan if hook is None else hook.apply(w, t0, t1)
        log.add(t1, w, t_read, env.now, t1 - t0, eta, 1, False)
        lock.release()
        sim.applied()

def leashed_process(sim: Simulation, w: int) -> Generator[simpy.Event, None, None]:
    env, log, hook = sim.env, sim.log, sim.hook
    comp, rd, upd = sim.samplers[w]
    mach = sim.machine if sim.oversubscribed else None
    cas = sim.cas_cost
    bound = sim.persistence
    while True:
        if w >= sim.active:
            yield from sim.park(w)
            continue
        # take a reference to the latest published θ and compute on it
        t_read = env.now
        t0 = sim.v
        if hook is not None:
            hook.read(w, t0)
        d = cas + comp.next()
        if mach is None:
            if d > 0.0:
                yield env.timeout(d)
        else:
            yield from mach.run(w, d)
        attempts = 0
        while True:
            attempts += 1
            t1 = sim.v  # copy the latest published version
            d = rd.next() + upd.next() + cas
            if d > 0.0:
                if mach is None:
                    yield env.timeout(d)
                else:
                    yield from mach.run(w, d)
            if sim.v == t1:  # compare-and-swap succeeds
                sim.v = t1 + 1
                eta = math.nan if hook is None else hook.apply(w, t0, t1)
                log.add(t1, w, t_read, env.now, t1 - t0, eta, attempts, False)
                sim.applied()
                break
            sim.failed_publishes += 1
            if bound is not None and attempts > bound:
                sim.dropped += 1
                if hook is not None:
                    hook.drop(w, t0)
                log.add(-1, w, t_read, env.now, t1 - t0, math.nan, attempts, True)
                break

def sync_process(sim: Simulation, w: int) -> Generator[simpy.Event, None, None]:
    env, log, hook = sim.env, sim.log, sim.hook
    comp, rd, upd = sim.samplers[w]
    mach = sim.machine if sim.oversubscribed else None
    while True:
        t0 = sim.v
        if hook is not None:
            hook.read(w, t0)
        d = rd.next() + comp.next()
        if mach is None:
            if d > 0.0:
                yield env.timeout(d)
        else:
            yield from mach.run(w, d)
        sim.arrived.append(w)
        if len(sim.arrived) < sim.workers:
            ev = sim.round_event
            if mach is not None:
                mach.release(w)
            yield ev
            if mach is not None:
                yield from mach.acquire(w)
            continue
        # the last worker to arrive applies the averaged update
        d = upd.next()
        if d > 0.0:
            if mach is None:
                yield env.timeout(d)
            else:
                yield from mach.run(w, d)
        k = sim.v
        sim.v = k + 1
        eta = math.nan if hook is None else hook.apply_mean(tuple(sim.arrived), k)
        log.add(k, w, sim.round_start, env.now, 0, eta, 1, False)
        sim.arrived = []
        sim.round_start = env.now
        ev, sim.round_event = sim.round_event, env.event()
        ev.succeed()
        sim.applied()
