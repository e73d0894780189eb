"""Numeric replay's recorded reads and applies on several cores, bit for bit as on one.

In timing-first replay the gradient of a read at version t0 is a function of θ_{t0} and the
worker's minibatch only, so the gradients of the reads in flight can be computed at the same
time, each on its own copy of θ, while the applies (cheap) keep the simulation's order.
:class:`ReplayPipeline` runs a recorded op sequence (the contract of the one-core loop in
:mod:`stalesgd.sim.replay`) that way, with ``threads`` threads running nopython code without
the GIL:

* the calling thread walks the ops in order: a read draws the worker's minibatch (the same
  Mersenne Twister draws, in the same order), copies θ into the worker's snapshot and
  publishes a gradient task; an apply waits until the gradient it applies is computed, then
  does θ ← θ − η g with exactly the one-core loop's arithmetic;
* every thread, the calling one included while it waits, claims tasks in read order (an
  atomic counter) and computes each gradient from its snapshot into the worker's gradient
  row, with a workspace of its own.

A worker's next read waits for its previous gradient, so one snapshot and one gradient per
worker suffice (memory 2·m·d).  Every gradient is the kernel applied to the same θ bits and
the same rows as on one core, so θ and every loss are the same bits.  A non-finite loss is
found when its gradient is awaited; the walk stops there, the other tasks in flight finish,
and the first read in op order with a non-finite loss is reported, θ being restored to that
read's snapshot (θ just before it, where the one-core loop stops).  Only the workers'
minibatch streams may then have advanced past the one-core loop's: a diverged run draws no
further minibatch.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from numba import njit
from stalesgd.real.atomics import atomic_cas, atomic_load, atomic_store, load_acquire, store_release
from stalesgd.real.spinlock import SPINS_BEFORE_YIELD, cpu_relax, sched_yield

from stalesgd.machine import usable_cores

from .batches import mt_draw

__all__ = ["MIN_GRADIENT_SECONDS", "THREADS_ENV", "ReplayPipeline", "gradient_seconds",
           "parse_threads", "replay_threads"]

#: Environment variable: the threads numeric replay uses (``1``: the one-core loop)
THREADS_ENV = "STALESGD_REPLAY_THREADS"
#: the shortest gradient (seconds, one call at θ0) for which the automatic choice runs the
#: pipeline: below it, copying θ and handing tasks between threads costs more than it saves
MIN_GRADIENT_SECONDS = 50e-6

# slots of the control array, one cache line apart: tasks published, tasks claimed, the walk
# is over (no more tasks), abort (an error in the calling thread: helpers leave at once)
_SLOT = 8
C_PUBLISHED, C_CLAIMED, C_FINISHED, C_ABORT = (_SLOT * i for i in range(4))
_CTRL_SIZE = 4 * _SLOT


def replay_threads(workers: int, gradient_seconds: Callable[[], float]) -> int:
    """The threads numeric replay of ``workers`` workers uses.

    :data:`THREADS_ENV`, when set, decides (a whole number >= 1; more threads than workers
    are never used).  Otherwise: every usable core, up to one per worker, when more than one
    gradient can be in flight (``workers`` > 1) and one gradient (``gradient_seconds()``,
    measured only then) takes at least :data:`MIN_GRADIENT_SECONDS`; else one.
    """
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw:
        threads = parse_threads(raw)
    elif int(workers) > 1 and (usable_cores() or 1) > 1:
        big = gradient_seconds() >= MIN_GRADIENT_SECONDS
        threads = (usable_cores() or 1) if big else 1
    else:
        threads = 1
    return max(1, min(threads, int(workers)))


def parse_threads(raw: str) -> int:
    """The value of :data:`THREADS_ENV` as a thread count; ValueError naming it otherwise."""
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"{THREADS_ENV}={raw!r} is not allowed; use a whole number >= 1 "
                         "(1: numeric replay on one core)")
    return threads


def gradient_seconds(kernel: Any, theta: np.ndarray, X: np.ndarray, y: np.ndarray,  # noqa: N803
                     dims: Any, ws: np.ndarray, batch: int, n_rows: int) -> float:
    """The fastest of three gradient calls at ``theta`` on a fixed minibatch (no stream is
    advanced): the cost the automatic thread choice weighs."""
    idx = np.arange(batch, dtype=np.int64) % max(1, n_rows)
    grad = np.zeros_like(theta)
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        kernel(theta, X, y, idx, grad, ws, dims)
        best = min(best, time.perf_counter() - t0)
    return float(best)


@njit(nogil=True, inline="always")
def _run_next_task(kernel, X, y, dims, ws, snaps, grads, rows, idx, mask,  # noqa: ANN001
                   task_w, task_loss, done, ctrl):
    """Claim the next published task and compute its gradient; False when none is open."""
    c = atomic_load(ctrl, C_CLAIMED)
    if c >= atomic_load(ctrl, C_PUBLISHED):
        return False
    if atomic_cas(ctrl, C_CLAIMED, c, c + 1) != c:
        return True  # another thread took it: look again
    w = task_w[c]
    batch = rows[w] if mask > 0 else idx[c]
    task_loss[c] = kernel(snaps[w], X, y, batch, grads[w], ws, dims)
    store_release(done, c, 1)
    return True


@njit(nogil=True)
def _serve(kernel, X, y, dims, ws, snaps, grads, rows, idx, mask,  # noqa: ANN001
           task_w, task_loss, done, ctrl):
    """A helper thread: compute gradient tasks until the walk is over and none is left."""
    spins = 0
    while True:
        if atomic_load(ctrl, C_ABORT) != 0:
            return
        if _run_next_task(kernel, X, y, dims, ws, snaps, grads, rows, idx, mask, task_w,
                          task_loss, done, ctrl):
            spins = 0
            continue
        if atomic_load(ctrl, C_FINISHED) != 0 and \
                atomic_load(ctrl, C_CLAIMED) >= atomic_load(ctrl, C_PUBLISHED):
            return
        spins += 1
        if spins % SPINS_BEFORE_YIELD == 0:
            sched_yield()
        else:
            cpu_relax()


@njit(nogil=True, inline="always")
def _await(k, kernel, X, y, dims, ws, snaps, grads, rows, idx, mask,  # noqa: ANN001
           task_w, task_loss, done, ctrl):
    """Wait for task ``k`` (none when k < 0), computing open tasks meanwhile; whether its
    loss is finite."""
    if k < 0:
        return True
    spins = 0
    while load_acquire(done, k) == 0:
        if _run_next_task(kernel, X, y, dims, ws, snaps, grads, rows, idx, mask, task_w,
                          task_loss, done, ctrl):
            spins = 0
            continue
        spins += 1
        if spins % SPINS_BEFORE_YIELD == 0:
            sched_yield()
        else:
            cpu_relax()
    return np.isfinite(task_loss[k])


@njit(nogil=True)
def _walk(kernel, theta, X, y, dims, ws, snaps, grads, rows, ops, etas, idx,  # noqa: ANN001
          mt_key, mt_pos, n_rows, mask, task_w, task_op, task_loss, done, pending, ctrl):
    """The calling thread's part: the ops in order (see the module docstring).  Returns the
    index of the first read with a non-finite loss, θ as just before it, or −1."""
    n = theta.shape[0]
    m = grads.shape[0]
    for v in range(m):
        pending[v] = -1
    r = 0
    for i in range(ops.shape[0]):
        op = ops[i]
        w = op >> 1
        if op & 1:
            eta = etas[i]
            if w == m:
                ok = True
                for v in range(m):
                    ok = ok and _await(pending[v], kernel, X, y, dims, ws, snaps, grads, rows,
                                       idx, mask, task_w, task_loss, done, ctrl)
                if not ok:
                    break
                scale = eta / m
                for j in range(n):
                    acc = 0.0
                    for v in range(m):
                        acc += grads[v, j]
                    theta[j] -= scale * acc
            else:
                if not _await(pending[w], kernel, X, y, dims, ws, snaps, grads, rows, idx,
                              mask, task_w, task_loss, done, ctrl):
                    break
                g = grads[w]
                for j in range(n):
                    theta[j] -= eta * g[j]
        else:
            if not _await(pending[w], kernel, X, y, dims, ws, snaps, grads, rows, idx, mask,
                          task_w, task_loss, done, ctrl):
                break
            if mask > 0:
                mt_draw(mt_key, mt_pos, w, n_rows, mask, rows[w])
            snap = snaps[w]
            for j in range(n):
                snap[j] = theta[j]
            task_w[r] = w
            task_op[r] = i
            pending[w] = r
            r += 1
            atomic_store(ctrl, C_PUBLISHED, r)
    atomic_store(ctrl, C_FINISHED, 1)
    for k in range(r):
        _await(k, kernel, X, y, dims, ws, snaps, grads, rows, idx, mask, task_w, task_loss,
               done, ctrl)
    for k in range(r):
        if not np.isfinite(task_loss[k]):
            snap = snaps[task_w[k]]
            for j in range(n):
                theta[j] = snap[j]
            return task_op[k]
    return -1


#: helper threads shared by every pipeline of the process, and how many (grown on demand)
_helpers: list[Any] = [None, 0]
_helpers_lock = threading.Lock()


def _helper_pool(size: int) -> ThreadPoolExecutor:
    """The process's helper threads, at least ``size`` of them (idle ones wait, not spin)."""
    with _helpers_lock:
        pool, have = _helpers
        if pool is None or have < size:
            if pool is not None:
                pool.shutdown(wait=False)
            pool = ThreadPoolExecutor(size, thread_name_prefix="replay")
            _helpers[:] = [pool, size]
        return pool


