"""Staleness statistics: PDF(τ) summaries, parametric fits and distances.

Everything here works on a *histogram* of staleness values: ``counts[t]`` is
the number of updates with τ = t (τ ≥ 0 integer).  :func:`histogram` turns raw
τ samples into one (``np.bincount``, fast on 10⁷ samples); every other function
then costs time proportional to the histogram length, not to the number of
samples.  Histograms may also hold float weights (e.g. a PDF): fits then
return the maximum-likelihood parameters of the empirical law, with likelihoods
scaled by the total weight.

Provided (DESIGN §8):

* summaries: :func:`pdf`, :func:`cdf`, :func:`mean`, :func:`variance`,
  :func:`dispersion_index`, :func:`quantiles`, :func:`summarize`;
* maximum-likelihood fits, each with log-likelihood and AIC:
  :func:`fit_geometric`, :func:`fit_poisson`, :func:`fit_cmp`
  (Conway–Maxwell–Poisson, normaliser in log space), :func:`fit_negbin`
  (not applicable to under-dispersed data, reported rather than raised),
  :func:`fit_all` and :func:`best_fit` (lowest AIC);
* distances between two PDFs: :func:`tv_distance`, :func:`ks_test`,
  :func:`wasserstein1`, :func:`distances`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FAMILIES",
    "Fit",
    "PdfDistances",
    "StalenessSummary",
    "best_fit",
    "cdf",
    "cmp_log_normalizer",
    "cmp_logpmf",
    "cmp_pmf",
    "dispersion_index",
    "distances",
    "fit",
    "fit_all",
    "fit_cmp",
    "fit_geometric",
    "fit_negbin",
    "fit_poisson",
    "histogram",
    "ks_test",
    "mean",
    "pdf",
    "quantiles",
    "summarize",
    "tv_distance",
    "variance",
    "wasserstein1",
]

FAMILIES: tuple[str, ...] = ("geometric", "poisson", "cmp", "negbin")

# CMP normaliser: terms are summed until they fall this many nats below the
# largest one (and the geometric tail bound beyond the cut is as small).
_CMP_NATS = 40.0
# Largest support the CMP normaliser may span; parameters that need more are
# treated as infeasible by the optimiser (likelihood -inf).
_CMP_MAX_SUPPORT = 4_000_000


def _special():
    """scipy.special, imported on first use: runs that fit no law never load it (~13 MB)."""
    from scipy import special

    return special


# ----------------------------------------------------------------------------
# Histograms and summaries
# ----------------------------------------------------------------------------


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


def _as_counts(counts: np.ndarray | Sequence[float], name: str = "counts") -> np.ndarray:
    """Validate a histogram (non-negative, finite, positive total) as float64."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D histogram indexed by τ")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError(f"{name} must hold finite non-negative counts")
    if c.sum() <= 0:
        raise ValueError(f"{name} sums to zero; need at least one observation")
    return c


def _trim(c: np.ndarray) -> np.ndarray:
    """Drop trailing zero bins (they carry no information)."""
    nz = np.flatnonzero(c)
    return c[: nz[-1] + 1]


def pdf(counts: np.ndarray | Sequence[float]) -> np.ndarray:
    """Return the empirical PDF ``p[t] = counts[t] / Σ counts`` (float64)."""
    c = _as_counts(counts)
    return c / c.sum()


def cdf(counts: np.ndarray | Sequence[float]) -> np.ndarray:
    """Return the empirical CDF ``F[t] = P[T ≤ t]`` (float64, last entry exactly 1)."""
    c = _as_counts(counts)
    f = np.cumsum(c) / c.sum()
    f[-1] = 1.0
    return np.minimum(f, 1.0)


def _moments(c: np.ndarray) -> tuple[float, float, float]:
    """Total weight, mean and (population) variance of a histogram."""
    n = float(c.sum())
    t = np.arange(c.size, dtype=np.float64)
    m = float(np.dot(t, c) / n)
    v = float(np.dot((t - m) ** 2, c) / n)
    return n, m, v


