"""Stragglers on purpose (``slowdown``): the setting, and what each engine does with it."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from stalesgd.analysis.calibrate import calibrate
from stalesgd.analysis.load import config_key
from stalesgd.app.cli import main
from stalesgd.real.engine import run_real
from stalesgd.sim.run import SimRun
from test_calibrate import COSTS, fake_folder

from stalesgd.experiment import (
    ExperimentError,
    expand,
    experiment_from_flags,
    loads_experiment,
    parse_experiment,
)
from stalesgd.experiment.toml_writer import to_toml
from stalesgd.problems.registry import make_problem
from stalesgd.slowdown import parse_slowdown, slowdown_factors


def flags(engine="real", workers=2, algorithm="lock", **kw):
    kw.setdefault("problem", "logreg-synthetic")
    return experiment_from_flags(engine, algorithm=algorithm, workers=workers, **kw)


def own_cycle(record, worker: int) -> float:
    """Median seconds between two consecutive updates of ``worker`` (robust to the rare long
    stretch a busy machine leaves it off its core)."""
    u = record.updates
    t = np.sort(np.asarray(u["t_apply"])[np.asarray(u["worker"]) == worker])
    return float(np.median(np.diff(t)))


def shares(record, workers: int) -> np.ndarray:
    """Each worker's share of the applied updates."""
    u = record.updates
    w = np.asarray(u["worker"])[~np.asarray(u["dropped"])]
    counts = np.bincount(w, minlength=workers)
    return counts / counts.sum()


# ------------------------------------------------------------------------------ the setting


@pytest.mark.parametrize("value, canonical", [
    ("1=3", "1=3"), (" 1 = 3.0 , 0=1.5 ", "0=1.5,1=3"), ({"1": 3}, "1=3"), ({1: 2.5}, "1=2.5"),
    ("1=1", None), ("", None), ({}, None), (None, None), ("0=1000", "0=1000"),
])
def test_canonical_form(value, canonical):
    assert parse_slowdown(value, 2) == canonical


@pytest.mark.parametrize("value, words", [
    ("2=3", "names worker 2, but this run has 2 workers"),
    ("1=0.5", "not a number in 1..1000"),
    ("1=1001", "not a number in 1..1000"),
    ("1=nan", "not a number in 1..1000"),
    ("1=inf", "not a number in 1..1000"),
    ("1=x", "not a number in 1..1000"),
    ({"1": True}, "not a number in 1..1000"),
    ("x=2", "names worker 'x'"),
    ("-1=2", "names worker '-1'"),
    ("1=3,1=2", "names worker 1 twice"),
    ("1", "not WORKER=FACTOR"),
    (3, "is an integer, not a string or table"),
    (["1=3"], "is an array, not a string or table"),
])
def test_bad_values_are_named_with_what_is_allowed(value, words):
    with pytest.raises(ExperimentError) as err:
        flags(slowdown=value)
    text = str(err.value)
    assert words in text
    assert text.startswith("command line: slowdown = ") and "allowed: WORKER=FACTOR" in text


def test_factors_per_worker():
    assert slowdown_factors("0=1.5,2=4", 3).tolist() == [1.5, 1.0, 4.0]
    assert slowdown_factors(None, 2).tolist() == [1.0, 1.0]


def test_a_file_may_write_it_as_a_table_and_sweep_it(tmp_path):
    exp = loads_experiment("""
        name = "straggle"
        workers = 2
        slowdown = {1 = 3.0}
        [problem]
        name = "logreg-synthetic"
        [sweep]
        slowdown = ["", "1=2", {1 = 4}]
        "algorithm.name" = ["lock", "seq"]
    """)
    assert exp.slowdown == "1=3"
    runs = expand(exp)
    got = [(r.algorithm.name, r.workers, r.slowdown) for r in runs]
    # seq runs one worker: worker 1's slowdown does not apply, so its points coincide
    assert got == [("lock", 2, None), ("seq", 1, None), ("lock", 2, "1=2"), ("lock", 2, "1=4")]
    again = loads_experiment(to_toml(exp))
    assert again == exp
    keys = {config_key({"problem": r.problem.name, "algorithm": r.algorithm.name,
                        "workers": r.workers, "slowdown": r.slowdown}) for r in runs}
    assert len(keys) == 4 and any(k.endswith("slowdown=1=4") for k in keys)


