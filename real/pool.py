"""The vector pool of Leashed-SGD: reference-counted parameter vectors, published by
compare-and-swap (DESIGN §4).

Parameter vectors live in a pool (rows of a 2-D array).  ``refs[b]`` counts the holders of
vector b; a vector is free exactly when its count is 0, and it is claimed by a
compare-and-swap 0 → 1, so claiming, holding and freeing are one mechanism.  The published
vector is named by one int64 slot, ``ctrl[C_LATEST]`` = version · P + b (P = pool size):
the version tag makes a recycled vector's pointer differ from the stale one, so a stale
compare-and-swap can never succeed (no ABA).  Published vectors are never written; the
publish itself holds one reference, dropped when a newer vector replaces it.

A reference to a published vector is taken only while its count is positive (a
compare-and-swap c → c + 1 with c > 0): a reader that finds the count at 0 knows the
publish it saw is gone and looks again, and never revives a free vector, so a vector's last
release happens exactly once.  ``ctrl[C_IN_USE]`` counts the vectors in use: a claim adds
one, a last release takes one away before the vector becomes free again, so the count
never exceeds the vectors really held, and its high-water mark ``ctrl[C_HIGH_WATER]`` is
the memory-footprint figure of a run.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .atomics import atomic_add, atomic_cas, atomic_load
from .control import C_CLAIM_WAITS, C_HIGH_WATER, C_IN_USE, C_LATEST
from .spinlock import SPINS_BEFORE_YIELD, cpu_relax, sched_yield

__all__ = ["acquire_latest", "claim", "pool_size", "release"]


def pool_size(workers: int) -> int:
    """Vectors Leashed-SGD with ``workers`` workers and a monitor ever holds at once: 2m + 1.

    Who holds what: a worker holds one vector while it computes its gradient (b0), during
    a publish attempt the vector it copies from (b1) and, once claimed, the one it writes
    (nb); after releasing b1 it holds nb, and right after a successful publish it still owes
    the replaced vector's publish reference (one vector).  The monitor holds at most one (its
    snapshot).  The published vector holds one.  A thread inside :func:`acquire_latest`
    holds only the reference it is taking.

    Every reference taken by :func:`acquire_latest` names a vector that was published when
    it was taken.  Let L be the newest such reference still held.  If the published vector
    is not L's, someone published after L was taken; that worker can have taken no
    reference since (it would be newer than L), so it holds at most one vector, not two.
    So either the published vector is one already counted, or a worker holds one vector
    less: at most 2m + 1 (m workers × 2, the monitor's one, the published one, minus one)
    are in use at any moment.  When a worker claims, it holds only b1 and no newer
    reference can be L's publisher, so at most 2m are in use: a pool of 2m + 1 always has a
    free vector, the monitor's snapshot included."""
    return 2 * int(workers) + 1


@njit(nogil=True, inline="always")
def _count_in_use(ctrl: np.ndarray, change: int) -> None:
    """Add ``change`` to the vectors in use and raise their high-water mark if passed."""
    used = atomic_add(ctrl, C_IN_USE, change) + change
    high = atomic_load(ctrl, C_HIGH_WATER)
    while used > high:
        seen = atomic_cas(ctrl, C_HIGH_WATER, high, used)
        if seen == high:
            break
        high = seen


@njit(nogil=True)
def release(refs: np.ndarray, b: int, ctrl: np.ndarray) -> None:
    """Drop one reference to vector b; the last one returns it to the pool (leaving the
    in-use count first, so that the count never runs ahead of the vectors held)."""
    while True:
        count = atomic_load(refs, b)
        if count > 1:
            if atomic_cas(refs, b, count, count - 1) == count:
                return
        elif count == 1:
            atomic_add(ctrl, C_IN_USE, -1)
            if atomic_cas(refs, b, 1, 0) == 1:
                return
            _count_in_use(ctrl, 1)  # a reader took a reference meanwhile: not the last
        else:
            raise RuntimeError("pool: a vector was released more often than it was held")


@njit(nogil=True)
def acquire_latest(refs: np.ndarray, ctrl: np.ndarray, pool_size: int) -> int:
    """Take a reference to the published vector; return its tagged pointer."""
    while True:
        p = atomic_load(ctrl, C_LATEST)
        b = p % pool_size
        count = atomic_load(refs, b)
        if count > 0 and atomic_cas(refs, b, count, count + 1) == count:
            if atomic_load(ctrl, C_LATEST) == p:
                return p
            release(refs, b, ctrl)  # replaced meanwhile: look again


@njit(nogil=True)
def claim(refs: np.ndarray, ctrl: np.ndarray, start: int) -> int:
    """Claim a free vector (count 0 → 1), scanning from ``start``; a pass over the whole
    pool that finds none free counts in ``ctrl[C_CLAIM_WAITS]`` (see :func:`pool_size`
    for why that does not last)."""
    size = refs.shape[0]
    b = start % size
    passes = 0
    while True:
        for _ in range(size):
            if atomic_load(refs, b) == 0 and atomic_cas(refs, b, 0, 1) == 0:
                _count_in_use(ctrl, 1)
                return b
            b += 1
            if b == size:
                b = 0
        atomic_add(ctrl, C_CLAIM_WAITS, 1)
        passes += 1
        if passes % SPINS_BEFORE_YIELD == 0:
            sched_yield()
        else:
            cpu_relax()