def mean(counts: np.ndarray | Sequence[float]) -> float:
    """Mean staleness E[τ] of a histogram."""
    return _moments(_as_counts(counts))[1]


def variance(counts: np.ndarray | Sequence[float]) -> float:
    """Population variance Var[τ] of a histogram (divides by n, as the MLEs do)."""
    return _moments(_as_counts(counts))[2]


def dispersion_index(counts: np.ndarray | Sequence[float]) -> float:
    """Variance-to-mean ratio: 1 for Poisson, < 1 under-, > 1 over-dispersed (NaN if mean 0)."""
    _, m, v = _moments(_as_counts(counts))
    return v / m if m > 0 else float("nan")


def quantiles(counts: np.ndarray | Sequence[float], q: float | Iterable[float]) -> np.ndarray:
    """Quantiles of τ: the smallest t with P[T ≤ t] ≥ q (NumPy's ``inverted_cdf`` method)."""
    qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
    if np.any((qs < 0) | (qs > 1)) or not np.all(np.isfinite(qs)):
        raise ValueError(f"quantile levels must lie in [0, 1], got {qs.tolist()}")
    c = _as_counts(counts)
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
    c = _as_counts(counts)
    n, m, v = _moments(c)
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


# ----------------------------------------------------------------------------
# Conway–Maxwell–Poisson in log space
# ----------------------------------------------------------------------------


def _cmp_terms(log_lam: float, nu: float) -> np.ndarray | None:
    """Log terms ``j·log λ − ν·log j!`` for j = 0..J, J chosen adaptively.

    The terms are log-concave in j (unimodal), so once past the mode and
    ``_CMP_NATS`` below the maximum, with the ratio of successive terms below
    one, the remaining tail is bounded by a geometric series; J is doubled
    until that bound is negligible.  Returns None if the support would exceed
    ``_CMP_MAX_SUPPORT`` (or the series diverges: ν = 0 with λ ≥ 1).
    """
    if not (np.isfinite(log_lam) and np.isfinite(nu)) or nu < 0:
        return None
    if nu == 0.0 and log_lam >= 0.0:
        return None
    if nu > 0:
        log_mode = log_lam / nu
        if log_mode > np.log(_CMP_MAX_SUPPORT):
            return None
        mode = float(np.exp(log_mode)) if log_mode > -700 else 0.0
        sd = float(np.sqrt(max(mode, 1.0) / nu))
        J = int(mode + 12.0 * sd + 32)
        if log_lam < 0.0:
            # Every ratio term[j+1]/term[j] = λ/(j+1)^ν is at most λ < 1, so the
            # terms fall at least geometrically from term[0] = top; this bound
            # is what keeps ν → 0 (the geometric limit) cheap.
            J = min(J, int((_CMP_NATS + 8.0) / -log_lam) + 32)
    else:
        J = int(64 + 50.0 / max(-log_lam, 1e-12))
    J = max(J, 16)
    while True:
        if J > _CMP_MAX_SUPPORT:
            return None
        j = np.arange(J + 1, dtype=np.float64)
        t = j * log_lam - nu * _special().gammaln(j + 1.0)
        top = t.max()
        log_ratio = log_lam - nu * np.log(J + 1.0)  # log(term[J+1] / term[J])
        if log_ratio < 0:
            # Tail beyond J ≤ term[J] · r / (1 − r).
            log_tail = t[-1] + log_ratio - np.log(-np.expm1(log_ratio))
            if t[-1] < top - _CMP_NATS and log_tail < top - _CMP_NATS:
                return t
        J *= 2


