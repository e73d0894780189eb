"""The report's theory section: least-squares runs against the exact recursion fed with their
own measured PDF(τ), and the Hogwild! envelope."""

from __future__ import annotations

import numpy as np
import pytest
from stalesgd.analysis import theory_report
from stalesgd.analysis.load import load_folders
from stalesgd.analysis.report import analyse, write_report
from stalesgd.analysis.theory import expected_curve

from stalesgd.cli import main
from stalesgd.problems.registry import make_problem

LINREG = """
name = "theory"
engine = "sim"
seeds = [0]
[problem]
name = "linreg-synthetic"
batch = 8
dtype = "float64"
options = { n_features = 5, n_train = 400, n_test = 200, noise = 0.5 }
[stepsize]
rule = "constant"
lr = 0.02
[stop]
updates = 600
[eval]
every_updates = 50
split = "train"
max_rows = 400
[sim]
compute = "exp:1ms"
[sweep]
workers = [1, 6]
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("theory")
    exp = root / "theory.toml"
    exp.write_text(LINREG)
    assert main(["run", str(exp), "--out", str(root / "res"), "--no-progress",
                 "--no-report"]) == 0
    (path,) = (root / "res").iterdir()
    return path


def test_each_configuration_is_checked_against_its_own_recursion(folder):
    loaded = load_folders([folder])
    checks = theory_report.theory_checks(loaded)
    assert checks is not None and not checks.notes
    table = checks.table.set_index("label")
    assert list(table.index) == ["sim lock constant m=1", "sim lock constant m=6"]
    assert table.loc["sim lock constant m=1", "mean_tau"] == 0
    assert table.loc["sim lock constant m=6", "mean_tau"] > 2  # six workers, one core each

    # the expectation is the recursion with the run's own PDF, step sizes and θ_0
    run = loaded.runs[loaded.runs["workers"] == 6].iloc[0]
    tau = loaded.updates[loaded.updates["uid"] == run["uid"]]["tau"].to_numpy()
    pdf = np.bincount(tau) / tau.size
    p = make_problem("linreg-synthetic", dtype="float64", n_features=5, n_train=400,
                     n_test=200, noise=0.5)
    curve = expected_curve(p, pdf, "constant", lr=0.02, batch=8, updates=600,
                           theta0=p.init_params(0), eval_at=[600], split="train",
                           max_rows=400)
    assert table.loc["sim lock constant m=6", "expected_loss"] == pytest.approx(curve.loss[-1],
                                                                               rel=1e-12)
    # one run follows its expectation closely while the loss falls (the noise is small
    # against the contraction); this fails if the PDF, step sizes or θ_0 were not the run's
    for label in table.index:
        assert table.loc[label, "max_rel_dev"] < 0.15, label
        assert table.loc[label, "median_rel_dev"] < 0.03, label
    # the Hogwild! envelope holds (and is loose) on the expected and on the run's own gap
    assert not table["hogwild_expected_crossed"].any()
    assert not table["hogwild_run_crossed"].any()
    assert (table["hogwild_looseness"] > 1).all()


def test_a_wrong_staleness_law_shows_as_a_deviation(folder):
    """Feeding the m=1 run's recursion a heavy staleness law moves E[loss] away from the run."""
    loaded = load_folders([folder])
    up = loaded.updates
    one = loaded.runs[loaded.runs["workers"] == 1].iloc[0]["uid"]
    up.loc[up["uid"] == one, "tau"] = 40  # claim every update was 40 steps stale
    checks = theory_report.theory_checks(loaded)
    row = checks.table.set_index("label").loc["sim lock constant m=1"]
    assert row["max_rel_dev"] > 0.3


def test_costly_runs_are_skipped_with_a_reason(folder, monkeypatch):
    monkeypatch.setattr(theory_report, "MAX_COST", 10.0)
    checks = theory_report.theory_checks(load_folders([folder]))
    assert checks.table.empty and len(checks.notes) == 2
    assert "would cost" in checks.notes[0]


def test_report_has_the_theory_section_and_figure(folder):
    files = write_report(folder)
    text = files.markdown.read_text()
    assert "## Theory checks (least squares)" in text
    assert "| sim lock constant m=6 |" in text
    assert (folder / "figures" / "theory.png").is_file()
    assert analyse(folder, theory=False).theory is None


def test_no_theory_section_without_least_squares(tmp_path):
    exp = tmp_path / "e.toml"
    exp.write_text(LINREG.replace("linreg-synthetic", "logreg-synthetic").replace(
        "noise = 0.5", "n_classes = 2"))
    assert main(["run", str(exp), "--out", str(tmp_path / "res"), "--no-progress",
                 "--no-report"]) == 0
    (path,) = (tmp_path / "res").iterdir()
    assert theory_report.theory_checks(load_folders([path])) is None
