"""The worker loops of the real engine: one long nopython loop per thread.

Each algorithm of DESIGN §4 is one ``@njit(nogil=True)`` function that a Python thread
calls once; it runs until the shared stop flag is raised or the update budget is spent, so
no Python runs per update.  The registry (:mod:`stalesgd.algorithms`) names the function
of each algorithm; all take the same arguments, :data:`WORKER_ARGS`:

``kernel``
    the problem's gradient kernel, a first-class function (the model contract of
    :mod:`stalesgd.problems.base`);
``worker``, ``seed``
    this worker's index and minibatch seed (Numba's RNG state is per thread: seeded here);
``slow``
    this worker's slowdown factor (:mod:`stalesgd.slowdown`; 1.0: full speed): after each
    gradient it spins (slow − 1) × the gradient's time;
``pool``, ``refs``
    the parameter vectors: θ is ``pool[0]``; a pooled algorithm (Leashed-SGD) uses every
    row and their reference counts ``refs`` (:mod:`stalesgd.real.pool`);
``local``
    the worker's private copy of θ (``lock``, ``seq``), else empty;
``grads``
    one row per worker for its gradient (``sync`` averages the rows); rows of length 0
    mean the worker owns its buffers: it allocates them while active and frees them while
    parked (elastic runs), and counts their bytes in ``ctrl[C_WORKER_BYTES]``;
``X``, ``y``, ``sampler``, ``ws``, ``dims``
    the training data, the worker's minibatch sampler (:mod:`stalesgd.real.sampling`: rows
    with replacement or reshuffled epochs), the kernel's workspace and shape;
``ctrl``, ``tables``, ``lr``
    the control array (:mod:`stalesgd.real.control`), the two step-size tables of which
    ``ctrl[C_TABLE]`` is active (η = lr · s(τ)), the base step size;
``n_max``, ``persistence``
    the update budget; Leashed-SGD's retries before a drop (< 0: unbounded);
``timespec``
    this thread's clock scratch (times are seconds since the run's origin, which the
    worker reads from ``ctrl`` when it is released from the start line);
``ring``, ``drops``
    the record: one row per applied update and per dropped gradient
    (:mod:`stalesgd.real.record`);
``script``
    ``None``, or a forced interleaving for tests (:mod:`stalesgd.real.schedule`).

Staleness is measured exactly as DESIGN §4 defines it: τ = t1 − t0, where t0 is the
version read with the parameters and t1 the version the update is applied at.

Elastic parallelism: workers with index ≥ ``ctrl[C_ACTIVE]`` park at the top of their
loop, sleeping in naps that double from :data:`PARK_NANOS` to :data:`PARK_MAX_NANOS` (a
parked worker uses < 1 % of a core), and rejoin when it rises again, RNG state intact.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from stalesgd.problems._kernels import n_rows as n_examples

from .atomics import atomic_add, atomic_cas, atomic_load, atomic_store
from .clock import monotonic_now, sleep_nap
from .control import (
    C_ACTIVE,
    C_BARRIER_COUNT,
    C_BARRIER_GEN,
    C_DEADLINE_NS,
    C_DIVERGED,
    C_DRAINED,
    C_DROPPED,
    C_DROPS_DRAINED,
    C_FAILED,
    C_FAILED_AT_STOP,
    C_LATEST,
    C_LOCK,
    C_ORIGIN_NS,
    C_READY,
    C_SPIN_START,
    C_SPINNING,
    C_START,
    C_STOP,
    C_SUCCESS_TRIES,
    C_SYNC_DONE,
    C_TABLE,
    C_TIMED_OUT,
    C_VERSION,
    C_WORKER_BYTES,
    C_WORKER_BYTES_HIGH,
)
from .pool import acquire_latest, claim, release
from .record import write_row
from .sampling import batch_rows, draw_batch, first_epoch
from .schedule import G_APPLY, G_CLAIM, G_COPY, G_PUBLISH, G_READ, end_turn, gate
from .spinlock import (
    SPINS_BEFORE_YIELD,
    cpu_relax,
    sched_yield,
    spin_lock_acquire,
    spin_lock_acquire_unless,
    spin_lock_release,
)

__all__ = ["WORKER_ARGS", "hogwild_worker", "leashed_worker", "lock_worker", "sync_worker"]

#: the arguments every worker function takes, in order
WORKER_ARGS = ("kernel", "worker", "seed", "slow", "pool", "refs", "local", "grads", "X", "y",
               "sampler", "ws", "dims", "ctrl", "tables", "lr", "n_max", "persistence",
               "timespec", "ring", "drops", "script")

#: first nap of a parked worker (nanoseconds); naps double up to PARK_MAX_NANOS, so a short
#: pause rejoins fast and a long one costs a wake-up every 2 ms
PARK_NANOS = 100_000
PARK_MAX_NANOS = 2_000_000
#: naps at the start line: all threads exist before any worker runs (with many more workers
#: than cores none gets a head start), and the waiting ones cost next to no CPU
START_NANOS = 50_000
START_MAX_NANOS = 5_000_000
#: with many workers at the start line, the longest nap grows by this per waiting worker
#: (all of them together then wake at most 1 / START_NANOS_PER_WAITER = 20,000 times a second)
START_NANOS_PER_WAITER = 50_000

# The small helpers below are ``inline="always"``: inlined into the worker loops at the
# Numba IR level, so they are not compiled (and kept in memory) as functions of their own.


@njit(nogil=True)
def park_while_inactive(ctrl: np.ndarray, worker: int, nap: np.ndarray) -> int:
    """Sleep in naps (``nap``: this thread's timespec scratch) while this worker is parked
    (``worker >= ctrl[C_ACTIVE]``) and the run goes on; returns the naps taken."""
    naps = 0
    nap[0] = 0
    nap[1] = PARK_NANOS
    while worker >= atomic_load(ctrl, C_ACTIVE) and atomic_load(ctrl, C_STOP) == 0:
        sleep_nap(nap)
        naps += 1
        if nap[1] < PARK_MAX_NANOS:
            nap[1] = min(2 * nap[1], PARK_MAX_NANOS)
    return naps


@njit(nogil=True)
def wait_for_start(ctrl: np.ndarray, nap: np.ndarray) -> tuple[float, float]:
    """Wait at the start line (sleeping, in naps that double from :data:`START_NANOS` to
    :data:`START_MAX_NANOS`; spinning once the monitor raises ``C_SPIN_START``) until the
    monitor releases every worker at once; return the
    run's time origin (seconds on the monotonic clock) and its deadline (seconds after the
    origin).  ``nap``: this thread's timespec scratch."""
    atomic_add(ctrl, C_READY, 1)
    nap[0] = 0
    nap[1] = START_NANOS
    spinning = False
    while atomic_load(ctrl, C_START) == 0:
        if spinning or atomic_load(ctrl, C_SPIN_START) != 0:  # a core each: leave together
            if not spinning:
                atomic_add(ctrl, C_SPINNING, 1)
                spinning = True
            cpu_relax()
            continue
        sleep_nap(nap)
        # naps double up to START_MAX_NANOS, or longer when thousands wait, so that their
        # wake-ups leave the cores to the thread still starting the others
        cap = max(START_MAX_NANOS, atomic_load(ctrl, C_READY) * START_NANOS_PER_WAITER)
        nap[1] = min(2 * nap[1], cap)
    origin = atomic_load(ctrl, C_ORIGIN_NS) * 1e-9
    return origin, atomic_load(ctrl, C_DEADLINE_NS) * 1e-9 - origin


