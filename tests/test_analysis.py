"""The analysis layer on small synthetic results folders: joins, distances, speedups, reports."""

from __future__ import annotations

import base64
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from stalesgd.analysis import (
    AnalysisError,
    analyse,
    config_key,
    load_folders,
    nonconvergence,
    speedup_table,
    staleness_tables,
    write_report,
)
from stalesgd.analysis.load import config_slug
from stalesgd.app.cli import main

from stalesgd import staleness as st
from stalesgd.records import ResultsFolder, RunRecord, summarize

TARGET = 0.4
N = 3000
EVERY = 50
MACHINE = {"cpu_model": "Test CPU 9000", "logical_cores": 2, "physical_cores": 2,
           "usable_cores": 2, "libraries": {"numpy": "9.9.9-test", "pandas": "8.8.8-test"}}

# (engine, algorithm, workers, seed) -> how the synthetic run behaves
#   p: geometric parameter of τ; ups: updates/s; scale: loss decay (updates); kind: ok |
#   diverge | stall | timing (no evaluations)
RUNS = [
    ("real", "seq", 1, 0, dict(p=1.0, ups=1000.0, scale=300.0, kind="ok")),
    ("real", "seq", 1, 1, dict(p=1.0, ups=1100.0, scale=320.0, kind="ok")),
    ("real", "lock", 2, 0, dict(p=0.5, ups=1500.0, scale=400.0, kind="ok")),
    ("real", "lock", 2, 1, dict(p=0.5, ups=1600.0, scale=380.0, kind="ok")),
    ("real", "hogwild", 2, 0, dict(p=0.45, ups=2500.0, scale=500.0, kind="ok")),
    ("real", "hogwild", 2, 1, dict(p=0.45, ups=2400.0, scale=500.0, kind="diverge")),
    ("sim", "lock", 2, 0, dict(p=0.55, ups=1450.0, scale=410.0, kind="ok")),
    ("sim", "lock", 2, 1, dict(p=0.55, ups=1550.0, scale=390.0, kind="ok")),
    ("sim", "hogwild", 2, 0, dict(p=0.40, ups=2600.0, scale=520.0, kind="ok")),
    ("sim", "hogwild", 2, 1, dict(p=0.40, ups=2550.0, scale=520.0, kind="stall")),
    ("sim", "hogwild", 4, 0, dict(p=0.25, ups=4000.0, scale=600.0, kind="timing")),
]


def make_record(engine: str, seed: int, p: float, ups: float, scale: float, kind: str,
                workers: int) -> RunRecord:
    """A run of N updates with geometric τ, a loss that decays to 0.2 (or stalls at 0.5, or
    becomes infinite), evaluated every EVERY updates (never for kind 'timing')."""
    rng = np.random.default_rng([{"real": 1, "sim": 2}[engine], seed, workers, int(p * 100)])
    tau = rng.geometric(p, N) - 1
    t_apply = np.cumsum(rng.exponential(1.0 / ups, N))
    updates = {"k": np.arange(N), "worker": np.arange(N) % workers,
               "t_read": t_apply - 0.5 / ups, "t_apply": t_apply, "tau": tau,
               "eta": np.full(N, 0.05)}
    if kind == "timing":
        return RunRecord({}, updates, {})
    ks = np.arange(0, N + 1, EVERY)
    floor = 0.5 if kind == "stall" else 0.2
    loss = floor + (1.0 - floor) * np.exp(-ks / scale)
    if kind == "diverge":
        loss[ks > 0.2 * N] = np.inf
    t = np.interp(ks, np.arange(N), t_apply)
    return RunRecord({}, updates, {"t": t, "k": ks, "loss": loss,
                                   "active_workers": np.full(len(ks), workers)})


def summary_for(run_id, engine, algorithm, workers, seed, record, target):
    """What the runner writes: summarize() plus the identity columns and extras."""
    s = summarize(record, target)
    s.update(run_id=run_id, engine=engine, algorithm=algorithm, problem="linreg-synthetic",
             workers=workers, stepsize="constant", lr=0.05, batch=16, seed=seed,
             dtype="float64", persistence=math.inf)
    if engine == "sim":
        s["sim.cores"] = 2  # an engine-only swept key: must not split configurations
    return s


