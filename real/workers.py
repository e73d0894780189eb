"""The worker loops of the real engine: one long nopython loop per thread.

Each algorithm of DESIGN §4 is one ``@njit(nogil=True)`` function that a
Python thread calls once; it runs until the shared stop flag is raised or
the update budget is spent, so no Python runs per update.  The gradient
kernel of the problem is passed in as a first-class function (the model
contract of :mod:`stalesgd.problems.base`).

Shared state travels as arrays:

``ctrl`` (int64)
    control slots, indexed by the ``C_*`` constants: the version counter
    (number of updates applied), the stop and diverged flags, the lock, the
    index of the active step-size table, and barrier counters for ``sync``.
``ctrl[C_ACTIVE]``
    elastic parallelism: workers with index ≥ this value park at the top of their loop
    (sleeping in short ``nanosleep`` naps, so a parked worker uses no core) and rejoin when
    it rises again, with their RNG state and logs intact; it starts above any worker count.
``tables`` (float64, 2 × (τmax+1))
    double-buffered step-size tables s(τ); the monitor writes the inactive
    row and then atomically switches ``C_TABLE``, so workers never stop.
``log_*``
    one row per update, indexed by the global update index k, so no two
    workers ever write the same row.  ``log_worker`` starts at -1: a row is
    complete once its worker id is stored (written last).

Staleness is measured exactly as DESIGN §4 defines it: τ = t1 − t0, where
t0 is the version read with the parameters and t1 the version the update is
applied at.
"""

from __future__ import annotations

import ctypes

import numpy as np
from numba import njit

from stalesgd.problems._kernels import n_rows as n_examples

from .atomics import atomic_add, atomic_cas, atomic_load, atomic_store
from .clock import monotonic_now
from .spinlock import SPINS_BEFORE_YIELD, sched_yield, spin_lock_acquire, spin_lock_release

# Slots of the int64 control array, one 64-byte cache line apart so that the
# fetch-adds on the version counter do not invalidate the line that lock and
# stop-flag spinners read (false sharing).
_LINE = 8
C_VERSION = 0 * _LINE
C_STOP = 1 * _LINE
C_DIVERGED = 2 * _LINE
C_LOCK = 3 * _LINE
C_TABLE = 4 * _LINE
C_BARRIER_COUNT = 5 * _LINE
C_BARRIER_GEN = 6 * _LINE
C_ACTIVE = 7 * _LINE
C_SYNC_DONE = 8 * _LINE
C_WORKER_BYTES = 9 * _LINE  # bytes of worker-owned parameter buffers held now (elastic runs)
C_WORKER_BYTES_HIGH = 10 * _LINE  # ... and their high-water mark
N_CTRL = 11 * _LINE


#: ``ctrl[C_ACTIVE]`` when every worker runs (no elastic control)
ALL_ACTIVE = 1 << 62
#: first nap of a parked worker between two looks at ``ctrl[C_ACTIVE]`` (nanoseconds); the
#: naps double up to :data:`PARK_MAX_NANOS`, so a short pause rejoins fast and a long one
#: costs a wake-up every 2 ms (measured: a parked worker uses < 1 % of a core)
PARK_NANOS = 100_000
PARK_MAX_NANOS = 2_000_000

# The small helpers below are ``inline="always"``: inlined into the worker loops at the
# Numba IR level, so they are not compiled (and kept in memory) as functions of their own,
# each with a Python wrapper; the generated loop is the same, LLVM inlined them anyway.

_libc = ctypes.CDLL(None)
_nanosleep = _libc.nanosleep
_nanosleep.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
_nanosleep.restype = ctypes.c_int


def new_control() -> np.ndarray:
    """A control array, zeroed except that every worker is active."""
    ctrl = np.zeros(N_CTRL, dtype=np.int64)
    ctrl[C_ACTIVE] = ALL_ACTIVE
    return ctrl