def test_seq_keeps_a_slowdown_of_its_one_worker():
    exp = parse_experiment({"name": "s", "workers": 1, "slowdown": "0=2",
                            "problem": {"name": "logreg-synthetic"},
                            "algorithm": {"name": "seq"}})
    assert expand(exp)[0].slowdown == "0=2"


def test_cli_refuses_a_worker_the_run_does_not_have(capsys, tmp_path):
    code = main(["real", "--problem", "logreg-synthetic", "--algorithm", "lock",
                 "--workers", "2", "--slowdown", "1=3", "--slowdown", "5=2",
                 "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "names worker 5, but this run has 2 workers" in err
    assert "Traceback" not in err and not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------ the engines


def test_simulated_straggler_computes_factor_times_longer():
    base = dict(engine="sim", updates=8000,
                sim={"compute": "det:1ms", "read": "det:0", "update": "det:0",
                     "timing_only": True})
    for alg in ("hogwild", "lock"):
        fast = SimRun(expand(flags(algorithm=alg, **base))[0], progress=False).run()
        slow = SimRun(expand(flags(algorithm=alg, slowdown="1=3", **base))[0],
                      progress=False).run()
        assert shares(fast, 2) == pytest.approx([0.5, 0.5], abs=1e-3)
        assert shares(slow, 2) == pytest.approx([0.75, 0.25], abs=1e-3)  # 3 : 1
        assert slow.summary["slowdown"] == "1=3" and fast.summary["slowdown"] is None
        tau = np.asarray(slow.updates["tau"])[np.asarray(slow.updates["worker"]) == 1]
        assert tau.mean() == pytest.approx(3.0, abs=0.05)  # 3 updates of worker 0 between


def test_sync_waits_for_its_straggler_every_round():
    base = dict(engine="sim", algorithm="sync", updates=2000,
                sim={"compute": "det:1ms", "read": "det:0", "update": "det:0",
                     "timing_only": True})
    fast = SimRun(expand(flags(**base))[0], progress=False).run()
    slow = SimRun(expand(flags(slowdown="0=4", **base))[0], progress=False).run()
    assert slow.summary["seconds"] == pytest.approx(4 * fast.summary["seconds"], rel=1e-6)


@pytest.mark.parametrize("problem, options", [
    ("mlp-synthetic", {}),
    ("logreg-sparse", {"n_train": 400, "n_test": 100, "n_features": 2000, "nnz": 15}),
])
@pytest.mark.parametrize("algorithm", ["lock", "hogwild"])
def test_real_straggler_spins_and_makes_fewer_updates(problem, options, algorithm):
    # worker 1 spins 7 times its gradient's time after each gradient: its own cycle (median
    # time between two of its updates) measured 4.8-8.4 times worker 0's, idle or with three
    # busy processes beside it, and it makes fewer updates.  Its share of the updates (a sixth
    # to a twelfth on an idle machine) is not asserted: in a loaded test run the scheduler may
    # leave worker 0 off its core for long stretches (0.39 seen); the median cycle holds
    spec = expand(flags(problem=problem, problem_options=options, algorithm=algorithm,
                        batch=16, seconds=0.6, slowdown="1=8"))[0]
    rec = run_real(spec, progress=False)
    s = shares(rec, 2)
    assert s[1] < s[0], s
    assert own_cycle(rec, 1) > 3 * own_cycle(rec, 0)
    assert rec.summary["slowdown"] == "1=8"
    u = rec.updates
    w1 = np.asarray(u["worker"]) == 1
    assert np.asarray(u["tau"])[w1].mean() > np.asarray(u["tau"])[~w1].mean()


def test_the_distributed_worker_spins_factor_times_its_gradient():
    from stalesgd.real.ps.worker import Worker, WorkerSetup

    problem = make_problem("mlp-synthetic")
    setup = WorkerSetup(algorithm="lock", batch=16, lr=0.05, persistence=-1, bounds=(),
                        slowdown=(1.0, 6.0))
    for index, factor in ((0, 1.0), (1, 6.0)):
        w = Worker(index, 7, problem, setup, servers=[])
        w.prepare()
        w.draw()
        before = w.gradient_seconds
        t = time.monotonic()
        w.gradient()
        elapsed = time.monotonic() - t
        grad = w.gradient_seconds - before
        assert w.slow == factor
        assert elapsed >= factor * grad * (1 - 1e-9)
        if factor == 1.0:
            assert elapsed < 6.0 * grad + 0.05  # no spin without a slowdown


def test_calibration_leaves_slowed_runs_out(tmp_path):
    n, cycle = 400, 10e-6
    t = np.arange(n) * cycle
    rows = {"worker": np.zeros(n, np.int32), "t_read": t, "t_apply": t + 8e-6}
    slowed = fake_folder(tmp_path / "a", "lock", 1, 2, rows, slowdown="0=3")
    with pytest.raises(Exception, match="slows workers down on purpose"):
        calibrate(slowed, costs=COSTS)
    plain = fake_folder(tmp_path / "b", "lock", 1, 2, rows)
    assert calibrate(plain, costs=COSTS).data["source"]["skipped_run_ids"] == []


def test_calibrated_simulation_of_a_slowdown_is_a_prediction(tmp_path):
    from test_calibrate import sim_spec

    n, cycle = 400, 10e-6
    t = np.arange(n) * cycle
    path = fake_folder(tmp_path, "lock", 1, 2, {"worker": np.zeros(n, np.int32),
                                                 "t_read": t, "t_apply": t + 8e-6})
    cal = calibrate(path, costs=COSTS).save(tmp_path / "cal.json")
    spec = sim_spec(cal, workers=1, updates=500)
    same = SimRun(spec, progress=False).run().summary
    slowed = SimRun(dataclasses.replace(spec, slowdown="0=2"), progress=False).run().summary
    assert same["prediction"] is False and slowed["prediction"] is True
    assert slowed["seconds"] > 1.8 * same["seconds"]


def test_the_compile_run_of_the_real_engine_runs_at_full_speed():
    from stalesgd.real.engine import RealRun

    run = RealRun(expand(flags(slowdown="0=50"))[0], progress=False)
    dummy = run.shared
    (_, full), = run._worker_calls(dummy, 0, count=1, warm_up=True)
    calls = run._worker_calls(dummy, 0)
    assert full[2] == 1.0 and [args[2] for _, args in calls] == [50.0, 1.0]


def test_exclude_names_a_slowdown_in_any_form():
    exp = loads_experiment("""
        exclude = [{workers = 1, slowdown = {1 = 2}}]
        [problem]
        name = "logreg-synthetic"
        [sweep]
        workers = [1, 2]
        slowdown = ["", {1 = 2}, "01=2.0"]
    """)
    assert exp.sweep["slowdown"] == ("", "1=2", "1=2")
    assert [(r.workers, r.slowdown) for r in expand(exp)] == [(1, None), (2, None), (2, "1=2")]


def test_auto_calibration_from_only_slowed_real_runs_is_refused_before_running(tmp_path):
    code = main(["run", str(_write(tmp_path, """
        workers = 2
        slowdown = "1=4"
        [problem]
        name = "logreg-synthetic"
        [sim]
        calibration = "auto"
        [sweep]
        engine = ["real", "sim"]
    """)), "--dry-run", "--out", str(tmp_path / "out")])
    assert code == 2 and not (tmp_path / "out").exists()


def _write(tmp_path, text):
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


def test_the_stragglers_example_checks_as_a_run_would(capsys, tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "stragglers.toml"
    code = main(["run", str(example), "--dry-run", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and not any(tmp_path.iterdir())
    lines = [line for line in out.splitlines() if line.startswith("r0")]
    assert len(lines) == 16 and sum("'slowdown': '1=4'" in line for line in lines) == 8
