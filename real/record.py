"""The update record of a real run, streamed: workers write rows into a ring, the monitor
drains them in order while the run goes on.

A ring is a flat float64 array of ``rows × ROW_WIDTH``, one 64-byte row per update, aligned
to cache lines so that two workers writing neighbouring rows never share a line (flat, so
that writing a row makes no array view, whose reference count would be raised and dropped
every update).  ``rows`` is a power of two and the row of update ``k`` starts at
``(k mod rows) · ROW_WIDTH`` (a mask, not a division); its fields are ``k`` (the stamp),
the worker, the read and apply times, τ, η and the publish attempts, all exact in float64
(integers below 2⁵³).
A worker writes the fields with plain stores and then the stamp with a release store; the
monitor reads the stamp with an acquire load and takes the row only if the stamp is the
``k`` it expects, so it never reads a row half written, nor one left from a lap before.

Back-pressure: a worker may write row ``k`` only once the monitor has drained row
``k − rows`` (``ctrl[drained] > k − rows``); until then it waits, sleeping in short naps,
and counts the wait in ``ctrl[C_RECORD_WAITS]``.  Nothing is ever overwritten before it
was drained, so no row is lost, and memory is the ring's whatever the run's length.  The
monitor drains rows in order, so the first row not yet written holds the others back, and
its writer never waits (row ``k − rows`` precedes it): draining always progresses.

Dropped gradients (Leashed-SGD) go to a second ring, indexed by the dropped counter.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from stalesgd.jitcache import cached
from stalesgd.memory import line_zeros

from .atomics import atomic_add, atomic_load, atomic_store, load_acquire, store_release
from .clock import sleep_nap
from .control import C_RECORD_CLOSED, C_RECORD_WAITS

__all__ = ["ROW_WIDTH", "DrainBuffer", "close_record", "drain_rows", "new_ring", "release_rows",
           "ring_rows", "write_row"]

#: float64 fields per row: stamp, worker, t_read, t_apply, tau, eta, attempts, (padding)
ROW_WIDTH = 8
F_STAMP, F_WORKER, F_TREAD, F_TAPPLY, F_TAU, F_ETA, F_ATTEMPTS = range(7)
#: first nap of a worker waiting for room (nanoseconds); naps double up to WAIT_MAX_NANOS
WAIT_NANOS = 20_000
WAIT_MAX_NANOS = 1_000_000


def new_ring(rows: int) -> np.ndarray:
    """An empty ring of at least ``rows`` rows (the next power of two), its first row on a
    cache-line boundary; every stamp is -1 (no row)."""
    rows = 1 << max(int(rows) - 1, 0).bit_length()
    ring = line_zeros(rows * ROW_WIDTH, np.float64)
    ring[F_STAMP::ROW_WIDTH] = -1.0
    return ring


def ring_rows(ring: np.ndarray) -> int:
    """How many rows ``ring`` holds."""
    return ring.shape[0] // ROW_WIDTH


@njit(nogil=True)
def _wait_for_room(ring: np.ndarray, ctrl: np.ndarray, drained: int, index: int,
                   nap: np.ndarray) -> bool:
    """Sleep until the monitor has drained row ``index − rows`` (``nap``: this thread's
    timespec scratch); False if it stopped draining (the run failed) and the row cannot be
    kept."""
    atomic_add(ctrl, C_RECORD_WAITS, 1)
    nap[0] = 0
    nap[1] = WAIT_NANOS
    while index - atomic_load(ctrl, drained) >= ring.shape[0] // ROW_WIDTH:
        if atomic_load(ctrl, C_RECORD_CLOSED) != 0:
            return False
        sleep_nap(nap)
        if nap[1] < WAIT_MAX_NANOS:
            nap[1] = min(2 * nap[1], WAIT_MAX_NANOS)
    return True


@njit(nogil=True, inline="always")
def write_row(ring, ctrl, drained, index, worker, t_read, t_apply, tau, eta, attempts, nap):
    """Write the row of update (or drop) ``index`` once there is room, stamp last
    (release), so that the monitor sees either all of it or none.  ``drained`` is the
    control slot counting the rows the monitor has taken from this ring; ``nap`` the
    thread's timespec scratch, for waiting."""
    rows = ring.shape[0] // ROW_WIDTH
    if index - atomic_load(ctrl, drained) >= rows:
        if not _wait_for_room(ring, ctrl, drained, index, nap):
            return
    at = (index & (rows - 1)) * ROW_WIDTH
    ring[at + F_WORKER] = worker
    ring[at + F_TREAD] = t_read
    ring[at + F_TAPPLY] = t_apply
    ring[at + F_TAU] = tau
    ring[at + F_ETA] = eta
    ring[at + F_ATTEMPTS] = attempts
    store_release(ring, at + F_STAMP, float(index))


