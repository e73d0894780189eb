"""The compiled event loop's state and its operations of the SimPy model.

Each worker of the compiled loop (:mod:`~stalesgd.sim.fastloop`) is a state machine whose
program counter marks where its SimPy process (:mod:`~stalesgd.sim.model`) would resume.
The operations here do what the SimPy code does, in the same order: schedule events in a
heap ordered by (time, sequence number taken when scheduled), as SimPy's queue; run CPU
work through the :class:`~stalesgd.sim.machine.Machine`'s cores, ticks and run queues;
take and release the :class:`~stalesgd.sim.machine.Lock`; park and wake workers; log rows
and record numeric replay's reads and applies.  Three shortcuts skip heap work and change
no order: the latest wake-up waits beside the heap (it comes after every event due now and
before any later one); the lock's release callback stays out of the heap while nobody waits
(then it only frees the lock, which is inferred from its key); with a waiter to wake, it
rides in that waiter's heap entry.

The state is four arrays, ``I, F, WI, WF`` (:func:`new_state`): global integers (with the
heap's sequence numbers and slots, and the queues), global floats (with the heap's times),
per-worker integers and floats.  Functions are compiled without Numba's reference counting
(:data:`JIT`): the loop allocates nothing, and counting would cost atomics on every call.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from stalesgd.jitcache import cached

from .buffers import (
    O_CODE,
    O_COUNT,
    O_ETA,
    O_READ_FED,
    O_READ_ROWS,
    O_READ_T,
    R_ATTEMPTS,
    R_COUNT,
    R_DROPPED,
    R_ETA,
    R_K,
    R_T_APPLY,
    R_T_READ,
    R_TAU,
    R_WORKER,
)

__all__ = ["JIT", "new_state", "stall_limit"]

JIT = {"nogil": True, "_nrt": False}

# why the loop returns to Python (YIELDED, internal: the worker waits)
YIELDED, EMPTY, EXTERNAL, CALLBACK, FLUSH, REFILL, ROWS_FULL, BUDGET, STALLED = range(9)
# global integers (I); the heap and the queues follow at the offsets O_*
(SEQ, V, RESUME, POPPED, ENTRY, ACTIVE, CORES, HELD, WAKING, LW_HEAD, LW_LEN,
 HAND_W, ARRIVED, ACQ, CONTENDED, PREEMPT, STOPPED, FLUSH_AT, HOOKED, FEEDING, FED, STALL_N,
 STALL_MAX, EVENTS, BUDGET_AT, M, ALG, OVER, BOUND, REL_SEQ, REL_PENDING, REL_CARRIER, READY,
 READY_SEQ, O_SEQ, O_SLOT, O_POS, O_RINGS, O_CORES, N_INT) = range(40)
# the rings of workers (m places each) from O_RINGS: the lock's waiters, the barrier's
# arrivals, then one run queue per core; from O_CORES per core its worker (-1: idle), the
# head and the length of its run queue
RING_LOCK, RING_BARRIER, RING_RUN = range(3)
# global floats (F); the heap's times follow from F_HEAP
NOW, NEXT_EVAL, NEXT_CHECK, SLICE_LEN, HANDOVER, CAS, ROUND_START, STALL_T, REL_T, \
    F_HEAP = range(10)
# per-worker integers WI[field, w] (POS + kind, LEN + kind: its duration buffers) and floats
PC, MODE, HAS_CORE, T0, T1, ATT, PARKED, CORE, LAST_TICK, POS, LEN, N_WI = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15)
T_READ, REM, PEND, N_WF = range(4)
# what a worker's event resumes: its step / a CPU run at a tick / a CPU run given a core
M_STEP, M_SLICE, M_CORE_RUN = range(3)
# duration kinds, ordered as the samplers
COMPUTE, READ, UPDATE = range(3)
#: the program counter every step starts at (the top of the process's loop)
TOP = 0
#: updates at one instant beyond which the clock has stopped (zero-length cycles)
STALL_LIMIT = 1 << 20
_FIRST = 1 << 40  # the workers' first steps come before any scheduled event
_NO_SEQ = np.iinfo(np.int64).max


def stall_limit() -> int:
    """Updates at one simulated instant beyond which a run is stalled (:data:`STALL_LIMIT`)."""
    return STALL_LIMIT


def new_state(workers: int, algorithm: int, oversubscribed: bool, cores: int,
              time_slice: float, handover: float, cas: float, bound: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The state ``(I, F, WI, WF)`` of a loop whose workers all start at ``t = 0``."""
    m, c = int(workers), int(cores)
    slots = m + 3  # the workers, the lock's release and hand-over, the Python side
    I = np.zeros(N_INT + 3 * slots + (RING_RUN + c) * m + 3 * c, np.int64)  # noqa: E741
    F = np.full(F_HEAP + slots, np.inf)
    I[O_SEQ], I[O_SLOT], I[O_POS], I[O_RINGS] = (N_INT + k * slots for k in range(4))
    I[O_CORES] = I[O_RINGS] + (RING_RUN + c) * m
    I[I[O_CORES]:I[O_CORES] + c] = -1
    F[F_HEAP:F_HEAP + m] = 0.0  # heap position i holds slot i: the first steps, then none
    I[N_INT:N_INT + slots] = _NO_SEQ
    I[N_INT:N_INT + m] = np.arange(m) - _FIRST
    I[I[O_SLOT]:I[O_POS]] = I[I[O_POS]:I[O_RINGS]] = np.arange(slots)
    I[RESUME] = I[HAND_W] = I[READY] = I[REL_CARRIER] = -1
    I[ACTIVE], I[M], I[ALG], I[OVER], I[BOUND] = m, m, algorithm, oversubscribed, bound
    I[CORES], I[BUDGET_AT], I[STALL_MAX] = c, 1 << 62, stall_limit()
    F[:F_HEAP] = 0.0
    F[SLICE_LEN], F[HANDOVER], F[CAS] = time_slice, handover, cas
    F[NEXT_EVAL] = F[NEXT_CHECK] = np.inf
    F[STALL_T] = -1.0
    WI = np.zeros((N_WI, m), np.int64)
    WI[CORE] = np.arange(m) % c  # the workers start spread over the cores in turn
    WI[LAST_TICK] = -1
    return I, F, WI, np.zeros((N_WF, m))