@njit(nogil=True, inline="always")
def time_is_up(ctrl: np.ndarray, t: float, deadline: float) -> bool:
    """Whether ``t`` (seconds since the origin) is past the deadline; raises the stop flag
    if so."""
    if t < deadline:
        return False
    atomic_store(ctrl, C_TIMED_OUT, 1)
    atomic_store(ctrl, C_STOP, 1)
    return True


@njit(nogil=True, inline="always")
def _count_buffer_bytes(ctrl: np.ndarray, nbytes: int) -> None:
    """Add ``nbytes`` (negative: freed) to the worker-owned bytes held and raise their
    high-water mark if it was passed."""
    now = atomic_add(ctrl, C_WORKER_BYTES, nbytes) + nbytes
    high = atomic_load(ctrl, C_WORKER_BYTES_HIGH)
    while now > high:
        if atomic_cas(ctrl, C_WORKER_BYTES_HIGH, high, now) == high:
            break
        high = atomic_load(ctrl, C_WORKER_BYTES_HIGH)


@njit(nogil=True, inline="always")
def gradient_start(timespec: np.ndarray, slow: float) -> float:
    """The clock before a gradient of a slowed-down worker (else 0.0: no clock read)."""
    return monotonic_now(timespec) if slow > 1.0 else 0.0


