"""The algorithms' SimPy processes (:mod:`~stalesgd.sim.model`) as compiled steps.

A step runs worker ``w`` from where its process would resume (its program counter) to its
next wait: each block below is the stretch of the SimPy process between two ``yield``\\ s,
the same operations in the same order with the same float arithmetic (the primitives of
:mod:`~stalesgd.sim.fastcore`), so the compiled loop gives the SimPy processes' records bit
for bit.  A step also stops where Python has work (a replay flush, a refill of durations,
a full row buffer, a callback after an update) and is resumed there.

Adding an algorithm's compiled step (optional: without one the algorithm runs in SimPy):
write ``<name>_step`` after its SimPy process, give it a code in :data:`CODES` and a branch
in :func:`step`; the tests that compare both loops pick it up from :data:`CODES`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .fastcore import (
    ACTIVE,
    ALG,
    ATT,
    BOUND,
    CALLBACK,
    CAS,
    COMPUTE,
    FLUSH,
    JIT,
    NOW,
    OVER,
    PC,
    PEND,
    READ,
    REFILL,
    ROUND_START,
    ROWS_FULL,
    STALLED,
    T0,
    T1,
    T_READ,
    TOP,
    UPDATE,
    YIELDED,
    M,
    V,
    apply_op,
    arrive,
    core_acquire,
    core_release,
    cpu,
    draw,
    dry,
    end_round,
    lock_release,
    lock_retry,
    lock_try,
    lock_wait,
    log_row,
    needs_python,
    park,
    read_op,
    release_later,
    rows_full,
    sleep,
    stalled,
)

__all__ = ["CODES", "step"]

#: algorithms with a compiled step -> their code (``seq`` is Hogwild!'s process on one worker)
CODES = {"lock": 0, "hogwild": 1, "seq": 1, "leashed": 2, "sync": 3}


#: (from _applied) the step goes on
_GO_ON = -1


@njit(**JIT, inline="always")
def _applied(I, F, WI, w, pc):
    """After an applied update: STALLED if the clock stopped, CALLBACK if Python has work
    (the step resumes at ``pc``), else go on."""
    WI[PC, w] = pc
    if stalled(I, F):
        return STALLED
    if needs_python(I, F):
        return CALLBACK
    return _GO_ON


# program counters of lock_step
_L_PARKED, _L_ACQ_R, _L_WOKEN_R, _L_RETRY_R, _L_READ, _L_DRAW, _L_REL, _L_ACQ_U, _L_WOKEN_U, \
    _L_RETRY_U, _L_APPLY, _L_LOG = range(1, 13)


@njit(**JIT, inline="always")
def lock_step(I, F, WI, WF, buf, rows_i, rows_f, op_i, op_f, eta_table, w):
    """:func:`~stalesgd.sim.model.lock_process`."""
    pc = WI[PC, w]
    while True:
        if pc == TOP:
            if w >= I[ACTIVE]:
                park(I, F, WI, w, _L_PARKED)
                return YIELDED
            pc = _L_ACQ_R
        if pc == _L_PARKED:
            if not core_acquire(I, F, WI, WF, w, TOP):
                return YIELDED
            pc = TOP
            continue
        # read under the lock
        if pc == _L_ACQ_R:
            if not lock_try(I, F, w):
                lock_wait(I, F, WI, w, _L_WOKEN_R)
                return YIELDED
            pc = _L_READ
        if pc == _L_WOKEN_R:
            if not core_acquire(I, F, WI, WF, w, _L_RETRY_R):
                return YIELDED
            pc = _L_RETRY_R
        if pc == _L_RETRY_R:
            if not lock_retry(I, F, w):
                lock_wait(I, F, WI, w, _L_WOKEN_R)
                return YIELDED
            pc = _L_READ
        if pc == _L_READ:
            if dry(WI, w, READ) or dry(WI, w, COMPUTE):
                WI[PC, w] = _L_READ
                return REFILL
            WF[T_READ, w] = F[NOW]
            WI[T0, w] = I[V]
            pc = _L_DRAW
            if read_op(I, F, rows_i, op_i, op_f, w):
                WI[PC, w] = _L_DRAW
                return FLUSH
        if pc == _L_DRAW:
            r = draw(WI, buf, READ, w)
            c = draw(WI, buf, COMPUTE, w)
            if not I[OVER]:
                # the release after the copy is a callback: one sleep for copy + compute
                if r > 0.0:
                    release_later(I, F, r)
                else:
                    lock_release(I, F)
                if not cpu(I, F, WI, WF, w, r + c, _L_ACQ_U):
                    return YIELDED
                pc = _L_ACQ_U
            else:
                WF[PEND, w] = c
                if r > 0.0 and not cpu(I, F, WI, WF, w, r, _L_REL):
                    return YIELDED
                pc = _L_REL
        if pc == _L_REL:
            lock_release(I, F)
            c = WF[PEND, w]
            if c > 0.0 and not cpu(I, F, WI, WF, w, c, _L_ACQ_U):
                return YIELDED
            pc = _L_ACQ_U
        # apply under the lock
        if pc == _L_ACQ_U:
            if not lock_try(I, F, w):
                lock_wait(I, F, WI, w, _L_WOKEN_U)
                return YIELDED
            pc = _L_APPLY
        if pc == _L_WOKEN_U:
            if not core_acquire(I, F, WI, WF, w, _L_RETRY_U):
                return YIELDED
            pc = _L_RETRY_U
        if pc == _L_RETRY_U:
            if not lock_retry(I, F, w):
                lock_wait(I, F, WI, w, _L_WOKEN_U)
                return YIELDED
            pc = _L_APPLY
        if pc == _L_APPLY:
            if dry(WI, w, UPDATE):
                WI[PC, w] = _L_APPLY
                return REFILL
            WI[T1, w] = I[V]
            d = draw(WI, buf, UPDATE, w)
            if d > 0.0 and not cpu(I, F, WI, WF, w, d, _L_LOG):
                return YIELDED
            pc = _L_LOG
        if pc == _L_LOG:
            if rows_full(I, rows_i):
                WI[PC, w] = _L_LOG
                return ROWS_FULL
            t1 = WI[T1, w]
            tau = t1 - WI[T0, w]
            I[V] = t1 + 1
            eta = apply_op(I, op_i, op_f, eta_table, (w << 1) | 1, tau)
            log_row(I, rows_i, rows_f, t1, w, WF[T_READ, w], F[NOW], tau, eta, 1, False)
            lock_release(I, F)
            code = _applied(I, F, WI, w, TOP)
            if code != _GO_ON:
                return code
            pc = TOP


_H_PARKED, _H_READ, _H_DRAW, _H_CLAIM, _H_AFTER = range(1, 6)


@njit(**JIT, inline="always")
def hogwild_step(I, F, WI, WF, buf, rows_i, rows_f, op_i, op_f, eta_table, w):
    """:func:`~stalesgd.sim.model.hogwild_process` (also ``seq``)."""
    pc = WI[PC, w]
    while True:
        if pc == TOP:
            if w >= I[ACTIVE]:
                park(I, F, WI, w, _H_PARKED)
                return YIELDED
            pc = _H_READ
        if pc == _H_PARKED:
            if not core_acquire(I, F, WI, WF, w, TOP):
                return YIELDED
            pc = TOP
            continue
        if pc == _H_READ:
            if dry(WI, w, READ) or dry(WI, w, COMPUTE) or dry(WI, w, UPDATE):
                WI[PC, w] = _H_READ
                return REFILL
            WF[T_READ, w] = F[NOW]
            WI[T0, w] = I[V]
            pc = _H_DRAW
            if read_op(I, F, rows_i, op_i, op_f, w):
                WI[PC, w] = _H_DRAW
                return FLUSH
        if pc == _H_DRAW:
            d = draw(WI, buf, READ, w) + draw(WI, buf, COMPUTE, w)
            WF[PEND, w] = draw(WI, buf, UPDATE, w)
            d += F[CAS]
            if not cpu(I, F, WI, WF, w, d, _H_CLAIM):
                return YIELDED
            pc = _H_CLAIM
        if pc == _H_CLAIM:
            # the update index is claimed (fetch-add) before the element-wise update
            if rows_full(I, rows_i):
                WI[PC, w] = _H_CLAIM
                return ROWS_FULL
            t1 = I[V]
            tau = t1 - WI[T0, w]
            I[V] = t1 + 1
            eta = apply_op(I, op_i, op_f, eta_table, (w << 1) | 1, tau)
            log_row(I, rows_i, rows_f, t1, w, WF[T_READ, w], F[NOW] + WF[PEND, w], tau, eta, 1,
                    False)
            code = _applied(I, F, WI, w, _H_AFTER)
            if code != _GO_ON:
                return code
            pc = _H_AFTER
        if pc == _H_AFTER:
            u = WF[PEND, w]
            if u > 0.0 and not cpu(I, F, WI, WF, w, u, TOP):
                return YIELDED
            pc = TOP


_S_PARKED, _S_READ, _S_COMPUTE, _S_ATTEMPT, _S_PUBLISH = range(1, 6)


@njit(**JIT, inline="always")
def leashed_step(I, F, WI, WF, buf, rows_i, rows_f, op_i, op_f, eta_table, w):
    """:func:`~stalesgd.sim.model.leashed_process`."""
    pc = WI[PC, w]
    while True:
        if pc == TOP:
            if w >= I[ACTIVE]:
                park(I, F, WI, w, _S_PARKED)
                return YIELDED
            pc = _S_READ
        if pc == _S_PARKED:
            if not core_acquire(I, F, WI, WF, w, TOP):
                return YIELDED
            pc = TOP
            continue
        # take a reference to the latest published θ and compute on it
        if pc == _S_READ:
            if dry(WI, w, COMPUTE):
                WI[PC, w] = _S_READ
                return REFILL
            WF[T_READ, w] = F[NOW]
            WI[T0, w] = I[V]
            pc = _S_COMPUTE
            if read_op(I, F, rows_i, op_i, op_f, w):
                WI[PC, w] = _S_COMPUTE
                return FLUSH
        if pc == _S_COMPUTE:
            d = F[CAS] + draw(WI, buf, COMPUTE, w)
            WI[ATT, w] = 0
            if not cpu(I, F, WI, WF, w, d, _S_ATTEMPT):
                return YIELDED
            pc = _S_ATTEMPT
        if pc == _S_ATTEMPT:  # copy the latest published version, apply, publish
            if dry(WI, w, READ) or dry(WI, w, UPDATE):
                WI[PC, w] = _S_ATTEMPT
                return REFILL
            WI[ATT, w] += 1
            WI[T1, w] = I[V]
            d = draw(WI, buf, READ, w) + draw(WI, buf, UPDATE, w) + F[CAS]
            if d > 0.0 and not cpu(I, F, WI, WF, w, d, _S_PUBLISH):
                return YIELDED
            pc = _S_PUBLISH
        if pc == _S_PUBLISH:
            if rows_full(I, rows_i):
                WI[PC, w] = _S_PUBLISH
                return ROWS_FULL
            t1 = WI[T1, w]
            tau = t1 - WI[T0, w]
            attempts = WI[ATT, w]
            if I[V] == t1:  # compare-and-swap succeeds
                I[V] = t1 + 1
                eta = apply_op(I, op_i, op_f, eta_table, (w << 1) | 1, tau)
                log_row(I, rows_i, rows_f, t1, w, WF[T_READ, w], F[NOW], tau, eta, attempts, False)
                code = _applied(I, F, WI, w, TOP)
                if code != _GO_ON:
                    return code
                pc = TOP
                continue
            bound = I[BOUND]
            if bound >= 0 and attempts > bound:
                log_row(I, rows_i, rows_f, -1, w, WF[T_READ, w], F[NOW], tau, np.nan, attempts,
                        True)
                pc = TOP
                continue
            pc = _S_ATTEMPT
            continue


_Y_DRAW, _Y_ARRIVE, _Y_WOKEN, _Y_LAST, _Y_LOG = range(1, 6)


@njit(**JIT, inline="always")
def sync_step(I, F, WI, WF, buf, rows_i, rows_f, op_i, op_f, eta_table, w):
    """:func:`~stalesgd.sim.model.sync_process`."""
    pc = WI[PC, w]
    while True:
        if pc == TOP:
            if dry(WI, w, READ) or dry(WI, w, COMPUTE):
                WI[PC, w] = TOP
                return REFILL
            WI[T0, w] = I[V]
            pc = _Y_DRAW
            if read_op(I, F, rows_i, op_i, op_f, w):
                WI[PC, w] = _Y_DRAW
                return FLUSH
        if pc == _Y_DRAW:
            d = draw(WI, buf, READ, w) + draw(WI, buf, COMPUTE, w)
            if not cpu(I, F, WI, WF, w, d, _Y_ARRIVE):
                return YIELDED
            pc = _Y_ARRIVE
        if pc == _Y_ARRIVE:
            if not arrive(I, w):
                core_release(I, F, WI, w)
                sleep(WI, w, _Y_WOKEN)
                return YIELDED
            pc = _Y_LAST
        if pc == _Y_WOKEN:
            if not core_acquire(I, F, WI, WF, w, TOP):
                return YIELDED
            pc = TOP
            continue
        # the last worker to arrive applies the averaged update
        if pc == _Y_LAST:
            if dry(WI, w, UPDATE):
                WI[PC, w] = _Y_LAST
                return REFILL
            d = draw(WI, buf, UPDATE, w)
            if d > 0.0 and not cpu(I, F, WI, WF, w, d, _Y_LOG):
                return YIELDED
            pc = _Y_LOG
        if pc == _Y_LOG:
            if rows_full(I, rows_i):
                WI[PC, w] = _Y_LOG
                return ROWS_FULL
            k = I[V]
            I[V] = k + 1
            eta = apply_op(I, op_i, op_f, eta_table, (I[M] << 1) | 1, 0)
            log_row(I, rows_i, rows_f, k, w, F[ROUND_START], F[NOW], 0, eta, 1, False)
            end_round(I, F)
            code = _applied(I, F, WI, w, TOP)
            if code != _GO_ON:
                return code
            pc = TOP


@njit(**JIT, inline="always")
def step(I, F, WI, WF, buf, rows_i, rows_f, op_i, op_f, eta_table, w):
    """Run worker ``w``'s step of the algorithm whose code the state holds."""
    alg = I[ALG]
    if alg == 0:
        return lock_step(I, F, WI, WF, buf, rows_i, rows_f, op_i, op_f, eta_table, w)
    if alg == 1:
        return hogwild_step(I, F, WI, WF, buf, rows_i, rows_f, op_i, op_f, eta_table, w)
    if alg == 2:
        return leashed_step(I, F, WI, WF, buf, rows_i, rows_f, op_i, op_f, eta_table, w)
    return sync_step(I, F, WI, WF, buf, rows_i, rows_f, op_i, op_f, eta_table, w)
