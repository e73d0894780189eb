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
  (:meth:`~stalesgd.sim.timing.Sampler.chunks`), rows go to preallocated arrays, and a
  plain numeric replay (:meth:`~stalesgd.sim.replay.NumericReplay.inline`) gets its
  reads and applies as op codes in arrays;
* the loop returns to Python only where Python has work: an evaluation or a stop rule
  is due (``v`` reaches the hook's next evaluation or the simulation's next check), the
  replay's buffer is full (:data:`~stalesgd.sim.replay.FLUSH_OPS`), a duration buffer or
  the row buffer ran out, or the time limit is reached.  The state lives in small arrays,
  so the loop resumes exactly where it stopped.

Runs with an online step-size rule being fed, or a hook whose ``read``/``apply`` must be
called, keep the Python loop.
"""

from __future__ import annotations

import math
from itertools import repeat
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

if TYPE_CHECKING:
    from .fastpath import _Rows, _State
    from .model import Simulation

__all__ = ["run_lock_compiled"]

# why the compiled loop returned
_STOP_TIME, _CALLBACK, _FLUSH, _REFILL, _ROWS_FULL = 0, 1, 2, 3, 4
# where it resumes: pick the next event / the worker's next read / its next draws
_PICK, _READ, _DRAW = 0, 1, 2
# slots of the integer state
(_V, _N, _SEQ, _BUSY_SEQ, _CONTENDED, _ACQ, _N_OPS, _N_READS, _PHASE, _W, _FLUSH_AT,
 _HOOKED, _N_INT) = range(13)
# slots of the float state
_BUSY, _T, _TA, _NEXT_EVAL, _NEXT_CHECK, _SECONDS, _N_FLOAT = range(7)
# duration kinds (first axis of the buffers), as the samplers are ordered
_COMPUTE, _READ_TIME, _UPDATE = 0, 1, 2

#: rows buffered before they are handed back to Python
ROW_CHUNK = 1 << 16


@njit(nogil=True)
def _lock_loop(ist, fst, t_read, t0s, ev_t, ev_s, buf, pos, length,
               r_k, r_w, r_tr, r_ta, r_tau, r_eta, ops, op_eta, rd_n, rd_t, eta_table):
    """Advance the ``lock`` model until Python is needed; returns why (``_STOP_TIME`` …)."""
    m = t_read.shape[0]
    last = eta_table.shape[0] - 1
    hooked = ist[_HOOKED] != 0
    v, n, seq, busy_seq = ist[_V], ist[_N], ist[_SEQ], ist[_BUSY_SEQ]
    contended, acquisitions = ist[_CONTENDED], ist[_ACQ]
    n_ops, n_reads, phase, w, flush_at = (ist[_N_OPS], ist[_N_READS], ist[_PHASE], ist[_W],
                                          ist[_FLUSH_AT])
    busy, t, ta = fst[_BUSY], fst[_T], fst[_TA]
    next_eval, next_check, seconds = fst[_NEXT_EVAL], fst[_NEXT_CHECK], fst[_SECONDS]
    cap = r_k.shape[0]
    code = _STOP_TIME
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
                code = _STOP_TIME
                break
            if (pos[_COMPUTE, w] >= length[_COMPUTE, w]
                    or pos[_READ_TIME, w] >= length[_READ_TIME, w]
                    or pos[_UPDATE, w] >= length[_UPDATE, w]):
                code = _REFILL
                break
            if n >= cap:
                code = _ROWS_FULL
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
            ta = acq + buf[_UPDATE, w, pos[_UPDATE, w]]
            pos[_UPDATE, w] += 1
            if ta >= seconds:  # this apply would end after the limit: the others queue
                for j in range(m):
                    if j != w and ev_t[j] < seconds:
                        contended += 1
                code = _STOP_TIME
                break
            k = v
            v = k + 1
            tau = k - t0s[w]
            if hooked:
                eta = eta_table[tau if tau < last else last]
                ops[n_ops] = (w << 1) | 1
                op_eta[n_ops] = eta
                n_ops += 1
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
            if v >= next_eval or v >= next_check:
                code = _CALLBACK
                break
        if phase == _READ:  # the next read, under the lock taken again at once
            acquisitions += 1
            t_read[w] = ta
            t0s[w] = v
            phase = _DRAW
            if hooked:
                ops[n_ops] = w << 1
                n_ops += 1
                rd_n[n_reads] = n
                rd_t[n_reads] = ta
                n_reads += 1
                if n_ops >= flush_at:
                    code = _FLUSH
                    break
        # phase == _DRAW
        r = buf[_READ_TIME, w, pos[_READ_TIME, w]]
        pos[_READ_TIME, w] += 1
        busy = ta + r
        s = seq
        seq += 1
        # (with no update or copy time the lock was never held from one event to the next)
        busy_seq = -1 if (ta == t and r == 0.0) else s
        ev_t[w] = ta + (r + buf[_COMPUTE, w, pos[_COMPUTE, w]])
        pos[_COMPUTE, w] += 1
        ev_s[w] = s
        phase = _PICK
    ist[_V], ist[_N], ist[_SEQ], ist[_BUSY_SEQ] = v, n, seq, busy_seq
    ist[_CONTENDED], ist[_ACQ] = contended, acquisitions
    ist[_N_OPS], ist[_N_READS], ist[_PHASE], ist[_W] = n_ops, n_reads, phase, w
    fst[_BUSY], fst[_T], fst[_TA] = busy, t, ta
    return code


class _Durations:
    """Per-worker buffers of compute, read and update durations, refilled chunk by chunk
    with exactly the values the samplers' streams would give, in the same order."""

    def __init__(self, sim: Simulation) -> None:
        self._chunks = [[s.chunks() for s in per_worker] for per_worker in sim._samplers]
        m = len(self._chunks)
        first = [[next(it) for it in per_worker] for per_worker in self._chunks]
        width = max(c.shape[0] for per_worker in first for c in per_worker)
        self._width = max(width, max(s._chunk for pw in sim._samplers for s in pw))
        self.buf = np.zeros((3, m, self._width))
        self.pos = np.zeros((3, m), dtype=np.int64)
        self.length = np.zeros((3, m), dtype=np.int64)
        for w, per_worker in enumerate(first):
            for kind, chunk in enumerate(per_worker):
                self._put(kind, w, chunk)

    def _put(self, kind: int, w: int, chunk: np.ndarray) -> None:
        size = chunk.shape[0]
        if size > self._width:  # (a sampler's chunk never grows, but stay correct if it did)
            wider = np.zeros((3, self.buf.shape[1], size))
            wider[:, :, : self._width] = self.buf
            self.buf, self._width = wider, size
        self.buf[kind, w, :size] = chunk
        self.pos[kind, w] = 0
        self.length[kind, w] = size

    def next(self, kind: int, w: int) -> float:
        """One duration, taken in Python (the first reads at t = 0)."""
        if self.pos[kind, w] >= self.length[kind, w]:
            self.refill(w)
        x = float(self.buf[kind, w, self.pos[kind, w]])
        self.pos[kind, w] += 1
        return x

    def refill(self, w: int) -> None:
        """Refill worker ``w``'s exhausted buffers (the others keep their values)."""
        for kind in range(3):
            while self.pos[kind, w] >= self.length[kind, w]:
                self._put(kind, w, next(self._chunks[w][kind]))


