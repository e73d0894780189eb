"""A heap-based event loop for the common case of the timing model (no SimPy in the hot path).

:class:`~stalesgd.sim.model.Simulation` runs here instead of in SimPy when every worker
always has a core (``workers <= cores``), no controller or timed SimPy process is
attached, and the algorithm is ``seq``, ``hogwild``, ``leashed`` or ``lock`` with a zero
lock hand-over (see :func:`fast_path_blocker`).  The semantics are those of the SimPy
processes in :mod:`stalesgd.sim.model` (same draws from the same per-worker streams,
same float arithmetic for the instants); only the bookkeeping is cheaper:

* every worker has exactly one pending event, kept in a binary heap ordered by
  ``(time, sequence number)`` (ties in scheduling order, as SimPy does);
* ``lock`` with zero hand-over is a first-come-first-served server: a released lock is
  taken at once by its longest waiter, and the releasing worker takes it again for its
  read without waiting (barging), so a worker that arrives after its compute gets the
  lock at ``max(arrival, busy_until)`` and keeps it for its update and its next read.
  One event per update (the arrival), no lock events at all.  Without a hook, or with a
  plain replay and a fixed step-size table, this loop runs compiled
  (:mod:`stalesgd.sim.fastlock`, same records; :data:`COMPILED_LOOPS`);
* ``hogwild`` and ``leashed`` look up the version a worker saw at an instant without an
  event at that instant: claims/publishes happen in time order, so ``v`` at time ``t``
  is the number of them at times ``<= t`` (a bisection).  One event per update
  (``leashed``: per publish attempt); compiled like ``lock``
  (:mod:`stalesgd.sim.fasthogwild`, :mod:`stalesgd.sim.fastleashed`).  With a replay
  hook, ``hogwild`` reads are real
  events so that the hook sees θ at the read.

Rows are collected in Python lists and written to the :class:`UpdateLog` at the end
(``log.n`` is kept current whenever a hook, monitor or stop rule can look at it).  Only
exact ties of event times (possible with deterministic durations) may be ordered
differently from the SimPy model; the outcome is deterministic either way.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from heapq import heapify, heapreplace
from itertools import count
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import Simulation

__all__ = ["FAST_ALGORITHMS", "fast_path_blocker", "run_fast"]

FAST_ALGORITHMS = ("seq", "hogwild", "lock", "leashed")

#: run the compiled loops (:mod:`~stalesgd.sim.fastlock`, :mod:`~stalesgd.sim.fasthogwild`,
#: :mod:`~stalesgd.sim.fastleashed`) when no hook method has to be called per update
#: (timing only, or a plain replay with a fixed step-size table); the Python loops below
#: give the same records and serve the other hooks (e.g. an online step-size rule)
COMPILED_LOOPS = True


def fast_path_blocker(sim: Simulation, controller: object | None) -> str | None:
    """Why ``sim`` must run in SimPy (a short reason), or ``None`` if the fast path applies."""
    if sim.algorithm not in FAST_ALGORITHMS:
        return f"algorithm {sim.algorithm!r}"
    if sim.oversubscribed:
        return "more workers than cores (scheduler)"
    if controller is not None:
        return "a controller process"
    if sim.algorithm == "lock" and sim.lock_handover > 0.0:
        return "lock hand-over latency"
    if sim.env.peek() != math.inf:
        return "SimPy events scheduled before the run (e.g. timed evaluations)"
    if sim._watch is not None or sim.active != sim.workers:
        return "elastic control"
    return None


class _Rows:
    """The per-update columns as Python lists (appends are cheaper than array stores)."""

    __slots__ = ("k", "worker", "t_read", "t_apply", "tau", "eta", "attempts", "dropped")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, [])


def run_fast(sim: Simulation, seconds: float) -> None:
    """Run ``sim`` to its stop rules on the fast path (``seconds``: ``inf`` when not given).

    Sets ``sim.duration``, the counters and the log as :meth:`Simulation.run` does.
    """
    rows = _Rows()
    state = _State()
    body = {"lock": _lock, "hogwild": _hogwild, "seq": _hogwild, "leashed": _leashed}
    if COMPILED_LOOPS:
        inline = getattr(sim.hook, "inline", None)
        if sim.hook is None or (inline is not None and inline() is not None):
            from .fasthogwild import run_hogwild_compiled
            from .fastleashed import run_leashed_compiled
            from .fastlock import run_lock_compiled

            body = {"lock": run_lock_compiled, "hogwild": run_hogwild_compiled,
                    "seq": run_hogwild_compiled, "leashed": run_leashed_compiled}
    try:
        body[sim.algorithm](sim, state, rows, seconds)
    except KeyboardInterrupt:
        sim.interrupted = True
        if sim._rows_at_stop is None:
            sim._rows_at_stop = len(rows.k)
    finally:
        sim.log.fill(rows)
        sim.duration = float(state.now)
        sim.env._now = state.now


class _State:
    """What the loops hand back: the simulated time reached."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = 0.0


