"""Numeric replay's recorded reads and applies on several cores, bit for bit as on one.

In timing-first replay the gradient of a read at version t0 is a function of θ_{t0} and the
worker's minibatch only, so the gradients of the reads in flight can be computed at the same
time, each on its own copy of θ, while the applies (cheap) keep the simulation's order.
:class:`ReplayPipeline` runs a recorded op sequence (the contract of the one-core loop in
:mod:`stalesgd.sim.replay`) that way, with ``threads`` threads running nopython code without
the GIL:

* the calling thread walks the ops in order: a read draws the worker's minibatch (the same
  Mersenne Twister draws, in the same order), copies θ into a free snapshot and publishes a
  gradient task; an apply waits until the gradient it applies is computed, then
  does θ ← θ − η g with exactly the one-core loop's arithmetic;
* every thread, the calling one included while it waits, claims tasks in read order (an
  atomic counter) and computes each gradient from its snapshot into the worker's gradient
  row, with a workspace of its own.

A worker's next read waits for its previous gradient, so one gradient row per worker
suffices, as on one core; a snapshot is free again once its gradient is computed, so a few
per thread suffice (:data:`SLOTS_PER_THREAD`; few, so that they stay in cache).  Every
gradient is the kernel applied to the same θ bits and the same rows as on one core, so θ and
every loss are the same bits.  A non-finite loss is found when its gradient is awaited (a
snapshot whose loss is not finite is never reused); the walk stops there, the other tasks in
flight finish, and the first read in op order with a non-finite loss is reported, θ being
restored to that read's snapshot (θ just before it, where the one-core loop stops).  Only the
workers' minibatch streams may then have advanced past the one-core loop's: a diverged run
draws no further minibatch.

Whether the pipeline pays depends on where the host put the cores (see :class:`LoopChoice`,
which numeric replay uses to pick, batch by batch, between it and the one-core loop).
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
from stalesgd.real.libc import c_nanosleep
from stalesgd.real.spinlock import SPINS_BEFORE_YIELD, cpu_relax, sched_yield

from stalesgd.jitcache import specialise
from stalesgd.machine import usable_cores
from stalesgd.memory import line_zeros

from .batches import mt_draw
from .updates import apply_mean_step, apply_step

__all__ = ["MIN_GRADIENT_SECONDS", "SLOTS_PER_THREAD", "THREADS_ENV", "THREADS_PER_CORE",
           "LoopChoice", "ReplayPipeline", "gradient_seconds", "max_replay_threads",
           "replay_threads", "threads_allowed", "threads_from_env"]

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
#: turns of a wait (see ``_pause``) after which a waiting thread naps between looks, and
#: how long (microseconds): far below a gradient worth a pipeline (MIN_GRADIENT_SECONDS)
SPINS_BEFORE_NAP = 4096
NAP_MICROSECONDS = 10
#: the nap as a ``timespec`` (seconds, nanoseconds) for ``nanosleep``
_NAP = np.array([0, NAP_MICROSECONDS * 1000], np.int64)
#: θ snapshots per thread: tasks published and not yet computed wait in them
SLOTS_PER_THREAD = 2


def replay_threads(workers: int, gradient_seconds: Callable[[], float]) -> int:
    """The threads numeric replay of ``workers`` workers uses.

    :data:`THREADS_ENV`, when set, decides (:func:`threads_from_env`).  Otherwise: every
    usable core, up to one per worker, when more than one gradient can be in flight
    (``workers`` > 1) and one gradient (``gradient_seconds()``, measured only then) takes at
    least :data:`MIN_GRADIENT_SECONDS`; else one.
    """
    forced = threads_from_env()
    if forced is not None:
        return forced
    cores = usable_cores() or 1
    if int(workers) > 1 and cores > 1 and gradient_seconds() >= MIN_GRADIENT_SECONDS:
        return min(cores, int(workers))
    return 1


#: replay threads per usable core at most: more only spin against each other (999 threads
#: on 2 cores took a 3-second replay to 3 min 42 s)
THREADS_PER_CORE = 4


def max_replay_threads() -> int:
    """The most threads numeric replay may be given: :data:`THREADS_PER_CORE` per usable
    core (more threads than cores still show other interleavings, as tests want)."""
    return THREADS_PER_CORE * (usable_cores() or 1)


def threads_allowed() -> str:
    """What :data:`THREADS_ENV` (and a replay's ``threads``) may be, on this machine."""
    return (f"a whole number from 1 to {max_replay_threads()} ({THREADS_PER_CORE} per usable "
            "core; 1: numeric replay on one core)")


def threads_from_env() -> int | None:
    """The thread count :data:`THREADS_ENV` forces (None: unset, the automatic choice);
    ValueError naming it and what is allowed when it is not a whole number from 1 to
    :func:`max_replay_threads`."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return None
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if not 1 <= threads <= max_replay_threads():
        raise ValueError(f"{THREADS_ENV}={raw!r} is not allowed; use {threads_allowed()}")
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


class LoopChoice:
    """Which loop runs the next batch of ops: the pipeline or the one-core loop, whichever
    took less time per read when each was last timed (both give the same bits).

    The pipeline hands every θ snapshot and every gradient from one core to another.  On a
    virtual machine whose two vCPUs the host places on cores without a shared cache, each
    hand-over goes through memory, and the pipeline measured 0.34–0.5× the one-core loop's
    speed (MLP 784-128-10, batch 16) where it gives 1.7–1.9× on cores that share one; the
    host switches between the two placements every few seconds.  So batches are timed: the
    one-core loop is tried once the pipeline's time per read is no better than one gradient
    (``gradient_floor``, a lower bound of the one-core loop's), and the loop not chosen is
    timed again after :attr:`retry` batches, an interval that doubles (up to
    :data:`MAX_RETRY`) while it keeps losing and restarts at :data:`FIRST_RETRY` when it wins.
    Trials (the first batch, and each retry) are short batches (:data:`TRIAL_OPS`).
    """

    #: batches before the loop not chosen is timed again, at first and at most
    FIRST_RETRY = 2
    MAX_RETRY = 64
    #: ops in a batch that puts a loop on trial (the first batch, and each time the other
    #: loop is timed again): few, so that a trial of the slower loop costs little
    TRIAL_OPS = 512
    #: reads a batch needs for its time to count
    MIN_TIMED_READS = 64

    def __init__(self, gradient_floor: float) -> None:
        self.gradient_floor = float(gradient_floor)
        #: seconds per read of the last batch on the pipeline / on one core (None: untimed)
        self.pipeline_cost: float | None = None
        self.one_core_cost: float | None = None
        self.retry = self.FIRST_RETRY
        #: batches since each loop was last timed ([one core, pipeline])
        self._age = [0, 0]
        #: batches run on each loop so far ([one core, pipeline])
        self.batches = [0, 0]

    def _best_is_pipeline(self) -> bool:
        """Whether the pipeline is the faster loop as last timed (an untimed one-core loop
        counts as its floor, one gradient per read)."""
        if self.pipeline_cost is None:
            return True
        one_core = self.gradient_floor if self.one_core_cost is None else self.one_core_cost
        return self.pipeline_cost < one_core

    def _other_due(self, best: bool) -> bool:
        """Whether the loop that is not ``best`` is due to be timed again."""
        other_cost = self.one_core_cost if best else self.pipeline_cost
        return other_cost is not None and self._age[int(not best)] >= self.retry

    def use_pipeline(self) -> bool:
        """Whether the next batch runs on the pipeline."""
        best = self._best_is_pipeline()
        return not best if self._other_due(best) else best

    def next_is_trial(self) -> bool:
        """Whether the next batch is a trial (the first, or the other loop timed again): it
        should then be short (:attr:`TRIAL_OPS`)."""
        return self.pipeline_cost is None or self._other_due(self._best_is_pipeline())

    def record(self, pipeline: bool, seconds: float, reads: int) -> None:
        """A batch of ``reads`` reads took ``seconds`` on the pipeline (or on one core).

        A batch of fewer than :data:`MIN_TIMED_READS` reads (a flush before an evaluation, the
        end of a run) is counted but not timed: its time is mostly the loop's start."""
        if reads <= 0:
            return
        if reads < self.MIN_TIMED_READS:
            self.batches[int(pipeline)] += 1
            return
        best = self._best_is_pipeline()
        if pipeline:
            self.pipeline_cost = float(seconds) / int(reads)
        else:
            self.one_core_cost = float(seconds) / int(reads)
        self.batches[int(pipeline)] += 1
        self._age[int(pipeline)] = 0
        self._age[int(not pipeline)] += 1
        if pipeline != best:  # the other loop was timed again
            lost = self._best_is_pipeline() == best
            self.retry = min(2 * self.retry, self.MAX_RETRY) if lost else self.FIRST_RETRY


# The nopython loops share two tuples: ``work`` = (X, y, dims, snaps, grads, rows, idx, mask)
# (the data, the θ snapshots, the workers' gradients and minibatches, the rows of ``idx`` when
# the minibatches are not drawn here) and ``tasks`` = (task_w, task_slot, task_loss, done,
# ctrl) (per task: its worker, its snapshot, its loss, whether it is done; the control slots).


@njit(nogil=True, inline="always")
def _run_next_task(kernel, ws, work, tasks):  # noqa: ANN001
    """Claim the next published task and compute its gradient; False when none is open."""
    X, y, dims, snaps, grads, rows, idx, mask = work  # noqa: N806
    task_w, task_slot, task_loss, done, ctrl = tasks
    c = atomic_load(ctrl, C_PUBLISHED)
    k = atomic_load(ctrl, C_CLAIMED)
    if k >= c:
        return False
    if atomic_cas(ctrl, C_CLAIMED, k, k + 1) != k:
        return True  # another thread took it: look again
    w = task_w[k]
    batch = rows[w] if mask > 0 else idx[k]
    task_loss[k] = kernel(snaps[task_slot[k]], X, y, batch, grads[w], ws, dims)
    store_release(done, k, 1)
    return True


@njit(nogil=True, inline="always")
def _pause(spins):  # noqa: ANN001
    """One turn of a wait: the CPU's pause, a yield every few turns, and a nap once the wait
    is long (on a busy machine the thread waited for may have no core: spinning would keep
    it from one)."""
    if spins >= SPINS_BEFORE_NAP:
        c_nanosleep(_NAP)
    elif spins % SPINS_BEFORE_YIELD == 0:
        sched_yield()
    else:
        cpu_relax()


@njit(nogil=True)
def _serve(kernel, ws, work, tasks):  # noqa: ANN001
    """A helper thread: compute gradient tasks until the walk is over and none is left."""
    ctrl = tasks[4]
    spins = 0
    while atomic_load(ctrl, C_ABORT) == 0:
        if _run_next_task(kernel, ws, work, tasks):
            spins = 0
        elif atomic_load(ctrl, C_FINISHED) != 0 and \
                atomic_load(ctrl, C_CLAIMED) >= atomic_load(ctrl, C_PUBLISHED):
            return
        else:
            spins += 1
            _pause(spins)


@njit(nogil=True, inline="always")
def _await(k, kernel, ws, work, tasks):  # noqa: ANN001
    """Wait for task ``k`` (none when k < 0), computing open tasks meanwhile; whether its
    loss is finite (False too when a helper failed: its error is raised after the walk)."""
    if k < 0:
        return True
    done, task_loss, ctrl = tasks[3], tasks[2], tasks[4]
    spins = 0
    while load_acquire(done, k) == 0:
        if atomic_load(ctrl, C_ABORT) != 0:
            return False
        if _run_next_task(kernel, ws, work, tasks):
            spins = 0
        else:
            spins += 1
            _pause(spins)
    return np.isfinite(task_loss[k])


@njit(nogil=True, inline="always")
def _free_slot(slot_task, kernel, ws, work, tasks):  # noqa: ANN001
    """A snapshot slot whose task is done with a finite loss (waiting for the oldest if
    none is), or −1 once a task with a non-finite loss is seen (its snapshot is kept)."""
    task_loss, done = tasks[2], tasks[3]
    oldest = 0
    for s in range(slot_task.shape[0]):
        k = slot_task[s]
        if k < 0:
            return s
        if load_acquire(done, k) != 0:
            return s if np.isfinite(task_loss[k]) else -1
        if k < slot_task[oldest]:
            oldest = s
    return oldest if _await(slot_task[oldest], kernel, ws, work, tasks) else -1


@njit(nogil=True, inline="always")
def _claim_slot(w, pending, slot_task, kernel, ws, work, tasks):  # noqa: ANN001
    """Before worker ``w``'s read: wait for its previous gradient and find a free snapshot
    slot; −1 once a non-finite loss is seen."""
    if not _await(pending[w], kernel, ws, work, tasks):
        return -1
    return _free_slot(slot_task, kernel, ws, work, tasks)


@njit(nogil=True, inline="always")
def _publish(r, i, w, s, pending, slot_task, task_op, mt_key, mt_pos, n_rows,  # noqa: ANN001
             work, tasks):
    """Worker ``w``'s read at op ``i`` (its θ already in slot ``s``) becomes task ``r``;
    its minibatch is drawn here, in op order."""
    rows, mask = work[5], work[7]
    task_w, task_slot, ctrl = tasks[0], tasks[1], tasks[4]
    if mask > 0:
        mt_draw(mt_key, mt_pos, w, n_rows, mask, rows[w])
    task_w[r] = w
    task_slot[r] = s
    task_op[r] = i
    slot_task[s] = r
    pending[w] = r
    atomic_store(ctrl, C_PUBLISHED, r + 1)


@njit(nogil=True)
def _walk(kernel, theta, ws, work, tasks, ops, etas, mt_key, mt_pos,  # noqa: ANN001
          n_rows, task_op, pending, slot_task):
    """The calling thread's part: the ops in order (see the module docstring).  Returns the
    index of the first read with a non-finite loss, θ as just before it, or −1.

    A read right after a worker's apply takes its snapshot in the apply's loop (θ is read
    once for both); the waits it needs are done before the apply, which changes no value."""
    snaps, grads = work[3], work[4]
    task_slot, task_loss, ctrl = tasks[1], tasks[2], tasks[4]
    n = theta.shape[0]
    m = grads.shape[0]
    n_ops = ops.shape[0]
    pending[:] = -1
    slot_task[:] = -1
    r = 0
    i = 0
    while i < n_ops:
        op = ops[i]
        w = op >> 1
        if op & 1 == 0:  # a read on its own
            s = _claim_slot(w, pending, slot_task, kernel, ws, work, tasks)
            if s < 0:
                break
            snap = snaps[s]
            for j in range(n):
                snap[j] = theta[j]
            _publish(r, i, w, s, pending, slot_task, task_op, mt_key, mt_pos, n_rows, work,
                     tasks)
            r += 1
            i += 1
            continue
        eta = etas[i]
        if w == m:
            ok = True
            for v in range(m):
                ok = ok and _await(pending[v], kernel, ws, work, tasks)
            if not ok:
                break
            apply_mean_step(theta, grads, eta)
            i += 1
            continue
        if not _await(pending[w], kernel, ws, work, tasks):
            break
        g = grads[w]
        if i + 1 < n_ops and ops[i + 1] & 1 == 0:  # the apply, then a read: one loop
            reader = ops[i + 1] >> 1
            s = _claim_slot(reader, pending, slot_task, kernel, ws, work, tasks)
            if s < 0:
                break
            snap = snaps[s]
            for j in range(n):
                v = theta[j] - eta * g[j]
                theta[j] = v
                snap[j] = v
            _publish(r, i + 1, reader, s, pending, slot_task, task_op, mt_key, mt_pos, n_rows,
                     work, tasks)
            r += 1
            i += 2
        else:
            apply_step(theta, g, eta)
            i += 1
    atomic_store(ctrl, C_FINISHED, 1)
    for k in range(r):
        _await(k, kernel, ws, work, tasks)
    for k in range(r):
        if not np.isfinite(task_loss[k]):
            snap = snaps[task_slot[k]]
            for j in range(n):
                theta[j] = snap[j]
            return task_op[k]
    return -1


def _serve_or_abort(serve: Any, ws: np.ndarray, work: tuple, tasks: tuple) -> None:
    """A helper thread's call: ``serve`` (:func:`_serve` bound to the kernel), and on an
    error the other threads stop waiting for it (the error is raised in the calling
    thread)."""
    try:
        serve(ws, work, tasks)
    except BaseException:
        tasks[4][C_ABORT] = 1
        raise


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
    workers, the workers' Mersenne Twister states), shared, not copied; the pipeline adds
    :data:`SLOTS_PER_THREAD` θ snapshots per thread (a snapshot is free again once its
    gradient is computed: few, so they stay in cache), one minibatch per worker and a
    workspace per thread (shaped as ``ws``).
    """

    def __init__(self, threads: int, kernel: Any, theta: np.ndarray, X: np.ndarray,  # noqa: N803
                 y: np.ndarray, dims: Any, ws: np.ndarray, grads: np.ndarray, batch: int,
                 mt_key: np.ndarray, mt_pos: np.ndarray, n_rows: int, mask: int) -> None:
        if int(threads) < 2:
            raise ValueError(f"threads {threads!r} must be >= 2 for a pipeline")
        self.threads = int(threads)
        self.kernel, self.theta, self.grads = kernel, theta, grads
        # the loops bound to the kernel: kept in the on-disk cache for the built-in models
        self._walk, self._serve = specialise(_walk, kernel), specialise(_serve, kernel)
        self.data = (X, y, dims)
        self.mt_key, self.mt_pos, self.n_rows, self.mask = mt_key, mt_pos, int(n_rows), int(mask)
        m = grads.shape[0]
        self.snaps = np.zeros((SLOTS_PER_THREAD * self.threads, theta.shape[0]), theta.dtype)
        self.rows = np.zeros((m, int(batch)), np.int64)
        # a workspace per thread on cache lines of its own (aligned for vector loads, no line
        # shared by two threads: stalesgd.memory)
        self.ws = [line_zeros(ws.shape[0], ws.dtype) for _ in range(self.threads)]
        self.pending = np.zeros(m, np.int64)
        self.slot_task = np.zeros(self.snaps.shape[0], np.int64)
        # compile both loops for these argument types now, not on the clock (a helper whose
        # walk is over returns at once)
        no_idx = np.zeros((0, int(batch)), np.int64)
        self.run(np.zeros(0, np.int64), np.zeros(0), no_idx)
        work, tasks, _ = self._arrays(no_idx, 0)
        tasks[4][C_FINISHED] = 1
        self._serve(self.ws[1], work, tasks)

    def _arrays(self, idx: np.ndarray, reads: int) -> tuple[tuple, tuple, np.ndarray]:
        """The ``work`` and ``tasks`` tuples of the nopython loops, and the tasks' op index."""
        work = (*self.data, self.snaps, self.grads, self.rows, idx, self.mask)
        tasks = (np.zeros(reads, np.int64), np.zeros(reads, np.int64), np.zeros(reads),
                 np.zeros(reads, np.int64), np.zeros(_CTRL_SIZE, np.int64))
        return work, tasks, np.zeros(reads, np.int64)

    def run(self, ops: np.ndarray, etas: np.ndarray, idx: np.ndarray) -> int:
        """Run ``ops`` (with η ``etas``; minibatches drawn, or ``idx`` rows in read order
        when the mask is 0): the index of the first read with a non-finite loss, or −1."""
        reads = int(np.count_nonzero((ops & 1) == 0))
        work, tasks, task_op = self._arrays(idx, reads)
        pool = _helper_pool(self.threads - 1)
        helpers: list[Future] = []
        for t in range(1, self.threads if reads else 1):
            helpers.append(pool.submit(_serve_or_abort, self._serve, self.ws[t], work,
                                       tasks))
        try:
            bad = self._walk(self.theta, self.ws[0], work, tasks, ops, etas, self.mt_key,
                             self.mt_pos, self.n_rows, task_op, self.pending, self.slot_task)
        except BaseException:
            tasks[4][C_ABORT] = 1
            raise
        finally:
            for f in helpers:
                f.result()
        return int(bad)
