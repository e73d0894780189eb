"""Tests for stalesgd.stepsize: rules, tables, the ASAP.SGD checker and the online estimator."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st_
from scipy import stats

from stalesgd import staleness
from stalesgd import stepsize as ss
from stalesgd.validation import OptionError

# Random PDFs: non-negative weights with some zeros, not all zero.
_weights = st_.lists(
    st_.one_of(st_.just(0.0), st_.floats(1e-6, 1.0)), min_size=1, max_size=60
).filter(lambda v: sum(v) > 0)
_amplitude = st_.floats(0.0, 1.0)


def _pdf(w) -> np.ndarray:
    a = np.asarray(w, dtype=np.float64)
    return a / a.sum()


def _clamped_mean(table: np.ndarray, p: np.ndarray) -> float:
    idx = np.minimum(np.arange(p.size), table.size - 1)
    return float(np.dot(p, table[idx]))


# ---------------------------------------------------------------- lookup


def test_eta_of_clamps_and_runs_inside_njit():
    table = np.array([3.0, 2.0, 1.0])
    assert ss.eta_of(table, 0) == 3.0
    assert ss.eta_of(table, 2) == 1.0
    assert ss.eta_of(table, 1000) == 1.0
    assert ss.eta_of(table, -1) == 3.0

    @numba.njit(nogil=True)
    def total(tab, taus):
        acc = 0.0
        for i in range(taus.shape[0]):
            acc += ss.eta_of(tab, taus[i])
        return acc

    assert total(table, np.array([0, 1, 5, 9], dtype=np.int64)) == 3.0 + 2.0 + 1.0 + 1.0


# ---------------------------------------------------------------- fixed rules


def test_closed_form_rules():
    m = 4
    tau = np.arange(21, dtype=float)
    np.testing.assert_array_equal(ss.make_rule("constant", workers=m, lr=0.1).table(20), 1.0)
    np.testing.assert_allclose(ss.make_rule("inverse", workers=m, lr=0.1).table(20), 1 / (tau + 1))
    beta = (2 / 5) * math.log(1 + 5 / 2)
    exp_rule = ss.make_rule("exponential", workers=m, lr=0.1)
    assert exp_rule.beta == pytest.approx(beta, rel=1e-15)
    np.testing.assert_allclose(exp_rule.table(20), np.exp(-beta * tau), rtol=1e-14)
    # The C++ divided the int τthr by 2 before the log: ln(1 + 2) for τthr = 5.
    quirky = ss.make_rule("exponential", workers=m, lr=0.1, quirks=True)
    assert quirky.beta == pytest.approx((2 / 5) * math.log(3.0), rel=1e-15)
    assert ss.make_rule("exponential", workers=m, lr=0.1, tau_thr=9).beta == pytest.approx(
        (2 / 9) * math.log(5.5)
    )
    da = ss.make_rule("delay-adaptive", workers=m, lr=0.1).table(20)
    assert da[0] == 1.0  # min(1, m/0) = 1
    np.testing.assert_allclose(da[1:], np.minimum(1.0, m / tau[1:]))
    rule = ss.make_rule("inverse", workers=m, lr=0.25)
    np.testing.assert_allclose(rule.eta_table(5), 0.25 / (np.arange(6) + 1))
    assert rule.estimator(10) is None and not rule.adaptive


def test_make_rule_errors_name_the_problem():
    with pytest.raises(ValueError) as e:
        ss.make_rule("tial", workers=2, lr=0.1)
    for name in ss.rule_names():
        assert name in str(e.value)
    with pytest.raises(ValueError, match=r"beta = 3 is an unknown option; allowed: options of "
                                         r"step-size rule 'exponential': quirks, tau_thr"):
        ss.make_rule("exponential", workers=2, lr=0.1, beta=3)
    with pytest.raises(ValueError, match="A = 1 is an unknown option; allowed: .*'constant': none"):
        ss.make_rule("constant", workers=2, lr=0.1, A=1)
    with pytest.raises(ValueError, match="workers = 0 is out of range; allowed: an integer >= 1"):
        ss.make_rule("constant", workers=0, lr=0.1)
    with pytest.raises(ValueError, match="lr = 0.0 is out of range; allowed: a finite number > 0"):
        ss.make_rule("constant", workers=1, lr=0.0)
    with pytest.raises(ValueError, match="family = 'gauss' is not allowed; allowed: cmp"):
        ss.make_rule("model", workers=1, lr=0.1, family="gauss")
    with pytest.raises(ValueError, match="refresh_every = 100 is not allowed; allowed: 0 with "
                                         "quirks = true"):
        ss.make_rule("tail-original", workers=1, lr=0.1, refresh_every=100)
    with pytest.raises(ValueError, match="quirks = 'yes' is a string, not a boolean"):
        ss.make_rule("tail-original", workers=1, lr=0.1, quirks="yes")
    with pytest.raises(ValueError, match="pdf = .* must hold finite non-negative"):
        ss.make_rule("tail", workers=1, lr=0.1, pdf=[0.5, -0.5])


@pytest.mark.parametrize(("rule", "options", "key", "allowed"), [
    ("tail", {"A": -0.5}, "A", "0..1"),
    ("tail", {"A": 5}, "A", "A <= 1"),  # s(τ) = 1 + A·(…) would go negative
    ("tail-original", {"A": 1.5}, "A", "0..1"),
    ("model", {"A": math.inf}, "A", "0..1"),
    ("tail", {"A": "1"}, "A", "0..1"),
    ("tail", {"window": 0}, "window", "1..1000000000"),
    ("tail", {"window": 10**12}, "window", "1..1000000000"),
    ("tail", {"warmup": -1}, "warmup", "0..1000000000"),
    ("tail", {"refresh_window": 10**9}, "refresh_window", "1..10000000"),
    ("tail", {"patience": 0.5}, "patience", "1.0..1000.0"),
    ("tail", {"patience": math.nan}, "patience", "1.0..1000.0"),
    ("tail", {"pdf": []}, "pdf", "non-empty array"),
    ("tail", {"pdf": [[1.0]]}, "pdf", "non-empty array"),
    ("tail", {"pdf": ["a"]}, "pdf", "non-empty array"),
    ("tail", {"pdf": [0, 0]}, "pdf", "not all zero"),
    ("exponential", {"tau_thr": -1}, "tau_thr", "> 0"),
    ("exponential", {"tau_thr": math.inf}, "tau_thr", "> 0"),
])
def test_rule_options_are_checked_when_the_rule_is_built(rule, options, key, allowed):
    with pytest.raises(OptionError) as info:
        ss.make_rule(rule, workers=2, lr=0.1, **options)
    assert info.value.key == key
    assert allowed in info.value.allowed, str(info.value)


def test_tail_amplitude_one_keeps_every_step_non_negative():
    """The largest A allowed gives s(τ) = 0 beyond the observed τ, never below."""
    rule = ss.make_rule("tail", workers=2, lr=0.1, A=1.0, pdf=[0.5, 0.5])
    table = rule.table(10)
    assert table.min() == 0.0 and table[2:].max() == 0.0 and table[0] == 1.5
    assert "refresh_every" in ss.rule_options("tail")
    assert ss.rule_options("model")["family"] == "cmp"


def test_every_rule_documents_its_source():
    for cls in ss.RULES.values():
        assert cls.__doc__ and f"``{cls.name}``" in cls.__doc__
    assert "could not find" in ss.RULES["model"].__doc__


# ---------------------------------------------------------------- tail rules (properties)


@settings(max_examples=200, deadline=None)
@given(_weights, st_.integers(0, 80), _amplitude)
def test_tail_is_normalised_nonincreasing_bounded(w, tau_max, A):
    p = _pdf(w)
    table = ss.tail_table(p, tau_max, A)
    assert table.shape == (tau_max + 1,) and table.dtype == np.float64
    # E[s] = 1 under the PDF with clamped lookup, whatever tau_max is.
    assert abs(_clamped_mean(table, p) - 1.0) <= 1e-12
    assert np.all(np.diff(table) <= 0.0)  # exactly, not to a tolerance
    assert np.all(table >= 1.0 - A - 1e-15) and np.all(table <= 1.0 + A + 1e-15)
    assert ss.check_conditions(table, p, tol=1e-12).ok


@settings(max_examples=200, deadline=None)
@given(_weights, st_.integers(0, 40), _amplitude)
def test_tail_original_mean_is_one_plus_a_sum_p_squared(w, extra, A):
    p = _pdf(w)
    table = ss.tail_original_table(p, p.size - 1 + extra, A)
    assert _clamped_mean(table, p) == pytest.approx(1.0 + A * np.sum(p * p), abs=1e-12)
    assert np.all(np.diff(table) <= 0.0)
    assert np.all(table >= 1.0 - A - 1e-15) and np.all(table <= 1.0 + A + 1e-15)
    rule = ss.make_rule("tail-original", workers=3, lr=0.1, A=A, pdf=p)
    np.testing.assert_array_equal(rule.table(p.size - 1 + extra), table)


@settings(max_examples=40, deadline=None)
@given(_weights, st_.integers(1, 64), _amplitude)
def test_all_rules_bounded(w, m, A):
    p = _pdf(w)
    tau_max = 2 * p.size + 10
    for name in ss.rule_names():
        opts = {"A": A, "pdf": p} if name in ("tail", "tail-original", "model") else {}
        table = ss.make_rule(name, workers=m, lr=0.1, **opts).table(tau_max)
        report = ss.check_conditions(table, p, bound=1.0 + A + 1e-12)
        assert report.bounded and report.nonnegative and report.nonincreasing, (name, report)


def test_tail_on_a_known_pdf():
    p = np.array([0.2, 0.5, 0.3])
    # s(τ) = 1 + P[T>τ] − P[T<τ]: 1.8, 1.1, 0.3, then 0 beyond the support.
    np.testing.assert_allclose(ss.tail_table(p, 4), [1.8, 1.1, 0.3, 0.0, 0.0], atol=1e-15)
    # Truncating at tau_max = 1 lumps P[T ≥ 1] into the last entry: 1.8, 1 − 0.2.
    np.testing.assert_allclose(ss.tail_table(p, 1), [1.8, 0.8], atol=1e-15)
    np.testing.assert_allclose(ss.tail_original_table(p, 3), [2.0, 1.6, 0.6, 0.0], atol=1e-15)


# ---------------------------------------------------------------- checker


def test_checker_flags_each_condition():
    p = np.array([0.5, 0.5])
    ok = ss.check_conditions([1.5, 0.5], p)
    assert ok.ok and ok.mean == 1.0 and ok.failures() == []
    rising = ss.check_conditions([0.5, 1.5], p)
    assert not rising.nonincreasing and rising.normalised and not rising.ok
    assert "non-increasing" in str(rising)
    negative = ss.check_conditions([2.5, -0.5], p)
    assert not negative.nonnegative and negative.normalised
    unbounded = ss.check_conditions([np.inf, 1.0], p)
    assert not unbounded.bounded
    assert not ss.check_conditions([3.0, 1.0], p, bound=2.0).bounded
    off = ss.check_conditions([1.0, 0.5], p)
    assert not off.normalised and off.mean == pytest.approx(0.75)
    assert "E[s] = 1 fails" in off.failures()[0]
    # A PDF longer than the table charges its tail to the last entry (clamped lookup).
    long = ss.check_conditions([2.0, 0.5], [0.25, 0.25, 0.5])
    assert long.mean == pytest.approx(0.25 * 2.0 + 0.75 * 0.5)
    with pytest.raises(ValueError, match="sums to zero"):
        ss.check_conditions([1.0], [0.0])


# ---------------------------------------------------------------- model rule


def test_model_rule_is_tail_of_the_fitted_law():
    rng = np.random.default_rng(0)
    counts = staleness.histogram(rng.binomial(60, 0.4, size=20_000))  # under-dispersed
    rule = ss.make_rule("model", workers=8, lr=0.1, pdf=counts)
    table = rule.table(80)
    fit = rule.last_fit
    assert fit.family == "cmp" and fit.params["nu"] > 1.0
    law = fit.pmf(fit.support_max())
    np.testing.assert_allclose(table, ss.tail_table(law, 80), atol=1e-15)
    report = ss.check_conditions(table, law, tol=1e-12)
    assert report.ok, report
    poisson_rule = ss.make_rule("model", workers=8, lr=0.1, pdf=counts, family="poisson")
    poisson_rule.table(80)
    assert poisson_rule.last_fit.family == "poisson"
    auto = ss.make_rule("model", workers=8, lr=0.1, pdf=counts, family="auto")
    auto.table(80)
    assert auto.last_fit.family == "cmp"  # CMP beats Poisson on binomial data
    law_p = stats.poisson.pmf(np.arange(200), poisson_rule.last_fit.params["lam"])
    np.testing.assert_allclose(poisson_rule.table(80), ss.tail_table(law_p, 80), atol=1e-12)


def test_model_rule_falls_back_to_poisson_on_a_point_mass():
    rule = ss.make_rule("model", workers=2, lr=0.1, pdf=[0, 0, 0, 10])
    table = rule.table(10)
    assert rule.last_fit.family == "poisson"
    assert ss.check_conditions(table, rule.last_fit.pmf(100), tol=1e-12).ok


# ---------------------------------------------------------------- online estimator


def _round_robin(m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(n, dtype=np.int64)
    return idx.copy(), idx % m  # τ = global index, so the window's members are visible


def test_estimator_skips_warmup_and_collects_window_per_worker():
    m, tau_max = 3, 100
    est = ss.make_rule("tail", workers=m, lr=0.1).estimator(tau_max)
    assert est.ready is False and np.all(est.table == 1.0)
    taus, workers = _round_robin(m, 60)
    produced_at = None
    for i in range(60):
        out = est.update(taus[i : i + 1], workers[i : i + 1])
        if out is not None:
            assert produced_at is None
            produced_at = i
    # Worker w's k-th update is at index 3k + w; the window is k = 10..14.
    assert produced_at == 3 * 14 + 2
    expected = np.zeros(tau_max + 1, dtype=np.int64)
    expected[[3 * k + w for k in range(10, 15) for w in range(m)]] = 1
    np.testing.assert_array_equal(est.counts, expected)
    assert est.collected == 15 and est.n_tables == 1 and est.ready
    np.testing.assert_allclose(est.table, ss.tail_table(expected, tau_max), atol=1e-15)
    assert abs(_clamped_mean(est.table, expected / 15.0) - 1.0) < 1e-12


@settings(max_examples=30, deadline=None)
@given(st_.lists(st_.integers(1, 40), min_size=1, max_size=8))
def test_estimator_result_does_not_depend_on_batching(cuts):
    rng = np.random.default_rng(1)
    m, n = 4, 260
    taus = rng.poisson(3, size=n)
    workers = rng.integers(0, m, size=n)
    rule = ss.make_rule("tail", workers=m, lr=0.1, refresh_every=50, refresh_window=40)
    whole = rule.estimator(12)
    whole.update(taus, workers)
    pieces = rule.estimator(12)
    pos = 0
    for c in [*cuts, n]:
        pieces.update(taus[pos : pos + c], workers[pos : pos + c])
        pos += c
        if pos >= n:
            break
    np.testing.assert_array_equal(whole.state, pieces.state)
    np.testing.assert_array_equal(whole.ring, pieces.ring)
    np.testing.assert_array_equal(whole.table, pieces.table)


def test_estimator_patience_closes_window_without_an_idle_worker():
    m = 3
    est = ss.make_rule("tail", workers=m, lr=0.1, patience=2.0).estimator(50)
    # Worker 2 never runs; workers 0 and 1 alternate.
    n = 2 * (10 + 5) * m  # = 90 updates: the patience limit
    taus = np.full(n, 5, dtype=np.int64)
    taus[::2] = 4
    workers = np.arange(n) % 2
    assert est.update(taus[: n - 1], workers[: n - 1]) is None
    out = est.update(taus[n - 1 :], workers[n - 1 :])
    assert out is not None and est.collected == 10
    assert est.counts[4] == 5 and est.counts[5] == 5


def test_default_patience_waits_for_a_worker_that_starts_late():
    """On a loaded machine one of two workers can start 400-1,200 updates after the other
    (measured); the first window must not close on the lone worker's τ = 0, or A = 1 gives
    every later stale update η = 0."""
    late = 400
    taus = np.concatenate([np.zeros(late, dtype=np.int64), np.ones(60, dtype=np.int64)])
    workers = np.concatenate([np.zeros(late, dtype=np.int64), np.arange(60) % 2])
    default = ss.make_rule("tail", workers=2, lr=0.1).estimator(20)
    default.update(taus, workers)
    assert default.ready and default.counts[1] == 5  # worker 1's window is in it
    assert default.table[1] > 0
    impatient = ss.make_rule("tail", workers=2, lr=0.1, patience=2.0).estimator(20)
    impatient.update(taus, workers)
    assert impatient.ready and impatient.counts[1] == 0 and impatient.table[1] == 0


def test_estimator_refreshes_from_a_sliding_window():
    m, K, W = 2, 30, 20
    est = ss.make_rule("tail", workers=m, lr=0.1, refresh_every=K, refresh_window=W).estimator(
        tau_max=9
    )
    rng = np.random.default_rng(2)
    taus = rng.integers(0, 15, size=400)  # some above tau_max: lumped into the last bin
    workers = np.arange(400) % m
    first = 2 * 15 - 1  # index at which the first window closes
    tables = []
    for i in range(400):
        if est.update(taus[i : i + 1], workers[i : i + 1]) is not None:
            tables.append(i)
    assert tables[0] == first
    assert tables[1:] == list(range(first + K, 400, K))
    last = tables[-1]
    expected = np.bincount(np.minimum(taus[last - W + 1 : last + 1], 9), minlength=10)
    np.testing.assert_array_equal(est.counts, expected)


def test_tail_original_quirks_reproduce_the_cpp_window():
    m, tau_max = 4, 60
    est = ss.make_rule("tail-original", workers=m, lr=0.1).estimator(tau_max)
    taus = np.arange(100, dtype=np.int64)
    taus[45] = 500  # above the table: dropped, as in the C++
    out = None
    for i in range(100):
        r = est.update(taus[i : i + 1])  # no worker ids needed: global counting
        if r is not None:
            assert out is None and i == 15 * m - 1
            out = r
    kept = [i for i in range(10 * m + 1, 15 * m) if i != 45]
    expected = np.zeros(tau_max + 1, dtype=np.int64)
    expected[kept] = 1
    np.testing.assert_array_equal(est.counts, expected)
    assert est.collected == 5 * m - 2
    # Nominal normaliser 5m, not the samples seen.
    np.testing.assert_allclose(out, ss.tail_original_table(expected, tau_max, 1.0, 5.0 * m))
    assert out[-1] == pytest.approx(2.0 - 2.0 * (5 * m - 2) / (5 * m))
    # Without quirks it is the per-worker estimator with the collected normaliser.
    plain = ss.make_rule("tail-original", workers=m, lr=0.1, quirks=False, refresh_every=10)
    est2 = plain.estimator(tau_max)
    taus2, workers2 = _round_robin(m, 60)
    assert est2.update(taus2, workers2) is not None
    assert est2.table[-1] == pytest.approx(0.0, abs=1e-15)  # P[T < 60] = 1 exactly


def test_model_estimator_produces_a_fitted_table():
    m = 6
    rng = np.random.default_rng(3)
    est = ss.make_rule("model", workers=m, lr=0.1).estimator(40)
    taus = rng.binomial(20, 0.5, size=200)
    workers = np.arange(200) % m
    out = est.update(taus, workers)
    assert out is not None
    fit = est.rule.last_fit
    assert ss.check_conditions(out, fit.pmf(fit.support_max()), tol=1e-12).ok


def test_estimator_input_errors():
    est = ss.make_rule("tail", workers=3, lr=0.1).estimator(10)
    with pytest.raises(ValueError, match="workers .* is required"):
        est.update([1, 2, 3])
    with pytest.raises(ValueError, match="negative staleness"):
        est.update([1, -1], [0, 1])
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        est.update([1, 2], [0, 3])
    with pytest.raises(ValueError, match="workers has 1 entries but taus has 2"):
        est.update([1, 2], [0])
    assert est.update([], []) is None
    assert ss.make_rule("tail", workers=2, lr=0.1, pdf=[1, 1]).estimator(10) is None
    single = ss.make_rule("tail", workers=1, lr=0.1).estimator(10)
    assert single.update(np.zeros(15, dtype=np.int64)) is not None  # one worker: ids optional