def _streams(sim: Simulation) -> tuple[list, list, list]:
    comp = [s[0].stream() for s in sim.samplers]
    rd = [s[1].stream() for s in sim.samplers]
    upd = [s[2].stream() for s in sim.samplers]
    return comp, rd, upd


def _stop_at_seconds(sim: Simulation, rows: _Rows, seconds: float, state: _State,
                     n: int | None = None) -> None:
    sim.log.n = len(rows.k) if n is None else n
    state.now = seconds
    sim.env._now = seconds
    sim.stop()


def _lock(sim: Simulation, state: _State, rows: _Rows, seconds: float) -> None:
    env, hook, log = sim.env, sim.hook, sim.log
    m = sim.workers
    comp, rd, upd = _streams(sim)
    nan = math.nan
    ak, aw, atr, ata, atau, aeta = (rows.k.append, rows.worker.append, rows.t_read.append,
                                    rows.t_apply.append, rows.tau.append, rows.eta.append)
    t_read = [0.0] * m
    t0s = [0] * m
    heap: list[tuple[float, int, int]] = []
    seq = count()
    busy = -math.inf  # the lock is held until this instant (it is free at exactly `busy`)
    busy_seq = -1  # ... released in the step with this sequence number (ties: see below)
    contended = 0
    acquisitions = 0
    v = 0
    stop_t = None
    # every worker reads under the lock at t = 0, in worker order
    for w in range(m):
        acquisitions += 1
        acq = 0.0
        if acq < busy:
            contended += 1
            acq = busy
        t_read[w] = acq
        if hook is not None and acq < seconds:
            env._now = acq
            sim.log.n = 0
            hook.read(w, 0)
            if sim._rows_at_stop is not None:
                state.now = acq
                return
        r = next(rd[w])
        busy = acq + r
        busy_seq = next(seq)
        heap.append((acq + (r + next(comp[w])), busy_seq, w))
    heapify(heap)
    next_check = sim._next_check
    n = 0
    while True:
        t, s, w = heap[0]
        if t >= seconds:
            _stop_at_seconds(sim, rows, seconds, state)
            break
        acquisitions += 1
        if t < busy:
            contended += 1
            acq = busy
        else:
            # an arrival at the very instant of the release finds the lock still held when
            # it was scheduled before the release (SimPy's order); it gets it at once anyway
            if t == busy and s < busy_seq:
                contended += 1
            acq = t
        ta = acq + next(upd[w])
        if ta >= seconds:  # this apply would end after the time limit: the others queue
            contended += sum(1 for e in heap if e[2] != w and e[0] < seconds)
            _stop_at_seconds(sim, rows, seconds, state)
            break
        k = v
        v = k + 1
        t0 = t0s[w]
        sim.v = v
        if hook is not None:
            env._now = ta
            log.n = n
            eta = hook.apply(w, t0, k)
        else:
            eta = nan
        ak(k)
        aw(w)
        atr(t_read[w])
        ata(ta)
        atau(k - t0)
        aeta(eta)
        n += 1
        if v >= next_check:
            env._now = ta
            log.n = n
            sim._check()
            next_check = sim._next_check
            _check_active(sim)
        if sim._rows_at_stop is not None:
            stop_t = ta
            break
        # the next read, under the lock taken again at once
        acquisitions += 1
        t_read[w] = ta
        t0s[w] = v
        if hook is not None:
            env._now = ta
            log.n = n
            hook.read(w, v)
            if sim._rows_at_stop is not None:
                stop_t = ta
                break
        r = next(rd[w])
        busy = ta + r
        s = next(seq)
        # (with no update or copy time the lock was never held from one event to the next)
        busy_seq = -1 if ta == t and r == 0.0 else s
        heapreplace(heap, (ta + (r + next(comp[w])), s, w))
    if stop_t is not None:
        state.now = stop_t
        contended += sum(1 for e in heap if e[2] != w and e[0] < stop_t)
    sim.lock.contended = contended
    sim.lock.acquisitions = acquisitions


