"""Maximum-likelihood fits of staleness histograms: geometric, Poisson, Conway–Maxwell–Poisson
and negative binomial, each with its log-likelihood and AIC."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .cmp import CMP_MAX_SUPPORT, cmp_logpmf, cmp_moments, scipy_special
from .histograms import as_counts, moments, trim_zeros

__all__ = [
    "FAMILIES",
    "Fit",
    "best_fit",
    "fit",
    "fit_all",
    "fit_cmp",
    "fit_geometric",
    "fit_negbin",
    "fit_poisson",
]

FAMILIES: tuple[str, ...] = ("geometric", "poisson", "cmp", "negbin")


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
            if (f[-1] < eps and abs(1.0 - f.sum()) < 1e-12) or t > CMP_MAX_SUPPORT:
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
    c = as_counts(counts)
    n, m, _ = moments(c)
    p = 1.0 / (1.0 + m)
    s1 = m * n
    ll = n * np.log(p) + (s1 * np.log1p(-p) if m > 0 else 0.0)
    se = float(np.sqrt(p * p * (1.0 - p) / n))
    return Fit("geometric", {"p": p}, float(ll), _aic(1, ll), 1, n, stderr={"p": se})


def fit_poisson(counts: np.ndarray | Sequence[float]) -> Fit:
    """Poisson law, MLE λ = mean."""
    c = trim_zeros(as_counts(counts))
    n, m, _ = moments(c)
    t = np.arange(c.size, dtype=np.float64)
    s_lf = float(np.dot(c, scipy_special().gammaln(t + 1.0)))
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
            self._val = (nu, cmp_moments(log_lam, nu))
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
    c = trim_zeros(as_counts(counts))
    n, m, v = moments(c)
    if np.count_nonzero(c) < 2:
        return _not_applicable(
            "cmp", 2, n, "all observations share one value (variance 0): the MLE has ν = ∞"
        )
    t = np.arange(c.size, dtype=np.float64)
    t1 = m
    t2 = float(np.dot(c, scipy_special().gammaln(t + 1.0)) / n)
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
    mom = cmp_moments(log_lam, nu)
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
    c = trim_zeros(as_counts(counts))
    n, m, v = moments(c)
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

    digamma = scipy_special().digamma

    def dprofile(log_r: float) -> float:
        r = np.exp(log_r)
        return float(np.dot(w, digamma(k + r) - digamma(r)) / n + np.log(r / (r + m)))

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
    c = as_counts(counts)
    return {f: fit(c, f) for f in families}


def best_fit(fits: dict[str, Fit] | Iterable[Fit]) -> Fit:
    """The applicable fit with the lowest AIC."""
    items = list(fits.values()) if isinstance(fits, dict) else list(fits)
    ok = [f for f in items if f.applicable and np.isfinite(f.aic)]
    if not ok:
        raise ValueError("no applicable fit to choose from")
    return min(ok, key=lambda f: f.aic)
