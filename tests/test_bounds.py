"""Published bounds of analysis/bounds.py as envelopes on the exact recursion."""

from __future__ import annotations

import numpy as np
import pytest
from stalesgd.analysis.bounds import (
    BOUNDS,
    FROM_MEMORY,
    SHAPE_FROM_ABSTRACT,
    check_envelope,
    hogwild_niu2011,
    koloskova2022,
    lian2015,
    lstsq_constants,
    mishchenko2022,
    observed,
)
from stalesgd.analysis.theory import expected_curve, geometric_pdf, zeta_pdf

from stalesgd.problems.registry import make_problem

SETTINGS = [
    # (PDF, step size γ): step sizes inside every theorem's condition for this problem
    (geometric_pdf(1.5, 4), 1e-3),
    (geometric_pdf(1.5, 4), 5e-3),
    (zeta_pdf(1.5, 6), 4e-3),
]


@pytest.fixture(scope="module")
def problem():
    return make_problem("linreg-synthetic", n_features=4, n_train=200, n_test=50, seed=0,
                        noise=0.5)


def _kwargs(name, c, T, gamma):
    kw = dict(L=c.L, sigma2=c.sigma2, F0=c.F0, gamma=gamma)
    if name == "hogwild":
        return dict(L=c.L, mu=c.mu, M2=c.M2, D0=c.D0, tau_max=T, gamma=gamma, Omega=4)
    if name == "lian":
        kw["tau_max"] = T
    elif name == "koloskova":
        kw.update(tau_max=T, tau_c=T + 1)
    else:
        kw["workers"] = T + 1
    return kw


@pytest.mark.parametrize("pdf, gamma", SETTINGS)
def test_envelopes_hold_on_exact_recursion(problem, pdf, gamma):
    """With M² and σ² taken over the ball the expected trajectory stays in (radius = the
    largest √E‖θ_t − θ*‖², times 1.5 for the spread around the mean), no bound is crossed
    over 3000 steps, and every check reports a ratio ≥ 1."""
    T = pdf.size - 1
    th0 = np.full(4, 1.0)
    cur = expected_curve(problem, pdf, "constant", lr=gamma, batch=4, updates=3000,
                         theta0=th0, split="train")
    R = 1.5 * float(np.sqrt(cur.dist2.max()))
    c = lstsq_constants(problem.dataset.X_train, problem.dataset.y_train, th0, batch=4,
                        radius=R)
    for name, fn in BOUNDS.items():
        t, v = observed(cur, fn.quantity)
        res = check_envelope(t, v, fn, **_kwargs(name, c, T, gamma))
        assert not res.crossed, (name, res)
        assert res.min_ratio >= 1.0 and res.median_ratio >= res.min_ratio
        assert res.points == t.size  # every step with a claim and a positive value
        assert res.quantity == fn.quantity


def test_every_bound_says_where_its_statement_comes_from():
    """Nothing here was checked against the papers' text, and the labels say so."""
    assert {n: fn.source for n, fn in BOUNDS.items()} == {
        "hogwild": FROM_MEMORY, "lian": FROM_MEMORY, "koloskova": SHAPE_FROM_ABSTRACT,
        "mishchenko": SHAPE_FROM_ABSTRACT}
    for fn in BOUNDS.values():
        assert "not checked against the paper" in fn.source
        assert fn.reference and fn.quantity in ("gap", "avg_grad2")
        assert not hasattr(fn, "constants_verified")


def test_check_envelope_detects_a_crossing():
    t = np.arange(1, 50)
    v = 1.0 / t
    res = check_envelope(t, v * 3, lian2015, L=1.0, sigma2=0.0, F0=1.0, tau_max=0, gamma=1.0)
    # envelope = 2F0/(tγ) = 2/t < 3/t: crossed everywhere, ratio 2/3
    assert res.crossed and res.first_cross_t == 1.0
    assert res.ratio_end == pytest.approx(2 / 3) and res.min_ratio == pytest.approx(2 / 3)
    ok = check_envelope(t, v, lian2015, L=1.0, sigma2=0.0, F0=1.0, tau_max=0, gamma=1.0)
    assert not ok.crossed and ok.median_ratio == pytest.approx(2.0) and ok.points == 49


