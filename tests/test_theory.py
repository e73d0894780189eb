"""The exact expected-loss recursion of analysis/theory.py against enumeration, Monte Carlo,
plain SGD and the i.i.d.-staleness simulator."""

from __future__ import annotations

import importlib.util
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm
from stalesgd.analysis.theory import (
    expected_curve,
    expected_loss,
    expected_suboptimality,
    geometric_pdf,
    lstsq_moments,
    step_table,
    zeta_pdf,
)
from stalesgd.sim.iid import run_iid_staleness

from stalesgd.problems.registry import make_problem
from stalesgd.stepsize import make_rule, tail_table

REPO = Path(__file__).resolve().parents[1]


def _loss(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """½·mean squared residual for one θ (d,) or many θ (P, d)."""
    r = np.atleast_2d(theta) @ X.T - y
    return 0.5 * np.mean(r * r, axis=-1)


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3, 2))
    y = rng.standard_normal(3)
    Xte = rng.standard_normal((5, 2))
    yte = rng.standard_normal(5)
    return X, y, Xte, yte


def test_matches_exact_enumeration(tiny):
    """Every path of 3 steps (τ ∈ {0,1,2} clipped to t, 3² with-replacement batches) weighted
    by its probability: the expectation must agree to rounding on both splits."""
    X, y, Xte, yte = tiny
    p = np.array([0.5, 0.3, 0.2])
    s = np.array([1.0, 0.7, 0.4])
    lr, b, steps = 0.3, 2, 3
    th0 = np.array([1.0, -2.0])
    paths = [(1.0, [th0])]
    for t in range(steps):
        nxt = []
        for w, hist in paths:
            for tau in range(3):
                tt = min(tau, t)
                for idx in itertools.product(range(3), repeat=b):
                    ix = list(idx)
                    th = hist[t - tt]
                    g = X[ix].T @ (X[ix] @ th - y[ix]) / b
                    nxt.append((w * p[tau] / 3**b, hist + [hist[t] - lr * s[tt] * g]))
        paths = nxt
    w = np.array([q for q, _ in paths])
    H = np.array([h for _, h in paths])  # (P, steps+1, d)
    exact_te = [w @ _loss(H[:, k], Xte, yte) for k in range(steps + 1)]
    exact_tr = [w @ _loss(H[:, k], X, y) for k in range(steps + 1)]
    c = expected_curve((X, y, Xte, yte), p, s, lr=lr, batch=b, updates=steps, theta0=th0,
                       split="test", max_rows=None)
    np.testing.assert_allclose(c.loss, exact_te, rtol=1e-12)
    ctr = expected_curve((X, y), p, s, lr=lr, batch=b, updates=steps, theta0=th0,
                         split="train", max_rows=None)
    np.testing.assert_allclose(ctr.loss, exact_tr, rtol=1e-12)
    f_star = _loss(np.linalg.lstsq(X, y, rcond=None)[0], X, y)[0]
    np.testing.assert_allclose(ctr.train_gap, np.array(exact_tr) - f_star, rtol=1e-10)
    np.testing.assert_allclose(ctr.gap, ctr.train_gap, rtol=1e-9, atol=1e-14)
    d2 = [w @ np.sum((H[:, k] - np.linalg.lstsq(X, y, rcond=None)[0]) ** 2, axis=1)
          for k in range(steps + 1)]
    np.testing.assert_allclose(ctr.dist2, d2, rtol=1e-10)


def test_matches_vectorised_monte_carlo(tiny):
    """10⁵ independent paths of 30 steps (T = 2): the recursion lies inside the 99 % CI of the
    MC mean at 3 checkpoints (Bonferroni: z for α = 0.01/3 two-sided)."""
    X, y, Xte, yte = tiny
    p = np.array([0.2, 0.3, 0.5])
    s = np.array([1.0, 0.5, 0.25])
    lr, b, steps, P = 0.25, 2, 30, 100_000
    th0 = np.array([2.0, 1.0])
    rng = np.random.default_rng(7)
    hist = np.empty((steps + 1, P, 2))
    hist[0] = th0
    rows = np.arange(P)
    for t in range(steps):
        tau = np.minimum(rng.choice(3, size=P, p=p), t)
        idx = rng.integers(0, 3, size=(P, b))
        th = hist[t - tau, rows]
        Xb = X[idx]  # (P, b, d)
        r = np.einsum("pbd,pd->pb", Xb, th) - y[idx]
        g = np.einsum("pbd,pb->pd", Xb, r) / b
        hist[t + 1] = hist[t] - (lr * s[tau])[:, None] * g
    checks = [3, 10, 30]
    c = expected_curve((X, y, Xte, yte), p, s, lr=lr, batch=b, updates=steps, theta0=th0,
                       eval_at=checks, max_rows=None)
    z = norm.ppf(1 - 0.01 / (2 * len(checks)))
    for j, k in enumerate(checks):
        v = _loss(hist[k], Xte, yte)
        se = v.std(ddof=1) / math.sqrt(P)
        assert abs(v.mean() - c.loss[j]) <= z * se, (k, v.mean(), c.loss[j], se)