@njit(nogil=True)
def park_while_inactive(ctrl: np.ndarray, worker: int, nap: np.ndarray) -> int:
    """Sleep in naps (``nap`` is a timespec scratch: seconds, nanoseconds) while this worker
    is parked (``worker >= ctrl[C_ACTIVE]``) and the run goes on; returns the naps taken.
    Atomic loads, so the check is not hoisted out of the loop; ``nanosleep`` gives the core
    away; the nap doubles from :data:`PARK_NANOS` to :data:`PARK_MAX_NANOS`."""
    naps = 0
    nap[0] = 0
    nap[1] = PARK_NANOS
    while worker >= atomic_load(ctrl, C_ACTIVE) and atomic_load(ctrl, C_STOP) == 0:
        _nanosleep(nap.ctypes.data, 0)
        naps += 1
        if nap[1] < PARK_MAX_NANOS:
            nap[1] = min(2 * nap[1], PARK_MAX_NANOS)
    return naps


@njit(nogil=True, inline="always")
def _new_nap() -> np.ndarray:
    nap = np.zeros(2, dtype=np.int64)
    nap[1] = PARK_NANOS
    return nap


@njit(nogil=True, inline="always")
def _count_buffer_bytes(ctrl: np.ndarray, nbytes: int) -> None:
    """Add ``nbytes`` (negative: freed) to the worker-buffer bytes held and raise their
    high-water mark if it was passed."""
    now = atomic_add(ctrl, C_WORKER_BYTES, nbytes) + nbytes
    high = atomic_load(ctrl, C_WORKER_BYTES_HIGH)
    while now > high:
        if atomic_cas(ctrl, C_WORKER_BYTES_HIGH, high, now) == high:
            break
        high = atomic_load(ctrl, C_WORKER_BYTES_HIGH)


# Elastic runs: a worker whose private buffers arrive empty (length 0) owns them: it allocates
# them when it becomes active and frees them when it is parked, so parked workers hold no
# parameter-sized memory; ctrl[C_WORKER_BYTES_HIGH] records the most held at once.


@njit(nogil=True, inline="always")
def _draw_batch(batch_idx: np.ndarray, n_rows: int) -> None:
    """Fill ``batch_idx`` with rows drawn uniformly with replacement."""
    for i in range(batch_idx.shape[0]):
        batch_idx[i] = np.random.randint(0, n_rows)


@njit(nogil=True, inline="always")
def _eta(tables: np.ndarray, ctrl: np.ndarray, lr: float, tau: int) -> float:
    """η0 · s(τ) from the active table, τ beyond its end using the last entry."""
    row = atomic_load(ctrl, C_TABLE)
    last = tables.shape[1] - 1
    return lr * tables[row, min(tau, last)]


@njit(nogil=True, inline="always")
def _flag_divergence(ctrl: np.ndarray) -> None:
    atomic_store(ctrl, C_DIVERGED, 1)
    atomic_store(ctrl, C_STOP, 1)


@njit(nogil=True, inline="always")
def _log(k, worker, t_read, t_apply, tau, eta, log_worker, log_tread, log_tapply, log_tau,
         log_eta):
    log_tread[k] = t_read
    log_tapply[k] = t_apply
    log_tau[k] = tau
    log_eta[k] = eta
    log_worker[k] = worker


