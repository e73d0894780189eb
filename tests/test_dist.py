"""The distributed engine (``ray``): parameter-server semantics on a local Ray instance.

One Ray instance serves the whole module (starting one takes seconds); each run starts and
kills its own actors.  Runs are small: Ray's per-message cost, not the gradient, sets their
pace.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'stalesgd[ray]')")

from stalesgd.real.engine import RealRun, final_params  # noqa: E402
from stalesgd.real.ps import cluster  # noqa: E402
from stalesgd.real.ps.engine import RayRun  # noqa: E402

from stalesgd.experiment import expand, experiment_from_flags  # noqa: E402

PROBLEM = "logreg-synthetic"

#: the tests that start Ray instances run one after another in one test process when the
#: suite runs in several (pytest-xdist's --dist loadgroup): one test instance at a time
pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """A local Ray instance for the module, stopped after it."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=True, logging_level="ERROR")
    yield
    ray.shutdown()


def spec_for(engine: str, algorithm: str, workers: int, *, updates: int | None = 300,
             seconds: float | None = None, quiet: bool = True, dist=None, **kw):
    exp = experiment_from_flags(engine, problem=PROBLEM, algorithm=algorithm, workers=workers,
                                updates=updates, seconds=seconds, dist=dist, **kw)
    spec = expand(exp)[0]
    if quiet:  # evaluations only at both ends
        spec = dataclasses.replace(spec, eval=dataclasses.replace(
            spec.eval, every_updates=None, every_seconds=1e9))
    return spec


def run(spec):
    r = RayRun(spec, progress=False)
    return r, r.run()


def applied(record) -> dict[str, np.ndarray]:
    u = record.updates
    keep = ~np.asarray(u["dropped"])
    order = np.argsort(np.asarray(u["k"])[keep])
    return {c: np.asarray(u[c])[keep][order] for c in u}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_one_worker_equals_the_thread_engines_seq_bit_for_bit(dtype):
    ray_run, rec = run(spec_for("ray", "seq", 1, dtype=dtype, seed=3))
    thread = RealRun(spec_for("real", "seq", 1, dtype=dtype, seed=3), progress=False)
    thread_rec = thread.run()
    assert rec.summary["updates"] == thread_rec.summary["updates"] == 300
    np.testing.assert_array_equal(ray_run.final_theta, final_params(thread))
    assert rec.summary["final_loss"] == thread_rec.summary["final_loss"]
    a, b = applied(rec), applied(thread_rec)
    np.testing.assert_array_equal(a["tau"], 0)
    np.testing.assert_array_equal(a["eta"], b["eta"])


def test_with_reshuffled_epochs_one_worker_still_equals_the_thread_engine():
    small = {"n_train": 1000}  # 300 minibatches of 16: almost five epochs
    ray_run, rec = run(spec_for("ray", "seq", 1, seed=3, sampling="epochs",
                                problem_options=small))
    thread = RealRun(spec_for("real", "seq", 1, seed=3, sampling="epochs",
                              problem_options=small), progress=False)
    thread.run()
    np.testing.assert_array_equal(ray_run.final_theta, final_params(thread))
    default = RealRun(spec_for("real", "seq", 1, seed=3, problem_options=small),
                      progress=False)
    default.run()  # (the epochs changed the minibatches)
    assert not np.array_equal(final_params(default), final_params(thread))
    assert rec.summary["sampling"] == "epochs"


def test_sync_applies_the_mean_of_each_round_like_the_thread_engine():
    ray_run, rec = run(spec_for("ray", "sync", 2, updates=150))
    thread = RealRun(spec_for("real", "sync", 2, updates=150), progress=False)
    thread.run()
    u = applied(rec)
    np.testing.assert_array_equal(u["k"], np.arange(150))
    np.testing.assert_array_equal(u["tau"], 0)
    np.testing.assert_array_equal(ray_run.final_theta, final_params(thread))


def test_lock_applies_every_push_once_with_tau_from_the_version_pulled():
    ray_run, rec = run(spec_for("ray", "lock", 3, updates=400))
    u = applied(rec)
    np.testing.assert_array_equal(u["k"], np.arange(400))
    assert np.all(u["tau"] >= 0) and u["tau"].max() <= 400
    assert set(np.unique(u["worker"])) == {0, 1, 2}
    # one clock: a worker's times come in order, and the server applies after the push
    slack = 5e-3  # the clock offsets are estimated, to well within this
    assert np.all(u["t_read"] <= u["t_pulled"] + slack)
    assert np.all(u["t_pulled"] <= u["t_pushed"] + slack)
    assert np.all(u["t_pushed"] <= u["t_apply"] + slack)
    assert np.all(np.isfinite(u["t_pulled"]))
    s = rec.summary
    assert s["stop_reason"] == "updates" and s["shards"] == 1
    assert len(s["worker_nodes"].split(",")) == 3 and len(s["clock_offsets"].split(",")) == 3
    assert s["final_loss"] < rec.evals["loss"][0]