class ReplayPipeline:
    """Runs recorded op sequences of numeric replay on ``threads`` threads (>= 2).

    The arrays are those of the one-core loop (θ, the data, the gradient rows of the ``m``
    workers, the workers' Mersenne Twister states); the pipeline adds one θ snapshot and one
    minibatch per worker and a workspace per thread (``ws``: the calling thread's, copied).
    """

    def __init__(self, threads: int, kernel: Any, theta: np.ndarray, X: np.ndarray,  # noqa: N803
                 y: np.ndarray, dims: Any, ws: np.ndarray, grads: np.ndarray, batch: int,
                 mt_key: np.ndarray, mt_pos: np.ndarray, n_rows: int, mask: int) -> None:
        if int(threads) < 2:
            raise ValueError(f"threads {threads!r} must be >= 2 for a pipeline")
        self.threads = int(threads)
        self.kernel, self.theta, self.X, self.y, self.dims = kernel, theta, X, y, dims
        self.grads = grads
        self.mt_key, self.mt_pos, self.n_rows, self.mask = mt_key, mt_pos, int(n_rows), int(mask)
        m = grads.shape[0]
        self.snaps = np.zeros_like(grads)
        self.rows = np.zeros((m, int(batch)), np.int64)
        self.ws = np.zeros((self.threads, ws.shape[0]), ws.dtype)
        self.pending = np.zeros(m, np.int64)
        # compile both loops for these argument types now, not on the clock (a helper with
        # the walk already over returns at once)
        no_idx = np.zeros((0, int(batch)), np.int64)
        self.run(np.zeros(0, np.int64), np.zeros(0), no_idx)
        ctrl = np.zeros(_CTRL_SIZE, np.int64)
        ctrl[C_FINISHED] = 1
        empty = np.zeros(0, np.int64)
        _serve(kernel, X, y, dims, self.ws[1], self.snaps, grads, self.rows, no_idx,
               self.mask, empty, np.zeros(0), empty, ctrl)

    def run(self, ops: np.ndarray, etas: np.ndarray, idx: np.ndarray) -> int:
        """Run ``ops`` (with η ``etas``; minibatches drawn, or ``idx`` rows in read order
        when the mask is 0): the index of the first read with a non-finite loss, or −1."""
        reads = int(np.count_nonzero((ops & 1) == 0))
        task_w = np.zeros(reads, np.int64)
        task_op = np.zeros(reads, np.int64)
        task_loss = np.zeros(reads, np.float64)
        done = np.zeros(reads, np.int64)
        ctrl = np.zeros(_CTRL_SIZE, np.int64)
        tasks = (task_w, task_loss, done, ctrl)
        shared = (self.kernel, self.X, self.y, self.dims)
        per_task = (self.snaps, self.grads, self.rows, idx, self.mask)
        pool = _helper_pool(self.threads - 1)
        helpers: list[Future] = [
            pool.submit(_serve, *shared, self.ws[t], *per_task, *tasks)
            for t in range(1, self.threads)] if reads else []
        try:
            bad = _walk(self.kernel, self.theta, self.X, self.y, self.dims, self.ws[0],
                        self.snaps, self.grads, self.rows, ops, etas, idx, self.mt_key,
                        self.mt_pos, self.n_rows, self.mask, task_w, task_op, task_loss, done,
                        self.pending, ctrl)
        except BaseException:
            ctrl[C_ABORT] = 1
            raise
        finally:
            for f in helpers:
                f.result()
        return int(bad)