def test_monotone_where_they_should_be():
    t = np.arange(0, 5000, 7)
    th = np.linspace(0, 5e7, 300)
    h = hogwild_niu2011(th, L=2.0, mu=0.5, M2=10.0, D0=3.0, tau_max=5, gamma=1e-6, Omega=4)
    # starts at L·D0, decreases, and flattens at its floor γA/μ
    assert np.all(np.diff(h) <= 0) and h[0] == pytest.approx(2.0 * 3.0) and h[-1] < h[0] / 10
    A = 2 * 2.0 * 10.0 * 4 * (1 + 6 * 5 + 4 * 25 * 4)
    assert h[-1] == pytest.approx(1e-6 * A / 0.5)
    base = dict(L=1.0, mu=0.5, M2=10.0, D0=3.0, gamma=1e-4, Omega=4)
    # more delay never helps: floor grows with τ
    assert hogwild_niu2011(1e9, tau_max=10, **base)[0] > hogwild_niu2011(1e9, tau_max=2,
                                                                         **base)[0]
    for fn, kw in [(lian2015, dict(tau_max=3)), (koloskova2022, dict(tau_max=3, tau_c=4)),
                   (mishchenko2022, dict(workers=4))]:
        e = fn(t, L=1.0, sigma2=0.5, F0=2.0, gamma=0.01, **kw)
        assert np.isinf(e[0]) and np.all(np.diff(e[1:]) < 0)
        # a larger variance or initial gap only raises the envelope
        assert np.all(fn(t[1:], L=1.0, sigma2=1.0, F0=2.0, gamma=0.01, **kw) > e[1:])
        assert np.all(fn(t[1:], L=1.0, sigma2=0.5, F0=3.0, gamma=0.01, **kw) > e[1:])
    lo = lian2015(100, L=1.0, sigma2=0.5, F0=2.0, gamma=0.01, tau_max=1)
    hi = lian2015(100, L=1.0, sigma2=0.5, F0=2.0, gamma=0.01, tau_max=8)
    assert hi[0] > lo[0]


def test_lstsq_constants(problem):
    d = problem.dataset
    th0 = np.full(4, 1.0)
    c = lstsq_constants(d.X_train, d.y_train, th0, batch=4)
    assert c.L == pytest.approx(problem.L) and c.mu == pytest.approx(problem.mu)
    assert c.D0 == pytest.approx(float(np.sum((th0 - problem.theta_star) ** 2)))
    assert c.F0 == pytest.approx(problem.evaluate(th0, "train")[0] - problem.f_star, rel=1e-9)
    assert 0 < c.sigma2_star <= c.sigma2 and c.M2 > 0
    big = lstsq_constants(d.X_train, d.y_train, th0, batch=4, radius=10 * c.radius)
    assert big.sigma2 > c.sigma2 and big.M2 > c.M2
    b1 = lstsq_constants(d.X_train, d.y_train, th0, batch=1)
    assert b1.sigma2 == pytest.approx(4 * c.sigma2)


@pytest.mark.parametrize("fn, kw, match", [
    (lian2015, dict(L=1.0, sigma2=1.0, F0=1.0, tau_max=10, gamma=0.5), "condition"),
    (koloskova2022, dict(L=1.0, sigma2=1.0, F0=1.0, tau_max=10, tau_c=10, gamma=0.5),
     "step-size condition"),
    (mishchenko2022, dict(L=1.0, sigma2=1.0, F0=1.0, workers=10, gamma=0.5),
     "step-size condition"),
    (hogwild_niu2011, dict(L=1.0, mu=-1.0, M2=1.0, D0=1.0, tau_max=1, gamma=0.1, Omega=1),
     "mu"),
    (hogwild_niu2011, dict(L=1.0, mu=1.0, M2=float("nan"), D0=1.0, tau_max=1, gamma=0.1,
                           Omega=1), "M2"),
    (lian2015, dict(L=1.0, sigma2=1.0, F0=1.0, tau_max=1, gamma="0.1"), "gamma"),
])
def test_bad_constants(fn, kw, match):
    with pytest.raises(ValueError, match=match):
        fn(np.arange(5), **kw)


def test_bad_curves(problem):
    with pytest.raises(ValueError, match="t must"):
        lian2015([-1, 2], L=1.0, sigma2=1.0, F0=1.0, tau_max=1, gamma=0.1)
    with pytest.raises(ValueError, match="shape"):
        check_envelope([1, 2, 3], [1.0, 2.0], lian2015, L=1.0, sigma2=1.0, F0=1.0,
                       tau_max=1, gamma=0.1)
    with pytest.raises(ValueError, match="finite"):
        check_envelope([1, 2], [1.0, np.inf], lian2015, L=1.0, sigma2=1.0, F0=1.0,
                       tau_max=1, gamma=0.1)
    cur = expected_curve(problem, [1.0], lr=0.01, batch=2, updates=10, theta0=np.zeros(4),
                         eval_at=[0, 5, 10], split="train")
    with pytest.raises(ValueError, match="every step"):
        observed(cur, "avg_grad2")
    with pytest.raises(ValueError, match="quantity"):
        observed(cur, "loss")
    with pytest.raises(ValueError, match="batch"):
        lstsq_constants(problem.dataset.X_train, problem.dataset.y_train, np.zeros(4), batch=0)
