"""The main job, end to end: `stalesgd run` with no file, as `make run` runs it (about four
minutes on 2 cores, so a slow test: `make test-slow`; the default suite checks its plan and
the calibration wiring with a fake engine in tests/test_cli.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stalesgd.records import load_results


@pytest.mark.slow
def test_main_job_runs_real_then_calibrated_sim_and_reports(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "stalesgd.app.cli", "run", "--out", str(tmp_path),
                           "--no-progress"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    res = load_results(folder)
    assert len(res.runs) == 42
    assert sorted(res.runs["engine"].value_counts().items()) == [("real", 18), ("sim", 24)]
    sim = res.runs[res.runs["engine"] == "sim"]
    assert sim["calibrated"].astype(bool).all()
    assert sorted(sim["calibration_scope"].dropna()) == ["m<=2"] * 6
    assert (folder / "calibration-1.json").is_file() and (folder / "calibration-2.json").is_file()
    assert (~res.runs["diverged"].astype(bool)).all()
    # the report, and the three headline numbers printed after it
    assert (folder / "report.html").is_file() and (folder / "report.md").is_file()
    out = proc.stdout
    assert f"report: {folder / 'report.html'}" in out
    assert "PDF(τ) sim vs real: median total variation" in out
    assert "updates/s predicted by sim: median error" in out
    assert "first to loss" in out or "no real run reached its target loss" in out
    assert "out of sample (sim[m<=2], calibrated on m ≤ 2 only, predicting m = 4)" in out
