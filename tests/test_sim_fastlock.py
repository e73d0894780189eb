"""The compiled ``lock`` loop (``stalesgd.sim.fastlock``) against the Python loop it replaces.

Both loops implement the same model with the same draws, so every record must be the same
bit for bit: timing only and with a numeric replay, with deterministic durations (many
exact ties), with stops on updates, on time, on a target loss and on divergence, and with
buffers small enough that every way of returning to Python (refills of the duration
buffers, full row buffers, replay flushes, evaluations, progress callbacks) happens often.
"""

from __future__ import annotations

import numpy as np
import pytest
from stalesgd.sim import fastlock, fastpath
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
    original = fastlock.run_lock_compiled

    def spy(*args, **kw):
        seen.append(1)
        return original(*args, **kw)

    monkeypatch.setattr(fastlock, "run_lock_compiled", spy)
    return seen


@pytest.fixture
def tiny_buffers(monkeypatch):
    """Duration chunks of 5 values and row buffers of 7 rows: constant refills."""
    init = timing_mod.Sampler.__init__

    def small(self, timing, rng, chunk=4096):
        init(self, timing, rng, 5)

    monkeypatch.setattr(timing_mod.Sampler, "__init__", small)
    monkeypatch.setattr(fastlock, "ROW_CHUNK", 7)


def _both_timing(monkeypatch, **kw):
    out = {}
    for compiled in (True, False):
        with monkeypatch.context() as mp:
            mp.setattr(fastpath, "COMPILED_LOCK", compiled)
            out[compiled] = simulate_timing("lock", **kw)
    return out[True], out[False]


TIMING = [
    dict(workers=16, compute="exp:1ms", n_params=7850, updates=6000),
    dict(workers=6, compute="gamma:1ms:0.7", read="exp:20us", update="det:30us", seconds=0.2),
    dict(workers=8, compute="lognormal:100us:0.8", read="gamma:20us:0.5", update="exp:30us",
         updates=3000, slow={0: 1.7}),
    dict(workers=8, compute="det:1ms", read="10us", update="20us", updates=3000),
    dict(workers=3, compute="det:1ms", read=0, update=0, updates=2000),
    dict(workers=4, compute="exp:1ms", read=0, update="det:0", seconds=0.05),
    dict(workers=1, compute="exp:1ms", read="det:1us", update="det:1us", updates=500),
]


@pytest.mark.parametrize("small", [False, True])
@pytest.mark.parametrize("kw", TIMING)
def test_compiled_lock_equals_python_loop_timing_only(monkeypatch, request, calls, kw, small):
    if small:
        request.getfixturevalue("tiny_buffers")
    seen = []
    kw = dict(kw, cores=kw["workers"], seed=11,
              monitor=lambda sim: seen.append(sim.v), monitor_every=97)
    compiled, python = _both_timing(monkeypatch, **kw)
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
]


@pytest.mark.parametrize("flush", [None, 1, 3])
@pytest.mark.parametrize("cfg", REPLAYS, ids=lambda c: f"{c['problem']}-{c['lr']}")
def test_compiled_lock_equals_python_loop_with_replay(monkeypatch, request, calls, cfg, flush):
    """Numeric replay: the same rows, evaluations, summary and final θ; divergence and
    target stops included (FLUSH_OPS of 1 and 3 make the replay flush mid-event)."""
    request.getfixturevalue("tiny_buffers")
    spec = _spec(**{k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg.items()})
    results = {}
    for compiled in (True, False):
        with monkeypatch.context() as mp:
            mp.setattr(fastpath, "COMPILED_LOCK", compiled)
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


def test_online_rules_and_custom_hooks_keep_the_python_loop(calls):
    """An online rule being fed needs a call per update: the compiled loop is not used."""
    spec = _spec(problem="logreg-synthetic", algorithm="lock", workers=2, updates=500,
                 lr=0.05, stepsize="tail")
    SimRun(spec, progress=False).run()
    assert calls == []
    spec = _spec(problem="logreg-synthetic", algorithm="lock", workers=2, updates=500, lr=0.05)
    SimRun(spec, progress=False).run()
    assert calls == [1]
