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
    GROW,
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
    bisect_right,
    drive,
    grown,
    next_event,
    record_apply,
    record_read,
    runs_dry,
)

if TYPE_CHECKING:
    from .fastpath import _Rows, _State
    from .model import Simulation

__all__ = ["run_leashed_compiled"]

# where the loop resumes: pick the next event / the worker's next copy / its next draws
_PICK, _READ, _DRAW = 0, 1, 2
# slots of the integer state
_FAILED, _DROPPED, _BOUND, _N_INT = range(INT_COMMON, INT_COMMON + 4)
# slots of the float state
_CAS, _N_FLOAT = range(FLOAT_COMMON, FLOAT_COMMON + 2)

#: publish times kept at first (the array doubles when full)
PUBS_START = 1 << 12


@cached
@njit(nogil=True)
def _leashed_loop(ist, fst, t_read, t0s, t1s, ts, att, ev_t, ev_s, pubs, buf, pos, length,
                  r_k, r_w, r_tr, r_ta, r_tau, r_eta, r_att, r_drop, ops, op_eta, rd_n, rd_t, rd_f,
                  eta_table):
    """Advance the Leashed-SGD model until Python is needed; returns why (``STOP_TIME`` …)."""
    hooked = ist[HOOKED] != 0
    feeding = ist[FEEDING] != 0  # an online rule learns from every applied update
    fed = ist[FED]
    bound = ist[_BOUND]  # < 0: unbounded persistence
    v, n, seq, failed, dropped = ist[V], ist[N], ist[SEQ], ist[_FAILED], ist[_DROPPED]
    n_ops, n_reads, phase, w, flush_at = (ist[N_OPS], ist[N_READS], ist[PHASE], ist[W],
                                          ist[FLUSH_AT])
    t, cas = fst[NOW], fst[_CAS]
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
            if v >= pubs.shape[0]:
                code = GROW
                break
            t0 = t0s[w]
            t1 = t1s[w]
            if t1 < 0:
                t1 = bisect_right(pubs, ts[w], t0, v)
            if v == t1:  # the compare-and-swap succeeds
                v = t1 + 1
                pubs[t1] = t
                tau = t1 - t0
                if hooked:
                    eta, n_ops = record_apply(ops, op_eta, n_ops, w, eta_table, tau)
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
                n_ops, n_reads = record_read(ops, rd_n, rd_t, rd_f, n_ops, n_reads, w, n,
                                               t, fed)
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
    ist[V], ist[N], ist[SEQ], ist[_FAILED], ist[_DROPPED] = v, n, seq, failed, dropped
    ist[N_OPS], ist[N_READS], ist[PHASE], ist[W] = n_ops, n_reads, phase, w
    fst[NOW] = t
    return code


def run_leashed_compiled(sim: Simulation, state: _State, rows: _Rows, seconds: float) -> None:
    """``leashed`` on the fast path in the compiled loop; ``sim.hook`` is ``None`` or a
    plain replay whose :meth:`~stalesgd.sim.replay.NumericReplay.inline` gives its buffers."""
    from . import replay

    env, hook, log = sim.env, sim.hook, sim.log
    m = sim.workers
    buffers = Buffers(hook is not None, replay.FLUSH_OPS, attempts=True)
    durations = Durations(sim)
    ist = np.zeros(_N_INT, np.int64)
    fst = np.zeros(_N_FLOAT)
    ist[_BOUND] = -1 if sim.persistence is None else int(sim.persistence)
    cas = fst[_CAS] = sim.cas_cost
    fst[SECONDS] = seconds
    t_read = np.zeros(m)
    t0s = np.zeros(m, np.int64)
    t1s = np.full(m, -1, np.int64)  # version copied at the attempt's start, or -1: look it up
    ts = np.zeros(m)  # start of the current attempt
    att = np.ones(m, np.int64)
    ev_t = np.zeros(m)
    ev_s = np.zeros(m, np.int64)
    arrays = {"pubs": np.empty(PUBS_START)}  # publish times (replaced when it grows)
    for w in range(m):
        if hook is not None:
            env._now = 0.0
            log.n = 0
            hook.read(w, 0)
            if sim._rows_at_stop is not None:
                return
        s = 0.0 + (cas + durations.next(COMPUTE, w))
        ts[w] = s
        ev_t[w] = s + (durations.next(READ_TIME, w) + durations.next(UPDATE, w) + cas)
        ev_s[w] = w
    ist[SEQ] = m

    def step(eta_table: np.ndarray) -> int:
        return _leashed_loop(ist, fst, t_read, t0s, t1s, ts, att, ev_t, ev_s, arrays["pubs"],
                             durations.buf, durations.pos, durations.length, buffers.r_k,
                             buffers.r_w, buffers.r_tr, buffers.r_ta, buffers.r_tau,
                             buffers.r_eta, buffers.r_att, buffers.r_drop, buffers.ops,
                             buffers.op_eta, buffers.rd_n, buffers.rd_t, buffers.rd_f,
                             eta_table)

    def grow() -> None:
        arrays["pubs"] = grown(arrays["pubs"])

    try:
        drive(sim, state, rows, ist, fst, buffers, durations, step, grow)
    finally:
        sim.failed_publishes = int(ist[_FAILED])
        sim.dropped = int(ist[_DROPPED])
