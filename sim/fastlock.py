"""The fast path's ``lock`` loop, compiled: simulated updates without a Python step each.

The heap-based loop of :mod:`stalesgd.sim.fastpath` spends a few microseconds of Python per
simulated update.  Against a gradient of a few microseconds (logistic regression, small
batches) that doubles the cost of a numeric replay, and it caps timing-only runs.  Here
the same model runs in one ``@njit`` loop:

* the lock is the first-come-first-served server of :func:`~.fastpath._lock` (zero
  hand-over, the releasing worker barges for its next read), with the same draws from the
  same per-worker streams, the same float arithmetic for every instant, and the same order
  of simultaneous events (event time, then scheduling sequence number); the records are
  those of the Python loop bit for bit;
* durations come from per-worker buffers filled from the samplers' chunks
  (:class:`~.fastbuffers.Durations`), rows go to preallocated arrays, and a
  plain numeric replay (:meth:`~stalesgd.sim.replay.NumericReplay.inline`) gets its
  reads and applies as op codes in arrays;
* the loop returns to Python only where Python has work: an evaluation or a stop rule
  is due (``v`` reaches the hook's next evaluation or the simulation's next check), the
  replay's buffer is full (:data:`~stalesgd.sim.replay.FLUSH_OPS`), a duration buffer or
  the row buffer ran out, or the time limit is reached.  The state lives in small arrays,
  so the loop resumes exactly where it stopped.

While an online step-size rule (TAIL-τ) learns its table, the loop returns after every
update so that Python feeds the rule, as :meth:`~stalesgd.sim.replay.StepSizes.eta` does,
and hands over each new table; once the rule stops learning, it runs on.  A hook whose
``read``/``apply``/``drop`` must be called keeps the Python loop.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from stalesgd.jitcache import cached

from .fastbuffers import (
    CALLBACK,
    COMPUTE,
    FED,
    FEEDING,
    FLOAT_COMMON,
    FLUSH,
    FLUSH_AT,
    HOOKED,
    INT_COMMON,
    N_OPS,
    N_READS,
    NEXT_CHECK,
    NEXT_EVAL,
    NOW,
    PHASE,
    READ_TIME,
    REFILL,
    ROWS_FULL,
    SECONDS,
    SEQ,
    STOP_TIME,
    UPDATE,
    Buffers,
    Durations,
    N,
    V,
    W,
    drive,
    next_event,
    record_apply,
    record_read,
    runs_dry,
)

if TYPE_CHECKING:
    from .fastpath import _Rows, _State
    from .model import Simulation

__all__ = ["run_lock_compiled"]

# where the loop resumes: pick the next event / the worker's next read / its next draws
_PICK, _READ, _DRAW = 0, 1, 2
# slots of the integer state
_BUSY_SEQ, _CONTENDED, _ACQ, _N_INT = range(INT_COMMON, INT_COMMON + 4)
# slots of the float state
_BUSY, _T, _N_FLOAT = range(FLOAT_COMMON, FLOAT_COMMON + 3)  # NOW: the apply's end


@cached
@njit(nogil=True)
def _lock_loop(ist, fst, t_read, t0s, ev_t, ev_s, buf, pos, length,
               r_k, r_w, r_tr, r_ta, r_tau, r_eta, ops, op_eta, rd_n, rd_t, rd_f, eta_table):
    """Advance the ``lock`` model until Python is needed; returns why (``STOP_TIME`` …)."""
    m = t_read.shape[0]
    hooked = ist[HOOKED] != 0
    feeding = ist[FEEDING] != 0  # an online rule learns from every applied update
    fed = ist[FED]
    v, n, seq, busy_seq = ist[V], ist[N], ist[SEQ], ist[_BUSY_SEQ]
    contended, acquisitions = ist[_CONTENDED], ist[_ACQ]
    n_ops, n_reads, phase, w, flush_at = (ist[N_OPS], ist[N_READS], ist[PHASE], ist[W],
                                          ist[FLUSH_AT])
    busy, t, ta = fst[_BUSY], fst[_T], fst[NOW]
    next_eval, next_check, seconds = fst[NEXT_EVAL], fst[NEXT_CHECK], fst[SECONDS]
    cap = r_k.shape[0]
    code = STOP_TIME
    while True:
        if phase == _PICK:
            w, t, s = next_event(ev_t, ev_s)
            if t >= seconds:
                code = STOP_TIME
                break
            if runs_dry(pos, length, w):
                code = REFILL
                break
            if n >= cap:
                code = ROWS_FULL
                break
            acquisitions += 1
            if t < busy:
                contended += 1
                acq = busy
            else:
                # an arrival at the very instant of the release finds the lock still held
                # when it was scheduled before the release (SimPy's order)
                if t == busy and s < busy_seq:
                    contended += 1
                acq = t
            ta = acq + buf[UPDATE, w, pos[UPDATE, w]]
            pos[UPDATE, w] += 1
            if ta >= seconds:  # this apply would end after the limit: the others queue
                for j in range(m):
                    if j != w and ev_t[j] < seconds:
                        contended += 1
                code = STOP_TIME
                break
            k = v
            v = k + 1
            tau = k - t0s[w]
            if hooked:
                eta, n_ops = record_apply(ops, op_eta, n_ops, w, eta_table, tau)
            else:
                eta = np.nan
            r_k[n] = k
            r_w[n] = w
            r_tr[n] = t_read[w]
            r_ta[n] = ta
            r_tau[n] = tau
            r_eta[n] = eta
            n += 1
            phase = _READ
            if v >= next_eval or v >= next_check or feeding:
                code = CALLBACK
                break
        if phase == _READ:  # the next read, under the lock taken again at once
            acquisitions += 1
            t_read[w] = ta
            t0s[w] = v
            phase = _DRAW
            if hooked:
                n_ops, n_reads = record_read(ops, rd_n, rd_t, rd_f, n_ops, n_reads, w, n,
                                               ta, fed)
                if n_ops >= flush_at:
                    code = FLUSH
                    break
        # phase == _DRAW
        r = buf[READ_TIME, w, pos[READ_TIME, w]]
        pos[READ_TIME, w] += 1
        busy = ta + r
        s = seq
        seq += 1
        # (with no update or copy time the lock was never held from one event to the next)
        busy_seq = -1 if (ta == t and r == 0.0) else s
        ev_t[w] = ta + (r + buf[COMPUTE, w, pos[COMPUTE, w]])
        pos[COMPUTE, w] += 1
        ev_s[w] = s
        phase = _PICK
    ist[V], ist[N], ist[SEQ], ist[_BUSY_SEQ] = v, n, seq, busy_seq
    ist[_CONTENDED], ist[_ACQ] = contended, acquisitions
    ist[N_OPS], ist[N_READS], ist[PHASE], ist[W] = n_ops, n_reads, phase, w
    fst[_BUSY], fst[_T], fst[NOW] = busy, t, ta
    return code


def run_lock_compiled(sim: Simulation, state: _State, rows: _Rows, seconds: float) -> None:
    """``lock`` on the fast path in the compiled loop; ``sim.hook`` is ``None`` or a plain
    replay whose :meth:`~stalesgd.sim.replay.NumericReplay.inline` gives its buffers."""
    from . import replay

    env, hook, log = sim.env, sim.hook, sim.log
    m = sim.workers
    hooked = hook is not None
    buffers = Buffers(hooked, replay.FLUSH_OPS)
    durations = Durations(sim)
    ist = np.zeros(_N_INT, np.int64)
    fst = np.zeros(_N_FLOAT)
    fst[SECONDS] = seconds
    t_read = np.zeros(m)
    t0s = np.zeros(m, np.int64)
    ev_t = np.zeros(m)
    ev_s = np.zeros(m, np.int64)
    busy = -math.inf
    busy_seq = -1
    seq = 0
    contended = acquisitions = 0
    # every worker reads under the lock at t = 0, in worker order (as the Python loop)
    for w in range(m):
        acquisitions += 1
        acq = 0.0
        if acq < busy:
            contended += 1
            acq = busy
        t_read[w] = acq
        if hooked and acq < seconds:
            env._now = acq
            log.n = 0
            hook.read(w, 0)
            if sim._rows_at_stop is not None:
                state.now = acq
                return
        r = durations.next(READ_TIME, w)
        busy = acq + r
        busy_seq = seq
        ev_t[w] = acq + (r + durations.next(COMPUTE, w))
        ev_s[w] = seq
        seq += 1
    ist[SEQ], ist[_BUSY_SEQ], ist[_CONTENDED], ist[_ACQ] = seq, busy_seq, contended, \
        acquisitions
    fst[_BUSY] = busy

    def step(eta_table: np.ndarray) -> int:
        return _lock_loop(ist, fst, t_read, t0s, ev_t, ev_s, durations.buf, durations.pos,
                          durations.length, buffers.r_k, buffers.r_w, buffers.r_tr,
                          buffers.r_ta, buffers.r_tau, buffers.r_eta, buffers.ops,
                          buffers.op_eta, buffers.rd_n, buffers.rd_t, buffers.rd_f,
                          eta_table)

    stop_t = drive(sim, state, rows, ist, fst, buffers, durations, step)
    w = int(ist[W])
    contended = int(ist[_CONTENDED])
    if stop_t is not None:
        state.now = stop_t
        contended += int(np.sum((ev_t < stop_t) & (np.arange(m) != w)))
    sim.lock.contended = contended
    sim.lock.acquisitions = int(ist[_ACQ])
