"""The compiled event loop: the SimPy model of :mod:`~stalesgd.sim.model` without SimPy.

:class:`CompiledLoop` runs a simulation's workers as the compiled steps of
:mod:`~stalesgd.sim.faststeps` in the order SimPy would (time, then the order events were
scheduled in; the workers' first steps before anything else), so its records are those of
the SimPy processes bit for bit on any machine the model describes.  The loop returns to
Python only where Python has work, and resumes exactly there: a timer or the stop event is
due, an update reached a version where a stop rule, the progress monitor, a controller or an
evaluation looks, numeric replay's buffer is full, durations or the row buffer ran out, or
:data:`EVENT_BUDGET` events passed (Ctrl-C is seen within milliseconds).  While an online
step-size rule learns its table, it returns after every update so that Python feeds it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numba import njit

from stalesgd.jitcache import specialise

from .buffers import R_TAU, R_WORKER
from .fastcore import (
    ALG,
    BUDGET,
    BUDGET_AT,
    CALLBACK,
    CONTENDED,
    EMPTY,
    EVENTS,
    EXTERNAL,
    FED,
    FEEDING,
    FLUSH,
    FLUSH_AT,
    HAND_W,
    HOOKED,
    JIT,
    LEN,
    M_CORE_RUN,
    M_SLICE,
    MODE,
    NEXT_CHECK,
    NEXT_EVAL,
    NOW,
    POS,
    PREEMPT,
    REFILL,
    REL_CARRIER,
    REM,
    RESUME,
    ROWS_FULL,
    SEQ,
    STALL_MAX,
    STALLED,
    STOPPED,
    YIELDED,
    M,
    V,
    carried_release,
    idle,
    lock_release,
    new_state,
    next_event,
    place,
    run_cpu,
    settle,
    unpark,
    wake,
)
from .faststeps import CODES, STEPS
from .timing import Sampler

__all__ = ["CompiledLoop", "SimulationStalled", "compiled"]

#: events between two returns to Python (a few milliseconds)
EVENT_BUDGET = 1 << 21


class SimulationStalled(RuntimeError):
    """The simulated clock stopped: updates keep happening at one instant (zero-length
    cycles), so no stop rule on time or updates would ever end the run."""

    @classmethod
    def at(cls, t: float, limit: int) -> SimulationStalled:
        """The error for a clock stopped at ``t`` after ``limit`` updates there."""
        return cls(f"the simulated clock stopped at t = {t!r} s: more than {limit} updates "
                   "at that instant; a worker's cycle (compute, read, update, "
                   "compare-and-swap) takes no time")


def compiled(algorithm: str) -> bool:
    """Whether ``algorithm`` has a compiled step."""
    return algorithm in CODES


@njit(**JIT)
def _events(step, I, F, WI, WF, buf, rows_i, rows_f, op_i, op_f, eta_table):
    """Handle events in order until Python has work; returns why (``EXTERNAL`` …).  ``step``
    is the algorithm's compiled step: :func:`event_loop` compiles a loop of each algorithm,
    its step inlined."""
    m = I[M]
    while True:
        w = I[RESUME]
        if w < 0:
            if I[EVENTS] >= I[BUDGET_AT]:
                return BUDGET
            w = next_event(I, F)
            if w < 0:
                return EMPTY
            I[EVENTS] += 1
            if w >= m:
                if w == m + 2:
                    return EXTERNAL
                idle(I, F, w)
                if w == m:  # the lock's release callback
                    lock_release(I, F)
                else:  # the lock's hand-over latency passed: wake the waiter
                    wake(I, F, I[HAND_W])
                continue
            if w == I[REL_CARRIER] and not carried_release(I, F, w):
                continue
            mode = WI[MODE, w]
            if mode == M_SLICE or mode == M_CORE_RUN:
                if not run_cpu(I, F, WI, WF, w, WF[REM, w]):
                    settle(I, F, w)
                    continue
        code = step(I, F, WI, WF, buf, rows_i, rows_f, op_i, op_f, eta_table, w)
        if code != YIELDED:
            I[RESUME] = w
            return code
        I[RESUME] = -1
        settle(I, F, w)


def event_loop(code: int) -> Any:
    """The compiled event loop of the algorithm whose code (:data:`~.faststeps.CODES`) the
    state holds: :func:`_events` of its step, kept in the on-disk cache.  One loop per
    algorithm: Numba's inlining of every algorithm's step into one loop took 17 of the 26 s
    it took to compile (a first simulation after an install), and a step called instead of
    inlined made events up to 2× slower."""
    return specialise(_events, STEPS[code])


class Durations:
    """Per-worker buffers of compute, read and update durations, refilled chunk by chunk
    with the values the samplers would give (positions and lengths in ``WI``)."""

    def __init__(self, samplers: Sequence[Sequence[Sampler]], wi: np.ndarray) -> None:
        self._chunks = [[s.chunks() for s in per_worker] for per_worker in samplers]
        first = [[next(it) for it in per_worker] for per_worker in self._chunks]
        width = max([c.shape[0] for per_worker in first for c in per_worker]
                    + [s.chunk for per_worker in samplers for s in per_worker])
        self.buf = np.zeros((3, len(samplers), width))
        self.pos, self.length = wi[POS:POS + 3], wi[LEN:LEN + 3]
        for w, per_worker in enumerate(first):
            for kind, chunk in enumerate(per_worker):
                self._put(kind, w, chunk)

    def _put(self, kind: int, w: int, chunk: np.ndarray) -> None:
        self.buf[kind, w, : chunk.shape[0]] = chunk
        self.pos[kind, w], self.length[kind, w] = 0, chunk.shape[0]

    def refill(self, w: int) -> None:
        """Refill worker ``w``'s exhausted buffers (the others keep their values)."""
        for kind in range(3):
            while self.pos[kind, w] >= self.length[kind, w]:
                self._put(kind, w, next(self._chunks[w][kind]))


