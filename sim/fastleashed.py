"""The fast path's Leashed-SGD loop, compiled: publish attempts without a Python step each.

The same model as :func:`~stalesgd.sim.fastpath._leashed` (which stays for hooks whose
methods must be called): a worker copies the latest published version, computes, copies
again and publishes by compare-and-swap; the publish fails when another one landed since
its copy started, and the worker retries on a fresh copy up to the persistence bound,
then drops its gradient.  The version a copy saw is looked up in the publish times (a
bisection), so an attempt costs one event.  Same draws from the same per-worker streams,
same float arithmetic and same event order (time, then scheduling sequence number) as the
Python loop: the records are equal bit for bit.  How the loop returns to Python and
resumes is described in :mod:`stalesgd.sim.fastlock`; here it also returns when the list
of publish times must grow.
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
    FLUSH,
    GROW,
    READ_TIME,
    REFILL,
    ROWS_FULL,
    STOP_TIME,
    UPDATE,
    Buffers,
    Durations,
    grown,
)

if TYPE_CHECKING:
    from .fastpath import _Rows, _State
    from .model import Simulation

__all__ = ["run_leashed_compiled"]

# where the loop resumes: pick the next event / the worker's next copy / its next draws
_PICK, _READ, _DRAW = 0, 1, 2
# slots of the integer state
(_V, _N, _SEQ, _FAILED, _DROPPED, _N_OPS, _N_READS, _PHASE, _W, _FLUSH_AT, _HOOKED, _BOUND,
 _FEEDING, _FED, _N_INT) = range(15)
# slots of the float state
_T, _CAS, _NEXT_EVAL, _NEXT_CHECK, _SECONDS, _N_FLOAT = range(6)

#: publish times kept at first (the array doubles when full)
PUBS_START = 1 << 12


@cached
@njit(nogil=True)
def _bisect_right(a, x, lo, hi):
    while lo < hi:
        mid = (lo + hi) // 2
        if x < a[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@cached
@njit(nogil=True)
def _leashed_loop(ist, fst, t_read, t0s, t1s, ts, att, ev_t, ev_s, pubs, buf, pos, length,
                  r_k, r_w, r_tr, r_ta, r_tau, r_eta, r_att, r_drop, ops, op_eta, rd_n, rd_t, rd_f,
                  eta_table):
    """Advance the Leashed-SGD model until Python is needed; returns why (``STOP_TIME`` …)."""
    m = t_read.shape[0]
    last = eta_table.shape[0] - 1
    hooked = ist[_HOOKED] != 0
    feeding = ist[_FEEDING] != 0  # an online rule learns from every applied update
    fed = ist[_FED]
    bound = ist[_BOUND]  # < 0: unbounded persistence
    v, n, seq, failed, dropped = ist[_V], ist[_N], ist[_SEQ], ist[_FAILED], ist[_DROPPED]
    n_ops, n_reads, phase, w, flush_at = (ist[_N_OPS], ist[_N_READS], ist[_PHASE], ist[_W],
                                          ist[_FLUSH_AT])
    t, cas = fst[_T], fst[_CAS]
    next_eval, next_check, seconds = fst[_NEXT_EVAL], fst[_NEXT_CHECK], fst[_SECONDS]
    cap = r_k.shape[0]
    code = STOP_TIME
    while True:
        if phase == _PICK:
            w = 0
            t = ev_t[0]
            s = ev_s[0]
            for j in range(1, m):
                tj = ev_t[j]
                if tj < t or (tj == t and ev_s[j] < s):
                    w, t, s = j, tj, ev_s[j]
            if t >= seconds:
                code = STOP_TIME
                break
            if (pos[COMPUTE, w] >= length[COMPUTE, w] or pos[READ_TIME, w] >= length[READ_TIME, w]
                    or pos[UPDATE, w] >= length[UPDATE, w]):
                code = REFILL
                break
            if n >= cap:
                code = ROWS_FULL
                break
            if v >= pubs.shape[0]:
                code = GROW
                break
            t0 = t0s[w]
            t1 = t1s[w]
            if t1 < 0:
                t1 = _bisect_right(pubs, ts[w], t0, v)
            if v == t1:  # the compare-and-swap succeeds
                v = t1 + 1
                pubs[t1] = t
                tau = t1 - t0
                if hooked:
                    eta = eta_table[tau if tau < last else last]
                    ops[n_ops] = (w << 1) | 1
                    op_eta[n_ops] = eta
                    n_ops += 1
                else:
                    eta = np.nan
                r_k[n] = t1
                r_w[n] = w
                r_tr[n] = t_read[w]
                r_ta[n] = t
                r_tau[n] = tau
                r_eta[n] = eta
                r_att[n] = att[w]
                r_drop[n] = False
                n += 1
                phase = _READ
                if v >= next_eval or v >= next_check or feeding:
                    code = CALLBACK
                    break
            else:
                failed += 1
                a = att[w]
                if bound < 0 or a <= bound:  # retry on a fresh copy
                    att[w] = a + 1
                    t1s[w] = v
                    ts[w] = t
                    r = buf[READ_TIME, w, pos[READ_TIME, w]]
                    pos[READ_TIME, w] += 1
                    u = buf[UPDATE, w, pos[UPDATE, w]]
                    pos[UPDATE, w] += 1
                    ev_t[w] = t + (r + u + cas)
                    ev_s[w] = seq
                    seq += 1
                    continue
                dropped += 1
                r_k[n] = -1
                r_w[n] = w
                r_tr[n] = t_read[w]
                r_ta[n] = t
                r_tau[n] = t1 - t0
                r_eta[n] = np.nan
                r_att[n] = a
                r_drop[n] = True
                n += 1
                phase = _READ
        if phase == _READ:  # copy the latest published version and compute on it
            t_read[w] = t
            t0s[w] = v
            phase = _DRAW
            if hooked:
                ops[n_ops] = w << 1
                n_ops += 1
                rd_n[n_reads] = n
                rd_t[n_reads] = t
                rd_f[n_reads] = fed
                n_reads += 1
                if n_ops >= flush_at:
                    code = FLUSH
                    break
        # phase == _DRAW
        s0 = t + (cas + buf[COMPUTE, w, pos[COMPUTE, w]])
        pos[COMPUTE, w] += 1
        ts[w] = s0
        t1s[w] = -1
        att[w] = 1
        r = buf[READ_TIME, w, pos[READ_TIME, w]]
        pos[READ_TIME, w] += 1
        u = buf[UPDATE, w, pos[UPDATE, w]]
        pos[UPDATE, w] += 1
        ev_t[w] = s0 + (r + u + cas)
        ev_s[w] = seq
        seq += 1
        phase = _PICK
    ist[_V], ist[_N], ist[_SEQ], ist[_FAILED], ist[_DROPPED] = v, n, seq, failed, dropped
    ist[_N_OPS], ist[_N_READS], ist[_PHASE], ist[_W] = n_ops, n_reads, phase, w
    fst[_T] = t
    return code


def run_leashed_compiled(sim: Simulation, state: _State, rows: _Rows, seconds: float) -> None:
    """``leashed`` on the fast path in the compiled loop; ``sim.hook`` is ``None`` or a
    plain replay whose :meth:`~stalesgd.sim.replay.NumericReplay.inline` gives its buffers."""
    from . import replay
    from .fastpath import _check_active, _stop_at_seconds

    env, hook, log = sim.env, sim.hook, sim.log
    m = sim.workers
    hooked = hook is not None
    flush_ops = replay.FLUSH_OPS
    buffers = Buffers(hooked, flush_ops, attempts=True)
    durations = Durations(sim)
    ist = np.zeros(_N_INT, np.int64)
    fst = np.zeros(_N_FLOAT)
    ist[_HOOKED] = int(hooked)
    ist[_BOUND] = -1 if sim.persistence is None else int(sim.persistence)
    cas = fst[_CAS] = sim.cas_cost
    fst[_SECONDS] = seconds
    eta_table = np.array(hook.inline()[3] if hooked else [math.nan], dtype=np.float64)
    t_read = np.zeros(m)
    t0s = np.zeros(m, np.int64)
    t1s = np.full(m, -1, np.int64)  # version copied at the attempt's start, or -1: look it up
    ts = np.zeros(m)  # start of the current attempt
    att = np.ones(m, np.int64)
    ev_t = np.zeros(m)
    ev_s = np.zeros(m, np.int64)
    pubs = np.empty(PUBS_START)
    try:
        for w in range(m):
            if hooked:
                env._now = 0.0
                log.n = 0
                hook.read(w, 0)
                if sim._rows_at_stop is not None:
                    return
            s = 0.0 + (cas + durations.next(COMPUTE, w))
            ts[w] = s
            ev_t[w] = s + (durations.next(READ_TIME, w) + durations.next(UPDATE, w) + cas)
            ev_s[w] = w
        ist[_SEQ] = m
        next_eval = hook.next_eval_k if hooked else math.inf
        while True:
            fst[_NEXT_EVAL] = next_eval
            fst[_NEXT_CHECK] = sim._next_check
            ist[_FLUSH_AT] = flush_ops - len(hook._ops) if hooked else 1 << 62
            if hooked:
                ist[_FEEDING], ist[_FED] = int(hook.step._feeding), hook.step._fed
            code = _leashed_loop(ist, fst, t_read, t0s, t1s, ts, att, ev_t, ev_s, pubs,
                                 durations.buf, durations.pos, durations.length, buffers.r_k,
                                 buffers.r_w, buffers.r_tr, buffers.r_ta, buffers.r_tau,
                                 buffers.r_eta, buffers.r_att, buffers.r_drop, buffers.ops,
                                 buffers.op_eta, buffers.rd_n, buffers.rd_t, buffers.rd_f,
                                 eta_table)
            n = buffers.rowbase + int(ist[_N])  # rows of the run so far
            sim.v = int(ist[_V])
            t = float(fst[_T])
            if hooked:
                buffers.push_ops(hook, ist, _N_OPS, _N_READS)
            if code == REFILL:
                durations.refill(int(ist[_W]))
                continue
            if code == ROWS_FULL:
                buffers.drain_rows(ist, _N)
                continue
            if code == GROW:
                pubs = grown(pubs)
                continue
            if code == STOP_TIME:
                _stop_at_seconds(sim, rows, seconds, state, n=n)
                return
            env._now = t
            if code == CALLBACK:
                v = sim.v
                if ist[_FEEDING]:  # (the loop returns after every update while it feeds)
                    table = buffers.feed_last(hook, ist, _N)
                    if table is not None:
                        eta_table = table
                if v >= next_eval:
                    log.n = n - 1
                    hook.eval_due(v)
                    next_eval = hook.next_eval_k
                log.n = n
                if v >= sim._next_check:
                    sim._check()
                    _check_active(sim)
            else:  # FLUSH
                log.n = n
                hook.flush()
            if sim._rows_at_stop is not None:
                state.now = t
                return
    finally:
        buffers.drain_rows(ist, _N)
        buffers.into(rows)
        sim.failed_publishes = int(ist[_FAILED])
        sim.dropped = int(ist[_DROPPED])
