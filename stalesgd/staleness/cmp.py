"""The Conway–Maxwell–Poisson law of staleness, in log space (stable for large means)."""

from __future__ import annotations

import numpy as np

__all__ = [
    "CMP_MAX_SUPPORT",
    "CMP_NATS",
    "cmp_log_normalizer",
    "cmp_logpmf",
    "cmp_moments",
    "cmp_pmf",
    "scipy_special",
]

#: CMP normaliser: terms are summed until they fall this many nats below the
#: largest one (and the geometric tail bound beyond the cut is as small)
CMP_NATS = 40.0
#: largest support the CMP normaliser may span; parameters that need more are
#: treated as infeasible by the optimiser (likelihood -inf)
CMP_MAX_SUPPORT = 4_000_000


def scipy_special():
    """scipy.special, imported on first use: runs that fit no law never load it (~13 MB)."""
    from scipy import special

    return special


def _cmp_terms(log_lam: float, nu: float) -> np.ndarray | None:
    """Log terms ``j·log λ − ν·log j!`` for j = 0..J, J chosen adaptively.

    The terms are log-concave in j (unimodal), so once past the mode and
    ``CMP_NATS`` below the maximum, with the ratio of successive terms below
    one, the remaining tail is bounded by a geometric series; J is doubled
    until that bound is negligible.  Returns None if the support would exceed
    ``CMP_MAX_SUPPORT`` (or the series diverges: ν = 0 with λ ≥ 1).
    """
    if not (np.isfinite(log_lam) and np.isfinite(nu)) or nu < 0:
        return None
    if nu == 0.0 and log_lam >= 0.0:
        return None
    if nu > 0:
        log_mode = log_lam / nu
        if log_mode > np.log(CMP_MAX_SUPPORT):
            return None
        mode = float(np.exp(log_mode)) if log_mode > -700 else 0.0
        sd = float(np.sqrt(max(mode, 1.0) / nu))
        J = int(mode + 12.0 * sd + 32)
        if log_lam < 0.0:
            # Every ratio term[j+1]/term[j] = λ/(j+1)^ν is at most λ < 1, so the
            # terms fall at least geometrically from term[0] = top; this bound
            # is what keeps ν → 0 (the geometric limit) cheap.
            J = min(J, int((CMP_NATS + 8.0) / -log_lam) + 32)
    else:
        J = int(64 + 50.0 / max(-log_lam, 1e-12))
    J = max(J, 16)
    while True:
        if J > CMP_MAX_SUPPORT:
            return None
        j = np.arange(J + 1, dtype=np.float64)
        t = j * log_lam - nu * scipy_special().gammaln(j + 1.0)
        top = t.max()
        log_ratio = log_lam - nu * np.log(J + 1.0)  # log(term[J+1] / term[J])
        if log_ratio < 0:
            # Tail beyond J ≤ term[J] · r / (1 − r).
            log_tail = t[-1] + log_ratio - np.log(-np.expm1(log_ratio))
            if t[-1] < top - CMP_NATS and log_tail < top - CMP_NATS:
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
    return float(scipy_special().logsumexp(t))


def cmp_logpmf(k: np.ndarray | int, log_lam: float, nu: float) -> np.ndarray:
    """log P[T = k] under CMP(λ, ν): k·log λ − ν·log k! − log Z(λ, ν)."""
    kk = np.asarray(k, dtype=np.float64)
    return kk * log_lam - nu * scipy_special().gammaln(kk + 1.0) - cmp_log_normalizer(log_lam, nu)


def cmp_pmf(tau_max: int, log_lam: float, nu: float) -> np.ndarray:
    """CMP probabilities for τ = 0..tau_max (the mass above tau_max is not included)."""
    return np.exp(cmp_logpmf(np.arange(int(tau_max) + 1), log_lam, nu))


def cmp_moments(log_lam: float, nu: float):
    """log Z, E[T], E[log T!] and the covariance of (T, log T!) under CMP, or None."""
    t = _cmp_terms(log_lam, nu)
    if t is None:
        return None
    log_z = scipy_special().logsumexp(t)
    w = np.exp(t - log_z)
    j = np.arange(t.size, dtype=np.float64)
    lf = scipy_special().gammaln(j + 1.0)
    e1 = float(np.dot(w, j))
    e2 = float(np.dot(w, lf))
    d1 = j - e1
    d2 = lf - e2
    v11 = float(np.dot(w, d1 * d1))
    v12 = float(np.dot(w, d1 * d2))
    v22 = float(np.dot(w, d2 * d2))
    return float(log_z), e1, e2, v11, v12, v22
