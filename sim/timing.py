"""Timing models: how long a simulated worker spends computing, copying and applying.

Each model is a small immutable object with ``sample(rng) -> float`` (seconds)
and a vectorised ``sample_n(rng, n) -> np.ndarray``; the simulator draws in
chunks through :class:`Sampler` so that per-event cost stays close to a list
lookup.  Models are built from numbers or from the spec strings of DESIGN §3
(``det:0``, ``exp:2ms``, ``gamma:2ms:0.5``, ``lognormal:2ms:0.5``) by
:func:`parse_timing`.

String specs are parsed by :mod:`stalesgd.units` (the project's one grammar);
Python numbers are taken as seconds.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from stalesgd import units

__all__ = [
    "Timing",
    "Deterministic",
    "Exponential",
    "Gamma",
    "LogNormal",
    "Empirical",
    "Scaled",
    "Sampler",
    "parse_duration",
    "parse_timing",
    "from_distribution",
    "per_param",
    "as_timings",
    "worker_factors",
    "TIMING_KINDS",
]

def parse_duration(text: str | float | int) -> float:
    """Seconds from a duration: a Python number is seconds, a string needs a unit.

    Strings follow the project grammar of :func:`stalesgd.units.parse_duration`
    (``'2ms'``, ``'150us'``, ``'1.5s'``; only ``'0'`` may omit the unit).  Numbers are
    the programmatic form (seconds); negative or non-finite values are rejected.
    """
    if isinstance(text, bool):
        raise ValueError(f"duration {text!r} is not a number")
    if isinstance(text, numbers.Real):
        value = float(text)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"duration {text!r} must be a finite number of seconds >= 0")
        return value
    return units.parse_duration(text)


class Timing:
    """A distribution of durations in seconds (abstract base)."""

    mean: float

    def sample(self, rng: np.random.Generator) -> float:
        """Draw one duration (seconds)."""
        return float(self.sample_n(rng, 1)[0])

    def sample_n(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` durations (seconds) as a float64 array."""
        raise NotImplementedError

    @property
    def is_constant(self) -> bool:
        """True when every draw is the same value (no random numbers are consumed)."""
        return False


