"""Elastic parallelism control: how many of M asynchronous workers should run right now.

A controller chooses the active level m(t) ∈ 1..M from the measured *progress rate*,
the loss decrease per second, while probing nearby levels (DESIGN §4, issue 8).  It is
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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CONTROLLERS",
    "Controller",
    "ControllerError",
    "ModelController",
    "ScheduleController",
    "StaticController",
    "TernaryController",
    "TracePoint",
    "WindowController",
    "cpu_seconds_from_trace",
    "make_controller",
]

#: default updates per probing phase
DEFAULT_PROBE = 2000
#: default updates per execution phase
DEFAULT_EXECUTE = 10000
SIGNALS = ("log", "linear")


class ControllerError(ValueError):
    """A bad controller name or option; the message names the key, the value and what is
    allowed (``key``, ``value`` and ``allowed`` are kept for re-raising as an
    :class:`~stalesgd.experiment.ExperimentError`)."""

    def __init__(self, key: str, value: Any, allowed: str, problem: str = "is not allowed"):
        self.key, self.value, self.allowed, self.problem = key, value, allowed, problem
        super().__init__(f"{key} = {value!r} {problem}; allowed: {allowed}")


@dataclass(frozen=True)
class TracePoint:
    """One decision: from time ``t`` / update ``k`` on, run ``m`` workers (``probing``: this
    phase measures a level rather than exploits one).  ``rate`` is the progress rate measured
    over the phase that ended here (NaN if none was measured) and ``loss`` the loss seen."""

    t: float
    k: int
    m: int
    probing: bool
    rate: float = math.nan
    loss: float = math.nan


# ---------------------------------------------------------------------------------------------
# option checking
# ---------------------------------------------------------------------------------------------


def _int_opt(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    allowed = f"an integer >= {lo}" + ("" if hi is None else f" and <= {hi}")
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ControllerError(name, value, allowed, f"is a {type(value).__name__}, not an "
                              "integer")
    if value < lo or (hi is not None and value > hi):
        raise ControllerError(name, value, allowed, "is out of range")
    return int(value)


def _choice_opt(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ControllerError(name, value, ", ".join(choices))
    return str(value)


# ---------------------------------------------------------------------------------------------
# the protocol
# ---------------------------------------------------------------------------------------------


class Controller:
    """Base class: phases of ``length`` updates at one level, the progress signal, the trace.

    Subclasses implement :meth:`_first` (the first phase) and :meth:`_next` (given the rate
    of the phase that ended, the next phase) each returning ``(m, probing, length)`` with
    ``length`` in updates.  ``workers`` is M, the number of worker threads.
    """

    name = "controller"
    needs_loss = True

    def __init__(self, workers: int, signal: str = "log") -> None:
        self.M = _int_opt("workers", workers, 1)
        self.signal = _choice_opt("signal", signal, SIGNALS)
        self.trace: list[TracePoint] = []
        self.m = self.M
        self.probing = False
        self.next_k: float = math.inf
        self.next_t: float = math.inf
        self._t0 = 0.0
        self._f0 = 0.0
        self._started = False

    # ----- protocol -----------------------------------------------------------------------
    def start(self, t: float, k: int, loss: float | None) -> int:
        """Begin at time ``t`` after ``k`` updates with the measured ``loss``; returns m."""
        if self._started:
            raise RuntimeError(f"{self.name} controller was already started")
        if self.needs_loss and loss is None:
            raise ValueError(f"the {self.name} controller needs a measured loss at the start "
                             "(an evaluation of θ), got None")
        self._started = True
        m, probing, length = self._first()
        self._begin(t, k, loss, m, probing, length, math.nan)
        return self.m

    def due(self, t: float, k: int) -> bool:
        """True when the current phase has ended and :meth:`observe` should be called."""
        return k >= self.next_k or t >= self.next_t

    def observe(self, t: float, k: int, loss: float | None) -> int:
        """Close the current phase at ``(t, k)`` with the measured ``loss``; returns the new m."""
        if not self._started:
            raise RuntimeError(f"call start() before observe() on the {self.name} controller")
        rate = self._rate(t, loss) if self.needs_loss else math.nan
        m, probing, length = self._next(rate, t, k)
        self._begin(t, k, loss, m, probing, length, rate)
        return self.m

    # ----- helpers ------------------------------------------------------------------------
    def _f(self, loss: float | None) -> float:
        if loss is None or not math.isfinite(loss):
            return math.nan
        if self.signal == "log":
            return math.log(loss) if loss > 0 else math.nan
        return float(loss)

    def _rate(self, t: float, loss: float | None) -> float:
        f1 = self._f(loss)
        dt = t - self._t0
        if math.isnan(f1) or math.isnan(self._f0):
            return -math.inf
        if dt <= 0:
            return math.nan
        return (self._f0 - f1) / dt

    def _begin(self, t: float, k: int, loss: float | None, m: int, probing: bool,
               length: float, rate: float) -> None:
        m = int(min(max(m, 1), self.M))
        self.m, self.probing = m, bool(probing)
        self.next_k = k + length
        self._t0, self._f0 = float(t), self._f(loss)
        self.trace.append(TracePoint(float(t), int(k), m, bool(probing), float(rate),
                                     math.nan if loss is None else float(loss)))

    def _first(self) -> tuple[int, bool, float]:
        raise NotImplementedError

    def _next(self, rate: float, t: float, k: int) -> tuple[int, bool, float]:
        raise NotImplementedError

    def trace_columns(self) -> dict[str, np.ndarray]:
        """The trace as the columns of the run record's ``control`` table."""
        tr = self.trace
        return {
            "t": np.array([p.t for p in tr], dtype=np.float64),
            "k": np.array([p.k for p in tr], dtype=np.int64),
            "m": np.array([p.m for p in tr], dtype=np.int32),
            "probing": np.array([p.probing for p in tr], dtype=bool),
            "rate": np.array([p.rate for p in tr], dtype=np.float64),
            "loss": np.array([p.loss for p in tr], dtype=np.float64),
        }

    def describe(self) -> dict[str, Any]:
        """The controller's name and resolved options (for the run summary)."""
        return {"controller": self.name}