def config_toml(name: str, target: float | None) -> str:
    text = f'name = "{name}"\n'
    if target is not None:
        text += f"[stop]\nupdates = {N}\ntarget_loss = {target}\n"
    return text


def build(root: Path, engine: str, target: float | None = TARGET, merge: bool = True,
          only: set[str] | None = None) -> tuple[Path, dict[str, RunRecord]]:
    """A results folder with the RUNS of one engine; returns it and the records by run_id."""
    folder = ResultsFolder.create(f"{engine}-demo", root, config_toml=config_toml(
        f"{engine}-demo", target), machine=MACHINE)
    records = {}
    i = 0
    for eng, alg, m, seed, how in RUNS:
        if eng != engine or (only is not None and alg not in only):
            continue
        rec = make_record(eng, seed, workers=m, **how)
        run_id = f"r{i:04d}"
        folder.write_run(summary_for(run_id, eng, alg, m, seed, rec, target), rec)
        records[run_id] = rec
        i += 1
    if merge:
        folder.close()
    return folder.path, records


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    real, real_recs = build(root, "real")
    sim, sim_recs = build(root, "sim")
    return real, sim, real_recs, sim_recs


FAST = ("geometric", "poisson", "negbin")  # CMP fits of geometric τ take ~1 s each


@pytest.fixture(scope="module")
def joined(folders):
    """The two folders analysed once, with every law fitted to each configuration."""
    real, sim, _, _ = folders
    return analyse([real, sim], run_fits=False)


def key_of(alg: str, m: int) -> str:
    return f"linreg-synthetic {alg} m={m} constant lr=0.05 b=16 float64"


# ---------------------------------------------------------------------------------------------
# Loading and joining
# ---------------------------------------------------------------------------------------------


def test_configurations_join_across_engines(joined):
    runs = joined.loaded.runs
    assert len(runs) == len(RUNS) and runs["uid"].is_unique
    engines_by_key = runs.groupby("config_key")["engine"].agg(lambda e: set(e)).to_dict()
    assert engines_by_key == {
        key_of("seq", 1): {"real"}, key_of("lock", 2): {"real", "sim"},
        key_of("hogwild", 2): {"real", "sim"}, key_of("hogwild", 4): {"sim"}}
    # updates and evals are keyed by the folder-qualified uid (run ids repeat across folders)
    assert set(joined.loaded.updates["uid"]) == set(runs["uid"])
    assert runs["run_id"].duplicated().any()


def test_config_key_ignores_engine_seed_and_sim_keys_but_not_what_was_run():
    base = {"engine": "real", "seed": 0, "problem": "mlp-mnist", "algorithm": "leashed",
            "workers": 4, "stepsize": "tail", "lr": 0.01, "batch": 32, "dtype": "float32",
            "persistence": 2.0}
    same = dict(base, engine="sim", seed=7, **{"sim.cores": 8, "index": 3})
    assert config_key(base) == config_key(same)
    assert "persistence=2" in config_key(base)
    for change in ({"lr": 0.02}, {"persistence": math.inf}, {"dtype": "float64"},
                   {"workers": 2}, {"stepsize.options.K": 3}):
        assert config_key(dict(base, **change)) != config_key(base), change


def test_missing_folder_names_the_path(tmp_path, folders):
    missing = tmp_path / "no-such-results"
    with pytest.raises(AnalysisError, match="no-such-results.*does not exist"):
        load_folders([folders[0], missing])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AnalysisError, match="not a results folder"):
        load_folders(empty)


def test_unmerged_folder_is_read(tmp_path):
    path, recs = build(tmp_path, "real", merge=False)
    assert (path / "parts").exists()
    analysis = analyse(path, run_fits=False, families=FAST)
    assert len(analysis.loaded.runs) == len(recs)
    assert any("not merged" in n for n in analysis.notes)