@dataclass(frozen=True)
class Deterministic(Timing):
    """Always ``value`` seconds."""

    value: float

    def __post_init__(self) -> None:
        _check_nonneg("det value", self.value)

    @property
    def mean(self) -> float:  # type: ignore[override]
        """The constant value."""
        return self.value

    @property
    def is_constant(self) -> bool:
        """Always true."""
        return True

    def sample(self, rng: np.random.Generator) -> float:
        """Return the constant (consumes no random numbers)."""
        return self.value

    def sample_n(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Return ``n`` copies of the constant."""
        return np.full(n, self.value, dtype=np.float64)


@dataclass(frozen=True)
class Exponential(Timing):
    """Exponential durations with the given mean (coefficient of variation 1)."""

    mean: float

    def __post_init__(self) -> None:
        _check_nonneg("exp mean", self.mean)

    def sample(self, rng: np.random.Generator) -> float:
        """Draw one exponential duration."""
        return float(rng.exponential(self.mean))

    def sample_n(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` exponential durations."""
        return rng.exponential(self.mean, n)


@dataclass(frozen=True)
class Gamma(Timing):
    """Gamma durations by mean and coefficient of variation (shape 1/cv², scale mean·cv²)."""

    mean: float
    cv: float

    def __post_init__(self) -> None:
        _check_nonneg("gamma mean", self.mean)
        _check_pos("gamma cv", self.cv)

    def sample_n(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` gamma durations."""
        shape = 1.0 / (self.cv * self.cv)
        return rng.gamma(shape, self.mean / shape, n)


@dataclass(frozen=True)
class LogNormal(Timing):
    """Log-normal durations by mean and coefficient of variation."""

    mean: float
    cv: float

    def __post_init__(self) -> None:
        _check_pos("lognormal mean", self.mean)
        _check_pos("lognormal cv", self.cv)

    def sample_n(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` log-normal durations (σ² = ln(1+cv²), μ = ln(mean) − σ²/2)."""
        s2 = math.log1p(self.cv * self.cv)
        return rng.lognormal(math.log(self.mean) - 0.5 * s2, math.sqrt(s2), n)


@dataclass(frozen=True, eq=False)
class Empirical(Timing):
    """Resample (with replacement) from measured durations, e.g. a real run's record."""

    values: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        arr = np.ascontiguousarray(np.asarray(self.values, dtype=np.float64).ravel())
        if arr.size == 0:
            raise ValueError("empirical timing needs at least one measured duration")
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError("empirical durations must be finite and >= 0")
        object.__setattr__(self, "values", arr)

    @property
    def mean(self) -> float:  # type: ignore[override]
        """Mean of the measured durations."""
        return float(self.values.mean())

    def sample_n(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` durations uniformly from the measured ones."""
        return self.values[rng.integers(0, self.values.size, n)]


@dataclass(frozen=True)
class Scaled(Timing):
    """A base model with every draw multiplied by ``factor`` (a slow or fast worker)."""

    base: Timing
    factor: float

    def __post_init__(self) -> None:
        _check_pos("speed factor", self.factor)

    @property
    def mean(self) -> float:  # type: ignore[override]
        """Scaled mean."""
        return self.base.mean * self.factor

    @property
    def is_constant(self) -> bool:
        """Constant when the base is."""
        return self.base.is_constant

    def sample(self, rng: np.random.Generator) -> float:
        """Draw one scaled duration."""
        return self.base.sample(rng) * self.factor

    def sample_n(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` scaled durations."""
        return self.base.sample_n(rng, n) * self.factor


TIMING_KINDS = ("det", "exp", "gamma", "lognormal")


def parse_timing(spec: str | float | int | Timing | units.Distribution) -> Timing:
    """Build a timing model from ``det:V``, ``exp:MEAN``, ``gamma:MEAN:CV``, ``lognormal:MEAN:CV``.

    Strings with a ``:`` are parsed by :func:`stalesgd.units.parse_distribution` (the
    project grammar, DESIGN §3); a bare duration string (``'2ms'``) or a number of
    seconds means ``det``; a :class:`stalesgd.units.Distribution` is converted and a
    :class:`Timing` returned unchanged.
    """
    if isinstance(spec, Timing):
        return spec
    if isinstance(spec, units.Distribution):
        return from_distribution(spec)
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        return Deterministic(parse_duration(spec))
    if not isinstance(spec, str):
        raise ValueError(
            f"timing {spec!r} must be a string like 'exp:2ms' or 'gamma:1ms:0.5', "
            "a number of seconds or a Timing"
        )
    if ":" not in spec:
        return Deterministic(units.parse_duration(spec))
    return from_distribution(units.parse_distribution(spec))


def from_distribution(dist: units.Distribution) -> Timing:
    """The timing model of a parsed :class:`stalesgd.units.Distribution`."""
    if dist.kind == "det":
        return Deterministic(dist.mean)
    if dist.kind == "exp":
        return Exponential(dist.mean)
    if dist.kind == "gamma":
        return Gamma(dist.mean, dist.cv)
    if dist.kind == "lognormal":
        return LogNormal(dist.mean, dist.cv)
    raise ValueError(
        f"distribution kind {dist.kind!r} is not allowed; allowed: {', '.join(TIMING_KINDS)}"
    )


def per_param(cost_per_param: float, n_params: int) -> Deterministic:
    """The default read/update model: ``cost_per_param × n_params`` seconds, every time."""
    _check_nonneg("cost per parameter", cost_per_param)
    if int(n_params) < 0:
        raise ValueError(f"n_params {n_params!r} must be >= 0")
    return Deterministic(float(cost_per_param) * int(n_params))


def worker_factors(
    workers: int,
    *,
    slow: Mapping[int, float] | None = None,
    spread: float = 1.0,
) -> np.ndarray:
    """Per-worker speed factors (multipliers of compute time; 1 = nominal).

    ``spread`` ≥ 1 spaces the factors geometrically from 1 (worker 0) to ``spread``
    (the last worker); ``slow`` then multiplies chosen workers, e.g. ``{3: 2.0}``
    makes worker 3 twice as slow.
    """
    if workers < 1:
        raise ValueError(f"workers {workers!r} must be >= 1")
    if not math.isfinite(spread) or spread < 1.0:
        raise ValueError(f"spread {spread!r} must be >= 1 (ratio slowest/fastest worker)")
    f = np.geomspace(1.0, spread, workers) if workers > 1 else np.ones(1)
    for w, fac in (slow or {}).items():
        if not 0 <= int(w) < workers:
            raise ValueError(f"slow worker {w!r} is out of range 0..{workers - 1}")
        _check_pos(f"slow factor of worker {w}", fac)
        f[int(w)] *= float(fac)
    return f


class Sampler:
    """Draws durations one at a time from a model, refilling in chunks (fast, deterministic).

    The sequence of values depends only on the model, the generator and the chunk size,
    so a simulation that calls ``next()`` in a deterministic order is reproducible.
    """

    __slots__ = ("_timing", "_rng", "chunk", "_buf", "_i", "const")

    def __init__(self, timing: Timing, rng: np.random.Generator, chunk: int = 4096) -> None:
        self._timing = timing
        self._rng = rng
        #: durations drawn at a time
        self.chunk = int(chunk)
        self._buf: list[float] = []
        self._i = 0
        #: the constant value when the model is deterministic, else ``None``
        self.const: float | None = timing.sample(rng) if timing.is_constant else None

    def next(self) -> float:
        """The next duration in seconds."""
        if self.const is not None:
            return self.const
        i = self._i
        if i >= len(self._buf):
            self._buf = self._timing.sample_n(self._rng, self.chunk).tolist()
            i = 0
        self._i = i + 1
        return self._buf[i]

    def chunks(self) -> Iterator[np.ndarray]:
        """The durations further :meth:`next` calls would give, as float64 arrays (for the
        compiled loop); the iterator takes over the sampler's buffer and generator, so do
        not call :meth:`next` on the sampler afterwards.
        """
        chunk = self.chunk
        if self.const is not None:
            block = np.full(chunk, self.const, dtype=np.float64)
            return itertools.repeat(block)
        head = np.asarray(self._buf[self._i:], dtype=np.float64)
        self._buf, self._i = [], 0
        timing, rng = self._timing, self._rng

        def rest() -> Iterator[np.ndarray]:
            while True:
                yield np.asarray(timing.sample_n(rng, chunk), dtype=np.float64)

        return itertools.chain([head] if head.size else [], rest())


def as_timings(spec: str | float | Timing | Sequence[str | float | Timing], n: int) -> list[Timing]:
    """One timing model per worker: a single spec is shared, a sequence must have ``n`` items."""
    if isinstance(spec, str | numbers.Real | Timing):
        t = parse_timing(spec)
        return [t] * n
    items = list(spec)
    if len(items) != n:
        raise ValueError(f"per-worker timing list has {len(items)} entries, expected {n}")
    return [parse_timing(s) for s in items]


def _check_nonneg(name: str, value: float) -> None:
    if not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} {value!r} must be a finite number >= 0")


def _check_pos(name: str, value: float) -> None:
    if not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} {value!r} must be a finite number > 0")