class CompiledLoop:
    """The event loop of one :class:`~stalesgd.sim.simulation.Simulation` (``host``),
    compiled; ``replay`` is its numeric replay when the loop records the reads and applies
    itself (:meth:`~stalesgd.sim.replay.NumericReplay.inline`), None for timing only."""

    name = "compiled"

    def __init__(self, host: Any, replay: Any | None) -> None:
        self.host = host
        bound = -1 if host.persistence is None else int(host.persistence)
        self.state = new_state(host.workers, CODES[host.algorithm], host.oversubscribed,
                               host.machine.cores, host.machine.time_slice, host.lock_handover,
                               host.cas_cost, bound)
        self.I, self.F, self.WI, _ = self.state
        self.durations = Durations(host.samplers, self.WI)
        self.replay = replay
        if replay is None:
            self.op = (np.zeros((4, 2), np.int64), np.zeros((2, 2)))
            self.eta_table = np.full(1, np.nan)
        else:
            self.op = replay.ops.arrays
            self.eta_table = np.array(replay.step.eta_list, dtype=np.float64)
            self.I[HOOKED] = 1
        self._timers: list[tuple[float, int, Callable[[], None] | None]] = []
        self._stopping = False

    @property
    def now(self) -> float:
        """The simulated time."""
        return float(self.F[NOW])

    def call_after(self, delay: float, callback: Callable[[], None] | None) -> None:
        """Call ``callback()`` ``delay`` simulated seconds from now (None: end the run)."""
        self.I[SEQ] += 1
        self._push(self.now + delay, int(self.I[SEQ]) - 1, callback)

    def _push(self, t: float, seq: int, callback: Callable[[], None] | None) -> None:
        heapq.heappush(self._timers, (t, seq, callback))
        self._arm()

    def _arm(self) -> None:
        """Put the earliest timer in the loop's slot for the Python side."""
        if self._timers:
            t, seq, _ = self._timers[0]
            place(self.I, self.F, int(self.I[M]) + 2, t, seq)
        else:
            idle(self.I, self.F, int(self.I[M]) + 2)

    def set_active(self, n: int) -> None:
        """Run workers ``0..n-1``: parked ones among them resume now, in worker order."""
        unpark(self.I, self.F, self.WI, n)

    def request_stop(self) -> None:
        """End the run at the current instant (events already due at it still happen)."""
        self.I[STOPPED] = 1
        if not self._stopping:
            self._stopping = True
            self.call_after(0.0, None)

    @property
    def preemptions(self) -> int:
        """Workers descheduled at a scheduler tick."""
        return int(self.I[PREEMPT])

    @property
    def lock_contended(self) -> int:
        """Lock acquisitions that had to wait."""
        return int(self.I[CONTENDED])

    def start(self, starters: Sequence[Callable[[], None]]) -> None:
        """Call ``starters`` right after the workers' first steps (already in the state)."""
        for i, fn in enumerate(starters):
            self._push(0.0, i - len(starters), fn)

    def run(self) -> None:
        """Run until the stop event, or until nothing is left to happen."""
        host, rows, replay = self.host, self.host.rows, self.replay
        I, F = self.I, self.F  # noqa: N806
        args = (*self.state, self.durations.buf, rows.ints, rows.floats, *self.op)
        events = event_loop(int(I[ALG]))
        I[BUDGET_AT] = EVENT_BUDGET
        while True:
            F[NEXT_CHECK] = host.next_check
            if replay is not None:
                I[FLUSH_AT], I[FEEDING], I[FED] = (replay.ops.flush_at, replay.step.feeding,
                                                   replay.step.fed)
                F[NEXT_EVAL] = replay.next_eval_k
            code = events(*args, self.eta_table)
            host.v = int(I[V])
            if code == CALLBACK:
                self._after_update()
            elif code == EXTERNAL:
                _, _, callback = heapq.heappop(self._timers)
                self._arm()
                if callback is None:
                    return
                callback()
            elif code == ROWS_FULL:
                rows.handover()
            elif code == REFILL:
                self.durations.refill(int(I[RESUME]))
            elif code == FLUSH:
                replay.flush()
            elif code == BUDGET:
                I[BUDGET_AT] = I[EVENTS] + EVENT_BUDGET
            elif code == EMPTY:
                return
            elif code == STALLED:
                raise SimulationStalled.at(self.now, int(I[STALL_MAX]))

    def _after_update(self) -> None:
        """Python's part after an update: feed an online step-size rule, evaluate, check."""
        host, replay, rows = self.host, self.replay, self.host.rows
        if replay is not None and not host.stopped:
            step_sizes = replay.step
            if step_sizes.feeding:
                i = rows.n - 1
                worker = 0 if host.algorithm == "sync" else int(rows.ints[R_WORKER, i])
                before = step_sizes.eta_list
                step_sizes.feed(int(rows.ints[R_TAU, i]), worker)
                if step_sizes.eta_list is not before:
                    self.eta_table = np.array(step_sizes.eta_list, dtype=np.float64)
            if host.v >= replay.next_eval_k:
                rows.count[0] -= 1  # (the evaluation belongs to the update being logged)
                try:
                    replay.eval_due(host.v)
                finally:
                    rows.count[0] += 1
        if host.v >= host.next_check:
            host.check_due()