@njit(nogil=True, inline="always")
def straggle(ctrl: np.ndarray, timespec: np.ndarray, slow: float, t_start: float) -> None:
    """A slowed-down worker (``slow`` > 1) spins for (slow − 1) × the gradient that began at
    ``t_start`` (:mod:`stalesgd.slowdown`), on its own core, or until the run stops."""
    if slow > 1.0:
        t_end = monotonic_now(timespec)
        until = t_end + (slow - 1.0) * (t_end - t_start)
        while monotonic_now(timespec) < until and atomic_load(ctrl, C_STOP) == 0:
            cpu_relax()


@njit(nogil=True, inline="always")
def step_size(tables: np.ndarray, ctrl: np.ndarray, lr: float, tau: int) -> float:
    """η0 · s(τ) from the active table, τ beyond its end using the last entry."""
    row = atomic_load(ctrl, C_TABLE)
    last = tables.shape[1] - 1
    return lr * tables[row, min(tau, last)]


@njit(nogil=True, inline="always")
def flag_divergence(ctrl: np.ndarray) -> None:
    atomic_store(ctrl, C_DIVERGED, 1)
    atomic_store(ctrl, C_STOP, 1)


@njit(nogil=True, inline="always")
def _free_buffers(ctrl, local, grad, copies):
    """An owning worker about to park frees its buffers: returns them empty."""
    _count_buffer_bytes(ctrl, -(grad.nbytes + (local.nbytes if copies else 0)))
    return np.empty(0, dtype=local.dtype), np.empty(0, dtype=grad.dtype)


@njit(nogil=True, inline="always")
def _allocate_buffers(ctrl, local, grad, n_params, copies):
    """An owning worker that became active allocates its buffers (a private copy of θ only
    when ``copies``): returns them."""
    grad = np.zeros(n_params, dtype=grad.dtype)
    nbytes = grad.nbytes
    if copies:
        local = np.empty(n_params, dtype=local.dtype)
        nbytes += local.nbytes
    _count_buffer_bytes(ctrl, nbytes)
    return local, grad


@njit(nogil=True)
def lock_worker(kernel, worker, seed, slow, pool, refs, local, grads, X, y, sampler, ws, dims,
                ctrl, tables, lr, n_max, persistence, timespec, ring, drops,
                script):
    """AsyncSGD with one lock: copy θ and read t0 under the lock, compute outside,
    apply under the lock (τ = v − t0, θ ← θ − η(τ) g, v += 1).

    With one worker this is also ``seq`` (the lock is then never contended but keeps the
    monitor's snapshots consistent)."""
    np.random.seed(seed)
    n_rows = n_examples(X)
    rows = batch_rows(sampler)
    first_epoch(sampler, rows, n_rows)  # (before the clock starts)
    t_origin, deadline = wait_for_start(ctrl, timespec)
    theta = pool[0]
    n_params = theta.shape[0]
    grad = grads[worker, :n_params]
    owned = grad.shape[0] == 0
    turn = False
    while atomic_load(ctrl, C_STOP) == 0:
        if worker >= atomic_load(ctrl, C_ACTIVE):
            if owned and grad.shape[0] > 0:  # (reassigned only here: no reference counting
                local, grad = _free_buffers(ctrl, local, grad, True)  # per update)
            park_while_inactive(ctrl, worker, timespec)
            continue
        if owned and grad.shape[0] == 0:
            local, grad = _allocate_buffers(ctrl, local, grad, n_params, True)
        draw_batch(sampler, rows, n_rows)
        turn = gate(script, ctrl, worker, G_READ, turn)
        if not spin_lock_acquire_unless(ctrl, C_LOCK, C_STOP):
            break  # the run stopped while it waited
        t_read = monotonic_now(timespec) - t_origin
        t0 = atomic_load(ctrl, C_VERSION)
        for j in range(n_params):
            local[j] = theta[j]
        spin_lock_release(ctrl, C_LOCK)

        t_grad = gradient_start(timespec, slow)
        loss = kernel(local, X, y, rows, grad, ws, dims)
        straggle(ctrl, timespec, slow, t_grad)
        if not np.isfinite(loss):
            flag_divergence(ctrl)
            break
        if atomic_load(ctrl, C_STOP) != 0:  # the run ended while it computed
            break

        turn = gate(script, ctrl, worker, G_APPLY, turn)
        if not spin_lock_acquire_unless(ctrl, C_LOCK, C_STOP):
            break  # the run stopped while it waited: the gradient is not applied
        k = atomic_load(ctrl, C_VERSION)
        if k >= n_max:
            spin_lock_release(ctrl, C_LOCK)
            atomic_store(ctrl, C_STOP, 1)
            break
        tau = k - t0
        eta = step_size(tables, ctrl, lr, tau)
        for j in range(n_params):
            theta[j] -= eta * grad[j]
        atomic_store(ctrl, C_VERSION, k + 1)
        t_apply = monotonic_now(timespec) - t_origin
        spin_lock_release(ctrl, C_LOCK)
        write_row(ring, ctrl, C_DRAINED, k, worker, t_read, t_apply, tau, eta, 1, timespec)
        if time_is_up(ctrl, t_apply, deadline):
            break
    end_turn(script, ctrl, turn)


