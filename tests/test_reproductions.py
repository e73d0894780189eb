"""The reproduction experiment files parse and expand; the results page is generated from
results folders."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from stalesgd.cli import main
from stalesgd.experiment import expand, load_experiment

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "bench" / "experiments").glob("*.toml"))


def _results_page():
    spec = importlib.util.spec_from_file_location("results_page",
                                                  ROOT / "bench" / "results_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_experiment_files_parse_and_calibrate_from_their_own_real_runs(path):
    runs = expand(load_experiment(path))
    real = [r for r in runs if r.engine == "real"]
    sim = [r for r in runs if r.engine == "sim"]
    assert real and sim
    assert max(r.workers for r in real) <= 4  # real runs stay at this machine's scale
    assert all(r.sim.calibration == "auto" for r in sim)
    assert {(r.problem.name, r.problem.batch, r.problem.dtype) for r in sim} <= {
        (r.problem.name, r.problem.batch, r.problem.dtype) for r in real}


def test_three_reproductions_exist():
    names = {load_experiment(p).name.removesuffix("-small") for p in FILES}
    assert {"leashed-vs-lock-hogwild", "tail-vs-baselines", "less-is-more"} <= names


TINY = """
name = "less-is-more"
engine = "real"
seeds = [0]
exclude = [{engine = "real", workers = 4}, {engine = "sim", workers = 1}]
[problem]
name = "logreg-synthetic"
[stepsize]
rule = "constant"
lr = 0.05
[stop]
updates = 3000
target_loss = 0.6
[eval]
every_updates = 250
[sim]
calibration = "auto"
[sweep]
engine = ["real", "sim"]
workers = [1, 2, 4]
"""


def test_results_page_from_a_folder(tmp_path):
    exp = tmp_path / "less_is_more.toml"
    exp.write_text(TINY)
    assert main(["run", str(exp), "--out", str(tmp_path / "res"), "--no-progress"]) == 0
    (folder,) = (tmp_path / "res").iterdir()
    out = tmp_path / "docs" / "results.md"
    assert _results_page().main([str(folder), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| claim | measured here | reproduced? |" in text
    assert "Fewer workers can win" in text and folder.name in text
    assert (tmp_path / "docs" / "figures").is_dir()