# ------------------------------------------------------------------------------- events

@njit(**JIT, inline="always")
def _earlier(ta, sa, tb, sb):
    return ta < tb or (ta == tb and sa < sb)


@cached
@njit(**JIT)
def _sift(I, F, i, t, s, slot):
    """Put ``slot`` with key (``t``, ``s``) at heap position ``i`` and move it into place."""
    ks, hs, hp = I[O_SEQ], I[O_SLOT], I[O_POS]
    while i > 0:
        p = (i - 1) >> 1
        if not _earlier(t, s, F[F_HEAP + p], I[ks + p]):
            break
        F[F_HEAP + i] = F[F_HEAP + p]
        I[ks + i] = I[ks + p]
        q = I[hs + p]
        I[hs + i] = q
        I[hp + q] = i
        i = p
    n = I[M] + 3
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and _earlier(F[F_HEAP + c + 1], I[ks + c + 1], F[F_HEAP + c], I[ks + c]):
            c += 1
        if not _earlier(F[F_HEAP + c], I[ks + c], t, s):
            break
        F[F_HEAP + i] = F[F_HEAP + c]
        I[ks + i] = I[ks + c]
        q = I[hs + c]
        I[hs + i] = q
        I[hp + q] = i
        i = c
    F[F_HEAP + i] = t
    I[ks + i] = s
    I[hs + i] = slot
    I[hp + slot] = i


@cached
@njit(**JIT, inline="always")
def place(I, F, slot, t, seq):
    """Set the event of ``slot`` to (``t``, ``seq``); (inf, -) takes it out."""
    _sift(I, F, I[I[O_POS] + slot], t, seq, slot)


@njit(**JIT, inline="always")
def take_seq(I):
    """The next sequence number: an event is scheduled."""
    I[SEQ] += 1
    return I[SEQ] - 1


@njit(**JIT, inline="always")
def schedule(I, F, slot, t):
    """Schedule the event of ``slot`` at time ``t``."""
    place(I, F, slot, t, take_seq(I))


@cached
@njit(**JIT, inline="always")
def idle(I, F, slot):
    """``slot`` has no pending event."""
    if I[READY] == slot:
        I[READY] = -1
    else:
        place(I, F, slot, np.inf, _NO_SEQ)


