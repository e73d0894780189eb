"""The fast path's Hogwild! (and ``seq``) loop, compiled: claims without a Python step each.

The same model as :func:`~stalesgd.sim.fastpath._hogwild` (which stays for hooks whose
methods must be called): a worker copies θ, computes, claims the next version with a
fetch-and-add and writes its update element by element, which takes the update time.
Without a replay the version a copy saw is looked up in the claim times (a bisection);
with one, a copy that starts after an update that took time is an event of its own, so
the replay reads θ at that instant.  Same draws from the same per-worker streams, same
float arithmetic and same event order (time, then scheduling sequence number) as the
Python loop: the records are equal bit for bit.  How the loop returns to Python and
resumes is described in :mod:`stalesgd.sim.fastlock`.
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

__all__ = ["run_hogwild_compiled"]

# where the loop resumes: pick the next event / after a logged update / schedule the claim
_PICK, _AFTER, _DRAW = 0, 1, 2
# slots of the integer state
_N_INT = INT_COMMON
# slots of the float state
_BASE, _CAS, _N_FLOAT = range(FLOAT_COMMON, FLOAT_COMMON + 3)

#: claim times kept at first (the array doubles when full)
CLAIMS_START = 1 << 12


@cached
@njit(nogil=True)
def _hogwild_loop(ist, fst, t_read, t0s, lo, pend_u, ev_t, ev_s, ev_read, claims, buf, pos,
                  length, r_k, r_w, r_tr, r_ta, r_tau, r_eta, ops, op_eta, rd_n, rd_t, rd_f,
                  eta_table):
    """Advance the Hogwild! model until Python is needed; returns why (``STOP_TIME`` …)."""
    hooked = ist[HOOKED] != 0
    feeding = ist[FEEDING] != 0  # an online rule learns from every applied update
    fed = ist[FED]
    v, n, seq = ist[V], ist[N], ist[SEQ]
    n_ops, n_reads, phase, w, flush_at = (ist[N_OPS], ist[N_READS], ist[PHASE], ist[W],
                                          ist[FLUSH_AT])
    t, base, cas = fst[NOW], fst[_BASE], fst[_CAS]
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
            if v >= claims.shape[0]:
                code = GROW
                break
            if ev_read[w]:  # (only with a replay) the copy after an update that took time
                t_read[w] = t
                t0s[w] = v
                base = t
                phase = _DRAW
                n_ops, n_reads = record_read(ops, rd_n, rd_t, rd_f, n_ops, n_reads, w, n,
                                               t, fed)
                if n_ops >= flush_at:
                    code = FLUSH
                    break
            else:  # claim the next index (fetch-add); the element-wise update takes u
                k = v
                v = k + 1
                tr = t_read[w]
                t0 = t0s[w]
                if t0 < 0:
                    t0 = bisect_right(claims, tr, lo[w], k)
                claims[k] = t
                tau = k - t0
                if hooked:
                    eta, n_ops = record_apply(ops, op_eta, n_ops, w, eta_table, tau)
                else:
                    eta = np.nan
                r_k[n] = k
                r_w[n] = w
                r_tr[n] = tr
                r_ta[n] = t + pend_u[w]
                r_tau[n] = tau
                r_eta[n] = eta
                n += 1
                phase = _AFTER
                if v >= next_eval or v >= next_check or feeding:
                    code = CALLBACK
                    break
        if phase == _AFTER:
            u = pend_u[w]
            if u > 0.0:
                if hooked:  # the next copy is an event at the end of the update
                    ev_t[w] = t + u
                    ev_s[w] = seq
                    seq += 1
                    ev_read[w] = True
                    phase = _PICK
                    continue
                base = t + u  # its version is looked up when the worker claims
                t0s[w] = -1
                lo[w] = v
                t_read[w] = base
                phase = _DRAW
            else:
                base = t
                t0s[w] = v
                t_read[w] = t
                phase = _DRAW
                if hooked:
                    n_ops, n_reads = record_read(ops, rd_n, rd_t, rd_f, n_ops, n_reads, w, n,
                                                   t, fed)
                    if n_ops >= flush_at:
                        code = FLUSH
                        break
        # phase == _DRAW: compute on the copy, then claim
        d = buf[READ_TIME, w, pos[READ_TIME, w]] + buf[COMPUTE, w, pos[COMPUTE, w]]
        pos[READ_TIME, w] += 1
        pos[COMPUTE, w] += 1
        pend_u[w] = buf[UPDATE, w, pos[UPDATE, w]]
        pos[UPDATE, w] += 1
        d += cas
        ev_t[w] = base + d
        ev_s[w] = seq
        seq += 1
        ev_read[w] = False
        phase = _PICK
    ist[V], ist[N], ist[SEQ] = v, n, seq
    ist[N_OPS], ist[N_READS], ist[PHASE], ist[W] = n_ops, n_reads, phase, w
    fst[NOW], fst[_BASE] = t, base
    return code


def run_hogwild_compiled(sim: Simulation, state: _State, rows: _Rows, seconds: float) -> None:
    """``hogwild`` or ``seq`` on the fast path in the compiled loop; ``sim.hook`` is
    ``None`` or a plain replay whose :meth:`~stalesgd.sim.replay.NumericReplay.inline`
    gives its buffers."""
    from . import replay

    env, hook, log = sim.env, sim.hook, sim.log
    m = sim.workers
    buffers = Buffers(hook is not None, replay.FLUSH_OPS)
    durations = Durations(sim)
    ist = np.zeros(_N_INT, np.int64)
    fst = np.zeros(_N_FLOAT)
    cas = fst[_CAS] = sim.cas_cost
    fst[SECONDS] = seconds
    t_read = np.zeros(m)
    t0s = np.zeros(m, np.int64)  # the version read, or -1: look it up at the claim
    lo = np.zeros(m, np.int64)  # claims known to precede the read
    pend_u = np.zeros(m)
    ev_t = np.zeros(m)
    ev_s = np.zeros(m, np.int64)
    ev_read = np.zeros(m, np.bool_)
    arrays = {"claims": np.empty(CLAIMS_START)}  # claim times (replaced when it grows)
    for w in range(m):
        if hook is not None:
            env._now = 0.0
            log.n = 0
            hook.read(w, 0)
            if sim._rows_at_stop is not None:
                return
        d = durations.next(READ_TIME, w) + durations.next(COMPUTE, w)
        pend_u[w] = durations.next(UPDATE, w)
        d += cas
        ev_t[w] = 0.0 + d
        ev_s[w] = w
    ist[SEQ] = m

    def step(eta_table: np.ndarray) -> int:
        return _hogwild_loop(ist, fst, t_read, t0s, lo, pend_u, ev_t, ev_s, ev_read,
                             arrays["claims"], durations.buf, durations.pos, durations.length,
                             buffers.r_k, buffers.r_w, buffers.r_tr, buffers.r_ta,
                             buffers.r_tau, buffers.r_eta, buffers.ops, buffers.op_eta,
                             buffers.rd_n, buffers.rd_t, buffers.rd_f, eta_table)

    def grow() -> None:
        arrays["claims"] = grown(arrays["claims"])

    drive(sim, state, rows, ist, fst, buffers, durations, step, grow)
