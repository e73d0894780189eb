"""What the compiled fast-path loops share: duration buffers, row buffers, replay ops.

The compiled loops (:mod:`~stalesgd.sim.fastlock`, :mod:`~stalesgd.sim.fastleashed`) run
the model of :mod:`~stalesgd.sim.fastpath` without a Python step per update.  They read
durations from per-worker arrays, write rows to preallocated arrays and record a plain
replay's reads and applies as op codes; this module keeps those arrays and moves their
contents to where the rest of the simulator expects them (the samplers' streams, the
:class:`~stalesgd.sim.fastpath._Rows`, the replay's buffers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

if TYPE_CHECKING:
    from .fastpath import _Rows
    from .model import Simulation

# why a compiled loop returned
STOP_TIME, CALLBACK, FLUSH, REFILL, ROWS_FULL, GROW = 0, 1, 2, 3, 4, 5
# duration kinds (first axis of the buffers), as the samplers are ordered
COMPUTE, READ_TIME, UPDATE = 0, 1, 2

# slots of the integer state every compiled loop keeps (each adds its own from INT_COMMON)
V, N, SEQ, N_OPS, N_READS, PHASE, W, FLUSH_AT, HOOKED, FEEDING, FED, INT_COMMON = range(12)
# slots of the float state every loop keeps (NOW: the instant of the event being handled)
NOW, NEXT_EVAL, NEXT_CHECK, SECONDS, FLOAT_COMMON = range(5)

#: rows buffered before they are handed back to Python
ROW_CHUNK = 1 << 16

_COLUMNS = ("k", "worker", "t_read", "t_apply", "tau", "eta", "attempts", "dropped")


@njit(nogil=True, inline="always")
def bisect_right(a: np.ndarray, x: float, lo: int, hi: int) -> int:
    """The first index in ``lo..hi`` whose value in the sorted ``a`` exceeds ``x`` (as
    :func:`bisect.bisect_right`): how many of the claims/publishes there happened by ``x``."""
    while lo < hi:
        mid = (lo + hi) // 2
        if x < a[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(nogil=True, inline="always")
def next_event(ev_t: np.ndarray, ev_s: np.ndarray) -> tuple[int, float, int]:
    """The worker whose pending event comes first: earliest time, then earliest scheduled
    (sequence number), as the Python loops' heap orders ``(time, seq)``; and its time, seq."""
    w = 0
    t = ev_t[0]
    s = ev_s[0]
    for j in range(1, ev_t.shape[0]):
        tj = ev_t[j]
        if tj < t or (tj == t and ev_s[j] < s):
            w, t, s = j, tj, ev_s[j]
    return w, t, s


@njit(nogil=True, inline="always")
def runs_dry(pos: np.ndarray, length: np.ndarray, w: int) -> bool:
    """Whether worker ``w`` lacks a compute, read or update duration for its next event."""
    return (pos[COMPUTE, w] >= length[COMPUTE, w] or pos[READ_TIME, w] >= length[READ_TIME, w]
            or pos[UPDATE, w] >= length[UPDATE, w])


@njit(nogil=True, inline="always")
def record_read(ops: np.ndarray, rd_n: np.ndarray, rd_t: np.ndarray, rd_f: np.ndarray,
                n_ops: int, n_reads: int, w: int, rows: int, t: float,
                fed: int) -> tuple[int, int]:
    """A replay read by worker ``w`` at ``t`` after ``rows`` rows (``fed`` samples fed to an
    online rule): its op code and where it happened; returns the new op and read counts."""
    ops[n_ops] = w << 1
    rd_n[n_reads] = rows
    rd_t[n_reads] = t
    rd_f[n_reads] = fed
    return n_ops + 1, n_reads + 1