@cached
@njit(nogil=True)
def drain_rows(ring, start, end, at, k, worker, t_read, t_apply, tau, eta, attempts) -> int:
    """Copy the rows ``start, start + 1, …`` (before ``end``) into the output columns from
    position ``at`` on, as many as fit, stopping at the first row not yet written; return
    how many were copied.  The caller then tells the workers the rows are free."""
    mask = ring.shape[0] // ROW_WIDTH - 1
    n = max(min(end - start, k.shape[0] - at), 0)
    for i in range(n):
        index = start + i
        row = (index & mask) * ROW_WIDTH
        if load_acquire(ring, row + F_STAMP) != float(index):
            return i
        j = at + i
        k[j] = index
        worker[j] = np.int32(ring[row + F_WORKER])
        t_read[j] = ring[row + F_TREAD]
        t_apply[j] = ring[row + F_TAPPLY]
        tau[j] = np.int64(ring[row + F_TAU])
        eta[j] = ring[row + F_ETA]
        attempts[j] = np.int32(ring[row + F_ATTEMPTS])
    return n


@cached
@njit(nogil=True)
def release_rows(ctrl: np.ndarray, drained: int, upto: int) -> None:
    """Tell the workers that every row before ``upto`` has been drained (its slot is free)."""
    atomic_store(ctrl, drained, upto)


@cached
@njit(nogil=True)
def close_record(ctrl: np.ndarray) -> None:
    """The monitor drains no more (it failed): waiting workers give their rows up."""
    atomic_store(ctrl, C_RECORD_CLOSED, 1)


class DrainBuffer:
    """The monitor's columns for rows drained from one ring and not yet handed to the
    update log (the log takes them in batches of up to ``rows``, which keeps its per-call
    cost off the per-row bill)."""

    def __init__(self, rows: int, dropped: bool) -> None:
        rows = max(int(rows), 1)
        self.dropped = dropped
        self.k = np.zeros(rows, dtype=np.int64)
        self.worker = np.zeros(rows, dtype=np.int32)
        self.t_read = np.zeros(rows, dtype=np.float64)
        self.t_apply = np.zeros(rows, dtype=np.float64)
        self.tau = np.zeros(rows, dtype=np.int64)
        self.eta = np.zeros(rows, dtype=np.float64)
        self.attempts = np.zeros(rows, dtype=np.int32)

    @property
    def rows(self) -> int:
        """How many rows it holds at most."""
        return self.k.shape[0]

    def drain(self, ring: np.ndarray, start: int, end: int, at: int) -> int:
        """:func:`drain_rows` into these columns from position ``at``."""
        return int(drain_rows(ring, start, end, at, self.k, self.worker, self.t_read,
                              self.t_apply, self.tau, self.eta, self.attempts))

    def columns(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows ``start..stop-1`` as update-log columns (views; dropped gradients get
        ``k = -1`` and ``dropped = True``)."""
        n = stop - start
        return {
            "k": np.full(n, -1, dtype=np.int64) if self.dropped else self.k[start:stop],
            "worker": self.worker[start:stop],
            "t_read": self.t_read[start:stop],
            "t_apply": self.t_apply[start:stop],
            "tau": self.tau[start:stop],
            "eta": self.eta[start:stop],
            "attempts": self.attempts[start:stop],
            "dropped": np.full(n, self.dropped, dtype=bool),
        }
