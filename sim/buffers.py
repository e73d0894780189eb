"""The update rows of a simulation, a chunk at a time: what both event loops write to.

A :class:`RowBuffer` holds one chunk of update rows (the run-record ``updates`` table's
columns, in one integer and one float array laid out as the ``R_*`` rows name).  The SimPy
processes append rows one by one; the compiled loop writes into the same arrays.  A full
chunk, and the rows left at the end, go to a :class:`RowSink` (the run's
:class:`~stalesgd.records.UpdateLog`), so a simulation's memory does not grow with its
length; rows logged after the run was stopped are never handed over.  The ``O_*`` rows lay
out numeric replay's buffer of reads and applies (:class:`~stalesgd.sim.replay.OpBuffer`),
which the compiled loop fills too.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

import numpy as np

from stalesgd.compile_guard import deliver

__all__ = ["COLUMNS", "DTYPES", "ROW_CHUNK", "RowBuffer", "RowSink"]

#: the columns of an update row, in order
COLUMNS = ("k", "worker", "t_read", "t_apply", "tau", "eta", "attempts", "dropped")
#: the dtype of each column
DTYPES = {"k": np.int64, "worker": np.int32, "t_read": np.float64, "t_apply": np.float64,
           "tau": np.int64, "eta": np.float64, "attempts": np.int32, "dropped": np.bool_}
#: rows per chunk
ROW_CHUNK = 1 << 14
# rows of RowBuffer.ints (R_COUNT: [rows in the buffer, rows handed over before]) and .floats
R_K, R_WORKER, R_TAU, R_ATTEMPTS, R_DROPPED, R_COUNT = range(6)
R_T_READ, R_T_APPLY, R_ETA = range(3)
_ROW_OF = {"k": (0, R_K), "worker": (0, R_WORKER), "tau": (0, R_TAU),
           "attempts": (0, R_ATTEMPTS), "dropped": (0, R_DROPPED), "t_read": (1, R_T_READ),
           "t_apply": (1, R_T_APPLY), "eta": (1, R_ETA)}
# rows of the replay op buffer's integer array (O_COUNT: [ops, reads] in it) and float array
O_CODE, O_READ_ROWS, O_READ_FED, O_COUNT = range(4)
O_ETA, O_READ_T = range(2)


class RowSink(Protocol):
    """Where full chunks of update rows go (:class:`stalesgd.records.UpdateLog` is one)."""

    def add(self, columns: Mapping[str, np.ndarray]) -> None:
        """Take rows (one array per column of :data:`COLUMNS`, in the order they happened)."""


class RowBuffer:
    """One chunk of update rows (:data:`ROW_CHUNK` unless ``size`` is given), handed to
    ``sink`` whenever it is full.

    ``before_handover()`` is called before rows leave (numeric replay runs its buffered
    operations then, so that a divergence it finds can still cut rows that are not yet
    handed over).  :attr:`limit`, once a stop rule set it, is the number of rows the run
    keeps.  Counts over the rows handed over: :attr:`applied`, :attr:`dropped`,
    :attr:`failed` (failed publishes)."""

    def __init__(self, sink: RowSink, size: int | None = None,
                 before_handover: Callable[[], None] | None = None) -> None:
        self.sink = sink
        self.size = int(ROW_CHUNK if size is None else size)
        #: the integer columns, then the counts (:data:`R_COUNT`); the float columns
        self.ints = np.empty((R_COUNT + 1, self.size), np.int64)
        self.floats = np.empty((R_ETA + 1, self.size))
        #: [rows in the buffer, rows handed over before] (shared with the compiled loop)
        self.count = self.ints[R_COUNT]
        self.count[:] = 0
        self.before_handover = before_handover
        #: rows the run keeps (None: not stopped)
        self.limit: int | None = None
        self.applied = 0
        self.dropped = 0
        self.failed = 0

    @property
    def n(self) -> int:
        """Rows in the buffer."""
        return int(self.count[0])

    @property
    def base(self) -> int:
        """Rows handed over before."""
        return int(self.count[1])

    @property
    def total(self) -> int:
        """Rows logged so far (handed over or in the buffer)."""
        return int(self.count[0] + self.count[1])

    def add(self, k: int, worker: int, t_read: float, t_apply: float, tau: int, eta: float,
            attempts: int, dropped: bool) -> None:
        """Log one row (the SimPy processes' path)."""
        count = self.count
        i = int(count[0])
        if i == self.size:
            self.handover()
            i = 0
        ints, floats = self.ints, self.floats
        ints[R_K, i] = k
        ints[R_WORKER, i] = worker
        ints[R_TAU, i] = tau
        ints[R_ATTEMPTS, i] = attempts
        ints[R_DROPPED, i] = dropped
        floats[R_T_READ, i] = t_read
        floats[R_T_APPLY, i] = t_apply
        floats[R_ETA, i] = eta
        count[0] = i + 1

    def handover(self) -> None:
        """Hand the buffered rows the run keeps to the sink and empty the buffer."""
        if self.before_handover is not None:
            self.before_handover()
        n, base = self.n, self.base
        keep = n if self.limit is None else max(0, min(n, self.limit - base))
        arrays = (self.ints, self.floats)
        chunk = {c: arrays[a][r, :keep].astype(DTYPES[c])
                 for c, (a, r) in _ROW_OF.items()}
        chunk = {c: chunk[c] for c in COLUMNS}
        n_drop = int(np.count_nonzero(chunk["dropped"]))
        failed = int(self.ints[R_ATTEMPTS, :keep].sum()) - (keep - n_drop)  # tries beyond one
        with _uninterrupted():
            if keep:
                self.sink.add(chunk)
            self.count[:2] = (0, base + n)
            self.applied += keep - n_drop
            self.dropped += n_drop
            self.failed += failed

    def cut(self, rows: int) -> None:
        """The run keeps only its first ``rows`` rows (an earlier cut wins)."""
        if rows < self.base:
            raise RuntimeError(f"cannot cut the run at row {rows}: {self.base} rows are "
                               "already handed over")
        self.limit = rows if self.limit is None else min(self.limit, rows)


@contextmanager
def _uninterrupted() -> Iterator[None]:
    """Hold back Ctrl-C until the block is done (rows handed over are counted exactly once);
    outside the main thread, nothing can be held back and nothing needs to be."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda sig, _frame: caught.append(sig))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        deliver(previous)
