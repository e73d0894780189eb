"""Elastic parallelism control: how many of M asynchronous workers should run right now.

A controller chooses the active level m(t) ∈ 1..M from the measured *progress rate*,
the loss decrease per second, while probing nearby levels (DESIGN §4).  It is
pure Python and knows nothing about engines: the simulator (simulated seconds) and the
real engine (wall seconds) drive the same objects through one protocol::

    m = ctl.start(t, k, loss)          # once, with a *measured* loss at the start
    ...
    if ctl.due(t, k):                  # the current phase ended (k updates or t seconds)
        m = ctl.observe(t, k, loss)    # loss on a consistent snapshot of θ_k

``t`` is the engine's clock (seconds since the run started), ``k`` the number of updates
applied, ``loss`` an evaluation of the parameters at version ``k``.  Controllers with
``needs_loss = False`` (``static``, ``schedule``) accept ``loss = None``.

Progress signal.  The work is split into phases of a fixed number of updates; the rate of
a phase is its loss decrease per second between the evaluation that opened it and the
one that closed it, ``(f(L0) − f(L1)) / (t1 − t0)`` with ``f = log`` (default; a relative
decrease, roughly stationary along a linearly converging run, so probes made at different
moments compare fairly) or ``f = identity`` (``signal = "linear"``).  The *window* of the
signal is therefore exactly one phase (``probe`` updates while probing); the first phase
is measured from the loss passed to :meth:`Controller.start`, never from an uninitialised
reference.  A non-finite or non-positive loss (with ``log``) makes the phase's rate
``-inf`` (the worst).  Probing order alternates between ascending and descending from one
probing phase to the next, and by default (``mirror = true``) each round probes its levels
forth and back (a, b, c, c, b, a) and averages each level's two rates, which cancels a linear
drift of the rate along the run (a loss flattening towards its floor would otherwise favour
whichever level is probed first).  Ties go to the smaller m (fewer resources).  Options
common to ``window``, ``ternary`` and ``model``: ``probe`` (updates per probe, default 2000),
``execute`` (updates per execution phase, default 10000; 0 = probe continuously),
``signal`` (``log`` or ``linear``), ``mirror`` (true/false).

Controllers (``make_controller(name, M, **options)``):

``static``    m = M (or ``m``), never probes.
``window``    pattern search: probe every level of a window ``m ± step·i`` (i ≤ ``width``)
              for ``probe`` updates each, run the fastest for ``execute`` updates, re-centre
              the window there; the spacing ``step`` halves whenever the centre wins.
``ternary``   probe the quartiles of a window [lo, hi] and keep the half around the best
              (ternary search on a unimodal rate curve); at ≤ 3 levels probe them all, run the
              best, and restart around it with half-width ``restart``.
``model``     probe a spread of levels, fit a polynomial (``degree``) of rate against m by least
              squares over the last ``memory`` probing rounds, run at its argmax over 1..M, and
              refine with probes at best ± s (s halving each round).  Works for any M ≥ 1.
``schedule``  a given piecewise-constant or linearly ramped m over updates or seconds.

Every decision is appended to :attr:`Controller.trace` (time, k, m, probing, the rate of
the phase that just ended and the loss seen), which both engines store in the run
record's ``control`` table.

Modules: :mod:`~stalesgd.elastic.base` (the protocol, the shared probing),
:mod:`~stalesgd.elastic.controllers` (the five controllers); this package maps names to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stalesgd.elastic.base import (
    DEFAULT_EXECUTE,
    DEFAULT_PROBE,
    SIGNALS,
    Controller,
    ControllerError,
    TracePoint,
)
from stalesgd.elastic.controllers import (
    ModelController,
    ScheduleController,
    StaticController,
    TernaryController,
    WindowController,
)
from stalesgd.validation import OptionError, known_keys

__all__ = [
    "CONTROLLERS",
    "published_summary",
    "DEFAULT_EXECUTE",
    "DEFAULT_PROBE",
    "SIGNALS",
    "Controller",
    "ControllerError",
    "ModelController",
    "ScheduleController",
    "StaticController",
    "TernaryController",
    "TracePoint",
    "WindowController",
    "controller_options",
    "cpu_seconds_from_trace",
    "make_controller",
]


CONTROLLERS: dict[str, type[Controller]] = {
    "static": StaticController,
    "window": WindowController,
    "ternary": TernaryController,
    "model": ModelController,
    "schedule": ScheduleController,
}
"""Controller names and their classes."""

_OPTIONS: dict[str, tuple[str, ...]] = {
    "static": ("m",),
    "window": ("start", "width", "step", "probe", "execute", "signal", "mirror"),
    "ternary": ("lo", "hi", "restart", "probe", "execute", "signal", "mirror"),
    "model": ("degree", "levels", "spread", "memory", "probe", "execute", "signal", "mirror"),
    "schedule": ("steps", "unit", "ramp"),
}


def controller_options(name: str) -> tuple[str, ...]:
    """The option names the controller ``name`` accepts."""
    if name not in CONTROLLERS:
        raise ControllerError("controller.name", name, ", ".join(CONTROLLERS))
    return _OPTIONS[name]


def make_controller(name: str, workers: int, **options: Any) -> Controller:
    """A fresh controller ``name`` for M = ``workers`` worker threads.

    Raises :class:`ControllerError` for an unknown name, an unknown option (naming the
    options the controller takes) or a bad option value.
    """
    allowed = controller_options(name)
    try:
        known_keys(options, "", allowed, f"for {name}")
        return CONTROLLERS[name](workers, **options)
    except OptionError as exc:
        key = exc.key if exc.key == "workers" else f"controller.options.{exc.key}"
        raise ControllerError(key, exc.value, exc.allowed, exc.problem) from None


def cpu_seconds_from_trace(changes: Sequence[tuple[float, int]], end: float,
                           cores: int | None = None) -> float:
    """∫ min(m(t), cores) dt from ``(time, m)`` changes up to ``end``: the CPU-seconds
    ``m(t)`` busy workers use on ``cores`` cores (the simulator's accounting; parked
    workers use none).  Of two changes at the same time, the later in the list holds."""
    total = 0.0
    pts = sorted(changes, key=lambda c: c[0])  # stable: the later of two same-time changes wins
    for (t0, m), (t1, _) in zip(pts, pts[1:] + [(end, 0)], strict=True):
        t0, t1 = min(t0, end), min(t1, end)
        busy = m if cores is None else min(m, cores)
        total += max(0.0, t1 - t0) * busy
    return total


def published_summary(ctl: Controller, published: Sequence[float], end: float,
                      workers: int) -> dict[str, Any]:
    """Run-summary values of a real engine's controller: its name, the time-averaged number
    of active workers (each decision in effect from when it was ``published``, the first from
    t = 0, up to ``end``) and the number of changes of m."""
    tr = ctl.trace
    if not tr:
        return {"controller": ctl.name, "mean_active": float(workers), "controller_changes": 0}
    changes = [(min(t, end), p.m) for t, p in zip(published, tr, strict=False)]
    changes[0] = (0.0, changes[0][1])
    busy = cpu_seconds_from_trace(changes, end)
    return {
        "controller": ctl.name,
        "mean_active": busy / end if end > 0 else float(workers),
        "controller_changes": int(sum(1 for a, b in zip(tr, tr[1:], strict=False)
                                      if a.m != b.m)),
    }