@njit(nogil=True)
def hogwild_worker(kernel, worker, seed, slow, pool, refs, local, grads, X, y, sampler, ws,
                   dims, ctrl, tables, lr, n_max, persistence, timespec, ring, drops,
                   script):
    """Hogwild!: no lock; the gradient is computed on θ in place (reads may be
    inconsistent), t0 is an atomic read of v, the update index comes from an atomic
    fetch-add of v and the update is applied element-wise (lost element updates are
    possible, as in the original)."""
    np.random.seed(seed)
    n_rows = n_examples(X)
    rows = batch_rows(sampler)
    first_epoch(sampler, rows, n_rows)  # (before the clock starts)
    t_origin, deadline = wait_for_start(ctrl, timespec)
    theta = pool[0]
    n_params = theta.shape[0]
    grad = grads[worker, :n_params]
    owned = grad.shape[0] == 0
    turn = False
    while atomic_load(ctrl, C_STOP) == 0:
        if worker >= atomic_load(ctrl, C_ACTIVE):
            if owned and grad.shape[0] > 0:  # (reassigned only here: no reference counting
                local, grad = _free_buffers(ctrl, local, grad, False)  # per update)
            park_while_inactive(ctrl, worker, timespec)
            continue
        if owned and grad.shape[0] == 0:
            local, grad = _allocate_buffers(ctrl, local, grad, n_params, False)
        draw_batch(sampler, rows, n_rows)
        turn = gate(script, ctrl, worker, G_READ, turn)
        t_read = monotonic_now(timespec) - t_origin
        t0 = atomic_load(ctrl, C_VERSION)
        t_grad = gradient_start(timespec, slow)
        loss = kernel(theta, X, y, rows, grad, ws, dims)
        straggle(ctrl, timespec, slow, t_grad)
        if not np.isfinite(loss):
            flag_divergence(ctrl)
            break
        if atomic_load(ctrl, C_STOP) != 0:  # the run ended while it computed
            break
        turn = gate(script, ctrl, worker, G_APPLY, turn)
        k = atomic_add(ctrl, C_VERSION, 1)
        if k >= n_max:
            atomic_store(ctrl, C_STOP, 1)
            break
        tau = k - t0
        eta = step_size(tables, ctrl, lr, tau)
        for j in range(n_params):
            theta[j] -= eta * grad[j]
        t_apply = monotonic_now(timespec) - t_origin
        write_row(ring, ctrl, C_DRAINED, k, worker, t_read, t_apply, tau, eta, 1, timespec)
        if time_is_up(ctrl, t_apply, deadline):
            break
    end_turn(script, ctrl, turn)


