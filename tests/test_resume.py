"""Sweeps that survive faults: resuming an interrupted sweep in its folder, a disk that fills
while a sweep writes, and the summary notes on runs that did not go as asked."""

from __future__ import annotations

import errno
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fakes import SWEEP, FakeEngine, fake_record, only_folder
from stalesgd.app.cli import main
from stalesgd.app.runner import run_experiment
from stalesgd.app.summary import format_summary, run_notes

from stalesgd.engines import RunInterrupted
from stalesgd.experiment import RunSpec, default_experiment, expand, load_experiment
from stalesgd.records import load_results

RUN_IDS = [f"r{i:04d}" for i in range(8)]


def assert_complete(folder: Path, run_ids=RUN_IDS) -> None:
    """Every run is in the folder exactly once, complete, with all its update rows."""
    res = load_results(folder)
    assert sorted(res.runs.run_id) == sorted(run_ids)
    assert not res.runs.interrupted.any()
    assert (res.runs.updates == 200).all()
    counts = Counter(res.updates.run_id)
    assert counts == {run_id: 200 for run_id in run_ids}
    assert not (folder / "parts").exists()


# --- resume ----------------------------------------------------------------------------------


def test_resume_reruns_the_interrupted_run_and_skips_the_finished_ones(fake, exp_file, tmp_path,
                                                                       capsys):
    engine = fake(FakeEngine(fail_on=3, exc=KeyboardInterrupt()))
    out = tmp_path / "res"
    assert main(["run", str(exp_file), "--out", str(out), "--no-progress", "--no-report"]) == 130
    folder = only_folder(out)
    assert sorted(load_results(folder).runs.run_id) == ["r0000", "r0001"]
    capsys.readouterr()

    engine = fake(FakeEngine())
    assert main(["run", str(exp_file), "--resume", str(folder), "--no-progress",
                 "--no-report"]) == 0
    assert [s.run_id for s in engine.calls] == RUN_IDS[2:]  # the cut-short run, then the rest
    assert_complete(folder)
    assert only_folder(out) == folder  # no new folder
    assert "(6 of 8 runs, 2 complete before)" in capsys.readouterr().out


def test_resume_reruns_a_run_kept_as_interrupted(fake, exp_file, tmp_path):
    def engine(spec, progress, updates=None):
        if spec.index == 2:
            raise RunInterrupted(fake_record(spec, n=50))
        return fake_record(spec)

    fake(engine)
    first = run_experiment(load_experiment(exp_file), out=tmp_path, progress=False)
    assert load_results(first.folder).runs.interrupted.tolist() == [False, False, True]
    again = fake(FakeEngine())
    second = run_experiment(load_experiment(exp_file), progress=False, resume=first.folder)
    assert second.folder == first.folder and second.skipped == 2
    assert [s.run_id for s in again.calls] == RUN_IDS[2:]
    assert_complete(first.folder)


def test_resume_after_an_unmerged_crash(fake, exp_file, tmp_path, monkeypatch):
    """A process killed before its folder was merged (parts left, the last run never
    committed) resumes from the parts."""
    from stalesgd import records

    fake(FakeEngine(fail_on=4, exc=KeyboardInterrupt()))
    with monkeypatch.context() as m:
        m.setattr(records.ResultsFolder, "close", lambda self: None)  # killed: no merge
        outcome = run_experiment(load_experiment(exp_file), out=tmp_path, progress=False)
    folder = outcome.folder
    (folder / "parts" / "r0003.chunk-000000.parquet").write_bytes(b"a chunk cut short")
    engine = fake(FakeEngine())
    run_experiment(load_experiment(exp_file), progress=False, resume=folder)
    assert [s.run_id for s in engine.calls] == RUN_IDS[3:]
    assert_complete(folder)


