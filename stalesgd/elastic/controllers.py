"""The controllers: ``static``, ``window``, ``ternary``, ``model`` and ``schedule``.

Each one decides the active level m(t) through the protocol of
:class:`~stalesgd.elastic.base.Controller`; options are checked when it is built (an
:class:`~stalesgd.validation.OptionError` naming the option).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from stalesgd.elastic.base import (
    DEFAULT_EXECUTE,
    DEFAULT_PROBE,
    Controller,
    Prober,
    best_level,
)
from stalesgd.validation import OptionError, choice, flag, integer, number

__all__ = ["ModelController", "ScheduleController", "StaticController", "TernaryController",
           "WindowController"]


class StaticController(Controller):
    """``static``: always ``m`` workers (default all M); the baseline.  Never due."""

    name = "static"
    needs_loss = False

    def __init__(self, workers: int, m: int | None = None) -> None:
        super().__init__(workers)
        self.level = self.M if m is None else integer(m, "m", 1, self.M)

    def _first(self) -> tuple[int, bool, float]:
        return self.level, False, math.inf

    def _next(self, rate: float, t: float, k: int) -> tuple[int, bool, float]:
        return self.level, False, math.inf

    def describe(self) -> dict[str, Any]:
        return {"controller": self.name, "m": self.level}


class WindowController(Prober):
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
        self.centre = self.M if start is None else integer(start, "start", 1, self.M)
        self.width = integer(width, "width", 1, self.M)  # wider only repeats 1 and M
        self.step = max(1, self.M // 4) if step is None else integer(step, "step", 1)

    def _new_round(self) -> tuple[int, bool, float]:
        c, s = self.centre, self.step
        return self._probe_levels([c + i * s for i in range(-self.width, self.width + 1)])

    def _round_done(self, rates: dict[int, float]) -> int:
        best = best_level(rates)
        if best == min(max(self.centre, 1), self.M) and self.step > 1:
            self.step = max(1, self.step // 2)
        self.centre = best
        return best

    def describe(self) -> dict[str, Any]:
        return {"controller": self.name, "width": self.width, "probe": self.probe,
                "execute": self.execute, "signal": self.signal}


class TernaryController(Prober):
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
        self.lo = integer(lo, "lo", 1, self.M)
        self.hi = self.M if hi is None else integer(hi, "hi", self.lo, self.M)
        self.restart = (max(2, self.M // 4) if restart is None
                        else integer(restart, "restart", 1))
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
        best = best_level(rates)
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


class ModelController(Prober):
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
        self.degree = integer(degree, "degree", 1, 6)
        self.levels = self.degree + 2 if levels is None else integer(levels, "levels", 2)
        self.spread = max(1, self.M // 8) if spread is None else integer(spread, "spread", 1)
        self.memory = integer(memory, "memory", 1)
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
        self.best = self.fitbest_level()
        return self.best

    def fitbest_level(self) -> int:
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
            return best_level({m: r for m, r in zip(ms, rs, strict=True)})
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
        if not isinstance(steps, list | tuple) or not steps:
            raise OptionError("steps", steps, "a non-empty list of [at, m] pairs, e.g. "
                              "[[0, 8], [5000, 2]]", "is missing or empty")
        pts: list[tuple[float, int]] = []
        for i, st in enumerate(steps):
            if not isinstance(st, list | tuple) or len(st) != 2:
                raise OptionError(f"steps[{i}]", st, "a pair [at, m]")
            at = number(st[0], f"steps[{i}][0]", 0.0)
            if pts and at <= pts[-1][0]:
                raise OptionError(f"steps[{i}][0]", st[0], f"a value > {pts[-1][0]} (steps "
                                  "in increasing order)")
            pts.append((at, integer(st[1], f"steps[{i}][1]", 1, self.M)))
        self.steps = pts
        self.unit = choice(unit, "unit", ("updates", "seconds"))
        self.ramp = flag(ramp, "ramp")

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
