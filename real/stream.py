"""The monitor's side of the update record: drain the workers' rings in order, hand the rows
to the run's update log from a writer thread.

The monitor calls :meth:`RecordStream.drain` every few tens of milliseconds.  It copies the
rows completed since the last call out of the rings (:mod:`stalesgd.real.record`), in update
order, into a buffer, frees their slots for the workers at once, and passes the applied
updates' τ to a callback (the online step-size estimator).  A full buffer goes to a writer
thread, which adds it to the :class:`~stalesgd.records.UpdateLog`; writing a chunk file takes
the log about a second per million rows, and the monitor goes on draining, evaluating and
checking stop rules meanwhile.  When the writer still holds every buffer of a ring, the
monitor leaves that ring's rows where they are until a buffer comes back: the ring absorbs
the delay, and only a ring that fills makes the workers wait (``ctrl[C_RECORD_WAITS]``).

Memory: the rings, ``BUFFERS`` buffers per ring, and what the update log holds before it
writes a chunk, whatever the run's length.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import numpy as np

from stalesgd.records import UpdateLog

from .atomics import atomic_load
from .control import C_DRAINED, C_DROPPED, C_DROPS_DRAINED, C_VERSION
from .record import DrainBuffer, release_rows, ring_rows

__all__ = ["BUFFERS", "RecordStream"]

#: drain buffers per ring: one filling while the writer adds the others to the log
BUFFERS = 3


class RecordStream:
    """Moves the update rows of one run from its rings into its update log, in order."""

    def __init__(self, log: UpdateLog, ring: np.ndarray, drops: np.ndarray, ctrl: np.ndarray,
                 n_max: int, workers: int, buffer_rows: int,
                 on_applied: Callable[[np.ndarray, np.ndarray], None] | None = None) -> None:
        """``on_applied(tau, worker)`` sees the applied updates' τ and workers as they are
        drained, in update order."""
        self.log = log
        self.ctrl = ctrl
        self.n_max = n_max
        self.on_applied = on_applied
        self.applied_by_worker = np.zeros(workers, dtype=np.int64)
        self.rings = ((ring, C_DRAINED, C_VERSION), (drops, C_DROPS_DRAINED, C_DROPPED))
        sizes = (buffer_rows, min(buffer_rows, ring_rows(drops)))
        self.free = [queue.SimpleQueue(), queue.SimpleQueue()]
        for i, rows in enumerate(sizes):
            for _ in range(BUFFERS - 1):
                self.free[i].put(DrainBuffer(rows, dropped=bool(i)))
        self.current = [DrainBuffer(rows, dropped=bool(i)) for i, rows in enumerate(sizes)]
        self.start = [0, 0]  # index of the first row in each current buffer
        self.taken = [0, 0]  # rows taken out of each ring
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.writer = threading.Thread(target=self._write, daemon=True,
                                       name="stalesgd-record-writer")
        self.writer.start()

    @property
    def drained(self) -> int:
        """Update rows taken out of the ring so far."""
        return self.taken[0]

    def drain(self) -> int:
        """Take every row completed up to now out of the rings (not chasing the rows the
        workers write meanwhile: a row read the moment it was written costs a cache-line
        transfer from the writer's core); returns how many."""
        if self.error is not None:
            raise self.error
        moved = 0
        for i, (ring, drained, end_slot) in enumerate(self.rings):
            end = min(int(atomic_load(self.ctrl, end_slot)), self.n_max)
            while self.taken[i] < end:
                buf = self.current[i]
                at = self.taken[i] - self.start[i]
                if at == buf.rows and not self._hand_off(i, wait=False):
                    break  # the writer holds every buffer: the rows wait in the ring
                if at == buf.rows:
                    continue
                n = buf.drain(ring, self.taken[i], end, at)
                if n == 0:
                    break
                self.taken[i] += n
                release_rows(self.ctrl, drained, self.taken[i])
                moved += n
                if i == 0:
                    worker = buf.worker[at: at + n]
                    self.applied_by_worker += np.bincount(worker,
                                                          minlength=self.applied_by_worker.size)
                    if self.on_applied is not None:
                        self.on_applied(buf.tau[at: at + n], worker)
        return moved

    def _hand_off(self, i: int, wait: bool) -> bool:
        """Give ring ``i``'s current buffer to the writer and take a free one (waiting for
        one if ``wait``); False if none was free."""
        try:
            spare = self.free[i].get(block=wait)
        except queue.Empty:
            return False
        n = self.taken[i] - self.start[i]
        self.outbox.put((self.current[i], n))
        self.current[i] = spare
        self.start[i] = self.taken[i]
        return True

    def _write(self) -> None:
        """The writer thread: add each buffer handed over to the log, give it back."""
        while True:
            item = self.outbox.get()
            if item is None:
                return
            buf, n = item
            try:
                if n and self.error is None:
                    self.log.add(buf.columns(0, n))
            except BaseException as exc:  # noqa: BLE001 - raised by the monitor
                self.error = exc
            self.free[int(buf.dropped)].put(buf)

    def close(self) -> None:
        """After the workers ended: drain what is left, let the writer add it all, and
        end the writer.  Raises what the writer could not write."""
        while True:
            moved = self.drain()
            full = [i for i in range(len(self.rings))
                    if self.taken[i] - self.start[i] == self.current[i].rows]
            if not full and not moved:
                break
            for i in full:  # a full buffer stopped the drain: wait for a free one
                self._hand_off(i, wait=True)
        for i in range(len(self.rings)):
            self._hand_off(i, wait=True)
        self.outbox.put(None)
        self.writer.join()
        if self.error is not None:
            raise self.error