def cmp_log_normalizer(log_lam: float, nu: float) -> float:
    """log Z(λ, ν) = log Σ_j λ^j / (j!)^ν, computed as a logsumexp over an adaptive support.

    Stable for large means (λ = mean^ν is passed as log λ, so mean τ in the
    hundreds with ν up to 30 and beyond is no problem) and for ν down to 0.1.
    Returns +inf where the series diverges or needs an impractically long support.
    """
    t = _cmp_terms(float(log_lam), float(nu))
    if t is None:
        return float("inf")
    return float(_special().logsumexp(t))


def cmp_logpmf(k: np.ndarray | int, log_lam: float, nu: float) -> np.ndarray:
    """log P[T = k] under CMP(λ, ν): k·log λ − ν·log k! − log Z(λ, ν)."""
    kk = np.asarray(k, dtype=np.float64)
    return kk * log_lam - nu * _special().gammaln(kk + 1.0) - cmp_log_normalizer(log_lam, nu)


def cmp_pmf(tau_max: int, log_lam: float, nu: float) -> np.ndarray:
    """CMP probabilities for τ = 0..tau_max (the mass above tau_max is not included)."""
    return np.exp(cmp_logpmf(np.arange(int(tau_max) + 1), log_lam, nu))


def _cmp_moments(log_lam: float, nu: float):
    """log Z, E[T], E[log T!] and the covariance of (T, log T!) under CMP, or None."""
    t = _cmp_terms(log_lam, nu)
    if t is None:
        return None
    log_z = _special().logsumexp(t)
    w = np.exp(t - log_z)
    j = np.arange(t.size, dtype=np.float64)
    lf = _special().gammaln(j + 1.0)
    e1 = float(np.dot(w, j))
    e2 = float(np.dot(w, lf))
    d1 = j - e1
    d2 = lf - e2
    v11 = float(np.dot(w, d1 * d1))
    v12 = float(np.dot(w, d1 * d2))
    v22 = float(np.dot(w, d2 * d2))
    return float(log_z), e1, e2, v11, v12, v22


# ----------------------------------------------------------------------------
# Fits
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """One maximum-likelihood fit of a staleness histogram.

    ``params`` holds the family's parameters (geometric ``p``; Poisson
    ``lam``; CMP ``lam``, ``log_lam``, ``nu``; negative binomial ``r``, ``p``
    with mean r(1−p)/p); ``stderr`` their asymptotic standard errors where
    computed.  ``loglik`` is the maximised log-likelihood of the whole
    histogram and ``aic = 2k − 2·loglik``.  When the family does not apply
    (e.g. negative binomial on under-dispersed data) ``applicable`` is False,
    ``reason`` says why, and ``loglik``/``aic`` are NaN.
    """

    family: str
    params: dict[str, float]
    loglik: float
    aic: float
    n_params: int
    n: float
    applicable: bool = True
    converged: bool = True
    reason: str = ""
    stderr: dict[str, float] = field(default_factory=dict)

    def logpmf(self, k: np.ndarray | int) -> np.ndarray:
        """Log-probabilities of the fitted law at integer τ values ``k``."""
        from scipy import stats  # deferred: ~70 MB that runs do not need
        if not self.applicable:
            raise ValueError(f"{self.family} fit is not applicable: {self.reason}")
        kk = np.asarray(k, dtype=np.float64)
        p = self.params
        if self.family == "geometric":
            if p["p"] >= 1.0:
                return np.where(kk == 0, 0.0, -np.inf)
            return np.log(p["p"]) + kk * np.log1p(-p["p"])
        if self.family == "poisson":
            return stats.poisson.logpmf(kk, p["lam"])
        if self.family == "cmp":
            return cmp_logpmf(kk, p["log_lam"], p["nu"])
        if self.family == "negbin":
            return stats.nbinom.logpmf(kk, p["r"], p["p"])
        raise ValueError(f"unknown family {self.family!r}")

    def pmf(self, tau_max: int) -> np.ndarray:
        """Probabilities of the fitted law for τ = 0..tau_max."""
        return np.exp(self.logpmf(np.arange(int(tau_max) + 1)))

    def support_max(self, eps: float = 1e-20) -> int:
        """A τ beyond which the fitted law's probabilities are all below ``eps``.

        All four families have tails that decrease at least geometrically past
        the mode, so the mass beyond the returned τ is negligible (the total
        is checked to 1e-12).
        """
        t = 64
        while True:
            f = self.pmf(t)
            if (f[-1] < eps and abs(1.0 - f.sum()) < 1e-12) or t > _CMP_MAX_SUPPORT:
                big = np.flatnonzero(f >= eps)
                return int(big[-1]) + 1 if big.size else t
            t *= 2


