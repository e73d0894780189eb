"""The simulated machine: c cores with a round-robin scheduler, and a FIFO lock.

When there are no more workers than cores every worker always runs and the
simulator bypasses this module's scheduler (work is a plain timeout).  When
workers outnumber cores, a worker needs a core to make progress, and the
scheduler looks at its cores at its ticks, every ``time_slice`` seconds of the clock
(Linux's timer tick): at a tick, a running worker that others are waiting for goes
to the back of the run queue.  A worker that gets a core between two ticks (woken
from a lock wait, or handed the core of one that blocked) keeps it only until the
next tick if others wait, not for a whole slice of its own: measured lock runs wait
whole ticks, and a simulated slice per worker made their staleness wrong.  A
descheduled worker returns only after the others' slices, which is what makes measured staleness
heavy-tailed on an oversubscribed machine (DESIGN §6).

Both classes are small queues on top of plain SimPy events rather than
``simpy.Resource``: the run queue is first-come-first-served like a
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
    """``cores`` cores shared by ``workers`` workers under round-robin, preempting at ticks
    every ``time_slice`` seconds.

    Workers call :meth:`run` for CPU work, :meth:`release` before they block
    (lock wait, barrier, parking) and :meth:`acquire` after they wake up.
    """

    def __init__(self, env: simpy.Environment, cores: int, time_slice: float, workers: int) -> None:
        if int(cores) < 1:
            raise ValueError(f"cores {cores!r} must be >= 1")
        if not time_slice > 0:
            raise ValueError(f"time_slice {time_slice!r} must be > 0 seconds")
        self.env = env
        self.cores = int(cores)
        self.time_slice = float(time_slice)
        self.free = self.cores
        self.queue: deque[tuple[int, simpy.Event]] = deque()
        self.has_core = [False] * workers
        #: number of times a worker was descheduled at the end of its slice
        self.preemptions = 0

    def acquire(self, w: int) -> Generator[simpy.Event, None, None]:
        """Make sure worker ``w`` holds a core, waiting in the run queue if none is free."""
        if self.has_core[w]:
            return
        if self.free > 0:
            self.free -= 1
            self.has_core[w] = True
        else:
            ev = self.env.event()
            self.queue.append((w, ev))
            yield ev  # the releasing worker hands its core over and sets has_core[w]

    def release(self, w: int) -> None:
        """Worker ``w`` gives up its core (it blocks or is preempted); the queue head gets it."""
        if not self.has_core[w]:
            return
        self.has_core[w] = False
        if self.queue:
            w2, ev = self.queue.popleft()
            self.has_core[w2] = True
            ev.succeed()
        else:
            self.free += 1

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
            # a tick: step aside if somebody is waiting
            if self.queue:
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