@njit(**JIT, inline="always")
def wake(I, F, w):
    """Wake a sleeping worker now (SimPy: ``event.succeed()``); the latest wake-up waits
    beside the heap, an earlier one still waiting goes in."""
    seq = take_seq(I)
    if I[READY] >= 0:
        place(I, F, I[READY], F[NOW], I[READY_SEQ])
    I[READY], I[READY_SEQ] = w, seq


@cached
@njit(**JIT)
def next_event(I, F):
    """The slot whose event is next (-1: none); the clock moves to it."""
    ready = I[READY]
    if ready >= 0:
        if not _earlier(F[F_HEAP], I[I[O_SEQ]], F[NOW], I[READY_SEQ]):
            I[READY] = -1
            I[POPPED] = I[READY_SEQ]
            I[ENTRY] = _NO_SEQ
            return ready
    t = F[F_HEAP]
    if t == np.inf:
        return -1
    F[NOW] = t
    seq = I[I[O_SEQ]]
    I[POPPED] = seq
    I[ENTRY] = seq
    return I[I[O_SLOT]]


@cached
@njit(**JIT)
def settle(I, F, slot):
    """After the event of ``slot``: unless it scheduled a new one, it has none."""
    if I[ENTRY] != _NO_SEQ and I[I[O_SEQ] + I[I[O_POS] + slot]] == I[ENTRY]:
        place(I, F, slot, np.inf, _NO_SEQ)


@njit(**JIT, inline="always")
def sleep(WI, w, pc):
    """Worker ``w`` waits without an event of its own; woken, it resumes at ``pc``."""
    WI[MODE, w] = M_STEP
    WI[PC, w] = pc


# ------------------------------------------------------------------------------- queues

@njit(**JIT, inline="always")
def _push(I, ring, head, length, w, front):
    m = I[M]
    base, n = I[O_RINGS] + ring * m, I[length]
    if front:
        I[head] = I[head] - 1 if I[head] > 0 else m - 1
        I[base + I[head]] = w
    else:
        j = I[head] + n
        I[base + (j - m if j >= m else j)] = w
    I[length] = n + 1


@njit(**JIT, inline="always")
def _pop(I, ring, head, length):
    w = I[I[O_RINGS] + ring * I[M] + I[head]]
    I[head] = I[head] + 1 if I[head] + 1 < I[M] else 0
    I[length] -= 1
    return w


@njit(**JIT, inline="always")
def _pop_back(I, ring, head, length):
    I[length] -= 1
    j = I[head] + I[length]
    return I[I[O_RINGS] + ring * I[M] + (j - I[M] if j >= I[M] else j)]


# ------------------------------------------------------------------------------- cores

@njit(**JIT, inline="always")
def _run_queue(I, core):
    """Core ``core``'s run queue: its ring, and where its head and length are in ``I``."""
    c = I[CORES]
    return RING_RUN + core, I[O_CORES] + c + core, I[O_CORES] + 2 * c + core


@njit(**JIT, inline="always")
def _longest_queue(I):
    """The core with the most workers waiting (the first in core order on a tie), as
    ``max(queues, key=len)``."""
    lengths = I[O_CORES] + 2 * I[CORES]
    best = 0
    for k in range(1, I[CORES]):
        if I[lengths + k] > I[lengths + best]:
            best = k
    return best


@njit(**JIT, inline="always")
def _tick_index(now, tick):
    """:func:`~stalesgd.sim.machine.tick_index`, same arithmetic."""
    return math.floor(now / tick + 1e-6)


@njit(**JIT, inline="always")
def _grant(I, F, WI, core, w):
    I[I[O_CORES] + core] = w
    WI[CORE, w] = core
    WI[HAS_CORE, w] = 1
    WI[LAST_TICK, w] = _tick_index(F[NOW], F[SLICE_LEN])


@cached
@njit(**JIT)
def core_release(I, F, WI, w):
    """Worker ``w`` gives up its core; the head of the core's run queue gets it, or of the
    longest other queue when that one is empty (Machine.release)."""
    if not I[OVER] or WI[HAS_CORE, w] == 0:
        return
    core = WI[CORE, w]
    WI[HAS_CORE, w] = 0
    lengths = I[O_CORES] + 2 * I[CORES]
    source = core if I[lengths + core] > 0 else _longest_queue(I)
    if I[lengths + source] > 0:
        ring, head, length = _run_queue(I, source)
        w2 = _pop(I, ring, head, length)
        _grant(I, F, WI, core, w2)
        wake(I, F, w2)
    else:
        I[I[O_CORES] + core] = -1