def _hogwild(sim: Simulation, state: _State, rows: _Rows, seconds: float) -> None:
    env, hook, log = sim.env, sim.hook, sim.log
    m = sim.workers
    cas = sim.cas_cost
    comp, rd, upd = _streams(sim)
    nan = math.nan
    ak, aw, atr, ata, atau, aeta = (rows.k.append, rows.worker.append, rows.t_read.append,
                                    rows.t_apply.append, rows.tau.append, rows.eta.append)
    lazy = hook is None  # without a hook, a read needs no event (its version is looked up)
    t_read = [0.0] * m
    t0s = [0] * m  # the version read, or -1: look it up at the claim
    lo = [0] * m  # claims known to precede the read
    pend_u = [0.0] * m
    claims: list[float] = []
    cl = claims.append
    heap: list[tuple[float, int, int, bool]] = []
    seq = count()
    v = 0
    for w in range(m):
        if hook is not None:
            env._now = 0.0
            log.n = 0
            hook.read(w, 0)
            if sim._rows_at_stop is not None:
                return
        d = next(rd[w]) + next(comp[w])
        pend_u[w] = next(upd[w])
        d += cas
        heap.append((0.0 + d, next(seq), w, False))
    heapify(heap)
    next_check = sim._next_check
    n = 0
    while True:
        t, _, w, is_read = heap[0]
        if t >= seconds:
            _stop_at_seconds(sim, rows, seconds, state)
            return
        if is_read:  # (only with a hook) the read after an update that took time
            t_read[w] = t
            t0s[w] = v
            env._now = t
            log.n = n
            hook.read(w, v)
            if sim._rows_at_stop is not None:
                state.now = t
                return
            d = next(rd[w]) + next(comp[w])
            pend_u[w] = next(upd[w])
            d += cas
            heapreplace(heap, (t + d, next(seq), w, False))
            continue
        # claim the next index (fetch-add), then the element-wise update takes u
        k = v
        v = k + 1
        tr = t_read[w]
        t0 = t0s[w]
        if t0 < 0:
            t0 = bisect_right(claims, tr, lo[w], k)
        cl(t)
        u = pend_u[w]
        sim.v = v
        if hook is not None:
            env._now = t
            log.n = n
            eta = hook.apply(w, t0, k)
        else:
            eta = nan
        ak(k)
        aw(w)
        atr(tr)
        ata(t + u)
        atau(k - t0)
        aeta(eta)
        n += 1
        if v >= next_check:
            env._now = t
            log.n = n
            sim._check()
            next_check = sim._next_check
            _check_active(sim)
        if sim._rows_at_stop is not None:
            state.now = t
            return
        if u > 0.0:
            if not lazy:
                heapreplace(heap, (t + u, next(seq), w, True))
                continue
            tr = t + u
            t0s[w] = -1
            lo[w] = v
        else:
            tr = t
            t0s[w] = v
            if hook is not None:
                log.n = n
                hook.read(w, v)
                if sim._rows_at_stop is not None:
                    state.now = t
                    return
        t_read[w] = tr
        d = next(rd[w]) + next(comp[w])
        pend_u[w] = next(upd[w])
        d += cas
        heapreplace(heap, (tr + d, next(seq), w, False))