def test_targets_from_evals_when_runs_lack_them(tmp_path):
    """A folder written without a target: --target computes time/updates to target from
    the evaluations, exactly as summarize() would have with that target."""
    path, recs = build(tmp_path, "real", target=None)
    plain = load_folders(path)
    assert plain.runs["time_to_target"].isna().all() and not plain.runs["reached"].any()
    assert speedup_table(plain)["speedup"].isna().all()
    assert any("no target loss" in n for n in analyse(path, families=FAST).notes)
    loaded = load_folders(path, target=TARGET)
    for _, row in loaded.runs.iterrows():
        want = summarize(recs[row["run_id"]], TARGET)
        if math.isnan(want["time_to_target"]):
            assert math.isnan(row["time_to_target"]) and not row["reached"]
        else:
            assert row["time_to_target"] == pytest.approx(want["time_to_target"])
            assert row["updates_to_target"] == want["updates_to_target"]


# ---------------------------------------------------------------------------------------------
# Staleness
# ---------------------------------------------------------------------------------------------


def pooled(records: dict[str, RunRecord], run_ids: list[str]) -> np.ndarray:
    return st.histogram(np.concatenate([records[r].updates["tau"] for r in run_ids]))


def test_distances_equal_staleness_distances(joined, folders):
    _, _, real_recs, sim_recs = folders
    runs = joined.loaded.runs
    dist = joined.stale.distances.set_index("config_key")
    assert set(dist.index) == {key_of("lock", 2), key_of("hogwild", 2)}
    for alg in ("lock", "hogwild"):
        key = key_of(alg, 2)
        ids = {e: runs[(runs.config_key == key) & (runs.engine == e)]["run_id"].tolist()
               for e in ("real", "sim")}
        h_real, h_sim = pooled(real_recs, ids["real"]), pooled(sim_recs, ids["sim"])
        want = st.distances(h_real, h_sim)
        row = dist.loc[key]
        assert (row.engine_a, row.engine_b) == ("real", "sim")
        assert (row.n_a, row.n_b) == (h_real.sum(), h_sim.sum()) == (2 * N, 2 * N)
        for name, value in want.as_dict().items():
            assert row[name] == pytest.approx(value, rel=1e-12, abs=1e-15), (alg, name)
        assert 0 < row.tv < 0.5 and row.w1 > 0  # slightly different laws, not identical


def test_staleness_summary_and_best_fit(joined, folders):
    _, _, real_recs, _ = folders
    per_run = joined.stale.per_run.set_index("uid")
    for run_id, rec in real_recs.items():
        uid = f"{joined.loaded.sources[0]}/{run_id}"
        s = st.summarize(st.histogram(rec.updates["tau"]))
        row = per_run.loc[uid]
        assert row["mean"] == pytest.approx(s.mean) and row["max"] == s.max
        assert row["p99"] == s.quantiles[0.99]
    cfg = joined.stale.per_config.set_index(["config_key", "engine"])
    assert cfg.loc[(key_of("seq", 1), "real"), "mean"] == 0
    row = cfg.loc[(key_of("hogwild", 2), "real")]
    assert row["runs"] == 2 and row["n"] == 2 * N
    h = joined.stale.config_hists[(key_of("hogwild", 2), "real")]
    assert row["best_law"] == st.best_fit(st.fit_all(h)).family
    assert row["aic"] == pytest.approx(min(row[f"aic_{f}"] for f in st.FAMILIES
                                           if np.isfinite(row[f"aic_{f}"])))


# ---------------------------------------------------------------------------------------------
# Speedup and stability
# ---------------------------------------------------------------------------------------------


