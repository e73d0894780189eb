"""How far apart the CPUs this process runs on are: a cache-line round trip between two threads.

On a virtual machine the guest's CPUs are threads of a host that may place them on cores
sharing a last-level cache or on cores that do not, and move them while a run goes on.  On
the 2-vCPU machines this project is measured on, two threads handing one cache line back and
forth take either ≈ 60 ns or ≈ 340 ns per round trip, switching every few seconds, and
the real runs whose workers share parameters often (batch 16) and scale worst, up to twice
as slowly as they should, ended in the far placement.  Recording the round trip beside a
run's throughput turns that bimodality into something one can see and filter on.

The measurement spins two threads on one int64 slot for ``trips`` round trips (a few
milliseconds); it needs two CPUs (else it returns NaN rather than spin on one).
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

__all__ = ["core_round_trip_ns"]

#: spins before a waiting player gives up (a stalled partner must not hang a run)
MAX_SPINS = 50_000_000


@cached
@njit(nogil=True)
def _player(slot: np.ndarray, me: int, trips: int) -> int:
    """Take turns with the other player on ``slot[0]``; returns 1 if it gave up waiting."""
    for i in range(trips):
        want = 2 * i + me
        spins = 0
        while atomic_load(slot, 0) != want:
            if atomic_load(slot, 8) != 0:
                return 1
            spins += 1
            if spins > MAX_SPINS:
                atomic_store(slot, 8, 1)
                return 1
        atomic_store(slot, 0, want + 1)
    return 0


def core_round_trip_ns(trips: int = 50_000) -> float:
    """Mean nanoseconds for one cache line to go to another thread's CPU and back.

    A short untimed exchange first (the first one in a process is several times slower:
    threads, page faults).  NaN when fewer than two CPUs are available to this process or a
    player gave up.
    """
    if trips < 1:
        raise ValueError(f"trips={trips!r} must be >= 1")
    if len(os.sched_getaffinity(0)) < 2:
        return math.nan
    _exchange(min(trips, 2_000))
    return _exchange(trips)


def _exchange(trips: int) -> float:
    slot = np.zeros(16, dtype=np.int64)  # [0]: the turn; [8]: give up (another cache line)
    gave_up = [0, 0]

    def play(me: int) -> None:
        gave_up[me] = _player(slot, me, trips)

    threads = [threading.Thread(target=play, args=(me,), daemon=True) for me in (0, 1)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    return math.nan if any(gave_up) else seconds / trips * 1e9