class _Buffers:
    """The row arrays and (with a hook) the replay's op arrays the compiled loop fills."""

    def __init__(self, hooked: bool, flush_ops: int) -> None:
        self.r_k = np.empty(ROW_CHUNK, np.int64)
        self.r_w = np.empty(ROW_CHUNK, np.int64)
        self.r_tr = np.empty(ROW_CHUNK)
        self.r_ta = np.empty(ROW_CHUNK)
        self.r_tau = np.empty(ROW_CHUNK, np.int64)
        self.r_eta = np.empty(ROW_CHUNK)
        size = flush_ops + 4 if hooked else 1
        self.ops = np.empty(size, np.int64)
        self.op_eta = np.empty(size)
        self.rd_n = np.empty(size, np.int64)
        self.rd_t = np.empty(size)
        self.chunks: dict[str, list[np.ndarray]] = {
            name: [] for name in ("k", "worker", "t_read", "t_apply", "tau", "eta")}

    def drain_rows(self, ist: np.ndarray) -> None:
        """Move the rows written so far out of the buffers (copies), and reset the count."""
        n = int(ist[_N])
        if n:
            for name, arr in zip(self.chunks, (self.r_k, self.r_w, self.r_tr, self.r_ta,
                                               self.r_tau, self.r_eta), strict=True):
                self.chunks[name].append(arr[:n].copy())
        ist[_N] = 0

    def into(self, rows: _Rows) -> None:
        """Hand the rows over to ``rows`` as whole columns."""
        for name, parts in self.chunks.items():
            setattr(rows, name, np.concatenate(parts) if parts else [])


def _push_ops(hook: object, buffers: _Buffers, ist: np.ndarray) -> None:
    """Append the ops recorded by the compiled loop to the hook's own buffers."""
    n_ops, n_reads = int(ist[_N_OPS]), int(ist[_N_READS])
    if n_ops:
        ops, etas, reads = hook._ops, hook._etas, hook._reads
        codes = buffers.ops[:n_ops]
        ops.extend(codes.tolist())
        etas.extend(buffers.op_eta[:n_ops][(codes & 1) == 1].tolist())
        reads.extend(zip(buffers.rd_n[:n_reads].tolist(), buffers.rd_t[:n_reads].tolist(),
                         repeat(0)))
    ist[_N_OPS] = ist[_N_READS] = 0


