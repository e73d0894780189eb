"""Published convergence bounds for asynchronous SGD as envelopes, and a checker (DESIGN §8).

Each bound is a function ``bound(t, **constants) -> np.ndarray`` of the step count ``t`` that
returns the envelope on one named quantity (its ``quantity`` attribute):

``"gap"``        E[f(θ_t)] − f* on the training objective;
``"avg_grad2"``  (1/t)·Σ_{k<t} E‖∇f(θ_k)‖² (running average from the start, θ_0 … θ_{t−1});
                 NaN/inf at t = 0 where the bound says nothing.

:func:`observed` turns a :class:`~stalesgd.analysis.theory.TheoryCurve` (with every step
evaluated) into the matching quantity; :func:`check_envelope` reports whether a curve ever
crossed the envelope and how loose the envelope is.

Problem constants for least squares (``f = ½·mean (xᵀθ − y)²``, minibatch of b rows with
replacement): ``L``, ``mu`` (extreme eigenvalues of H), ``F0 = f(θ_0) − f*``, ``D0 = ‖θ_0 −
θ*‖²``.  The published theorems assume a **bounded gradient** (Hogwild!: ‖G‖ ≤ M a.s.) or a
**uniformly bounded variance** σ² (Lian et al.); on least squares neither holds globally (the
noise grows with ‖θ − θ*‖).  :func:`lstsq_constants` therefore gives M² and σ² over a ball
‖θ − θ*‖ ≤ R, and the envelopes are valid only conditionally on the iterates staying in it
(pick R from the observed/expected trajectory; this is the main caveat of every check).

Where the statements come from: **none of them was checked against the paper's text.** They
were transcribed from memory of the papers (the reference corpus at hand held abstracts only).
The Hogwild! and Lian et al. forms are the classical, widely quoted ones; for Koloskova et al.
(2022) and Mishchenko et al. (2022) only the *shape* of the rate and of the step-size
condition come from the abstracts, their numerical constants are our recollection and are
parameters you can override.  Every bound carries its ``reference`` (paper and theorem) and
its ``source`` (where its statement and constants come from, :data:`FROM_MEMORY` or
:data:`SHAPE_FROM_ABSTRACT`), which reports print beside every check.  So a curve below an
envelope is consistent with the bound, not a verification of it; a crossing is a reason to
check the statement and the constants first, not evidence of a bug in the simulator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .theory import LstsqMoments, TheoryCurve

__all__ = [
    "BOUNDS",
    "FROM_MEMORY",
    "SHAPE_FROM_ABSTRACT",
    "EnvelopeCheck",
    "LstsqConstants",
    "check_envelope",
    "hogwild_niu2011",
    "koloskova2022",
    "lian2015",
    "lstsq_constants",
    "mishchenko2022",
    "observed",
]

QUANTITIES = ("gap", "avg_grad2")
#: a bound whose statement and constants were written down from memory of the paper
FROM_MEMORY = "transcribed from memory, not checked against the paper"
#: a bound whose rate shape and step-size condition are the abstract's, constants recalled
SHAPE_FROM_ABSTRACT = ("rate shape and step-size condition from the paper's abstract; constants "
                       "recalled from memory, not checked against the paper")


# ----------------------------------------------------------------------------- validation


def _pos(name: str, v: Any, *, zero_ok: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        raise ValueError(f"{name}={v!r} is not allowed; must be a number")
    x = float(v)
    if not math.isfinite(x) or x < 0 or (x == 0 and not zero_ok):
        raise ValueError(f"{name}={v!r} is not allowed; must be finite and "
                         f"{'>= 0' if zero_ok else '> 0'}")
    return x


def _steps(t: Any) -> np.ndarray:
    ts = np.asarray(t, dtype=np.float64)
    if ts.ndim > 1 or ts.size == 0 or not np.all(np.isfinite(ts)) or np.any(ts < 0):
        raise ValueError("t must be a non-empty scalar or 1-D array of steps >= 0")
    return np.atleast_1d(ts)


def _bound(quantity: str, reference: str, source: str
           ) -> Callable[[Callable[..., np.ndarray]], Callable[..., np.ndarray]]:
    """Label a bound with the quantity it bounds, its paper and theorem, and where its
    statement and constants come from."""
    def deco(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        fn.quantity = quantity  # type: ignore[attr-defined]
        fn.reference = reference  # type: ignore[attr-defined]
        fn.source = source  # type: ignore[attr-defined]
        return fn
    return deco


# ----------------------------------------------------------------------------- constants


@dataclass(frozen=True)
class LstsqConstants:
    """Constants of a least-squares problem for the bounds (see module docstring).

    ``L``, ``mu``: extreme eigenvalues of H; ``F0``, ``D0``: initial gap and squared distance;
    ``sigma2_star``: minibatch gradient variance at θ*; ``sigma2``: a bound on the minibatch
    variance over ‖θ − θ*‖ ≤ ``radius``; ``M2``: a bound on ‖g‖² for any minibatch there.
    """

    L: float
    mu: float
    F0: float
    D0: float
    sigma2_star: float
    sigma2: float
    M2: float
    radius: float


def lstsq_constants(X: np.ndarray, y: np.ndarray, theta0: np.ndarray, *, batch: int,
                    radius: float | None = None,
                    moments: LstsqMoments | None = None) -> LstsqConstants:
    """L, μ, F0, D0, σ² and M² of least squares on rows ``X``, ``y`` for minibatches of ``batch``.

    Per row, ‖x(xᵀθ − y)‖ ≤ ‖x‖²·R + |r|·‖x‖ on ‖θ − θ*‖ ≤ R (r the residual at θ*), so
    ``M2 = max_i (‖x_i‖²R + |r_i|‖x_i‖)²`` bounds ‖g‖² of any minibatch mean and
    ``sigma2 = mean_i (‖x_i‖²R + |r_i|‖x_i‖)² / batch`` bounds its variance
    (Var ≤ E‖g_row‖²/b).  ``radius`` defaults to ‖θ_0 − θ*‖.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or y.shape != (X.shape[0],) or X.shape[0] == 0:
        raise ValueError(f"X must be (n, d) and y (n,); got {X.shape} and {y.shape}")
    b = int(batch)
    if isinstance(batch, bool) or b != batch or b < 1:
        raise ValueError(f"batch={batch!r} is not allowed; must be an integer >= 1")
    theta0 = np.asarray(theta0, dtype=np.float64)
    if theta0.shape != (X.shape[1],):
        raise ValueError(f"theta0 must have shape ({X.shape[1]},); got {theta0.shape}")
    theta_star = (np.linalg.lstsq(X, y, rcond=None)[0] if moments is None
                  else moments.theta_star)
    lam = np.linalg.eigvalsh(X.T @ X / X.shape[0])
    r = X @ theta_star - y
    e0 = theta0 - theta_star
    D0 = float(e0 @ e0)
    R = math.sqrt(D0) if radius is None else _pos("radius", radius, zero_ok=True)
    xn = np.sqrt(np.sum(X * X, axis=1))
    row = xn * xn * R + np.abs(r) * xn
    re = X @ e0
    return LstsqConstants(
        L=float(lam[-1]), mu=float(max(lam[0], 0.0)), F0=float(0.5 * np.mean(re * re)), D0=D0,
        sigma2_star=float(np.mean((r * xn) ** 2) / b), sigma2=float(np.mean(row**2) / b),
        M2=float(np.max(row) ** 2), radius=float(R))