def _not_applicable(family: str, k: int, n: float, reason: str) -> Fit:
    nan = float("nan")
    return Fit(family, {}, nan, nan, k, n, applicable=False, converged=False, reason=reason)


def _aic(k: int, loglik: float) -> float:
    return 2.0 * k - 2.0 * loglik


def fit_geometric(counts: np.ndarray | Sequence[float]) -> Fit:
    """Geometric law on {0, 1, ...}: P[T = k] = p(1 − p)^k, MLE p = 1 / (1 + mean).

    The staleness of m workers with exponential compute times is geometric
    with mean m − 1 (DESIGN §6).
    """
    c = _as_counts(counts)
    n, m, _ = _moments(c)
    p = 1.0 / (1.0 + m)
    s1 = m * n
    ll = n * np.log(p) + (s1 * np.log1p(-p) if m > 0 else 0.0)
    se = float(np.sqrt(p * p * (1.0 - p) / n))
    return Fit("geometric", {"p": p}, float(ll), _aic(1, ll), 1, n, stderr={"p": se})


def fit_poisson(counts: np.ndarray | Sequence[float]) -> Fit:
    """Poisson law, MLE λ = mean."""
    c = _trim(_as_counts(counts))
    n, m, _ = _moments(c)
    t = np.arange(c.size, dtype=np.float64)
    s_lf = float(np.dot(c, _special().gammaln(t + 1.0)))
    ll = (m * n * np.log(m) if m > 0 else 0.0) - n * m - s_lf
    return Fit(
        "poisson", {"lam": m}, float(ll), _aic(1, ll), 1, n, stderr={"lam": float(np.sqrt(m / n))}
    )


class _CmpObjective:
    """Mean negative log-likelihood of CMP in u = (log λ, log ν), with exact derivatives."""

    def __init__(self, t1: float, t2: float):
        self.t1 = t1  # mean of T
        self.t2 = t2  # mean of log T!
        self._key: tuple[float, float] | None = None
        self._val = None

    def _eval(self, u: np.ndarray):
        key = (float(u[0]), float(u[1]))
        if key != self._key:
            self._key = key
            log_lam, log_nu = key
            nu = float(np.exp(log_nu)) if log_nu < 700 else float("inf")
            self._val = (nu, _cmp_moments(log_lam, nu))
        return self._val

    def fun(self, u: np.ndarray) -> float:
        nu, mom = self._eval(u)
        if mom is None:
            return float("inf")
        log_z = mom[0]
        return -(u[0] * self.t1 - nu * self.t2 - log_z)

    def jac(self, u: np.ndarray) -> np.ndarray:
        nu, mom = self._eval(u)
        if mom is None:
            return np.zeros(2)
        _, e1, e2, _, _, _ = mom
        g1 = self.t1 - e1  # dℓ/dθ1, θ1 = log λ
        g2 = self.t2 - e2  # dℓ/dθ2, θ2 = −ν
        return -np.array([g1, -nu * g2])

    def hess(self, u: np.ndarray) -> np.ndarray:
        nu, mom = self._eval(u)
        if mom is None:
            return np.eye(2)
        _, _, e2, v11, v12, v22 = mom
        g2 = self.t2 - e2
        h = np.array([[-v11, nu * v12], [nu * v12, -nu * nu * v22 - nu * g2]])
        return -h