@njit(nogil=True, inline="always")
def record_apply(ops: np.ndarray, op_eta: np.ndarray, n_ops: int, w: int,
                 eta_table: np.ndarray, tau: int) -> tuple[float, int]:
    """A replay apply by worker ``w`` with staleness ``tau``: η from the table (its last
    entry beyond its end) and the op code; returns η and the new op count."""
    last = eta_table.shape[0] - 1
    eta = eta_table[tau if tau < last else last]
    ops[n_ops] = (w << 1) | 1
    op_eta[n_ops] = eta
    return eta, n_ops + 1


class Durations:
    """Per-worker buffers of compute, read and update durations, refilled chunk by chunk
    with exactly the values the samplers' streams would give, in the same order."""

    def __init__(self, sim: Simulation) -> None:
        self._chunks = [[s.chunks() for s in per_worker] for per_worker in sim.samplers]
        m = len(self._chunks)
        first = [[next(it) for it in per_worker] for per_worker in self._chunks]
        width = max(c.shape[0] for per_worker in first for c in per_worker)
        self._width = max(width, max(s._chunk for pw in sim.samplers for s in pw))
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
        """One duration, taken in Python (the workers' first steps at t = 0)."""
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


class Buffers:
    """The row arrays and (with a hook) the replay's op arrays a compiled loop fills.

    ``n_rows`` (the int state slot the loop counts its rows in) is reset by
    :meth:`drain_rows`; :attr:`rowbase` is the number of rows handed over before, so the
    run's row count is ``rowbase + state[n_rows]``.
    """

    def __init__(self, hooked: bool, flush_ops: int, attempts: bool = False) -> None:
        self.r_k = np.empty(ROW_CHUNK, np.int64)
        self.r_w = np.empty(ROW_CHUNK, np.int64)
        self.r_tr = np.empty(ROW_CHUNK)
        self.r_ta = np.empty(ROW_CHUNK)
        self.r_tau = np.empty(ROW_CHUNK, np.int64)
        self.r_eta = np.empty(ROW_CHUNK)
        size = 1 if attempts else 0
        self.r_att = np.empty(ROW_CHUNK if attempts else 1, np.int64)
        self.r_drop = np.empty(ROW_CHUNK if attempts else 1, np.bool_)
        self._arrays = (self.r_k, self.r_w, self.r_tr, self.r_ta, self.r_tau, self.r_eta,
                        self.r_att, self.r_drop)[: 6 + 2 * size]
        self.flush_ops = flush_ops
        size = flush_ops + 4 if hooked else 1
        self.ops = np.empty(size, np.int64)
        self.op_eta = np.empty(size)
        self.rd_n = np.empty(size, np.int64)
        self.rd_t = np.empty(size)
        self.rd_f = np.empty(size, np.int64)  # samples fed to an online rule at each read
        self.rowbase = 0
        self._parts: list[list[np.ndarray]] = [[] for _ in self._arrays]

    def drain_rows(self, state: np.ndarray, n_rows: int) -> None:
        """Move the rows written so far out of the buffers (copies); reset the count."""
        n = int(state[n_rows])
        if n:
            for parts, arr in zip(self._parts, self._arrays, strict=True):
                parts.append(arr[:n].copy())
        self.rowbase += n
        state[n_rows] = 0

    def into(self, rows: _Rows) -> None:
        """Hand the rows over to ``rows`` as whole columns."""
        for name, parts in zip(_COLUMNS, self._parts, strict=False):
            setattr(rows, name, np.concatenate(parts) if parts else [])

    def push_ops(self, hook: object, state: np.ndarray, n_ops: int, n_reads: int) -> None:
        """Append the reads and applies the loop recorded to the replay's own buffers
        (read positions made absolute: rows of the run, not of the row buffer)."""
        k_ops, k_reads = int(state[n_ops]), int(state[n_reads])
        if k_ops:
            codes = self.ops[:k_ops]
            hook._ops.extend(codes.tolist())
            hook._etas.extend(self.op_eta[:k_ops][(codes & 1) == 1].tolist())
            at = (self.rd_n[:k_reads] + self.rowbase).tolist()
            hook._reads.extend(zip(at, self.rd_t[:k_reads].tolist(),
                                   self.rd_f[:k_reads].tolist(), strict=True))
        state[n_ops] = state[n_reads] = 0

    def feed_last(self, hook: object, state: np.ndarray, n_rows: int) -> np.ndarray | None:
        """Feed the update just logged to the replay's online step-size rule (as
        :meth:`~stalesgd.sim.replay.StepSizes.eta` does after its lookup); the new table
        of η if that produced one, else ``None``."""
        step = hook.step
        i = int(state[n_rows]) - 1
        before = step.eta_list
        step._feed(int(self.r_tau[i]), int(self.r_w[i]))
        if step.eta_list is before:
            return None
        return np.array(step.eta_list, dtype=np.float64)