def test_speedup_split_multiplies_out(joined):
    sp = joined.speedup.set_index(["config_key", "engine"])
    runs = joined.loaded.runs

    def mean_t(key, engine, col):
        grp = runs[(runs.config_key == key) & (runs.engine == engine) & runs.reached]
        return grp[col].mean()

    row = sp.loc[(key_of("lock", 2), "real")]
    assert row["baseline"] == key_of("seq", 1) and row["reached"] == 2
    t_seq, t = mean_t(key_of("seq", 1), "real", "time_to_target"), row["time_to_target"]
    assert t == pytest.approx(mean_t(key_of("lock", 2), "real", "time_to_target"))
    assert row["speedup"] == pytest.approx(t_seq / t)
    assert row["throughput_ratio"] * row["efficiency_ratio"] == pytest.approx(row["speedup"],
                                                                            rel=1e-12)
    u_seq = mean_t(key_of("seq", 1), "real", "updates_to_target")
    assert row["efficiency_ratio"] == pytest.approx(u_seq / row["updates_to_target"])
    assert row["efficiency_ratio"] < 1  # lock decays more slowly per update than seq here
    ups = runs[(runs.config_key == key_of("lock", 2)) & (runs.engine == "real")].updates_per_s
    assert row["updates_per_s"] == pytest.approx(ups.mean())
    assert sp.loc[(key_of("seq", 1), "real"), "speedup"] == 1.0
    # no seq in the sim folder: no baseline, no speedup
    assert np.isnan(sp.loc[(key_of("lock", 2), "sim"), "speedup"])


def test_nonconvergence_counts_diverged_and_unreached(joined):
    sp = joined.speedup.set_index(["config_key", "engine"])
    hog_real = sp.loc[(key_of("hogwild", 2), "real")]  # one of two seeds diverged
    assert (hog_real["not_converged"], hog_real["judged"]) == (1, 2)
    assert hog_real["nonconv_rate"] == 0.5 and hog_real["reached"] == 1
    hog_sim = sp.loc[(key_of("hogwild", 2), "sim")]  # one of two seeds stalls above target
    assert (hog_sim["not_converged"], hog_sim["judged"], hog_sim["nonconv_rate"]) == (1, 2, 0.5)
    assert sp.loc[(key_of("lock", 2), "real"), "nonconv_rate"] == 0.0
    timing = sp.loc[(key_of("hogwild", 4), "sim")]  # no evaluations: cannot be judged
    assert timing["judged"] == 0 and np.isnan(timing["nonconv_rate"])
    assert np.isfinite(timing["updates_per_s"])


def test_nonconvergence_judges_interrupted_and_unevaluated_runs():
    runs = pd.DataFrame({
        #            ok     unreached  diverged  interrupted  interr.+reached  interr.+div  no evals
        "diverged": [False, False, True, False, False, True, False],
        "interrupted": [False, False, False, True, True, True, False],
        "evaluated": [True, True, False, True, True, True, False],
        "reached": [True, False, False, False, True, False, False],
        "target_loss": [0.4] * 7,
    })
    assert nonconvergence(runs) == (3, 5)  # unreached, diverged, interrupted+diverged
    no_target = runs.assign(target_loss=math.nan)
    assert nonconvergence(no_target) == (2, 5)  # only the diverged ones fail


def test_folder_without_finished_runs_reports(tmp_path, capsys):
    folder = tmp_path / "nothing-yet"
    folder.mkdir()
    (folder / "config.toml").write_text(config_toml("nothing", TARGET))
    assert main(["report", str(folder)]) == 0
    md = (folder / "report.md").read_text()
    assert "no finished run" in md and "_(none)_" in md
    assert not list((folder / "figures").glob("*.png"))


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------

VOID = {"meta", "img", "br", "hr", "link", "input"}


class Checker(HTMLParser):
    """Collects embedded images and checks that every element is closed in order."""

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.images, self.tables = [], [], [], 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        if tag == "table":
            self.tables += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def check_report(out: Path, keys: list[str]) -> Checker:
    md = (out / "report.md").read_text()
    for heading in ("## Runs", "## Staleness PDF(τ) per configuration", "distances",
                    "## Throughput, time to target and speedup"):
        assert heading in md, heading
    assert "Test CPU 9000" in md and "numpy 9.9.9-test" in md
    for key in keys:
        assert f"| {key} |" in md, key
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    checker = Checker()
    checker.feed(page)
    checker.close()
    assert not checker.errors and not checker.stack, (checker.errors, checker.stack)
    embedded = {}
    for img in checker.images:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        embedded[img["data-file"]] = base64.b64decode(img["src"][len(prefix):])
    on_disk = {p.name: p.read_bytes() for p in (out / "figures").glob("*.png")}
    assert on_disk and embedded == on_disk  # every figure listed in figures/, byte for byte
    for name in on_disk:
        assert f"figures/{name}" in md
    return checker