def test_no_staleness_is_plain_sgd(tiny):
    """τ ≡ 0: E[eeᵀ] follows (I−ηH)C(I−ηH) + η²/b·(Cov of one row's gradient), written here
    directly from the rows in the original basis."""
    X, y, _, _ = tiny
    n, d = X.shape
    lr, b, steps = 0.2, 3, 25
    th0 = np.array([1.5, -0.5])
    ts = np.linalg.lstsq(X, y, rcond=None)[0]
    r = X @ ts - y
    H = X.T @ X / n
    m, C = th0 - ts, np.outer(th0 - ts, th0 - ts)
    gaps = [0.5 * np.trace(H @ C)]
    for _ in range(steps):
        # E over rows of (x xᵀe + r x)(…)ᵀ, linear in C and m:
        M2 = np.zeros((d, d))
        for i in range(n):
            x = X[i]
            M2 += (x @ C @ x) * np.outer(x, x) + 2 * r[i] * (x @ m) * np.outer(x, x) \
                + r[i] ** 2 * np.outer(x, x)
        M2 /= n
        cov = M2 - H @ C @ H
        Ai = np.eye(d) - lr * H
        C = Ai @ C @ Ai.T + lr**2 / b * cov
        m = Ai @ m
        gaps.append(0.5 * np.trace(H @ C))
    c = expected_curve((X, y), [1.0], "constant", lr=lr, batch=b, updates=steps, theta0=th0,
                       split="train")
    np.testing.assert_allclose(c.train_gap, gaps, rtol=1e-10)
    # same thing through the τ-PDF [1, 0, 0]: trailing zeros are dropped, nothing changes
    c3 = expected_curve((X, y), [1.0, 0.0, 0.0], "constant", lr=lr, batch=b, updates=steps,
                        theta0=th0, split="train")
    np.testing.assert_allclose(c3.train_gap, gaps, rtol=1e-10)


def test_staleness_changes_the_answer(tiny):
    """A stale run is not the τ ≡ 0 run (guards against ignoring the PDF)."""
    X, y, _, _ = tiny
    kw = dict(lr=0.4, batch=2, updates=20, theta0=np.array([1.0, 1.0]), split="train")
    a = expected_suboptimality((X, y), [1.0], **kw)
    b = expected_suboptimality((X, y), [0.0, 0.0, 1.0], **kw)
    assert np.all(a[:1] == b[:1]) and abs(a[-1] - b[-1]) > 1e-3 * a[-1]


@pytest.fixture(scope="module")
def small_problem():
    return make_problem("linreg-synthetic", n_features=4, n_train=200, n_test=100, seed=0,
                        noise=0.5)


def test_simulator_within_confidence_interval(small_problem):
    """run_iid_staleness over 200 seeds (geometric PDF, tail rule with its static table):
    the mean evaluated test loss at 4 checkpoints lies inside mean ± z·SE, z for a 99 %
    family-wise level with Bonferroni over the 4 checkpoints; t = 0 is deterministic."""
    pr = small_problem
    p = geometric_pdf(4.0, 20)
    rule = make_rule("tail", workers=1, lr=0.02, pdf=p)
    th0 = np.full(4, 1.0)
    checks = [10, 30, 60, 150]
    U, seeds = 150, 200
    curve = expected_curve(pr, p, rule, lr=0.02, batch=4, updates=U, theta0=th0,
                           eval_at=[0, *checks])
    L = []
    for s in range(seeds):
        rec = run_iid_staleness(pr, p, updates=U, lr=0.02, stepsize=rule, batch=4, seed=s,
                                eval_every=10, theta0=th0)
        ks = np.asarray(rec.evals["k"])
        L.append(np.asarray(rec.evals["loss"])[np.searchsorted(ks, [0, *checks])])
    L = np.asarray(L)
    np.testing.assert_allclose(L[:, 0], curve.loss[0], rtol=1e-12)
    z = norm.ppf(1 - 0.01 / (2 * len(checks)))
    mean, se = L[:, 1:].mean(0), L[:, 1:].std(0, ddof=1) / math.sqrt(seeds)
    assert np.all(np.abs(mean - curve.loss[1:]) <= z * se), (mean, curve.loss[1:], se)