# ----------------------------------------------------------------------------- the bounds


@_bound("gap", "Niu et al. 2011, Prop. 4.1", FROM_MEMORY)
def hogwild_niu2011(t: Any, *, L: float, mu: float, M2: float, D0: float, tau_max: int,
                    gamma: float, Omega: float, rho: float = 1.0,
                    Delta: float = 1.0) -> np.ndarray:
    """Hogwild! envelope on E[f(θ_t)] − f* (Niu, Recht, Ré, Wright, NIPS 2011, Proposition 4.1).

    Statement used: with lag ≤ τ, ``γ = ϑεc / (2LM²Ω(1 + 6ρτ + 4τ²ΩΔ^½))`` for some ε > 0,
    ϑ ∈ (0, 1), and ``k ≥ 2LM²Ω(1 + 6τρ + 6τ²ΩΔ^½)·log(L·D0/ε) / (c²ϑε)``, one has
    E[f(x_k) − f*] ≤ ε (c = μ the strong-convexity modulus, M ≥ ‖G_e‖ a.s., Ω the largest
    hyperedge, ρ and Δ the sparsity constants; the 4 vs 6 asymmetry is the paper's).
    For a *given* γ, write A = 2LM²Ω(1 + 6ρτ + 4τ²ΩΔ^½), B = the same with 6τ²: each
    ϑ ∈ (0,1) gives ε = γA/(ϑμ), valid from k = (B/(μγA))·log(L·D0/ε).  Taking the best ϑ at
    every t gives the envelope used here:

        gap(t) ≤ max( γA/μ ,  L·D0·exp(−μγ(A/B)·t) ).

    Least squares is dense: use Ω = d, ρ = Δ = 1 (the defaults for ρ, Δ).  M² must bound
    ‖g‖² a.s. along the run, which least squares does not guarantee (see
    :func:`lstsq_constants`).  The model is one update per step with lag ≤ ``tau_max``; the
    simulator's reads are consistent, a special case of Hogwild!'s.
    """
    ts = _steps(t)
    L, mu, M2 = _pos("L", L), _pos("mu", mu), _pos("M2", M2)
    D0, gamma = _pos("D0", D0, zero_ok=True), _pos("gamma", gamma)
    Omega, rho, Delta = _pos("Omega", Omega), _pos("rho", rho, zero_ok=True), \
        _pos("Delta", Delta, zero_ok=True)
    tau = _pos("tau_max", tau_max, zero_ok=True)
    A = 2 * L * M2 * Omega * (1 + 6 * rho * tau + 4 * tau**2 * Omega * math.sqrt(Delta))
    B = 2 * L * M2 * Omega * (1 + 6 * rho * tau + 6 * tau**2 * Omega * math.sqrt(Delta))
    floor = gamma * A / mu
    return np.maximum(floor, L * D0 * np.exp(-mu * gamma * (A / B) * ts))


