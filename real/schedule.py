"""Forced interleavings of the real workers, for tests: a script of turns.

Staleness in a free run depends on how the operating system happens to schedule the
threads, so exact τ cannot be asserted there.  A test can instead hand the run a *script*:
a sequence of turns ``(worker, gate)``.  Each worker loop calls :func:`gate` at defined
points (the gates: before it reads θ, before it takes the version it applies at, and, for
Leashed-SGD, before it claims a vector, before it copies into it and before it publishes).
A worker at a gate waits until the script's next turn is its own at that gate, then runs
up to its next gate, where its turn ends and the next one begins.  Turns never overlap, so
the interleaving, and with it every τ, drop and retry, is fixed by the script and can be
computed by hand.  Once the script is used up the gates stand open.

A run without a script passes ``None``: :func:`gate` and :func:`end_turn` then compile to
nothing (the overload below returns an empty function for ``None``), so the normal worker
loop does not pay for them.

A worker that reaches a gate other than the one its next turn names stops the run and
leaves ``1 + turn`` in ``ctrl[C_SCRIPT_ERROR]`` (see :func:`script_error`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numba import types
from numba.extending import overload

from .atomics import atomic_add, atomic_cas, atomic_load, atomic_store
from .control import C_SCRIPT_ERROR, C_SCRIPT_POS, C_STOP
from .spinlock import sched_yield

__all__ = ["GATES", "end_turn", "gate", "make_script", "script_error"]

#: the gates, in the order a worker meets them
GATES = ("read", "apply", "claim", "copy", "publish")
G_READ, G_APPLY, G_CLAIM, G_COPY, G_PUBLISH = range(len(GATES))
_PER_WORKER = 8  # a turn is stored as worker · 8 + gate


def make_script(turns: Iterable[tuple[int, str]]) -> np.ndarray:
    """The script of ``turns``, each ``(worker, gate name)`` from :data:`GATES`."""
    out = []
    for worker, name in turns:
        if name not in GATES:
            raise ValueError(f"gate {name!r} is not known; allowed: {', '.join(GATES)}")
        if int(worker) < 0:
            raise ValueError(f"worker {worker!r} is not allowed; allowed: an index >= 0")
        out.append(int(worker) * _PER_WORKER + GATES.index(name))
    return np.asarray(out, dtype=np.int64)


def script_error(script: np.ndarray, ctrl: np.ndarray) -> str | None:
    """What went wrong with ``script`` in a run (None: it fitted the workers' path)."""
    turn = int(ctrl[C_SCRIPT_ERROR]) - 1
    if turn < 0:
        return None
    worker, name = divmod(int(script[turn]), _PER_WORKER)
    return (f"turn {turn} of the script is worker {worker} at gate {GATES[name]!r}, but "
            f"worker {worker} reached a different gate")


def gate(script, ctrl, worker, point, in_turn):  # pragma: no cover - compiled by overload
    """Wait at gate ``point`` for this worker's next turn; returns whether a turn began
    (pass it back as ``in_turn`` at the next gate, which ends that turn)."""


def end_turn(script, ctrl, in_turn):  # pragma: no cover - compiled by overload
    """End this worker's turn (it leaves its loop)."""


@overload(gate, inline="always")
def _gate(script, ctrl, worker, point, in_turn):
    if isinstance(script, types.NoneType):
        return lambda script, ctrl, worker, point, in_turn: False

    def wait_for_turn(script, ctrl, worker, point, in_turn):
        if in_turn:
            atomic_add(ctrl, C_SCRIPT_POS, 1)
        mine = worker * _PER_WORKER + point
        while True:
            pos = atomic_load(ctrl, C_SCRIPT_POS)
            if pos >= script.shape[0] or atomic_load(ctrl, C_STOP) != 0:
                return False
            turn = script[pos]
            if turn == mine:
                return True
            if turn // _PER_WORKER == worker:  # the script expects this worker elsewhere
                atomic_cas(ctrl, C_SCRIPT_ERROR, 0, pos + 1)
                atomic_store(ctrl, C_STOP, 1)
                return False
            sched_yield()

    return wait_for_turn


@overload(end_turn, inline="always")
def _end_turn(script, ctrl, in_turn):
    if isinstance(script, types.NoneType):
        return lambda script, ctrl, in_turn: None

    def end(script, ctrl, in_turn):
        if in_turn:
            atomic_add(ctrl, C_SCRIPT_POS, 1)

    return end