def fit_cmp(counts: np.ndarray | Sequence[float]) -> Fit:
    """Conway–Maxwell–Poisson law P[T = k] ∝ λ^k / (k!)^ν, by maximum likelihood.

    ν < 1 is over-dispersed (ν → 0 with λ < 1 is geometric), ν = 1 Poisson,
    ν > 1 under-dispersed.  The likelihood depends on the data only through
    n, Σ k and Σ log k! (read off the histogram).  It is maximised over
    (log λ, log ν) with ``scipy.optimize.minimize(method="trust-exact")`` and
    exact gradient and Hessian (the moments of (T, log T!) under the current
    law), starting from the moment approximations ν₀ ≈ mean/variance and
    λ₀ ≈ (mean + (ν₀ − 1)/(2ν₀))^ν₀.  Standard errors come from the Fisher
    information.  Not applicable when the histogram has a single support
    point (the MLE is at ν = ∞).
    """
    from scipy import optimize
    c = _trim(_as_counts(counts))
    n, m, v = _moments(c)
    if np.count_nonzero(c) < 2:
        return _not_applicable(
            "cmp", 2, n, "all observations share one value (variance 0): the MLE has ν = ∞"
        )
    t = np.arange(c.size, dtype=np.float64)
    t1 = m
    t2 = float(np.dot(c, _special().gammaln(t + 1.0)) / n)
    obj = _CmpObjective(t1, t2)

    starts = []
    nu0 = float(np.clip(m / v, 0.05, 60.0))
    for nu_s in (nu0, 1.0):
        lam_base = max(m + (nu_s - 1.0) / (2.0 * nu_s), 0.5 * m)
        starts.append(np.array([nu_s * np.log(lam_base), np.log(nu_s)]))
    best = None
    for x0 in starts:
        if not np.isfinite(obj.fun(x0)):
            continue
        res = optimize.minimize(
            obj.fun,
            x0,
            jac=obj.jac,
            hess=obj.hess,
            method="trust-exact",
            options={"gtol": 1e-9, "maxiter": 500},
        )
        if best is None or res.fun < best.fun:
            best = res
        if res.success:
            break
    if best is None:
        return _not_applicable("cmp", 2, n, "no feasible starting point for the CMP likelihood")
    log_lam, log_nu = (float(x) for x in best.x)
    nu = float(np.exp(log_nu))
    ll = -float(best.fun) * n
    # Fisher information in (log λ, ν): n · Cov(T, −log T!).
    mom = _cmp_moments(log_lam, nu)
    stderr: dict[str, float] = {}
    if mom is not None:
        _, _, _, v11, v12, v22 = mom
        info = n * np.array([[v11, -v12], [-v12, v22]])
        try:
            cov = np.linalg.inv(info)
            stderr = {"log_lam": float(np.sqrt(cov[0, 0])), "nu": float(np.sqrt(cov[1, 1]))}
        except np.linalg.LinAlgError:
            stderr = {}
    # Trust-region methods may stop at the precision limit with "failure to
    # predict improvement"; judge convergence by the Newton decrement g·H⁻¹g
    # (the predicted gain in mean log-likelihood), which is scale-free.
    g = obj.jac(best.x)
    try:
        decrement = float(g @ np.linalg.solve(obj.hess(best.x), g))
    except np.linalg.LinAlgError:
        decrement = float("inf")
    # f is a difference of terms of size |log λ|·E[T] + ν·E[log T!]; it is only
    # resolved to ~1e-16 of that, so the decrement cannot go much lower.
    scale = abs(log_lam) * t1 + nu * t2
    converged = bool(best.success) or abs(decrement) < max(1e-12, 1e-14 * scale)
    return Fit(
        "cmp",
        {"lam": float(np.exp(log_lam)), "log_lam": log_lam, "nu": nu},
        ll,
        _aic(2, ll),
        2,
        n,
        converged=converged,
        reason="" if converged else f"optimiser: {best.message}",
        stderr=stderr,
    )