def test_report_tables_and_embedded_figures(folders, joined, tmp_path):
    real, sim, _, _ = folders
    files = write_report([real, sim], tmp_path / "cmp", analysis=joined)
    keys = [key_of("seq", 1), key_of("lock", 2), key_of("hogwild", 2), key_of("hogwild", 4)]
    checker = check_report(tmp_path / "cmp", keys)
    assert checker.tables >= 4
    names = [p.name for p in files.figures]
    by_key = sorted(keys)
    with_evals = [k for k in by_key if k != key_of("hogwild", 4)]  # the timing-only one
    # the exact files, in report order: pdf of every configuration with updates, convergence
    # of those with evaluations, then the cross-configuration figures
    assert names == (["throughput_vs_workers.png"]
                     + [f"pdf_{config_slug(k)}.png" for k in by_key]
                     + [f"convergence_{config_slug(k)}.png" for k in with_evals]
                     + ["speedup_vs_workers.png", "stepsize_tables.png",
                        "tau_over_time_1.png"])
    assert sorted(names) == sorted(p.name for p in (tmp_path / "cmp" / "figures").iterdir())
    for p in files.figures:  # real PNGs of a legible size
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width >= 600 and height >= 350
    md = files.markdown.read_text()
    assert "diverged" in md and "no evals" in md and "target not reached" in md


def test_report_rewrites_figures_without_stale_files(folders, tmp_path):
    real, _, _, _ = folders
    out = tmp_path / "again"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "pdf_old-config.png").write_bytes(b"not a figure")
    write_report(real, out, run_fits=False, families=FAST)
    assert not (out / "figures" / "pdf_old-config.png").exists()
    check_report(out, [key_of("lock", 2)])


def test_timing_only_folder_reports(tmp_path):
    # no evaluations at all: a timing-only simulation
    folder = ResultsFolder.create("timing", tmp_path, config_toml=config_toml("t", None),
                                  machine=MACHINE)
    rec = make_record("sim", 0, 0.3, 1000.0, 100.0, "timing", 2)
    folder.write_run(summary_for("r0000", "sim", "hogwild", 2, 0, rec, None), rec)
    folder.close()
    files = write_report(folder.path, families=FAST)
    md = files.markdown.read_text()
    assert "no evaluations" in md
    assert [p.name.split("_")[0] for p in files.figures].count("convergence") == 0
    st_tables = staleness_tables(load_folders(folder.path), families=FAST)
    assert st_tables.distances.empty and len(st_tables.per_config) == 1


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def test_cli_report_writes_into_the_folder(tmp_path, capsys):
    path, _ = build(tmp_path, "real", only={"seq", "lock"})
    assert main(["report", str(path), "--families", "geometric,negbin"]) == 0
    out = capsys.readouterr().out
    assert str(path / "report.html") in out
    check_report(path, [key_of("lock", 2)])


def test_cli_compare_prints_tables_and_writes_report(folders, tmp_path, capsys):
    real, sim, _, _ = folders
    out = tmp_path / "cmp-out"
    assert main(["compare", str(real), str(sim), "--out", str(out), "--log-y", "on",
                 "--no-run-fits", "--families", ",".join(FAST)]) == 0
    text = capsys.readouterr().out
    assert "TV" in text and "KS p-value" in text and "speedup vs seq" in text
    assert key_of("hogwild", 2) in text and str(out / "report.html") in text
    check_report(out, [key_of("lock", 2), key_of("hogwild", 2)])


def test_cli_compare_default_out(tmp_path, monkeypatch, capsys):
    real, _ = build(tmp_path / "in", "real", only={"lock"})
    sim, _ = build(tmp_path / "in", "sim", only={"lock"})
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(real), str(sim), "--families", "geometric"]) == 0
    (made,) = list((tmp_path / "results").iterdir())
    assert made.name.startswith("compare-") and (made / "report.html").exists()


