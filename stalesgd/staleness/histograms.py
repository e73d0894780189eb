"""Staleness histograms and their summaries: PDF, CDF, moments, quantiles.

A histogram ``counts[t]`` is the number of updates with τ = t (τ ≥ 0 integer), or a float
weight (a PDF); every function here costs time proportional to its length, not to the
number of samples it counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "StalenessSummary",
    "as_counts",
    "cdf",
    "dispersion_index",
    "histogram",
    "mean",
    "moments",
    "pdf",
    "quantiles",
    "summarize",
    "trim_zeros",
    "variance",
]


def histogram(samples: np.ndarray | Sequence[int], *, tau_max: int | None = None) -> np.ndarray:
    """Count τ samples into an int64 histogram ``counts[t] = #{τ = t}``.

    ``samples`` must be non-negative integers (an integer array, or floats that
    are whole numbers).  ``tau_max`` fixes the length to ``tau_max + 1``;
    samples above it raise an error rather than being silently dropped.
    """
    a = np.asarray(samples)
    if a.ndim != 1:
        a = a.reshape(-1)
    if a.size == 0:
        raise ValueError("samples is empty; need at least one staleness value")
    if not np.issubdtype(a.dtype, np.integer):
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"samples has dtype {a.dtype}; staleness values must be integers")
        if not np.all(np.isfinite(a)) or np.any(a != np.floor(a)):
            raise ValueError("samples holds non-integer values; staleness values must be integers")
        a = a.astype(np.int64)
    lo = int(a.min())
    if lo < 0:
        raise ValueError(f"samples holds a negative staleness ({lo}); τ must be >= 0")
    minlength = 0
    if tau_max is not None:
        tau_max = int(tau_max)
        hi = int(a.max())
        if hi > tau_max:
            raise ValueError(f"samples holds τ = {hi} above tau_max = {tau_max}")
        minlength = tau_max + 1
    return np.bincount(a, minlength=minlength).astype(np.int64, copy=False)


def as_counts(counts: np.ndarray | Sequence[float], name: str = "counts") -> np.ndarray:
    """Validate a histogram (non-negative, finite, positive total) as float64."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D histogram indexed by τ")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError(f"{name} must hold finite non-negative counts")
    if c.sum() <= 0:
        raise ValueError(f"{name} sums to zero; need at least one observation")
    return c


def trim_zeros(c: np.ndarray) -> np.ndarray:
    """Drop trailing zero bins (they carry no information)."""
    nz = np.flatnonzero(c)
    return c[: nz[-1] + 1]


def pdf(counts: np.ndarray | Sequence[float]) -> np.ndarray:
    """Return the empirical PDF ``p[t] = counts[t] / Σ counts`` (float64)."""
    c = as_counts(counts)
    return c / c.sum()


def cdf(counts: np.ndarray | Sequence[float]) -> np.ndarray:
    """Return the empirical CDF ``F[t] = P[T ≤ t]`` (float64, last entry exactly 1)."""
    c = as_counts(counts)
    f = np.cumsum(c) / c.sum()
    f[-1] = 1.0
    return np.minimum(f, 1.0)


def moments(c: np.ndarray) -> tuple[float, float, float]:
    """Total weight, mean and (population) variance of a histogram."""
    n = float(c.sum())
    t = np.arange(c.size, dtype=np.float64)
    m = float(np.dot(t, c) / n)
    v = float(np.dot((t - m) ** 2, c) / n)
    return n, m, v


def mean(counts: np.ndarray | Sequence[float]) -> float:
    """Mean staleness E[τ] of a histogram."""
    return moments(as_counts(counts))[1]


def variance(counts: np.ndarray | Sequence[float]) -> float:
    """Population variance Var[τ] of a histogram (divides by n, as the MLEs do)."""
    return moments(as_counts(counts))[2]


def dispersion_index(counts: np.ndarray | Sequence[float]) -> float:
    """Variance-to-mean ratio: 1 for Poisson, < 1 under-, > 1 over-dispersed (NaN if mean 0)."""
    _, m, v = moments(as_counts(counts))
    return v / m if m > 0 else float("nan")


def quantiles(counts: np.ndarray | Sequence[float], q: float | Iterable[float]) -> np.ndarray:
    """Quantiles of τ: the smallest t with P[T ≤ t] ≥ q (NumPy's ``inverted_cdf`` method)."""
    qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
    if np.any((qs < 0) | (qs > 1)) or not np.all(np.isfinite(qs)):
        raise ValueError(f"quantile levels must lie in [0, 1], got {qs.tolist()}")
    c = as_counts(counts)
    cum = np.cumsum(c)
    # Compare in count space: q·n ≤ cum[t] avoids rounding at exact boundaries.
    idx = np.searchsorted(cum, qs * cum[-1], side="left")
    first = int(np.flatnonzero(c)[0])
    return np.maximum(np.minimum(idx, c.size - 1), first).astype(np.int64)


@dataclass(frozen=True)
class StalenessSummary:
    """Descriptive statistics of one staleness histogram."""

    n: float
    mean: float
    variance: float
    dispersion: float
    min: int
    max: int
    quantiles: dict[float, int]
    pdf: np.ndarray = field(repr=False)
    cdf: np.ndarray = field(repr=False)

    def as_dict(self) -> dict[str, float]:
        """Flat scalar view for tables and records (``q50``, ``q99`` ... for quantiles)."""
        out: dict[str, float] = {
            "n": self.n,
            "mean": self.mean,
            "variance": self.variance,
            "dispersion": self.dispersion,
            "min": self.min,
            "max": self.max,
        }
        for q, v in self.quantiles.items():
            out[f"q{q * 100:g}"] = v
        return out


def summarize(
    counts: np.ndarray | Sequence[float], q: Iterable[float] = (0.5, 0.9, 0.99)
) -> StalenessSummary:
    """PDF, CDF, mean, variance, dispersion index, range and quantiles of a histogram."""
    c = as_counts(counts)
    n, m, v = moments(c)
    nz = np.flatnonzero(c)
    qs = tuple(float(x) for x in q)
    qv = quantiles(c, qs) if qs else np.empty(0, dtype=np.int64)
    return StalenessSummary(
        n=n,
        mean=m,
        variance=v,
        dispersion=v / m if m > 0 else float("nan"),
        min=int(nz[0]),
        max=int(nz[-1]),
        quantiles={qq: int(vv) for qq, vv in zip(qs, qv, strict=True)},
        pdf=c / n,
        cdf=cdf(c),
    )