@njit(nogil=True, inline="always")
def barrier(ctrl: np.ndarray, n_workers: int) -> None:
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
def sync_worker(kernel, worker, seed, slow, pool, refs, local, grads, X, y, sampler, ws, dims,
                ctrl, tables, lr, n_max, persistence, timespec, ring, drops,
                script):
    """Synchronous SGD: every round all m workers (one per row of ``grads``) compute a
    gradient on the same θ, meet at a barrier, worker 0 applies one update with the mean
    gradient (τ = 0), and all meet again."""
    np.random.seed(seed)
    n_rows = n_examples(X)
    rows = batch_rows(sampler)
    first_epoch(sampler, rows, n_rows)  # (before the clock starts)
    t_origin, deadline = wait_for_start(ctrl, timespec)
    n_workers = grads.shape[0]
    theta = pool[0]
    n_params = theta.shape[0]
    grad = grads[worker, :n_params]
    while True:
        t_read = monotonic_now(timespec) - t_origin
        draw_batch(sampler, rows, n_rows)
        t_grad = gradient_start(timespec, slow)
        loss = kernel(theta, X, y, rows, grad, ws, dims)
        straggle(ctrl, timespec, slow, t_grad)
        if not np.isfinite(loss):
            flag_divergence(ctrl)
        barrier(ctrl, n_workers)
        # Only worker 0 decides, between the two barriers, so that every worker leaves in
        # the same round (a stop raised by the monitor at any moment cannot split them).
        if worker == 0:
            k = atomic_load(ctrl, C_VERSION)
            if atomic_load(ctrl, C_STOP) != 0 or k >= n_max:
                atomic_store(ctrl, C_SYNC_DONE, 1)
                atomic_store(ctrl, C_STOP, 1)
            else:
                spin_lock_acquire(ctrl, C_LOCK)
                eta = step_size(tables, ctrl, lr, 0)
                scale = eta / n_workers
                for j in range(n_params):
                    acc = 0.0
                    for w in range(n_workers):
                        acc += grads[w, j]
                    theta[j] -= scale * acc
                atomic_store(ctrl, C_VERSION, k + 1)
                spin_lock_release(ctrl, C_LOCK)
                t_apply = monotonic_now(timespec) - t_origin
                write_row(ring, ctrl, C_DRAINED, k, 0, t_read, t_apply, 0, eta, 1, timespec)
                time_is_up(ctrl, t_apply, deadline)  # the next round ends the run
        barrier(ctrl, n_workers)
        if atomic_load(ctrl, C_SYNC_DONE) != 0:
            break


@njit(nogil=True)
def leashed_worker(kernel, worker, seed, slow, pool, refs, local, grads, X, y, sampler, ws,
                   dims, ctrl, tables, lr, n_max, persistence, timespec, ring, drops,
                   script):
    """Leashed-SGD: compute the gradient on the published vector (no copy), then copy the
    latest into a claimed vector, apply, and publish by compare-and-swap; on failure retry
    on the newer vector up to ``persistence`` more times, then drop the gradient.

    Applied updates are recorded at row k = t1, dropped gradients in ``drops`` at the row
    the dropped counter gives them."""
    np.random.seed(seed)
    n_rows = n_examples(X)
    rows = batch_rows(sampler)
    first_epoch(sampler, rows, n_rows)  # (before the clock starts)
    t_origin, deadline = wait_for_start(ctrl, timespec)
    size = pool.shape[0]
    n_params = pool.shape[1]
    grad = grads[worker, :n_params]
    owned = grad.shape[0] == 0
    turn = False
    done = False
    while not done and atomic_load(ctrl, C_STOP) == 0:
        if worker >= atomic_load(ctrl, C_ACTIVE):  # parked workers hold no pool vector
            if owned and grad.shape[0] > 0:  # (reassigned only here: no reference counting
                local, grad = _free_buffers(ctrl, local, grad, False)  # per update)
            park_while_inactive(ctrl, worker, timespec)
            continue
        if owned and grad.shape[0] == 0:
            local, grad = _allocate_buffers(ctrl, local, grad, n_params, False)
        draw_batch(sampler, rows, n_rows)
        turn = gate(script, ctrl, worker, G_READ, turn)
        t_read = monotonic_now(timespec) - t_origin
        p0 = acquire_latest(refs, ctrl, size)
        t0 = p0 // size
        b0 = p0 % size
        t_grad = gradient_start(timespec, slow)
        loss = kernel(pool[b0], X, y, rows, grad, ws, dims)
        straggle(ctrl, timespec, slow, t_grad)
        release(refs, b0, ctrl)
        if not np.isfinite(loss):
            flag_divergence(ctrl)
            break
        if atomic_load(ctrl, C_STOP) != 0:  # the run ended while it computed
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
                if attempts > 1:  # this gradient's earlier failures were counted
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
                dst[j] = src[j] - eta * grad[j]
            release(refs, b1, ctrl)
            turn = gate(script, ctrl, worker, G_PUBLISH, turn)
            if atomic_cas(ctrl, C_LATEST, p1, (t1 + 1) * size + nb) == p1:
                # The claim's reference now stands for the publish; the replaced vector
                # loses its publish reference.
                release(refs, b1, ctrl)
                atomic_add(ctrl, C_VERSION, 1)  # progress counter for the monitor
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