@_bound("avg_grad2", "Lian et al. 2015, Thm. 1", FROM_MEMORY)
def lian2015(t: Any, *, L: float, sigma2: float, F0: float, tau_max: int,
             gamma: float) -> np.ndarray:
    """Lian, Huang, Li, Liu (NIPS 2015), Theorem 1 (AsySG-con) with a constant step, M = 1.

    Statement used (non-convex, L-smooth, unbiased gradients with variance ≤ σ², delay ≤ T,
    update x ← x − γ·G with one stochastic gradient per update): if
    ``Lγ + 2L²T²γ² ≤ 1`` then

        (1/K)·Σ_{k=1..K} E‖∇f(x_k)‖² ≤ 2(f(x_1) − f*)/(Kγ) + σ²Lγ + 2σ²L²Tγ²

    (the theorem's weighted form with γ_k ≡ γ; its Σ_{j=k−T}^{k−1} γ_j² term is bounded by
    Tγ²).  x_1 is our θ_0, so K = t averages θ_0 … θ_{t−1}.  For least squares, σ² must bound
    the minibatch variance along the run (see :func:`lstsq_constants`).  Raises ValueError if
    the step-size condition fails.  For a strongly convex f, ‖∇f‖² ≥ 2μ(f − f*) turns this
    into a bound on the average gap (divide by 2μ).
    """
    ts = _steps(t)
    L, sigma2, F0 = _pos("L", L), _pos("sigma2", sigma2, zero_ok=True), _pos("F0", F0, zero_ok=True)
    T, gamma = _pos("tau_max", tau_max, zero_ok=True), _pos("gamma", gamma)
    cond = L * gamma + 2 * L**2 * T**2 * gamma**2
    if cond > 1:
        raise ValueError(f"gamma={gamma!r} violates Lian et al.'s condition Lγ + 2L²T²γ² ≤ 1 "
                         f"(got {cond:.4g} with L={L:.4g}, T={T:g})")
    with np.errstate(divide="ignore"):
        out = 2 * F0 / (ts * gamma) + sigma2 * L * gamma + 2 * sigma2 * L**2 * T * gamma**2
    return np.where(ts > 0, out, np.inf)