def test_leashed_counts_refused_publishes_and_drops_with_persistence_zero():
    _, rec = run(spec_for("ray", "leashed", 3, updates=300, persistence=0))
    u = rec.updates
    dropped = np.asarray(u["dropped"])
    ok = ~dropped
    np.testing.assert_array_equal(np.sort(np.asarray(u["k"])[ok]), np.arange(300))
    assert np.all(np.asarray(u["attempts"])[ok] == 1)  # persistence 0: first try or drop
    s = rec.summary
    assert s["dropped"] == int(dropped.sum())
    assert s["failed_publishes"] == s["dropped"] + s["failed_publishes_at_stop"]


def test_leashed_retries_apply_the_gradient_to_the_newer_theta():
    _, rec = run(spec_for("ray", "leashed", 3, updates=300))
    u = applied(rec)
    np.testing.assert_array_equal(u["k"], np.arange(300))
    assert rec.summary["dropped"] == 0
    # a retried publish is stale by at least the versions that beat it
    retried = u["attempts"] > 1
    assert np.all(u["tau"][retried] >= u["attempts"][retried] - 1)
    assert rec.summary["tries_per_update"] == pytest.approx(u["attempts"].mean())


def test_hogwild_shards_theta_and_claims_indices_from_shard_zero():
    run_, rec = run(spec_for("ray", "hogwild", 2, updates=300, dist={"shards": 3}))
    u = applied(rec)
    np.testing.assert_array_equal(u["k"], np.arange(300))
    assert np.all(u["tau"] >= 0)
    assert rec.summary["shards"] == 3 and len(rec.summary["server_nodes"].split(",")) == 3
    assert rec.summary["final_loss"] < rec.evals["loss"][0]


def test_online_tail_rule_lives_on_the_server():
    _, rec = run(spec_for("ray", "lock", 2, updates=400, stepsize="tail"))
    assert rec.summary["stepsize_tables"] == 1
    eta = applied(rec)["eta"]
    assert np.all(eta[:10] == 0.05) and np.any(eta != 0.05)


def test_time_budget_and_target_loss_stop_the_run():
    _, rec = run(spec_for("ray", "lock", 2, updates=None, seconds=1.5))
    assert rec.summary["stop_reason"] == "seconds"
    assert 1.5 <= rec.summary["seconds"] < 15
    spec = spec_for("ray", "lock", 2, updates=100_000, target_loss=0.5, quiet=False)
    _, rec = run(dataclasses.replace(spec, eval=dataclasses.replace(
        spec.eval, every_updates=50)))
    assert rec.summary["stop_reason"] == "target" and rec.summary["updates"] < 100_000


def test_a_nan_gradient_is_recorded_as_divergence_not_raised():
    exp = experiment_from_flags("ray", problem="linreg-synthetic", algorithm="lock",
                                workers=2, updates=20000, lr=1e6)
    _, rec = run(expand(exp)[0])
    assert rec.summary["diverged"] is True and rec.summary["stop_reason"] == "diverged"
    assert rec.summary["updates"] < 20000


def test_a_loss_blowing_up_ten_thousandfold_stops_the_run_as_diverged():
    spec = spec_for("ray", "lock", 2, updates=200_000, lr=1e10, quiet=False)
    _, rec = run(dataclasses.replace(spec, eval=dataclasses.replace(
        spec.eval, every_updates=50)))
    assert rec.summary["diverged"] is True and rec.summary["stop_reason"] == "diverged"
    assert np.all(np.isfinite(rec.evals["loss"])) and rec.summary["updates"] < 200_000


def test_a_worker_that_dies_is_counted_and_the_others_go_on():
    r = RayRun(spec_for("ray", "lock", 3, updates=None, seconds=3.0), progress=False)
    original = r._start_actors

    def start_then_kill_later(ray_):
        original(ray_)
        victim = r.workers[2]

        def kill():
            ray_.kill(victim)
        import threading
        threading.Timer(1.0, kill).start()
    r._start_actors = start_then_kill_later
    rec = r.run()
    assert rec.summary["workers_lost"] == 1
    assert rec.summary["stop_reason"] == "seconds"
    late = applied(rec)["t_apply"] > 2.0
    assert late.any()  # the other two went on


