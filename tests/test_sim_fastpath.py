"""The simulator's heap-based fast path and batched numeric replay against the SimPy model.

The fast path (``stalesgd.sim.fastpath``) and the buffered replay
(``NumericReplay.flush``) are optimisations: they must give the same runs as the SimPy
processes and the one-op-at-a-time replay.  With continuous durations there are no exact
ties of event times, so the records must be identical bit for bit; with deterministic
durations ties are broken in a possibly different order, so the staleness laws are
compared (total variation) and the closed forms checked on both paths.
"""

from __future__ import annotations

import numpy as np
import pytest
from stalesgd.sim import replay as replay_mod
from stalesgd.sim.engine import simulate_timing
from stalesgd.sim.simulation import ReplayHook
from stalesgd.sim.run import SimRun

from stalesgd.experiment import expand, experiment_from_flags

COLUMNS = ("k", "worker", "t_read", "t_apply", "tau", "eta", "attempts", "dropped")
COUNTERS = ("duration", "n_updates", "failed_publishes", "dropped", "lock_contended")


def both(algorithm, workers, **kw):
    """The same run on the SimPy model and on the fast path."""
    slow = simulate_timing(algorithm, workers, fast=False, **kw)
    fast = simulate_timing(algorithm, workers, fast=True, **kw)
    assert slow.config["event_loop"] == "simpy"
    assert fast.config["event_loop"] == "fast"
    return slow, fast


def tv(a: np.ndarray, b: np.ndarray) -> float:
    """Total-variation distance between the empirical laws of two τ samples."""
    n = int(max(a.max(), b.max())) + 1
    pa = np.bincount(a, minlength=n) / a.size
    pb = np.bincount(b, minlength=n) / b.size
    return 0.5 * float(np.abs(pa - pb).sum())


CONTINUOUS = [
    ("lock", 16, dict(compute="exp:1ms", n_params=7850)),
    ("lock", 6, dict(compute="gamma:1ms:0.7", read="exp:20us", update="det:30us")),
    ("lock", 8, dict(compute="lognormal:100us:0.8", read="gamma:20us:0.5", update="exp:30us")),
    ("hogwild", 16, dict(compute="exp:1ms", n_params=7850, cas_cost="1us")),
    ("hogwild", 4, dict(compute="exp:1ms", read=0, update=0)),
    ("seq", 1, dict(compute="gamma:1ms:0.5", n_params=10_000)),
    ("leashed", 16, dict(compute="exp:1ms", n_params=7850)),
    ("leashed", 8, dict(compute="exp:1ms", read="det:10us", update="det:100us", persistence=2)),
    ("leashed", 8, dict(compute="exp:1ms", read="det:10us", update="det:50us", persistence=0)),
    ("leashed", 6, dict(compute="lognormal:1ms:0.8", read="gamma:20us:0.5", update="exp:30us",
                        persistence=None, cas_cost="1us")),
]


@pytest.mark.parametrize("algorithm,workers,kw", CONTINUOUS)
@pytest.mark.parametrize("stop", [dict(updates=6000), dict(updates=None, seconds=0.2)])
def test_fast_path_equals_simpy_bit_for_bit(algorithm, workers, kw, stop):
    slow, fast = both(algorithm, workers, cores=workers, seed=7, slow={0: 1.7}, **stop, **kw)
    for col in COLUMNS:
        assert slow.updates[col].dtype == fast.updates[col].dtype, col
        assert slow.updates[col].tobytes() == fast.updates[col].tobytes(), col
    for name in COUNTERS:
        assert getattr(slow, name) == getattr(fast, name), name
    assert len(fast.updates["k"]) > 100


@pytest.mark.parametrize(
    "algorithm,workers,kw",
    [
        ("lock", 8, dict(read="10us", update="20us")),
        ("lock", 16, dict(read="5us", update="100us")),
        ("lock", 3, dict(read=0, update=0)),
        ("hogwild", 4, dict(read="10us", update="10us")),
        ("leashed", 4, dict(read="10us", update="30us", persistence=1)),
    ],
)
def test_deterministic_ties_give_the_same_staleness_law(algorithm, workers, kw):
    """Equal deterministic compute times make many events simultaneous."""
    slow, fast = both(algorithm, workers, cores=workers, compute="det:1ms", updates=5000,
                      seed=3, **kw)
    assert tv(slow.tau, fast.tau) < 0.01
    assert fast.throughput == pytest.approx(slow.throughput, rel=1e-3)
    if algorithm == "lock":  # round robin on both paths
        assert np.all(fast.tau[workers:] == workers - 1)


