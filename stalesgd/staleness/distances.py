"""Distances between two staleness PDFs: total variation, Kolmogorov–Smirnov, Wasserstein-1."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .histograms import as_counts

__all__ = [
    "PdfDistances",
    "distances",
    "ks_test",
    "tv_distance",
    "tv_sampling_floor",
    "wasserstein1",
]


@dataclass(frozen=True)
class PdfDistances:
    """Distances between two staleness laws P and Q on {0, 1, ...}.

    ``tv`` = ½ Σ|p − q|; ``ks`` = max |F_P − F_Q| with its p-value
    ``ks_pvalue`` (NaN when no sample size is known); ``w1`` = Σ |F_P − F_Q|
    (Wasserstein-1 with unit spacing, in units of τ).
    """

    tv: float
    ks: float
    ks_pvalue: float
    w1: float

    def as_dict(self) -> dict[str, float]:
        """Plain dict view for tables."""
        return {"tv": self.tv, "ks": self.ks, "ks_pvalue": self.ks_pvalue, "w1": self.w1}


def _sample_size(x: np.ndarray, n: float | None) -> float | None:
    if n is not None:
        if not n > 0:
            raise ValueError(f"sample size must be positive, got {n!r}")
        return float(n)
    if np.issubdtype(x.dtype, np.integer):
        return float(x.sum())
    return None


def _pair(p, q) -> tuple[np.ndarray, np.ndarray]:
    a = as_counts(p, "p")
    b = as_counts(q, "q")
    size = max(a.size, b.size)
    pa = np.zeros(size)
    pb = np.zeros(size)
    pa[: a.size] = a / a.sum()
    pb[: b.size] = b / b.sum()
    return pa, pb


def tv_distance(p: np.ndarray | Sequence[float], q: np.ndarray | Sequence[float]) -> float:
    """Total-variation distance ½ Σ_t |p_t − q_t| (inputs are normalised; lengths may differ)."""
    a, b = _pair(p, q)
    return float(0.5 * np.abs(a - b).sum())


def wasserstein1(p: np.ndarray | Sequence[float], q: np.ndarray | Sequence[float]) -> float:
    """Wasserstein-1 (earth mover's) distance Σ_t |F_P(t) − F_Q(t)| between laws on integers."""
    a, b = _pair(p, q)
    return float(np.abs(np.cumsum(a) - np.cumsum(b)).sum())


def ks_test(
    p: np.ndarray | Sequence[float],
    q: np.ndarray | Sequence[float],
    *,
    n_p: float | None = None,
    n_q: float | None = None,
) -> tuple[float, float]:
    """Kolmogorov–Smirnov statistic max_t |F_P(t) − F_Q(t)| and its p-value.

    Sample sizes come from ``n_p``/``n_q`` or, for integer histograms, their
    totals.  With both known this is the two-sample test (effective size
    n·m/(n+m), as ``scipy.stats.ks_2samp``'s asymptotic mode); with one, a
    one-sample test of that sample against the other law taken as exact; with
    none the p-value is NaN.  τ is discrete, so the p-value is conservative
    (larger than exact) — read it as a screening tool, not an exact test.
    """
    from scipy import stats
    a_raw, b_raw = np.asarray(p), np.asarray(q)
    na = _sample_size(a_raw, n_p)
    nb = _sample_size(b_raw, n_q)
    a, b = _pair(a_raw, b_raw)
    d = float(np.abs(np.cumsum(a) - np.cumsum(b)).max())
    d = min(d, 1.0)
    if na is not None and nb is not None:
        en = na * nb / (na + nb)
    elif na is not None or nb is not None:
        en = na if na is not None else nb
    else:
        return d, float("nan")
    en = max(1, int(round(en)))
    return d, float(stats.kstwo.sf(d, en))


def distances(
    p: np.ndarray | Sequence[float],
    q: np.ndarray | Sequence[float],
    *,
    n_p: float | None = None,
    n_q: float | None = None,
) -> PdfDistances:
    """Total variation, Kolmogorov–Smirnov (with p-value) and Wasserstein-1 between two laws.

    ``p`` and ``q`` are histograms or PDFs over τ = 0, 1, ... (lengths may
    differ; each is normalised).  See :func:`ks_test` for the sample sizes.
    """
    ks, pv = ks_test(p, q, n_p=n_p, n_q=n_q)
    return PdfDistances(tv=tv_distance(p, q), ks=ks, ks_pvalue=pv, w1=wasserstein1(p, q))


def tv_sampling_floor(counts: np.ndarray | Sequence[float], n_other: int, *,
                      n_self: int | None = None, draws: int = 200, seed: int = 0) -> float:
    """The total variation two samples show by chance alone: the median TV between a sample
    of ``n_self`` values (default: ``sum(counts)``, which must then be a whole number) and
    one of ``n_other`` values, both drawn (i.i.d.) from the law of the histogram ``counts``.

    A simulated PDF(τ) that lies this far from a measured one of these sample sizes cannot
    be told apart from it: a few hundred updates spread over ten values of τ show a TV of
    about 0.1 between two samples of one law.  It is a median: a TV up to about twice it is
    still consistent with chance.  Successive τ of a run are correlated, so real samples vary
    more than i.i.d. ones: this is a lower bound on the noise."""
    c = as_counts(counts)
    total = float(c.sum())
    if n_self is None:
        if abs(total - round(total)) > 1e-6:
            raise ValueError(f"counts sum to {total:g}, not a whole number of samples: give "
                             "n_self, the size of the sample the histogram stands for")
        n_self = int(round(total))
    if int(n_self) < 1 or int(n_other) < 1:
        raise ValueError(f"both samples need at least one value (got {n_self} and {n_other})")
    if int(draws) < 1:
        raise ValueError(f"draws {draws!r} must be >= 1")
    p = c[c > 0] / total  # (empty values of τ are never drawn: leaving them out is exact)
    a, b = int(n_self), min(int(n_other), 10**15)
    rng = np.random.default_rng(seed)
    tvs = [0.5 * float(np.abs(rng.multinomial(a, p) / a - rng.multinomial(b, p) / b).sum())
           for _ in range(int(draws))]
    return float(np.median(tvs))
