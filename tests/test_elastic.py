"""Elastic parallelism control: the controllers on synthetic progress-rate curves,
the schedule, and both engines running with m(t) < M workers active."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stalesgd.elastic import (
    CONTROLLERS,
    ControllerError,
    ScheduleController,
    cpu_seconds_from_trace,
    make_controller,
)

# --- a fake engine: synthetic loss process with a known best level -------------------------


def drive(ctl, rate, updates=300_000, noise=0.0, seed=0, per_worker=1000.0):
    """Run ``ctl`` against a loss process with log-loss decrease ``rate(m)`` per second and a
    throughput of ``per_worker·m`` updates/s, observing exactly when the controller asks."""
    rng = np.random.default_rng(seed)
    t, k, loss = 0.0, 0, 1.0
    m = ctl.start(t, k, loss)
    while k < updates:
        target = ctl.next_k if math.isfinite(ctl.next_k) else updates
        dk = max(1, int(target - k))
        dt = dk / (per_worker * m)
        t, k = t + dt, k + dk
        loss *= math.exp(-rate(m) * dt * (1.0 + noise * rng.standard_normal()))
        if ctl.due(t, k):
            m = ctl.observe(t, k, loss)
    return ctl


def executed(ctl):
    """The levels of the execution (non-probing) phases, in order."""
    return [p.m for p in ctl.trace if not p.probing]


ADAPTIVE = ("window", "ternary", "model")


@pytest.mark.parametrize("name", ADAPTIVE)
@pytest.mark.parametrize("M", [1, 2, 3, 7, 16, 64])
def test_controller_converges_to_the_best_level(name, M):
    best = max(1, round(0.3 * M))
    # a flat-topped curve, not a polynomial: r(m) = m / (1 + (m/m*)²) peaks at m*
    ctl = drive(make_controller(name, M, probe=500, execute=2000),
                lambda m: 1e-3 * m / (1 + (m / best) ** 2))
    tail = executed(ctl)[-6:]
    assert len(tail) == 6
    assert tail == [best] * 6, (name, M, best, executed(ctl))
    # every probe phase has a measured rate (the first one included: no uninitialised reference)
    rates = [p.rate for p in ctl.trace[1:]]
    assert all(math.isfinite(r) and r > 0 for r in rates)


@pytest.mark.parametrize("name", ADAPTIVE)
def test_controller_finds_a_sharp_optimum_under_noise(name):
    M, best = 16, 11
    hits = []
    for seed in range(3):
        ctl = drive(make_controller(name, M, probe=500, execute=2000),
                    lambda m: 1e-3 * math.exp(-((m - best) / 3.0) ** 2), noise=0.02, seed=seed)
        hits += executed(ctl)[-5:]
    assert np.mean(np.array(hits) == best) >= 0.8, hits


def test_first_probe_rate_uses_the_measured_start_loss():
    ctl = make_controller("window", 4, probe=100, execute=100, start=4, step=1)
    ctl.start(0.0, 0, 2.0)
    assert ctl.probing and ctl.m in (3, 4) and ctl.next_k == 100
    ctl.observe(1.0, 100, 1.0)
    assert ctl.trace[1].rate == pytest.approx(math.log(2.0))
    lin = make_controller("window", 4, probe=100, execute=100, signal="linear")
    lin.start(0.0, 0, 2.0)
    lin.observe(0.5, 100, 1.5)
    assert lin.trace[1].rate == pytest.approx(1.0)


def test_rising_or_diverging_probes_lose():
    ctl = make_controller("window", 3, probe=10, execute=10, start=2, step=1)
    ctl.start(0.0, 0, 1.0)
    losses = {1: 0.9, 2: 1.5, 3: 0.5}  # each probe continues from the previous one's loss
    while ctl.probing:
        ctl.observe(ctl.trace[-1].t + 1, int(ctl.next_k), losses[ctl.m])
    assert ctl.m == 3 and not ctl.probing
    assert ctl.trace[2].rate == pytest.approx(math.log(0.9 / 1.5))
    bad = make_controller("window", 3, probe=10, execute=10)
    bad.start(0.0, 0, 1.0)
    bad.observe(1.0, 10, math.nan)
    assert bad.trace[1].rate == -math.inf


def test_adaptive_controllers_need_a_loss():
    for name in ADAPTIVE:
        with pytest.raises(ValueError, match="needs a measured loss"):
            make_controller(name, 4).start(0.0, 0, None)


def test_static_never_changes():
    ctl = make_controller("static", 8)
    assert ctl.start(0.0, 0, None) == 8
    assert not ctl.due(1e9, 10**12)
    assert make_controller("static", 8, m=3).start(0.0, 0, None) == 3


def test_schedule_piecewise_constant_in_updates():
    ctl = make_controller("schedule", 4, steps=[[0, 4], [1000, 1], [3000, 2]])
    assert ctl.start(0.0, 0, None) == 4
    assert ctl.next_k == 1000 and not ctl.due(5.0, 999) and ctl.due(5.0, 1000)
    assert ctl.observe(5.0, 1003, None) == 1
    assert ctl.next_k == 3000
    assert ctl.observe(6.0, 3000, None) == 2
    assert not math.isfinite(ctl.next_k)
    assert [(p.k, p.m) for p in ctl.trace] == [(0, 4), (1003, 1), (3000, 2)]


def test_schedule_ramp_in_seconds_follows_every_level():
    ctl = make_controller("schedule", 8, steps=[[1.0, 8], [8.0, 1]], unit="seconds", ramp=True)
    assert ctl.start(0.0, 0, None) == 8  # M before the first step
    seen = []
    t = 0.0
    while math.isfinite(ctl.next_t):
        t = ctl.next_t
        assert ctl.due(t, 0)
        seen.append((round(t, 6), ctl.observe(t, 0, None)))
    levels = [m for _, m in seen]
    assert [m for i, m in enumerate(levels) if i == 0 or levels[i - 1] != m] == list(
        range(8, 0, -1))
    # the level changes where the line crosses the half-integers
    for t, m in seen[1:]:
        assert ScheduleController.level(ctl, t) == m
        assert 8 - (t - 1.0) == pytest.approx(m + 0.5) or t == 8.0


@pytest.mark.parametrize("bad, match", [
    (dict(name="elastic"), "controller.name = 'elastic' is not allowed; allowed: static"),
    (dict(name="window", probes=10), "controller.options.probes .* unknown option.*probe"),
    (dict(name="window", probe=0), "controller.options.probe = 0 is out of range"),
    (dict(name="window", signal="sqrt"), "controller.options.signal = 'sqrt'.*log, linear"),
    (dict(name="ternary", lo=5, hi=3), "controller.options.hi = 3 is out of range"),
    (dict(name="schedule"), "controller.options.steps = None is missing"),
    (dict(name="schedule", steps=[[0, 9]]), r"steps\[0\]\[1\] = 9 is out of range"),
    (dict(name="schedule", steps=[[5, 2], [5, 1]]), r"steps\[1\]\[0\] = 5"),
    (dict(name="static", m=True), "controller.options.m = true"),
    (dict(name="window", width=10**12), "controller.options.width = 1000000000000 is out of "
                                        "range; allowed: an integer in 1..8"),
    (dict(name="window", mirror="yes"), "controller.options.mirror = 'yes' is a string"),
    (dict(name="schedule", steps=5), "controller.options.steps = 5 is missing or empty"),
    (dict(name="schedule", steps=[[math.nan, 2]]), r"steps\[0\]\[0\] = nan is out of range"),
    (dict(name="schedule", steps=[[0, 2]], ramp=1), "controller.options.ramp = 1"),
    (dict(name="model", degree=7), "controller.options.degree = 7 is out of range"),
])
def test_bad_names_and_options_are_clear_errors(bad, match):
    bad = dict(bad)
    with pytest.raises(ControllerError, match=match):
        make_controller(bad.pop("name"), 8, **bad)


def test_every_controller_is_documented_and_constructible():
    for name, cls in CONTROLLERS.items():
        assert cls.__doc__ and name in cls.__doc__
        opts = {"steps": [[0, 2]]} if name == "schedule" else {}
        assert make_controller(name, 4, **opts).M == 4


def test_cpu_seconds_from_trace():
    assert cpu_seconds_from_trace([(0.0, 4), (1.0, 1)], 3.0) == pytest.approx(6.0)
    assert cpu_seconds_from_trace([(0.0, 4), (1.0, 1)], 3.0, cores=2) == pytest.approx(4.0)
    assert cpu_seconds_from_trace([(0.0, 4), (5.0, 1)], 3.0) == pytest.approx(12.0)
    # the simulator logs (0, M) and then the controller's (0, m): the later one holds
    assert cpu_seconds_from_trace([(0.0, 16), (0.0, 4), (2.0, 8)], 3.0) == pytest.approx(16.0)


# --- the simulator ---------------------------------------------------------------------------


def _sim_spec(controller, options, *, workers=8, updates=30_000, timing_only=False, **kw):
    from stalesgd.experiment import expand, experiment_from_flags

    sim = {"compute": "exp:2ms", "cores": workers, "timing_only": timing_only}
    exp = experiment_from_flags("sim", problem="logreg-synthetic", algorithm="lock",
                                workers=workers, updates=updates, controller=controller,
                                controller_options=options, sim=sim, **kw)
    return expand(exp)[0]


def _m_at(control, t):
    """The active level at times ``t`` from a control table (last decision at or before t)."""
    idx = np.searchsorted(control["t"], t, side="right") - 1
    return control["m"][np.maximum(idx, 0)]


def test_sim_window_records_m_trace_and_tau_follows_m():
    from stalesgd.sim.run import SimRun

    rec = SimRun(_sim_spec("window", {"probe": 800, "execute": 2000}), progress=False).run()
    c, up = rec.control, rec.updates
    assert rec.summary["controller"] == "window"
    assert len(set(c["m"].tolist())) >= 3 and c["probing"].any() and (~c["probing"]).any()
    assert np.all(np.diff(c["k"]) > 0) and c["k"][0] == 0 and c["m"].max() <= 8
    assert np.isfinite(c["loss"]).all()  # every decision saw a measured loss
    # each phase ended after the updates the controller asked for, exactly (a watch, not polling)
    probe_len = np.diff(c["k"])[c["probing"][:-1]]
    assert np.all(probe_len == 800)
    # staleness responds: mean τ per level rises with m (lock, exponential compute: ~ m − 1)
    m_read = _m_at(c, up["t_read"])
    levels = [m for m in np.unique(m_read) if (m_read == m).sum() >= 300]
    means = [float(up["tau"][m_read == m].mean()) for m in levels]
    assert len(levels) >= 3
    assert np.all(np.diff(means) > 0), dict(zip(levels, means, strict=True))
    # the evaluations report the active workers at their time
    assert set(rec.evals["active_workers"].tolist()) <= set(c["m"].tolist())
    # CPU-seconds: ∫ min(m, cores) dt, less than all M workers for the whole run
    assert 0 < rec.summary["cpu_seconds"] < 8 * rec.summary["seconds"]
    assert rec.summary["mean_active"] == pytest.approx(
        rec.summary["cpu_seconds"] / rec.summary["seconds"])


def test_sim_schedule_timing_only_and_static_trace():
    from stalesgd.sim.run import SimRun

    steps = {"steps": [[0, 8], [10_000, 2], [20_000, 8]]}
    rec = SimRun(_sim_spec("schedule", steps, timing_only=True), progress=False).run()
    c, up = rec.control, rec.updates
    assert c["m"].tolist() == [8, 2, 8] and c["k"].tolist() == [0, 10_000, 20_000]
    mid = (up["k"] >= 10_500) & (up["k"] < 20_000)  # after the in-flight updates drained
    assert set(up["worker"][mid].tolist()) == {0, 1}
    assert up["tau"][mid].mean() < 0.5 * up["tau"][up["k"] < 10_000].mean()
    late = up["k"] >= 21_000
    assert set(up["worker"][late].tolist()) == set(range(8))  # parked workers rejoined
    static = SimRun(_sim_spec("static", {}, timing_only=True), progress=False).run()
    assert static.control["m"].tolist() == [8]
    assert static.summary["cpu_seconds"] == pytest.approx(8 * static.summary["seconds"])
    assert rec.summary["cpu_seconds"] < static.summary["cpu_seconds"] * rec.summary["seconds"] \
        / static.summary["seconds"]


def test_sim_adaptive_controller_needs_numeric_replay():
    from stalesgd.sim.run import SimRun

    from stalesgd.experiment import ExperimentError

    with pytest.raises(ExperimentError, match="controller.name = 'window'.*numeric replay"):
        SimRun(_sim_spec("window", {}, timing_only=True), progress=False).run()


# --- the real engine -------------------------------------------------------------------------


def _real_spec(algorithm, workers, controller, options, **kw):
    from stalesgd.experiment import expand, experiment_from_flags

    exp = experiment_from_flags("real", problem="logreg-synthetic", algorithm=algorithm,
                                workers=workers, controller=controller,
                                controller_options=options, **kw)
    return expand(exp)[0]


@pytest.mark.parametrize("algorithm", ["lock", "leashed"])
def test_real_schedule_parks_and_rejoins_workers(algorithm):
    from stalesgd.real.engine import RealRun

    from stalesgd.seeds import worker_seeds

    steps = {"steps": [[0, 4], [20_000, 1], [50_000, 4]]}
    spec = _real_spec(algorithm, 4, "schedule", steps, updates=80_000)
    rec = RealRun(spec, progress=False).run()
    c, up, s = rec.control, rec.updates, rec.summary
    assert c["m"].tolist() == [4, 1, 4]
    assert c["k"][1] >= 20_000 and c["k"][2] >= 50_000  # decided once the phase ended
    applied = ~up["dropped"]
    assert np.array_equal(np.sort(up["k"][applied]), np.arange(80_000))  # k exact
    # while parked (after m = 1 was published, before m = 4), a worker ≥ 1 reads at most once:
    # the read it may have begun right before its check saw the new m
    parked = (up["t_read"] > c["t_set"][1]) & (up["t_read"] < c["t_set"][2])
    per_worker = np.bincount(up["worker"][parked], minlength=4)
    assert per_worker[0] > 1000 and np.all(per_worker[1:] <= 1), per_worker
    # rejoined with their seeds: every worker applies updates again after m = 4
    late = up["t_read"] > c["t_set"][2]
    assert np.all(np.bincount(up["worker"][late], minlength=4) > 0)
    assert s["worker_seeds"] == ",".join(str(x) for x in worker_seeds(spec.seed, 4))
    assert s["controller"] == "schedule" and 1.0 < s["mean_active"] < 4.0
    assert set(rec.evals["active_workers"].tolist()) <= {1, 4}


def test_real_parked_workers_use_no_cpu():
    from stalesgd.real.engine import RealRun

    seconds = 1.0
    parked = RealRun(_real_spec("lock", 2, "static", {"m": 1}, seconds=seconds),
                     progress=False).run().summary
    full = RealRun(_real_spec("lock", 2, "static", {}, seconds=seconds),
                   progress=False).run().summary
    cpu_parked = [float(x) for x in parked["worker_cpu"].split(",")]
    cpu_full = [float(x) for x in full["worker_cpu"].split(",")]
    # the parked worker sleeps (< 2 % of a core); the same worker, active, computes.  The
    # machine is shared, so the active shares are compared with each other, not with 1 core
    assert cpu_parked[1] < 0.02 * parked["seconds"], (cpu_parked, cpu_full)
    assert cpu_parked[1] < 0.1 * cpu_full[1], (cpu_parked, cpu_full)
    assert cpu_parked[0] > 10 * cpu_parked[1]
    assert parked["worker_cpu_seconds"] - cpu_parked[0] < 0.1 * (
        full["worker_cpu_seconds"] - cpu_full[0])
    for s in (parked, full):  # the process total covers the workers (plus the monitor)
        assert s["cpu_seconds"] >= 0.95 * s["worker_cpu_seconds"]


def test_cli_real_and_sim_with_window_record_m_of_t(tmp_path):
    from stalesgd.app.cli import main

    from stalesgd.records import load_results

    common = ["--problem", "logreg-synthetic", "--algorithm", "lock", "--no-progress",
              "--controller", "window", "--controller-option", "probe=1000",
              "--controller-option", "execute=3000"]
    assert main(["real", *common, "--workers", "3", "--updates", "30000",
                 "--out", str(tmp_path / "real")]) == 0
    assert main(["sim", *common, "--workers", "6", "--updates", "12000",
                 "--out", str(tmp_path / "sim")]) == 0
    for engine in ("real", "sim"):
        (folder,) = (tmp_path / engine).iterdir()
        res = load_results(folder)
        assert res.runs["controller"].tolist() == ["window"]
        ctl = res.control
        assert len(ctl) >= 4 and ctl["probing"].any() and ctl["m"].nunique() >= 2
        assert ctl["loss"].notna().all() and (ctl["m"] <= res.runs["workers"][0]).all()
        assert "controller" in (folder / "config.toml").read_text()
    assert main(["sim", *common, "--workers", "2", "--updates", "100",
                 "--controller-option", "speed=3", "--out", str(tmp_path / "bad")]) == 2


def test_experiment_controller_section_is_validated():
    from stalesgd.experiment import ExperimentError, expand, loads_experiment, to_toml

    text = """