def fit_negbin(counts: np.ndarray | Sequence[float]) -> Fit:
    """Negative binomial law (r > 0 failures, success probability p), by maximum likelihood.

    P[T = k] = Γ(k + r) / (Γ(r) k!) · p^r (1 − p)^k, mean r(1 − p)/p.  For
    fixed r the MLE is p = r / (r + mean); r maximises the profile likelihood
    (root of its derivative, found by ``scipy.optimize.brentq`` on log r).
    The MLE exists only for over-dispersed data (variance > mean); otherwise
    the fit is returned as not applicable (the law tends to Poisson as r → ∞).
    """
    from scipy import optimize, stats
    c = _trim(_as_counts(counts))
    n, m, v = _moments(c)
    if not v > m * (1.0 + 1e-12) or m <= 0:
        return _not_applicable(
            "negbin",
            2,
            n,
            f"not over-dispersed (variance {v:.6g} <= mean {m:.6g}): the MLE does not exist",
        )
    nz = np.flatnonzero(c)
    k = nz.astype(np.float64)
    w = c[nz]

    def dprofile(log_r: float) -> float:
        r = np.exp(log_r)
        return float(
            np.dot(w, _special().digamma(k + r) - _special().digamma(r)) / n + np.log(r / (r + m))
        )

    # Moment estimate r = m² / (v − m) is a good bracket centre.
    r0 = m * m / (v - m)
    lo, hi = np.log(r0) - 2.0, np.log(r0) + 2.0
    for _ in range(200):
        if dprofile(lo) > 0:
            break
        lo -= 2.0
    for _ in range(200):
        if dprofile(hi) < 0:
            break
        hi += 2.0
    if not (dprofile(lo) > 0 > dprofile(hi)):
        return _not_applicable("negbin", 2, n, "profile likelihood has no interior maximum")
    log_r = optimize.brentq(dprofile, lo, hi, xtol=1e-13, rtol=1e-13, maxiter=500)
    r = float(np.exp(log_r))
    p = r / (r + m)
    ll = float(np.dot(w, stats.nbinom.logpmf(k, r, p)))
    return Fit("negbin", {"r": r, "p": p, "mean": m}, ll, _aic(2, ll), 2, n)


_FITTERS = {
    "geometric": fit_geometric,
    "poisson": fit_poisson,
    "cmp": fit_cmp,
    "negbin": fit_negbin,
}


def fit(counts: np.ndarray | Sequence[float], family: str) -> Fit:
    """Fit one family by name (one of :data:`FAMILIES`)."""
    try:
        fn = _FITTERS[family]
    except KeyError:
        raise ValueError(
            f"family {family!r} is not allowed; choose one of {', '.join(FAMILIES)}"
        ) from None
    return fn(counts)


def fit_all(
    counts: np.ndarray | Sequence[float], families: Iterable[str] = FAMILIES
) -> dict[str, Fit]:
    """Fit every family in ``families``; non-applicable ones come back with ``applicable=False``."""
    c = _as_counts(counts)
    return {f: fit(c, f) for f in families}


def best_fit(fits: dict[str, Fit] | Iterable[Fit]) -> Fit:
    """The applicable fit with the lowest AIC."""
    items = list(fits.values()) if isinstance(fits, dict) else list(fits)
    ok = [f for f in items if f.applicable and np.isfinite(f.aic)]
    if not ok:
        raise ValueError("no applicable fit to choose from")
    return min(ok, key=lambda f: f.aic)


# ----------------------------------------------------------------------------
# Distances between two PDFs
# ----------------------------------------------------------------------------


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
    a = _as_counts(p, "p")
    b = _as_counts(q, "q")
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
