"""The report's cross-configuration figures: speedup, memory, η(τ), τ over time, elastic m(t)."""

from __future__ import annotations

import re
from pathlib import Path

from stalesgd.analysis import analyse, make_figures, write_report
from stalesgd.analysis.load import config_slug
from stalesgd.app.cli import main


def _run(root: Path, *args: str) -> Path:
    before = set(root.iterdir()) if root.exists() else set()
    assert main([*args, "--out", str(root), "--no-progress"]) == 0
    (folder,) = set(root.iterdir()) - before
    return folder


def test_report_draws_every_cross_configuration_figure(tmp_path):
    root = tmp_path / "res"
    common = ["--problem", "logreg-synthetic", "--algorithm", "lock", "--updates", "3000"]
    one = _run(root, "real", *common, "--workers", "1", "--stepsize", "tail")
    two = _run(root, "real", *common, "--workers", "2", "--stepsize", "tail")
    elastic = _run(root, "sim", *common, "--workers", "4", "--compute", "exp:1ms",
                   "--controller", "schedule",
                   "--controller-option", "steps=[[0, 4], [1500, 1]]")
    analysis = analyse([one, two, elastic], run_fits=False)
    loaded = analysis.loaded
    assert loaded.control is not None and set(loaded.control["m"]) >= {1, 4}
    files, notes = make_figures(analysis, tmp_path / "fig")
    kinds = [f.kind for f in files]
    for kind in ("speedup", "memory", "elastic", "stepsize", "tau_time"):
        assert kind in kinds, (kind, notes)
    assert all(f.path.is_file() and f.path.stat().st_size > 5000 for f in files)

    report = write_report([one, two, elastic], tmp_path / "report", analysis=analysis)
    page = report.html.read_text()
    assert page.count("data:image/png;base64,") == len(report.figures)
    keys = sorted(set(loaded.runs["config_key"]))
    # the exact files, in report order
    assert [p.name for p in report.figures] == (
        ["throughput_vs_workers.png"] + [f"pdf_{config_slug(k)}.png" for k in keys]
        + [f"convergence_{config_slug(k)}.png" for k in keys]
        + ["speedup_vs_workers.png", "memory.png", "elastic_1.png", "stepsize_tables.png",
           "tau_over_time_1.png"])
    assert sorted(p.name for p in report.figures) == sorted(
        p.name for p in (tmp_path / "report" / "figures").iterdir())
    # the real 2-worker run shows where its CPUs sat (start / end round trip), the others "–"
    md = report.markdown.read_text()
    assert "CPU round trip (ns)" in md
    assert len(re.findall(r"\| \d+ / \d+ \|", md)) == 1  # only the real run with m = 2


def test_folders_without_elastic_runs_have_no_control_and_no_elastic_figure(tmp_path):
    one = _run(tmp_path / "res", "real", "--problem", "logreg-synthetic", "--algorithm",
               "lock", "--workers", "1", "--updates", "2000")
    files, notes = make_figures(analyse([one], run_fits=False), tmp_path / "fig")
    assert "elastic" not in [f.kind for f in files]
    assert any(n.startswith("Elastic figure skipped") for n in notes)
    assert any(n.startswith("Speedup figure skipped") for n in notes)  # m = 1 only