def test_problem_and_arrays_agree(small_problem):
    """A Problem and its arrays give the same curve; the simulator's test-split default
    (first 2000 rows) is what split='test' uses."""
    pr = small_problem
    d = pr.dataset
    kw = dict(lr=0.05, batch=3, updates=30, theta0=np.zeros(4), eval_at=[0, 7, 30])
    a = expected_loss(pr, zeta_pdf(1.2, 5), "inverse", **kw)
    b = expected_loss((d.X_train, d.y_train, d.X_test, d.y_test), zeta_pdf(1.2, 5), "inverse",
                      **kw)
    np.testing.assert_array_equal(a, b)
    assert a[0] == pytest.approx(pr.evaluate(np.zeros(4), "test")[0], rel=1e-12)
    g = expected_suboptimality(pr, [1.0], lr=0.05, batch=3, updates=0, theta0=pr.theta_star,
                               split="train")
    assert abs(g[0]) < 1e-12


def test_step_table_sources():
    """Tables from names, rules and arrays; the tail table equals stepsize.tail_table."""
    p = geometric_pdf(3.0, 10)
    np.testing.assert_array_equal(step_table("constant", p), np.ones(11))
    np.testing.assert_allclose(step_table("inverse", p), 1 / (np.arange(11) + 1))
    np.testing.assert_allclose(step_table("tail", p, stepsize_options={"pdf": p}),
                               tail_table(p, 10))
    np.testing.assert_array_equal(step_table([1.0, 0.5], p), [1.0, 0.5])
    with pytest.raises(ValueError, match="online"):
        step_table("tail", p)


def test_fast_enough():
    """d = 10, T = 40, 10⁴ steps in a few seconds (the brief's budget)."""
    import time

    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 10))
    y = X @ rng.standard_normal(10) + 0.1 * rng.standard_normal(500)
    t0 = time.process_time()  # (CPU time: waits for a core on a busy machine do not count)
    c = expected_curve((X, y), geometric_pdf(10.0, 40), "constant", lr=0.005, batch=8,
                       updates=10_000, theta0=np.zeros(10), eval_at=[10_000], split="train")
    assert time.process_time() - t0 < 10.0
    assert np.isfinite(c.train_gap[0]) and c.train_gap[0] < 0.01


@pytest.mark.parametrize("bad, match", [
    (dict(lr=0.0), "lr"),
    (dict(batch=0), "batch"),
    (dict(updates=-1), "updates"),
    (dict(theta0=np.zeros(3)), "theta0"),
    (dict(eval_at=[5, 99]), "eval_at"),
    (dict(split="valid"), "split"),
    (dict(max_rows=0), "max_rows"),
])
def test_bad_input(tiny, bad, match):
    X, y, Xte, yte = tiny
    kw = dict(lr=0.1, batch=2, updates=10, theta0=np.zeros(2), max_rows=None)
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        expected_curve((X, y, Xte, yte), [0.5, 0.5], "constant", **kw)


def test_bad_pdf_and_data(tiny):
    X, y, _, _ = tiny
    kw = dict(lr=0.1, batch=2, updates=3, theta0=np.zeros(2))
    with pytest.raises(ValueError, match="pdf"):
        expected_curve((X, y), [-0.1, 1.1], **kw, split="train")
    with pytest.raises(ValueError, match="split='test' needs"):
        expected_curve((X, y), [1.0], **kw)
    with pytest.raises(ValueError, match="linreg"):
        expected_curve(make_problem("logreg-synthetic", n_train=20, n_test=5, n_features=2),
                       [1.0], **kw)
    with pytest.raises(ValueError, match="moments"):
        expected_curve((X, y), [1.0], **kw, split="train",
                       moments=lstsq_moments(X[:2], y[:2]))


@pytest.mark.slow
def test_full_grid_against_simulator():
    """bench/theory_check.py's grid (3 PDFs × constant/inverse/tail × 4 checkpoints, 200
    seeds): every cell inside its Bonferroni-corrected 99 % family-wise interval."""
    spec = importlib.util.spec_from_file_location("theory_check",
                                                  REPO / "bench" / "theory_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.theory_grid(seeds=200, updates=400)
    bad = [r for r in rows if not r["inside"]]
    assert not bad, bad