@pytest.mark.parametrize("command", ["report", "compare"])
def test_cli_missing_folder_exits_2_with_the_path(command, folders, tmp_path, capsys):
    missing = tmp_path / "gone-folder"
    argv = [command, str(missing)] if command == "report" else [command, str(folders[0]),
                                                                  str(missing)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err


def test_cli_bad_families_exit_2(folders, capsys):
    assert main(["report", str(folders[0]), "--families", "geometric,zipf"]) == 2
    assert "zipf" in capsys.readouterr().err


def test_runs_frame_types(joined):
    runs = joined.loaded.runs
    assert pd.api.types.is_bool_dtype(runs["reached"])
    assert runs.loc[runs.engine == "real", "target_loss"].eq(TARGET).all()


def test_pdf_of_tau_is_exact_when_a_run_keeps_a_sample_of_rows(tmp_path):
    """The same simulated run recorded with every row and with every 7th row: the staleness
    tables (from the exact τ counts) are identical, the update tables are not."""
    from stalesgd.analysis import load_folders, staleness_tables
    from stalesgd.app.runner import run_experiment

    from stalesgd.experiment import parse_experiment

    folders = []
    for rows in ("all", "every:7"):
        exp = parse_experiment({
            "name": f"rows-{rows.replace(':', '')}", "engine": "sim", "workers": 4,
            "problem": {"name": "logreg-synthetic", "batch": 16},
            "algorithm": {"name": "hogwild"}, "stop": {"updates": 3000},
            "sim": {"timing_only": True, "compute": "exp:2ms"}, "record": {"rows": rows},
        })
        folders.append(run_experiment(exp, out=tmp_path, progress=False,
                                      echo=lambda _m: None).folder)
    tables = [staleness_tables(load_folders([f])).per_run for f in folders]
    cols = ["n", "mean", "var", "p50", "p90", "p99", "max"]
    assert tables[0][cols].equals(tables[1][cols]) and tables[0]["n"].iloc[0] == 3000
    sizes = [len(load_folders([f]).updates) for f in folders]
    assert sizes[0] == 3000 and sizes[1] == len(range(0, 3000, 7))


def test_compare_says_which_configurations_it_could_not_pair():
    from stalesgd.analysis.tables import unpaired_notes

    runs = pd.DataFrame({"engine": ["real", "sim", "real", "sim", "sim"],
                         "config_key": ["a m=2", "a m=2", "a m=4", "b m=8", "c m=16"]})
    notes = unpaired_notes(runs)
    assert len(notes) == 2
    assert notes[0].startswith("1 configuration(s) ran only on real, not on sim: a m=4")
    assert notes[1].startswith("2 configuration(s) ran only on sim, not on real: b m=8; c m=16")
    assert unpaired_notes(runs[runs["engine"] == "sim"]) == []  # one engine: nothing to pair


def test_headline_words_the_speedup_as_a_speedup():
    from stalesgd.analysis.headline import headline
    from stalesgd.analysis.tables import Analysis

    sp = pd.DataFrame({"config_key": ["x m=1", "x m=2"], "engine": ["real", "real"],
                       "algorithm": ["lock", "lock"], "stepsize": ["constant"] * 2,
                       "workers": [1, 2], "updates_per_s": [1.0, 1.0],
                       "time_to_target": [1.0, 1.6], "target_loss": [0.5, 0.5]})
    stale = type("S", (), {"distances": pd.DataFrame()})()
    h = headline(Analysis(loaded=None, stale=stale, speedup=sp))
    assert h.lines[-1].endswith("x m=1 in 1 s, a 1.00× speed-up over 1 worker")
    sp.loc[1, "time_to_target"] = 0.5
    h = headline(Analysis(loaded=None, stale=stale, speedup=sp))
    assert h.lines[-1].endswith("a 2.00× speed-up over 1 worker")
    sp["time_to_target"] = float("nan")  # none reached it
    assert headline(Analysis(loaded=None, stale=stale, speedup=sp)).lines[-1] == (
        "no real run reached its target loss")
    sp["target_loss"] = float("nan")  # none had a target: nothing to say
    assert headline(Analysis(loaded=None, stale=stale, speedup=sp)).lines == ()


def test_headline_speaks_of_one_configuration_in_the_singular():
    from stalesgd.analysis.headline import headline
    from stalesgd.analysis.tables import Analysis

    sp = pd.DataFrame({"config_key": ["x m=2"] * 2, "engine": ["real", "sim"],
                       "algorithm": ["lock"] * 2, "stepsize": ["constant"] * 2,
                       "workers": [2, 2], "updates_per_s": [100.0, 102.0],
                       "time_to_target": [float("nan")] * 2, "target_loss": [float("nan")] * 2})
    stale = type("S", (), {"distances": pd.DataFrame()})()
    line = headline(Analysis(loaded=None, stale=stale, speedup=sp)).lines[0]
    assert line == ("updates/s predicted by sim: median error 2 % over 1 configuration "
                    "(sim/real 1.02)")
    two = pd.concat([sp, sp.assign(config_key="x m=4", updates_per_s=[100.0, 90.0])])
    line = headline(Analysis(loaded=None, stale=stale, speedup=two)).lines[0]
    assert line.endswith("over 2 configurations (sim/real from 0.90 to 1.02)")


def test_run_flags_say_what_a_reader_of_the_row_must_know():
    from stalesgd.analysis.report import run_flags

    ok = {"diverged": False, "interrupted": False, "evaluated": True, "target_loss": 0.5,
          "reached": True, "zero_step_updates": 0, "prediction": False}
    assert run_flags(ok) == ""
    assert run_flags({**ok, "prediction": True}) == "prediction (beyond the calibration)"
    assert run_flags({**ok, "zero_step_updates": 12}) == "12 updates with η = 0"
    assert run_flags({**ok, "diverged": True, "reached": False}) == (
        "diverged, target not reached")
    assert run_flags({**ok, "evaluated": False, "prediction": pd.NA}) == "no evals"
    assert run_flags({"evaluated": True, "target_loss": float("nan")}) == ""  # older folders


def test_headline_says_how_many_configurations_had_an_unsteady_real_run():
    from stalesgd.analysis.headline import headline
    from stalesgd.analysis.tables import Analysis

    d = pd.DataFrame({"engine_a": ["real"] * 3, "engine_b": ["sim"] * 3,
                      "config_key": ["x m=2", "x m=4", "x m=8"], "tv": [0.05, 0.40, 0.08]})
    runs = pd.DataFrame({"engine": ["real"] * 3 + ["sim"],
                         "config_key": ["x m=2", "x m=4", "x m=8", "x m=4"],
                         "slow_share": [0.0, 0.42, 0.0, 0.9],  # (a simulation's is not read)
                         "other_cpu_share": [0.0, 0.0, 0.0, 0.0],
                         "steal_share": [0.0, 0.0, 0.0, 0.0]})
    loaded = type("L", (), {"runs": runs})()
    stale = type("S", (), {"distances": d})()
    line = headline(Analysis(loaded=loaded, stale=stale, speedup=pd.DataFrame())).lines[0]
    assert line.endswith("(worst 0.400: x m=4, a run on an unsteady machine); 1 of them had "
                         "a real run on an unsteady machine (flags in the runs table)")
    runs["core_round_trip_ns_start"] = [340.0, 60.0, 330.0, 60.0]
    runs["core_round_trip_ns_end"] = [350.0, 60.0, 320.0, 60.0]
    line = headline(Analysis(loaded=loaded, stale=stale, speedup=pd.DataFrame())).lines[0]
    assert line.endswith("1 of them had a real run on an unsteady machine, 2 a real run with "
                         "its CPUs apart (flags in the runs table)")
    del runs["core_round_trip_ns_start"], runs["core_round_trip_ns_end"]
    one = type("S", (), {"distances": d.iloc[1:2]})()
    line = headline(Analysis(loaded=loaded, stale=one, speedup=pd.DataFrame())).lines[0]
    assert line.endswith("over 1 configuration with m > 1 (worst 0.400: x m=4, a run on an "
                         "unsteady machine); it had a real run on an unsteady machine (flags "
                         "in the runs table)")
    runs["slow_share"] = 0.0  # all steady: nothing added
    line = headline(Analysis(loaded=loaded, stale=stale, speedup=pd.DataFrame())).lines[0]
    assert line.endswith("(worst 0.400: x m=4)")
