"""How far apart the CPUs this process runs on are: a cache-line round trip between two threads.

On a virtual machine the guest's CPUs are threads of a host that may place them on cores
sharing a last-level cache or on cores that do not, and move them while a run goes on.  On
the 2-vCPU machines this project is measured on, two threads handing one cache line back and
forth take either ≈ 60 ns or ≈ 340 ns per round trip, switching every few seconds, and
the real runs whose workers share parameters often (batch 16) and scale worst, up to twice
as slowly as they should, ended in the far placement.  Recording the round trip beside a
run's throughput turns that bimodality into something one can see and filter on.

The measurement spins two threads on one int64 slot for ``trips`` round trips (a few
milliseconds), or as many as fit in a time budget (a loaded host makes each one wait for a
time slice); it needs two CPUs (else it returns NaN rather than spin on one).
"""

from __future__ import annotations

import math
import os
import threading
import time

import numpy as np
from numba import njit

from stalesgd.jitcache import cached

from .atomics import atomic_load, atomic_store
from .clock import monotonic_now

__all__ = ["core_round_trip_ns"]

#: spins before a waiting player gives up (a stalled partner must not hang a run)
MAX_SPINS = 50_000_000
#: wall seconds one measurement may take: on a loaded host each hand-over can wait for a
#: time slice, and 50,000 of them took close to a minute; on an idle one it is ≈ 3-17 ms
BUDGET_SECONDS = 0.05
#: trips (player 0), or spins while waiting (either player), between two looks at the clock
CHECK_EVERY = 256
#: ``slot[8]``: the exchange goes on, a player gave up waiting, the time budget was spent
_ON, _GAVE_UP, _TIME_UP = 0, 1, 2


@cached
@njit(nogil=True)
def _player(slot: np.ndarray, me: int, trips: int, deadline: float) -> int:
    """Take turns with the other player on ``slot[0]``, ``trips`` times or until the
    monotonic clock passes ``deadline``; returns 1 if it gave up waiting."""
    timespec = np.zeros(2, dtype=np.int64)
    for i in range(trips):
        if me == 0 and i % CHECK_EVERY == CHECK_EVERY - 1 and monotonic_now(timespec) > deadline:
            atomic_store(slot, 8, _TIME_UP)
            return 0
        want = 2 * i + me
        spins = 0
        while atomic_load(slot, 0) != want:
            state = atomic_load(slot, 8)
            if state != _ON:
                return 1 if state == _GAVE_UP else 0
            spins += 1
            if spins % CHECK_EVERY == 0 and monotonic_now(timespec) > deadline:
                atomic_store(slot, 8, _TIME_UP)
                return 0
            if spins > MAX_SPINS:
                atomic_store(slot, 8, _GAVE_UP)
                return 1
        atomic_store(slot, 0, want + 1)
    return 0


def core_round_trip_ns(trips: int = 50_000, seconds: float = BUDGET_SECONDS) -> float:
    """Mean nanoseconds for one cache line to go to another thread's CPU and back, over
    ``trips`` round trips or as many as fit in about ``seconds``.

    A short untimed exchange first (the first one in a process is several times slower:
    threads, page faults).  NaN when fewer than two CPUs are available to this process or a
    player gave up.
    """
    if trips < 1:
        raise ValueError(f"trips={trips!r} must be >= 1")
    if len(os.sched_getaffinity(0)) < 2:
        return math.nan
    _exchange(min(trips, 2_000), seconds / 10)
    return _exchange(trips, seconds)


def _exchange(trips: int, seconds: float) -> float:
    slot = np.zeros(16, dtype=np.int64)  # [0]: the turn; [8]: the state (another cache line)
    gave_up = [0, 0]
    deadline = time.monotonic() + seconds  # the clock monotonic_now reads

    def play(me: int) -> None:
        gave_up[me] = _player(slot, me, trips, deadline)

    threads = [threading.Thread(target=play, args=(me,), daemon=True) for me in (0, 1)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    done = int(slot[0]) // 2  # whole round trips
    return math.nan if any(gave_up) or done == 0 else elapsed / done * 1e9