def grown(arr: np.ndarray) -> np.ndarray:
    """``arr`` in an array twice its size (for the loops' growing time lists)."""
    out = np.empty(2 * arr.shape[0], arr.dtype)
    out[: arr.shape[0]] = arr
    return out


def drive(sim: Simulation, state: object, rows: _Rows, ist: np.ndarray, fst: np.ndarray,
          buffers: Buffers, durations: Durations,
          step: Callable[[np.ndarray], int], grow: Callable[[], None] | None = None,
          ) -> float | None:
    """Run a compiled loop (``step(eta_table)`` advances it, returns why it stopped) to the
    end of the run, doing in Python what only Python can: refills, evaluations, stop rules,
    the replay's flushes, feeding an online step-size rule.  Sets the rows of ``rows`` and
    ``state.now``; returns the instant a stop rule ended the run (``None``: the time limit).
    """
    from .fastpath import _check_active, _stop_at_seconds

    env, hook, log = sim.env, sim.hook, sim.log
    hooked = hook is not None
    flush_ops = buffers.flush_ops
    eta_table = np.array(hook.inline()[3] if hooked else [np.nan], dtype=np.float64)
    next_eval = hook.next_eval_k if hooked else np.inf
    ist[HOOKED] = int(hooked)
    try:
        while True:
            fst[NEXT_EVAL] = next_eval
            fst[NEXT_CHECK] = sim._next_check
            ist[FLUSH_AT] = flush_ops - len(hook._ops) if hooked else 1 << 62
            if hooked:
                ist[FEEDING], ist[FED] = int(hook.step._feeding), hook.step._fed
            code = step(eta_table)
            n = buffers.rowbase + int(ist[N])  # rows of the run so far
            sim.v = int(ist[V])
            now = float(fst[NOW])
            if hooked:
                buffers.push_ops(hook, ist, N_OPS, N_READS)
            if code == REFILL:
                durations.refill(int(ist[W]))
                continue
            if code == ROWS_FULL:
                buffers.drain_rows(ist, N)
                continue
            if code == GROW:
                grow()
                continue
            if code == STOP_TIME:
                _stop_at_seconds(sim, rows, float(fst[SECONDS]), state, n=n)
                return None
            env._now = now
            if code == CALLBACK:
                v = sim.v
                if ist[FEEDING]:  # (a loop returns after every update while the rule learns)
                    table = buffers.feed_last(hook, ist, N)
                    if table is not None:
                        eta_table = table
                if v >= next_eval:
                    log.n = n - 1
                    hook.eval_due(v)
                    next_eval = hook.next_eval_k
                    if sim._rows_at_stop is not None and sim._rows_at_stop <= n - 1:
                        buffers.r_eta[ist[N] - 1] = np.nan  # stopped before this update
                log.n = n
                if v >= sim._next_check:
                    sim._check()
                    _check_active(sim)
            else:  # FLUSH
                log.n = n
                hook.flush()
            if sim._rows_at_stop is not None:
                state.now = now
                return now
    finally:
        buffers.drain_rows(ist, N)
        buffers.into(rows)