@pytest.mark.parametrize("m", [2, 8])
def test_geometric_tau_on_both_paths_with_copy_costs(m):
    """Exponential compute, small copy/update times: both paths near Geom(1/m), and alike."""
    slow, fast = both("hogwild", m, cores=m, compute="exp:1ms", read="det:0",
                      update="det:0", updates=40_000, seed=m)
    for res in (slow, fast):
        assert res.tau.mean() == pytest.approx(m - 1, abs=0.08 * m)
    assert tv(slow.tau, fast.tau) < 0.02


def test_the_fast_path_is_used_only_where_it_applies():
    kw = dict(compute="exp:1ms", read="det:1us", update="det:2us", updates=200, seed=0)

    def loop(algorithm, workers, **extra):
        return simulate_timing(algorithm, workers, **{**kw, **extra}).config["event_loop"]

    assert loop("lock", 4, cores=4) == "fast"
    assert loop("hogwild", 4, cores=8) == "fast"
    assert loop("leashed", 4, cores=4, persistence=1) == "fast"
    assert loop("seq", 1, cores=1) == "fast"
    assert loop("lock", 4, cores=2) == "simpy"  # oversubscribed: the scheduler
    assert loop("lock", 4, cores=4, lock_handover="1us") == "simpy"
    assert loop("sync", 4, cores=4) == "simpy"
    assert loop("lock", 4, cores=4, active_schedule=[(0.01, 2)], updates=None,
                seconds=0.05) == "simpy"


class _Recorder(ReplayHook):
    def __init__(self):
        self.calls = []

    def bind(self, sim):
        self.sim = sim

    def read(self, worker, version):
        self.calls.append(("r", worker, version, self.sim.env.now, self.sim.log.n))

    def apply(self, worker, t0, t1):
        self.calls.append(("a", worker, t0, t1, self.sim.env.now, self.sim.log.n))
        return 0.5 / (1 + t1 - t0)

    def drop(self, worker, t0):
        self.calls.append(("d", worker, t0, self.sim.env.now))


@pytest.mark.parametrize(
    "algorithm,extra",
    [("lock", {}), ("hogwild", {}), ("leashed", {"persistence": 1}), ("seq", {})],
)
def test_hook_sees_the_same_calls_at_the_same_instants(algorithm, extra):
    m = 1 if algorithm == "seq" else 5
    out = []
    for fast in (False, True):
        hook = _Recorder()
        res = simulate_timing(algorithm, m, cores=m, compute="exp:1ms", read="exp:20us",
                              update="det:40us", updates=1500, seed=2, hook=hook, fast=fast,
                              **extra)
        out.append((hook.calls, res))
    (calls_s, slow), (calls_f, fast) = out
    # SimPy workers keep reading in the steps after the stop; those calls do not count
    assert calls_f == calls_s[: len(calls_f)]
    assert all(c[0] == "r" for c in calls_s[len(calls_f):])
    assert slow.updates["eta"].tobytes() == fast.updates["eta"].tobytes()


def _spec(problem, algorithm, workers, **kw):
    sim = {"compute": kw.pop("compute", "exp:1ms"), **kw.pop("sim", {})}
    exp = experiment_from_flags("sim", problem=problem, algorithm=algorithm, workers=workers,
                                sim=sim, **kw)
    return expand(exp)[0]


def _replay(spec):
    run = SimRun(spec, progress=False)
    rec = run.run()
    return rec, run.hook.theta.copy()


REPLAYS = [
    dict(problem="logreg-synthetic", algorithm="lock", workers=4, updates=3000, lr=0.05),
    dict(problem="logreg-synthetic", algorithm="hogwild", workers=3, updates=2000, lr=0.05,
         sim={"update": "det:20us"}),
    dict(problem="logreg-synthetic", algorithm="leashed", workers=4, updates=2000, lr=0.05,
         persistence=1, sim={"update": "det:150us"}),
    dict(problem="logreg-synthetic", algorithm="lock", workers=3, updates=1500, lr=0.1,
         stepsize="tail"),
    dict(problem="logreg-synthetic", algorithm="lock", workers=2, updates=20000, lr=0.1,
         target_loss=0.45),
    dict(problem="linreg-synthetic", algorithm="lock", workers=2, updates=5000, lr=1e3),
    dict(problem="linreg-synthetic", algorithm="leashed", workers=3, updates=5000, lr=3e2,
         persistence=0),
    dict(problem="logreg-synthetic", algorithm="sync", workers=3, updates=300, lr=0.05),
    dict(problem="linreg-synthetic", algorithm="lock", workers=3, updates=5000, lr=2e2,
         stepsize="tail"),
]