def run_lock_compiled(sim: Simulation, state: _State, rows: _Rows, seconds: float) -> None:
    """``lock`` on the fast path in the compiled loop; ``sim.hook`` is ``None`` or a plain
    replay whose :meth:`~stalesgd.sim.replay.NumericReplay.inline` gives its buffers."""
    from . import replay
    from .fastpath import _check_active, _stop_at_seconds

    env, hook, log = sim.env, sim.hook, sim.log
    m = sim.workers
    hooked = hook is not None
    flush_ops = replay.FLUSH_OPS
    buffers = _Buffers(hooked, flush_ops)
    durations = _Durations(sim)
    rowbase = 0  # rows handed back to Python so far (the compiled count restarts at 0)
    ist = np.zeros(_N_INT, np.int64)
    fst = np.zeros(_N_FLOAT)
    ist[_HOOKED] = int(hooked)
    fst[_SECONDS] = seconds
    eta_table = np.array(hook.inline()[3] if hooked else [math.nan], dtype=np.float64)
    t_read = np.zeros(m)
    t0s = np.zeros(m, np.int64)
    ev_t = np.zeros(m)
    ev_s = np.zeros(m, np.int64)
    busy = -math.inf
    busy_seq = -1
    seq = 0
    contended = acquisitions = 0
    stop_t = None
    w = 0
    try:
        # every worker reads under the lock at t = 0, in worker order (as the Python loop)
        for w in range(m):
            acquisitions += 1
            acq = 0.0
            if acq < busy:
                contended += 1
                acq = busy
            t_read[w] = acq
            if hooked and acq < seconds:
                hook._ops.append(w << 1)
                hook._reads.append((0, acq, 0))
            r = durations.next(_READ_TIME, w)
            busy = acq + r
            busy_seq = seq
            ev_t[w] = acq + (r + durations.next(_COMPUTE, w))
            ev_s[w] = seq
            seq += 1
        ist[_SEQ], ist[_BUSY_SEQ], ist[_CONTENDED], ist[_ACQ] = seq, busy_seq, contended, \
            acquisitions
        fst[_BUSY] = busy
        next_eval = hook.next_eval_k if hooked else math.inf
        while True:
            fst[_NEXT_EVAL] = next_eval
            fst[_NEXT_CHECK] = sim._next_check
            ist[_FLUSH_AT] = flush_ops - len(hook._ops) if hooked else 1 << 62
            code = _lock_loop(ist, fst, t_read, t0s, ev_t, ev_s, durations.buf, durations.pos,
                              durations.length, buffers.r_k, buffers.r_w, buffers.r_tr,
                              buffers.r_ta, buffers.r_tau, buffers.r_eta, buffers.ops,
                              buffers.op_eta, buffers.rd_n, buffers.rd_t, eta_table)
            n = rowbase + int(ist[_N])  # rows of the run so far
            sim.v = int(ist[_V])
            ta = float(fst[_TA])
            w = int(ist[_W])
            if hooked:  # the read counts of the compiled ops are relative to the row buffer
                buffers.rd_n[: ist[_N_READS]] += rowbase
                _push_ops(hook, buffers, ist)
            if code == _REFILL:
                durations.refill(w)
                continue
            if code == _ROWS_FULL:
                rowbase = n
                buffers.drain_rows(ist)
                continue
            if code == _STOP_TIME:
                log.n = n
                rowbase = n
                buffers.drain_rows(ist)
                _stop_at_seconds(sim, rows, seconds, state, n=n)
                break
            env._now = ta
            if code == _CALLBACK:
                v = sim.v
                if v >= next_eval:
                    log.n = n - 1
                    hook.eval_due(v)
                    next_eval = hook.next_eval_k
                    if sim._rows_at_stop is not None and sim._rows_at_stop <= n - 1:
                        buffers.r_eta[ist[_N] - 1] = math.nan  # stopped before this update
                log.n = n
                if v >= sim._next_check:
                    sim._check()
                    _check_active(sim)
            else:  # _FLUSH
                log.n = n
                hook.flush()
            if sim._rows_at_stop is not None:
                stop_t = ta
                break
    finally:
        rowbase += int(ist[_N])
        buffers.drain_rows(ist)
        buffers.into(rows)
    contended = int(ist[_CONTENDED])
    if stop_t is not None:
        state.now = stop_t
        contended += int(np.sum((ev_t < stop_t) & (np.arange(m) != w)))
    sim.lock.contended = contended
    sim.lock.acquisitions = int(ist[_ACQ])