@njit(nogil=True)
def lock_worker(kernel, worker, seed, theta, local, X, y, batch_idx, grad, ws, dims, ctrl,
                tables, lr, n_max, t_origin, timespec, log_worker, log_tread, log_tapply,
                log_tau, log_eta):
    """AsyncSGD with one lock: copy θ and read t0 under the lock, compute outside,
    apply under the lock (τ = v − t0, θ ← θ − η(τ) g, v += 1).

    With one worker this is also ``seq`` (the lock is then never contended but
    keeps the monitor's snapshots consistent).  Empty ``local``/``grad``: the worker owns
    them (allocated while active, freed while parked; elastic runs).
    """
    np.random.seed(seed)
    n_rows = n_examples(X)
    n_params = theta.shape[0]
    owned = local.shape[0] == 0
    nap = _new_nap()
    while atomic_load(ctrl, C_STOP) == 0:
        if worker >= atomic_load(ctrl, C_ACTIVE):
            if owned and local.shape[0] > 0:
                _count_buffer_bytes(ctrl, -(local.nbytes + grad.nbytes))
                local = np.empty(0, dtype=theta.dtype)
                grad = np.empty(0, dtype=theta.dtype)
            park_while_inactive(ctrl, worker, nap)
            continue
        if owned and local.shape[0] == 0:
            local = np.empty(n_params, dtype=theta.dtype)
            grad = np.zeros(n_params, dtype=theta.dtype)
            _count_buffer_bytes(ctrl, local.nbytes + grad.nbytes)
        _draw_batch(batch_idx, n_rows)
        spin_lock_acquire(ctrl, C_LOCK)
        t_read = monotonic_now(timespec) - t_origin
        t0 = atomic_load(ctrl, C_VERSION)
        for j in range(n_params):
            local[j] = theta[j]
        spin_lock_release(ctrl, C_LOCK)

        loss = kernel(local, X, y, batch_idx, grad, ws, dims)
        if not np.isfinite(loss):
            _flag_divergence(ctrl)
            break

        spin_lock_acquire(ctrl, C_LOCK)
        k = atomic_load(ctrl, C_VERSION)
        if k >= n_max:
            spin_lock_release(ctrl, C_LOCK)
            atomic_store(ctrl, C_STOP, 1)
            break
        tau = k - t0
        eta = _eta(tables, ctrl, lr, tau)
        for j in range(n_params):
            theta[j] -= eta * grad[j]
        atomic_store(ctrl, C_VERSION, k + 1)
        t_apply = monotonic_now(timespec) - t_origin
        spin_lock_release(ctrl, C_LOCK)
        _log(k, worker, t_read, t_apply, tau, eta, log_worker, log_tread, log_tapply, log_tau,
             log_eta)


@njit(nogil=True)
def hogwild_worker(kernel, worker, seed, theta, local, X, y, batch_idx, grad, ws, dims, ctrl,
                   tables, lr, n_max, t_origin, timespec, log_worker, log_tread, log_tapply,
                   log_tau, log_eta):
    """Hogwild!: no lock; the gradient is computed on θ in place (reads may be
    inconsistent), t0 is an atomic read of v, the update index comes from an
    atomic fetch-add of v and the update is applied element-wise (lost
    element updates are possible, as in the original).  ``local`` is unused.  An empty
    ``grad``: the worker owns it (allocated while active, freed while parked).
    """
    np.random.seed(seed)
    n_rows = n_examples(X)
    n_params = theta.shape[0]
    owned = grad.shape[0] == 0
    nap = _new_nap()
    while atomic_load(ctrl, C_STOP) == 0:
        if worker >= atomic_load(ctrl, C_ACTIVE):
            if owned and grad.shape[0] > 0:
                _count_buffer_bytes(ctrl, -grad.nbytes)
                grad = np.empty(0, dtype=theta.dtype)
            park_while_inactive(ctrl, worker, nap)
            continue
        if owned and grad.shape[0] == 0:
            grad = np.zeros(n_params, dtype=theta.dtype)
            _count_buffer_bytes(ctrl, grad.nbytes)
        _draw_batch(batch_idx, n_rows)
        t_read = monotonic_now(timespec) - t_origin
        t0 = atomic_load(ctrl, C_VERSION)
        loss = kernel(theta, X, y, batch_idx, grad, ws, dims)
        if not np.isfinite(loss):
            _flag_divergence(ctrl)
            break
        k = atomic_add(ctrl, C_VERSION, 1)
        if k >= n_max:
            atomic_store(ctrl, C_STOP, 1)
            break
        tau = k - t0
        eta = _eta(tables, ctrl, lr, tau)
        for j in range(n_params):
            theta[j] -= eta * grad[j]
        t_apply = monotonic_now(timespec) - t_origin
        _log(k, worker, t_read, t_apply, tau, eta, log_worker, log_tread, log_tapply, log_tau,
             log_eta)


