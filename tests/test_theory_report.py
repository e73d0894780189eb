"""The report's theory section: least-squares runs against the exact recursion fed with their
own measured PDF(τ), and the Hogwild! envelope."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from stalesgd.analysis import analyse, theory_report, write_report
from stalesgd.analysis.load import config_slug, load_folders
from stalesgd.analysis.theory import expected_curve
from stalesgd.app.cli import main

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
    # the Hogwild! envelope is not crossed on the expected nor on the run's own gap; it is so
    # loose that the check cannot fail, and the report says so
    assert not table["hogwild_crossed"].any() and not table["hogwild_run_crossed"].any()
    for name in ("hogwild", "hogwild_run"):
        assert (table[f"{name}_min_ratio"] > theory_report.TOO_LOOSE).all()
        assert (table[f"{name}_median_ratio"] >= table[f"{name}_min_ratio"]).all()
        for _, row in table.iterrows():
            status = theory_report.check_status(row[f"{name}_crossed"],
                                                row[f"{name}_min_ratio"], row[f"{name}_note"])
            assert status.startswith("too loose to fail: ≥ "), status


def test_a_wrong_staleness_law_shows_as_a_deviation(folder):
    """Feeding the m=1 run's recursion a heavy staleness law moves E[loss] away from the run."""
    loaded = load_folders([folder])
    st = loaded.staleness
    one = loaded.runs[loaded.runs["workers"] == 1].iloc[0]["uid"]
    n = int(st.loc[st["uid"] == one, "count"].sum())
    # claim every update was 40 steps stale
    others = st[st["uid"] != one]
    loaded.staleness = pd.concat([others, pd.DataFrame(
        {"source": [st["source"].iloc[0]], "uid": [one], "run_id": [one.split("/")[-1]],
         "tau": [40], "count": [n]})], ignore_index=True)
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
    # where every bound comes from, and that the Hogwild! checks cannot fail, in words
    section = text.split("## Theory checks: the bounds, where their statements come from, "
                         "and how loose they are here")[1].split("## ")[0]
    for bound in ("Niu et al. 2011, Prop. 4.1", "Lian et al. 2015, Thm. 1",
                  "Koloskova et al. 2022", "Mishchenko et al. 2022"):
        assert bound in section, bound
    assert section.count("transcribed from memory, not checked against the paper") == 3
    assert section.count("rate shape and step-size condition from the paper's abstract") == 2
    assert section.count("| 2 too loose to fail |") == 2  # Hogwild! on recursion and runs
    assert (folder / "figures" / "theory.png").is_file()
    keys = sorted(set(load_folders([folder]).runs["config_key"]))
    assert len(keys) == 2
    # the exact files, in report order (the theory figure last)
    assert [p.name for p in files.figures] == (
        ["throughput_vs_workers.png"] + [f"pdf_{config_slug(k)}.png" for k in keys]
        + [f"convergence_{config_slug(k)}.png" for k in keys]
        + ["speedup_vs_workers.png", "memory.png", "stepsize_tables.png",
           "tau_over_time_1.png", "theory.png"])
    assert analyse(folder, theory=False).theory is None


def test_no_theory_section_without_least_squares(tmp_path):
    exp = tmp_path / "e.toml"
    exp.write_text(LINREG.replace("linreg-synthetic", "logreg-synthetic").replace(
        "noise = 0.5", "n_classes = 2"))
    assert main(["run", str(exp), "--out", str(tmp_path / "res"), "--no-progress",
                 "--no-report"]) == 0
    (path,) = (tmp_path / "res").iterdir()
    assert theory_report.theory_checks(load_folders([path])) is None


def test_gradient_norm_bounds_are_checked_on_constant_step_runs(folder):
    table = theory_report.theory_checks(load_folders([folder])).table.set_index("label")
    for name in ("lian", "koloskova", "mishchenko"):
        label = "sim lock constant m=1"  # no staleness: every condition holds at this step
        assert str(table.loc[label, f"{name}_crossed"]) == "False", name
        assert table.loc[label, f"{name}_min_ratio"] > 1.0
        assert table.loc[label, f"{name}_median_ratio"] >= table.loc[label, f"{name}_min_ratio"]
        label = "sim lock constant m=6"  # checked, or the condition fails with this τmax
        crossed, note = table.loc[label, f"{name}_crossed"], table.loc[label, f"{name}_note"]
        assert str(crossed) == "False" or (crossed is None and "condition fails" in note)
    text = write_report(folder).markdown.read_text()
    assert "## Theory checks: bounds on the average squared gradient norm" in text


def _tiny_curve(lr: float = 0.02):
    problem = make_problem("linreg-synthetic", n_features=3, n_train=200, n_test=50)
    X, y = problem.dataset.features("train"), problem.dataset.y_train
    theta0 = problem.init_params(0)
    curve = expected_curve(problem, [0.5, 0.3, 0.2], "constant", lr=lr, batch=4, updates=300,
                           theta0=theta0, split="train", max_rows=200)
    from stalesgd.analysis.bounds import lstsq_constants

    return curve, lstsq_constants(X, y, theta0, batch=4)


def test_check_status_in_words():
    status = theory_report.check_status
    assert status(False, 2.5, "") == "below"
    assert status(False, theory_report.TOO_LOOSE * 1.5, "") == (
        "too loose to fail: ≥ 150× above the curve at every step")
    assert status(True, 0.4, "") == "CROSSED"
    assert status(True, 500.0, "") == "CROSSED"  # a crossing is never hidden
    assert status(None, float("nan"), "η varies with τ") == "not checked: η varies with τ"


def test_gradient_norm_bounds_say_why_they_were_not_checked():
    curve, consts = _tiny_curve()
    varying = theory_report.gradient_bound_checks(curve, np.array([1.0, 0.5, 0.25]), 0.02,
                                                  consts, tau_max=2, workers=3)
    assert varying["lian_crossed"] is None and "varies with τ" in varying["lian_note"]
    big = theory_report.gradient_bound_checks(curve, np.ones(3), 50.0, consts, tau_max=2,
                                              workers=3)
    for name in ("lian", "koloskova", "mishchenko"):
        assert big[f"{name}_crossed"] is None
        assert "step-size condition fails" in big[f"{name}_note"]


def test_a_curve_above_a_gradient_bound_is_reported_as_crossing():
    curve, consts = _tiny_curve()
    ok = theory_report.gradient_bound_checks(curve, np.ones(3), 0.02, consts, tau_max=2,
                                             workers=3)
    assert ok["lian_crossed"] is False
    inflated = type(curve)(**{**curve.__dict__, "grad2": curve.grad2 * 1e6})
    bad = theory_report.gradient_bound_checks(inflated, np.ones(3), 0.02, consts, tau_max=2,
                                              workers=3)
    assert bad["lian_crossed"] is True and bad["mishchenko_crossed"] is True


def test_runs_that_sampled_epochs_are_skipped_with_a_reason(tmp_path):
    exp = tmp_path / "epochs.toml"
    exp.write_text(LINREG.replace('dtype = "float64"', 'dtype = "float64"\nsampling = "epochs"')
                   .replace("workers = [1, 6]", "workers = [1]"))
    assert main(["run", str(exp), "--out", str(tmp_path / "res"), "--no-progress",
                 "--no-report"]) == 0
    (path,) = (tmp_path / "res").iterdir()
    checks = theory_report.theory_checks(load_folders([path]))
    assert checks.table.empty and len(checks.notes) == 1
    assert "with replacement; this run sampled epochs" in checks.notes[0]