@cached
@njit(**JIT)
def _take_core(I, F, WI, w, mode):
    """A core for ``w`` (True: its own if idle, else any idle one), or it queues on its own
    (its event will resume ``mode``)."""
    running = I[O_CORES]
    core = WI[CORE, w]
    if I[running + core] >= 0:
        for k in range(I[CORES]):
            if I[running + k] < 0:
                core = k
                break
    if I[running + core] < 0:
        _grant(I, F, WI, core, w)
        return True
    ring, head, length = _run_queue(I, core)
    _push(I, ring, head, length, w, False)
    WI[MODE, w] = mode
    return False


@cached
@njit(**JIT)
def core_acquire(I, F, WI, WF, w, pc):
    """Make sure worker ``w`` holds a core; False: it queues and resumes at ``pc``."""
    if not I[OVER] or WI[HAS_CORE, w]:
        return True
    WI[PC, w] = pc
    return _take_core(I, F, WI, w, M_STEP)


@njit(**JIT, inline="always")
def _balance(I, WI, core):
    """Machine._balance: when another core has at least two more workers waiting, the one
    queued there last moves to ``core``'s queue."""
    lengths = I[O_CORES] + 2 * I[CORES]
    other = _longest_queue(I)
    if I[lengths + other] >= I[lengths + core] + 2:
        ring, head, length = _run_queue(I, other)
        w2 = _pop_back(I, ring, head, length)
        ring, head, length = _run_queue(I, core)
        _push(I, ring, head, length, w2, False)
        WI[CORE, w2] = core


@cached
@njit(**JIT)
def run_cpu(I, F, WI, WF, w, d):
    """Machine.run for worker ``w`` with ``d`` seconds of CPU left; True when done now."""
    while True:
        if WI[HAS_CORE, w] == 0 and not _take_core(I, F, WI, w, M_CORE_RUN):
            WF[REM, w] = d
            return False
        k = _tick_index(F[NOW], F[SLICE_LEN])
        if k > WI[LAST_TICK, w]:  # a tick came since this worker was last looked at
            WI[LAST_TICK, w] = k
            core = WI[CORE, w]
            _balance(I, WI, core)
            if I[I[O_CORES] + 2 * I[CORES] + core] > 0:  # step aside for a waiting worker
                I[PREEMPT] += 1
                core_release(I, F, WI, w)
                continue
        step = (k + 1) * F[SLICE_LEN] - F[NOW]
        if d <= step:
            if d > 0.0:
                WI[MODE, w] = M_STEP
                schedule(I, F, w, F[NOW] + d)
                return False
            return True
        WF[REM, w] = d - step
        WI[MODE, w] = M_SLICE
        schedule(I, F, w, F[NOW] + step)
        return False


@njit(**JIT, inline="always")
def cpu(I, F, WI, WF, w, d, pc):
    """Worker ``w`` works ``d`` seconds (a timeout, or Machine.run when workers outnumber
    cores); True when that took no time, else it resumes at ``pc``."""
    WI[PC, w] = pc
    if not I[OVER]:
        if d > 0.0:
            WI[MODE, w] = M_STEP
            schedule(I, F, w, F[NOW] + d)
            return False
        return True
    return run_cpu(I, F, WI, WF, w, d)


# ------------------------------------------------------------------------------- the lock

@njit(**JIT, inline="always")
def _release_event(I, F, t, seq):
    """Put the lock's release callback into the heap: in the entry of the waiter it will
    wake when that one is known (no wake-up under way), else in its own slot."""
    if I[WAKING] == 0 and I[LW_LEN] > 0 and F[HANDOVER] == 0.0:
        I[REL_CARRIER] = I[I[O_RINGS] + RING_LOCK * I[M] + I[LW_HEAD]]
        place(I, F, I[REL_CARRIER], t, seq)
    else:
        place(I, F, I[M], t, seq)


