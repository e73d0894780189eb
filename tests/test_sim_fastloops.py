"""The compiled loops of the fast path (``stalesgd.sim.fastlock``, ``fasthogwild``,
``fastleashed``) against the Python loops they stand in for.

Both loops implement the same model with the same draws, so every record must be the same
bit for bit: timing only and with a numeric replay, with deterministic durations (many
exact ties), with stops on updates, on time, on a target loss and on divergence, and with
buffers small enough that every way of returning to Python (refills of the duration
buffers, full row buffers, replay flushes, evaluations, progress callbacks) happens often.
"""

from __future__ import annotations

import numpy as np
import pytest
from stalesgd.sim import fastbuffers, fasthogwild, fastleashed, fastlock, fastpath
from stalesgd.sim import replay as replay_mod
from stalesgd.sim import timing as timing_mod
from stalesgd.sim.engine import simulate_timing
from stalesgd.sim.run import SimRun

from stalesgd.experiment import expand, experiment_from_flags

COLUMNS = ("k", "worker", "t_read", "t_apply", "tau", "eta", "attempts", "dropped")
COUNTERS = ("duration", "n_updates", "failed_publishes", "dropped", "lock_contended")


@pytest.fixture
def calls(monkeypatch):
    """Counts the runs that went through the compiled loop."""
    seen = []
    for module, name in ((fastlock, "run_lock_compiled"), (fastleashed, "run_leashed_compiled"),
                         (fasthogwild, "run_hogwild_compiled")):
        original = getattr(module, name)

        def spy(*args, _original=original, **kw):
            seen.append(1)
            return _original(*args, **kw)

        monkeypatch.setattr(module, name, spy)
    return seen


@pytest.fixture
def tiny_buffers(monkeypatch):
    """Duration chunks of 5 values and row buffers of 7 rows: constant refills."""
    init = timing_mod.Sampler.__init__

    def small(self, timing, rng, chunk=4096):
        init(self, timing, rng, 5)

    monkeypatch.setattr(timing_mod.Sampler, "__init__", small)
    monkeypatch.setattr(fastbuffers, "ROW_CHUNK", 7)


def _both_timing(monkeypatch, algorithm, **kw):
    out = {}
    for compiled in (True, False):
        with monkeypatch.context() as mp:
            mp.setattr(fastpath, "COMPILED_LOOPS", compiled)
            out[compiled] = simulate_timing(algorithm, **kw)
    return out[True], out[False]


LOCK_TIMING = [
    dict(workers=16, compute="exp:1ms", n_params=7850, updates=6000),
    dict(workers=6, compute="gamma:1ms:0.7", read="exp:20us", update="det:30us", seconds=0.2),
    dict(workers=8, compute="lognormal:100us:0.8", read="gamma:20us:0.5", update="exp:30us",
         updates=3000, slow={0: 1.7}),
    dict(workers=8, compute="det:1ms", read="10us", update="20us", updates=3000),
    dict(workers=3, compute="det:1ms", read=0, update=0, updates=2000),
    dict(workers=4, compute="exp:1ms", read=0, update="det:0", seconds=0.05),
    dict(workers=1, compute="exp:1ms", read="det:1us", update="det:1us", updates=500),
]
LEASHED_TIMING = [
    dict(workers=16, compute="exp:1ms", n_params=7850, updates=6000),
    dict(workers=8, compute="exp:1ms", read="det:10us", update="det:100us", persistence=2,
         updates=4000),
    dict(workers=8, compute="exp:1ms", read="det:10us", update="det:50us", persistence=0,
         seconds=0.3),
    dict(workers=6, compute="lognormal:1ms:0.8", read="gamma:20us:0.5", update="exp:30us",
         persistence=None, cas_cost="1us", updates=3000, slow={0: 1.7}),
    dict(workers=4, compute="det:1ms", read="10us", update="30us", persistence=1,
         updates=3000),
    dict(workers=3, compute="exp:100us", read="det:200us", update="det:200us", persistence=3,
         updates=5000),  # long copies: most attempts fail, the publish list grows
]
HOGWILD_TIMING = [
    dict(workers=16, compute="exp:1ms", n_params=7850, cas_cost="1us", updates=6000),
    dict(workers=4, compute="exp:1ms", read=0, update=0, seconds=0.4),
    dict(workers=4, compute="det:1ms", read="10us", update="10us", updates=3000),
    dict(workers=6, compute="gamma:1ms:0.7", read="exp:20us", update="exp:200us",
         updates=5000, slow={0: 1.7}),
]
TIMING = ([("lock", kw) for kw in LOCK_TIMING] + [("leashed", kw) for kw in LEASHED_TIMING]
          + [("hogwild", kw) for kw in HOGWILD_TIMING]
          + [("seq", dict(workers=1, compute="gamma:1ms:0.5", n_params=10_000, updates=3000))])


