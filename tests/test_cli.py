"""The command line and the runner, with a fake engine registered by the tests themselves."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fakes import INTERRUPTIBLE, SWEEP, FakeEngine, fake_record, only_folder
from stalesgd.app.cli import main
from stalesgd.app.runner import run_experiment
from stalesgd.app.summary import format_summary

from stalesgd import engines
from stalesgd.engines import RunInterrupted
from stalesgd.experiment import default_experiment, load_experiment
from stalesgd.records import load_results

SUBCOMMANDS = ("run", "real", "sim", "calibrate", "compare", "report", "data")



def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for cmd in SUBCOMMANDS:
        assert f"\n    {cmd}" in out, cmd


def test_help_texts_speak_of_the_program_only(capsys):
    """No command's help mentions how it was developed (issues, planned work)."""
    for cmd in ("", *SUBCOMMANDS):
        with pytest.raises(SystemExit):
            main([cmd, "--help"] if cmd else ["--help"])
        text = " ".join(capsys.readouterr().out.lower().split())
        for word in ("issue", "not built", "not yet", "todo", "planned"):
            assert word not in text, (cmd, word)


def test_installed_entry_point_help_and_version():
    exe = Path(sys.executable).with_name("stalesgd")
    if not exe.exists():
        pytest.skip("the stalesgd console script is not installed next to this Python")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert all(cmd in out.stdout for cmd in SUBCOMMANDS)
    ver = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    from stalesgd import __version__

    assert ver.returncode == 0 and __version__ in ver.stdout


