"""The compiled event loop against the SimPy processes it runs (the simulator's definition).

Both loops run the same model with the same draws, and the compiled loop orders
simultaneous events as SimPy does, so their records must be equal bit for bit: every
algorithm with a compiled step, timing only and with numeric replay, with deterministic
durations (many exact ties), with fewer cores than workers (time slices, the run queue),
with lock hand-over latency, with elastic control (parked workers, controllers acting after
a number of updates or at times), with stops on updates, time, a target loss and
divergence, and with buffers small enough that every way of returning to Python happens
often.  A long sweep of such configurations is marked slow.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from stalesgd.sim import buffers, fastcore, fastloop, faststeps
from stalesgd.sim import replay as replay_mod
from stalesgd.sim import timing as timing_mod
from stalesgd.sim.engine import simulate_timing
from stalesgd.sim.run import SimRun
from stalesgd.sim.simulation import ReplayHook, SimulationStalled

from stalesgd.experiment import expand, experiment_from_flags

COLUMNS = ("k", "worker", "t_read", "t_apply", "tau", "eta", "attempts", "dropped")
COUNTERS = ("duration", "n_updates", "failed_publishes", "dropped", "preemptions",
            "lock_contended", "active_changes")
ALGORITHMS = sorted(faststeps.CODES)


def both(algorithm, workers, **kw):
    """The same run in the compiled loop and in the SimPy processes."""
    compiled = simulate_timing(algorithm, workers, fast=True, **kw)
    simpy = simulate_timing(algorithm, workers, fast=False, **kw)
    assert compiled.config["event_loop"] == "compiled"
    assert simpy.config["event_loop"] == "simpy"
    return compiled, simpy


def assert_same_run(a, b):
    for col in COLUMNS:
        assert a.updates[col].dtype == b.updates[col].dtype, col
        assert a.updates[col].tobytes() == b.updates[col].tobytes(), col
    for name in COUNTERS:
        assert getattr(a, name) == getattr(b, name), name


@pytest.fixture
def tiny_buffers(monkeypatch):
    """Duration chunks of 5 values, row chunks of 7 rows, a return to Python every 3 events."""
    init = timing_mod.Sampler.__init__

    def small(self, timing, rng, chunk=4096):
        init(self, timing, rng, 5)

    monkeypatch.setattr(timing_mod.Sampler, "__init__", small)
    monkeypatch.setattr(buffers, "ROW_CHUNK", 7)
    monkeypatch.setattr(fastloop, "EVENT_BUDGET", 3)


CONTINUOUS = dict(compute="lognormal:1ms:0.8", read="gamma:20us:0.5", update="exp:40us")
TIES = dict(compute="det:1ms", read="det:10us", update="det:30us")
MACHINES = {"own cores": lambda m: dict(cores=m),
            "oversubscribed": lambda m: dict(cores=max(1, m // 3), time_slice="300us")}
CASES = [
    *[(alg, timing, machine) for alg in ALGORITHMS for timing in ("continuous", "ties")
      for machine in MACHINES],
    ("lock", "handover", "own cores"), ("lock", "handover", "oversubscribed"),
    ("leashed", "drop at once", "own cores"), ("leashed", "drop at once", "oversubscribed"),
    ("leashed", "never drop", "oversubscribed"),
]


def _case_kwargs(algorithm, timing, machine):
    m = 1 if algorithm == "seq" else 6
    kw = dict(CONTINUOUS if timing != "ties" else TIES, seed=5, slow={0: 1.6} if m > 1 else None,
              persistence=2, **MACHINES[machine](m))
    if timing == "handover":
        kw["lock_handover"] = "15us"
    if timing == "drop at once":
        kw.update(persistence=0, cas_cost="1us")
    if timing == "never drop":
        kw.update(persistence=None, cas_cost="1us", update="exp:200us")
    return m, kw


@pytest.mark.parametrize("stop", [dict(updates=1500), dict(updates=None, seconds=0.4)],
                         ids=["updates", "seconds"])
@pytest.mark.parametrize("algorithm,timing,machine", CASES)
def test_compiled_loop_equals_simpy_bit_for_bit(algorithm, timing, machine, stop):
    m, kw = _case_kwargs(algorithm, timing, machine)
    seen = {True: [], False: []}  # (v, t) at every progress callback
    runs = {fast: simulate_timing(algorithm, m, fast=fast, monitor_every=29,
                                  monitor=lambda sim, s=seen[fast]: s.append((sim.v, sim.now)),
                                  **kw, **stop)
            for fast in (True, False)}
    compiled, simpy = runs[True], runs[False]
    assert compiled.config["event_loop"] == "compiled" and simpy.config["event_loop"] == "simpy"
    assert_same_run(compiled, simpy)
    assert seen[True] == seen[False] and seen[True]
    assert len(compiled.updates["k"]) > 50
    if machine == "oversubscribed" and m > 1:
        assert compiled.preemptions > 0
    if timing == "handover":
        assert compiled.lock_contended > 0


@pytest.mark.parametrize("algorithm", ["lock", "hogwild", "leashed", "sync"])
def test_every_way_back_to_python_keeps_the_record(tiny_buffers, algorithm):
    """Refills, full row chunks, event budgets and progress callbacks every few events."""
    m, kw = _case_kwargs(algorithm, "ties", "oversubscribed")
    calls = {True: [], False: []}
    runs = {}
    for fast in (True, False):
        runs[fast] = simulate_timing(algorithm, m, updates=700, fast=fast,
                                     monitor=lambda sim, fast=fast: calls[fast].append(sim.v),
                                     monitor_every=13, **kw)
    assert_same_run(runs[True], runs[False])
    assert calls[True] == calls[False] and len(calls[True]) > 20


@pytest.mark.parametrize("machine", list(MACHINES))
@pytest.mark.parametrize("algorithm", ["lock", "hogwild", "leashed"])
def test_elastic_schedules_equal_on_both_loops(algorithm, machine):
    """Workers park and rejoin at given times (all parked at the end of one schedule)."""
    m = 6
    timing = dict(CONTINUOUS, seed=3, **MACHINES[machine](m))
    compiled, simpy = both(algorithm, m, updates=None, seconds=0.5,
                           active_schedule=[(0.1, 2), (0.2, 6), (0.3, 1), (0.4, 4)], **timing)
    assert_same_run(compiled, simpy)
    assert [n for _, n in compiled.active_changes] == [6, 2, 6, 1, 4]
    parked = simulate_timing(algorithm, m, updates=100_000, active_schedule=[(0.0, 3), (0.05, 0)],
                             **timing)
    again = simulate_timing(algorithm, m, updates=100_000, fast=False,
                            active_schedule=[(0.0, 3), (0.05, 0)], **timing)
    assert_same_run(parked, again)
    assert parked.n_updates < 100_000 and parked.duration < 0.06  # everybody parked


def test_a_custom_hook_runs_on_the_simpy_processes():
    """Hooks whose methods must be called use the definition; the plain replay does not."""

    class Counting(ReplayHook):
        reads = 0

        def read(self, worker, version):
            self.reads += 1

    hook = Counting()
    res = simulate_timing("lock", 4, cores=4, compute="exp:1ms", updates=300, hook=hook)
    assert res.config["event_loop"] == "simpy" and hook.reads >= 300
    assert simulate_timing("sync", 3, cores=1, compute="exp:1ms",
                           updates=30).config["event_loop"] == "compiled"


def test_a_stalled_clock_is_an_error_on_both_loops(monkeypatch):
    """Cycles that take no time: neither loop spins for ever."""
    monkeypatch.setattr(fastcore, "STALL_LIMIT", 500)
    for fast in (True, False):
        for algorithm, cores in (("lock", 2), ("hogwild", 3), ("sync", 3)):
            with pytest.raises(SimulationStalled, match="clock stopped at t = 0"):
                simulate_timing(algorithm, 3, cores=cores, compute="det:0", read="det:0",
                                update="det:0", updates=10**9, fast=fast)


class _Counting:
    """A row sink that counts the rows of each chunk and keeps none."""

    def __init__(self):
        self.chunks = []
        self.k_sum = 0

    def add(self, columns):
        self.chunks.append(len(columns["k"]))
        self.k_sum += int(columns["k"].sum())


@pytest.mark.parametrize("fast", [True, False])
def test_rows_leave_the_simulation_chunk_by_chunk(monkeypatch, fast):
    """Memory does not grow with the run: at most one chunk of rows is held at a time."""
    monkeypatch.setattr(buffers, "ROW_CHUNK", 1000)
    sink = _Counting()
    n = 9_500
    res = simulate_timing("hogwild", 4, cores=2, compute="exp:1ms", updates=n, rows=sink,
                          fast=fast)
    assert res.updates is sink and res.n_updates == n
    assert sink.chunks == [1000] * 9 + [500]
    assert sink.k_sum == n * (n - 1) // 2  # every k once


# ------------------------------------------------------------------ numeric replay


def _spec(**kw):
    sim = {"compute": kw.pop("compute", "exp:1ms"), **kw.pop("sim", {})}
    exp = experiment_from_flags("sim", sim=sim, **kw)
    return expand(exp)[0]


REPLAYS = [
    dict(problem="logreg-synthetic", algorithm="lock", workers=4, updates=2000, lr=0.05),
    dict(problem="logreg-synthetic", algorithm="lock", workers=6, updates=2000, lr=0.05,
         sim={"cores": 2, "time_slice": "500us"}),
    dict(problem="logreg-synthetic", algorithm="hogwild", workers=5, updates=2000, lr=0.05,
         sim={"cores": 2, "update": "det:20us"}),
    dict(problem="logreg-synthetic", algorithm="leashed", workers=5, updates=2000, lr=0.05,
         persistence=1, sim={"cores": 3, "update": "det:150us"}),
    dict(problem="logreg-synthetic", algorithm="sync", workers=4, updates=300, lr=0.05,
         sim={"cores": 2}),
    dict(problem="logreg-synthetic", algorithm="seq", workers=1, updates=1000, lr=0.05),
    dict(problem="logreg-synthetic", algorithm="lock", workers=2, updates=20000, lr=0.1,
         target_loss=0.45),
    dict(problem="linreg-synthetic", algorithm="lock", workers=3, updates=5000, lr=1e3,
         sim={"cores": 2}),
    dict(problem="linreg-synthetic", algorithm="leashed", workers=3, updates=5000, lr=3e2,
         persistence=0),
    dict(problem="logreg-synthetic", algorithm="hogwild", workers=4, updates=None, seconds=0.3,
         lr=0.05, sim={"compute": "det:1ms", "read": "det:5us", "update": "det:20us"}),
    dict(problem="logreg-synthetic", algorithm="lock", workers=3, updates=1500, lr=0.1,
         stepsize="tail"),
    dict(problem="logreg-synthetic", algorithm="leashed", workers=4, updates=3000, lr=0.1,
         stepsize="tail", stepsize_options={"refresh_every": 40}, sim={"cores": 2}),
    dict(problem="logreg-synthetic", algorithm="sync", workers=3, updates=400, lr=0.1,
         stepsize="tail", stepsize_options={"refresh_every": 40}),
    dict(problem="logreg-synthetic", algorithm="lock", workers=8, updates=4000, lr=0.5,
         controller="window", controller_options={"probe": 300, "execute": 600},
         sim={"cores": 4}),
    dict(problem="logreg-synthetic", algorithm="hogwild", workers=6, updates=None, seconds=0.4,
         lr=0.05, controller="schedule", controller_options={"steps": [[0, 6], [500, 2], [900, 6]]},
         sim={"cores": 3}),
]


@pytest.mark.parametrize("flush", [None, 1, 3])
@pytest.mark.parametrize("cfg", REPLAYS, ids=lambda c: f"{c['algorithm']}-{c['problem']}-{c['lr']}")
def test_replay_equals_on_both_loops(monkeypatch, request, cfg, flush):
    """Numeric replay: the same rows, evaluations, control trace, summary and final θ;
    divergence and target stops included (op buffers of 1 and 3 run mid-event)."""
    if flush is not None:
        request.getfixturevalue("tiny_buffers")
        monkeypatch.setattr(replay_mod, "FLUSH_OPS", flush)
    spec = _spec(**{k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg.items()})
    results = {}
    for fast in (True, False):
        run = SimRun(spec, progress=False, fast=fast)
        rec = run.run()
        results[fast] = rec, run.hook.theta.copy()
    (rec_c, theta_c), (rec_s, theta_s) = results[True], results[False]
    assert rec_c.summary["event_loop"] == "compiled" and rec_s.summary["event_loop"] == "simpy"
    assert np.array_equal(theta_c, theta_s, equal_nan=True)
    for table in ("updates", "evals", "control"):
        x, y = getattr(rec_c, table), getattr(rec_s, table)
        assert list(x) == list(y)
        for col in y:
            assert np.array_equal(x[col], y[col], equal_nan=True), (table, col)
    skip = {"wall_seconds", "sim_updates_per_wall_s", "event_loop"}
    assert {k: v for k, v in rec_c.summary.items() if k not in skip} == \
        {k: v for k, v in rec_s.summary.items() if k not in skip}
    s = rec_c.summary
    if cfg["lr"] >= 200:
        assert s["diverged"] and s["stop_reason"] == "diverged" and s["updates"] < 5000
    if "target_loss" in cfg:
        assert s["stop_reason"] == "target"
    if cfg.get("stepsize") == "tail":
        assert s["stepsize_tables"] >= 1


def test_only_the_plain_replay_is_recorded_inline():
    """A replay whose read, apply, apply_mean or drop is overridden gets its calls (SimPy)."""
    from stalesgd.sim.stepsizes import StepSizes

    from stalesgd.problems.registry import make_problem

    problem = make_problem("logreg-synthetic")
    step = StepSizes.from_table([1.0], 0.1)
    assert replay_mod.NumericReplay(problem, 2, step, batch=4, seed=0).inline() is not None
    for method in ("read", "apply", "apply_mean", "drop"):
        def passthrough(self, *args, _method=method):
            return getattr(replay_mod.NumericReplay, _method)(self, *args)

        sub = type("Sub", (replay_mod.NumericReplay,), {method: passthrough})
        assert sub(problem, 2, step, batch=4, seed=0).inline() is None, method


# ------------------------------------------------------------------ the long sweep


@pytest.mark.slow
def test_compiled_loop_equals_simpy_over_a_sweep():
    """Every combination of algorithm, machine, durations (ties included), hand-over,
    persistence, elastic schedule and stop rule: bit for bit, counters included."""
    n = 0
    for alg in ALGORITHMS:
        for (m, c), times, extra, stop in itertools.product(
                [(4, 4), (6, 3), (5, 2), (3, 1)],
                [("det:1ms", "det:10us", "det:20us"), ("det:1ms", "det:0", "det:0"),
                 ("det:100us", "det:100us", "det:100us"), ("exp:1ms", "det:0", "det:0"),
                 ("gamma:500us:0.5", "exp:10us", "exp:50us")],
                [{}, {"lock_handover": "10us", "cas_cost": "1us", "persistence": 0},
                 {"time_slice": "250us", "persistence": 2},
                 {"active_schedule": [(0.002, 1), (0.005, 3)]}],
                [dict(updates=800), dict(updates=None, seconds=0.05)]):
            if alg == "seq":
                m = c = 1
            if alg not in ("lock", "hogwild", "leashed") and "active_schedule" in extra:
                continue
            comp, rd, up = times
            kw = dict(cores=c, compute=comp, read=rd, update=up, seed=3, **extra, **stop)
            compiled, simpy = both(alg, m, **kw)
            assert_same_run(compiled, simpy)
            n += 1
    assert n > 500
