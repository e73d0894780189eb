"""A monotonic clock and a sleep, both usable from inside nopython worker loops.

Workers time-stamp every read and apply; ``time.perf_counter`` is not
available in nopython mode, so the libc ``clock_gettime(CLOCK_MONOTONIC)``
is called by name (:mod:`stalesgd.real.libc`; a vDSO call, about 30 ns).  It is the same clock
as Python's ``time.monotonic``, so Python code can share the time origin.  Workers that
must wait long (parked by an elastic controller, or waiting for room in the record) sleep
with ``nanosleep``, which gives their core away.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

from stalesgd.memory import line_zeros

from .libc import c_clock_gettime, c_nanosleep

_CLOCK_MONOTONIC = 1


def new_timespec() -> np.ndarray:
    """A thread's timespec scratch, for :func:`monotonic_now` and the naps of
    :func:`sleep_nap`; one per thread, on a cache line of its own (written twice an update:
    :mod:`stalesgd.memory`)."""
    return line_zeros(2, np.int64)


@njit(nogil=True)
def monotonic_now(timespec: np.ndarray) -> float:
    """Seconds on the monotonic clock; ``timespec`` is this thread's scratch."""
    c_clock_gettime(_CLOCK_MONOTONIC, timespec)
    return timespec[0] + timespec[1] * 1e-9


def python_now() -> float:
    """The same clock from Python."""
    return time.monotonic()


def new_nap(nanoseconds: int) -> np.ndarray:
    """A timespec (seconds, nanoseconds) for :func:`sleep_nap`, ``nanoseconds`` long."""
    return np.array(divmod(int(nanoseconds), 1_000_000_000), dtype=np.int64)


@njit(nogil=True)
def sleep_nap(nap: np.ndarray) -> None:
    """Sleep for the timespec ``nap`` (seconds, nanoseconds), giving the core away."""
    c_nanosleep(nap)
