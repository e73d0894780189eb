"""Benchmarks: staleness statistics, fits and distances on 10⁷ τ samples (`make bench`).

Each benchmark records its wall-clock seconds per round in ``extra_info``
(``seconds``, plus the split between histogramming and fitting where useful)
so that ``results/bench.json`` carries them alongside pytest-benchmark's own
statistics.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from stalesgd import staleness as st
from stalesgd import stepsize as ss

N = 10_000_000

pytestmark = pytest.mark.bench


@pytest.fixture(scope="module")
def samples() -> dict[str, np.ndarray]:
    """Three 10⁷-sample τ streams: over-dispersed, Poisson-like and under-dispersed."""
    rng = np.random.default_rng(12345)
    return {
        "overdispersed": rng.negative_binomial(30, 0.35, size=N),  # mean ≈ 56, D ≈ 2.9
        "poisson": rng.poisson(57.0, size=N),
        "underdispersed": rng.binomial(120, 0.9, size=N),  # mean 108, D = 0.1
    }


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


@pytest.mark.parametrize("kind", ["overdispersed", "poisson", "underdispersed"])
def test_fit_all_on_1e7_samples(benchmark, samples, kind):
    x = samples[kind]
    timings: dict[str, float] = {}

    def run():
        counts, t_hist = _timed(st.histogram, x)
        fits, t_fit = _timed(st.fit_all, counts)
        timings.update(histogram_s=t_hist, fits_s=t_fit, seconds=t_hist + t_fit)
        return fits

    fits = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(timings)
    benchmark.extra_info["n_samples"] = N
    benchmark.extra_info["best"] = st.best_fit(fits).family
    for name, f in fits.items():
        benchmark.extra_info[f"aic_{name}"] = f.aic if f.applicable else None
    assert fits["cmp"].converged
    if kind == "overdispersed":
        assert fits["negbin"].params["r"] == pytest.approx(30.0, rel=0.01)
    if kind == "underdispersed":
        assert not fits["negbin"].applicable and fits["cmp"].params["nu"] > 1


def test_summary_on_1e7_samples(benchmark, samples):
    x = samples["overdispersed"]
    timings: dict[str, float] = {}

    def run():
        counts, t_hist = _timed(st.histogram, x)
        summary, t_sum = _timed(st.summarize, counts)
        timings.update(histogram_s=t_hist, summary_s=t_sum, seconds=t_hist + t_sum)
        return summary

    summary = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(timings)
    assert summary.mean == pytest.approx(x.mean(), rel=1e-12)


def test_distances_on_1e7_samples(benchmark, samples):
    a, b = samples["overdispersed"], samples["poisson"]
    timings: dict[str, float] = {}

    def run():
        t0 = time.perf_counter()
        ca, cb = st.histogram(a), st.histogram(b)
        t1 = time.perf_counter()
        d = st.distances(ca, cb)
        t2 = time.perf_counter()
        timings.update(histogram_s=t1 - t0, distances_s=t2 - t1, seconds=t2 - t0)
        return d

    d = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(timings)
    benchmark.extra_info.update(d.as_dict())
    assert 0 < d.tv < 1 and d.ks_pvalue < 1e-6


def test_online_estimator_ingest_1e7_samples(benchmark, samples):
    x = samples["overdispersed"]
    m = 64
    workers = (np.arange(N) % m).astype(np.int64)
    rule = ss.make_rule("tail", workers=m, lr=0.01, refresh_every=100_000)
    rule.estimator(255).update(x[:1000], workers[:1000])  # compile before timing
    timings: dict[str, float] = {}

    def run():
        est = rule.estimator(255)
        _, t = _timed(est.update, x, workers)
        timings["seconds"] = t
        return est

    est = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(timings)
    assert est.total == N and est.ready