@_bound("avg_grad2", "Koloskova et al. 2022", SHAPE_FROM_ABSTRACT)
def koloskova2022(t: Any, *, L: float, sigma2: float, F0: float, tau_max: int, tau_c: int,
                  gamma: float, c_f: float = 4.0, c_s: float = 2.0,
                  c_step: float = 4.0) -> np.ndarray:
    """Koloskova, Stich, Jaggi (NeurIPS 2022), constant-step AsyncSGD, non-convex — UNVERIFIED.

    What is certain (the paper's abstract, NeurIPS 2022 and arXiv 2206.08307): constant-step
    AsyncSGD reaches ``(1/T)Σ E‖∇f(x_t)‖² ≤ ε`` after O(σ²ε⁻² + √(τ_max·τ_avg)·ε⁻¹) steps,
    τ_avg the *average* delay.  What is not: the theorem's exact step-size condition and
    constants.  We use a rate ``c_f·F0/(γT) + c_s·γLσ²`` under ``γ ≤ 1/(c_step·L·√(τ_max
    τ_C))`` with τ_C the concurrency (gradients in flight, ≤ the number of workers), which is
    our recollection of the theorem: (c_f, c_s, c_step) = (4, 2, 4) and the use of τ_C rather
    than τ_avg in the condition are **not checked against the paper**
    (``source = SHAPE_FROM_ABSTRACT``).  For the i.i.d. staleness simulator, τ_C is not a
    property of the model: every gradient read at or before step k and applied later is "in
    flight", so τ_C ≤ τ_max + 1 is the safe choice.  Raises ValueError if the step-size
    condition fails.
    """
    ts = _steps(t)
    L, sigma2, F0 = _pos("L", L), _pos("sigma2", sigma2, zero_ok=True), _pos("F0", F0, zero_ok=True)
    tmax, tc, gamma = _pos("tau_max", tau_max, zero_ok=True), _pos("tau_c", tau_c), \
        _pos("gamma", gamma)
    c_f, c_s, c_step = _pos("c_f", c_f), _pos("c_s", c_s), _pos("c_step", c_step)
    limit = 1.0 / (c_step * L * math.sqrt(max(tmax, 1.0) * tc))
    if gamma > limit:
        raise ValueError(f"gamma={gamma!r} exceeds the step-size condition "
                         f"γ ≤ 1/({c_step:g}·L·√(τ_max·τ_C)) = {limit:.4g}")
    with np.errstate(divide="ignore"):
        out = c_f * F0 / (ts * gamma) + c_s * gamma * L * sigma2
    return np.where(ts > 0, out, np.inf)



@_bound("avg_grad2", "Mishchenko et al. 2022", SHAPE_FROM_ABSTRACT)
def mishchenko2022(t: Any, *, L: float, sigma2: float, F0: float, workers: int, gamma: float,
                   c_f: float = 4.0, c_s: float = 2.0, c_step: float = 4.0) -> np.ndarray:
    """Mishchenko, Bach, Even, Woodworth (NeurIPS 2022), non-convex, any delays — UNVERIFIED.

    What is certain (from the abstract): the guarantee of asynchronous SGD with n workers
    does not depend on the delays, only on n, with a step size ``γ ≤ 1/(c_step·n·L)``
    (delay-adaptive step sizes, ``delay-adaptive`` in :mod:`stalesgd.stepsize`, extend it);
    the rate has the form ``c_f·F0/(γK) + c_s·γLσ²``.  The constants (4, 2, 4) are our
    recollection, **not checked against the paper** (``source = SHAPE_FROM_ABSTRACT``).  For
    the i.i.d. staleness simulator use ``workers = τ_max + 1`` (the most gradients that can
    be in flight).  Raises ValueError if the step-size condition fails.
    """
    ts = _steps(t)
    L, sigma2, F0 = _pos("L", L), _pos("sigma2", sigma2, zero_ok=True), _pos("F0", F0, zero_ok=True)
    n, gamma = _pos("workers", workers), _pos("gamma", gamma)
    c_f, c_s, c_step = _pos("c_f", c_f), _pos("c_s", c_s), _pos("c_step", c_step)
    limit = 1.0 / (c_step * n * L)
    if gamma > limit:
        raise ValueError(f"gamma={gamma!r} exceeds the step-size condition "
                         f"γ ≤ 1/({c_step:g}·n·L) = {limit:.4g}")
    with np.errstate(divide="ignore"):
        out = c_f * F0 / (ts * gamma) + c_s * gamma * L * sigma2
    return np.where(ts > 0, out, np.inf)


