"""The reproduction experiment files (bench/experiments) parse, expand and dry-run; the results
page (bench/results_page.py) is generated from a tiny real results folder."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import pytest
from stalesgd.app.cli import main

from stalesgd.experiment import expand, load_experiment

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "bench" / "experiments").glob("*.toml"))
REPRODUCTIONS = ("leashed-vs-lock-hogwild", "tail-vs-baselines", "less-is-more")
# the files of the results page's experiments (other experiment files live beside them)
REPRO_FILES = [p for p in FILES if p.stem.removesuffix("_small").replace("_", "-")
               in (*REPRODUCTIONS, "less-is-more-mlp", "leashed-vs-lock-hogwild-cnn",
                   "sparse-hogwild")]


def _results_page():
    spec = importlib.util.spec_from_file_location("results_page",
                                                  ROOT / "bench" / "results_page.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["results_page"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_reproduction_has_a_file():
    assert len(REPRO_FILES) >= len(REPRODUCTIONS)


@pytest.mark.parametrize("path", REPRO_FILES, ids=[p.stem for p in REPRO_FILES])
def test_experiment_file_expands_into_real_runs_that_calibrate_the_sim_runs(path):
    exp = load_experiment(path)
    runs = expand(exp)
    real = [r for r in runs if r.engine == "real"]
    sim = [r for r in runs if r.engine == "sim"]
    assert real and sim
    assert max(r.workers for r in real) <= 4  # real runs stay at this machine's scale
    assert all(r.sim.calibration == "auto" for r in sim)
    assert not any(r.sim.timing_only for r in sim)  # numeric replay: convergence is measured
    assert {(r.problem.name, r.problem.batch, r.problem.dtype) for r in sim} <= {
        (r.problem.name, r.problem.batch, r.problem.dtype) for r in real}
    # the papers' scale: one simulated core per worker (a calibration alone would simulate
    # this machine's 2 cores and cap the throughput of 16-64 workers)
    big = [r for r in sim if r.workers > 4]
    assert big and all(r.sim.cores is not None and r.sim.cores >= r.workers for r in big)
    assert exp.stop.target_loss is not None
    # no run twice (e.g. a real run repeated for each swept simulated core count)
    same = [{k: v for k, v in r.to_dict().items() if k not in ("run_id", "index", "point")}
            for r in runs if r.engine == "real"]
    assert len({repr(d) for d in same}) == len(same)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_experiment_file_header_names_its_command_and_wall_time(path):
    text = path.read_text()
    assert f"stalesgd run bench/experiments/{path.name}" in text
    assert re.search(r"Expected wall time on 2 idle cores: about \d", text)
    assert load_experiment(path).name.replace("-", "_") == path.stem


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_dry_run_lists_every_run(path, capsys, monkeypatch):
    """As the README runs them: with the shared data (a dry run checks that it is there)."""
    shared = ROOT.parent / "shared" / "data"
    if not shared.is_dir():
        pytest.skip(f"shared data {shared} is absent")
    monkeypatch.setenv("STALESGD_DATA", str(shared))
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^r\d{4} ", out, flags=re.M)) == len(expand(load_experiment(path)))


def test_the_three_reproductions_and_their_scales_exist():
    exps = {load_experiment(p).name: expand(load_experiment(p)) for p in REPRO_FILES}
    assert set(REPRODUCTIONS) <= set(exps)
    sim_m = {name: {r.workers for r in runs if r.engine == "sim"} for name, runs in exps.items()}
    assert {16, 32, 64} <= sim_m["leashed-vs-lock-hogwild"]
    assert {16, 32, 64} == sim_m["tail-vs-baselines"]
    assert min(sim_m["less-is-more"]) == 4 and max(sim_m["less-is-more"]) == 64
    tail = [r for r in exps["tail-vs-baselines"] if r.engine == "sim"]
    assert {r.stepsize.rule for r in tail} == {"constant", "inverse", "exponential", "tail",
                                               "tail-original", "model", "delay-adaptive"}
    assert len({r.seed for r in tail}) >= 10
    assert {r.algorithm.name for r in tail} == {"lock"}
    leashed = exps["leashed-vs-lock-hogwild"]
    assert {r.algorithm.name for r in leashed} == {"lock", "hogwild", "leashed"}
    assert leashed[0].problem.options["hidden"] == [128, 128, 128]


def test_results_page_matches_folders_by_experiment_name():
    page = _results_page()
    assert page.experiment_of("less-is-more-small") == "less-is-more"
    assert page.experiment_of("less-is-more-mlp") == "less-is-more-mlp"
    assert page.experiment_of("quick") is None


def test_savings_fastest_m_and_resources():
    page = _results_page()
    best, idle, core_s = page.savings({4: 2.0, 8: 1.0, 16: 1.5})
    assert best == 8 and idle == pytest.approx(0.5)
    assert core_s == pytest.approx(1 - 8 * 1.0 / (16 * 1.5))
    assert page.savings({4: 2.0, 8: math.inf})[2] == 1.0  # the most workers never got there
    assert page.savings({4: math.inf}) is None


def test_cpp_reference_fastest_to_the_level(tmp_path):
    page = _results_page()
    ref = tmp_path / "ref.json"
    ref.write_text('{"runs": {"2": {"epoch_loss": [2.0, 0.7, 0.5], "epoch_time": [1, 2, 3],'
                   ' "staleness_dist": [0, 4]},'
                   ' "4": {"epoch_loss": [2.0, 0.55, 0.5], "epoch_time": [2, 4, 6],'
                   ' "staleness_dist": [1, 1, 2]}}}')
    cpp = page.cpp_reference(ref, level=0.6)
    assert cpp.times == {2: 3.0, 4: 4.0} and cpp.fastest == 2
    assert cpp.mean_tau == {2: 1.0, 4: pytest.approx(1.25)}


TINY = """
name = "less-is-more"
engine = "sim"
seeds = [0, 1]
[problem]
name = "logreg-synthetic"
[stepsize]
rule = "constant"
lr = 0.05
[stop]
updates = 1500
target_loss = 0.6
[eval]
every_updates = 250
[sim]
compute = "exp:1ms"
[sweep]
workers = [2, 4]
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A results folder of the tiny less-is-more experiment (run once for these tests)."""
    root = tmp_path_factory.mktemp("tiny")
    exp = root / "less_is_more.toml"
    exp.write_text(TINY)
    assert main(["run", str(exp), "--out", str(root / "res"), "--no-progress",
                 "--no-report"]) == 0
    (path,) = (root / "res").iterdir()
    return path


def test_results_page_from_a_tiny_folder(tmp_path, folder):
    out = tmp_path / "docs" / "results.md"
    page = _results_page()
    assert page.main([str(folder), "--out", str(out), "--results", str(tmp_path / "none")]) == 0
    text = out.read_text()
    assert page.CLAIM_HEADER in text
    assert "Fewer workers can win" in text and folder.name in text
    assert "bench/experiments/less_is_more.toml" in text  # the exact command
    # the numbers come from the folder: the simulated median times to target by m
    # (a small simulated folder keeps this test fast; the files' real+sim runs are above)
    analysis = page.analyse([folder], run_fits=False, families=("geometric",))
    runs = page._runs(analysis)
    for m in (2, 4):
        t = page.median_ttt(runs[runs["engine"] == "sim"], workers=m)
        assert f"{m}: {page.fmt(t)}" in text
    assert (tmp_path / "docs" / "figures").is_dir()


def test_results_page_refuses_to_replace_a_section_of_another_scale(tmp_path, monkeypatch,
                                                                  folder):
    page = _results_page()
    out = tmp_path / "docs" / "results.md"
    out.parent.mkdir()
    committed = ("# Results\n\n## Fewer workers\n\n"
                 "<!-- scale: less-is-more variant=full seeds=3 -->\n")
    out.write_text(committed)
    # two seeds of the full file against a page of three: refused, page untouched
    assert page.main([str(folder), "--out", str(out)]) == 2
    assert out.read_text() == committed
    assert page.main([str(folder), "--out", str(out), "--replace-scale"]) == 0
    assert "<!-- scale: less-is-more variant=full seeds=2 -->" in out.read_text()
    # by default the page goes under results/, never onto docs/
    monkeypatch.chdir(tmp_path)
    assert page.main([str(folder)]) == 0
    assert (tmp_path / "results" / "results.md").is_file()
    assert out.read_text().count("seeds=2") == 1


def test_results_page_keeps_the_sections_and_claims_it_has_no_folder_for(tmp_path, folder):
    page = _results_page()
    tail = page.EXPERIMENTS["tail-vs-baselines"].title
    less = page.EXPERIMENTS["less-is-more"].title
    out = tmp_path / "results.md"
    out.write_text(
        f"# Results\n\n{page.CLAIM_HEADER}\n|---|---|---|\n"
        "| TAIL-τ is fast | kept numbers 1.23 | yes <!-- tail-vs-baselines --> |\n"
        "| Fewer workers can win | old numbers 9.99 | no <!-- less-is-more --> |\n"
        "| C++ measurements | old C++ | yes <!-- cpp-reference --> |\n\n"
        f"## {less}\n\nold less-is-more section 9.99\n\n"
        f"## {tail}\n\n<!-- scale: tail-vs-baselines variant=full seeds=10 -->\n\n"
        "kept section text\n")
    assert page.main([str(folder), "--out", str(out), "--results", str(tmp_path / "none")]) == 0
    text = out.read_text()
    # the experiment with a folder is regenerated, its old section and claims gone ...
    assert "9.99" not in text and folder.name in text
    assert text.count("<!-- less-is-more -->") >= 1 and "old C++" not in text
    # ... the other is kept word for word, its claims row too, in the experiments' order
    assert "kept section text" in text
    assert "| TAIL-τ is fast | kept numbers 1.23 | yes <!-- tail-vs-baselines --> |" in text
    assert text.index(f"## {tail}") < text.index(f"## {less}")
    assert text.index("kept numbers") < text.index("<!-- less-is-more -->")
