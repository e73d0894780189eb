"""Tests for stalesgd.staleness: summaries, maximum-likelihood fits, distances."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st_
from scipy import optimize, special, stats

from stalesgd import staleness as st

REFERENCE = (
    Path(__file__).resolve().parents[2] / "shared" / "reference" / "cpp_async_lenet_cifar10.json"
)


def _reference_counts(threads: str) -> np.ndarray:
    if not REFERENCE.exists():
        pytest.skip(
            f"reference histograms not found at <repo>/../shared/reference ({REFERENCE.name})"
        )
    data = json.loads(REFERENCE.read_text())
    return np.asarray(data["runs"][threads]["staleness_dist"], dtype=np.int64)


def _cmp_counts(mean: float, nu: float, n: int, seed: int) -> tuple[np.ndarray, float]:
    """n draws from CMP(λ, ν), λ set so that the mode is near ``mean``; returns counts, log λ."""
    log_lam = nu * np.log(mean + (nu - 1.0) / (2.0 * nu))
    size = int(mean + 60 * np.sqrt(mean / nu) + 200)
    p = st.cmp_pmf(size, log_lam, nu)
    assert abs(p.sum() - 1.0) < 1e-10  # the support covers the law
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, p / p.sum()), log_lam


# ---------------------------------------------------------------- summaries


def test_histogram_matches_bincount_and_validates():
    rng = np.random.default_rng(0)
    x = rng.poisson(7, size=10_000)
    np.testing.assert_array_equal(st.histogram(x), np.bincount(x))
    np.testing.assert_array_equal(st.histogram(x.astype(float)), np.bincount(x))
    assert st.histogram(x, tau_max=100).size == 101
    with pytest.raises(ValueError, match="negative"):
        st.histogram([1, -2, 3])
    with pytest.raises(ValueError, match="non-integer"):
        st.histogram([1.0, 2.5])
    with pytest.raises(ValueError, match="above tau_max"):
        st.histogram([1, 9], tau_max=5)
    with pytest.raises(ValueError, match="empty"):
        st.histogram([])


def test_summaries_match_numpy_on_samples():
    rng = np.random.default_rng(1)
    x = rng.negative_binomial(3, 0.2, size=50_000)
    c = st.histogram(x)
    s = st.summarize(c, q=(0.1, 0.5, 0.9, 0.99))
    assert s.n == x.size
    assert s.mean == pytest.approx(x.mean(), rel=1e-12)
    assert s.variance == pytest.approx(x.var(), rel=1e-10)
    assert s.dispersion == pytest.approx(x.var() / x.mean(), rel=1e-10)
    assert (s.min, s.max) == (x.min(), x.max())
    np.testing.assert_allclose(s.pdf, np.bincount(x) / x.size)
    assert s.cdf[-1] == 1.0 and np.all(np.diff(s.cdf) >= 0)
    for q, v in s.quantiles.items():
        assert v == np.quantile(x, q, method="inverted_cdf")
    assert s.as_dict()["q50"] == s.quantiles[0.5]


@settings(max_examples=60, deadline=None)
@given(
    st_.lists(st_.integers(0, 40), min_size=1, max_size=200),
    st_.lists(st_.floats(0, 1), min_size=1, max_size=5),
)
def test_quantiles_are_inverted_cdf(samples, qs):
    x = np.asarray(samples)
    got = st.quantiles(st.histogram(x), qs)
    want = np.quantile(x, qs, method="inverted_cdf")
    np.testing.assert_array_equal(got, want)


def test_bad_histograms_and_levels_raise():
    with pytest.raises(ValueError, match="non-negative"):
        st.mean([1, -1, 2])
    with pytest.raises(ValueError, match="sums to zero"):
        st.pdf([0, 0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        st.quantiles([1, 2], 1.5)
    with pytest.raises(ValueError, match="family 'gauss' is not allowed"):
        st.fit([1, 2, 3], "gauss")


# ---------------------------------------------------------------- CMP normaliser


@pytest.mark.parametrize("lam", [0.5, 7.0, 250.0, 900.0])
def test_cmp_normaliser_is_poisson_at_nu_one(lam):
    # Z(λ, 1) = e^λ exactly.
    assert st.cmp_log_normalizer(np.log(lam), 1.0) == pytest.approx(lam, rel=1e-13)


@pytest.mark.parametrize("lam", [0.2, 0.9, 0.999])
def test_cmp_normaliser_is_geometric_at_nu_zero(lam):
    # Z(λ, 0) = 1 / (1 − λ).
    assert st.cmp_log_normalizer(np.log(lam), 0.0) == pytest.approx(-np.log1p(-lam), rel=1e-12)
    assert st.cmp_log_normalizer(0.0, 0.0) == np.inf  # diverges at λ = 1


def test_cmp_normaliser_matches_direct_sum():
    j = np.arange(400)
    for log_lam, nu in [(np.log(3.0), 0.5), (np.log(40.0), 2.0), (1.0, 0.3)]:
        direct = special.logsumexp(j * log_lam - nu * special.gammaln(j + 1.0))
        assert st.cmp_log_normalizer(log_lam, nu) == pytest.approx(direct, rel=1e-13)


@pytest.mark.parametrize("mean", [100.0, 400.0, 900.0])
@pytest.mark.parametrize("nu", [0.1, 0.3, 1.0, 4.0, 30.0])
def test_cmp_pmf_is_stable_for_large_means(mean, nu):
    log_lam = nu * np.log(mean)
    size = int(mean + 80 * np.sqrt(mean / nu) + 200)
    p = st.cmp_pmf(size, log_lam, nu)
    assert np.all(np.isfinite(p))
    assert p.sum() == pytest.approx(1.0, abs=1e-10)
    m = np.dot(np.arange(p.size), p)
    # Mean ≈ λ^(1/ν) − (ν − 1)/(2ν) (asymptotic), within a few units at these means.
    assert abs(m - (mean - (nu - 1) / (2 * nu))) < 0.02 * mean + 1


# ---------------------------------------------------------------- fits


def test_geometric_and_poisson_match_scipy_loglik():
    rng = np.random.default_rng(2)
    x = rng.geometric(0.2, size=20_000) - 1
    c = st.histogram(x)
    g = st.fit_geometric(c)
    assert g.params["p"] == pytest.approx(1 / (1 + x.mean()))
    assert g.loglik == pytest.approx(stats.geom.logpmf(x + 1, g.params["p"]).sum(), rel=1e-10)
    p = st.fit_poisson(c)
    assert p.params["lam"] == pytest.approx(x.mean())
    assert p.loglik == pytest.approx(stats.poisson.logpmf(x, x.mean()).sum(), rel=1e-10)
    assert g.aic == pytest.approx(2 - 2 * g.loglik)
    # Geometric data: the geometric law wins over Poisson.
    assert st.best_fit({"g": g, "p": p}) is g


def test_cmp_fit_is_the_mle():
    rng = np.random.default_rng(3)
    x = rng.binomial(40, 0.3, size=30_000)  # under-dispersed
    c = st.histogram(x)
    f = st.fit_cmp(c)
    assert f.applicable and f.converged
    log_lam, nu = f.params["log_lam"], f.params["nu"]
    # Log-likelihood equals the sum of log-pmfs.
    assert f.loglik == pytest.approx(st.cmp_logpmf(x, log_lam, nu).sum(), rel=1e-11)
    # Exponential-family MLE: E[T] and E[log T!] under the fit equal the sample means.
    q = st.cmp_pmf(400, log_lam, nu)
    k = np.arange(q.size)
    assert np.dot(k, q) == pytest.approx(x.mean(), rel=1e-8)
    assert np.dot(special.gammaln(k + 1.0), q) == pytest.approx(
        special.gammaln(x + 1.0).mean(), rel=1e-8
    )
    # No nearby point is better, and a derivative-free optimiser does not beat it.
    for d in ([1e-3, 0], [0, 1e-3], [-1e-3, 0], [0, -1e-3]):
        assert st.cmp_logpmf(x, log_lam + d[0], nu * np.exp(d[1])).sum() < f.loglik
    nm = optimize.minimize(
        lambda u: -st.cmp_logpmf(np.arange(c.size), u[0], np.exp(u[1])) @ c,
        [np.log(x.mean()), 0.0],
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-10, "maxiter": 4000},
    )
    assert -nm.fun <= f.loglik + 1e-6
    # CMP nests Poisson (ν = 1).
    assert f.loglik >= st.fit_poisson(c).loglik


@pytest.mark.parametrize("mean", [100.0, 300.0, 800.0])
@pytest.mark.parametrize("nu", [0.1, 0.5, 1.0, 3.0, 10.0, 30.0])
def test_cmp_recovers_known_parameters(mean, nu):
    counts, log_lam = _cmp_counts(mean, nu, 10**6, seed=int(mean * 10 + nu * 100))
    f = st.fit_cmp(counts)
    assert f.applicable and f.converged, f.reason
    # Within 4.5 standard errors (Fisher information) and 1.5 % of the truth.
    assert abs(f.params["nu"] - nu) < 4.5 * f.stderr["nu"]
    assert abs(f.params["log_lam"] - log_lam) < 4.5 * f.stderr["log_lam"]
    assert f.params["nu"] == pytest.approx(nu, rel=0.015)


def test_cmp_reaches_the_geometric_limit():
    """Geometric data: the CMP MLE heads to ν → 0 with λ → q; the support must stay short."""
    rng = np.random.default_rng(0)
    counts = np.bincount(rng.geometric(0.3, 100_000) - 1).astype(float)
    f = st.fit_cmp(counts)
    g = st.fit_geometric(counts)
    assert f.converged, f.reason
    assert f.params["nu"] < 1e-3
    assert abs(f.params["lam"] - (1.0 - g.params["p"])) < 1e-3
    # CMP nests the geometric law, so its likelihood cannot be (meaningfully) worse.
    assert f.loglik >= g.loglik - 1e-6 * abs(g.loglik)


def test_cmp_on_two_support_points_with_a_tiny_mean():
    """A PDF almost all at 0 (found by hypothesis): once hung the optimiser at ν ≈ 1e-11."""
    for counts in ([0.99975, 0.00025], [9999.75, 0.25]):
        f = st.fit_cmp(counts)
        p = st.fit_poisson(counts)
        assert f.converged, f.reason
        assert f.loglik >= p.loglik - 1e-9


def test_cmp_not_applicable_on_a_point_mass():
    f = st.fit_cmp([0, 0, 7])
    assert not f.applicable and "variance 0" in f.reason
    assert np.isnan(f.aic)


def test_negbin_recovers_parameters_and_beats_poisson():
    rng = np.random.default_rng(4)
    x = rng.negative_binomial(4.0, 0.1, size=200_000)
    c = st.histogram(x)
    f = st.fit_negbin(c)
    assert f.applicable
    assert f.loglik == pytest.approx(
        stats.nbinom.logpmf(x, f.params["r"], f.params["p"]).sum(), rel=1e-11
    )
    # Fitted mean equals the sample mean; the profile maximum is the joint maximum.
    r, p = f.params["r"], f.params["p"]
    assert r * (1 - p) / p == pytest.approx(x.mean(), rel=1e-10)
    nm = optimize.minimize(
        lambda u: -stats.nbinom.logpmf(np.arange(c.size), np.exp(u[0]), special.expit(u[1])) @ c,
        [np.log(3.0), 0.0],
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-10, "maxiter": 4000},
    )
    assert -nm.fun <= f.loglik + 1e-6
    assert r == pytest.approx(4.0, rel=0.05)
    fits = st.fit_all(c)
    assert st.best_fit(fits).family in ("negbin", "cmp")
    assert fits["negbin"].aic < fits["poisson"].aic


def test_negbin_on_underdispersed_is_not_applicable():
    rng = np.random.default_rng(5)
    c = st.histogram(rng.binomial(20, 0.5, size=5_000))
    f = st.fit_negbin(c)
    assert not f.applicable and "over-dispersed" in f.reason
    fits = st.fit_all(c)
    assert st.best_fit(fits).family != "negbin"
    with pytest.raises(ValueError, match="not applicable"):
        f.pmf(10)


def test_fit_pmf_matches_scipy():
    rng = np.random.default_rng(6)
    c = st.histogram(rng.negative_binomial(2, 0.3, size=5_000))
    fits = st.fit_all(c)
    np.testing.assert_allclose(
        fits["negbin"].pmf(30),
        stats.nbinom.pmf(np.arange(31), fits["negbin"].params["r"], fits["negbin"].params["p"]),
    )
    np.testing.assert_allclose(
        fits["poisson"].pmf(30), stats.poisson.pmf(np.arange(31), c @ np.arange(c.size) / c.sum())
    )
    for f in fits.values():
        assert abs(f.pmf(f.support_max()).sum() - 1.0) < 1e-12


# ---------------------------------------------------------------- reference data


@pytest.mark.parametrize("threads,dispersion", [("12", 0.09), ("33", 0.07)])
def test_reference_underdispersed_cmp_beats_poisson(threads, dispersion):
    c = _reference_counts(threads)
    assert st.dispersion_index(c) == pytest.approx(dispersion, abs=0.01)
    fits = st.fit_all(c)
    cmp, poisson = fits["cmp"], fits["poisson"]
    assert cmp.converged
    assert cmp.aic < poisson.aic
    assert cmp.params["nu"] > 5.0  # strongly under-dispersed: ν well above 1
    assert not fits["negbin"].applicable
    assert st.best_fit(fits) is cmp


def test_reference_overdispersed_at_60_threads():
    c = _reference_counts("60")
    assert st.dispersion_index(c) == pytest.approx(2.5, abs=0.05)
    fits = st.fit_all(c)
    assert fits["negbin"].applicable
    assert fits["negbin"].aic < fits["poisson"].aic
    assert fits["cmp"].params["nu"] < 1.0


# ---------------------------------------------------------------- distances


def test_distances_on_simple_laws():
    p = np.array([0.5, 0.5, 0.0])
    assert st.tv_distance(p, p) == 0.0
    assert st.tv_distance([1, 0], [0, 1]) == 1.0
    d = st.distances([1.0], [0, 0, 0, 1.0])  # point masses at 0 and 3
    assert (d.tv, d.ks, d.w1) == (1.0, 1.0, 3.0)
    assert np.isnan(d.ks_pvalue)  # no sample size known
    assert set(d.as_dict()) == {"tv", "ks", "ks_pvalue", "w1"}


def test_distances_match_scipy_on_samples():
    rng = np.random.default_rng(7)
    a = rng.poisson(10, size=3_000)
    b = rng.poisson(10.6, size=2_000)
    d = st.distances(st.histogram(a), st.histogram(b))
    ref = stats.ks_2samp(a, b, method="asymp")
    assert d.ks == pytest.approx(ref.statistic, abs=1e-12)
    assert d.ks_pvalue == pytest.approx(ref.pvalue, rel=1e-6)
    assert d.w1 == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-10)
    # Same law: the test does not reject.
    same = st.distances(st.histogram(a[:1500]), st.histogram(a[1500:]))
    assert same.ks_pvalue > 0.01


def test_one_sample_ks_against_a_fitted_law():
    rng = np.random.default_rng(8)
    x = rng.poisson(30, size=5_000)
    c = st.histogram(x)
    law = stats.poisson.pmf(np.arange(200), 30.0)
    _, p_good = st.ks_test(c, law)
    _, p_bad = st.ks_test(c, stats.poisson.pmf(np.arange(200), 33.0))
    assert p_good > 0.01 and p_bad < 1e-6


_pdfs = st_.lists(st_.floats(0, 1), min_size=1, max_size=30).filter(lambda v: sum(v) > 1e-3)


@settings(max_examples=80, deadline=None)
@given(_pdfs, _pdfs, _pdfs)
def test_distance_axioms(p, q, r):
    for f in (st.tv_distance, st.wasserstein1, lambda a, b: st.ks_test(a, b)[0]):
        assert f(p, p) == pytest.approx(0.0, abs=1e-12)
        assert f(p, q) == pytest.approx(f(q, p), abs=1e-12)
        assert f(p, r) <= f(p, q) + f(q, r) + 1e-12
    assert 0.0 <= st.tv_distance(p, q) <= 1.0 + 1e-12
    # KS ≤ TV (a CDF difference is a difference of the measures of a set).
    assert st.ks_test(p, q)[0] <= st.tv_distance(p, q) + 1e-12


def test_tv_sampling_floor_is_the_chance_distance_of_two_samples():
    from stalesgd.staleness import tv_sampling_floor

    spread = np.full(10, 30.0)  # 300 values over ten τ
    floor = tv_sampling_floor(spread, 300)
    # two samples of 300 from ten equal cells: E|p̂ - q̂| per cell ≈ sqrt(2·0.1·0.9/300·2/π)
    expected = 0.5 * 10 * np.sqrt(2 * 0.1 * 0.9 / 300 * 2 / np.pi)
    assert abs(floor - expected) < 0.25 * expected
    assert tv_sampling_floor(spread * 100, 30000) < floor / 5  # shrinks as 1/sqrt(n)
    assert tv_sampling_floor(spread, 300) == floor  # seeded
    assert tv_sampling_floor([0, 500.0, 0], 40) == 0.0  # one value: samples always agree
    with pytest.raises(ValueError, match="at least one"):
        tv_sampling_floor(spread, 0)
    with pytest.raises(ValueError, match="n_self"):  # weights that are not a count of samples
        tv_sampling_floor(spread / 7, 300)
    assert tv_sampling_floor(spread / 300, 300, n_self=300) == floor
    long = np.zeros(100_000)
    long[:10] = 30.0  # empty values of τ change nothing (and cost nothing)
    assert tv_sampling_floor(long, 300) == floor


def test_engine_distances_give_the_tv_of_chance_beside_the_tv():
    from stalesgd.analysis import engine_distances

    from stalesgd.staleness import tv_sampling_floor

    real = np.array([50.0, 30, 20])
    sim = np.array([5000.0, 3000, 2000])  # the same law, many more samples
    d = engine_distances({("k", "real"): real, ("k", "sim"): sim}).iloc[0]
    assert d["tv"] == pytest.approx(0.0)
    assert d["tv_floor"] == tv_sampling_floor(real, 10000) and 0.02 < d["tv_floor"] < 0.2
