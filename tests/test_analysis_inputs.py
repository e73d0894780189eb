"""Bad input to ``report``, ``compare`` and ``calibrate``: every case ends in the documented
error (:class:`AnalysisError` / :class:`CalibrationError`) naming the folder or file and the
problem, and in exit code 2 on the command line."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from stalesgd.analysis import AnalysisError, analyse, load_folders, write_report
from stalesgd.analysis.calibrate import calibrate
from stalesgd.app.cli import main

from stalesgd.calibration import CalibrationError
from stalesgd.records import ResultsFolder, RunRecord, summarize

N = 400
TABLES = ("runs", "updates", "evals")


def run_record(seed: int, workers: int) -> RunRecord:
    rng = np.random.default_rng(seed)
    t_apply = np.cumsum(rng.exponential(1e-3, N))
    ks = np.arange(0, N + 1, 100)
    return RunRecord({}, {"k": np.arange(N), "worker": np.arange(N) % workers,
                          "t_read": t_apply - 5e-4, "t_apply": t_apply,
                          "tau": rng.geometric(0.5, N) - 1, "eta": np.full(N, 0.05)},
                     {"t": np.interp(ks, np.arange(N), t_apply), "k": ks,
                      "loss": 0.2 + np.exp(-ks / 200.0), "active_workers": np.full(ks.size, 2)})


def make_folder(root: Path, merge: bool = True, engine: str = "real") -> Path:
    """A small results folder of two runs (lock, two workers, two seeds)."""
    folder = ResultsFolder.create("inputs", root, config_toml='name = "inputs"\n',
                                  machine={"usable_cores": 2, "logical_cores": 2})
    for seed in (0, 1):
        rec = run_record(seed, 2)
        summary = summarize(rec, 0.5)
        summary.update(run_id=f"r{seed:04d}", engine=engine, algorithm="lock",
                       problem="logreg-synthetic", workers=2, stepsize="constant", lr=0.05,
                       batch=16, seed=seed, dtype="float64")
        folder.write_run(summary, rec)
    if merge:
        folder.close()
    return folder.path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("pristine"))


@pytest.fixture
def folder(pristine, tmp_path) -> Path:
    """A fresh copy of the good folder, to damage."""
    return Path(shutil.copytree(pristine, tmp_path / pristine.name))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGE = {
    "truncated": truncate,
    "empty": lambda p: p.write_bytes(b""),
    "not parquet": lambda p: p.write_text("run_id,engine\nr0000,real\n"),
}


def test_the_good_folder_loads(pristine):
    loaded = load_folders(pristine)
    assert len(loaded.runs) == 2 and len(loaded.updates) == 2 * N


@pytest.mark.parametrize("how", sorted(DAMAGE))
@pytest.mark.parametrize("kind", TABLES)
def test_a_damaged_table_is_named(folder, kind, how):
    DAMAGE[how](folder / f"{kind}.parquet")
    with pytest.raises(AnalysisError, match=rf"{folder}: {kind}\.parquet cannot be read; it "
                                            "is truncated or corrupt"):
        analyse(folder)


@pytest.mark.parametrize("kind", TABLES)
def test_a_damaged_part_file_is_named(tmp_path, kind):
    path = make_folder(tmp_path, merge=False)
    name = "r0001.updates.00000.parquet" if kind == "updates" else f"r0001.{kind}.parquet"
    truncate(path / "parts" / name)
    with pytest.raises(AnalysisError, match=rf"parts/{re.escape(name)} cannot be read"):
        load_folders(path)


@pytest.mark.parametrize("name", ["config.toml", "machine.json"])
def test_a_damaged_config_or_machine_file_is_named(folder, name):
    (folder / name).write_text("{ this is [ not")
    with pytest.raises(AnalysisError, match=rf"{folder}: {name} cannot be read"):
        load_folders(folder)


@pytest.mark.parametrize("kind", TABLES)
def test_a_deleted_table_is_missing(folder, kind):
    (folder / f"{kind}.parquet").unlink()
    with pytest.raises(AnalysisError, match=rf"{folder}: {kind}\.parquet is missing"):
        load_folders(folder)


def test_a_table_of_the_wrong_kind_is_refused(folder):
    shutil.copy(folder / "evals.parquet", folder / "updates.parquet")
    with pytest.raises(AnalysisError, match=r"updates table \(updates\.parquet\) lacks the "
                                            r"column\(s\) tau"):
        load_folders(folder)


def test_paths_that_are_not_results_folders(tmp_path, folder):
    with pytest.raises(AnalysisError, match="is a file, not a results folder"):
        load_folders(folder / "runs.parquet")
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.png").write_bytes(b"\x89PNG")
    with pytest.raises(AnalysisError, match=f"{other} is not a results folder"):
        load_folders(other)
    with pytest.raises(AnalysisError, match="does not exist"):
        load_folders(tmp_path / "nowhere")


def test_the_same_folder_twice_is_refused(folder, tmp_path):
    for again in (folder, str(folder) + "/"):
        with pytest.raises(AnalysisError, match=f"{folder} is given twice; give each folder "
                                                "once"):
            load_folders([folder, again])
    alias = tmp_path / "alias"
    alias.symlink_to(folder)
    for again in (alias, folder / ".." / folder.name):
        with pytest.raises(AnalysisError, match=f"given twice \\(as {folder} and"):
            load_folders([folder, again])
    # two folders that merely share a name are two folders
    copy = Path(shutil.copytree(folder, tmp_path / "elsewhere" / folder.name))
    loaded = load_folders([folder, copy])
    assert len(loaded.runs) == 4 and loaded.runs["uid"].is_unique


@pytest.mark.parametrize("target", [-1, 0, 0.0, -0.5, math.nan, math.inf, -math.inf, "0.4",
                                    True, None])
def test_a_target_must_be_a_finite_loss_above_zero(pristine, target):
    if target is None:  # no target: the runs' own
        assert analyse(pristine, target=None, theory=False).loaded.runs["reached"].all()
        return
    with pytest.raises(AnalysisError, match=f"target loss {target!r} is not allowed; it must "
                                            "be a finite number > 0"):
        analyse(pristine, target=target)
    with pytest.raises(AnalysisError, match="target loss"):
        write_report(pristine, target=target)


def test_a_valid_target_recomputes_time_to_target(pristine):
    runs = load_folders(pristine, target=np.float32(0.25)).runs
    assert np.allclose(runs["target_loss"], 0.25) and not runs["reached"].any()


# ---------------------------------------------------------------------------------------------
# calibrate
# ---------------------------------------------------------------------------------------------


def test_calibrate_names_a_damaged_table(folder):
    truncate(folder / "updates.parquet")
    with pytest.raises(CalibrationError, match=r"updates\.parquet cannot be read; it is "
                                               "truncated or corrupt"):
        calibrate(folder, costs={"read_per_param": 1e-10, "update_per_param": 1e-10,
                                 "fused_per_param": 1e-10, "cas_cost": 1e-8})


def test_calibrate_names_a_missing_table_and_a_foreign_folder(folder, tmp_path):
    (folder / "updates.parquet").unlink()
    with pytest.raises(CalibrationError, match=r"updates\.parquet is missing"):
        calibrate(folder)
    with pytest.raises(CalibrationError, match="is not a results folder"):
        calibrate(tmp_path / ".." / tmp_path.name)


# ---------------------------------------------------------------------------------------------
# command line: exit code 2 and the message, no traceback
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, words", [
    (["report", "{d}", "--target", "-1"], "target loss -1.0 is not allowed"),
    (["report", "{d}", "--target", "nan"], "target loss nan is not allowed"),
    (["compare", "{d}", "{d}", "--out", "{out}"], "is given twice"),
])
def test_cli_refuses_bad_targets_and_a_folder_twice(pristine, tmp_path, capsys, argv, words):
    argv = [a.format(d=pristine, out=tmp_path / "cmp") for a in argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert words in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "cmp").exists()


@pytest.mark.parametrize("command", ["report", "compare", "calibrate"])
def test_cli_names_the_damaged_or_missing_file(folder, tmp_path, capsys, command):
    truncate(folder / "runs.parquet")
    argv = [command, str(folder)] + (["--out", str(tmp_path / "cmp")]
                                     if command == "compare" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "runs.parquet cannot be read" in err and "Traceback" not in err
    (folder / "runs.parquet").unlink()
    assert main(argv) == 2
    assert "runs.parquet is missing" in capsys.readouterr().err
