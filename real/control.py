"""The control array of a real run: the counters and flags its workers and monitor share.

One int64 array holds them, each slot a 64-byte cache line away from the next, so that the
fetch-adds on one counter do not invalidate the line other threads spin on (false sharing).
Workers and monitor touch the slots only through the atomics of :mod:`stalesgd.real.atomics`.

Slots (``C_*``):

* ``C_VERSION`` updates applied (Hogwild!: update indices claimed); ``C_STOP`` and
  ``C_DIVERGED`` flags; ``C_LOCK`` the spin lock of ``lock``/``seq``/``sync``;
  ``C_TABLE`` which of the two step-size tables is active; ``C_BARRIER_COUNT`` /
  ``C_BARRIER_GEN`` the barrier of ``sync`` and ``C_SYNC_DONE`` its exit flag.
* ``C_ACTIVE``: elastic parallelism; workers with an index at or above it park.
  ``C_WORKER_BYTES`` / ``C_WORKER_BYTES_HIGH``: parameter bytes the workers hold in buffers
  they own (elastic runs) and the most held at once.
* The record (:mod:`stalesgd.real.record`): ``C_DRAINED`` / ``C_DROPS_DRAINED`` rows the
  monitor has taken out of the update and drop rings, ``C_RECORD_WAITS`` times a worker
  waited for room in a ring, ``C_RECORD_CLOSED`` set when the monitor stops draining.
* Forced interleavings (:mod:`stalesgd.real.schedule`): ``C_SCRIPT_POS`` the script's next
  turn, ``C_SCRIPT_ERROR`` 1 + the turn a worker did not fit.
* The start line: ``C_READY`` workers waiting there, ``C_START`` raised by the monitor to
  release them together, ``C_ORIGIN_NS`` the run's time origin on the monotonic clock
  (nanoseconds), which every worker reads as it starts; ``C_DEADLINE_NS`` the end of the
  run's time budget on the same clock, which the workers check themselves after each
  update (so that a run with far more workers than cores, whose monitor gets little CPU,
  still ends on time), raising ``C_TIMED_OUT``.  With no more workers than cores the
  monitor raises ``C_SPIN_START`` once all are ready: they then wait spinning
  (``C_SPINNING`` counts them) so that all leave the line within a spin of ``C_START``,
  not a nap apart (one worker alone for a nap would fill an online step-size rule's first
  window with τ = 0).
* The vector pool of Leashed-SGD (:mod:`stalesgd.real.pool`): ``C_LATEST`` the published
  vector (version · pool size + buffer), ``C_IN_USE`` / ``C_HIGH_WATER`` vectors in use
  now and at most, ``C_CLAIM_WAITS`` claims that found no free vector on a full pass;
  ``C_FAILED`` failed publishes, ``C_FAILED_AT_STOP`` those of gradients still retrying
  at the end, ``C_SUCCESS_TRIES`` attempts of the applied updates, ``C_DROPPED`` dropped
  gradients.
"""

from __future__ import annotations

import numpy as np

from stalesgd.memory import line_zeros

__all__ = ["ALL_ACTIVE", "NO_DEADLINE", "N_CTRL", "new_control"]

_LINE = 8  # int64 slots per cache line

C_VERSION = 0 * _LINE
C_STOP = 1 * _LINE
C_DIVERGED = 2 * _LINE
C_LOCK = 3 * _LINE
C_TABLE = 4 * _LINE
C_BARRIER_COUNT = 5 * _LINE
C_BARRIER_GEN = 6 * _LINE
C_ACTIVE = 7 * _LINE
C_SYNC_DONE = 8 * _LINE
C_WORKER_BYTES = 9 * _LINE
C_WORKER_BYTES_HIGH = 10 * _LINE
C_DRAINED = 11 * _LINE
C_DROPS_DRAINED = 12 * _LINE
C_RECORD_WAITS = 13 * _LINE
C_RECORD_CLOSED = 14 * _LINE
C_SCRIPT_POS = 15 * _LINE
C_SCRIPT_ERROR = 16 * _LINE
C_LATEST = 17 * _LINE
C_IN_USE = 18 * _LINE
C_HIGH_WATER = 19 * _LINE
C_CLAIM_WAITS = 20 * _LINE
C_FAILED = 21 * _LINE
C_FAILED_AT_STOP = 22 * _LINE
C_SUCCESS_TRIES = 23 * _LINE
C_DROPPED = 24 * _LINE
C_READY = 25 * _LINE
C_START = 26 * _LINE
C_ORIGIN_NS = 27 * _LINE
C_DEADLINE_NS = 28 * _LINE
C_TIMED_OUT = 29 * _LINE
C_SPIN_START = 30 * _LINE
C_SPINNING = 31 * _LINE
N_CTRL = 32 * _LINE

#: ``ctrl[C_ACTIVE]`` when every worker runs (no elastic control)
ALL_ACTIVE = 1 << 62
#: ``ctrl[C_DEADLINE_NS]`` of a run without a time budget
NO_DEADLINE = 1 << 62


def new_control(pooled: bool = False) -> np.ndarray:
    """A control array: every worker active, and for a pooled run (Leashed-SGD) vector 0
    published at version 0 and counted in use."""
    ctrl = line_zeros(N_CTRL, np.int64)  # (slot 0's line holds nothing else either)
    ctrl[C_ACTIVE] = ALL_ACTIVE
    ctrl[C_DEADLINE_NS] = NO_DEADLINE
    if pooled:
        ctrl[C_LATEST] = 0  # version 0 · pool size + vector 0
        ctrl[C_IN_USE] = 1
        ctrl[C_HIGH_WATER] = 1
    return ctrl