def _leashed(sim: Simulation, state: _State, rows: _Rows, seconds: float) -> None:
    env, hook, log = sim.env, sim.hook, sim.log
    m = sim.workers
    cas = sim.cas_cost
    bound = sim.persistence
    comp, rd, upd = _streams(sim)
    nan = math.nan
    ak, aw, atr, ata, atau, aeta = (rows.k.append, rows.worker.append, rows.t_read.append,
                                    rows.t_apply.append, rows.tau.append, rows.eta.append)
    aatt, adrop = rows.attempts.append, rows.dropped.append
    t_read = [0.0] * m
    t0s = [0] * m
    t1s = [0] * m  # version copied at the attempt's start, or -1: look it up
    ts = [0.0] * m  # start of the current attempt
    att = [1] * m
    pubs: list[float] = []
    pub = pubs.append
    heap: list[tuple[float, int, int]] = []
    seq = count()
    v = 0
    failed = dropped = 0
    for w in range(m):
        if hook is not None:
            env._now = 0.0
            log.n = 0
            hook.read(w, 0)
            if sim._rows_at_stop is not None:
                return
        s = 0.0 + (cas + next(comp[w]))
        ts[w] = s
        t1s[w] = -1
        heap.append((s + (next(rd[w]) + next(upd[w]) + cas), next(seq), w))
    heapify(heap)
    next_check = sim._next_check
    n = 0
    try:
        while True:
            t, _, w = heap[0]
            if t >= seconds:
                _stop_at_seconds(sim, rows, seconds, state)
                return
            t0 = t0s[w]
            t1 = t1s[w]
            if t1 < 0:
                t1 = bisect_right(pubs, ts[w], t0, v)
            if v == t1:  # the compare-and-swap succeeds
                v = t1 + 1
                pub(t)
                sim.v = v
                if hook is not None:
                    env._now = t
                    log.n = n
                    eta = hook.apply(w, t0, t1)
                else:
                    eta = nan
                ak(t1)
                aw(w)
                atr(t_read[w])
                ata(t)
                atau(t1 - t0)
                aeta(eta)
                aatt(att[w])
                adrop(False)
                n += 1
                if v >= next_check:
                    env._now = t
                    log.n = n
                    sim._check()
                    next_check = sim._next_check
                    _check_active(sim)
                if sim._rows_at_stop is not None:
                    state.now = t
                    return
            else:
                failed += 1
                a = att[w]
                if bound is None or a <= bound:  # retry on a fresh copy
                    att[w] = a + 1
                    t1s[w] = v
                    ts[w] = t
                    heapreplace(heap, (t + (next(rd[w]) + next(upd[w]) + cas), next(seq), w))
                    continue
                dropped += 1
                if hook is not None:
                    env._now = t
                    log.n = n
                    hook.drop(w, t0)
                ak(-1)
                aw(w)
                atr(t_read[w])
                ata(t)
                atau(t1 - t0)
                aeta(nan)
                aatt(a)
                adrop(True)
                n += 1
            # read the latest published version and compute on it
            t_read[w] = t
            t0s[w] = v
            if hook is not None:
                env._now = t
                log.n = n
                hook.read(w, v)
                if sim._rows_at_stop is not None:
                    state.now = t
                    return
            s = t + (cas + next(comp[w]))
            ts[w] = s
            t1s[w] = -1
            att[w] = 1
            heapreplace(heap, (s + (next(rd[w]) + next(upd[w]) + cas), next(seq), w))
    finally:
        sim.failed_publishes = failed
        sim.dropped = dropped


def _check_active(sim: Simulation) -> None:
    if sim.active != sim.workers:
        raise RuntimeError(
            "set_active was called during a fast-path run; elastic control needs the SimPy "
            "model (pass a controller to Simulation.run)"
        )
