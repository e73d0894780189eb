"""The simulator's timing-only mode against closed forms (DESIGN §4, §6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from stalesgd.sim.engine import simulate_timing
from stalesgd.sim.simulation import ReplayHook
from stalesgd.sim.timing import (
    Deterministic,
    Empirical,
    Exponential,
    Gamma,
    LogNormal,
    Sampler,
    parse_duration,
    parse_timing,
    worker_factors,
)

COLUMNS = ("k", "worker", "t_read", "t_apply", "tau", "eta", "attempts", "dropped")


def geometric_tv(tau: np.ndarray, m: int) -> float:
    """Total-variation distance between the empirical law of ``tau`` and Geom(1/m) on {0,1,..}."""
    kmax = int(tau.max())
    p = (1.0 / m) * (1.0 - 1.0 / m) ** np.arange(kmax + 1)
    emp = np.bincount(tau, minlength=kmax + 1) / tau.size
    return 0.5 * (np.abs(emp - p).sum() + (1.0 - p.sum()))  # the law's mass beyond kmax


def fail_share(res) -> float:
    """Failed publishes over all publish attempts."""
    return res.failed_publishes / res.updates["attempts"].sum()


# --------------------------------------------------------------------------- timing models


def test_parse_duration_units_and_errors():
    assert parse_duration("2ms") == pytest.approx(2e-3)
    assert parse_duration("150us") == pytest.approx(150e-6)
    assert parse_duration("150µs") == pytest.approx(150e-6)
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("0") == 0.0
    assert parse_duration(0.25) == 0.25  # numbers are seconds (programmatic use)
    for bad in ("2 parsecs", "ms", "-1ms", "nan", "", "inf", "3e-4", -1.0, math.inf):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_parse_timing_specs():
    assert parse_timing("det:0") == Deterministic(0.0)
    assert parse_timing("exp:2ms") == Exponential(2e-3)
    assert parse_timing("gamma:2ms:0.5") == Gamma(2e-3, 0.5)
    assert parse_timing("lognormal:2ms:0.5") == LogNormal(2e-3, 0.5)
    assert parse_timing("5us").mean == pytest.approx(5e-6)
    assert isinstance(parse_timing("5us"), Deterministic)
    assert parse_timing(1e-3) == Deterministic(1e-3)
    with pytest.raises(ValueError, match="'uniform' is not allowed"):
        parse_timing("uniform:1ms")
    with pytest.raises(ValueError, match="gamma is written gamma:MEAN:CV"):
        parse_timing("gamma:1ms")
    with pytest.raises(ValueError, match="CV 'x' is not a number"):
        parse_timing("lognormal:1ms:x")
    with pytest.raises(ValueError, match="timing"):
        parse_timing([1, 2])


@pytest.mark.parametrize(
    "model", [Exponential(2e-3), Gamma(2e-3, 0.5), LogNormal(2e-3, 0.5), Gamma(1e-3, 2.0)]
)
def test_distributions_have_their_mean_and_cv(model):
    rng = np.random.default_rng(0)
    x = model.sample_n(rng, 400_000)
    cv = getattr(model, "cv", 1.0)
    assert x.mean() == pytest.approx(model.mean, rel=0.02)
    assert x.std() / x.mean() == pytest.approx(cv, rel=0.05)
    assert isinstance(model.sample(rng), float)


def test_empirical_resamples_only_measured_values():
    meas = np.array([1e-3, 2e-3, 5e-3])
    emp = Empirical(meas)
    x = emp.sample_n(np.random.default_rng(1), 30_000)
    assert set(np.unique(x)) == set(meas)
    assert np.bincount(np.searchsorted(meas, x)) / x.size == pytest.approx([1 / 3] * 3, abs=0.02)
    with pytest.raises(ValueError, match="at least one"):
        Empirical(np.array([]))


def test_sampler_matches_direct_draws_and_worker_factors():
    a = Sampler(Exponential(1.0), np.random.default_rng(5), chunk=7)
    got = [a.next() for _ in range(21)]
    rng = np.random.default_rng(5)
    ref = np.concatenate([rng.exponential(1.0, 7) for _ in range(3)])
    assert got == ref.tolist()  # chunked draws continue the same stream
    assert Sampler(Deterministic(2e-3), np.random.default_rng(5)).next() == 2e-3
    f = worker_factors(4, slow={3: 2.0}, spread=4.0)
    assert f[0] == 1.0 and f[2] == pytest.approx(4.0 ** (2 / 3)) and f[3] == pytest.approx(8.0)
    with pytest.raises(ValueError, match="out of range"):
        worker_factors(2, slow={5: 2.0})


# --------------------------------------------------------------------------- record invariants


@pytest.mark.parametrize("algorithm", ["hogwild", "lock", "leashed"])
def test_tau_is_updates_applied_between_read_and_apply(algorithm):
    """t0 = k − τ must equal the number of updates applied by the read time (DESIGN §4).

    For ``hogwild`` an update counts from its claim of an index (the fetch-add that comes
    before the element-wise write, as in the real worker), i.e. t_apply − update time.
    """
    update = 30e-6
    res = simulate_timing(
        algorithm, 6, cores=6, compute="gamma:1ms:0.7", read="exp:20us", update="det:30us",
        updates=5000, seed=11, persistence=2,
    )
    u = res.updates
    assert set(u) == set(COLUMNS)
    ok = ~u["dropped"]
    k = u["k"][ok]
    assert np.array_equal(np.sort(k), np.arange(res.n_updates))
    counted = u["t_apply"][ok] - (update if algorithm == "hogwild" else 0.0)
    order = np.argsort(k)
    assert np.all(np.diff(counted[order]) >= -1e-12)  # claimed/applied in version order
    assert np.all(u["t_read"] <= u["t_apply"]) and np.all(u["tau"] >= 0)
    applied = np.sort(counted)
    t0 = k - u["tau"][ok]
    seen = np.searchsorted(applied, u["t_read"][ok], side="right")
    assert np.array_equal(t0, seen)
    assert np.all(np.isnan(u["eta"]))


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("algorithm", ["hogwild", "lock"])
@pytest.mark.parametrize("m", [2, 4, 8, 16])
def test_exponential_compute_gives_geometric_tau(algorithm, m):
    """P(τ=k) = (1/m)(1−1/m)^k: TV < 0.02 over 10⁵ updates (full size)."""
    res = simulate_timing(
        algorithm, m, cores=16, compute="exp:1ms", read="det:0", update="det:0",
        updates=100_000, seed=100 + m,
    )
    tau = res.tau
    assert tau.size == 100_000
    assert geometric_tv(tau, m) < 0.02
    assert tau.mean() == pytest.approx(m - 1, abs=0.05 * m)
    # the test has power: the law of 2m workers is far away
    assert geometric_tv(tau, 2 * m) > 0.1


@pytest.mark.parametrize(
    "m,read,update",
    [(2, 0.0, 50e-6), (4, 0.0, 50e-6), (8, 10e-6, 20e-6), (8, 0.0, 300e-6), (16, 5e-6, 100e-6)],
)
def test_lock_deterministic_compute_falls_into_round_robin(m, read, update):
    """Equal deterministic compute, positive update time: τ = m−1 after the first round.

    (8, 0, 300us) and (16, 5us, 100us) keep the lock saturated (m·u > compute).
    """
    res = simulate_timing(
        "lock", m, cores=m, compute="det:1ms", read=read, update=update, updates=40 * m, seed=0
    )
    tau = res.tau
    assert np.all(tau[m:] == m - 1)
    assert not np.all(tau[:m] == m - 1)  # all start together: the first round is not yet in turn
    workers = res.updates["worker"][m:]
    assert np.all(workers[m:] == workers[:-m])  # a fixed cyclic order


def test_lock_throughput_bounded_by_update_time_and_approaches_it():
    u = 100e-6
    thr = []
    for m in (1, 2, 4, 8, 16, 32):
        res = simulate_timing(
            "lock", m, cores=m, compute="exp:1ms", read="det:0", update=u, updates=20_000, seed=m
        )
        assert res.throughput <= 1.0 / u
        thr.append(res.throughput)
    assert all(b > a for a, b in zip(thr, thr[1:], strict=False))
    assert thr[-1] > 0.95 / u
    assert thr[0] < 0.5 / u


def test_lock_handover_cost_lowers_throughput():
    kw = dict(cores=16, compute="exp:1ms", read="det:0", update="det:100us", updates=10_000)
    free = simulate_timing("lock", 16, seed=1, **kw)
    slow = simulate_timing("lock", 16, seed=1, lock_handover="20us", **kw)
    assert slow.lock_contended > 0
    assert slow.throughput < 0.95 * free.throughput


def test_leashed_failures_grow_with_workers_and_update_ratio():
    shares = {}
    for ratio in (0.01, 0.05, 0.2):
        for m in (2, 4, 8, 16):
            res = simulate_timing(
                "leashed", m, cores=16, compute="exp:1ms", read="det:0",
                update=1e-3 * ratio, updates=10_000, seed=m,
            )
            assert res.dropped == 0  # unbounded persistence never drops
            shares[ratio, m] = fail_share(res)
    for ratio in (0.01, 0.05, 0.2):
        row = [shares[ratio, m] for m in (2, 4, 8, 16)]
        assert all(b > a for a, b in zip(row, row[1:], strict=False)), (ratio, row)
    for m in (2, 4, 8, 16):
        col = [shares[r, m] for r in (0.01, 0.05, 0.2)]
        assert all(b > a for a, b in zip(col, col[1:], strict=False)), (m, col)
    # small-window limit: a publish fails when one of the m−1 others lands in its window
    assert shares[0.01, 2] == pytest.approx(0.01 / 1.01, rel=0.25)


def test_leashed_persistence_zero_drops_exactly_the_failures():
    res = simulate_timing(
        "leashed", 8, cores=8, compute="exp:1ms", read="det:10us", update="det:50us",
        updates=10_000, seed=4, persistence=0,
    )
    u = res.updates
    assert res.dropped > 100
    assert res.dropped == res.failed_publishes
    assert np.all(u["attempts"] == 1)
    assert np.all(u["k"][u["dropped"]] == -1)
    assert res.n_updates == 10_000 and len(u["k"]) == 10_000 + res.dropped


def test_leashed_persistence_bound_caps_attempts():
    kw = dict(cores=8, compute="exp:1ms", read="det:10us", update="det:100us", updates=10_000)
    res = simulate_timing("leashed", 8, seed=4, persistence=2, **kw)
    u = res.updates
    assert u["attempts"].max() == 3
    assert np.all(u["attempts"][u["dropped"]] == 3)
    assert res.failed_publishes == int(
        (u["attempts"][~u["dropped"]] - 1).sum() + u["attempts"][u["dropped"]].sum()
    )
    inf = simulate_timing("leashed", 8, seed=4, persistence=math.inf, **kw)
    assert inf.dropped == 0 and inf.updates["attempts"].max() > 3


def test_oversubscription_makes_tau_heavy_tailed():
    """m = 2c with a slice ≫ compute: descheduled workers come back to a far newer θ."""
    out = {}
    for cores in (4, 2):
        res = simulate_timing(
            "hogwild", 4, cores=cores, compute="exp:100us", read="det:0", update="det:0",
            updates=40_000, seed=3, time_slice="5ms",
        )
        tau = res.tau
        out[cores] = (tau.var() / tau.mean(), np.percentile(tau, 99), res)
    (disp_c, p99_c, fit), (disp_2c, p99_2c, over) = out[4], out[2]
    assert fit.preemptions == 0 and over.preemptions > 100
    assert disp_2c > 5 * disp_c
    assert p99_2c > 3 * p99_c
    assert over.throughput == pytest.approx(fit.throughput / 2, rel=0.05)  # half the cores


@pytest.mark.parametrize("algorithm", ["lock", "leashed", "sync"])
def test_oversubscription_runs_every_algorithm(algorithm):
    res = simulate_timing(
        algorithm, 6, cores=2, compute="exp:200us", read="det:5us", update="det:10us",
        updates=3000, seed=1, time_slice="1ms", persistence=3,
    )
    assert res.n_updates == 3000 and res.preemptions > 0
    # no more CPU work is done than two cores can provide in the simulated time
    assert res.throughput < 2 / 200e-6


def test_sync_and_seq():
    sync = simulate_timing(
        "sync", 4, cores=4, compute="det:1ms", read="det:10us", update="det:20us", updates=100,
        seed=0,
    )
    assert np.all(sync.tau == 0)
    assert np.array_equal(sync.updates["k"], np.arange(100))
    assert sync.throughput == pytest.approx(1 / 1.03e-3)
    syncx = simulate_timing("sync", 4, cores=4, compute="exp:1ms", read=0, update=0, updates=2000,
                            seed=0)
    # one round waits for the slowest of 4: E[max] = (1 + 1/2 + 1/3 + 1/4) ms
    assert 1 / syncx.throughput == pytest.approx(25 / 12 * 1e-3, rel=0.05)
    seq = simulate_timing("seq", 1, cores=1, compute="gamma:1ms:0.5", n_params=10_000,
                          updates=2000, seed=0)
    assert np.all(seq.tau == 0)
    # default read/update cost: 0.5 ns + 1 ns per parameter
    assert 1 / seq.throughput == pytest.approx(1e-3 + 15e-6, rel=0.03)


def test_stop_after_seconds():
    res = simulate_timing("hogwild", 4, cores=4, compute="exp:1ms", read=0, update=0,
                          updates=None, seconds=0.5, seed=2)
    assert res.duration == 0.5
    assert res.updates["t_apply"].max() <= 0.5
    assert res.n_updates == pytest.approx(2000, rel=0.1)
    both = simulate_timing("hogwild", 4, cores=4, compute="exp:1ms", read=0, update=0,
                           updates=100, seconds=0.5, seed=2)
    assert both.n_updates == 100 and both.duration < 0.5


def test_heterogeneous_workers():
    res = simulate_timing("hogwild", 2, cores=2, compute="exp:1ms", read=0, update=0,
                          updates=20_000, seed=9, slow={1: 3.0})
    # rates 1 and 1/3: the slow worker contributes a quarter of the updates
    assert (res.updates["worker"] == 1).mean() == pytest.approx(0.25, abs=0.015)
    emp = simulate_timing("lock", 3, cores=3, compute=Empirical(np.array([1e-3])),
                          read=0, update="10us", updates=300, seed=0)
    assert np.all(emp.tau[3:] == 2)


# --------------------------------------------------------------------------- elastic, hook


@pytest.mark.parametrize("algorithm", ["hogwild", "lock", "leashed"])
def test_elastic_active_workers(algorithm):
    res = simulate_timing(
        algorithm, 4, cores=4, compute="exp:1ms", read="det:0", update="det:5us",
        updates=None, seconds=0.6, seed=5, active_schedule=[(0.2, 2), (0.4, 4)],
    )
    u = res.updates
    w, tr = u["worker"], u["t_read"]
    mid = (tr > 0.2) & (tr < 0.4)
    assert set(np.unique(w[mid])) == {0, 1}  # parked workers start nothing new
    assert set(np.unique(w[tr > 0.4])) == {0, 1, 2, 3}  # and resume
    ta = u["t_apply"]

    def rate(a: float, b: float) -> float:
        return ((ta > a) & (ta <= b)).sum() / (b - a)

    assert rate(0.21, 0.4) == pytest.approx(0.5 * rate(0.0, 0.2), rel=0.15)
    assert rate(0.41, 0.6) == pytest.approx(rate(0.0, 0.2), rel=0.15)
    assert res.active_changes == [(0.0, 4), (0.2, 2), (0.4, 4)]


def test_elastic_all_parked_ends_the_run_and_sync_refuses():
    res = simulate_timing("hogwild", 2, cores=2, compute="det:1ms", read=0, update=0,
                          updates=10_000, seed=0, active_schedule=[(0.0105, 0)])
    assert res.n_updates == 22 and res.duration == pytest.approx(0.011)
    with pytest.raises(ValueError, match="asynchronous"):
        simulate_timing("sync", 2, cores=2, compute="det:1ms", updates=10,
                        active_schedule=[(0.001, 1)])


class _Recorder(ReplayHook):
    def __init__(self):
        self.reads, self.applies, self.drops = [], [], []

    def read(self, worker, version):
        self.reads.append((worker, version))

    def apply(self, worker, t0, t1):
        self.applies.append((worker, t0, t1))
        return 0.1 * (t1 - t0 + 1)

    def drop(self, worker, t0):
        self.drops.append((worker, t0))


def test_replay_hook_sees_the_versions_of_the_record():
    hook = _Recorder()
    res = simulate_timing("leashed", 4, cores=4, compute="exp:1ms", read="det:20us",
                          update="det:50us", updates=2000, seed=3, persistence=1, hook=hook)
    u = res.updates
    ok = ~u["dropped"]
    assert len(hook.applies) == res.n_updates and len(hook.drops) == res.dropped
    w, t0, t1 = (np.array(x) for x in zip(*hook.applies, strict=True))
    assert np.array_equal(w, u["worker"][ok]) and np.array_equal(t1, u["k"][ok])
    assert np.array_equal(t1 - t0, u["tau"][ok])
    assert np.allclose(u["eta"][ok], 0.1 * (u["tau"][ok] + 1))
    assert len(hook.reads) >= len(u["k"])


# --------------------------------------------------------------------------- determinism, input


@pytest.mark.parametrize(
    "algorithm,workers,cores,extra",
    [
        ("hogwild", 8, 8, {}),
        ("lock", 8, 3, {"lock_handover": "2us"}),
        ("leashed", 6, 6, {"persistence": 1}),
        ("leashed", 6, 2, {"persistence": None}),
        ("sync", 4, 4, {}),
    ],
)
def test_same_seed_same_record_bit_for_bit(algorithm, workers, cores, extra):
    kw = dict(cores=cores, compute="lognormal:1ms:0.8", read="gamma:20us:0.5",
              update="exp:30us", updates=3000, time_slice="2ms", slow={1: 1.5}, **extra)
    a = simulate_timing(algorithm, workers, seed=42, **kw)
    b = simulate_timing(algorithm, workers, seed=42, **kw)
    c = simulate_timing(algorithm, workers, seed=43, **kw)
    for col in COLUMNS:
        assert a.updates[col].dtype == b.updates[col].dtype
        assert a.updates[col].tobytes() == b.updates[col].tobytes(), col
    assert a.failed_publishes == b.failed_publishes and a.duration == b.duration
    assert a.updates["t_apply"].tobytes() != c.updates["t_apply"].tobytes()


def test_bad_input_is_named():
    kw = dict(cores=2, compute="exp:1ms", updates=10)
    with pytest.raises(ValueError, match="algorithm 'asgd'"):
        simulate_timing("asgd", 2, **kw)
    with pytest.raises(ValueError, match="'seq' runs one worker"):
        simulate_timing("seq", 2, **kw)
    with pytest.raises(ValueError, match="persistence -1"):
        simulate_timing("leashed", 2, persistence=-1, **kw)
    with pytest.raises(ValueError, match="cores 0"):
        simulate_timing("lock", 2, cores=0, compute="exp:1ms", updates=10)
    with pytest.raises(ValueError, match="stop rule"):
        simulate_timing("lock", 2, cores=2, compute="exp:1ms", updates=None)
    with pytest.raises(ValueError, match="time_slice"):
        simulate_timing("lock", 2, time_slice=0, **kw)
    with pytest.raises(ValueError, match="'poisson' is not allowed"):
        simulate_timing("lock", 2, cores=2, compute="poisson:1ms", updates=10)
