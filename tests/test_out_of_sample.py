"""Out-of-sample prediction: a calibration fitted to runs of at most N workers, its
simulations of more workers labelled ``sim[m<=N]``, and their errors against measured runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from stalesgd.analysis import analyse
from stalesgd.analysis.calibrate import calibrate
from stalesgd.analysis.headline import headline
from stalesgd.analysis.tables import with_prediction_errors
from stalesgd.app.autocalibration import order_for_calibration
from stalesgd.app.cli import main
from stalesgd.app.runner import run_experiment

from stalesgd.calibration import CalibrationError, load_calibration
from stalesgd.experiment import ExperimentError, expand, parse_experiment
from stalesgd.records import load_results

#: fixed micro-costs so that the tests do not measure this machine
COSTS = {"read_per_param": 1e-10, "update_per_param": 1e-10, "fused_per_param": 1e-10,
         "cas_cost": 2e-8, "source": "test"}


def _raw(**extra):
    """Real lock with 1, 2 and 4 workers; sim calibrated from all of them (in sample) and,
    at m = 4, from the m <= 2 runs only (out of sample)."""
    raw = {
        "name": "oos", "engine": "real", "workers": 1, "seeds": [0],
        "problem": {"name": "logreg-synthetic", "batch": 16,
                    "options": {"n_features": 50, "n_train": 4000}},
        "algorithm": {"name": "lock"},
        "stepsize": {"rule": "constant", "lr": 0.05},
        "stop": {"updates": 3000, "target_loss": 0.69, "at_target": False},
        "eval": {"every_updates": 100},
        "sim": {"calibration": "auto"},
        "sweep": {"engine": ["real", "sim"], "workers": [1, 2, 4],
                  "sim.calibration_max_workers": [4, 2]},
        "exclude": [{"engine": "sim", "workers": 1, "sim.calibration_max_workers": 2},
                    {"engine": "sim", "workers": 2, "sim.calibration_max_workers": 2}],
    }
    raw.update(extra)
    return raw


@pytest.fixture(scope="module")
def oos_folder(tmp_path_factory):
    import stalesgd.analysis.calibrate as cal_mod

    original = cal_mod.measure_costs
    cal_mod.measure_costs = lambda n, dtype: dict(COSTS)
    try:
        return run_experiment(parse_experiment(_raw()), out=tmp_path_factory.mktemp("oos"),
                              progress=False, echo=lambda _m: None).folder
    finally:
        cal_mod.measure_costs = original


def test_sweeping_a_sim_setting_does_not_repeat_the_real_runs():
    runs = expand(parse_experiment(_raw()))
    real = [r for r in runs if r.engine == "real"]
    sims = [(r.workers, r.sim.calibration_max_workers) for r in runs if r.engine == "sim"]
    assert sorted(r.workers for r in real) == [1, 2, 4]
    assert sorted(sims) == [(1, 4), (2, 4), (4, 2), (4, 4)]
    assert all(r.sim.calibration is None for r in real)  # a real run keeps no sim settings


def test_the_bounded_calibration_sees_only_the_runs_it_may(oos_folder):
    files = sorted(oos_folder.glob("calibration-*.json"))
    bounds = {}
    for f in files:
        cal = load_calibration(f)
        bounds[cal.max_workers] = sorted(int(c["workers"]) for c in cal.data["configurations"])
    assert bounds == {4: [1, 2, 4], 2: [1, 2]}


def test_only_predictions_beyond_the_bound_are_labelled_out_of_sample(oos_folder):
    runs = load_results(oos_folder).runs
    sims = runs[runs["engine"] == "sim"].sort_values("workers")
    scoped = sims[sims["calibration_scope"].notna()]
    assert list(scoped["workers"]) == [4] and list(scoped["calibration_scope"]) == ["m<=2"]
    assert bool(scoped["prediction"].iloc[0])  # m = 4 was not in its calibration
    assert not sims[sims["calibration_scope"].isna()]["prediction"].any()


def test_compare_reports_the_prediction_beside_the_in_sample_simulation(oos_folder):
    analysis = analyse([oos_folder], theory=False)
    assert analysis.loaded.engines == ["real", "sim", "sim[m<=2]"]
    d = analysis.stale.distances
    m4 = d[d["config_key"].str.contains("m=4")].set_index("engine_b")
    assert set(m4.index) == {"sim", "sim[m<=2]"}
    for engine in m4.index:
        row = m4.loc[engine]
        assert 0 <= row["tv"] <= 1 and 0 <= row["ks"] <= 1 and row["w1"] >= 0
        assert math.isfinite(row["updates_per_s_ratio"]) and row["updates_per_s_ratio"] > 0
    h = headline(analysis)
    line = [x for x in h.lines if x.startswith("out of sample")]
    assert len(line) == 1 and "sim[m<=2], calibrated on m ≤ 2 only, predicting m = 4" in line[0]
    tv, ups, _ttt = h.out_of_sample["sim[m<=2]"]
    assert tv == pytest.approx(float(m4.loc["sim[m<=2]", "tv"]))
    assert ups == pytest.approx(abs(float(m4.loc["sim[m<=2]", "updates_per_s_ratio"]) - 1))


def test_prediction_errors_are_ratios_to_the_reference():
    d = pd.DataFrame({"config_key": ["a m=4", "a m=4", "b m=2"],
                      "engine_a": ["real"] * 3, "engine_b": ["sim", "sim[m<=2]", "sim"],
                      "tv": [0.1, 0.2, 0.3]})
    sp = pd.DataFrame({"config_key": ["a m=4"] * 3 + ["b m=2"],
                       "engine": ["real", "sim", "sim[m<=2]", "sim"],
                       "updates_per_s": [100.0, 110.0, 80.0, 5.0],
                       "time_to_target": [2.0, 1.0, np.nan, 3.0]})
    out = with_prediction_errors(d, sp)
    assert list(out["updates_per_s_ratio"][:2]) == [1.1, 0.8]
    assert out["time_to_target_ratio"].iloc[0] == 0.5
    assert np.isnan(out["time_to_target_ratio"].iloc[1])  # the prediction never reached it
    assert np.isnan(out["updates_per_s_ratio"].iloc[2])  # b m=2 was not measured
    assert list(with_prediction_errors(d.iloc[:0], sp).columns)[-2:] == [
        "updates_per_s_ratio", "time_to_target_ratio"]


def test_calibrate_max_workers_checks(oos_folder, capsys):
    with pytest.raises(CalibrationError, match="no real run with at most 0 workers|>= 1"):
        calibrate(oos_folder, max_workers=0, costs=COSTS)
    with pytest.raises(CalibrationError, match=r"max_workers must be an integer >= 1, not '2'"):
        calibrate(oos_folder, max_workers="2", costs=COSTS)
    cal = calibrate(oos_folder, max_workers=1, costs=COSTS)
    assert cal.scope == "m<=1" and [c["workers"] for c in cal.data["configurations"]] == [1]
    assert "only runs with at most 1 worker)" in cal.summary_text()
    assert main(["calibrate", str(oos_folder), "--max-workers", "0"]) == 2
    assert "--max-workers = 0" in capsys.readouterr().err


def test_a_damaged_bound_is_refused(oos_folder, tmp_path):
    src = sorted(oos_folder.glob("calibration-*.json"))[0]
    data = json.loads(src.read_text())
    data["source"]["max_workers"] = -3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match="source.max_workers = -3"):
        load_calibration(bad)


def test_the_bound_needs_auto_and_a_real_run_within_it():
    raw = _raw()
    raw["sim"] = {"calibration": "cal.json", "calibration_max_workers": 2}
    del raw["sweep"]["sim.calibration_max_workers"], raw["exclude"]
    with pytest.raises(ExperimentError, match="only with sim.calibration = 'auto'"):
        parse_experiment(raw)
    raw = _raw(sweep={"engine": ["real", "sim"], "workers": [2, 4]},
               exclude=[])
    raw["sim"]["calibration_max_workers"] = 1
    with pytest.raises(ExperimentError, match=r"leaves sim run r\d+ no real run to calibrate"):
        order_for_calibration(expand(parse_experiment(raw)))
    raw["sim"]["calibration_max_workers"] = 0
    with pytest.raises(ExperimentError, match="calibration_max_workers = 0"):
        parse_experiment(raw)


def test_a_prediction_uses_the_pooled_or_the_nearest_measured_configuration(oos_folder):
    import stalesgd.sim.run as sim_run

    from stalesgd.calibration import Calibration

    runs = load_results(oos_folder).runs
    sims = runs[runs["engine"] == "sim"]
    match = dict(zip(sims["calibration_scope"].fillna("in") + sims["workers"].astype(str),
                     sims["calibration_match"], strict=True))
    assert match == {"in1": "exact", "in2": "exact", "in4": "exact", "m<=24": "nearest (m=2)"}
    spec = next(s for s in expand(parse_experiment(_raw()))
                if s.engine == "sim" and s.workers == 4 and s.sim.calibration_max_workers == 2)
    bounded = next(f for f in oos_folder.glob("calibration-*.json")
                   if load_calibration(f).max_workers == 2)
    saved = sim_run.PREDICT_FROM
    try:
        sim_run.PREDICT_FROM = "pooled"
        timing = sim_run.calibrated_timing(load_calibration(bounded), spec, {}, 100)
    finally:
        sim_run.PREDICT_FROM = saved
    assert timing.summary["calibration_match"] == "pooled"
    assert timing.summary["prediction"] and timing.summary["calibration_scope"] == "m<=2"

    cal = Calibration({"configurations": [
        {"algorithm": "lock", "workers": 1}, {"algorithm": "lock", "workers": 2},
        {"algorithm": "hogwild", "workers": 2}]})
    assert cal.nearest_configuration("lock", 8)["workers"] == 2
    assert cal.nearest_configuration("lock", 1)["workers"] == 1
    assert cal.nearest_configuration("hogwild", 1)["workers"] == 2  # none below: fewest above
    assert cal.nearest_configuration("leashed", 4) is None


def test_a_prediction_runs_on_the_cores_its_nearest_configuration_got(oos_folder, tmp_path):
    """On a loaded machine the m = 2 runs of one algorithm may get one core while another
    algorithm's get two (the file's effective cores): a prediction of m = 4 from the first
    must run on one core, as its compute times were measured (on two it predicted twice the
    measured updates/s in a main job run beside other load)."""
    import json

    import stalesgd.sim.run as sim_run

    spec = next(s for s in expand(parse_experiment(_raw()))
                if s.engine == "sim" and s.workers == 4 and s.sim.calibration_max_workers == 2)
    bounded = next(f for f in oos_folder.glob("calibration-*.json")
                   if load_calibration(f).max_workers == 2)
    data = json.loads(bounded.read_text())
    data["effective_cores"] = 2
    for c in data["configurations"]:
        c["effective_cores"] = 1 if c["workers"] == 2 else c["effective_cores"]
    loaded = tmp_path / "loaded.json"
    loaded.write_text(json.dumps(data))
    timing = sim_run.calibrated_timing(load_calibration(loaded), spec, {}, 100)
    assert timing.summary["calibration_match"] == "nearest (m=2)"
    assert timing.kwargs["cores"] == 1
    for c in data["configurations"]:  # its m = 2 runs had both cores: the machine's count
        c["effective_cores"] = min(c["workers"], 2)
    loaded.write_text(json.dumps(data))
    assert sim_run.calibrated_timing(load_calibration(loaded), spec, {}, 100).kwargs[
        "cores"] == 2


def test_the_headline_of_distances_without_a_real_sim_pair_is_written():
    """Distances between real and ray (or sim and sim[m<=2]) only: no real-vs-sim line and
    no crash (an empty selection once dropped every column)."""
    from stalesgd.analysis.tables import Analysis

    d = pd.DataFrame({"config_key": ["a m=2"], "engine_a": ["real"], "engine_b": ["ray"],
                      "tv": [0.1], "ks": [0.1], "w1": [0.2], "updates_per_s_ratio": [1.0],
                      "time_to_target_ratio": [np.nan]})
    stale = type("S", (), {"distances": d})()
    h = headline(Analysis(loaded=None, stale=stale, speedup=pd.DataFrame()))
    assert h.tv_median is None and h.lines == ()
    d["engine_a"], d["engine_b"] = "sim", "sim[m<=2]"
    assert headline(Analysis(loaded=None, stale=stale, speedup=pd.DataFrame())).lines == ()


def test_updates_per_second_are_compared_over_the_same_span(oos_folder):
    """A real run's runs-table rate counts its start-up, a simulation's does not: errors are
    taken from first read to last apply on both sides, where both kept every row."""
    loaded = analyse([oos_folder], theory=False).loaded
    runs = loaded.runs
    assert np.isfinite(runs["updates_per_s_span"]).all()
    r = runs[runs["engine"] == "real"].iloc[0]
    up = loaded.updates[loaded.updates["uid"] == r["uid"]]
    ok = ~up["dropped"].to_numpy(bool)
    span = up["t_apply"].to_numpy()[ok].max() - up["t_read"].min()
    assert r["updates_per_s_span"] == pytest.approx(ok.sum() / span)
    d = pd.DataFrame({"config_key": ["a m=4", "b m=4"], "engine_a": ["real"] * 2,
                      "engine_b": ["sim"] * 2, "tv": [0.1, 0.1]})
    sp = pd.DataFrame({"config_key": ["a m=4", "a m=4", "b m=4", "b m=4"],
                       "engine": ["real", "sim"] * 2,
                       "updates_per_s": [50.0, 100.0, 50.0, 100.0],
                       "updates_per_s_span": [100.0, 100.0, np.nan, 100.0],
                       "time_to_target": [np.nan] * 4})
    out = with_prediction_errors(d, sp)
    assert list(out["updates_per_s_ratio"]) == [1.0, 2.0]  # span where both have it


def test_the_summary_table_names_the_out_of_sample_engine(oos_folder):
    from stalesgd.app.summary import format_summary

    runs = load_results(oos_folder).runs
    text = format_summary([dict(r) for _, r in runs.iterrows()], None)
    lines = [line for line in text.splitlines() if "sim[m<=2]" in line]
    assert len(lines) == 1 and " 4 " in lines[0]
