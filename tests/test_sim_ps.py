"""The simulator's parameter-server topology (``sim --topology ps``, ``sim/psmodel.py``):
exact timings of the message model, τ as the distributed engine defines it, the servers'
queue, the added message delay, numeric replay, and the experiment's settings."""

from __future__ import annotations

import numpy as np
import pytest
from stalesgd.app.cli import main
from stalesgd.sim.engine import simulate_timing
from stalesgd.sim.psmodel import Network
from stalesgd.sim.run import SimRun
from stalesgd.sim.timing import parse_timing

from stalesgd.experiment import ExperimentError, expand, experiment_from_flags, loads_experiment
from stalesgd.problems.registry import make_problem

MS = 1e-3


def net(latency=1 * MS, per_byte=0.0, serve=0.0, theta_bytes=0, shards=1, delay=None):
    return Network(latency=latency, per_byte=per_byte, serve=serve, theta_bytes=theta_bytes,
                   shards=shards, delay=None if delay is None else parse_timing(delay))


def run(algorithm, workers, network, compute="det:2ms", read="det:0", update="det:0",
        updates=200, seed=0, **kw):
    return simulate_timing(algorithm, workers, cores=workers, compute=compute, read=read,
                           update=update, updates=updates, seed=seed, network=network, **kw)


def applied(res):
    u = res.updates
    return {k: np.asarray(v)[~np.asarray(u["dropped"])] for k, v in u.items()}


# ------------------------------------------------------------------------------ timings


def test_one_worker_cycle_is_the_message_model_exactly():
    """Pull: request (1 ms), the server's 0.5 ms and its serialising θ (8000 B · 125 ns =
    1 ms), the reply (1 ms); compute 2 ms; the worker serialises the push (1 ms), which
    takes 1 ms to arrive (the next pull right behind it); the server takes 0.5 ms per
    message, and the push's apply 0.25 ms besides."""
    res = run("seq", 1, net(per_byte=125e-9, serve=0.5 * MS, theta_bytes=8000),
              update="det:250us", updates=5)
    t = applied(res)["t_apply"]
    # first apply: 1 + 0.5 (pull served) + 1 + 1 (reply) + 2 (compute) + 1 + 1 (push)
    # + 0.75 = 8.25 ms; then per cycle: pull served 0.5, reply 2, compute 2, push 2,
    # apply 0.75 = 7.25 ms
    np.testing.assert_allclose(t, 8.25 * MS + 7.25 * MS * np.arange(5), rtol=0, atol=1e-12)
    # the worker is busy serialising its push: it asks for θ again 1 ms after its compute
    reads = applied(res)["t_read"]
    np.testing.assert_allclose(reads[1:], 6.5 * MS + 7.25 * MS * np.arange(4), rtol=0,
                               atol=1e-12)
    assert res.config["event_loop"] == "simpy" and res.config["topology"] == "ps"


def test_a_deterministic_net_delay_adds_to_every_message():
    base = applied(run("seq", 1, net(), updates=4))["t_apply"]
    slow = applied(run("seq", 1, net(delay="det:5ms"), updates=4))["t_apply"]
    # first apply: three messages (pull, reply, push); then two a cycle (reply, push)
    np.testing.assert_allclose(slow - base, 15 * MS + 10 * MS * np.arange(4), atol=1e-12)


def test_jitter_varies_message_times_around_the_same_mean():
    """One Leashed-SGD worker only waits for replies (no message queues behind another), so
    its mean cycle stays four message times and the gradient."""
    base = applied(run("leashed", 1, net(), updates=3000))["t_apply"]
    jittered_net = Network(latency=1 * MS, per_byte=0.0, serve=0.0, theta_bytes=0,
                           jitter=0.5)
    jit = applied(run("leashed", 1, jittered_net, updates=3000))["t_apply"]
    cycles, jittered = np.diff(base), np.diff(jit)
    assert cycles.std() < 1e-12 and jittered.std() > 0.2 * MS
    assert jittered.mean() == pytest.approx(cycles.mean(), rel=0.03)
    with pytest.raises(ValueError, match="jitter"):
        Network(latency=0.0, per_byte=0.0, serve=0.0, theta_bytes=0, jitter=-1.0)


