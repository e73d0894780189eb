"""The simulated machine: c cores, each with its own run queue, and a FIFO lock.

When there are no more workers than cores every worker always runs and the
simulator bypasses this module's scheduler (work is a plain timeout).  When
workers outnumber cores, a worker needs a core to make progress.  Each core has its
own run queue, and the scheduler looks at a core at its ticks, every ``time_slice``
seconds of simulated time (Linux's timer tick; ticks fall on the multiples of
``time_slice``): at a tick, a running worker that others wait for on its core goes to
the back of that core's queue.  A worker that got its core between two ticks (woken
from a lock wait, or handed the core of one that blocked) keeps it only until the next
tick if others wait there; a tick that falls exactly where a worker's run ends still
counts at its next run.  A descheduled worker returns after the ticks of those queued
before it on its core, unless an idle core takes it earlier, which is what makes
measured staleness heavy-tailed on an oversubscribed machine (DESIGN §6).

Both classes are small queues on top of plain SimPy events rather than
``simpy.Resource``: the run queues are first-come-first-served like a
``Resource``; the lock wakes waiters in order but lets a thread that asks while
the lock is free take it (as real mutexes do).  Skipping the request/release
event objects keeps the per-update cost of the simulation low.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Generator

import simpy

__all__ = ["Lock", "Machine", "tick_index"]



class Machine:
    """``cores`` cores shared by ``workers`` workers, one run queue per core, preempting at
    ticks every ``time_slice`` seconds.

    Workers call :meth:`run` for CPU work, :meth:`release` before they block (lock wait,
    barrier, parking) and :meth:`acquire` after they wake up.  A worker that needs a core
    takes the core it last ran on if that is idle, else the lowest-numbered idle core, else
    it queues on its own core; a core that its worker leaves takes the head of its own
    queue, or, when that is empty, of the longest other one; at a tick, a core takes the
    worker queued last on a core with at least two more waiting than it has (the longest
    such, the first in core order on a tie).  This is a simple
    model of Linux's per-CPU run queues, with wake-ups placed on idle CPUs, idle CPUs
    pulling work and periodic load balancing.  Workers start spread over the cores in turn.
    """

    def __init__(self, env: simpy.Environment, cores: int, time_slice: float, workers: int) -> None:
        if int(cores) < 1:
            raise ValueError(f"cores {cores!r} must be >= 1")
        if not time_slice > 0:
            raise ValueError(f"time_slice {time_slice!r} must be > 0 seconds")
        self.env = env
        self.cores = int(cores)
        self.time_slice = float(time_slice)
        #: per worker, the core it runs or last ran on; per core, its worker (-1: idle)
        self.core_of = [w % self.cores for w in range(workers)]
        self.running = [-1] * self.cores
        self.queues: list[deque[tuple[int, simpy.Event]]] = [deque()
                                                             for _ in range(self.cores)]
        self.has_core = [False] * workers
        #: per worker, the last tick it was looked at (preempted or not) while on a core
        self.last_tick = [-1] * workers
        #: number of times a worker was descheduled at a tick
        self.preemptions = 0

    def _grant(self, core: int, w: int) -> None:
        self.running[core] = w
        self.core_of[w] = core
        self.has_core[w] = True
        self.last_tick[w] = tick_index(self.env.now, self.time_slice)

    def acquire(self, w: int) -> Generator[simpy.Event, None, None]:
        """Make sure worker ``w`` holds a core, waiting in its core's run queue if no core
        is idle."""
        if self.has_core[w]:
            return
        core = self.core_of[w]
        if self.running[core] >= 0:
            core = next((c for c in range(self.cores) if self.running[c] < 0), core)
        if self.running[core] < 0:
            self._grant(core, w)
            return
        ev = self.env.event()
        self.queues[core].append((w, ev))
        yield ev  # the releasing worker hands its core over and sets has_core[w]

    def release(self, w: int) -> None:
        """Worker ``w`` gives up its core (it blocks or is preempted); the head of the
        core's queue gets it, or of the longest other queue when that one is empty."""
        if not self.has_core[w]:
            return
        core = self.core_of[w]
        self.has_core[w] = False
        self.running[core] = -1
        queue = self.queues[core] or max(self.queues, key=len)
        if queue:
            w2, ev = queue.popleft()
            self._grant(core, w2)
            ev.succeed()

    def run(self, w: int, duration: float) -> Generator[simpy.Event, None, None]:
        """Consume ``duration`` seconds of CPU time for worker ``w``, tick by tick."""
        env = self.env
        d = duration
        while True:
            if not self.has_core[w]:
                yield from self.acquire(w)
            k = tick_index(env.now, self.time_slice)
            if k > self.last_tick[w]:  # a tick came since this worker was last looked at
                self.last_tick[w] = k
                core = self.core_of[w]
                self._balance(core)
                if self.queues[core]:  # step aside for a worker waiting for this core
                    self.preemptions += 1
                    self.release(w)
                    continue
            step = (k + 1) * self.time_slice - env.now
            if d <= step:
                if d > 0.0:
                    yield env.timeout(d)
                return
            yield env.timeout(step)
            d -= step

    def _balance(self, core: int) -> None:
        """At a tick on ``core``: when another core has at least two more waiting, the one
        queued there last moves to this core's queue (Linux's periodic load balancing;
        without it, workers woken onto one core stay crowded there.  Linux balances busy
        CPUs every few tens of milliseconds; balancing every 8 ticks came out no closer to
        the measured lock runs of the fidelity matrix than every tick)."""
        own, other = self.queues[core], max(self.queues, key=len)
        if len(other) >= len(own) + 2:
            w2, ev = other.pop()
            own.append((w2, ev))
            self.core_of[w2] = core


