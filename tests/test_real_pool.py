"""The real engine's building blocks on their own: Leashed-SGD's vector pool
(stalesgd.real.pool), the streamed update record (stalesgd.real.record) and forced
interleavings (stalesgd.real.schedule)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from numba import njit
from stalesgd.real.atomics import atomic_cas, atomic_load, atomic_store
from stalesgd.real.control import (
    C_DRAINED,
    C_HIGH_WATER,
    C_IN_USE,
    C_LATEST,
    C_RECORD_WAITS,
    new_control,
)
from stalesgd.real.pool import acquire_latest, claim, pool_size, release
from stalesgd.real.record import (
    F_STAMP,
    DrainBuffer,
    close_record,
    new_ring,
    release_rows,
    ring_rows,
    write_row,
)
from stalesgd.real.threads import run_threads

# --- the pool -----------------------------------------------------------------------------


def fresh_pool(size: int):
    refs = np.zeros(size, dtype=np.int64)
    refs[0] = 1  # vector 0 published at version 0
    return refs, new_control(pooled=True)


def test_pool_size_is_two_per_worker_and_one():
    assert [pool_size(m) for m in (1, 2, 8)] == [3, 5, 17]


def test_references_claims_and_releases_keep_the_in_use_count():
    refs, ctrl = fresh_pool(4)
    p = acquire_latest(refs, ctrl, 4)
    assert (p, refs[0], ctrl[C_IN_USE]) == (0, 2, 1)
    b = claim(refs, ctrl, 0)
    assert (b, refs[b], ctrl[C_IN_USE], ctrl[C_HIGH_WATER]) == (1, 1, 2, 2)
    release(refs, b, ctrl)  # the last reference: back to the pool
    assert (refs[b], ctrl[C_IN_USE], ctrl[C_HIGH_WATER]) == (0, 1, 2)
    release(refs, 0, ctrl)
    assert (refs[0], ctrl[C_IN_USE]) == (1, 1)  # the publish reference remains
    with pytest.raises(RuntimeError, match="released more often than it was held"):
        release(refs, 2, ctrl)


@njit(nogil=True)
def _acquire_once(refs, ctrl, size, out):
    out[0] = acquire_latest(refs, ctrl, size)
    atomic_store(out, 1, 1)
    return 0


def test_a_reader_of_a_stale_pointer_never_touches_the_freed_vector():
    """The published pointer names vector 1, already free (its count is 0): the reader must
    not take a reference to it, not even for a moment, and waits for the next publish."""
    refs, ctrl = fresh_pool(4)
    refs[0] = 0
    refs[2] = 1
    ctrl[C_LATEST] = 1 * 4 + 1  # version 1, vector 1: freed
    out = np.zeros(2, dtype=np.int64)
    _acquire_once(*fresh_pool(4), 4, out.copy())  # compiled before the thread starts
    reader = threading.Thread(target=_acquire_once, args=(refs, ctrl, 4, out), daemon=True)
    reader.start()
    seen = set()
    try:
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:
            seen.add(int(atomic_load(refs, 1)))
    finally:
        looking = atomic_load(out, 1) == 0
        atomic_store(ctrl, C_LATEST, 2 * 4 + 2)  # version 2 on vector 2 is published
        reader.join(10)
    assert seen == {0} and looking  # it went on looking, vector 1 untouched
    assert out.tolist() == [2 * 4 + 2, 1] and refs.tolist() == [0, 0, 2, 0]
    assert ctrl[C_IN_USE] == 1


@njit(nogil=True)
def _publisher(refs, ctrl, size, n):
    """n publishes: take the latest, claim a vector, publish it, drop both references."""
    for _ in range(n):
        p1 = acquire_latest(refs, ctrl, size)
        b1 = p1 % size
        nb = claim(refs, ctrl, b1 + 1)
        release(refs, b1, ctrl)
        if atomic_cas(ctrl, C_LATEST, p1, (p1 // size + 1) * size + nb) == p1:
            release(refs, b1, ctrl)
        else:
            release(refs, nb, ctrl)
    return 0


@njit(nogil=True)
def _reader(refs, ctrl, size, n):
    for _ in range(n):
        p = acquire_latest(refs, ctrl, size)
        release(refs, p % size, ctrl)
    return 0


def test_pool_accounting_is_exact_under_contention():
    size = 6
    refs, ctrl = fresh_pool(size)
    n = 300_000
    run_threads([(_publisher, (refs, ctrl, size, n)), (_reader, (refs, ctrl, size, n)),
                 (_reader, (refs, ctrl, size, n))], timeout=120)
    assert refs.sum() == 1 and ctrl[C_IN_USE] == 1  # only the published vector is held
    assert refs[ctrl[C_LATEST] % size] == 1
    # the publisher holds at most 2 vectors and each reader 1, the published one aside
    assert 2 <= ctrl[C_HIGH_WATER] <= 4


# --- the record ---------------------------------------------------------------------------


@njit(nogil=True)
def _write(ring, ctrl, index):
    write_row(ring, ctrl, C_DRAINED, index, 3, 0.5, 0.75, 2, 0.01, 1, np.zeros(2, np.int64))
    return 0


def test_rows_are_drained_in_order_up_to_the_first_missing_one():
    ring, ctrl = new_ring(8), new_control()
    assert ring_rows(ring) == 8 and ring.ctypes.data % 64 == 0
    for k in (0, 1, 3):
        _write(ring, ctrl, k)
    out = DrainBuffer(16, dropped=False)
    assert out.drain(ring, 0, 4, 0) == 2  # row 2 is missing: rows 0 and 1
    _write(ring, ctrl, 2)
    assert out.drain(ring, 2, 4, 2) == 2
    cols = out.columns(0, 4)
    assert cols["k"].tolist() == [0, 1, 2, 3] and cols["worker"].tolist() == [3] * 4
    assert cols["tau"].tolist() == [2] * 4 and cols["t_apply"].tolist() == [0.75] * 4
    assert not cols["dropped"].any()
    # a stamp left from the lap before is not taken for the row of this lap
    release_rows(ctrl, C_DRAINED, 4)
    assert out.drain(ring, 8, 9, 0) == 0  # slot 0 still holds row 0


def test_a_writer_waits_for_room_and_loses_no_row():
    ring, ctrl = new_ring(4), new_control()
    for k in range(4):
        _write(ring, ctrl, k)
    writer = threading.Thread(target=_write, args=(ring, ctrl, 4))
    writer.start()
    deadline = time.monotonic() + 10  # (a busy machine may start the thread late)
    while ctrl[C_RECORD_WAITS] == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.05)  # it keeps waiting, and counts one wait, not one per try
    assert writer.is_alive() and ring[F_STAMP] == 0.0  # row 0 not drained: no room
    assert ctrl[C_RECORD_WAITS] == 1
    out = DrainBuffer(4, dropped=False)
    assert out.drain(ring, 0, 4, 0) == 4
    release_rows(ctrl, C_DRAINED, 1)
    writer.join(10)
    assert ring[F_STAMP] == 4.0


def test_a_closed_record_lets_a_waiting_writer_go():
    ring, ctrl = new_ring(1), new_control()
    _write(ring, ctrl, 0)
    writer = threading.Thread(target=_write, args=(ring, ctrl, 1))
    writer.start()
    time.sleep(0.05)
    assert writer.is_alive()
    close_record(ctrl)
    writer.join(10)
    assert not writer.is_alive() and ring[F_STAMP] == 0.0  # the row was given up