name = "el"
engine = "sim"
workers = 8
[problem]
name = "logreg-synthetic"
[algorithm]
name = "hogwild"
[controller]
name = "schedule"
options = {steps = [[0, 8], [100, 2]], ramp = true}
"""
    exp = loads_experiment(text)
    assert exp.controller.name == "schedule" and exp.controller.options["ramp"] is True
    assert loads_experiment(to_toml(exp)) == exp
    swept = loads_experiment(text.replace('name = "schedule"', 'name = "window"').replace(
        "{steps = [[0, 8], [100, 2]], ramp = true}", "{probe = 500}")
        + '[sweep]\n"controller.name" = ["window", "ternary"]\n'
        + '"controller.options.execute" = [0, 100]\n')
    runs = expand(swept)
    assert [(r.controller.name, r.controller.options["execute"]) for r in runs] == [
        ("window", 0), ("window", 100), ("ternary", 0), ("ternary", 100)]
    assert all(r.controller.options["probe"] == 500 for r in runs)
    default = loads_experiment(text.split("[controller]")[0])
    assert default.controller.name == "static" and default.controller.options == {}
    with pytest.raises(ExperimentError, match="controller.name = 'elastic'"):
        loads_experiment(text.replace('name = "schedule"', 'name = "elastic"'))
    with pytest.raises(ExperimentError, match=r"controller.options.steps\[1\]\[1\] = 9"):
        loads_experiment(text.replace("[100, 2]", "[100, 9]"))
    with pytest.raises(ExperimentError, match="controller.colour"):
        loads_experiment(text.replace("[controller]", "[controller]\ncolour = 1"))
    with pytest.raises(ExperimentError, match="asynchronous algorithm"):
        loads_experiment(text.replace('name = "hogwild"', 'name = "sync"'))


# --- memory: parked workers free their parameter buffers -------------------------------------


@pytest.mark.parametrize("algorithm,per_worker", [("lock", 2), ("hogwild", 1), ("leashed", 1)])
def test_real_parked_workers_free_their_buffers(algorithm, per_worker):
    """With at most 2 of 8 workers active, only 2 workers' buffers are ever held at once;
    the static run holds all 8.  Bytes are counted by the workers as they allocate and free
    (so a worker that kept its buffers while parked would show up here)."""
    from stalesgd.real import control as C
    from stalesgd.real.engine import RealRun

    steps = {"steps": [[0, 2], [20_000, 1], [45_000, 2], [65_000, 1]]}
    elastic = RealRun(_real_spec(algorithm, 8, "schedule", steps, updates=90_000),
                      progress=False)
    rec = elastic.run()
    assert rec.control["m"].tolist() == [2, 1, 2, 1]
    theta = elastic.shared.theta.nbytes
    held = int(elastic.shared.ctrl[C.C_WORKER_BYTES_HIGH])
    assert held == 2 * per_worker * theta
    # the run ended at m = 1: worker 1, parked, gave its buffers back
    assert int(elastic.shared.ctrl[C.C_WORKER_BYTES]) == per_worker * theta
    static = RealRun(_real_spec(algorithm, 8, "static", {}, updates=5_000), progress=False)
    srec = static.run()
    assert int(static.shared.ctrl[C.C_WORKER_BYTES_HIGH]) == 0  # preallocated, not owned
    assert rec.summary["peak_param_bytes"] < srec.summary["peak_param_bytes"]
    if algorithm != "leashed":  # (leashed adds its measured pool high-water)
        assert rec.summary["peak_param_bytes"] == theta * (2 + 2 * per_worker)
        assert srec.summary["peak_param_bytes"] == theta * (2 + 8 * per_worker)


def test_sim_elastic_param_bytes_follow_the_most_active_workers():
    from stalesgd.sim.run import SimRun

    steps = {"steps": [[0, 3], [2_000, 5], [4_000, 2]]}
    rec = SimRun(_sim_spec("schedule", steps, workers=16, updates=6_000, timing_only=True),
                 progress=False).run()
    full = SimRun(_sim_spec("static", {}, workers=16, updates=6_000, timing_only=True),
                  progress=False).run()
    theta = full.summary["peak_param_bytes"] // (2 + 2 * 16)
    assert rec.summary["peak_param_bytes"] == theta * (2 + 2 * 5)