#: every bound by short name
BOUNDS: dict[str, Callable[..., np.ndarray]] = {
    "hogwild": hogwild_niu2011,
    "lian": lian2015,
    "koloskova": koloskova2022,
    "mishchenko": mishchenko2022,
}


# ----------------------------------------------------------------------------- checking


def observed(curve: TheoryCurve, quantity: str) -> tuple[np.ndarray, np.ndarray]:
    """(t, values) of ``quantity`` from an exact curve (see the module docstring).

    ``"gap"`` uses ``train_gap`` at the curve's steps.  ``"avg_grad2"`` needs every step
    0..t_max (``eval_at=None``) and returns (1/t)Σ_{k<t} E‖∇f(θ_k)‖² for t = 1..t_max.
    """
    if quantity == "gap":
        return curve.t.copy(), curve.train_gap.copy()
    if quantity == "avg_grad2":
        t = curve.t
        if not np.array_equal(t, np.arange(t.size)):
            raise ValueError("avg_grad2 needs the curve at every step 0..t (eval_at=None)")
        if t.size < 2:
            raise ValueError("avg_grad2 needs at least one update")
        avg = np.cumsum(curve.grad2)[:-1] / np.arange(1, t.size)
        return t[1:].copy(), avg
    raise ValueError(f"quantity={quantity!r} is not allowed; use one of {QUANTITIES}")


@dataclass(frozen=True)
class EnvelopeCheck:
    """Outcome of :func:`check_envelope`.

    ``crossed``: the curve exceeded the envelope somewhere (``first_cross_t`` the first such
    t, else None); ``ratio_end``: envelope/curve at the last point; ``min_ratio`` and
    ``median_ratio``: the minimum (< 1 iff crossed) and median of envelope/curve over the
    ``points`` checked steps (where the envelope claims something and both are positive).
    """

    crossed: bool
    first_cross_t: float | None
    ratio_end: float
    min_ratio: float
    median_ratio: float
    points: int
    quantity: str


def check_envelope(curve_t: Any, curve_values: Any, bound_fn: Callable[..., np.ndarray],
                   *, rtol: float = 1e-9, **constants: Any) -> EnvelopeCheck:
    """Compare a curve of ``bound_fn.quantity`` with ``bound_fn(curve_t, **constants)``.

    A point counts as crossing when ``value > envelope·(1 + rtol)``.  Points where the
    envelope is infinite (no claim) are skipped in the ratios.
    """
    t = _steps(curve_t)
    v = np.asarray(curve_values, dtype=np.float64).reshape(-1)
    if v.shape != t.shape:
        raise ValueError(f"curve_values has shape {v.shape}, curve_t has {t.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("curve_values must be finite (a diverged curve has no envelope check)")
    env = np.asarray(bound_fn(t, **constants), dtype=np.float64)
    claim = np.isfinite(env)
    over = claim & (v > env * (1.0 + float(rtol)))
    first = float(t[np.flatnonzero(over)[0]]) if over.any() else None
    ok = claim & (v > 0) & (env > 0)
    ratios = env[ok] / v[ok]
    return EnvelopeCheck(
        crossed=bool(over.any()), first_cross_t=first,
        ratio_end=float(env[-1] / v[-1]) if (claim[-1] and v[-1] > 0) else math.nan,
        min_ratio=float(ratios.min()) if ratios.size else math.nan,
        median_ratio=float(np.median(ratios)) if ratios.size else math.nan,
        points=int(ratios.size), quantity=str(getattr(bound_fn, "quantity", "?")))
