"""The compiled event loop's state and primitives: events, cores, the lock, rows, replay ops.

The compiled loop (:mod:`~stalesgd.sim.fastloop`) runs the SimPy processes of
:mod:`~stalesgd.sim.model` without SimPy.  Each worker is a small state machine (a program
counter where its process would resume); this module gives the algorithm steps
(:mod:`~stalesgd.sim.faststeps`) the operations of the SimPy model, each doing what the
SimPy code does, in the same order:

* **events**: a binary heap ordered by (time, sequence number), the sequence number taken
  when the event is scheduled, as SimPy orders its queue.  A worker has at most one pending
  event (its timeout or wake-up); three more slots hold the lock's release callback, the
  lock's hand-over timeout and the earliest event of the Python side (timers, the stop
  event).  The release callback is kept out of the heap until a waiter needs it: without
  waiters, processing it would only free the lock, which :func:`lock_try` infers from its
  key;
* **cores** (:class:`~stalesgd.sim.machine.Machine`): :func:`cpu` consumes CPU time in
  time slices when workers outnumber cores, with the same run queue and hand-over;
* **the lock** (:class:`~stalesgd.sim.machine.Lock`): barging, waiters woken one per
  release after the hand-over latency, a woken waiter retrying at the head;
* **rows and replay ops**: update rows go to the run's row buffer, numeric replay's reads
  and applies to its op buffer (:class:`~stalesgd.sim.replay.OpBuffer`).

The state is four arrays, ``I, F, WI, WF`` (:func:`new_state`): global integers with the
event heap and the queues, global floats with the heap's times, and per-worker integers and
floats; a loop that returns to Python resumes exactly where it stopped.  Every function is
compiled without Numba's reference counting (:data:`JIT`): the loop allocates nothing.
"""

from __future__ import annotations

import numpy as np
from numba import njit

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

#: how every function of the compiled loop is compiled: without Numba's reference counting
#: (``_nrt=False``), which the loop does not need (it allocates nothing; the arrays belong to
#: its Python side) and which would cost atomic operations per array per call
JIT = {"nogil": True, "_nrt": False}

# why the loop returns to Python (YIELDED: the worker waits; internal to the loop)
YIELDED, EMPTY, EXTERNAL, CALLBACK, FLUSH, REFILL, ROWS_FULL, BUDGET, STALLED = range(9)
# global integers (I); the heap, sequence numbers and queues follow at the offsets named here
(SEQ, V, RESUME, POPPED, ACTIVE, FREE, RQ_HEAD, RQ_LEN, HELD, WAKING, LW_HEAD, LW_LEN,
 HAND_W, ARRIVED, ACQ, CONTENDED, PREEMPT, STOPPED, FLUSH_AT, HOOKED, FEEDING, FED, STALL_N,
 EVENTS, BUDGET_AT, M, ALG, OVER, BOUND, REL_SEQ, REL_PENDING, REL_CARRIER, STALL_MAX, READY,
 READY_SEQ, ENTRY, O_SEQ, O_SLOT, O_POS, O_RINGS, N_INT) = range(41)
# global floats (F); the heap's times follow at F_HEAP
NOW, NEXT_EVAL, NEXT_CHECK, SLICE_LEN, HANDOVER, CAS, ROUND_START, STALL_T, REL_T, \
    F_HEAP = range(10)
# per-worker integers (WI[field, w]): program counter, what its event resumes, ... and the
# positions and lengths of its duration buffers (POS + kind, LEN + kind)
PC, MODE, HAS_CORE, T0, T1, ATT, PARKED, POS, LEN, N_WI = 0, 1, 2, 3, 4, 5, 6, 7, 10, 13
# per-worker floats (WF[field, w])
T_READ, REM, SLICE, PEND, N_WF = range(5)
# what a worker's pending event resumes: its step / a CPU run after a slice / after a core
M_STEP, M_SLICE, M_CORE_RUN, M_CORE_STEP = range(4)
# duration kinds (first axis of the duration buffers), ordered as the samplers
COMPUTE, READ, UPDATE = range(3)
#: the program counter every step starts at (the top of the process's loop)
TOP = 0
#: updates at one simulated instant beyond which the clock is taken to have stopped (no
#: model gives more than a few per worker; a zero-length cycle gives them without end)
STALL_LIMIT = 1 << 20
#: the workers' first steps come before every other event: their sequence numbers
_FIRST = 1 << 40
_NO_SEQ = np.iinfo(np.int64).max


