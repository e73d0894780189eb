"""The elastic-control protocol every controller follows, and what the probing ones share.

:class:`Controller` runs phases of a fixed number of updates at one level, measures each
phase's progress rate and keeps the trace; :class:`Prober` probes a list of levels one phase
each and acts on their rates.  The signal and the protocol are described in
:mod:`stalesgd.elastic`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stalesgd.validation import OptionError, choice, flag, integer

__all__ = ["DEFAULT_EXECUTE", "DEFAULT_PROBE", "SIGNALS", "Controller", "ControllerError",
           "Prober", "TracePoint", "best_level"]

#: default updates per probing phase
DEFAULT_PROBE = 2000
#: default updates per execution phase
DEFAULT_EXECUTE = 10000
SIGNALS = ("log", "linear")


class ControllerError(OptionError):
    """A bad controller name or option (key ``controller.name`` or ``controller.options.X``);
    the message names the key, the value and what is allowed."""


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
        self.M = integer(workers, "workers", 1)
        self.signal = choice(signal, "signal", SIGNALS)
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


def best_level(rates: dict[int, float]) -> int:
    """The level with the highest rate; ties go to the smallest level, NaN counts as -inf."""
    best, best_r = 0, -math.inf
    for m in sorted(rates):
        r = rates[m] if not math.isnan(rates[m]) else -math.inf
        if best == 0 or r > best_r:
            best, best_r = m, r
    return best


class Prober(Controller):
    """Shared machinery: probe a list of levels one phase each, then act on the rates."""

    def __init__(self, workers: int, probe: int = DEFAULT_PROBE, execute: int = DEFAULT_EXECUTE,
                 signal: str = "log", mirror: bool = True) -> None:
        super().__init__(workers, signal)
        self.probe = integer(probe, "probe", 1)
        self.execute = integer(execute, "execute", 0)
        self.mirror = flag(mirror, "mirror")
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