def tick_index(now: float, tick: float) -> int:
    """The number of the scheduler's last tick at or before ``now`` (ticks fall on the
    multiples of ``tick``; a clock a millionth of a tick short of one counts as at it).
    The compiled loop computes it with the same arithmetic."""
    return math.floor(now / tick + 1e-6)


class Lock:
    """A mutex that wakes one waiter per release, after the hand-over latency; no fairness.

    This is how a futex-backed mutex or a spin lock that yields behaves: on release
    the lock is free at once, the longest waiter is woken and needs ``handover``
    seconds to retry, and a thread that asks in the meantime (typically the
    releasing one, which does not wait at all) takes the lock ("barging").  A woken
    waiter that finds the lock taken goes back to the head of the queue.  Barging
    is what makes ``lock`` workers fall into round-robin: a worker re-reads right
    after its own update.
    """

    __slots__ = ("env", "handover", "held", "waiters", "waking", "acquisitions", "contended")

    def __init__(self, env: simpy.Environment, handover: float = 0.0) -> None:
        if not handover >= 0:
            raise ValueError(f"lock handover {handover!r} must be >= 0 seconds")
        self.env = env
        self.handover = float(handover)
        self.held = False
        self.waiters: deque[simpy.Event] = deque()
        self.waking = False
        #: number of acquisition requests, and how many of them had to wait
        self.acquisitions = 0
        self.contended = 0

    def try_acquire(self) -> simpy.Event | None:
        """Take the lock if free (returns ``None``), else queue and return the event to wait on.

        After the event fires the caller must call :meth:`retry`.
        """
        self.acquisitions += 1
        if not self.held:
            self.held = True
            return None
        self.contended += 1
        ev = self.env.event()
        self.waiters.append(ev)
        return ev

    def retry(self) -> simpy.Event | None:
        """Called by a woken waiter: take the lock if free, else wait again at the head."""
        self.waking = False
        if not self.held:
            self.held = True
            return None
        ev = self.env.event()
        self.waiters.appendleft(ev)
        return ev

    def release(self) -> None:
        """Release the lock and, unless a wake-up is already under way, wake the longest waiter."""
        self.held = False
        if self.waiters and not self.waking:
            self.waking = True
            ev = self.waiters.popleft()
            if self.handover > 0.0:
                self.env.timeout(self.handover).callbacks.append(lambda _e: ev.succeed())
            else:
                ev.succeed()