def test_calibrate_names_a_missing_folder(tmp_path, capsys):
    missing = tmp_path / "no-such-results"
    assert main(["calibrate", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err


def test_unknown_engine_names_the_known_ones(tmp_path, capsys):
    path = tmp_path / "w.toml"
    path.write_text(SWEEP.replace('engine = "fake"', 'engine = "warp"'))
    assert main(["run", str(path), "--out", str(tmp_path / "res"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "engine = 'warp' is not allowed; allowed: ray, real, sim" in err
    assert not (tmp_path / "res").exists()  # no folder for a sweep that cannot start
    with pytest.raises(engines.EngineNotAvailable, match="unknown; known engines:.*real.*sim"):
        engines.get_engine("nonsense")


def test_an_engine_check_stops_the_sweep_before_any_folder(fake, exp_file, tmp_path, capsys):
    from stalesgd.experiment import ExperimentError

    def refuse(spec):
        if spec.workers == 2:
            raise ExperimentError("workers", 2, "1 on this engine")

    fake(FakeEngine(), validate=refuse)
    assert main(["run", str(exp_file), "--out", str(tmp_path / "res"), "--no-progress"]) == 2
    assert "workers = 2 is not allowed; allowed: 1 on this engine" in capsys.readouterr().err
    assert not (tmp_path / "res").exists()


def test_built_in_engines_are_registered():
    assert engines.get_engine("real").run.__name__ == "run_real"
    assert engines.get_engine("sim").run.__name__ == "run_sim"


def test_run_sweep_writes_every_run(fake, exp_file, tmp_path, capsys):
    engine = fake(FakeEngine())
    out = tmp_path / "res"
    assert main(["run", str(exp_file), "--out", str(out), "--no-progress"]) == 0
    folder = only_folder(out)
    assert folder.name.startswith("fake-sweep-")
    res = load_results(folder)
    assert len(engine.calls) == len(res.runs) == 2 * 2 * 2
    got = sorted(zip(res.runs.workers, res.runs.algorithm, res.runs.seed, strict=True))
    assert got == sorted((w, a, s) for w in (1, 2) for a in ("lock", "hogwild") for s in (0, 1))
    assert (res.runs.updates == 200).all() and not res.runs.interrupted.any()
    assert (res.runs["sim.cores"] == 3).all()  # swept keys without a column get one
    assert res.updates.groupby("run_id").size().eq(200).all()
    # derived values match the fake engine's logs
    first = res.runs.iloc[0]
    rec = fake_record(engine.calls[0])
    assert first.updates_per_s == pytest.approx(200 / rec.updates["t_apply"].max())
    reached = np.flatnonzero(rec.evals["loss"] <= 0.5)[0]
    assert first.time_to_target == pytest.approx(rec.evals["t"][reached])
    assert first.peak_param_bytes == 8 * 21 * first.workers
    # the resolved config is loadable and is the experiment that ran
    assert load_experiment(folder / "config.toml") == load_experiment(exp_file)
    assert (folder / "machine.json").exists() and not (folder / "parts").exists()
    out_text = capsys.readouterr().out
    assert "results:" in out_text and str(folder) in out_text
    assert "hogwild" in out_text and "updates/s" in out_text


def test_ctrl_c_keeps_finished_runs(fake, exp_file, tmp_path, capsys):
    engine = fake(FakeEngine(fail_on=3, exc=KeyboardInterrupt()))
    out = tmp_path / "res"
    assert main(["run", str(exp_file), "--out", str(out), "--no-progress"]) == 130
    assert len(engine.calls) == 3
    folder = only_folder(out)
    res = load_results(folder)
    assert list(res.runs.run_id) == ["r0000", "r0001"]
    assert set(res.updates.run_id) == {"r0000", "r0001"}
    assert not res.runs.interrupted.any()
    assert not (folder / "parts").exists()  # merged
    captured = capsys.readouterr()
    assert "interrupted" in captured.err and str(folder) in captured.out
    # no report after Ctrl-C; how to finish and how to report instead
    assert not (folder / "report.html").exists()
    assert f"--resume {folder}` finishes the sweep" in captured.err
    assert f"`stalesgd report {folder}` reports the runs kept" in captured.err


SIGINT_SCRIPT = """
import sys, time
from pathlib import Path
import numpy as np
from stalesgd import engines
from stalesgd.app.cli import main
from stalesgd.records import RunRecord

marker = Path(sys.argv[1])

def engine(spec, progress, updates=None):
    if spec.index == 2:
        marker.write_text("started")
        time.sleep(60)
    n = 10
    return RunRecord({}, {"k": np.arange(n), "worker": np.zeros(n, int), "t_read": np.arange(n),
                          "t_apply": np.arange(n) + 0.5, "tau": np.zeros(n, int),
                          "eta": np.ones(n)}, {})

engines.register_engine("fake", engine)
sys.exit(main(["run", sys.argv[2], "--out", sys.argv[3]]))
"""


def test_real_sigint_mid_sweep(exp_file, tmp_path):
    """A real Ctrl-C (SIGINT) in the middle of the third run: exit 130, two runs on disk."""
    import signal
    import time

    marker, out = tmp_path / "started", tmp_path / "res"
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTIBLE + SIGINT_SCRIPT, str(marker),
                             str(exp_file), str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 50
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate(timeout=10)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    folder = only_folder(out)
    assert str(folder) in stdout and "interrupted" in stderr
    res = load_results(folder)
    assert list(res.runs.run_id) == ["r0000", "r0001"] and len(res.updates) == 20
    assert not (folder / "parts").exists()


def test_interrupted_run_with_partial_record_is_kept(fake, exp_file, tmp_path):
    spec_holder = {}

    def engine(spec, progress, updates=None):
        if spec.index == 2:
            spec_holder["spec"] = spec
            raise RunInterrupted(fake_record(spec, n=50))
        return fake_record(spec)

    fake(engine)
    outcome = run_experiment(load_experiment(exp_file), out=tmp_path, progress=False)
    assert outcome.interrupted and outcome.planned == 8
    res = load_results(outcome.folder)
    assert list(res.runs.run_id) == ["r0000", "r0001", "r0002"]
    assert res.runs.interrupted.tolist() == [False, False, True]
    assert res.runs.updates.tolist() == [200, 200, 50]


def test_ctrl_c_before_any_run_is_kept_leaves_no_folder(fake, exp_file, tmp_path, capsys):
    fake(FakeEngine(fail_on=1, exc=KeyboardInterrupt()))  # e.g. while the first compiles
    code = main(["run", str(exp_file), "--out", str(tmp_path / "res"), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 130
    assert "no results folder written" in err + out and "results:" not in out
    assert not (tmp_path / "res").exists() or not any((tmp_path / "res").iterdir())


def test_interruption_while_unmerged_leaves_a_readable_folder(fake, exp_file, tmp_path,
                                                               monkeypatch):
    """Even if the final merge itself is cut short, the part files are read back."""
    from stalesgd import records

    fake(FakeEngine(fail_on=3, exc=KeyboardInterrupt()))

    def no_merge(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(records.ResultsFolder, "close", no_merge)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(load_experiment(exp_file), out=tmp_path, progress=False)
    folder = only_folder(tmp_path)
    assert (folder / "parts").exists()
    res = load_results(folder)
    assert list(res.runs.run_id) == ["r0000", "r0001"]


def test_divergence_is_recorded_not_a_crash(fake, exp_file, tmp_path):
    fake(FakeEngine(fail_on=2, exc=FloatingPointError("overflow in update")))
    outcome = run_experiment(load_experiment(exp_file), out=tmp_path, progress=False)
    assert not outcome.interrupted
    res = load_results(outcome.folder)
    assert len(res.runs) == 8
    assert res.runs.diverged.tolist() == [False, True] + [False] * 6
    assert "overflow" in res.runs.error.iloc[1]


def test_progress_bar_runs(fake, exp_file, tmp_path, capsys):
    fake(FakeEngine())
    assert main(["run", str(exp_file), "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "8/8" in err


def test_real_flags_go_through_the_same_path(fake, tmp_path):
    engine = fake(FakeEngine(), name="real")
    code = main(["real", "--problem", "softmax-synthetic", "--algorithm", "leashed",
                 "--workers", "3", "--stepsize", "tail", "--lr", "0.02", "--batch", "8",
                 "--updates", "120", "--seed", "5", "--persistence", "2", "--out", str(tmp_path),
                 "--no-progress"])
    assert code == 0
    (spec,) = engine.calls
    assert (spec.engine, spec.problem.name, spec.algorithm.name, spec.workers) == (
        "real", "softmax-synthetic", "leashed", 3)
    assert (spec.stepsize.rule, spec.stepsize.lr, spec.problem.batch, spec.stop.updates,
            spec.seed, spec.algorithm.persistence) == ("tail", 0.02, 8, 120, 5, 2)
    res = load_results(only_folder(tmp_path))
    assert res.runs.algorithm.tolist() == ["leashed"] and res.config["engine"] == "real"


def test_sim_flags_and_bad_values(fake, tmp_path, capsys):
    engine = fake(FakeEngine(), name="sim")
    base = ["sim", "--problem", "logreg-synthetic", "--algorithm", "hogwild", "--workers", "4",
            "--out", str(tmp_path), "--no-progress"]
    assert main(base + ["--cores", "2", "--compute", "gamma:2ms:0.5", "--seconds", "1.5s",
                        "--timing-only", "--update", "det:10us"]) == 0
    (spec,) = engine.calls
    assert spec.sim.cores == 2 and spec.sim.compute == "gamma:2ms:0.5"
    assert spec.sim.timing_only and spec.sim.update == "det:10us" and spec.stop.seconds == 1.5
    assert main(base + ["--compute", "exp:2"]) == 2
    err = capsys.readouterr().err
    assert "--compute 'exp:2'" in err and "exp:MEAN" in err
    assert main(base[:6] + ["0", "--out", str(tmp_path)]) == 2
    assert "--workers 0" in capsys.readouterr().err


def test_run_without_file_uses_the_default(fake, tmp_path, capsys, monkeypatch):
    """The main job: every real run first, then the sim runs, calibrated from the real ones."""
    real = fake(FakeEngine(), name="real")
    sim = fake(FakeEngine(), name="sim")
    assert main(["run", "--out", str(tmp_path), "--no-progress", "--no-report"]) == 0
    planned = __import__("stalesgd.experiment").experiment.expand(default_experiment())
    assert len(real.calls) + len(sim.calls) == len(planned) == 42
    assert sorted(r.run_id for r in real.calls + sim.calls) == sorted(r.run_id for r in planned)
    folder = only_folder(tmp_path)
    assert folder.name.startswith("default-")
    files = {s.sim.calibration_max_workers: Path(s.sim.calibration) for s in sim.calls}
    assert len(set(files.values())) == 2
    assert all(f.parent == folder and f.is_file() for f in files.values())
    sources = {k: json.loads(f.read_text())["source"] for k, f in files.items()}
    assert sources[4]["run_ids"] == sorted(s.run_id for s in real.calls)
    assert sources[2]["run_ids"] == sorted(s.run_id for s in real.calls if s.workers <= 2)
    assert sources[2]["max_workers"] == 2
    err = capsys.readouterr().err
    assert "calibrated the simulator from 18 real runs with at most 4 workers" in err
    assert "calibrated the simulator from 12 real runs with at most 2 workers" in err


def test_auto_calibration_needs_real_runs_of_the_same_problem(fake, tmp_path, capsys):
    fake(FakeEngine(), name="sim")
    path = tmp_path / "sim.toml"
    path.write_text(SWEEP.replace('engine = "fake"', 'engine = "sim"')
                    + '\n[sim]\ncalibration = "auto"\n')
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "sim.calibration = 'auto'" in err and "real runs of the same problem" in err
    assert not (tmp_path / "out").exists()


def test_run_dry_run_and_missing_file(tmp_path, capsys):
    assert main(["run", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == len(__import__("stalesgd.experiment").experiment.expand(
        default_experiment()))
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bad_experiment_file_exits_2_naming_the_key(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(SWEEP.replace("updates = 200", "updates = -5"))
    assert main(["run", str(path), "--out", str(tmp_path)]) == 2
    assert "bad.toml: stop.updates = -5" in capsys.readouterr().err


def test_data_delegates(monkeypatch, capsys):
    import types

    calls = []
    module = types.ModuleType("stalesgd.data.cli")
    module.data_command = lambda action, name, data_dir, out: calls.append(
        (action, name, data_dir)) or 3
    monkeypatch.setitem(sys.modules, "stalesgd.data.cli", module)
    assert main(["data", "verify", "mnist", "--data-dir", "/x"]) == 3
    assert calls == [("verify", "mnist", "/x")]


def test_summary_table_marks_flags():
    text = format_summary([
        {"run_id": "r0", "engine": "real", "algorithm": "lock", "workers": 2, "seed": 0,
         "updates_per_s": 1234.5, "final_loss": 0.3, "time_to_target": math.nan},
        {"run_id": "r1", "engine": "real", "algorithm": "hogwild", "workers": 2, "seed": 0,
         "updates_per_s": 99.0, "final_loss": math.nan, "time_to_target": None,
         "diverged": True},
    ])
    lines = text.splitlines()
    assert len(lines) == 4 and "1234" in lines[2] and "diverged" in lines[3]


def test_a_dry_run_lists_what_each_run_would_run(tmp_path, capsys):
    code = main(["real", "--problem", "mlp-synthetic", "-o", "hidden=[8]", "-o", "n_train=500",
                 "--algorithm", "leashed", "--workers", "3", "--stepsize", "tail", "--lr", "0.02",
                 "--updates", "100", "--out", str(tmp_path / "res"), "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and not (tmp_path / "res").exists()
    assert out.strip() == ("r0000  real mlp-synthetic hidden=[8] n_train=500 leashed m=3 tail "
                           "lr=0.02 batch=16 float64 seed=0 stop: updates 100")


@pytest.mark.parametrize("argv, words", [
    (["dist", "--algorithm", "lock", "--shards", "4"], "--shards 4 is set but no run splits"),
    (["sim", "--algorithm", "lock", "-o", "n_train=0"], "-o n_train=0 is out of range"),
    (["real", "--algorithm", "lock", "--seed", "-1"], "--seed -1 is out of range"),
    (["sim", "--algorithm", "lock", "--compute", "abc"], "--compute 'abc' is not allowed"),
    (["real", "--algorithm", "tail", "--lr", "0.1"], "--algorithm 'tail' is not allowed"),
    (["real", "--algorithm", "lock", "--stepsize", "tail", "--stepsize-option", "window=-3"],
     "--stepsize-option window=-3 is out of range"),
    (["real", "--algorithm", "lock", "--data-file", "a.npz", "-o", "file=b.csv"],
     "-o file = 'b.csv' conflicts with --data-file 'a.npz'"),
])
def test_errors_in_flags_name_the_flag_as_typed(argv, words, capsys):
    """A bad value given as a flag is named as the user typed it, with what is allowed."""
    common = ["--problem", "logreg-synthetic", "--workers", "2", "--updates", "10", "--dry-run"]
    assert main(argv + common) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"stalesgd: {words}") and "; allowed: " in err[0]
    assert "command line:" not in err[0]


def test_a_dry_run_line_shows_the_parameter_servers(capsys):
    common = ["--problem", "logreg-synthetic", "--workers", "2", "--updates", "10", "--dry-run"]
    assert main(["sim", "--topology", "ps", "--algorithm", "hogwild", "--shards", "3",
                 *common]) == 0
    assert "float64 topology=ps shards=3 seed=0" in capsys.readouterr().out
    assert main(["dist", "--algorithm", "lock", "--net-delay", "exp:1ms", *common]) == 0
    assert "float64 net_delay=exp:1ms seed=0" in capsys.readouterr().out
    assert main(["sim", "--algorithm", "hogwild", *common]) == 0
    assert "float64 seed=0" in capsys.readouterr().out