@pytest.mark.parametrize("cfg", REPLAYS, ids=lambda c: f"{c['algorithm']}-{c['lr']}")
def test_batched_replay_equals_op_by_op_replay_on_both_paths(monkeypatch, cfg):
    """FLUSH_OPS = 1 runs every read at once (the unbatched replay); forcing the SimPy model
    checks the fast path's hook calls too.  Divergence and target stops included."""
    spec = _spec(**{k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg.items()})
    results = {}
    for fast in (True, False):
        for flush in (replay_mod.FLUSH_OPS, 1):
            with monkeypatch.context() as mp:
                mp.setattr(replay_mod, "FLUSH_OPS", flush)
                if not fast:
                    mp.setattr("stalesgd.sim.model.fast_path_blocker", lambda sim, c: "forced")
                results[fast, flush] = _replay(spec)
    with monkeypatch.context() as mp:  # read/apply overridden: the fast path calls them
        mp.setattr("stalesgd.sim.run.NumericReplay", _CallsReplay)
        results["calls"] = _replay(spec)
    ref_rec, ref_theta = results[False, 1]
    for key, (rec, theta) in results.items():
        assert np.array_equal(theta, ref_theta, equal_nan=True), key
        for table in ("updates", "evals"):
            x, y = getattr(rec, table), getattr(ref_rec, table)
            for col in y:
                assert np.array_equal(x[col], y[col], equal_nan=True), (key, table, col)
        skip = {"wall_seconds", "sim_updates_per_wall_s", "event_loop"}
        assert {k: v for k, v in rec.summary.items() if k not in skip} == \
            {k: v for k, v in ref_rec.summary.items() if k not in skip}, key
    s = ref_rec.summary
    if cfg["lr"] >= 200:
        assert s["diverged"] and s["stop_reason"] == "diverged" and s["updates"] < 5000
    if "target_loss" in cfg:
        assert s["stop_reason"] == "target"


class _CallsReplay(replay_mod.NumericReplay):
    """A subclass that overrides ``read``: the fast path must call the methods, not inline."""

    def read(self, worker, version):
        super().read(worker, version)


def test_inline_only_for_the_plain_replay(logreg_problem):
    step = replay_mod.StepSizes.from_table([1.0], 0.1)
    plain = replay_mod.NumericReplay(logreg_problem, 2, step, batch=4, seed=0)
    assert plain.inline() is not None
    assert _CallsReplay(logreg_problem, 2, step, batch=4, seed=0).inline() is None


@pytest.fixture(scope="module")
def logreg_problem():
    from stalesgd.problems.registry import make_problem

    return make_problem("logreg-synthetic")


@pytest.mark.parametrize("n_rows", [1, 2, 3, 977, 1024, 1025, 65536, 2**31 + 5, 2**32, 2**33])
@pytest.mark.parametrize("batch", [1, 16])
def test_batch_stream_and_compiled_draws_equal_randint(n_rows, batch):
    """The vectorised stream and the compiled Mersenne Twister give randint's indices."""
    stream = replay_mod.BatchStream(77, n_rows, batch)
    got = np.concatenate([stream.next().copy() for _ in range(300)] +
                         [stream.take(257).ravel(), stream.next()])
    want = np.random.RandomState(77).randint(0, n_rows, size=got.size, dtype=np.int64)
    assert np.array_equal(got, want)
    mask = replay_mod.BatchStream(77, n_rows, batch)._mask
    if mask:  # the compiled draws (used inside the batched replay)
        _, key, pos, _, _ = np.random.RandomState(77).get_state(legacy=True)
        keys = np.zeros((2, 624), np.uint32)
        keys[1] = key
        p = np.array([0, pos])
        out = np.zeros(batch, np.int64)
        drawn = []
        for _ in range(558):
            replay_mod._mt_draw(keys, p, 1, n_rows, mask, out)
            drawn.append(out.copy())
        assert np.array_equal(np.concatenate(drawn), want)
    else:
        assert n_rows == 1 or n_rows >= 2**32


def test_batch_stream_take_equals_next():
    a = replay_mod.BatchStream(99, 1000, 5)
    b = replay_mod.BatchStream(99, 1000, 5)
    got = np.concatenate([a.take(3), a.take(700), a.take(1)])
    want = np.stack([b.next().copy() for _ in range(704)])
    assert np.array_equal(got, want)