@pytest.mark.parametrize("small", [False, True])
@pytest.mark.parametrize("algorithm,kw", TIMING)
def test_compiled_loop_equals_python_loop_timing_only(monkeypatch, request, calls, algorithm,
                                                      kw, small):
    if small:
        request.getfixturevalue("tiny_buffers")
        monkeypatch.setattr(fastleashed, "PUBS_START", 3)
        monkeypatch.setattr(fasthogwild, "CLAIMS_START", 3)
    seen = []
    kw = dict(kw, cores=kw["workers"], seed=11,
              monitor=lambda sim: seen.append(sim.v), monitor_every=97)
    compiled, python = _both_timing(monkeypatch, algorithm, **kw)
    assert len(calls) == 1  # the compiled loop ran once, the Python loop once
    assert compiled.config["event_loop"] == python.config["event_loop"] == "fast"
    for col in COLUMNS:
        assert compiled.updates[col].dtype == python.updates[col].dtype, col
        assert compiled.updates[col].tobytes() == python.updates[col].tobytes(), col
    for name in COUNTERS:
        assert getattr(compiled, name) == getattr(python, name), name
    assert len(compiled.updates["k"]) > 50
    # the progress monitor was called at the same versions on both loops
    assert seen[: len(seen) // 2] == seen[len(seen) // 2:] and len(seen) > 2


def _spec(**kw):
    sim = {"compute": kw.pop("compute", "exp:1ms"), **kw.pop("sim", {})}
    exp = experiment_from_flags("sim", sim=sim, **kw)
    return expand(exp)[0]


REPLAYS = [
    dict(problem="logreg-synthetic", algorithm="lock", workers=4, updates=3000, lr=0.05),
    dict(problem="logreg-synthetic", algorithm="lock", workers=2, updates=20000, lr=0.1,
         target_loss=0.45),
    dict(problem="linreg-synthetic", algorithm="lock", workers=2, updates=5000, lr=1e3),
    dict(problem="logreg-synthetic", algorithm="lock", workers=3, updates=4000, lr=0.05,
         stepsize="inverse", sim={"compute": "det:1ms", "read": "det:5us"}),
    dict(problem="logreg-synthetic", algorithm="lock", workers=5, updates=8000, seconds=0.3,
         lr=0.05),
    dict(problem="logreg-synthetic", algorithm="leashed", workers=4, updates=2000, lr=0.05,
         persistence=1, sim={"update": "det:150us"}),
    dict(problem="linreg-synthetic", algorithm="leashed", workers=3, updates=5000, lr=3e2,
         persistence=0),
    dict(problem="logreg-synthetic", algorithm="leashed", workers=2, updates=20000, lr=0.1,
         target_loss=0.45),
    dict(problem="logreg-synthetic", algorithm="hogwild", workers=3, updates=2000, lr=0.05,
         sim={"update": "det:20us"}),
    dict(problem="logreg-synthetic", algorithm="hogwild", workers=4, updates=3000, lr=0.05,
         sim={"read": "det:0", "update": "det:0"}),
    dict(problem="linreg-synthetic", algorithm="hogwild", workers=3, updates=5000, lr=3e2,
         sim={"update": "exp:50us"}),
    dict(problem="logreg-synthetic", algorithm="hogwild", workers=2, updates=20000, lr=0.1,
         target_loss=0.45),
    dict(problem="logreg-synthetic", algorithm="seq", workers=1, updates=2000, lr=0.05),
    dict(problem="logreg-synthetic", algorithm="lock", workers=3, updates=1500, lr=0.1,
         stepsize="tail"),
    dict(problem="linreg-synthetic", algorithm="lock", workers=3, updates=5000, lr=2e2,
         stepsize="tail"),
    dict(problem="logreg-synthetic", algorithm="lock", workers=4, updates=3000, lr=0.1,
         stepsize="tail", stepsize_options={"refresh_every": 50}),  # feeds all run long
    dict(problem="logreg-synthetic", algorithm="hogwild", workers=4, updates=3000, lr=0.1,
         stepsize="tail", stepsize_options={"refresh_every": 64, "window": 3},
         sim={"update": "det:20us"}),
    dict(problem="logreg-synthetic", algorithm="leashed", workers=4, updates=3000, lr=0.1,
         stepsize="tail-original", persistence=1, sim={"update": "det:150us"}),
    dict(problem="logreg-synthetic", algorithm="leashed", workers=3, updates=3000, lr=0.1,
         stepsize="tail", stepsize_options={"refresh_every": 40}),
    dict(problem="logreg-synthetic", algorithm="leashed", workers=5, updates=8000,
         seconds=0.3, lr=0.05, stepsize="inverse",
         sim={"compute": "det:1ms", "read": "det:20us", "update": "det:20us"}),
]


@pytest.mark.parametrize("flush", [None, 1, 3])
@pytest.mark.parametrize("cfg", REPLAYS,
                         ids=lambda c: f"{c['algorithm']}-{c['problem']}-{c['lr']}")
def test_compiled_loop_equals_python_loop_with_replay(monkeypatch, request, calls, cfg, flush):
    """Numeric replay: the same rows, evaluations, summary and final θ; divergence and
    target stops included (FLUSH_OPS of 1 and 3 make the replay flush mid-event)."""
    request.getfixturevalue("tiny_buffers")
    monkeypatch.setattr(fastleashed, "PUBS_START", 3)
    monkeypatch.setattr(fasthogwild, "CLAIMS_START", 3)
    spec = _spec(**{k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg.items()})
    results = {}
    for compiled in (True, False):
        with monkeypatch.context() as mp:
            mp.setattr(fastpath, "COMPILED_LOOPS", compiled)
            if flush is not None:
                mp.setattr(replay_mod, "FLUSH_OPS", flush)
            run = SimRun(spec, progress=False)
            rec = run.run()
            results[compiled] = rec, run.hook.theta.copy()
    assert len(calls) == 1
    (rec_c, theta_c), (rec_p, theta_p) = results[True], results[False]
    assert np.array_equal(theta_c, theta_p, equal_nan=True)
    for table in ("updates", "evals"):
        x, y = getattr(rec_c, table), getattr(rec_p, table)
        assert list(x) == list(y)
        for col in y:
            assert np.array_equal(x[col], y[col], equal_nan=True), (table, col)
    skip = {"wall_seconds", "sim_updates_per_wall_s"}
    assert {k: v for k, v in rec_c.summary.items() if k not in skip} == \
        {k: v for k, v in rec_p.summary.items() if k not in skip}
    s = rec_c.summary
    if cfg["lr"] >= 200:
        assert s["diverged"] and s["stop_reason"] == "diverged" and s["updates"] < 5000
    if "target_loss" in cfg:
        assert s["stop_reason"] == "target"


@pytest.mark.parametrize("algorithm", ["lock", "hogwild", "leashed"])
def test_online_rules_run_in_the_compiled_loop(calls, algorithm):
    """TAIL-τ learns its table from the run: the compiled loop feeds it and runs on."""
    spec = _spec(problem="logreg-synthetic", algorithm=algorithm, workers=2, updates=500,
                 lr=0.05, stepsize="tail")
    rec = SimRun(spec, progress=False).run()
    assert calls == [1]
    assert rec.summary["stepsize_tables"] >= 1  # the rule produced its table


def test_a_hook_that_overrides_drop_keeps_the_python_loop():
    """``inline`` is only offered when read, apply and drop are the plain replay's."""
    from stalesgd.problems.registry import make_problem

    class Dropping(replay_mod.NumericReplay):
        def drop(self, worker, t0):
            pass

    problem = make_problem("logreg-synthetic")
    step = replay_mod.StepSizes.from_table([1.0], 0.1)
    assert replay_mod.NumericReplay(problem, 2, step, batch=4, seed=0).inline() is not None
    assert Dropping(problem, 2, step, batch=4, seed=0).inline() is None
