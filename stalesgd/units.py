"""Durations with units and timing distributions, as written in experiments and on the command line.

Durations are strings such as ``"2ms"``, ``"150us"``, ``"1.5s"`` (units ``ns``, ``us``/``µs``,
``ms``, ``s``); a bare ``0`` is also accepted, since zero needs no unit.  Distributions of a
duration are written ``exp:MEAN``, ``det:VALUE``, ``gamma:MEAN:CV`` and ``lognormal:MEAN:CV``
(DESIGN §3), e.g. ``"exp:2ms"`` or ``"gamma:1ms:0.5"``.  The simulator samples from the parsed
:class:`Distribution`; experiment validation uses the parsers to reject bad strings early.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

UNITS: dict[str, float] = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
#: longest mean of a timing distribution, in seconds (longer ones are a typo, and sums of
#: them could overflow the simulated clock)
MAX_MEAN = 1e6
#: largest coefficient of variation of a gamma or log-normal distribution: beyond it gamma
#: draws are mostly exact zeros, and log-normal parameters lose precision
MAX_CV = 10.0
DISTRIBUTION_FORMS = ("exp:MEAN", "det:VALUE", "gamma:MEAN:CV", "lognormal:MEAN:CV")
DURATION_FORMS = "a number with a unit (ns, us, ms, s), e.g. '2ms', '150us', '1.5s', or 0"

_DURATION_RE = re.compile(
    r"^\s*([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ns|us|µs|ms|s)?\s*$"
)


class UnitsError(ValueError):
    """A duration or distribution string that cannot be parsed; the message says what is allowed."""


def parse_duration(text: str | int | float) -> float:
    """Seconds from a duration such as ``"2ms"``; negative values and missing units are errors.

    Only the number zero may be written without a unit (``0`` or ``"0"``): any other bare
    number is ambiguous and rejected, so that ``"2"`` is never silently taken as 2 seconds.
    """
    if isinstance(text, bool):
        raise UnitsError(f"duration {text!r} is not allowed; expected {DURATION_FORMS}")
    if isinstance(text, int | float):
        if text == 0:
            return 0.0
        raise UnitsError(
            f"duration {text!r} has no unit; expected {DURATION_FORMS} (write e.g. '{text}ms')"
        )
    if not isinstance(text, str):
        raise UnitsError(f"duration {text!r} is not allowed; expected {DURATION_FORMS}")
    match = _DURATION_RE.match(text)
    if match is None:
        raise UnitsError(f"duration {text!r} is not allowed; expected {DURATION_FORMS}")
    number, unit = float(match.group(1)), match.group(2)
    if unit is None:
        if number == 0:
            return 0.0
        raise UnitsError(f"duration {text!r} has no unit; expected {DURATION_FORMS}")
    value = number * UNITS[unit]
    if not math.isfinite(value):
        raise UnitsError(f"duration {text!r} is not finite; expected {DURATION_FORMS}")
    return value


def format_duration(seconds: float) -> str:
    """The shortest readable duration string for ``seconds`` (inverse of :func:`parse_duration`)."""
    if seconds < 0 or not math.isfinite(seconds):
        raise UnitsError(f"duration {seconds!r} s cannot be written; it must be finite and >= 0")
    if seconds == 0:
        return "0"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.12g}{unit}"
    return f"{seconds / 1e-9:.12g}ns"


@dataclass(frozen=True)
class Distribution:
    """A distribution of durations in seconds: ``kind`` in exp/det/gamma/lognormal.

    ``mean`` is the mean in seconds and ``cv`` the coefficient of variation (standard
    deviation / mean): 1 for ``exp``, 0 for ``det``, as given for ``gamma``/``lognormal``.
    """

    kind: str
    mean: float
    cv: float

    def sample(self, rng: np.random.Generator, size: int | None = None) -> float | np.ndarray:
        """Draw ``size`` durations (one float when ``size`` is None) from ``rng``."""
        if self.kind == "det":
            return self.mean if size is None else np.full(size, self.mean)
        if self.kind == "exp":
            return rng.exponential(self.mean, size)
        if self.kind == "gamma":
            shape = 1.0 / (self.cv * self.cv)
            return rng.gamma(shape, self.mean / shape, size)
        if self.kind == "lognormal":
            sigma2 = math.log1p(self.cv * self.cv)
            return rng.lognormal(math.log(self.mean) - sigma2 / 2.0, math.sqrt(sigma2), size)
        raise UnitsError(f"distribution kind {self.kind!r} is not allowed; allowed: exp, det, "
                         "gamma, lognormal")

    @property
    def std(self) -> float:
        """Standard deviation in seconds."""
        return self.mean * self.cv

    def __str__(self) -> str:
        mean = format_duration(self.mean)
        if self.kind in ("exp", "det"):
            return f"{self.kind}:{mean}"
        return f"{self.kind}:{mean}:{self.cv:g}"


def parse_distribution(text: str) -> Distribution:
    """A :class:`Distribution` from ``exp:MEAN``, ``det:VALUE``, ``gamma:MEAN:CV`` or
    ``lognormal:MEAN:CV`` (MEAN and VALUE are durations with units, at most :data:`MAX_MEAN`
    seconds; CV a number in (0, :data:`MAX_CV`]), so that every draw is a finite time and the
    mean is positive (but for ``det``, which may be 0)."""
    allowed = ", ".join(DISTRIBUTION_FORMS) + " with durations like '2ms'"
    if not isinstance(text, str):
        raise UnitsError(f"distribution {text!r} is not allowed; expected one of {allowed}")
    parts = [p.strip() for p in text.split(":")]
    kind = parts[0]
    arity = {"exp": 2, "det": 2, "gamma": 3, "lognormal": 3}
    if kind not in arity:
        raise UnitsError(
            f"distribution {text!r}: kind {kind!r} is not allowed; expected one of {allowed}"
        )
    if len(parts) != arity[kind]:
        form = next(f for f in DISTRIBUTION_FORMS if f.startswith(kind + ":"))
        raise UnitsError(f"distribution {text!r} is not allowed; {kind} is written {form}")
    try:
        mean = parse_duration(parts[1])
    except UnitsError as exc:
        raise UnitsError(f"distribution {text!r}: {exc}") from None
    if mean > MAX_MEAN:
        raise UnitsError(f"distribution {text!r}: the mean must be at most {MAX_MEAN:g} s")
    if kind == "det":
        return Distribution("det", mean, 0.0)
    if mean <= 0:
        raise UnitsError(f"distribution {text!r}: the mean of {kind} must be > 0")
    if kind == "exp":
        return Distribution("exp", mean, 1.0)
    try:
        cv = float(parts[2])
    except ValueError:
        raise UnitsError(
            f"distribution {text!r}: CV {parts[2]!r} is not a number; expected a number > 0"
        ) from None
    if not (0 < cv <= MAX_CV):
        raise UnitsError(f"distribution {text!r}: CV {parts[2]!r} must be a number > 0 and "
                         f"<= {MAX_CV:g}")
    return Distribution(kind, mean, cv)


def adds_delay(text: str | None) -> bool:
    """Whether the distribution ``text`` (a ``net_delay`` setting) adds any time: False for
    None (or a missing value of a table), empty text and ``det:0`` (the no-delay baseline of
    a sweep)."""
    if not isinstance(text, str) or not text.strip():
        return False
    try:
        return parse_distribution(text).mean > 0
    except UnitsError:
        return True
