"""The algorithms' SimPy processes (:mod:`~stalesgd.sim.model`) as compiled steps.

A step runs worker ``w`` from where its process would resume (its program counter) to its
next wait.  Each block is the stretch of the process between two ``yield``\\ s, the same
operations in the same order with the same float arithmetic (:mod:`~stalesgd.sim.fastcore`),
so the compiled loop gives the processes' records bit for bit.  A step also stops where
Python has work (a replay flush, a refill of durations, a full row buffer, a callback after
an update) and is resumed there; blocks that can stop so start with their checks.

Adding an algorithm's compiled step (optional: without one it runs in SimPy): write
``<name>_step`` after its process and give it a code in :data:`CODES`, the index of the step
in :data:`STEPS`; ``tests/test_sim_loops.py`` then compares it with the process.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .fastcore import (
    ACTIVE,
    ATT,
    BOUND,
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
    T0,
    T1,
    T_READ,
    TOP,
    UPDATE,
    YIELDED,
    M,
    V,
    applied,
    apply_op,
    arrive,
    core_acquire,
    cpu,
    draw,
    dry,
    end_round,
    lock_acquire,
    lock_release,
    log_row,
    park,
    read_op,
    release_later,
    rows_full,
)

__all__ = ["CODES", "STEPS"]

#: algorithms with a compiled step -> their code (``seq`` is Hogwild!'s process on one worker)
CODES = {"lock": 0, "hogwild": 1, "seq": 1, "leashed": 2, "sync": 3}

_L_PARKED, _L_ACQ_R, _L_RETRY_R, _L_READ, _L_DRAW, _L_REL, _L_ACQ_U, _L_RETRY_U, _L_APPLY, \
    _L_LOG = range(1, 11)


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
        if pc == _L_ACQ_R or pc == _L_RETRY_R:  # read under the lock (a retry: woken)
            if not lock_acquire(I, F, WI, WF, w, pc == _L_RETRY_R, _L_RETRY_R):
                return YIELDED
            pc = _L_READ
        if pc == _L_READ:
            if dry(WI, w, READ) or dry(WI, w, COMPUTE):
                WI[PC, w] = _L_READ
                return REFILL
            WF[T_READ, w], WI[T0, w] = F[NOW], I[V]
            pc = _L_DRAW
            if read_op(I, F, rows_i, op_i, op_f, w):
                WI[PC, w] = _L_DRAW
                return FLUSH
        if pc == _L_DRAW:
            r = draw(WI, buf, READ, w)
            c = draw(WI, buf, COMPUTE, w)
            if not I[OVER]:  # the release is a callback: one sleep for copy + compute
                if r > 0.0:
                    release_later(I, F, r)
                else:
                    lock_release(I, F)
                d, pc, work = r + c, _L_ACQ_U, True
            else:  # the copy, then the release, then the compute (_L_REL)
                WF[PEND, w] = c
                d, pc, work = r, _L_REL, r > 0.0
            if work and not cpu(I, F, WI, WF, w, d, pc):
                return YIELDED
        if pc == _L_REL:
            lock_release(I, F)
            if WF[PEND, w] > 0.0 and not cpu(I, F, WI, WF, w, WF[PEND, w], _L_ACQ_U):
                return YIELDED
            pc = _L_ACQ_U
        if pc == _L_ACQ_U or pc == _L_RETRY_U:  # apply under the lock (a retry: woken)
            if not lock_acquire(I, F, WI, WF, w, pc == _L_RETRY_U, _L_RETRY_U):
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
            code = applied(I, F, WI, w, TOP)
            if code >= 0:
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
            WF[T_READ, w], WI[T0, w] = F[NOW], I[V]
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
        if pc == _H_CLAIM:  # claim the next index (fetch-add), then write in place
            if rows_full(I, rows_i):
                WI[PC, w] = _H_CLAIM
                return ROWS_FULL
            t1 = I[V]
            tau = t1 - WI[T0, w]
            I[V] = t1 + 1
            eta = apply_op(I, op_i, op_f, eta_table, (w << 1) | 1, tau)
            log_row(I, rows_i, rows_f, t1, w, WF[T_READ, w], F[NOW] + WF[PEND, w], tau, eta,
                    1, False)
            code = applied(I, F, WI, w, _H_AFTER)
            if code >= 0:
                return code
            pc = _H_AFTER
        if pc == _H_AFTER:
            if WF[PEND, w] > 0.0 and not cpu(I, F, WI, WF, w, WF[PEND, w], TOP):
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
        if pc == _S_READ:  # take the latest published θ and compute on it
            if dry(WI, w, COMPUTE):
                WI[PC, w] = _S_READ
                return REFILL
            WF[T_READ, w], WI[T0, w] = F[NOW], I[V]
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
            t1, attempts = WI[T1, w], WI[ATT, w]
            tau = t1 - WI[T0, w]
            won = I[V] == t1  # the compare-and-swap succeeds
            if not won and (I[BOUND] < 0 or attempts <= I[BOUND]):
                pc = _S_ATTEMPT  # retry on a fresh copy
                continue
            if rows_full(I, rows_i):
                WI[PC, w] = _S_PUBLISH
                return ROWS_FULL
            if won:
                I[V] = t1 + 1
                eta = apply_op(I, op_i, op_f, eta_table, (w << 1) | 1, tau)
                log_row(I, rows_i, rows_f, t1, w, WF[T_READ, w], F[NOW], tau, eta, attempts,
                        False)
                code = applied(I, F, WI, w, TOP)
                if code >= 0:
                    return code
            else:  # dropped
                log_row(I, rows_i, rows_f, -1, w, WF[T_READ, w], F[NOW], tau, np.nan,
                        attempts, True)
            pc = TOP


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
            if not arrive(I, F, WI, w, _Y_WOKEN):
                return YIELDED
            pc = _Y_LAST
        if pc == _Y_WOKEN:
            if not core_acquire(I, F, WI, WF, w, TOP):
                return YIELDED
            pc = TOP
            continue
        if pc == _Y_LAST:  # the last worker to arrive applies the averaged update
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
            code = applied(I, F, WI, w, TOP)
            if code >= 0:
                return code
            pc = TOP


#: each algorithm code's step (:func:`~stalesgd.sim.fastloop.event_loop` compiles a loop of it)
STEPS = (lock_step, hogwild_step, leashed_step, sync_step)
