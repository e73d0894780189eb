"""What both event loops write to: a run's update rows and numeric replay's pending ops.

A :class:`RowBuffer` holds one chunk of update rows (the columns of the run-record
``updates`` table).  The SimPy processes append rows one by one; the compiled loop writes
into the same arrays.  A full chunk, and the rows left at the end, go to a :class:`RowSink`
(the run's :class:`~stalesgd.records.UpdateLog`, or :class:`Columns` to keep them in
memory), so a simulation's memory does not grow with its length.  Rows logged after the run
was stopped are never handed over.

An :class:`OpBuffer` holds numeric replay's reads and applies until the replay runs them
(:mod:`~stalesgd.sim.replay`), so it too stays small.

Both keep their columns in one integer and one float array (the compiled loop takes few
arguments), laid out as the ``R_*`` and ``O_*`` rows name.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

import numpy as np

__all__ = ["COLUMNS", "ROW_CHUNK", "Columns", "OpBuffer", "RowBuffer", "RowSink"]

#: the columns of an update row, in order
COLUMNS = ("k", "worker", "t_read", "t_apply", "tau", "eta", "attempts", "dropped")
_DTYPES = {"k": np.int64, "worker": np.int32, "t_read": np.float64, "t_apply": np.float64,
           "tau": np.int64, "eta": np.float64, "attempts": np.int32, "dropped": np.bool_}
#: rows per chunk
ROW_CHUNK = 1 << 16
# rows of RowBuffer.ints (R_COUNT: [rows in the buffer, rows handed over before]) and .floats
R_K, R_WORKER, R_TAU, R_ATTEMPTS, R_DROPPED, R_COUNT = range(6)
R_T_READ, R_T_APPLY, R_ETA = range(3)
_ROW_OF = {"k": (0, R_K), "worker": (0, R_WORKER), "tau": (0, R_TAU),
           "attempts": (0, R_ATTEMPTS), "dropped": (0, R_DROPPED), "t_read": (1, R_T_READ),
           "t_apply": (1, R_T_APPLY), "eta": (1, R_ETA)}
# rows of OpBuffer.ints (O_COUNT: [ops, reads] in the buffer) and .floats
O_CODE, O_READ_ROWS, O_READ_FED, O_COUNT = range(4)
O_ETA, O_READ_T = range(2)


class RowSink(Protocol):
    """Where full chunks of update rows go (:class:`stalesgd.records.UpdateLog` is one)."""

    def add(self, columns: Mapping[str, np.ndarray]) -> None:
        """Take rows (one array per column of :data:`COLUMNS`, in the order they happened)."""


class Columns:
    """A :class:`RowSink` that keeps every row in memory; :meth:`arrays` joins them."""

    def __init__(self) -> None:
        self._parts: list[dict[str, np.ndarray]] = []

    def add(self, columns: Mapping[str, np.ndarray]) -> None:
        """Keep the rows."""
        self._parts = [*self._parts, dict(columns)]

    def arrays(self) -> dict[str, np.ndarray]:
        """Every row kept, one array per column."""
        if not self._parts:
            return {c: np.zeros(0, _DTYPES[c]) for c in COLUMNS}
        if len(self._parts) == 1:
            return dict(self._parts[0])
        return {c: np.concatenate([p[c] for p in self._parts]) for c in COLUMNS}


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
        self.ints = np.zeros((R_COUNT + 1, self.size), np.int64)
        self.floats = np.zeros((R_ETA + 1, self.size))
        #: [rows in the buffer, rows handed over before] (shared with the compiled loop)
        self.count = self.ints[R_COUNT]
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
        chunk = {c: arrays[a][r, :keep].astype(_DTYPES[c])
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


class OpBuffer:
    """Numeric replay's reads and applies not yet run, in the order the simulation made them.

    Per op: its code (``2·worker`` a read, ``2·worker + 1`` an apply, ``2·workers + 1`` the
    mean apply of a ``sync`` round) and an apply's η; per read: the rows logged before it,
    the simulated time and the samples an online rule had been fed (where to stop the run
    if that read diverged).  The compiled loop writes the same arrays (:attr:`arrays`); the
    buffer is run once :attr:`flush_at` ops are in it, so it stays small.
    """

    def __init__(self, workers: int, flush_at: int) -> None:
        self.flush_at = int(flush_at)
        size = self.flush_at + int(workers) + 2  # (at most one apply per worker between reads)
        self.ints = np.zeros((O_COUNT + 1, size), np.int64)
        self.floats = np.zeros((O_READ_T + 1, size))
        #: [ops, reads] in the buffer (shared with the compiled loop)
        self.count = self.ints[O_COUNT]
        self.arrays = (self.ints, self.floats)

    @property
    def n_ops(self) -> int:
        """Ops in the buffer."""
        return int(self.count[0])

    @property
    def full(self) -> bool:
        """Whether the buffer must be run before another op is added."""
        return int(self.count[0]) >= self.ints.shape[1]

    def read(self, worker: int, rows: int, t: float, fed: int) -> bool:
        """Record a read; True when the buffer should be run now."""
        i, r = int(self.count[0]), int(self.count[1])
        self.ints[O_CODE, i] = worker << 1
        self.ints[O_READ_ROWS, r] = rows
        self.ints[O_READ_FED, r] = fed
        self.floats[O_READ_T, r] = t
        self.count[:2] = (i + 1, r + 1)
        return i + 1 >= self.flush_at

    def apply(self, code: int, eta: float) -> None:
        """Record an apply (``code``: ``2·worker + 1``, or ``2·workers + 1`` for the mean)."""
        i = int(self.count[0])
        self.ints[O_CODE, i] = code
        self.floats[O_ETA, i] = eta
        self.count[0] = i + 1

    def take(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Empty the buffer: (codes, η, and per read rows, time, samples fed), as copies."""
        n, r = int(self.count[0]), int(self.count[1])
        out = (self.ints[O_CODE, :n].copy(), self.floats[O_ETA, :n].copy(),
               self.ints[O_READ_ROWS, :r].copy(), self.floats[O_READ_T, :r].copy(),
               self.ints[O_READ_FED, :r].copy())
        self.count[:2] = 0
        return out


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
        if callable(previous):
            previous(signal.SIGINT, None)
        elif previous == signal.SIG_DFL:
            signal.raise_signal(signal.SIGINT)