def test_engine_ray_mixes_with_real_and_sim_in_one_experiment(tmp_path):
    toml = tmp_path / "mixed.toml"
    toml.write_text(f"""
name = "mixed"
workers = 2
[problem]
name = "{PROBLEM}"
[algorithm]
name = "lock"
[stop]
updates = 300
[sweep]
engine = ["real", "ray", "sim"]
""")
    # without --address the run starts its own local instance: not the cluster Ray's
    # RAY_ADDRESS (or the last `ray start` on this machine) names, which ray.init() joins
    env = dict(os.environ, RAY_ADDRESS="127.0.0.1:1")
    out = subprocess.run([sys.executable, "-m", "stalesgd.app.cli", "run", str(toml), "--out",
                          str(tmp_path), "--no-progress", "--no-report"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr
    from stalesgd.records import load_results

    res = load_results(next(tmp_path.glob("mixed-*")))
    assert sorted(res.runs["engine"]) == ["ray", "real", "sim"]
    assert res.runs.loc[res.runs["engine"] == "ray", "cluster"].item() == "local"
    ray_rows = res.updates[res.updates["run_id"] == res.runs.loc[
        res.runs["engine"] == "ray", "run_id"].item()]
    assert ray_rows["t_pulled"].notna().all()
    other = res.updates[res.updates["run_id"] != ray_rows["run_id"].iloc[0]]
    assert other["t_pulled"].isna().all()


def test_cli_without_ray_says_how_to_install(monkeypatch, capsys):
    from stalesgd.app import cli

    monkeypatch.setattr(cluster, "ray_installed", lambda: False)
    from stalesgd.real.ps import engine as ps_engine

    monkeypatch.setattr(ps_engine, "ray_installed", lambda: False)
    code = cli.main(["dist", "--problem", PROBLEM, "--algorithm", "lock", "--workers", "2",
                     "--updates", "10", "--no-progress"])
    assert code == 2
    assert "pip install 'stalesgd[ray]'" in capsys.readouterr().err


def test_unreachable_address_is_a_clear_error(capsys, tmp_path):
    from stalesgd.app import cli

    code = cli.main(["dist", "--problem", PROBLEM, "--algorithm", "lock", "--workers", "2",
                     "--updates", "10", "--no-progress", "--address", "127.0.0.1:1",
                     "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "no Ray cluster answers at 127.0.0.1:1" in err and "Traceback" not in err


def test_a_schedule_parks_and_resumes_worker_actors():
    # 3 workers, then 1 from update 120 on, then 2 from update 240 on: a worker told to
    # park stops at the top of its next step (a gradient it already pulled still lands)
    steps = [[0, 3], [120, 1], [240, 2]]
    spec = spec_for("ray", "lock", 3, updates=360, controller="schedule",
                    controller_options={"steps": steps}, quiet=False)
    r, rec = run(spec)
    rows = applied(rec)
    k, w = rows["k"], rows["worker"]
    alone = (k >= 150) & (k < 240)  # (30 updates of slack for the decision and in-flight ones)
    assert np.count_nonzero(w[alone] != 0) <= 4, np.bincount(w[alone], minlength=3)
    late = k >= 270
    assert np.count_nonzero(w[late] == 2) <= 2 and np.count_nonzero(w[late] == 1) > 0
    assert np.count_nonzero(w[k < 120] != 0) > 0  # all three ran at first
    ctl = rec.control
    assert list(ctl["m"]) == [3, 1, 2] and len(ctl["t_set"]) == 3
    assert rec.summary["controller"] == "schedule" and rec.summary["controller_changes"] == 2
    assert 1.0 < rec.summary["mean_active"] < 3.0
    assert set(np.asarray(rec.evals["active_workers"])) <= {1, 2, 3}


def test_a_parked_worker_holds_no_parameter_copy_and_resumes():
    import threading
    import time

    from stalesgd.real.ps.worker import Worker, WorkerSetup

    from stalesgd.problems import make_problem

    problem = make_problem(PROBLEM)
    w = Worker(0, 1, problem, WorkerSetup(algorithm="lock", batch=16, lr=0.05,
                                          persistence=-1, bounds=()), servers=[])
    n = problem.model.n_params
    assert w.theta.size == w.grad.size == w.new.size == n
    w.set_active(False)
    seen = {}
    t = threading.Thread(target=lambda: seen.setdefault("go_on", w.wait_while_parked()))
    t.start()
    deadline = time.monotonic() + 5  # (the thread may get its core late on a busy machine)
    while w.theta.size and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.05)
    seen["parked_sizes"] = (w.theta.size, w.grad.size, w.new.size)
    w.set_active(True)
    t.join(5)
    assert seen == {"parked_sizes": (0, 0, 0), "go_on": True}
    assert w.theta.size == w.grad.size == w.new.size == n and w.parked_seconds >= 0.04
    w.set_active(False)
    w.end()  # the run ended while it was parked
    assert w.wait_while_parked() is False


def test_a_slowed_down_worker_spins_on_the_distributed_engine_too():
    # worker 1 spins 999 times its gradient (~20 µs here) after each one.  Its spin is seen
    # in its own span from the pull's arrival to its push (gradient and spin, the worker's
    # clock, no message in it): a median 1500-3300 times worker 0's on a loaded machine.  Its
    # share of the updates is not asserted beyond "fewer": Ray's messages set worker 0's
    # pace, and on a loaded machine they took 70-180 ms a cycle, so that the spinning
    # worker's share went from a fifth up to 0.375 (2 of 4 runs beside three busy processes).
    # 6 s: in a clean-clone run beside the README's runs a 3-s run applied 2 updates in all
    # (none of the spinning worker's), where an idle machine applies ~1,100
    spec = spec_for("ray", "lock", 2, updates=None, seconds=6.0, slowdown="1=1000")
    spec = dataclasses.replace(spec, problem=dataclasses.replace(spec.problem,
                                                                 name="mlp-synthetic"))
    _, rec = run(spec)
    rows = applied(rec)
    workers = rows["worker"]
    assert rec.summary["slowdown"] == "1=1000"
    counts = np.bincount(workers, minlength=2)
    assert 0 < counts[1] < counts[0], counts
    span = rows["t_pushed"] - rows["t_pulled"]  # its gradient (and spin), on its own clock
    slow, plain = np.median(span[workers == 1]), np.median(span[workers == 0])
    assert slow > 100 * plain, (slow, plain)


@pytest.mark.parametrize("algorithm", [
    "lock", pytest.param("leashed", marks=pytest.mark.slow),
    pytest.param("hogwild", marks=pytest.mark.slow)])
def test_net_delay_holds_back_every_message(algorithm):
    # det:5ms on every message: a pull (request and reply) takes at least 10 ms, and a
    # gradient (lock, hogwild) or new θ (leashed) reaches the server 5 ms after it left
    spec = spec_for("ray", algorithm, 2, updates=60, dist={"net_delay": "det:5ms"})
    _, rec = run(spec)
    rows = applied(rec)
    assert rec.summary["net_delay"] == "det:5ms"
    assert rows["k"].size == 60
    # t_read and t_pulled are both the worker's clock; t_apply is the server's, moved onto
    # the driver's clock by an offset estimated to within half a round trip (~0.6 ms here)
    assert np.all(rows["t_pulled"] - rows["t_read"] >= 0.010 - 1e-6)
    if algorithm != "hogwild":  # (hogwild's t_apply is its claim, a round trip of its own)
        assert np.all(rows["t_apply"] - rows["t_pushed"] >= 0.005 - 1e-3)


def test_a_bad_net_delay_is_refused_naming_the_syntax(capsys, tmp_path):
    from stalesgd.app.cli import main

    code = main(["dist", "--problem", PROBLEM, "--algorithm", "lock", "--workers", "2",
                 "--net-delay", "5ms", "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--net-delay '5ms'" in err and "exp:MEAN" in err
    assert not any(tmp_path.iterdir())


def test_with_a_net_delay_seq_still_equals_the_thread_engine_bit_for_bit():
    # a pull must not overtake the worker's own push still in flight
    ray_run, rec = run(spec_for("ray", "seq", 1, updates=150, seed=3,
                                dist={"net_delay": "exp:1ms"}))
    thread = RealRun(spec_for("real", "seq", 1, updates=150, seed=3), progress=False)
    thread.run()
    np.testing.assert_array_equal(applied(rec)["tau"], 0)
    np.testing.assert_array_equal(ray_run.final_theta, final_params(thread))


@pytest.mark.parametrize("extra", [
    {"slowdown": "0=1000,1=1000"},  # spins of ~1000 gradients of batch 4096 (seconds each)
    {"dist": {"net_delay": "det:5s"}},  # a pull waits 10 s
])
def test_a_stop_cuts_spins_and_message_delays_short(extra):
    import time

    spec = spec_for("ray", "lock", 2, updates=None, seconds=1.0, **extra)
    spec = dataclasses.replace(spec, problem=dataclasses.replace(
        spec.problem, name="mlp-synthetic", batch=4096))
    r = RayRun(spec, progress=False)
    started = []
    start_actors = r._start_actors

    def start_then_note_the_time(ray_):
        start_actors(ray_)
        started.append(time.monotonic())
    r._start_actors = start_then_note_the_time
    rec = r.run()
    assert rec.summary["stop_reason"] == "seconds"
    assert rec.summary["seconds"] < 2.5, rec.summary["seconds"]
    # nothing after the stop waits for a spin or a delayed message either (beside three
    # busy processes: 1.2-1.4 s from the actors' start to the end).  The start-up itself
    # (actor processes, their kernels compiled) is not timed: it runs no spin or delayed
    # message, and on that loaded machine it alone took 40 s (the whole run 42-44 s)
    assert time.monotonic() - started[0] < 10