def test_resume_of_a_complete_folder_runs_nothing(fake, exp_file, tmp_path, capsys):
    fake(FakeEngine())
    first = run_experiment(load_experiment(exp_file), out=tmp_path, progress=False)
    engine = fake(FakeEngine())
    assert main(["run", str(exp_file), "--resume", str(first.folder), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("(complete)") == 8
    assert main(["run", str(exp_file), "--resume", str(first.folder), "--no-progress",
                 "--no-report"]) == 0
    assert engine.calls == []
    assert_complete(first.folder)


@pytest.mark.parametrize("change, words", [
    (("updates = 200", "updates = 300"), "differs in stop.updates"),
    (('"algorithm.name" = ["lock", "hogwild"]', '"algorithm.name" = ["lock"]'),
     "differs in sweep.algorithm.name"),
    (('name = "fake-sweep"', 'name = "other"'), "differs in name"),
])
def test_resume_refuses_another_experiment(fake, exp_file, tmp_path, capsys, change, words):
    fake(FakeEngine(fail_on=3, exc=KeyboardInterrupt()))
    first = run_experiment(load_experiment(exp_file), out=tmp_path / "res", progress=False)
    before = sorted(p.name for p in first.folder.rglob("*"))
    other = tmp_path / "other.toml"
    other.write_text(SWEEP.replace(*change))
    engine = fake(FakeEngine())
    for extra in ([], ["--dry-run"]):
        assert main(["run", str(other), "--resume", str(first.folder), "--no-progress",
                     *extra]) == 2
        err = capsys.readouterr().err
        assert f"--resume = '{first.folder}' holds another experiment" in err and words in err
    assert engine.calls == [] and sorted(p.name for p in first.folder.rglob("*")) == before


@pytest.mark.parametrize("make, words", [
    (lambda f: f.mkdir(), "is not a results folder (it has no config.toml)"),
    (lambda f: (f.mkdir(), (f / "config.toml").write_text("name = ")), "cannot be read"),
    (lambda f: (f.mkdir(), (f / "config.toml").write_text(SWEEP),
                (f / "runs.parquet").write_bytes(b"PAR1 cut")), "cannot be read"),
])
def test_resume_refuses_what_is_not_a_folder_of_the_experiment(fake, exp_file, tmp_path, capsys,
                                                               make, words):
    engine = fake(FakeEngine())
    folder = tmp_path / "f"
    make(folder)
    assert main(["run", str(exp_file), "--resume", str(folder), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert engine.calls == []


def test_resume_refuses_a_data_file_that_changed_since(fake, tmp_path, capsys, monkeypatch):
    """The runs of a folder record their data file's SHA-256; resuming after the file
    changed would mix two data sets in one sweep: refused, naming the file and the run."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)

    def write_data(seed):
        r = np.random.default_rng(seed)
        np.savez(tmp_path / "d.npz", X=r.normal(size=(40, 3)), y=np.arange(40) % 2)

    write_data(0)
    (tmp_path / "e.toml").write_text(
        'name = "filesweep"\nengine = "fake"\nseeds = [0, 1, 2]\n[problem]\n'
        'name = "logreg-file"\noptions = {file = "d.npz"}\n[stop]\nupdates = 200\n')
    fake(FakeEngine(fail_on=2, exc=KeyboardInterrupt()))
    assert main(["run", "e.toml", "--out", "res", "--no-progress", "--no-report"]) == 130
    folder = only_folder(tmp_path / "res")
    capsys.readouterr()
    write_data(int(rng.integers(1, 100)))  # another data set under the same name
    engine = fake(FakeEngine())
    assert main(["run", "e.toml", "--resume", str(folder), "--no-progress",
                 "--no-report"]) == 2
    err = capsys.readouterr().err
    assert f"holds runs of another version of the data file {tmp_path / 'd.npz'} (run r0000 " \
           "read SHA-256" in err and "put that file back" in err
    assert engine.calls == [] and sorted(load_results(folder).runs.run_id) == ["r0000"]
    write_data(0)  # the file as the runs read it: the sweep goes on
    assert main(["run", "e.toml", "--resume", str(folder), "--no-progress",
                 "--no-report"]) == 0
    assert [s.run_id for s in engine.calls] == ["r0001", "r0002"]


def test_an_error_part_way_through_a_sweep_says_what_is_kept_and_how_to_go_on(
        fake, exp_file, tmp_path, capsys):
    """A data file that changed under a running sweep (or any other error of a later run)
    stops it with the error; the runs before stay, and the message says where and how to
    finish the sweep."""
    from stalesgd.data import DataError

    fake(FakeEngine(fail_on=3, exc=DataError("data.npz: the file is not the one the "
                                             "experiment names")))
    out = tmp_path / "res"
    assert main(["run", str(exp_file), "--out", str(out), "--no-progress", "--no-report"]) == 2
    folder = only_folder(out)
    err = capsys.readouterr().err
    assert (f"the sweep stopped: 2 of 8 runs kept in {folder}; once the error below is fixed, "
            f"`stalesgd run {exp_file} --resume {folder}` finishes the sweep") in err
    assert err.index("the sweep stopped") < err.index("not the one the experiment names")
    engine = fake(FakeEngine())
    assert main(["run", str(exp_file), "--resume", str(folder), "--no-progress",
                 "--no-report"]) == 0
    assert [s.run_id for s in engine.calls] == RUN_IDS[2:]
    assert_complete(folder)


def test_resume_reuses_the_automatic_calibration(fake, tmp_path, capsys):
    """The main job cut short among its sim runs: resuming calibrates nothing again, so
    every sim run of the folder uses the same timing model."""
    fake(FakeEngine(), name="real")
    sim = fake(FakeEngine(fail_on=5, exc=KeyboardInterrupt()), name="sim")
    assert main(["run", "--out", str(tmp_path), "--no-progress", "--no-report"]) == 130
    folder = only_folder(tmp_path)
    first_cal = {s.sim.calibration for s in sim.calls}
    text = (folder / "calibration-1.json").read_text()
    assert "calibrated the simulator" in capsys.readouterr().err
    sim = fake(FakeEngine(), name="sim")
    assert main(["run", "--resume", str(folder), "--no-progress", "--no-report"]) == 0
    assert "calibrated the simulator" not in capsys.readouterr().err
    assert {s.sim.calibration for s in sim.calls} == first_cal
    assert (folder / "calibration-1.json").read_text() == text
    runs = load_results(folder).runs
    assert len(runs) == len(expand(default_experiment())) == runs.run_id.nunique()


# --- a disk that fills -----------------------------------------------------------------------


class FullDisk:
    """The disk fills when a record's file that ``fills(path)`` picks is written: from then on
    every durable write fails with ENOSPC (``os.fsync``, which each one ends with, and
    Parquet's writers), until ``free()``."""

    def __init__(self, monkeypatch, fills):
        import pyarrow.parquet as pq

        self.fills, self.full, self.failed = fills, False, []
        real_fsync, real_write = os.fsync, pq.write_table
        real_stream = pq.ParquetWriter.write_table

        def fsync(fd):
            self._check(None)
            return real_fsync(fd)

        def write_table(table, where, *args, **kwargs):
            self._check(Path(str(getattr(where, "name", where))))
            return real_write(table, where, *args, **kwargs)

        def stream(writer, *args, **kwargs):
            self._check(None)
            return real_stream(writer, *args, **kwargs)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(pq, "write_table", write_table)
        monkeypatch.setattr(pq.ParquetWriter, "write_table", stream)

    def _check(self, path: Path | None) -> None:
        if self.full is not None and path is not None and self.fills(path):
            self.full = True
        if self.full:
            self.failed.append(path)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def free(self) -> None:
        self.full = None  # never again


def test_a_full_disk_keeps_the_runs_written_before(fake, exp_file, tmp_path, monkeypatch,
                                                   capsys):
    engine = fake(FakeEngine())
    disk = FullDisk(monkeypatch, lambda p: p.name.startswith("r0002.evals"))  # in run 3
    out = tmp_path / "res"
    assert main(["run", str(exp_file), "--out", str(out), "--no-progress"]) == 1
    assert len(engine.calls) == 3
    captured = capsys.readouterr()
    folder = only_folder(out)
    assert "Traceback" not in captured.err
    message = [line for line in captured.err.splitlines() if line.startswith("stalesgd:")]
    assert len(message) == 1 and "No space left on device" in message[0]
    assert f"cannot write {folder / 'parts' / 'r0002.evals.parquet'}" in message[0]
    assert f"the 2 runs written before are kept in {folder}" in message[0]
    assert f"stalesgd run {exp_file} --resume {folder}" in message[0]
    assert (folder / "parts").exists()  # the merge could not be written either
    res = load_results(folder)  # ... and the finished runs are read from their parts
    assert sorted(res.runs.run_id) == ["r0000", "r0001"]
    assert Counter(res.updates.run_id) == {"r0000": 200, "r0001": 200}

    disk.free()
    engine = fake(FakeEngine())
    assert main(["run", str(exp_file), "--resume", str(folder), "--no-progress",
                 "--no-report"]) == 0
    assert [s.run_id for s in engine.calls] == RUN_IDS[2:]
    assert_complete(folder)


def test_a_disk_full_while_merging_keeps_every_run(fake, exp_file, tmp_path, monkeypatch):
    fake(FakeEngine())
    disk = FullDisk(monkeypatch, lambda p: p.parent.name != "parts")  # the merged tables
    outcome = run_experiment(load_experiment(exp_file), out=tmp_path, progress=False)
    assert disk.failed and outcome.write_error is not None and len(outcome.summaries) == 8
    assert outcome.write_error.errno == errno.ENOSPC
    res = load_results(outcome.folder)
    assert sorted(res.runs.run_id) == RUN_IDS and len(res.updates) == 8 * 200


# --- the summary says what did not go as asked -----------------------------------------------


def _spec(**stop) -> RunSpec:
    from stalesgd.experiment import experiment_from_flags

    return expand(experiment_from_flags("sim", problem="logreg-synthetic", algorithm="lock",
                                        workers=2, **stop))[0]


@pytest.mark.parametrize("summary, spec, notes", [
    ({"stop_reason": "updates"}, _spec(updates=100), []),
    ({"stop_reason": "log-full"}, _spec(seconds=20.0), ["stopped: log-full"]),
    ({"stop_reason": "seconds"}, _spec(updates=100), ["stopped: seconds"]),
    ({"stop_reason": "target"}, _spec(updates=100, target_loss=0.5), []),
    ({"stop_reason": "interrupted", "interrupted": True}, None, ["interrupted"]),
    ({"zero_step_updates": 914}, None, ["914 updates with η = 0"]),
    ({"zero_step_updates": 0, "prediction": False}, None, []),
    ({"prediction": True}, None, ["prediction (beyond the calibration)"]),
    ({"diverged": True, "stop_reason": "diverged"}, None, ["diverged"]),
    ({"sampling": "epochs"}, None, ["epochs"]),
    ({"sampling": "replacement"}, None, []),
])
def test_run_notes(summary, spec, notes):
    assert run_notes(summary, spec) == notes


def test_the_summary_table_shows_caps_zero_steps_and_predictions(fake, tmp_path, capsys):
    def engine(spec, progress, updates=None):
        record = fake_record(spec)
        record.summary.update(stop_reason="log-full", zero_step_updates=914, prediction=True)
        return record

    fake(engine, name="sim")
    assert main(["sim", "--problem", "logreg-synthetic", "--algorithm", "lock", "--workers", "2",
                 "--seconds", "20", "--out", str(tmp_path), "--no-progress"]) == 0
    line = capsys.readouterr().out.splitlines()[2]
    assert line.startswith("r0000")
    assert line.endswith("stopped: log-full; 914 updates with η = 0; "
                         "prediction (beyond the calibration)")
    runs = load_results(only_folder(tmp_path)).runs
    assert runs.zero_step_updates.tolist() == [914] and runs.stop_reason.tolist() == ["log-full"]


def test_tail_with_amplitude_one_counts_its_zero_steps(tmp_path, capsys):
    """TAIL-τ with A = 1 gives s(τ) = 0 beyond the largest τ of its window: such updates are
    applied with η = 0, and the record and the summary count them."""
    argv = ["sim", "--problem", "logreg-synthetic", "--algorithm", "hogwild", "--workers", "8",
            "--cores", "2", "--compute", "exp:1ms", "--stepsize", "tail", "--stepsize-option",
            "A=1", "--stepsize-option", "window=2", "--updates", "3000", "--out",
            str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    res = load_results(only_folder(tmp_path))
    zero = int(res.runs.zero_step_updates.iloc[0])
    assert zero == int((res.updates.eta == 0).sum()) > 0
    assert f"{zero} updates with η = 0" in capsys.readouterr().out
    assert np.isfinite(res.runs.final_loss.iloc[0])


def test_summary_of_a_plain_run_has_no_notes():
    text = format_summary([{"run_id": "r0", "engine": "real", "algorithm": "lock",
                            "stepsize": "constant", "workers": 2, "seed": 0,
                            "updates_per_s": 10.0, "final_loss": 0.3, "time_to_target": 1.0,
                            "stop_reason": "updates", "zero_step_updates": 0}])
    assert text.splitlines()[2].rstrip().endswith("1")  # the last column is empty


def test_the_summary_names_swept_values_that_no_column_shows():
    from stalesgd.experiment import loads_experiment

    exp = loads_experiment("""
        name = "swept"
        engine = "sim"
        [problem]
        name = "logreg-synthetic"
        [stop]
        updates = 100
        [sweep]
        "problem.batch" = [8, 32]
        workers = [1, 2]
        """)
    notes = [run_notes({}, spec) for spec in expand(exp)]
    assert sorted(map(tuple, notes)) == [("batch=32",), ("batch=32",), ("batch=8",),
                                         ("batch=8",)]