def test_the_server_queue_bounds_the_rate():
    """A server busy 1 ms per message, two messages (push, pull) per update, workers that
    compute in 0.1 ms: 500 updates/s whatever the number of workers."""
    for m in (2, 4, 8):
        res = run("lock", m, net(latency=0.0, serve=1 * MS), compute="det:100us",
                  updates=2000)
        assert res.n_updates / res.duration == pytest.approx(500, rel=0.01), m


@pytest.mark.parametrize("cores, starts, works, ends", [
    (0.5, [0.0], [1.0], [2.0]),
    (1.0, [0.0, 0.0], [1.0, 1.0], [2.0, 2.0]),
    (1.5, [0.0, 0.0], [1.0, 1.0], [4 / 3, 4 / 3]),
    (2.0, [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]),
    # B joins at 0.5 s: A has 0.5 s left at half speed (ends 1.5), B then runs alone
    (1.0, [0.0, 0.5], [1.0, 1.0], [1.5, 2.0]),
    (1.0, [0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [3.0, 5.0, 6.0]),
])
def test_processor_sharing_gives_each_job_its_share(cores, starts, works, ends):
    import simpy
    from stalesgd.sim.network import SharedCPU

    env = simpy.Environment()
    cpu = SharedCPU(env, cores)
    finished = [None] * len(starts)

    def job(i):
        yield env.timeout(starts[i])
        yield from cpu.run(works[i])
        finished[i] = env.now

    for i in range(len(starts)):
        env.process(job(i))
    env.run()
    np.testing.assert_allclose(finished, ends, rtol=1e-12)


def test_one_machine_bounds_the_rate_by_its_cores():
    """On a shared machine every message, server step and gradient takes core time: lock's
    rate stops growing once the cores are busy, at cores ÷ (core time per update)."""
    rates = []
    for m in (1, 2, 4, 8):
        res = run("lock", m, Network(latency=1 * MS, per_byte=0.0, serve=0.0, theta_bytes=0,
                                     cores=1.5), compute="det:1ms", updates=3000)
        rates.append(res.n_updates / res.duration)
    # per update: pull request and reply, the push (1 ms each), the gradient (1 ms)
    assert rates[-1] == pytest.approx(1.5 / 4e-3, rel=0.02)
    # one worker: its push and its next pull request share the 1.5 cores (4/3 ms), then
    # the reply and the gradient
    assert rates[0] == pytest.approx(1 / (4 / 3 * MS + 2 * MS), rel=0.01)
    assert rates[1] == pytest.approx(rates[3], rel=0.02)
    free = run("lock", 8, net(), compute="det:1ms", updates=3000)
    assert free.n_updates / free.duration > 3 * rates[-1]  # (without: no core bound)


# ------------------------------------------------------------------------------ τ


@pytest.mark.parametrize("m", [2, 4, 8])
def test_lock_staleness_is_the_other_workers_updates_in_flight(m):
    """Every worker has one gradient in flight from its pull to its apply, and the servers
    serve a pull right behind the push before it: mean τ is just under m − 1."""
    res = run("lock", m, net(serve=10e-6), compute="exp:2ms", updates=5000, seed=3)
    tau = applied(res)["tau"]
    assert m - 1 - 0.1 < tau.mean() <= m - 1
    assert res.dropped == 0 and res.failed_publishes == 0


def test_sync_applies_one_mean_per_round_at_tau_zero():
    res = run("sync", 4, net(), compute="exp:2ms", updates=100)
    u = applied(res)
    assert (u["tau"] == 0).all() and (u["worker"] == 0).all()
    np.testing.assert_array_equal(u["k"], np.arange(100))
    # a round takes at least a round trip and the slowest worker's compute
    assert (np.diff(u["t_apply"]) >= 2 * MS).all()


def test_hogwild_claims_consecutive_indices_from_shard_zero():
    res = run("hogwild", 4, net(shards=3, theta_bytes=3000, per_byte=1e-7),
              compute="exp:2ms", updates=1000, seed=1)
    u = applied(res)
    np.testing.assert_array_equal(u["k"], np.arange(1000))
    assert (u["tau"] >= 0).all() and u["tau"].mean() > 1.0


def test_leashed_publishes_fail_retry_and_drop():
    res = run("leashed", 4, net(theta_bytes=10_000, per_byte=1e-7), compute="exp:2ms",
              updates=1000, seed=2, persistence=0)
    u = res.updates
    dropped = np.asarray(u["dropped"])
    assert res.dropped == dropped.sum() > 0
    assert (np.asarray(u["k"])[dropped] == -1).all()
    ok = ~dropped
    assert (np.asarray(u["attempts"])[ok] == 1).all()  # persistence 0: no retry succeeds
    unbounded = run("leashed", 4, net(theta_bytes=10_000, per_byte=1e-7), compute="exp:2ms",
                    updates=1000, seed=2, persistence=None)
    assert unbounded.dropped == 0 and unbounded.failed_publishes > 0
    assert np.asarray(unbounded.updates["attempts"]).max() > 1
    one = run("leashed", 1, net(), updates=50)
    assert one.failed_publishes == 0 and (applied(one)["tau"] == 0).all()


def test_seeded_and_deterministic():
    a = run("lock", 4, net(delay="exp:1ms"), compute="exp:2ms", updates=500, seed=5)
    b = run("lock", 4, net(delay="exp:1ms"), compute="exp:2ms", updates=500, seed=5)
    c = run("lock", 4, net(delay="exp:1ms"), compute="exp:2ms", updates=500, seed=6)
    for key in ("t_apply", "tau", "worker"):
        np.testing.assert_array_equal(a.updates[key], b.updates[key])
    assert not np.array_equal(a.updates["t_apply"], c.updates["t_apply"])


def test_the_net_delay_does_not_change_the_compute_times():
    """The delays come from streams of their own: a worker's compute draws are the same."""
    a = run("seq", 1, net(), compute="exp:2ms", updates=50, seed=4)
    b = run("seq", 1, net(delay="det:1ms"), compute="exp:2ms", updates=50, seed=4)
    cycle_a = np.diff(applied(a)["t_apply"])
    cycle_b = np.diff(applied(b)["t_apply"])
    np.testing.assert_allclose(cycle_b - cycle_a, 2 * MS, atol=1e-12)


def test_elastic_parking_on_servers():
    res = run("lock", 4, net(), compute="exp:2ms", updates=3000,
              active_schedule=[(0.2, 1)])
    u = applied(res)
    late = u["t_read"] > 0.21
    assert late.sum() > 100 and set(u["worker"][late].tolist()) == {0}
    assert u["tau"][u["t_read"] > 0.25].max() == 0


def test_more_workers_than_cores_take_turns():
    res = simulate_timing("lock", 4, cores=1, compute="det:2ms", read="det:0",
                          update="det:0", updates=400, network=net(latency=10e-6))
    # one core: the four workers' compute runs one at a time
    assert res.n_updates / res.duration == pytest.approx(500, rel=0.02)


# ------------------------------------------------------------------------------ replay


def test_one_worker_on_a_server_trains_exactly_as_sequential_sgd():
    """seq on servers reads, computes and applies the same minibatches in the same order as
    seq in shared memory: the same losses at the same update counts."""
    def record(topology):
        exp = experiment_from_flags("sim", problem="logreg-synthetic", algorithm="seq",
                                    workers=1, updates=600, seed=7,
                                    sim={"topology": topology})
        rec = SimRun(expand(exp)[0], progress=False).run()
        return rec.evals

    shared, ps = record("shared"), record("ps")
    np.testing.assert_array_equal(np.asarray(shared["k"]), np.asarray(ps["k"]))
    np.testing.assert_array_equal(np.asarray(shared["loss"]), np.asarray(ps["loss"]))


def test_a_ps_run_record_names_its_network(tmp_path, capsys):
    code = main(["sim", "--problem", "logreg-synthetic", "--algorithm", "hogwild",
                 "--workers", "3", "--topology", "ps", "--shards", "3", "--latency", "200us",
                 "--per-byte", "1ns", "--server-time", "50us", "--net-delay", "exp:1ms",
                 "--updates", "300", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "parameter servers" in out and "net delay exp:1ms" in out
    assert "r0000  sim-ps" in out  # the runs table names the engine as reports do
    import pandas as pd
    runs = pd.read_parquet(next(tmp_path.glob("*/runs.parquet")))
    row = runs.iloc[0]
    assert row["topology"] == "ps" and row["shards"] == 3 and row["net_delay"] == "exp:1ms"
    assert row["latency"] == pytest.approx(200e-6) and row["per_byte"] == pytest.approx(1e-9)
    assert row["server_time"] == pytest.approx(50e-6)


def test_simulated_shards_are_at_most_one_per_parameter(tmp_path):
    """As on the distributed engine: θ of 3 parameters splits over at most 3 servers."""
    from importlib.util import find_spec

    import pandas as pd
    from stalesgd.real.ps.engine import RayRun

    args = ["sim", "--problem", "logreg-synthetic", "-o", "n_features=2", "--algorithm",
            "hogwild", "--workers", "2", "--topology", "ps", "--shards", "256",
            "--updates", "50", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    runs = pd.read_parquet(next(tmp_path.glob("*/runs.parquet")))
    assert runs.iloc[0]["shards"] == 3
    if find_spec("ray") is None:  # (the distributed engine's half needs Ray importable)
        return
    exp = experiment_from_flags("ray", problem="logreg-synthetic", algorithm="hogwild",
                                workers=2, updates=50, dist={"shards": 256},
                                problem_options={"n_features": 2})
    assert len(RayRun(expand(exp)[0], progress=False).bounds) - 1 == 3  # (not started)


# ------------------------------------------------------------------------------ settings


SIM_PS = """
engine = "sim"
workers = 2
[problem]
name = "logreg-synthetic"
[algorithm]
name = "lock"
[stop]
updates = 100
[sim]
topology = "ps"
"""


def test_the_default_number_of_shards_is_no_setting():
    for extra in ("[dist]\nshards = 2\n", '[sweep]\n"dist.shards" = [2]\n'):
        assert [r.dist.shards for r in expand(loads_experiment(SIM_PS + extra))] == [2]


def test_shards_are_accepted_when_a_hogwild_run_uses_them():
    exp = loads_experiment(SIM_PS + '[dist]\nshards = 4\n[sweep]\n"algorithm.name" = '
                           '["lock", "hogwild"]\n')
    assert sorted((r.algorithm.name, r.dist.shards) for r in expand(exp)) == [
        ("hogwild", 4), ("lock", 2)]


def test_dist_settings_apply_to_simulated_servers():
    exp = loads_experiment(SIM_PS.replace('name = "lock"', 'name = "hogwild"')
                           + '[dist]\nshards = 4\nnet_delay = "exp:1ms"\n')
    run_spec = expand(exp)[0]
    assert run_spec.dist.shards == 4 and run_spec.dist.net_delay == "exp:1ms"


@pytest.mark.parametrize("text, words", [
    (SIM_PS.replace('topology = "ps"', 'latency = "1ms"'),
     "only with sim.topology = 'ps'"),
    (SIM_PS.replace('topology = "ps"', 'topology = "mesh"'), "shared, ps"),
    (SIM_PS + 'latency = "-1ms"\n', "a duration >= 0"),
    (SIM_PS + "per_byte = true\n", "not a duration"),
    (SIM_PS.replace('topology = "ps"', "") + "[dist]\nshards = 4\n", "is set but never used"),
    (SIM_PS + '[dist]\naddress = "auto"\n', "a cluster address with engine = \"ray\""),
    (SIM_PS + '[algorithm.options]\nlock_handover = "2us"\n', "no lock or compare-and-swap"),
    (SIM_PS + 'latency = "2e6s"\n', "at most 1e+06 s"),
    (SIM_PS.replace('topology = "ps"', "") + "[dist]\nshards = 4\n", "dist.shards = 4"),
    # shards split θ for Hogwild! only: with lock alone they would be ignored
    (SIM_PS + "[dist]\nshards = 4\n", "no run splits θ over servers"),
    (SIM_PS + '[sweep]\n"dist.shards" = [1, 4]\n', "no run splits θ over servers"),
])
def test_bad_settings_are_refused_with_what_is_allowed(text, words):
    with pytest.raises(ExperimentError, match=None) as err:
        exp = loads_experiment(text)
        SimRun(expand(exp)[0], progress=False)
    assert words in str(err.value)


# ------------------------------------------------------------------------------ calibration


def ray_folder(root, configs, *, cores=2, with_real=False, fields=None):
    """A results folder of synthetic ``ray`` runs: per (algorithm, workers, pull, compute,
    send) one run whose every worker pulls for ``pull`` s, computes for ``compute`` s and
    sends for ``send`` s, the server applying ``send`` + 1 ms after the push."""
    from stalesgd.records import ResultsFolder, RunRecord

    folder = ResultsFolder.create("fake", root, config_toml="",
                                  machine={"hostname": "fake", "usable_cores": cores,
                                           "logical_cores": cores})
    empty_evals = {"t": np.zeros(0), "k": np.zeros(0, np.int64), "loss": np.zeros(0),
                   "active_workers": np.zeros(0, np.int32)}
    with folder:
        for i, (alg, m, pull, compute, send) in enumerate(configs + (
                [("lock", 1, 0.0, 0.0, 0.0)] if with_real else [])):
            engine = "real" if with_real and i == len(configs) else "ray"
            cycle = pull + compute + send
            n = 300
            w = np.repeat(np.arange(m), n).astype(np.int32)
            t_read = np.tile(np.arange(n) * cycle, m) + w * (cycle / m) + 1e-3
            rows = {"k": np.arange(n * m), "worker": w, "t_read": t_read,
                    "t_pulled": t_read + pull, "t_pushed": t_read + pull + compute,
                    "t_apply": t_read + pull + compute + send + 1e-3,
                    "tau": np.full(n * m, m - 1), "eta": np.full(n * m, 0.05),
                    "attempts": np.ones(n * m, np.int32), "dropped": np.zeros(n * m, bool)}
            if engine == "real":
                rows = {k: v for k, v in rows.items() if k not in ("t_pulled", "t_pushed")}
            summary = {"run_id": f"r{i:04d}", "engine": engine, "algorithm": alg,
                       "problem": "logreg-synthetic", "workers": m, "batch": 16,
                       "dtype": "float64", "updates": n * m, "seconds": float(cycle * n),
                       **((fields or [{}] * len(configs))[i] if i < len(configs) else {})}
            folder.write_run(summary, RunRecord(summary=summary, updates=rows,
                                                evals=empty_evals))
    return folder.path


COSTS = {"read_per_param": 1e-10, "update_per_param": 2e-10, "fused_per_param": 2.5e-10,
         "cas_cost": 5e-8, "source": "test"}


def test_calibrating_from_ray_runs_fits_the_servers_and_reproduces_their_rates(tmp_path):
    from stalesgd.analysis.calibrate import calibrate

    path = ray_folder(tmp_path, [("lock", 1, 2e-3, 1e-3, 0.5e-3),
                                 ("lock", 2, 3e-3, 1e-3, 0.5e-3)])
    cal = calibrate(path, costs=COSTS)
    assert cal.topology == "ps" and set(cal.data["network"]) >= {"latency", "per_byte",
                                                                 "server_time"}
    # lock's compute: the push minus the pull's arrival (the gradient; its sending is the
    # simulated worker's serialising, from the fitted cost per byte)
    one = cal.configuration("lock", 1)
    assert one["compute"]["mean"] == pytest.approx(1e-3, rel=1e-9)
    two = cal.configuration("lock", 2)
    assert two["network_jitter"] in (0.0, 0.15, 0.3, 0.5, 0.8) and 0 <= two["tau_tv"] < 0.5
    # one machine: its effective cores are fitted to the 2-worker run
    assert 0.25 <= cal.data["network"]["cores"] <= 2 and "fitted" in cal.data["network"][
        "cores_source"]
    cal_path = cal.save(tmp_path / "cal.json")
    for m, rate in ((1, 1 / 3.5e-3), (2, 2 / 4.5e-3)):
        exp = experiment_from_flags("sim", problem="logreg-synthetic", algorithm="lock",
                                    workers=m, batch=16, updates=3000,
                                    sim={"topology": "ps", "calibration": str(cal_path),
                                         "timing_only": True})
        rec = SimRun(expand(exp)[0], progress=False).run()
        assert rec.summary["updates_per_s"] == pytest.approx(rate, rel=0.1), m
        assert rec.summary["prediction"] is False
        assert rec.summary["network_cores"] == cal.data["network"]["cores"]


def test_a_calibration_simulates_only_its_own_topology(tmp_path):
    from stalesgd.analysis.calibrate import calibrate

    path = ray_folder(tmp_path, [("lock", 1, 2e-3, 1e-3, 0.5e-3)], with_real=True)
    assert calibrate(path, costs=COSTS).topology == "shared"  # the thread engine's first
    cal = calibrate(path, runs=["r0000"], costs=COSTS)
    assert cal.topology == "ps"
    with pytest.raises(Exception, match="mix the thread engine and the distributed engine"):
        calibrate(path, runs=["r0000", "r0001"], costs=COSTS)
    cal_path = str(cal.save(tmp_path / "cal.json"))
    exp = experiment_from_flags("sim", problem="logreg-synthetic", algorithm="lock",
                                workers=1, batch=16, updates=100,
                                sim={"calibration": cal_path})
    with pytest.raises(ExperimentError, match="simulate it with sim.topology = 'ps'"):
        SimRun(expand(exp)[0], progress=False)


def test_messages_alone_move_the_clock():
    """Zero compute, copy and apply times: with parameter servers the messages still take
    time, so the run is allowed (shared memory refuses it: its clock would stand still)."""
    text = SIM_PS + 'compute = "det:0"\nread = "det:0"\nupdate = "det:0"\ntiming_only = true\n'
    rec = SimRun(expand(loads_experiment(text))[0], progress=False).run()
    assert rec.summary["updates"] == 100 and rec.summary["seconds"] > 0
    with pytest.raises(ExperimentError, match="the simulated clock would never move"):
        SimRun(expand(loads_experiment(text.replace('topology = "ps"', "")))[0],
               progress=False)


def test_a_det_0_delay_is_no_delay_and_shard_counts_are_not_mixed(tmp_path):
    from stalesgd.analysis.calibrate import calibrate

    from stalesgd.calibration import CalibrationError

    path = ray_folder(tmp_path / "a", [("lock", 1, 2e-3, 1e-3, 0.5e-3),
                                       ("lock", 2, 3e-3, 1e-3, 0.5e-3)],
                      fields=[{"net_delay": "det:0"}, {"net_delay": "exp:1ms"}])
    from stalesgd.units import adds_delay

    assert [adds_delay(x) for x in (None, float("nan"), "", "det:0", "det:0ms", "exp:1ms")
            ] == [False, False, False, False, False, True]
    cal = calibrate(path, costs=COSTS)  # the det:0 run is a baseline, the other is left out
    assert cal.data["source"]["run_ids"] == ["r0000"]
    assert cal.data["source"]["skipped_run_ids"] == ["r0001"]
    path = ray_folder(tmp_path / "b", [("hogwild", 2, 2e-3, 1e-3, 0.5e-3),
                                       ("hogwild", 2, 3e-3, 1e-3, 0.5e-3)],
                      fields=[{"shards": 1}, {"shards": 3}])
    with pytest.raises(CalibrationError, match=r"shards \[1, 3\]"):
        calibrate(path, costs=COSTS)


def test_ctrl_c_while_fitting_ends_the_calibration(tmp_path, interrupted_simulations):
    from stalesgd.analysis.calibrate import calibrate

    path = ray_folder(tmp_path, [("lock", 1, 2e-3, 1e-3, 0.5e-3)])
    with pytest.raises(KeyboardInterrupt):
        calibrate(path, costs=COSTS)


def test_shards_split_only_hogwild_runs_and_their_keys():
    from stalesgd.analysis.load import config_key

    exp = loads_experiment(SIM_PS + '[sweep]\n"dist.shards" = [1, 4]\n'
                           '"algorithm.name" = ["lock", "hogwild"]\n')
    runs = expand(exp)
    assert sorted((r.algorithm.name, r.dist.shards) for r in runs) == [
        ("hogwild", 1), ("hogwild", 4), ("lock", 2)]
    row = {"problem": "p", "algorithm": "hogwild", "workers": 2}
    assert config_key({**row, "shards": 4}).endswith("shards=4")
    assert "shards" not in config_key({**row, "shards": 2})  # the default: joins real runs
    assert "shards" not in config_key({**row, "algorithm": "lock", "shards": 1})


def test_the_fit_tells_latency_from_cost_per_byte_from_the_cycle_split(tmp_path):
    """Leashed-SGD's records of one worker made by the model itself (latency L, cost per
    byte p, θ of B bytes): pull 2L + Bp, publish → apply L + Bp, apply → next read L (the
    small reply).  Updates/s alone are met by any L and p of the same cycle; the cycle's
    split pins both."""
    from stalesgd.analysis.calibrate import calibrate

    from stalesgd.records import ResultsFolder, RunRecord

    latency, per_byte = 1e-3, 50e-9
    theta_bytes = make_problem("mlp-synthetic").model.n_params * 8
    pull = 2 * latency + theta_bytes * per_byte
    compute, publish, reply = 1e-3, latency + theta_bytes * per_byte, latency
    cycle = pull + compute + publish + reply
    n = 300
    t_read = np.arange(n) * cycle + 1e-3
    rows = {"k": np.arange(n), "worker": np.zeros(n, np.int32), "t_read": t_read,
            "t_pulled": t_read + pull, "t_pushed": t_read + pull + compute,
            "t_apply": t_read + pull + compute + publish, "tau": np.zeros(n, np.int64),
            "eta": np.full(n, 0.05), "attempts": np.ones(n, np.int32),
            "dropped": np.zeros(n, bool)}
    folder = ResultsFolder.create("fake", tmp_path, config_toml="",
                                  machine={"hostname": "fake", "usable_cores": 2,
                                           "logical_cores": 2})
    summary = {"run_id": "r0000", "engine": "ray", "algorithm": "leashed",
               "problem": "mlp-synthetic", "workers": 1, "batch": 16, "dtype": "float64",
               "updates": n, "seconds": float(cycle * n)}
    empty = {"t": np.zeros(0), "k": np.zeros(0, np.int64), "loss": np.zeros(0),
             "active_workers": np.zeros(0, np.int32)}
    with folder:
        folder.write_run(summary, RunRecord(summary=summary, updates=rows, evals=empty))
    net = calibrate(folder.path, costs=COSTS).data["network"]
    assert net["latency"] == pytest.approx(latency, rel=0.25)
    assert net["per_byte"] == pytest.approx(per_byte, rel=0.25)
