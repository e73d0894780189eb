"""The worker loops of the real engine for sparse problems: updates touch few coordinates.

Same algorithms, stop rules, record and staleness τ = t1 − t0 as :mod:`stalesgd.real.workers`,
but the gradient comes from the model's sparse kernel (distinct coordinates ``gidx[:nnz]``
and values ``gval[:nnz]``, see :mod:`stalesgd.problems.base`), so that:

* Hogwild! writes only the touched coordinates of θ, element-wise without atomics;
* lock copies, under the lock, only the coordinates the minibatch reads (the model's
  ``support_copy`` kernel) into its private copy, and applies the sparse update under it;
* Leashed-SGD still publishes a whole new vector: it copies the latest vector and applies
  the sparse update to the copy (the copy is its cost on sparse problems);
* sync's worker 0 subtracts each worker's sparse gradient, scaled by η/m, from θ.

The arguments are :data:`SPARSE_WORKER_ARGS`: those of :data:`~.workers.WORKER_ARGS` with the
gradient rows ``grads`` replaced by ``gidx``/``gval`` (one row of the model's sparse capacity
per worker), plus ``support_copy`` (the model's kernel), ``stats`` and ``writers``.
Workers keep their buffers when parked (they are a few hundred elements; the lock copy is
allocated for every worker up front).

Collision rate.  ``writers[j]`` holds 1 + the index of the last update that wrote
coordinate ``j`` (0: none yet).  When an update with read version t0 writes ``j``, the
coordinate *collides* if ``writers[j] > t0`` (and is not the update's own stamp): an update
whose index is ≥ t0, that is one claimed (Hogwild!) or applied (lock, Leashed-SGD) after
this update's read, wrote it before this update did.  For lock this is exactly "written by
another update between this update's read and its apply"; for Leashed-SGD the same up to a
publisher whose stamps (written just after its compare-and-swap) are not yet visible; for
Hogwild! updates claimed before the read but still being applied are not counted, and two
workers stamping one coordinate at once may leave either stamp.  sync applies every update
at τ = 0: none collides (the m gradients of a round are one update; their coordinates are
counted summed).  Each worker counts in ``stats[worker]``: ``[S_NNZ]`` the current
gradient's coordinates (read by sync's worker 0), ``[S_WRITTEN]`` coordinates written,
``[S_COLLIDED]`` those that collided; the collision rate of a run is
Σ collided / Σ written.  A run of one worker stamps too, though it cannot collide: so that
2 workers against 1 compares the same work per update (and a calibration from one-worker
runs charges the stamps that runs of more workers pay; a loop of the batch-1 step on the
set of ``bench/sparse_hogwild.py`` took about 80 ns more with stamps, of 450).

Each loop starts loading the next minibatch's rows as soon as it has drawn the current one
(:func:`~stalesgd.real.sampling.next_rows`, :func:`~stalesgd.problems._kernels.prefetch_rows`):
the rows of a sparse set lie at random places in memory, and a batch-1 update is short
enough that waiting for main memory for its row was a third of its time.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
from numba import njit

from stalesgd.problems._kernels import n_rows as n_examples
from stalesgd.problems._kernels import prefetch_rows

from .atomics import atomic_add, atomic_cas, atomic_load, atomic_store
from .clock import monotonic_now
from .control import (
    C_ACTIVE,
    C_DRAINED,
    C_DROPPED,
    C_DROPS_DRAINED,
    C_FAILED,
    C_FAILED_AT_STOP,
    C_LATEST,
    C_LOCK,
    C_STOP,
    C_SUCCESS_TRIES,
    C_SYNC_DONE,
    C_VERSION,
)
from .pool import acquire_latest, claim, release
from .record import write_row
from .sampling import batch_rows, draw_batch, first_epoch, next_rows
from .schedule import G_APPLY, G_CLAIM, G_COPY, G_PUBLISH, G_READ, end_turn, gate
from .spinlock import spin_lock_acquire, spin_lock_acquire_unless, spin_lock_release
from .workers import (
    barrier,
    flag_divergence,
    gradient_start,
    park_while_inactive,
    step_size,
    straggle,
    time_is_up,
    wait_for_start,
)

__all__ = ["S_COLLIDED", "S_NNZ", "S_WRITTEN", "SPARSE_WORKER_ARGS", "STATS_WIDTH",
           "hogwild_sparse_worker", "leashed_sparse_worker", "lock_sparse_worker",
           "loop_for_kernels", "sync_sparse_worker"]

#: the arguments every sparse worker function takes, in order
SPARSE_WORKER_ARGS = ("kernel", "support_copy", "worker", "seed", "slow", "pool", "refs", "local",
                      "gidx", "gval", "stats", "writers", "X", "y", "sampler", "ws", "dims",
                      "ctrl", "tables", "lr", "n_max", "persistence", "timespec", "ring",
                      "drops", "script")
#: how the loops are compiled: without Numba's reference counting.  They allocate nothing
#: (every buffer comes from the engine; naps use the thread's ``timespec``), and with it
#: every update raised and dropped the counts of the arrays its helpers view (the sampler's
#: rows, the inputs, the clock's scratch) with atomic operations: one Hogwild! worker on the
#: set of ``bench/sparse_hogwild.py`` made 2.1–2.2 M updates/s with them (its kernel already
#: without), 2.8–3.0 M without.  A kernel called from such a loop is compiled the same way,
#: so it may not allocate either: :func:`loop_for_kernels` picks the loop for a model.
WORKER_JIT = {"nogil": True, "_nrt": False}
#: slots of a worker's ``stats`` row (a row is one cache line: workers never share one)
S_NNZ, S_WRITTEN, S_COLLIDED = 0, 1, 2
STATS_WIDTH = 8


@njit(nogil=True, inline="always")
def _stamp_one(writers, j, t0, stamp):
    """Stamp coordinate ``j`` with ``stamp``; returns 1 if its last writer was another update
    with an index ≥ t0 (see the module docstring; sync: not this update's other gradients),
    else 0."""
    w = writers[j]
    writers[j] = stamp
    return (w > t0) & (w != stamp)


@njit(nogil=True, inline="always")
def _tally(stats, nnz, collided):
    stats[S_WRITTEN] += nnz
    stats[S_COLLIDED] += collided


@njit(nogil=True, inline="always")
def _stamp(gidx, nnz, writers, t0, stamp, stats):
    """Count the coordinates ``gidx[:nnz]`` another update wrote since version t0 and stamp
    them with ``stamp``."""
    collided = 0
    for p in range(nnz):
        collided += _stamp_one(writers, gidx[p], t0, stamp)
    _tally(stats, nnz, collided)


@njit(nogil=True, inline="always")
def _apply(theta, gidx, gval, nnz, eta, writers, t0, stamp, stats):
    """θ[gidx] −= η·gval, each coordinate counted and stamped as by :func:`_stamp` right
    after its write (one pass over the coordinates; for Hogwild! a stamp is visible a little
    earlier than when all writes preceded all stamps, so concurrent runs' collision rates
    are comparable only with runs of the same rule).  η stays a float64 in the product, as
    in the dense workers and the simulator's replay (same rounding in float32)."""
    collided = 0
    for p in range(nnz):
        j = gidx[p]
        theta[j] -= eta * gval[p]
        collided += _stamp_one(writers, j, t0, stamp)
    _tally(stats, nnz, collided)


@njit(**WORKER_JIT)
def lock_sparse_worker(kernel, support_copy, worker, seed, slow, pool, refs, local, gidx, gval,
                       stats, writers, X, y, sampler, ws, dims, ctrl, tables, lr, n_max,
                       persistence, timespec, ring, drops, script):
    """AsyncSGD with one lock on a sparse problem: under the lock read t0 and copy the
    coordinates the minibatch reads; compute outside; apply the sparse update under the
    lock."""
    np.random.seed(seed)
    n_rows = n_examples(X)
    rows = batch_rows(sampler)
    first_epoch(sampler, rows, n_rows)  # (before the clock starts)
    t_origin, deadline = wait_for_start(ctrl, timespec)
    theta = pool[0]
    gi, gv, st = gidx[worker], gval[worker], stats[worker]
    turn = False
    while atomic_load(ctrl, C_STOP) == 0:
        if worker >= atomic_load(ctrl, C_ACTIVE):
            park_while_inactive(ctrl, worker, timespec)
            continue
        draw_batch(sampler, rows, n_rows)
        prefetch_rows(X, next_rows(sampler, rows, n_rows))
        turn = gate(script, ctrl, worker, G_READ, turn)
        if not spin_lock_acquire_unless(ctrl, C_LOCK, C_STOP):
            break
        t_read = monotonic_now(timespec) - t_origin
        t0 = atomic_load(ctrl, C_VERSION)
        support_copy(theta, local, X, rows, dims)
        spin_lock_release(ctrl, C_LOCK)

        t_grad = gradient_start(timespec, slow)
        loss, nnz = kernel(local, X, y, rows, gi, gv, ws, dims)
        straggle(ctrl, timespec, slow, t_grad)
        if not np.isfinite(loss):
            flag_divergence(ctrl)
            break
        if atomic_load(ctrl, C_STOP) != 0:
            break

        turn = gate(script, ctrl, worker, G_APPLY, turn)
        if not spin_lock_acquire_unless(ctrl, C_LOCK, C_STOP):
            break
        k = atomic_load(ctrl, C_VERSION)
        if k >= n_max:
            spin_lock_release(ctrl, C_LOCK)
            atomic_store(ctrl, C_STOP, 1)
            break
        tau = k - t0
        eta = step_size(tables, ctrl, lr, tau)
        _apply(theta, gi, gv, nnz, eta, writers, t0, k + 1, st)
        atomic_store(ctrl, C_VERSION, k + 1)
        t_apply = monotonic_now(timespec) - t_origin
        spin_lock_release(ctrl, C_LOCK)
        write_row(ring, ctrl, C_DRAINED, k, worker, t_read, t_apply, tau, eta, 1, timespec)
        if time_is_up(ctrl, t_apply, deadline):
            break
    end_turn(script, ctrl, turn)


@njit(**WORKER_JIT)
def hogwild_sparse_worker(kernel, support_copy, worker, seed, slow, pool, refs, local, gidx, gval,
                          stats, writers, X, y, sampler, ws, dims, ctrl, tables, lr, n_max,
                          persistence, timespec, ring, drops, script):
    """Hogwild! on a sparse problem: the gradient is computed on θ in place and only its
    coordinates are written, element-wise, without atomics."""
    np.random.seed(seed)
    n_rows = n_examples(X)
    rows = batch_rows(sampler)
    first_epoch(sampler, rows, n_rows)  # (before the clock starts)
    t_origin, deadline = wait_for_start(ctrl, timespec)
    theta = pool[0]
    gi, gv, st = gidx[worker], gval[worker], stats[worker]
    turn = False
    while atomic_load(ctrl, C_STOP) == 0:
        if worker >= atomic_load(ctrl, C_ACTIVE):
            park_while_inactive(ctrl, worker, timespec)
            continue
        draw_batch(sampler, rows, n_rows)
        prefetch_rows(X, next_rows(sampler, rows, n_rows))
        turn = gate(script, ctrl, worker, G_READ, turn)
        t_read = monotonic_now(timespec) - t_origin
        t0 = atomic_load(ctrl, C_VERSION)
        t_grad = gradient_start(timespec, slow)
        loss, nnz = kernel(theta, X, y, rows, gi, gv, ws, dims)
        straggle(ctrl, timespec, slow, t_grad)
        if not np.isfinite(loss):
            flag_divergence(ctrl)
            break
        if atomic_load(ctrl, C_STOP) != 0:
            break
        turn = gate(script, ctrl, worker, G_APPLY, turn)
        k = atomic_add(ctrl, C_VERSION, 1)
        if k >= n_max:
            atomic_store(ctrl, C_STOP, 1)
            break
        tau = k - t0
        eta = step_size(tables, ctrl, lr, tau)
        _apply(theta, gi, gv, nnz, eta, writers, t0, k + 1, st)
        t_apply = monotonic_now(timespec) - t_origin
        write_row(ring, ctrl, C_DRAINED, k, worker, t_read, t_apply, tau, eta, 1, timespec)
        if time_is_up(ctrl, t_apply, deadline):
            break
    end_turn(script, ctrl, turn)


@njit(**WORKER_JIT)
def sync_sparse_worker(kernel, support_copy, worker, seed, slow, pool, refs, local, gidx, gval,
                       stats, writers, X, y, sampler, ws, dims, ctrl, tables, lr, n_max,
                       persistence, timespec, ring, drops, script):
    """Synchronous SGD on a sparse problem: every round all m workers compute a sparse
    gradient on the same θ; worker 0 subtracts each, scaled by η/m (their mean), τ = 0."""
    np.random.seed(seed)
    n_rows = n_examples(X)
    rows = batch_rows(sampler)
    first_epoch(sampler, rows, n_rows)  # (before the clock starts)
    t_origin, deadline = wait_for_start(ctrl, timespec)
    n_workers = gidx.shape[0]
    theta = pool[0]
    gi, gv = gidx[worker], gval[worker]
    while True:
        t_read = monotonic_now(timespec) - t_origin
        draw_batch(sampler, rows, n_rows)
        prefetch_rows(X, next_rows(sampler, rows, n_rows))
        t_grad = gradient_start(timespec, slow)
        loss, nnz = kernel(theta, X, y, rows, gi, gv, ws, dims)
        straggle(ctrl, timespec, slow, t_grad)
        stats[worker, S_NNZ] = nnz
        if not np.isfinite(loss):
            flag_divergence(ctrl)
        barrier(ctrl, n_workers)
        if worker == 0:
            k = atomic_load(ctrl, C_VERSION)
            if atomic_load(ctrl, C_STOP) != 0 or k >= n_max:
                atomic_store(ctrl, C_SYNC_DONE, 1)
                atomic_store(ctrl, C_STOP, 1)
            else:
                spin_lock_acquire(ctrl, C_LOCK)
                eta = step_size(tables, ctrl, lr, 0)
                for w in range(n_workers):
                    _apply(theta, gidx[w], gval[w], stats[w, S_NNZ], eta / n_workers,
                           writers, k, k + 1, stats[0])
                atomic_store(ctrl, C_VERSION, k + 1)
                spin_lock_release(ctrl, C_LOCK)
                t_apply = monotonic_now(timespec) - t_origin
                write_row(ring, ctrl, C_DRAINED, k, 0, t_read, t_apply, 0, eta, 1, timespec)
                time_is_up(ctrl, t_apply, deadline)
        barrier(ctrl, n_workers)
        if atomic_load(ctrl, C_SYNC_DONE) != 0:
            break


@njit(**WORKER_JIT)
def leashed_sparse_worker(kernel, support_copy, worker, seed, slow, pool, refs, local, gidx, gval,
                          stats, writers, X, y, sampler, ws, dims, ctrl, tables, lr, n_max,
                          persistence, timespec, ring, drops, script):
    """Leashed-SGD on a sparse problem: compute on the published vector, then copy the
    latest vector whole into a claimed one, apply the sparse update to it and publish by
    compare-and-swap (retries and drops as in the dense worker)."""
    np.random.seed(seed)
    n_rows = n_examples(X)
    rows = batch_rows(sampler)
    first_epoch(sampler, rows, n_rows)  # (before the clock starts)
    t_origin, deadline = wait_for_start(ctrl, timespec)
    size = pool.shape[0]
    n_params = pool.shape[1]
    gi, gv, st = gidx[worker], gval[worker], stats[worker]
    turn = False
    done = False
    while not done and atomic_load(ctrl, C_STOP) == 0:
        if worker >= atomic_load(ctrl, C_ACTIVE):
            park_while_inactive(ctrl, worker, timespec)
            continue
        draw_batch(sampler, rows, n_rows)
        prefetch_rows(X, next_rows(sampler, rows, n_rows))
        turn = gate(script, ctrl, worker, G_READ, turn)
        t_read = monotonic_now(timespec) - t_origin
        p0 = acquire_latest(refs, ctrl, size)
        t0 = p0 // size
        b0 = p0 % size
        t_grad = gradient_start(timespec, slow)
        loss, nnz = kernel(pool[b0], X, y, rows, gi, gv, ws, dims)
        straggle(ctrl, timespec, slow, t_grad)
        release(refs, b0, ctrl)
        if not np.isfinite(loss):
            flag_divergence(ctrl)
            break
        if atomic_load(ctrl, C_STOP) != 0:
            break
        attempts = 0
        while True:
            attempts += 1
            turn = gate(script, ctrl, worker, G_APPLY, turn)
            p1 = acquire_latest(refs, ctrl, size)
            t1 = p1 // size
            b1 = p1 % size
            if t1 >= n_max:
                release(refs, b1, ctrl)
                atomic_store(ctrl, C_STOP, 1)
                if attempts > 1:
                    atomic_add(ctrl, C_FAILED_AT_STOP, attempts - 1)
                done = True
                break
            tau = t1 - t0
            eta = step_size(tables, ctrl, lr, tau)
            turn = gate(script, ctrl, worker, G_CLAIM, turn)
            nb = claim(refs, ctrl, worker + b1)
            turn = gate(script, ctrl, worker, G_COPY, turn)
            src = pool[b1]
            dst = pool[nb]
            for j in range(n_params):
                dst[j] = src[j]
            for p in range(nnz):
                dst[gi[p]] -= eta * gv[p]
            release(refs, b1, ctrl)
            turn = gate(script, ctrl, worker, G_PUBLISH, turn)
            if atomic_cas(ctrl, C_LATEST, p1, (t1 + 1) * size + nb) == p1:
                release(refs, b1, ctrl)
                atomic_add(ctrl, C_VERSION, 1)
                _stamp(gi, nnz, writers, t0, t1 + 1, st)  # after the publish: see above
                t_apply = monotonic_now(timespec) - t_origin
                atomic_add(ctrl, C_SUCCESS_TRIES, attempts)
                write_row(ring, ctrl, C_DRAINED, t1, worker, t_read, t_apply, tau, eta,
                          attempts, timespec)
                done = time_is_up(ctrl, t_apply, deadline)
                break
            atomic_add(ctrl, C_FAILED, 1)
            release(refs, nb, ctrl)
            if persistence >= 0 and attempts > persistence:
                d = atomic_add(ctrl, C_DROPPED, 1)
                t_drop = monotonic_now(timespec) - t_origin
                write_row(drops, ctrl, C_DROPS_DRAINED, d, worker, t_read, t_drop, tau, 0.0,
                          attempts, timespec)
                done = time_is_up(ctrl, t_drop, deadline)
                break
    end_turn(script, ctrl, turn)


@cache
def _counting(loop: Any) -> Any:
    """``loop`` compiled with reference counting (for kernels that allocate)."""
    return njit(**{**WORKER_JIT, "_nrt": True})(loop.py_func)


def loop_for_kernels(loop: Any, kernels: tuple[Any, ...]) -> Any:
    """The sparse worker ``loop`` to run with the model's sparse ``kernels``: as compiled
    (without reference counting) when every kernel is compiled without it too (``_nrt=False``:
    the built-in linear models), else the same loop with reference counting, so that a
    plug-in's kernels may allocate (Numba compiles a kernel with the options of the loop that
    calls it, and allocating needs the counting)."""
    if all(getattr(k, "targetoptions", {}).get("_nrt", True) is False for k in kernels):
        return loop
    return _counting(loop)