@njit(nogil=True, inline="always")
def _barrier(ctrl: np.ndarray, n_workers: int) -> None:
    """Sense-reversing barrier on two control slots; spins, then yields."""
    gen = atomic_load(ctrl, C_BARRIER_GEN)
    arrived = atomic_add(ctrl, C_BARRIER_COUNT, 1) + 1
    if arrived == n_workers:
        atomic_store(ctrl, C_BARRIER_COUNT, 0)
        atomic_add(ctrl, C_BARRIER_GEN, 1)
        return
    spins = 0
    while atomic_load(ctrl, C_BARRIER_GEN) == gen:
        spins += 1
        if spins >= SPINS_BEFORE_YIELD:
            sched_yield()
            spins = 0


@njit(nogil=True)
def sync_worker(kernel, worker, seed, theta, grads, X, y, batch_idx, grad, ws, dims, ctrl,
                tables, lr, n_max, t_origin, timespec, log_worker, log_tread, log_tapply,
                log_tau, log_eta):
    """Synchronous SGD: every round all m workers compute a gradient on the same
    θ, meet at a barrier, worker 0 applies one update with the mean gradient
    (τ = 0), and all meet again.  ``grads`` is the (m × d) array of the round's
    gradients; ``grad`` is this worker's row of it.
    """
    np.random.seed(seed)
    n_rows = n_examples(X)
    n_workers = grads.shape[0]
    n_params = theta.shape[0]
    while True:
        t_read = monotonic_now(timespec) - t_origin
        _draw_batch(batch_idx, n_rows)
        loss = kernel(theta, X, y, batch_idx, grad, ws, dims)
        if not np.isfinite(loss):
            _flag_divergence(ctrl)
        _barrier(ctrl, n_workers)
        # Only worker 0 decides, between the two barriers, so that every
        # worker leaves in the same round (a stop raised by the monitor at
        # any moment cannot split them).
        if worker == 0:
            k = atomic_load(ctrl, C_VERSION)
            if atomic_load(ctrl, C_STOP) != 0 or k >= n_max:
                atomic_store(ctrl, C_SYNC_DONE, 1)
                atomic_store(ctrl, C_STOP, 1)
            else:
                spin_lock_acquire(ctrl, C_LOCK)
                eta = _eta(tables, ctrl, lr, 0)
                scale = eta / n_workers
                for j in range(n_params):
                    acc = 0.0
                    for w in range(n_workers):
                        acc += grads[w, j]
                    theta[j] -= scale * acc
                atomic_store(ctrl, C_VERSION, k + 1)
                spin_lock_release(ctrl, C_LOCK)
                t_apply = monotonic_now(timespec) - t_origin
                _log(k, 0, t_read, t_apply, 0, eta, log_worker, log_tread, log_tapply, log_tau,
                     log_eta)
        _barrier(ctrl, n_workers)
        if atomic_load(ctrl, C_SYNC_DONE) != 0:
            break