@njit(**JIT, inline="always")
def release_later(I, F, d):
    """The release callback ``d > 0`` seconds from now of a worker that just took the lock
    to copy θ (one core per worker).  A waiter woken by the release just before would retry
    while the lock is held and go back to the head of the queue: done here at once (no
    release can come in between)."""
    if I[WAKING] and I[HAND_W] >= 0 and F[HANDOVER] == 0.0:
        idle(I, F, I[HAND_W])
        _push(I, RING_LOCK, LW_HEAD, LW_LEN, I[HAND_W], True)
        I[HAND_W], I[WAKING] = -1, 0
    if I[LW_LEN] > 0:
        _release_event(I, F, F[NOW] + d, take_seq(I))
    else:
        F[REL_T], I[REL_SEQ], I[REL_PENDING] = F[NOW] + d, take_seq(I), 1


@njit(**JIT, inline="always")
def lock_take(I, F, w, retry):
    """Lock.try_acquire (``retry``: Lock.retry of a woken waiter) for ``w``: True if it
    holds the lock now, else it is queued (a retry at the head)."""
    if I[REL_PENDING] and _earlier(F[REL_T], I[REL_SEQ], F[NOW], I[POPPED]):
        I[REL_PENDING], I[HELD] = 0, 0  # the release callback came before this event
    if retry:
        I[WAKING], I[HAND_W] = 0, -1
    else:
        I[ACQ] += 1
    if I[HELD] == 0:
        I[HELD] = 1
        return True
    if not retry:
        I[CONTENDED] += 1
    _push(I, RING_LOCK, LW_HEAD, LW_LEN, w, retry)
    if I[REL_PENDING]:  # the release callback now has a waiter to wake
        I[REL_PENDING] = 0
        _release_event(I, F, F[REL_T], I[REL_SEQ])
    return False


@cached
@njit(**JIT)
def lock_release(I, F):
    """Lock.release: free the lock and, unless one is under way, wake the longest waiter."""
    I[HELD] = 0
    if I[LW_LEN] > 0 and I[WAKING] == 0:
        I[WAKING] = 1
        I[HAND_W] = _pop(I, RING_LOCK, LW_HEAD, LW_LEN)
        if F[HANDOVER] > 0.0:
            schedule(I, F, I[M] + 1, F[NOW] + F[HANDOVER])
        else:
            wake(I, F, I[HAND_W])


@njit(**JIT, inline="always")
def lock_acquire(I, F, WI, WF, w, retry, pc):
    """The lock for ``w`` (``retry``: woken from the queue, it first needs a core again):
    True if it holds it now, else it gives up its core and sleeps, to resume at ``pc``."""
    if retry and not core_acquire(I, F, WI, WF, w, pc):
        return False
    if lock_take(I, F, w, retry):
        return True
    core_release(I, F, WI, w)
    sleep(WI, w, pc)
    return False


@cached
@njit(**JIT)
def carried_release(I, F, w):
    """The release callback riding in ``w``'s entry: True if ``w``'s wake-up is the very
    next event, which then goes on from that entry."""
    I[REL_CARRIER] = -1
    lock_release(I, F)
    if I[READY] == w:
        t, s, ks = F[NOW], I[READY_SEQ], I[O_SEQ]
        if not (_earlier(F[F_HEAP + 1], I[ks + 1], t, s)
                or _earlier(F[F_HEAP + 2], I[ks + 2], t, s)):
            I[READY], I[POPPED] = -1, s
            return True
    place(I, F, w, np.inf, _NO_SEQ)
    return False


# ------------------------------------------------------------------- parking, barrier

@cached
@njit(**JIT)
def park(I, F, WI, w, pc):
    """Worker ``w`` is not among the active ones: it gives up its core and sleeps until
    :func:`unpark`, then resumes at ``pc``."""
    core_release(I, F, WI, w)
    WI[PARKED, w] = 1
    sleep(WI, w, pc)


@cached
@njit(**JIT)
def unpark(I, F, WI, n):
    """``n`` workers are active: wake the parked ones among them, in worker order."""
    I[ACTIVE] = n
    for w in range(min(n, I[M])):
        if WI[PARKED, w]:
            WI[PARKED, w] = 0
            wake(I, F, w)