def stall_limit() -> int:
    """Updates at one simulated instant beyond which a run is stalled (:data:`STALL_LIMIT`)."""
    return STALL_LIMIT


def new_state(workers: int, algorithm: int, oversubscribed: bool, cores: int,
              time_slice: float, handover: float, cas: float, bound: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The state ``(I, F, WI, WF)`` of a loop whose workers all start at ``t = 0`` (SimPy's
    initialising steps: before any other event, in worker order)."""
    m = int(workers)
    slots = m + 3  # workers, lock release, lock hand-over, the Python side
    I = np.zeros(N_INT + 3 * slots + 3 * m, np.int64)  # noqa: E741
    F = np.zeros(F_HEAP + slots)
    # heap position i: time F[F_HEAP + i], sequence number I[O_SEQ + i], slot I[O_SLOT + i];
    # the position of slot s: I[O_POS + s]; then the run queue, lock waiters, sync arrivals
    I[O_SEQ], I[O_SLOT], I[O_POS] = N_INT, N_INT + slots, N_INT + 2 * slots
    I[O_RINGS] = N_INT + 3 * slots
    # heap position i holds slot i: the workers at t = 0 first, then the empty slots
    F[F_HEAP:] = np.inf
    F[F_HEAP:F_HEAP + m] = 0.0
    I[I[O_SEQ]:I[O_SEQ] + slots] = _NO_SEQ
    I[I[O_SEQ]:I[O_SEQ] + m] = np.arange(m) - _FIRST
    I[I[O_SLOT]:I[O_SLOT] + slots] = np.arange(slots)
    I[I[O_POS]:I[O_POS] + slots] = np.arange(slots)
    I[RESUME] = I[HAND_W] = I[READY] = I[REL_CARRIER] = -1
    I[ACTIVE], I[M], I[ALG], I[OVER], I[BOUND] = m, m, algorithm, oversubscribed, bound
    I[FREE] = cores
    I[BUDGET_AT] = 1 << 62
    I[STALL_MAX] = stall_limit()
    F[SLICE_LEN], F[HANDOVER], F[CAS] = time_slice, handover, cas
    F[NEXT_EVAL] = F[NEXT_CHECK] = np.inf
    F[STALL_T] = -1.0
    return I, F, np.zeros((N_WI, m), np.int64), np.zeros((N_WF, m))


# ------------------------------------------------------------------------------- events

@njit(**JIT, inline="always")
def _earlier(ta, sa, tb, sb):
    return ta < tb or (ta == tb and sa < sb)


@njit(**JIT)
def _sift(I, F, i, t, s, slot):
    """Put ``slot`` with key (``t``, ``s``) at heap position ``i`` (its old key's place),
    moving it up or down to where it belongs."""
    kt, ks, hs, hp = F_HEAP, I[O_SEQ], I[O_SLOT], I[O_POS]
    while i > 0:
        p = (i - 1) >> 1
        if not _earlier(t, s, F[kt + p], I[ks + p]):
            break
        F[kt + i] = F[kt + p]
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
        if c + 1 < n and _earlier(F[kt + c + 1], I[ks + c + 1], F[kt + c], I[ks + c]):
            c += 1
        if not _earlier(F[kt + c], I[ks + c], t, s):
            break
        F[kt + i] = F[kt + c]
        I[ks + i] = I[ks + c]
        q = I[hs + c]
        I[hs + i] = q
        I[hp + q] = i
        i = c
    F[kt + i] = t
    I[ks + i] = s
    I[hs + i] = slot
    I[hp + slot] = i


@njit(**JIT, inline="always")
def place(I, F, slot, t, seq):
    """Set the event of ``slot`` to time ``t`` with sequence number ``seq``."""
    _sift(I, F, I[I[O_POS] + slot], t, seq, slot)


@njit(**JIT, inline="always")
def take_seq(I):
    """The next sequence number (an event is being scheduled)."""
    seq = I[SEQ]
    I[SEQ] = seq + 1
    return seq


@njit(**JIT, inline="always")
def schedule(I, F, slot, t):
    """Schedule the event of ``slot`` at time ``t`` (it takes the next sequence number)."""
    place(I, F, slot, t, take_seq(I))


@njit(**JIT, inline="always")
def idle(I, F, slot):
    """``slot`` has no pending event."""
    if I[READY] == slot:
        I[READY] = -1
    else:
        place(I, F, slot, np.inf, _NO_SEQ)


@njit(**JIT)
def next_event(I, F):
    """The slot whose event comes next (-1: none), its time set as the clock's.

    The latest wake-up (see :func:`wake`) waits beside the heap: it is due now, after every
    event the heap holds for now (those were scheduled earlier) and before any later one."""
    ready = I[READY]
    if ready >= 0:
        h = I[I[O_SLOT]]
        if not _earlier(F[F_HEAP], I[I[O_SEQ]], F[NOW], I[READY_SEQ]):
            I[READY] = -1
            I[POPPED] = I[READY_SEQ]
            I[ENTRY] = _NO_SEQ
            return ready
    else:
        h = I[I[O_SLOT]]
    t = F[F_HEAP]
    if t == np.inf:
        return -1
    F[NOW] = t
    I[POPPED] = I[ENTRY] = I[I[O_SEQ]]
    return h


@njit(**JIT)
def settle(I, F, slot):
    """After the event of ``slot`` was handled: unless it scheduled a new one, it has none."""
    if I[ENTRY] != _NO_SEQ and I[I[O_SEQ] + I[I[O_POS] + slot]] == I[ENTRY]:
        place(I, F, slot, np.inf, _NO_SEQ)


@njit(**JIT)
def carried_release(I, F, w):
    """The lock's release callback, carried by the heap entry of ``w``, the waiter it wakes:
    True if ``w``'s wake-up is the very next event, which then continues on that entry."""
    I[REL_CARRIER] = -1
    lock_release(I, F)
    if I[READY] == w:
        t, s = F[NOW], I[READY_SEQ]
        n = I[M] + 3
        ks = I[O_SEQ]
        first = not (_earlier(F[F_HEAP + 1], I[ks + 1], t, s)
                     or (n > 2 and _earlier(F[F_HEAP + 2], I[ks + 2], t, s)))
        if first:
            I[READY] = -1
            I[POPPED] = s  # the event handled now is the wake-up (on the carrier's entry)
            return True
    place(I, F, w, np.inf, _NO_SEQ)
    return False


@njit(**JIT, inline="always")
def first_slot(I):
    """The slot whose event comes first."""
    return I[I[O_SLOT]]


@njit(**JIT, inline="always")
def sleep(WI, w, pc):
    """Worker ``w`` waits, without an event of its own, until it is woken; then it resumes
    its step at ``pc``."""
    WI[MODE, w] = M_STEP
    WI[PC, w] = pc


@njit(**JIT, inline="always")
def wake(I, F, w):
    """Wake a sleeping worker now (SimPy: ``event.succeed()``).  The latest wake-up is kept
    out of the heap (it is most often the very next event); an earlier one still waiting
    goes into the heap."""
    seq = take_seq(I)
    if I[READY] >= 0:
        place(I, F, I[READY], F[NOW], I[READY_SEQ])
    I[READY] = w
    I[READY_SEQ] = seq


@njit(**JIT, inline="always")
def timeout(I, F, WI, w, d, pc):
    """Worker ``w`` sleeps ``d`` seconds, then resumes at ``pc``."""
    WI[MODE, w] = M_STEP
    WI[PC, w] = pc
    schedule(I, F, w, F[NOW] + d)


# ------------------------------------------------------------------------------- queues

@njit(**JIT, inline="always")
def _push(I, ring, head, length, w, front):
    m = I[M]
    base = I[O_RINGS] + ring * m
    n = I[length]
    if front:
        h = I[head] - 1
        if h < 0:
            h += m
        I[head] = h
        I[base + h] = w
    else:
        j = I[head] + n
        if j >= m:
            j -= m
        I[base + j] = w
    I[length] = n + 1


@njit(**JIT, inline="always")
def _pop(I, ring, head, length):
    m = I[M]
    h = I[head]
    w = I[I[O_RINGS] + ring * m + h]
    h += 1
    I[head] = 0 if h == m else h
    I[length] -= 1
    return w


# ------------------------------------------------------------------------------- cores

@njit(**JIT)
def core_release(I, F, WI, w):
    """Worker ``w`` gives up its core; the head of the run queue gets it."""
    if not I[OVER] or WI[HAS_CORE, w] == 0:
        return
    WI[HAS_CORE, w] = 0
    if I[RQ_LEN] > 0:
        w2 = _pop(I, 0, RQ_HEAD, RQ_LEN)
        WI[HAS_CORE, w2] = 1
        wake(I, F, w2)
    else:
        I[FREE] += 1


@njit(**JIT)
def core_acquire(I, F, WI, WF, w, pc):
    """Make sure worker ``w`` holds a core; False: it queues and resumes at ``pc`` with one."""
    if not I[OVER] or WI[HAS_CORE, w]:
        return True
    if I[FREE] > 0:
        I[FREE] -= 1
        WI[HAS_CORE, w] = 1
        WF[SLICE, w] = F[SLICE_LEN]
        return True
    _push(I, 0, RQ_HEAD, RQ_LEN, w, False)
    WI[MODE, w] = M_CORE_STEP
    WI[PC, w] = pc
    return False


# where run_cpu enters Machine.run's loop: its top, after a core was granted, after a slice
R_TOP, R_GRANTED, R_SLICE_END = range(3)


@njit(**JIT)
def run_cpu(I, F, WI, WF, w, d, entry):
    """Machine.run for worker ``w`` with ``d`` seconds of CPU left; True when done now."""
    if entry == R_GRANTED:
        WF[SLICE, w] = F[SLICE_LEN]
    while True:
        if entry == R_TOP and WI[HAS_CORE, w] == 0:
            if I[FREE] > 0:
                I[FREE] -= 1
                WI[HAS_CORE, w] = 1
                WF[SLICE, w] = F[SLICE_LEN]
            else:
                _push(I, 0, RQ_HEAD, RQ_LEN, w, False)
                WF[REM, w] = d
                WI[MODE, w] = M_CORE_RUN
                return False
        if entry != R_SLICE_END:
            s = WF[SLICE, w]
            if d <= s:
                WF[SLICE, w] = s - d
                if d > 0.0:
                    WI[MODE, w] = M_STEP
                    schedule(I, F, w, F[NOW] + d)
                    return False
                return True
            if s > 0.0:
                WF[REM, w] = d - s
                WI[MODE, w] = M_SLICE
                schedule(I, F, w, F[NOW] + s)
                return False
        # the slice is used up: step aside if somebody is waiting, else start a new slice
        if I[RQ_LEN] > 0:
            I[PREEMPT] += 1
            WF[SLICE, w] = 0.0
            core_release(I, F, WI, w)
        else:
            WF[SLICE, w] = F[SLICE_LEN]
        entry = R_TOP


@njit(**JIT, inline="always")
def cpu(I, F, WI, WF, w, d, pc):
    """Worker ``w`` works ``d`` seconds (a timeout, or Machine.run when workers outnumber
    cores); True when that took no time, else it resumes at ``pc`` when done."""
    WI[PC, w] = pc
    if not I[OVER]:
        if d > 0.0:
            WI[MODE, w] = M_STEP
            schedule(I, F, w, F[NOW] + d)
            return False
        return True
    return run_cpu(I, F, WI, WF, w, d, R_TOP)


# ------------------------------------------------------------------------------- the lock

@njit(**JIT, inline="always")
def _release_event(I, F, t, seq):
    """Put the lock's release callback (time ``t``, ``seq``) into the heap: into the entry of
    the waiter it will wake when that is known (no wake-up under way), else its own slot."""
    if I[WAKING] == 0 and I[LW_LEN] > 0 and F[HANDOVER] == 0.0:
        w = I[I[O_RINGS] + I[M] + I[LW_HEAD]]
        I[REL_CARRIER] = w
        place(I, F, w, t, seq)
    else:
        place(I, F, I[M], t, seq)


@njit(**JIT, inline="always")
def release_later(I, F, d):
    """The lock's release callback ``d > 0`` seconds from now, for a worker that holds the
    lock (one core per worker, no hand-over latency).  The callback takes its sequence
    number now; it enters the heap only when there is a waiter to wake.

    A waiter woken by the release just before this acquisition (its wake-up still due now)
    would retry while this worker holds the lock and go back to the head of the queue: that
    is done here at once, which changes nothing else (no release can come in between)."""
    if I[WAKING] and I[HAND_W] >= 0 and F[HANDOVER] == 0.0:
        w2 = I[HAND_W]
        I[HAND_W] = -1
        I[WAKING] = 0
        idle(I, F, w2)
        _push(I, 1, LW_HEAD, LW_LEN, w2, True)
    if I[LW_LEN] > 0:
        _release_event(I, F, F[NOW] + d, take_seq(I))
        return
    F[REL_T] = F[NOW] + d
    I[REL_SEQ] = take_seq(I)
    I[REL_PENDING] = 1


@njit(**JIT, inline="always")
def _release_due(I, F):
    """Settle a pending release callback: done if it comes before the event being handled."""
    if I[REL_PENDING] and _earlier(F[REL_T], I[REL_SEQ], F[NOW], I[POPPED]):
        I[REL_PENDING] = 0
        I[HELD] = 0


@njit(**JIT)
def lock_try(I, F, w):
    """Lock.try_acquire for ``w``: True if it holds the lock now, else it is queued."""
    _release_due(I, F)
    I[ACQ] += 1
    if I[HELD] == 0:
        I[HELD] = 1
        return True
    I[CONTENDED] += 1
    _push(I, 1, LW_HEAD, LW_LEN, w, False)
    if I[REL_PENDING]:  # the release callback now has a waiter to wake: into the heap
        I[REL_PENDING] = 0
        _release_event(I, F, F[REL_T], I[REL_SEQ])
    return False


@njit(**JIT)
def lock_retry(I, F, w):
    """Lock.retry for a woken ``w``: True if it holds the lock now, else it waits at the head."""
    _release_due(I, F)
    I[WAKING] = 0
    I[HAND_W] = -1
    if I[HELD] == 0:
        I[HELD] = 1
        return True
    _push(I, 1, LW_HEAD, LW_LEN, w, True)
    if I[REL_PENDING]:
        I[REL_PENDING] = 0
        _release_event(I, F, F[REL_T], I[REL_SEQ])
    return False


@njit(**JIT)
def lock_release(I, F):
    """Lock.release: free the lock and, unless one is under way, wake the longest waiter."""
    I[HELD] = 0
    if I[LW_LEN] > 0 and I[WAKING] == 0:
        I[WAKING] = 1
        w2 = _pop(I, 1, LW_HEAD, LW_LEN)
        I[HAND_W] = w2
        if F[HANDOVER] > 0.0:
            schedule(I, F, I[M] + 1, F[NOW] + F[HANDOVER])
        else:
            wake(I, F, w2)


@njit(**JIT, inline="always")
def lock_wait(I, F, WI, w, pc):
    """``w`` was queued for the lock: it gives up its core and sleeps until woken."""
    core_release(I, F, WI, w)
    sleep(WI, w, pc)


# ------------------------------------------------------------------------------- parking, barrier

@njit(**JIT, inline="always")
def park(I, F, WI, w, pc):
    """Worker ``w`` is beyond the active ones: it gives up its core and sleeps until
    :func:`unpark`; then it resumes at ``pc``."""
    core_release(I, F, WI, w)
    WI[PARKED, w] = 1
    sleep(WI, w, pc)


@njit(**JIT)
def unpark(I, F, WI, n):
    """``n`` workers are active now: wake the parked ones among them, in worker order."""
    I[ACTIVE] = n
    for w in range(min(n, I[M])):
        if WI[PARKED, w]:
            WI[PARKED, w] = 0
            wake(I, F, w)


@njit(**JIT, inline="always")
def arrive(I, w):
    """Worker ``w`` arrives at the barrier; True if it is the last of the round."""
    I[I[O_RINGS] + 2 * I[M] + I[ARRIVED]] = w
    I[ARRIVED] += 1
    return I[ARRIVED] == I[M]


@njit(**JIT)
def end_round(I, F):
    """The last worker of a round applied the update: wake the others in arrival order."""
    base = I[O_RINGS] + 2 * I[M]
    for i in range(I[ARRIVED] - 1):
        wake(I, F, I[base + i])
    I[ARRIVED] = 0
    F[ROUND_START] = F[NOW]


# ------------------------------------------------------------------------------- durations

@njit(**JIT, inline="always")
def dry(WI, w, kind):
    """Whether worker ``w`` has no ``kind`` duration left in its buffer."""
    return WI[POS + kind, w] >= WI[LEN + kind, w]


@njit(**JIT, inline="always")
def draw(WI, buf, kind, w):
    """Worker ``w``'s next ``kind`` duration (its sampler's next value)."""
    p = WI[POS + kind, w]
    WI[POS + kind, w] = p + 1
    return buf[kind, w, p]


# ------------------------------------------------------------------------------- rows, ops

@njit(**JIT, inline="always")
def rows_full(I, rows_i):
    """Whether the row buffer must be handed over before another row can be logged."""
    return rows_i[R_COUNT, 0] >= rows_i.shape[1] and not I[STOPPED]


@njit(**JIT, inline="always")
def log_row(I, rows_i, rows_f, k, w, t_read, t_apply, tau, eta, attempts, dropped):
    """Log one update row (after a stop rule ended the run, rows are not kept)."""
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
def stalled(I, F):
    """Count an applied update; True when too many happened without the clock moving."""
    t = F[NOW]
    if t == F[STALL_T]:
        I[STALL_N] += 1
        return I[STALL_N] > I[STALL_MAX]
    F[STALL_T] = t
    I[STALL_N] = 0
    return False


@njit(**JIT, inline="always")
def needs_python(I, F):
    """After an applied update: whether Python has work (stop rules, progress, a controller,
    an evaluation, an online step-size rule learning from every update)."""
    v = I[V]
    if v >= F[NEXT_CHECK]:
        return True
    if I[STOPPED]:
        return False
    return v >= F[NEXT_EVAL] or I[FEEDING] != 0


@njit(**JIT, inline="always")
def read_op(I, F, rows_i, op_i, op_f, w):
    """Numeric replay reads θ for worker ``w`` now; True when its buffer must run."""
    if not I[HOOKED] or I[STOPPED]:
        return False
    j = op_i[O_COUNT, 0]
    op_i[O_CODE, j] = w << 1
    op_i[O_COUNT, 0] = j + 1
    r = op_i[O_COUNT, 1]
    op_i[O_READ_ROWS, r] = rows_i[R_COUNT, 0] + rows_i[R_COUNT, 1]
    op_i[O_READ_FED, r] = I[FED]
    op_f[O_READ_T, r] = F[NOW]
    op_i[O_COUNT, 1] = r + 1
    return j + 1 >= I[FLUSH_AT]


@njit(**JIT, inline="always")
def apply_op(I, op_i, op_f, eta_table, code, tau):
    """Numeric replay applies a gradient (``code``: 2·worker + 1, or 2·workers + 1 for the
    mean of all) with staleness ``tau``; returns η (NaN in timing-only mode)."""
    if not I[HOOKED] or I[STOPPED]:
        return np.nan
    last = eta_table.shape[0] - 1
    eta = eta_table[tau if tau < last else last]
    j = op_i[O_COUNT, 0]
    op_i[O_CODE, j] = code
    op_f[O_ETA, j] = eta
    op_i[O_COUNT, 0] = j + 1
    return eta