@njit(nogil=True, inline="always")
def _copy(src: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = src`` for two 1-D arrays of one length, as a plain loop: the slice
    assignment compiles NumPy's broadcasting and its error messages (string formatting),
    about 20 MB of compiler memory per snapshot function."""
    if out.shape[0] != src.shape[0]:
        raise ValueError("snapshot: the output and the parameter vector differ in length")
    for j in range(src.shape[0]):
        out[j] = src[j]


@njit(nogil=True)
def snapshot_locked(theta: np.ndarray, out: np.ndarray, ctrl: np.ndarray) -> int:
    """Copy θ under the lock (a consistent snapshot) and return its version."""
    spin_lock_acquire(ctrl, C_LOCK)
    _copy(theta, out)
    v = atomic_load(ctrl, C_VERSION)
    spin_lock_release(ctrl, C_LOCK)
    return v


@njit(nogil=True)
def snapshot_racy(theta: np.ndarray, out: np.ndarray, ctrl: np.ndarray) -> int:
    """Copy θ without a lock (Hogwild!: no consistent state exists) and return
    the version read before the copy."""
    v = atomic_load(ctrl, C_VERSION)
    _copy(theta, out)
    return v


# ---------------------------------------------------------------------------------------------
# Leashed-SGD: lock-free and consistent (DESIGN §4)
# ---------------------------------------------------------------------------------------------
#
# Parameter vectors live in a pool (rows of a 2-D array).  ``refs[b]`` counts
# the holders of buffer b; a buffer is free exactly when its count is 0, and
# it is claimed by a compare-and-swap 0 -> 1, so claiming, holding and
# freeing are one mechanism.  The published vector is named by one int64
# slot, ``ctrl[C_LATEST]`` = version · P + b (P = pool size): the version tag
# makes a recycled buffer's pointer differ from the stale one, so a stale
# compare-and-swap can never succeed (no ABA).  Published buffers are never
# written; the publish itself holds one reference, dropped when a newer
# vector replaces it.

C_LATEST = 11 * _LINE
C_IN_USE = 12 * _LINE
C_HIGH_WATER = 13 * _LINE
C_FAILED = 14 * _LINE
C_DROPPED = 15 * _LINE
C_SUCCESS_TRIES = 16 * _LINE
C_FAILED_AT_STOP = 17 * _LINE  # failed publishes of gradients still retrying when the run ended
N_CTRL_LEASHED = 18 * _LINE


def new_leashed_control(pool_size: int) -> np.ndarray:
    """A control array for Leashed-SGD with buffer 0 published at version 0."""
    ctrl = np.zeros(N_CTRL_LEASHED, dtype=np.int64)
    ctrl[C_ACTIVE] = ALL_ACTIVE
    ctrl[C_LATEST] = 0 * pool_size + 0
    ctrl[C_IN_USE] = 1
    ctrl[C_HIGH_WATER] = 1
    return ctrl


@njit(nogil=True, inline="always")
def _release(refs: np.ndarray, b: int, ctrl: np.ndarray) -> None:
    """Drop one reference to buffer b; the last one returns it to the pool."""
    if atomic_add(refs, b, -1) == 1:
        atomic_add(ctrl, C_IN_USE, -1)


@njit(nogil=True, inline="always")
def acquire_latest(refs: np.ndarray, ctrl: np.ndarray, pool_size: int) -> int:
    """Take a reference to the published vector; return its tagged pointer."""
    while True:
        p = atomic_load(ctrl, C_LATEST)
        b = p % pool_size
        old = atomic_add(refs, b, 1)
        if old == 0:
            # The buffer was already free: the publish we saw is gone.  Undo
            # without touching the pool accounting and look again.
            atomic_add(refs, b, -1)
            continue
        if atomic_load(ctrl, C_LATEST) == p:
            return p
        _release(refs, b, ctrl)


@njit(nogil=True, inline="always")
def _claim(refs: np.ndarray, ctrl: np.ndarray, start: int) -> int:
    """Claim a free buffer (count 0 -> 1), scanning from ``start``; track the high-water mark."""
    pool_size = refs.shape[0]
    b = start % pool_size
    spins = 0
    while True:
        if atomic_load(refs, b) == 0 and atomic_cas(refs, b, 0, 1) == 0:
            used = atomic_add(ctrl, C_IN_USE, 1) + 1
            high = atomic_load(ctrl, C_HIGH_WATER)
            while used > high:
                seen = atomic_cas(ctrl, C_HIGH_WATER, high, used)
                if seen == high:
                    break
                high = seen
            return b
        b = (b + 1) % pool_size
        spins += 1
        if spins >= SPINS_BEFORE_YIELD * pool_size:
            sched_yield()
            spins = 0


@njit(nogil=True)
def leashed_worker(kernel, worker, seed, pool, refs, X, y, batch_idx, grad, ws, dims, ctrl,
                   tables, lr, n_max, t_origin, timespec, persistence, log_worker, log_tread,
                   log_tapply, log_tau, log_eta, log_attempts, drop_worker, drop_tread,
                   drop_tapply, drop_tau, drop_attempts):
    """Leashed-SGD: compute the gradient on the published vector (no copy), then
    copy the latest, apply, and publish by compare-and-swap; on failure retry on
    the newer vector up to ``persistence`` more times, then drop the gradient.

    ``persistence`` < 0 means unbounded.  Successful updates are logged at row
    k = t1; dropped gradients in the ``drop_*`` log at a row taken from the
    dropped counter.  An empty ``grad``: the worker owns it (allocated while active, freed
    while parked).
    """
    np.random.seed(seed)
    n_rows = n_examples(X)
    pool_size = pool.shape[0]
    n_params = pool.shape[1]
    owned = grad.shape[0] == 0
    nap = _new_nap()
    while atomic_load(ctrl, C_STOP) == 0:
        if worker >= atomic_load(ctrl, C_ACTIVE):  # parked workers hold no pool buffer
            if owned and grad.shape[0] > 0:
                _count_buffer_bytes(ctrl, -grad.nbytes)
                grad = np.empty(0, dtype=pool.dtype)
            park_while_inactive(ctrl, worker, nap)
            continue
        if owned and grad.shape[0] == 0:
            grad = np.zeros(n_params, dtype=pool.dtype)
            _count_buffer_bytes(ctrl, grad.nbytes)
        _draw_batch(batch_idx, n_rows)
        t_read = monotonic_now(timespec) - t_origin
        p0 = acquire_latest(refs, ctrl, pool_size)
        t0 = p0 // pool_size
        b0 = p0 % pool_size
        loss = kernel(pool[b0], X, y, batch_idx, grad, ws, dims)
        _release(refs, b0, ctrl)
        if not np.isfinite(loss):
            _flag_divergence(ctrl)
            break
        attempts = 0
        while True:
            attempts += 1
            p1 = acquire_latest(refs, ctrl, pool_size)
            t1 = p1 // pool_size
            b1 = p1 % pool_size
            if t1 >= n_max:
                _release(refs, b1, ctrl)
                atomic_store(ctrl, C_STOP, 1)
                if attempts > 1:  # this gradient's earlier failures were counted
                    atomic_add(ctrl, C_FAILED_AT_STOP, attempts - 1)
                return
            tau = t1 - t0
            eta = _eta(tables, ctrl, lr, tau)
            nb = _claim(refs, ctrl, worker + b1)
            src = pool[b1]
            dst = pool[nb]
            for j in range(n_params):
                dst[j] = src[j] - eta * grad[j]
            _release(refs, b1, ctrl)
            if atomic_cas(ctrl, C_LATEST, p1, (t1 + 1) * pool_size + nb) == p1:
                # Our claim's reference now stands for the publish; the
                # replaced vector loses its publish reference.
                _release(refs, b1, ctrl)
                atomic_add(ctrl, C_VERSION, 1)  # progress counter for the monitor
                t_apply = monotonic_now(timespec) - t_origin
                log_attempts[t1] = attempts
                atomic_add(ctrl, C_SUCCESS_TRIES, attempts)
                _log(t1, worker, t_read, t_apply, tau, eta, log_worker, log_tread, log_tapply,
                     log_tau, log_eta)
                break
            atomic_add(ctrl, C_FAILED, 1)
            _release(refs, nb, ctrl)
            if persistence >= 0 and attempts > persistence:
                d = atomic_add(ctrl, C_DROPPED, 1)
                if d < drop_worker.shape[0]:
                    drop_tread[d] = t_read
                    drop_tapply[d] = monotonic_now(timespec) - t_origin
                    drop_tau[d] = tau
                    drop_attempts[d] = attempts
                    drop_worker[d] = worker
                break


@njit(nogil=True)
def snapshot_leashed(pool: np.ndarray, refs: np.ndarray, out: np.ndarray,
                     ctrl: np.ndarray) -> int:
    """Copy the published vector (consistent: published buffers are immutable)
    and return its version."""
    pool_size = pool.shape[0]
    p = acquire_latest(refs, ctrl, pool_size)
    b = p % pool_size
    _copy(pool[b], out)
    _release(refs, b, ctrl)
    return p // pool_size
