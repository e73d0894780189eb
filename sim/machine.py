"""The simulated machine: c cores, each with its own run queue, and a FIFO lock.

When there are no more workers than cores every worker always runs and the
simulator bypasses this module's scheduler (work is a plain timeout).  When
workers outnumber cores, a worker needs a core to make progress, and the
scheduler looks at its cores at its ticks, every ``time_slice`` seconds of the clock
(Linux's timer tick): at a tick, a running worker that others are waiting for on its
core goes to the back of that core's run queue.  A worker that gets a core between
two ticks (woken from a lock wait, or handed the core of one that blocked) keeps it
only until the next tick if others wait, not for a whole slice of its own.  A
descheduled worker returns only after the slices of those queued on its core, which is
what makes measured staleness heavy-tailed on an oversubscribed machine (DESIGN §6).

Measured lock runs wait whole ticks, one or two with twice as many workers as cores
and three or four with four times as many: a slice per worker, and one run queue for
all cores (which gives every descheduled worker the same wait), made their simulated
staleness wrong.

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

__all__ = ["Lock", "Machine", "to_next_tick"]


class Machine:
    """``cores`` cores shared by ``workers`` workers, one run queue per core, preempting at
    ticks every ``time_slice`` seconds.

    Workers call :meth:`run` for CPU work, :meth:`release` before they block
    (lock wait, barrier, parking) and :meth:`acquire` after they wake up.  A worker that
    needs a core takes the core it last ran on if that is idle, else any idle core, else it
    queues on its own core; a core that its worker leaves takes the head of its own queue,
    or, when that is empty, of the longest other one (Linux's per-CPU run queues, with
    wake-ups placed on idle CPUs and idle CPUs pulling work).  Workers start spread over
    the cores in turn.
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
        #: number of times a worker was descheduled at a tick
        self.preemptions = 0

    def _grant(self, core: int, w: int) -> None:
        self.running[core] = w
        self.core_of[w] = core
        self.has_core[w] = True

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
            step = to_next_tick(env.now, self.time_slice)
            if d <= step:
                if d > 0.0:
                    yield env.timeout(d)
                return
            yield env.timeout(step)
            d -= step
            # a tick: step aside if somebody is waiting for this core
            if self.queues[self.core_of[w]]:
                self.preemptions += 1
                self.release(w)


def to_next_tick(now: float, tick: float) -> float:
    """Seconds from ``now`` to the scheduler's next tick (the ticks fall on the multiples of
    ``tick``; one closer than a millionth of a tick counts as passed).  The compiled loop
    computes it with the same arithmetic."""
    step = (math.floor(now / tick) + 1.0) * tick - now
    return step + tick if step <= tick * 1e-6 else step


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