def _best(rates: dict[int, float]) -> int:
    """The level with the highest rate; ties go to the smallest level, NaN counts as -inf."""
    best, best_r = 0, -math.inf
    for m in sorted(rates):
        r = rates[m] if not math.isnan(rates[m]) else -math.inf
        if best == 0 or r > best_r:
            best, best_r = m, r
    return best


class _Prober(Controller):
    """Shared machinery: probe a list of levels one phase each, then act on the rates."""

    def __init__(self, workers: int, probe: int = DEFAULT_PROBE, execute: int = DEFAULT_EXECUTE,
                 signal: str = "log", mirror: bool = True) -> None:
        super().__init__(workers, signal)
        self.probe = _int_opt("probe", probe, 1)
        self.execute = _int_opt("execute", execute, 0)
        if not isinstance(mirror, bool):
            raise ControllerError("mirror", mirror, "true or false")
        self.mirror = mirror
        self._queue: list[int] = []
        self._rates: dict[int, float] = {}
        self._seen: dict[int, list[float]] = {}
        self._current: int | None = None
        self._ascending = True

    def _probe_levels(self, levels: Sequence[int]) -> tuple[int, bool, float]:
        """Start a probing round over ``levels`` (clipped to 1..M, deduplicated)."""
        lv = sorted({int(min(max(x, 1), self.M)) for x in levels})
        if not self._ascending:
            lv.reverse()
        self._ascending = not self._ascending
        # mirrored (a, b, c, c, b, a): the mean of a level's two rates cancels a linear drift
        # of the progress rate along the run (the loss flattening out) between levels
        self._queue = lv + lv[::-1] if self.mirror and len(lv) > 1 else lv
        self._seen = {}
        return self._pop()

    def _pop(self) -> tuple[int, bool, float]:
        self._current = self._queue.pop(0)
        return self._current, True, self.probe

    def _next(self, rate: float, t: float, k: int) -> tuple[int, bool, float]:
        if self._current is not None:  # a probe just ended
            self._seen.setdefault(self._current, []).append(rate)
            self._current = None
            if self._queue:
                return self._pop()
            self._rates = {m: (float(np.mean(r)) if not any(math.isnan(x) for x in r)
                               else math.nan) for m, r in self._seen.items()}
            best = self._round_done(self._rates)
            if self.execute > 0:
                return best, False, self.execute
        return self._new_round()

    def _round_done(self, rates: dict[int, float]) -> int:
        raise NotImplementedError

    def _new_round(self) -> tuple[int, bool, float]:
        raise NotImplementedError

    def _first(self) -> tuple[int, bool, float]:
        return self._new_round()