@cached
@njit(**JIT)
def arrive(I, F, WI, w, pc):
    """Worker ``w`` arrives at the barrier: True if last, else it gives up its core and
    sleeps until the round ends, then resumes at ``pc``."""
    I[I[O_RINGS] + RING_BARRIER * I[M] + I[ARRIVED]] = w
    I[ARRIVED] += 1
    if I[ARRIVED] == I[M]:
        return True
    core_release(I, F, WI, w)
    sleep(WI, w, pc)
    return False


@cached
@njit(**JIT)
def end_round(I, F):
    """The last worker applied the round's update: wake the others in arrival order."""
    for i in range(I[ARRIVED] - 1):
        wake(I, F, I[I[O_RINGS] + RING_BARRIER * I[M] + i])
    I[ARRIVED] = 0
    F[ROUND_START] = F[NOW]


# ------------------------------------------------------------------- durations, rows, ops

@njit(**JIT, inline="always")
def dry(WI, w, kind):
    """Whether worker ``w``'s ``kind`` durations ran out."""
    return WI[POS + kind, w] >= WI[LEN + kind, w]


@njit(**JIT, inline="always")
def draw(WI, buf, kind, w):
    """Worker ``w``'s next ``kind`` duration."""
    p = WI[POS + kind, w]
    WI[POS + kind, w] = p + 1
    return buf[kind, w, p]


@njit(**JIT, inline="always")
def rows_full(I, rows_i):
    """Whether the row buffer must be handed over before another row."""
    return rows_i[R_COUNT, 0] >= rows_i.shape[1] and not I[STOPPED]


@njit(**JIT, inline="always")
def log_row(I, rows_i, rows_f, k, w, t_read, t_apply, tau, eta, attempts, dropped):
    """Log one update row (not once a stop rule ended the run)."""
    if I[STOPPED]:
        return
    i = rows_i[R_COUNT, 0]
    rows_i[R_K, i] = k
    rows_i[R_WORKER, i] = w
    rows_i[R_TAU, i] = tau
    rows_i[R_ATTEMPTS, i] = attempts
    rows_i[R_DROPPED, i] = dropped
    rows_f[R_T_READ, i] = t_read
    rows_f[R_T_APPLY, i] = t_apply
    rows_f[R_ETA, i] = eta
    rows_i[R_COUNT, 0] = i + 1


@njit(**JIT, inline="always")
def applied(I, F, WI, w, pc):
    """After an applied update (the step resumes at ``pc``): STALLED if the clock stopped,
    CALLBACK if Python has work (stop rules, progress, a controller, an evaluation, an
    online step-size rule learning from every update), else -1: go on."""
    WI[PC, w] = pc
    if F[NOW] == F[STALL_T]:
        I[STALL_N] += 1
        if I[STALL_N] > I[STALL_MAX]:
            return STALLED
    else:
        F[STALL_T], I[STALL_N] = F[NOW], 0
    if I[V] >= F[NEXT_CHECK] or (not I[STOPPED] and (I[V] >= F[NEXT_EVAL] or I[FEEDING])):
        return CALLBACK
    return -1


@njit(**JIT, inline="always")
def read_op(I, F, rows_i, op_i, op_f, w):
    """Numeric replay reads θ for ``w`` now; True when its buffer must run."""
    if not I[HOOKED] or I[STOPPED]:
        return False
    j, r = op_i[O_COUNT, 0], op_i[O_COUNT, 1]
    op_i[O_CODE, j] = w << 1
    op_i[O_READ_ROWS, r] = rows_i[R_COUNT, 0] + rows_i[R_COUNT, 1]
    op_i[O_READ_FED, r], op_f[O_READ_T, r] = I[FED], F[NOW]
    op_i[O_COUNT, 0], op_i[O_COUNT, 1] = j + 1, r + 1
    return j + 1 >= I[FLUSH_AT]


@njit(**JIT, inline="always")
def apply_op(I, op_i, op_f, eta_table, code, tau):
    """Numeric replay applies a gradient (``code``: 2·worker + 1, or 2·workers + 1 for the
    mean of all) with staleness ``tau``: η from the table (NaN in timing-only mode)."""
    if not I[HOOKED] or I[STOPPED]:
        return np.nan
    eta = eta_table[min(tau, eta_table.shape[0] - 1)]
    j = op_i[O_COUNT, 0]
    op_i[O_CODE, j], op_f[O_ETA, j] = code, eta
    op_i[O_COUNT, 0] = j + 1
    return eta