# ---------------------------------------------------------------------------------------------
# the controllers
# ---------------------------------------------------------------------------------------------


class StaticController(Controller):
    """``static``: always ``m`` workers (default all M); the baseline.  Never due."""

    name = "static"
    needs_loss = False

    def __init__(self, workers: int, m: int | None = None) -> None:
        super().__init__(workers)
        self.level = self.M if m is None else _int_opt("m", m, 1, self.M)

    def _first(self) -> tuple[int, bool, float]:
        return self.level, False, math.inf

    def _next(self, rate: float, t: float, k: int) -> tuple[int, bool, float]:
        return self.level, False, math.inf

    def describe(self) -> dict[str, Any]:
        return {"controller": self.name, "m": self.level}


class WindowController(_Prober):
    """``window``: alternate an execution phase of ``execute`` updates at m with a probing
    phase that runs each level of the window {m + i·step : |i| ≤ width} (clipped to 1..M) for
    ``probe`` updates and keeps the fastest.  When the centre wins, ``step`` halves (down to
    1), so on a unimodal rate curve the level settles on the best one.

    Parameters: ``start`` (first centre, default M), ``width`` (levels each side, default 1),
    ``step`` (initial spacing, default max(1, M // 4)), ``probe``, ``execute``, ``signal``.
    """

    name = "window"

    def __init__(self, workers: int, start: int | None = None, width: int = 1,
                 step: int | None = None, probe: int = DEFAULT_PROBE,
                 execute: int = DEFAULT_EXECUTE, signal: str = "log",
                 mirror: bool = True) -> None:
        super().__init__(workers, probe, execute, signal, mirror)
        self.centre = self.M if start is None else _int_opt("start", start, 1, self.M)
        self.width = _int_opt("width", width, 1)
        self.step = max(1, self.M // 4) if step is None else _int_opt("step", step, 1)

    def _new_round(self) -> tuple[int, bool, float]:
        c, s = self.centre, self.step
        return self._probe_levels([c + i * s for i in range(-self.width, self.width + 1)])

    def _round_done(self, rates: dict[int, float]) -> int:
        best = _best(rates)
        if best == min(max(self.centre, 1), self.M) and self.step > 1:
            self.step = max(1, self.step // 2)
        self.centre = best
        return best

    def describe(self) -> dict[str, Any]:
        return {"controller": self.name, "width": self.width, "probe": self.probe,
                "execute": self.execute, "signal": self.signal}


class TernaryController(_Prober):
    """``ternary``: search the window [lo, hi] by probing its three quartiles and keeping the
    half around the best (for a unimodal rate curve the optimum stays inside); run the best
    quartile for ``execute`` updates between rounds.  Once at most 3 levels remain, probe them
    all, run the best, and restart the search on [best − restart, best + restart].

    Parameters: ``lo`` (default 1), ``hi`` (default M), ``restart`` (default max(2, M // 4)),
    ``probe``, ``execute``, ``signal``.
    """

    name = "ternary"

    def __init__(self, workers: int, lo: int = 1, hi: int | None = None,
                 restart: int | None = None, probe: int = DEFAULT_PROBE,
                 execute: int = DEFAULT_EXECUTE, signal: str = "log",
                 mirror: bool = True) -> None:
        super().__init__(workers, probe, execute, signal, mirror)
        self.lo = _int_opt("lo", lo, 1, self.M)
        self.hi = self.M if hi is None else _int_opt("hi", hi, self.lo, self.M)
        self.restart = max(2, self.M // 4) if restart is None else _int_opt("restart", restart, 1)
        self.best = self.hi
        self._final = False  # this round probes every remaining level

    def _quartiles(self) -> list[int]:
        a, b = self.lo, self.hi
        return [round(a + (b - a) * q) for q in (0.25, 0.5, 0.75)]

    def _new_round(self) -> tuple[int, bool, float]:
        if self.hi - self.lo + 1 <= 3:
            self._final = True
            return self._probe_levels(range(self.lo, self.hi + 1))
        self._final = False
        return self._probe_levels(self._quartiles())

    def _round_done(self, rates: dict[int, float]) -> int:
        best = _best(rates)
        self.best = best
        if self._final:
            self.lo = max(1, best - self.restart)
            self.hi = min(self.M, best + self.restart)
            return best
        q1, q2, q3 = self._quartiles()
        if best == q1:
            self.hi = q2
        elif best == q2:
            self.lo, self.hi = q1, q3
        else:
            self.lo = q2
        return best

    def describe(self) -> dict[str, Any]:
        return {"controller": self.name, "restart": self.restart, "probe": self.probe,
                "execute": self.execute, "signal": self.signal}


class ModelController(_Prober):
    """``model``: fit a polynomial of progress rate against m and run at its argmax.

    The first round probes ``levels`` levels spread evenly over 1..M (all of them when M is
    smaller); later rounds probe best − s, best, best + s with s starting at ``spread``
    (default max(1, M // 8)) and halving each round.  The fit is least squares over the
    probes of the last ``memory`` rounds, of degree min(``degree``, distinct levels − 1), and
    the next level is its argmax over the integers between the smallest and the largest level
    probed in those rounds (no extrapolation; with one distinct level, that level).

    Parameters: ``degree`` (default 2), ``levels`` (default degree + 2), ``spread``,
    ``memory`` (default 3), ``probe``, ``execute``, ``signal``.
    """

    name = "model"

    def __init__(self, workers: int, degree: int = 2, levels: int | None = None,
                 spread: int | None = None, memory: int = 3, probe: int = DEFAULT_PROBE,
                 execute: int = DEFAULT_EXECUTE, signal: str = "log",
                 mirror: bool = True) -> None:
        super().__init__(workers, probe, execute, signal, mirror)
        self.degree = _int_opt("degree", degree, 1, 6)
        self.levels = self.degree + 2 if levels is None else _int_opt("levels", levels, 2)
        self.spread = max(1, self.M // 8) if spread is None else _int_opt("spread", spread, 1)
        self.memory = _int_opt("memory", memory, 1)
        self.best = self.M
        self.rounds: list[dict[int, float]] = []
        self.coef: np.ndarray | None = None

    def _new_round(self) -> tuple[int, bool, float]:
        if not self.rounds:
            n = min(self.levels, self.M)
            grid = np.unique(np.round(np.linspace(1, self.M, n)).astype(int))
            return self._probe_levels([int(x) for x in grid])
        s = self.spread
        self.spread = max(1, s // 2)
        return self._probe_levels([self.best - s, self.best, self.best + s])

    def _round_done(self, rates: dict[int, float]) -> int:
        self.rounds.append(dict(rates))
        self.rounds = self.rounds[-self.memory:]
        self.best = self.fit_best()
        return self.best

    def fit_best(self) -> int:
        """The argmax over 1..M of the polynomial fitted to the kept probes."""
        ms, rs = [], []
        for rnd in self.rounds:
            for m, r in rnd.items():
                if math.isfinite(r):
                    ms.append(m)
                    rs.append(r)
        if not ms:  # every probe diverged: fall back to the fewest workers probed
            return min(min(r) for r in self.rounds)
        distinct = len(set(ms))
        deg = min(self.degree, distinct - 1)
        if deg == 0:
            return _best({m: r for m, r in zip(ms, rs, strict=True)})
        x = np.asarray(ms, dtype=np.float64) / self.M  # scaled for a well-conditioned fit
        self.coef = np.polyfit(x, np.asarray(rs, dtype=np.float64), deg)
        # no extrapolation: the argmax is taken over the span of the probed levels
        grid = np.arange(min(ms), max(ms) + 1)
        pred = np.polyval(self.coef, grid / self.M)
        return int(grid[int(np.argmax(pred))])

    def describe(self) -> dict[str, Any]:
        return {"controller": self.name, "degree": self.degree, "probe": self.probe,
                "execute": self.execute, "signal": self.signal}


class ScheduleController(Controller):
    """``schedule``: m follows a given schedule, no probing and no loss needed.

    ``steps`` is a list of ``[at, m]`` pairs with strictly increasing ``at`` ≥ 0 (in ``unit``:
    ``"updates"`` or ``"seconds"`` of the engine's clock) and 1 ≤ m ≤ M.  Piecewise constant
    (m of the last step reached; M before the first) unless ``ramp = true``, where m is
    interpolated linearly between steps and rounded (constant after the last).
    """

    name = "schedule"
    needs_loss = False

    def __init__(self, workers: int, steps: Sequence[Sequence[float]] | None = None,
                 unit: str = "updates", ramp: bool = False) -> None:
        super().__init__(workers)
        if not steps:
            raise ControllerError("steps", steps, "a non-empty list of [at, m] pairs, e.g. "
                                  "[[0, 8], [5000, 2]]", "is missing or empty")
        pts: list[tuple[float, int]] = []
        for i, st in enumerate(steps):
            if not isinstance(st, list | tuple) or len(st) != 2:
                raise ControllerError(f"steps[{i}]", st, "a pair [at, m]")
            at, m = st
            if isinstance(at, bool) or not isinstance(at, int | float) or not (
                    math.isfinite(at) and at >= 0):
                raise ControllerError(f"steps[{i}][0]", at, "a finite number >= 0")
            if pts and at <= pts[-1][0]:
                raise ControllerError(f"steps[{i}][0]", at, f"a value > {pts[-1][0]} (steps "
                                      "in increasing order)")
            pts.append((float(at), _int_opt(f"steps[{i}][1]", m, 1, self.M)))
        self.steps = pts
        self.unit = _choice_opt("unit", unit, ("updates", "seconds"))
        if not isinstance(ramp, bool):
            raise ControllerError("ramp", ramp, "true or false")
        self.ramp = ramp

    def level(self, x: float) -> int:
        """m at position ``x`` (updates or seconds)."""
        pts = self.steps
        if x < pts[0][0]:
            return self.M
        for (a0, m0), (a1, m1) in zip(pts, pts[1:], strict=False):
            if a0 <= x < a1:
                if not self.ramp:
                    return m0
                v = m0 + (m1 - m0) * (x - a0) / (a1 - a0)
                # round half towards the destination, so the level has changed exactly at
                # the crossing points that _next_change reports (with a float tolerance)
                if m1 < m0:
                    return int(math.ceil(v - 0.5 - 1e-9))
                return int(math.floor(v + 0.5 + 1e-9))
        return pts[-1][1]

    def _next_change(self, x: float) -> float:
        """The first position after ``x`` where :meth:`level` may change."""
        cands = [a for a, _ in self.steps if a > x]
        if self.ramp:
            for (a0, m0), (a1, m1) in zip(self.steps, self.steps[1:], strict=False):
                if m1 == m0 or a1 <= x:
                    continue
                for c in range(min(m0, m1), max(m0, m1)):
                    pos = a0 + (c + 0.5 - m0) / (m1 - m0) * (a1 - a0)
                    if pos > x:
                        cands.append(pos)
        return min(cands) if cands else math.inf

    def _where(self, t: float, k: int) -> float:
        return float(k) if self.unit == "updates" else float(t)

    def _set_next(self, x: float) -> None:
        nxt = self._next_change(x)
        if self.unit == "updates":
            self.next_k, self.next_t = math.ceil(nxt) if math.isfinite(nxt) else nxt, math.inf
        else:
            self.next_k, self.next_t = math.inf, nxt

    def start(self, t: float, k: int, loss: float | None) -> int:
        """Begin at ``(t, k)``; ``loss`` is optional (recorded when given)."""
        self._started = True
        x = self._where(t, k)
        self._begin(t, k, loss, self.level(x), False, math.inf, math.nan)
        self._set_next(x)
        return self.m

    def observe(self, t: float, k: int, loss: float | None) -> int:
        """Move to the level the schedule gives at ``(t, k)``."""
        x = self._where(t, k)
        self._begin(t, k, loss, self.level(x), False, math.inf, math.nan)
        self._set_next(x)
        return self.m

    def describe(self) -> dict[str, Any]:
        return {"controller": self.name, "unit": self.unit, "ramp": self.ramp,
                "steps": [[a, m] for a, m in self.steps]}


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
    for key, value in options.items():
        if key not in allowed:
            raise ControllerError(f"controller.options.{key}", value,
                                  f"for {name}: {', '.join(allowed) or 'none'}",
                                  "is an unknown option")
    try:
        return CONTROLLERS[name](workers, **options)
    except ControllerError as exc:
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
