"""Calibration: real run -> timing model file -> calibrated simulation (analysis/calibrate.py,
the calibration branch of sim/run.py, ``stalesgd calibrate``)."""

from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np
import pytest
from stalesgd.analysis.calibrate import calibrate, fit_compute
from stalesgd.app.cli import main
from stalesgd.app.runner import run_experiment
from stalesgd.real.costs import measure_costs
from stalesgd.sim.run import SimRun

from stalesgd.calibration import FORMAT, VERSION, CalibrationError, load_calibration
from stalesgd.experiment import ExperimentError, expand, experiment_from_flags, parse_experiment
from stalesgd.records import ResultsFolder, RunRecord, load_results

PROBLEM = "mlp-synthetic"
#: costs given to calibrate() on fake records, so expectations are exact
COSTS = {"read_per_param": 1e-10, "update_per_param": 2e-10, "fused_per_param": 2.5e-10,
         "cas_cost": 5e-8, "source": "test"}


def records_throughput(updates) -> float:
    """Applied updates per second over the records' span (the same measure for both engines)."""
    ok = ~np.asarray(updates["dropped"], dtype=bool)
    t_apply = np.asarray(updates["t_apply"])[ok]
    return t_apply.size / float(t_apply.max() - np.min(np.asarray(updates["t_read"])))


@pytest.fixture(scope="module")
def real_folder(tmp_path_factory):
    """A small real sweep: lock with 1 and 2 workers on the MLP problem."""
    exp = parse_experiment({
        "name": "calreal", "engine": "real", "seeds": [0],
        "problem": {"name": PROBLEM, "batch": 16},
        "algorithm": {"name": "lock"},
        "stop": {"updates": 4000}, "eval": {"every_updates": 2000},
        "sweep": {"workers": [1, 2]},
    })
    out = run_experiment(exp, out=tmp_path_factory.mktemp("real"), progress=False,
                         echo=lambda _m: None)
    return out.folder


@pytest.fixture(scope="module")
def cal_file(real_folder, tmp_path_factory):
    cal = calibrate(real_folder)
    return cal.save(tmp_path_factory.mktemp("cal") / "cal.json")


def sim_spec(cal_path, workers=1, algorithm="lock", updates=3000, **sim):
    sim = {"timing_only": True, "calibration": str(cal_path), **sim}
    exp = experiment_from_flags("sim", problem=PROBLEM, algorithm=algorithm, workers=workers,
                                batch=16, updates=updates, sim=sim)
    return expand(exp)[0]


# ------------------------------------------------------------------------- the file itself


def test_calibration_file_records_source_machine_and_models(real_folder, cal_file):
    data = json.loads(cal_file.read_text())
    res = load_results(real_folder)
    assert data["format"] == FORMAT and data["version"] == VERSION
    assert data["source"]["run_ids"] == sorted(res.runs["run_id"])
    assert data["machine"]["hostname"] == res.machine["hostname"]
    assert data["cores"] == res.machine["usable_cores"]
    assert data["problem"]["name"] == PROBLEM and data["problem"]["batch"] == 16
    assert {(c["algorithm"], c["workers"]) for c in data["configurations"]} == {
        ("lock", 1), ("lock", 2)}
    for c in data["configurations"]:
        assert len(c["per_worker_ns"]) == c["workers"]
        assert c["compute"]["fit"]["kind"] in ("gamma", "lognormal")
        assert 1 <= c["effective_cores"] <= data["cores"]
    # per-parameter costs come from a micro-measurement and are plausible (0.01..50 ns)
    for key in ("read_per_param", "update_per_param", "fused_per_param"):
        assert 1e-11 < data[key] < 5e-8, key
    assert "micro-benchmark" in data["costs_source"]
    pooled = data["pooled"]
    assert pooled["n"] == sum(c["compute"]["n"] for c in data["configurations"])
    assert load_calibration(cal_file).data == data


def _sim_over_real(folder, cal_path, m: int) -> float:
    """Updates/s of the calibrated simulation of lock with ``m`` workers over the measured."""
    res = load_results(folder)
    rid = res.runs[res.runs["workers"] == m]["run_id"].iloc[0]
    real = res.updates[res.updates["run_id"] == rid]
    rec = SimRun(sim_spec(cal_path, workers=m), progress=False).run()
    s = rec.summary
    assert s["calibrated"] is True and s["calibration"] == str(cal_path)
    assert s["calibration_match"] == "exact" and s["prediction"] is False
    assert s["compute"] == "calibrated (empirical)"
    return records_throughput(rec.updates) / records_throughput(real)


def test_calibrated_sim_reproduces_real_lock_throughput(real_folder, cal_file, tmp_path):
    for m in (1, 2):
        ratio = _sim_over_real(real_folder, cal_file, m)
        if not 1 / 1.5 < ratio < 1.5:
            # The runs last ~0.2 s: a burst of other load in one (the suite's other process)
            # is more than a calibration can take out (1.84 seen in a loaded suite).  Measure
            # once more, calibrate from that run alone and hold it to the same bound.
            exp = experiment_from_flags("real", problem=PROBLEM, algorithm="lock", workers=m,
                                        batch=16, updates=4000)
            again = run_experiment(exp, out=tmp_path / f"m{m}", progress=False,
                                   echo=lambda _m: None).folder
            cal = calibrate(again).save(tmp_path / f"m{m}.json")
            ratio = _sim_over_real(again, cal, m)
        assert 1 / 1.5 < ratio < 1.5, (m, ratio)


def test_cores_beyond_the_workers_keep_a_measured_configuration_in_sample(cal_file):
    # one worker measured on its one core: simulating it on 4 cores is the same machine for it
    s = SimRun(sim_spec(cal_file, workers=1, cores=4, updates=500), progress=False).run().summary
    assert s["calibration_match"] == "exact" and s["prediction"] is False
    s = SimRun(sim_spec(cal_file, workers=3, cores=1, updates=500), progress=False).run().summary
    assert s["prediction"] is True  # three workers on one core: not what was measured
    # the measured two workers on one core: a prediction, and the match says why
    s = SimRun(sim_spec(cal_file, workers=2, cores=1, updates=500), progress=False).run().summary
    effective = load_calibration(cal_file).configuration("lock", 2)["effective_cores"]
    if effective == 2:
        assert s["prediction"] is True and s["calibration_match"] == (
            "exact configuration, measured on 2 cores, simulated on 1")
    else:  # the machine was shared: the measured run got one core, as simulated
        assert s["prediction"] is False and s["calibration_match"] == "exact"


def test_more_workers_and_cores_than_measured_is_a_labelled_prediction(cal_file):
    rec = SimRun(sim_spec(cal_file, workers=16, cores=16, updates=4000), progress=False).run()
    s = rec.summary
    assert s["prediction"] is True and s["calibration_match"] == "nearest (m=2)"
    assert s["cores"] == 16
    assert set(np.unique(rec.updates["worker"])) == set(range(16))
    # Without a lock to serialise them, m workers on m cores never wait: a worker's cycle (its
    # t_read to its next) is its compute, read and update draws alone, the same distribution
    # with 16 workers as with 3 (pooled: neither was measured), so 16 run 16/3 times as fast.
    # Compared by median cycle: a calibration from a loaded machine has a heavy tail, which
    # moves the sampled means of a few thousand cycles apart (measured: a rate ratio of 7.4
    # for 16/3 = 5.3 from the tail alone); lock would be bounded by its serial read + update.
    many = SimRun(sim_spec(cal_file, workers=16, cores=16, updates=8000, algorithm="hogwild"),
                  progress=False).run()
    few = SimRun(sim_spec(cal_file, workers=3, cores=3, updates=3000, algorithm="hogwild"),
                 progress=False).run()
    assert many.summary["calibration_match"] == few.summary["calibration_match"] == "pooled"

    def median_cycle(updates, m: int) -> float:
        w, t = np.asarray(updates["worker"]), np.asarray(updates["t_read"])
        return float(np.median(np.concatenate([np.diff(np.sort(t[w == i])) for i in range(m)])))

    assert 0.85 < median_cycle(many.updates, 16) / median_cycle(few.updates, 3) < 1.15


def test_explicit_settings_override_the_file(cal_file):
    spec = sim_spec(cal_file, workers=1, compute="det:1ms", update="det:0", read="det:0")
    s = SimRun(spec, progress=False).run().summary
    assert s["calibration_overrides"] == "compute,read,update"
    assert s["compute"] == "det:1ms"
    assert s["updates_per_s"] == pytest.approx(1000.0, rel=1e-6)


def test_numeric_replay_with_a_calibration(cal_file):
    spec = sim_spec(cal_file, workers=2, updates=400, timing_only=False)
    rec = SimRun(spec, progress=False).run()
    assert rec.summary["calibrated"] and np.isfinite(rec.summary["final_loss"])


# ------------------------------------------------------------------------- bad files


def write(tmp_path, data, name="c.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize("mutate, words", [
    (None, "does not exist"),
    ("{not json", "not valid JSON"),
    ({"format": "something-else"}, "not a stalesgd calibration"),
    ({"version": 99}, "version 99"),
    ({"drop": "cores"}, "lacks the key 'cores'"),
    ({"time_slice": -1.0}, "time_slice"),
    ({"pooled": {"samples_ns": []}}, "pooled.samples_ns"),
    ({"default_model": "magic"}, "default_model"),
    ({"read_per_param": 1e300}, "read_per_param = 1e"),
    ({"lock_handover": float("inf")}, "lock_handover"),
    ({"configurations": []}, "configurations is empty"),
    ({"pooled_fit": {"cv": float("inf")}}, "pooled.fit must be"),
    ({"pooled_fit": {"mean": 1e9}}, "pooled.fit must be"),
])
def test_bad_calibration_files_give_clear_errors(cal_file, tmp_path, mutate, words):
    if mutate is None:
        path = tmp_path / "missing.json"
    elif isinstance(mutate, str):
        path = write(tmp_path, mutate)
    else:
        data = json.loads(cal_file.read_text())
        if "drop" in mutate:
            del data[mutate["drop"]]
        elif "pooled_fit" in mutate:
            data["pooled"]["fit"].update(mutate["pooled_fit"])
        else:
            data.update(mutate)
        path = write(tmp_path, data)
    with pytest.raises(CalibrationError, match=words):
        load_calibration(path)
    with pytest.raises(ExperimentError) as info:
        SimRun(sim_spec(path), progress=False)
    assert "sim.calibration" in str(info.value) and words.split("'")[0] in str(info.value)


def test_calibrations_that_stop_the_simulated_clock_are_refused(cal_file, tmp_path):
    """Checked with the engine's settings check, before any run: a slice below a microsecond,
    or every duration of a worker's cycle zero."""
    from stalesgd.sim.run import validate

    data = json.loads(cal_file.read_text())
    with pytest.raises(ExperimentError, match="sim.calibration.*time slice"):
        validate(sim_spec(write(tmp_path, {**data, "time_slice": 2e-9}, "slice.json")))
    zero = {**data, "read_per_param": 0.0, "update_per_param": 0.0, "fused_per_param": 0.0,
            "cas_cost": 0.0, "default_model": "empirical"}
    zero["pooled"] = {**data["pooled"], "samples_ns": [0] * len(data["pooled"]["samples_ns"])}
    zero["configurations"] = [
        {**c, "per_worker_ns": [[0] * len(ns) for ns in c["per_worker_ns"]],
         "compute": {**c["compute"], "samples_ns": [0] * len(c["compute"]["samples_ns"])}}
        for c in data["configurations"]]
    path = write(tmp_path, zero, "zero.json")
    for algorithm, workers in (("lock", 1), ("leashed", 3)):
        with pytest.raises(ExperimentError, match="sim.calibration.*no time"):
            validate(sim_spec(path, workers=workers, algorithm=algorithm))
    validate(sim_spec(path, compute="exp:1ms"))  # an explicit compute time moves the clock


def test_calibration_for_another_problem_is_rejected(cal_file):
    exp = experiment_from_flags("sim", problem=PROBLEM, algorithm="lock", workers=1, batch=32,
                                updates=100, sim={"calibration": str(cal_file)})
    with pytest.raises(ExperimentError, match="fitted to problem mlp-synthetic batch 16"):
        SimRun(expand(exp)[0], progress=False)



def test_calibration_for_other_problem_options_is_rejected(cal_file):
    from stalesgd.calibration import check_compatible

    cal = load_calibration(cal_file)
    p = cal.data["problem"]
    check_compatible(cal, p["name"], p["batch"], p["dtype"], p["n_params"])
    with pytest.raises(CalibrationError, match=f"a model of {p['n_params']:,} parameters"):
        check_compatible(cal, p["name"], p["batch"], p["dtype"], p["n_params"] + 10)
    spec = sim_spec(cal_file)
    spec = dataclasses.replace(spec, problem=dataclasses.replace(
        spec.problem, options={**spec.problem.options, "hidden": [7]}))
    with pytest.raises(ExperimentError, match="parameters"):
        SimRun(spec, progress=False)


def test_a_folder_given_as_calibration_file_is_named_as_such(cal_file, tmp_path):
    with pytest.raises(CalibrationError, match="is a folder, not a file.*stalesgd calibrate"):
        load_calibration(tmp_path)
    (tmp_path / "calibration.json").write_text(cal_file.read_text())
    with pytest.raises(CalibrationError, match=f"{tmp_path} is a folder.*did you mean "
                                               f"{tmp_path / 'calibration.json'}"):
        load_calibration(tmp_path)


def test_saving_a_calibration_onto_a_folder_is_refused(cal_file, tmp_path):
    cal = load_calibration(cal_file)
    with pytest.raises(CalibrationError, match=f"cannot write the calibration to {tmp_path}: "
                                               "it is a folder"):
        cal.save(tmp_path)
    with pytest.raises(CalibrationError, match="cannot write the calibration to .*missing"):
        cal.save(tmp_path / "missing" / "cal.json")
    assert cal.save(tmp_path / "ok.json") == tmp_path / "ok.json"
    assert load_calibration(tmp_path / "ok.json").data == cal.data


def test_measure_costs_times_the_engine_kernels():
    costs = measure_costs(2000)
    for key in ("read_per_param", "update_per_param", "fused_per_param", "cas_cost"):
        assert 0 < costs[key] < 1e-5, (key, costs[key])  # seconds: per parameter / per CAS
    assert (costs["n_params"], costs["dtype"]) == (2000, "float64")
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="n_params"):
            measure_costs(bad)

# ------------------------------------------------------------------ semantics on fake records


def fake_folder(root, algorithm, workers, cores, rows, **summary_fields):
    """A results folder with one real-engine run whose updates are ``rows`` (dict of arrays)
    and whose runs-table row has ``summary_fields`` besides the usual ones."""
    return fake_folder_of(root, algorithm, workers, cores, [(rows, summary_fields)])


def fake_folder_of(root, algorithm, workers, cores, runs):
    """A results folder with a real-engine run per (rows, summary_fields) of ``runs``."""
    folder = ResultsFolder.create("fake", root, config_toml="",
                                  machine={"hostname": "fake", "usable_cores": cores,
                                           "logical_cores": cores})
    with folder:
        for i, (rows, summary_fields) in enumerate(runs):
            n = len(rows["t_read"])
            summary = {"run_id": f"r{i:04d}", "engine": "real", "algorithm": algorithm,
                       "problem": PROBLEM, "workers": workers, "batch": 16, "dtype": "float64",
                       "updates": n, "seconds": float(rows["t_apply"].max()),
                       **summary_fields}
            rows = {"k": np.arange(n), "tau": np.zeros(n, np.int64), "eta": np.full(n, 0.05),
                    "attempts": np.ones(n, np.int32), "dropped": np.zeros(n, bool), **rows}
            folder.write_run(summary, RunRecord(summary=summary, updates=rows, evals={
                "t": np.zeros(0), "k": np.zeros(0, np.int64), "loss": np.zeros(0),
                "active_workers": np.zeros(0, np.int32)}))
    return folder.path


def test_compute_is_the_cycle_minus_what_the_simulator_adds(tmp_path):
    n, cycle = 400, 10e-6
    t = np.arange(n) * cycle
    path = fake_folder(tmp_path, "lock", 1, 2, {"worker": np.zeros(n, np.int32),
                                                 "t_read": t, "t_apply": t + 8e-6})
    cal = calibrate(path, costs=COSTS)
    p = cal.data["problem"]["n_params"]
    expected = cycle - (COSTS["read_per_param"] + COSTS["update_per_param"]) * p
    comp = cal.configuration("lock", 1)["compute"]
    assert comp["mean"] == pytest.approx(expected, rel=1e-6)
    assert comp["cv"] < 1e-6
    assert cal.data["time_slice_source"].startswith("default")


@pytest.mark.parametrize("algorithm", ["lock", "hogwild", "leashed"])
def test_sparse_runs_subtract_the_costs_of_the_coordinates_they_wrote(tmp_path, algorithm):
    # a sparse update writes 30 coordinates: only Leashed-SGD still copies the whole vector
    n, cycle, coords = 400, 10e-6, 30.0
    t = np.arange(n) * cycle
    path = fake_folder(tmp_path, algorithm, 1, 2, {"worker": np.zeros(n, np.int32),
                                                    "t_read": t, "t_apply": t + 8e-6},
                       sparse=True, coords_per_update=coords)
    cal = calibrate(path, costs=COSTS)
    p = cal.data["problem"]["n_params"]
    assert cal.data["problem"]["sparse"] is True
    entry = cal.configuration(algorithm, 1)
    assert entry["coords_per_update"] == coords
    read, update, cas = (COSTS["read_per_param"], COSTS["update_per_param"], COSTS["cas_cost"])
    added = {"lock": (read + update) * coords, "hogwild": update * coords + cas,
             "leashed": cas + read * p + update * coords + cas}[algorithm]
    assert entry["compute"]["mean"] == pytest.approx(cycle - added, rel=1e-6)


def test_a_calibrated_sparse_simulation_charges_the_coordinates_not_the_vector(cal_file):
    from stalesgd.sim.run import calibrated_timing

    cal = load_calibration(cal_file)
    # Known per-parameter costs instead of the file's micro-measurement: leashed's dense
    # update is the fused copy-apply minus the copy, max(fused − read, 0) per parameter, and
    # a loaded machine measured the fused loop below the copy in 5 of 40 measurements (the
    # dense update then 0, below any sparse one)
    d = cal.data
    d.update({k: v for k, v in COSTS.items() if k != "source"})
    for algorithm in ("lock", "leashed"):
        spec = sim_spec(cal_file, workers=2, algorithm=algorithm)
        dense = calibrated_timing(cal, spec, {}, 5000).kwargs
        sparse = calibrated_timing(cal, spec, {}, 5000, coords=12.0).kwargs
        per_param = {"lock": d["update_per_param"],
                     "leashed": d["fused_per_param"] - d["read_per_param"]}[algorithm]
        assert dense["update"] == pytest.approx(per_param * 5000)  # the whole vector
        assert sparse["update"] == pytest.approx(d["update_per_param"] * 12.0)
        assert sparse["update"] < dense["update"]
    assert sparse["read"] == pytest.approx(d["read_per_param"] * 5000)  # leashed: whole copy


def round_robin(m: int, cycle: float, per_burst: int, rounds: int):
    """(worker, t_read) of ``m`` workers taking turns on one core, ``per_burst`` cycles of
    ``cycle`` seconds a turn."""
    worker, t_read = [], []
    now = 0.0
    for _ in range(rounds):
        for w in range(m):
            for _ in range(per_burst):
                worker.append(w)
                t_read.append(now)
                now += cycle
    return np.array(worker, np.int32), np.array(t_read)


def test_oversubscribed_run_gives_time_slice_and_drops_descheduled_gaps(tmp_path):
    # hogwild, 3 workers round-robin on 1 core, bursts of 200 cycles of 10 us (a 2 ms slice)
    m, cycle, per_burst, rounds = 3, 10e-6, 200, 6
    worker, t_read = round_robin(m, cycle, per_burst, rounds)
    path = fake_folder(tmp_path, "hogwild", m, 1, {"worker": worker,
                                                    "t_read": t_read, "t_apply": t_read + 9e-6})
    cal = calibrate(path, costs=COSTS)
    entry = cal.configuration("hogwild", m)
    assert entry["oversubscribed"] and entry["effective_cores"] == 1
    assert entry["preempted_cycles"] == m * (rounds - 1)
    # each worker ran 200 cycles a slice (the first estimate, the median run of short cycles
    # between two gaps, found 199: the cycle holding the gap is not short)
    assert cal.data["time_slice"] == pytest.approx(per_burst * cycle, rel=1e-6)
    u = COSTS["update_per_param"] * cal.data["problem"]["n_params"] + COSTS["cas_cost"]
    assert entry["compute"]["mean"] == pytest.approx(cycle - u, rel=1e-6)


def two_per_core(grad: float, slice_: float, m: int, cores: int, horizon: float):
    """(worker, t_read) in time order for ``m = 2 × cores`` workers sharing the cores in
    turns of one ``slice_``: workers 0..cores-1 run first, then the others; each reads when
    it has run a multiple of ``grad`` seconds (its gradient time)."""
    worker, t_read = [], []
    for w in range(m):
        phase = (w // cores) * slice_
        ran = 0.0  # this worker's running time so far
        while True:
            k, r = divmod(ran, slice_)
            wall = phase + 2 * slice_ * k + r  # when it has run `ran` seconds
            if wall > horizon:
                break
            worker.append(w)
            t_read.append(wall)
            ran += grad
    order = np.argsort(t_read, kind="stable")
    return np.asarray(worker, np.int32)[order], np.asarray(t_read)[order]


def claims_between(t_read: np.ndarray, t_apply: np.ndarray) -> np.ndarray:
    """Hogwild!'s τ of records whose claims happen at ``t_apply``: the claims after each
    update's read and before its own."""
    claims = np.sort(t_apply)
    return (np.searchsorted(claims, t_apply, "left")
            - np.searchsorted(claims, t_read, "right")).astype(np.int64)


def test_descheduled_gaps_are_found_when_most_cycles_have_one(tmp_path):
    """4 workers on 2 cores, a gradient of 2 ms and a 3 ms slice: each core alternates two
    workers, so most cycles span a gap.  The gradient time must still come out at 2 ms (a
    threshold on the median let the gaps through: about 3.5 ms).  (Leashed-SGD: the
    workers of this schedule read in lock-step, a Hogwild! τ no simulation gives.)"""
    from stalesgd.analysis.calibrate import sim_timing_costs

    from stalesgd.algorithms import get_algorithm

    grad, slice_, m, cores, horizon = 2e-3, 3e-3, 4, 2, 0.6
    worker, t_read = two_per_core(grad, slice_, m, cores, horizon)
    path = fake_folder(tmp_path, "leashed", m, cores, {
        "worker": worker, "t_read": t_read, "t_apply": t_read + 1.9e-3})
    cal = calibrate(path, costs=COSTS)
    entry = cal.configuration("leashed", m)
    cycles = np.diff(t_read[worker == 0])
    assert np.median(cycles) > 4e-3  # most cycles do span a gap
    assert entry["oversubscribed"] and entry["effective_cores"] == 2
    costs = sim_timing_costs("leashed", cal.data["problem"]["n_params"], COSTS)
    u = float(get_algorithm("leashed").cycle.overhead(np.ones(1, np.int64), costs)[0])
    assert entry["compute"]["mean"] == pytest.approx(grad - u, rel=0.02)


def test_a_slice_longer_than_any_scheduler_gives_is_not_taken(tmp_path):
    # turns of 0.2 s (20,000 cycles of 10 us): too few gaps stood out to tell a slice, the
    # default stays (a file with a slice beyond the loader's bound would not load)
    worker, t_read = round_robin(3, 10e-6, 20_000, 3)
    path = fake_folder(tmp_path, "hogwild", 3, 1, {"worker": worker, "t_read": t_read,
                                                    "t_apply": t_read + 9e-6})
    cal = calibrate(path, costs=COSTS)
    assert cal.configuration("hogwild", 3)["preempted_cycles"] == 6
    assert cal.data["time_slice"] == 4e-3 and "at most 0.1 s" in cal.data["time_slice_source"]


@pytest.mark.parametrize("algorithm, workers", [("hogwild", 4), ("hogwild", 8), ("lock", 4)])
def test_an_oversubscribed_run_of_the_simulator_calibrates_back_to_itself(
        tmp_path, algorithm, workers):
    """A timing-only simulation of m workers on 2 cores (gradient 1.5 ms, half the 3 ms
    slice; lock 0.5 ms) taken as the measured run: calibrated from it alone, the simulator
    must find its slice and reproduce its PDF(τ).  Most preemptions fall inside a cycle
    here; the first slice estimate (runs of short cycles between gaps) found 1.5 ms for
    Hogwild! and the in-sample TV was 0.90 (m = 4) and 0.96 (m = 8); lock m = 4 (default
    slice: no estimate) 0.16."""
    from stalesgd.analysis.calibrate import sim_timing_costs
    from stalesgd.sim.engine import simulate_timing
    from stalesgd.sim.timing import Gamma

    from stalesgd.staleness import distances, histogram

    n_params, slice_, n = 3978, 3e-3, 8000  # (mlp-synthetic's parameters)
    costs = sim_timing_costs(algorithm, n_params, COSTS)
    grad = 0.5e-3 if algorithm == "lock" else 1.5e-3
    made = simulate_timing(algorithm, workers, cores=2, compute=Gamma(grad, 0.05),
                           read=costs["read"], update=costs["update"], cas_cost=costs["cas"],
                           updates=n, seed=1, time_slice=slice_)
    u = made.updates
    path = fake_folder(tmp_path, algorithm, workers, 2, {
        k: np.asarray(u[k]) for k in ("worker", "t_read", "t_apply", "tau", "attempts")})
    cal = calibrate(path, costs=COSTS)
    assert cal.configuration(algorithm, workers)["oversubscribed"]
    assert cal.data["time_slice"] == pytest.approx(slice_, rel=0.02)
    cal_file = cal.save(tmp_path / "cal.json")
    spec = expand(experiment_from_flags(
        "sim", problem=PROBLEM, algorithm=algorithm, workers=workers, updates=n, seed=1,
        sim={"timing_only": True, "calibration": str(cal_file)}))[0]
    again = SimRun(spec, progress=False).run().updates
    tau = [np.asarray(x["tau"]) for x in (u, again)]
    assert distances(histogram(tau[1]), histogram(tau[0])).tv < 0.05
    assert records_throughput(again) == pytest.approx(records_throughput(u), rel=0.02)


@pytest.mark.parametrize("workers", [4, 8])
def test_an_oversubscribed_hogwild_run_alone_gives_its_write_time(tmp_path, workers):
    """Hogwild! on 2 cores with a write (after the claim) as long as the gradient: with no
    configuration on its own cores to borrow the write from, the calibration reads the
    window share off the τ of the cycles without a descheduled gap (the two running workers
    see each other's claims half the time).  Taking the micro-measured write, the
    simulation's running workers saw each other's claim in nearly every cycle: TV 0.46 and
    0.41 here, 0.37-0.42 against real softmax runs at batch 16.  (The records cannot tell the
    write's spread from the gradient's: the calibrated write is constant, which moves where
    preemptions fall, hence TV up to the oversubscribed target 0.10, not 0.05.)"""
    from stalesgd.analysis.calibrate import sim_timing_costs
    from stalesgd.sim.engine import simulate_timing
    from stalesgd.sim.timing import Gamma

    from stalesgd.staleness import distances, histogram

    n_params, n = 3978, 8000
    costs = sim_timing_costs("hogwild", n_params, COSTS)
    made = simulate_timing("hogwild", workers, cores=2, compute=Gamma(1e-3, 0.05),
                           read=costs["read"], update=Gamma(1e-3, 0.05), cas_cost=costs["cas"],
                           updates=n, seed=1, time_slice=4e-3)
    u = made.updates
    path = fake_folder(tmp_path, "hogwild", workers, 2, {
        k: np.asarray(u[k]) for k in ("worker", "t_read", "t_apply", "tau", "attempts")})
    cal = calibrate(path, costs=COSTS)
    entry = cal.configuration("hogwild", workers)
    assert entry["oversubscribed"] and "without a descheduled gap" in entry[
        "hogwild_write_source"]
    assert entry["hogwild_write_s"] == pytest.approx(1e-3, rel=0.15)
    cal_file = cal.save(tmp_path / "cal.json")
    spec = expand(experiment_from_flags(
        "sim", problem=PROBLEM, algorithm="hogwild", workers=workers, updates=n, seed=1,
        sim={"timing_only": True, "calibration": str(cal_file)}))[0]
    again = SimRun(spec, progress=False).run().updates
    tau = [np.asarray(x["tau"]) for x in (u, again)]
    assert distances(histogram(tau[1]), histogram(tau[0])).tv < 0.10


def test_an_oversubscribed_hogwild_write_is_fitted_where_phases_lock(tmp_path):
    """Near-constant cycles (cv 0.01) of a short gradient and a long write, 4 workers on 2
    cores: the two running workers' phases lock, and E[τ] of the cycles without a gap says a
    window share of 0.13 (write 1.75 ms) where it is 0.2 (write 1.6 ms).  Simulating the
    configuration for each share finds it (measured: 0.19)."""
    from stalesgd.analysis.calibrate import sim_timing_costs
    from stalesgd.sim.engine import simulate_timing
    from stalesgd.sim.timing import Gamma

    costs = sim_timing_costs("hogwild", 3978, COSTS)
    made = simulate_timing("hogwild", 4, cores=2, compute=Gamma(0.4e-3, 0.01),
                           read=costs["read"], update=Gamma(1.6e-3, 0.01),
                           cas_cost=costs["cas"], updates=8000, seed=1, time_slice=4e-3)
    u = made.updates
    path = fake_folder(tmp_path, "hogwild", 4, 2, {
        k: np.asarray(u[k]) for k in ("worker", "t_read", "t_apply", "tau", "attempts")})
    entry = calibrate(path, costs=COSTS).configuration("hogwild", 4)
    assert entry["hogwild_write_source"].startswith("fitted by simulation")
    assert entry["hogwild_write_s"] == pytest.approx(1.6e-3, rel=0.05)


def test_a_hogwild_write_on_own_cores_is_fitted_too(tmp_path):
    """Two workers on two cores with near-constant cycles (compute 0.4 ms, write 1.6 ms, cv
    0.01): their phases lock, and E[τ] = 0.144 says a window share of 0.14 (write 1.71 ms)
    where it is 0.2.  The fit by simulation finds it (measured: 0.197).  (A real 2-worker run
    beside other load once calibrated to a simulated E[τ] of 0.64 against 0.47 measured.)"""
    from stalesgd.analysis.calibrate import sim_timing_costs
    from stalesgd.sim.engine import simulate_timing
    from stalesgd.sim.timing import Gamma

    costs = sim_timing_costs("hogwild", 3978, COSTS)
    u = simulate_timing("hogwild", 2, cores=2, compute=Gamma(0.4e-3, 0.01), read=costs["read"],
                        update=Gamma(1.6e-3, 0.01), cas_cost=costs["cas"], updates=8000,
                        seed=1).updates
    path = fake_folder(tmp_path, "hogwild", 2, 2, {
        k: np.asarray(u[k]) for k in ("worker", "t_read", "t_apply", "tau", "attempts")})
    entry = calibrate(path, costs=COSTS).configuration("hogwild", 2)
    assert not entry["oversubscribed"]
    assert entry["hogwild_write_source"].startswith("fitted by simulation")
    assert entry["hogwild_write_s"] == pytest.approx(1.6e-3, rel=0.03)


def test_a_short_oversubscribed_hogwild_run_keeps_the_estimated_write(tmp_path):
    """600 updates: too coarse a PDF(τ) to choose a share by simulation (a 50-update folder
    fitted 0.25 at TV 0.02 against an estimate of 0.5); the estimate stays, and the summary
    says so."""
    from stalesgd.analysis.calibrate import MIN_FIT_UPDATES, sim_timing_costs
    from stalesgd.sim.engine import simulate_timing
    from stalesgd.sim.timing import Gamma

    costs = sim_timing_costs("hogwild", 3978, COSTS)
    u = simulate_timing("hogwild", 4, cores=2, compute=Gamma(1e-3, 0.05), read=costs["read"],
                        update=Gamma(1e-3, 0.05), cas_cost=costs["cas"], updates=600, seed=1,
                        time_slice=4e-3).updates
    path = fake_folder(tmp_path, "hogwild", 4, 2, {
        k: np.asarray(u[k]) for k in ("worker", "t_read", "t_apply", "tau", "attempts")})
    cal = calibrate(path, costs=COSTS)
    source = cal.configuration("hogwild", 4)["hogwild_write_source"]
    assert source.startswith("from the measured E[τ]")
    assert f"not fitted by simulation: 600 updates, fewer than {MIN_FIT_UPDATES}" in source
    assert "write after the claim" in cal.summary_text()


def test_the_hogwild_write_is_fitted_with_the_files_time_slice(tmp_path, monkeypatch):
    """The slice comes from every oversubscribed configuration of the folder (here Hogwild!
    on 4 ms and Leashed-SGD on 1 ms slices): the write must be fitted with the slice the
    calibrated simulations use, not the Hogwild! runs' own (fitted on its own 4 ms, the file's
    2.5 ms simulation of it came out at TV 0.17 where the fit had found 0.03)."""
    import stalesgd.analysis.calibrate as cal_mod
    from stalesgd.analysis.calibrate import sim_timing_costs
    from stalesgd.sim.engine import simulate_timing
    from stalesgd.sim.timing import Gamma

    def rows_of(alg, m, slice_, write=None):
        c = sim_timing_costs(alg, 3978, COSTS)
        u = simulate_timing(alg, m, cores=2, compute=Gamma(0.4e-3, 0.05), read=c["read"],
                            update=Gamma(write, 0.05) if write else c["update"],
                            cas_cost=c["cas"], updates=4000, seed=1, time_slice=slice_).updates
        return {k: np.asarray(u[k]) for k in ("worker", "t_read", "t_apply", "tau",
                                               "attempts", "dropped")}

    folder = ResultsFolder.create("two", tmp_path, config_toml="",
                                  machine={"hostname": "fake", "usable_cores": 2,
                                           "logical_cores": 2})
    runs = [("r0000", "hogwild", 4, rows_of("hogwild", 4, 4e-3, 1.6e-3)),
            ("r0001", "leashed", 8, rows_of("leashed", 8, 1e-3))]
    with folder:
        for rid, alg, m, rows in runs:
            n = len(rows["t_read"])
            s = {"run_id": rid, "engine": "real", "algorithm": alg, "problem": PROBLEM,
                 "workers": m, "batch": 16, "dtype": "float64", "updates": n,
                 "seconds": float(rows["t_apply"].max())}
            folder.write_run(s, RunRecord(summary=s, updates={
                "k": np.arange(n), "eta": np.full(n, 0.05), **rows}, evals={
                "t": np.zeros(0), "k": np.zeros(0, np.int64), "loss": np.zeros(0),
                "active_workers": np.zeros(0, np.int32)}))
    slices = []
    real_fit = cal_mod._fit_window_share

    def spy(*args):
        slices.append(args[5])
        return real_fit(*args)

    monkeypatch.setattr(cal_mod, "_fit_window_share", spy)
    cal = calibrate(folder.path, costs=COSTS)
    assert cal.data["time_slice"] < 3.5e-3  # both configurations' slices pooled
    assert slices == [cal.data["time_slice"]]
    assert cal.configuration("hogwild", 4)["hogwild_write_source"].startswith("fitted")


def test_ctrl_c_while_fitting_the_hogwild_write_ends_the_calibration(tmp_path, request):
    from stalesgd.analysis.calibrate import sim_timing_costs
    from stalesgd.sim.engine import simulate_timing
    from stalesgd.sim.timing import Gamma

    costs = sim_timing_costs("hogwild", 3978, COSTS)
    made = simulate_timing("hogwild", 4, cores=2, compute=Gamma(1e-3, 0.05),
                           read=costs["read"], update=Gamma(1e-3, 0.05), cas_cost=costs["cas"],
                           updates=4000, seed=1, time_slice=4e-3)
    u = made.updates
    path = fake_folder(tmp_path, "hogwild", 4, 2, {
        k: np.asarray(u[k]) for k in ("worker", "t_read", "t_apply", "tau", "attempts")})
    request.getfixturevalue("interrupted_simulations")  # from here on
    with pytest.raises(KeyboardInterrupt):
        calibrate(path, costs=COSTS)


@pytest.mark.parametrize("workers", [4, 8])
def test_another_process_on_the_cores_costs_the_calibrated_run_its_share(tmp_path, workers):
    """m Hogwild! workers and one more process (a simulated worker m, its rows left out of
    the record) on 2 cores: the calibration puts the other process's core time back as long
    compute samples, and the simulation of the m workers alone must run at the measured rate.
    Descheduled cycles are left out of the samples, so the kept long ones must be as few as
    their share of the cycles says (kept until their excess made up the whole foreign time,
    they were a fifth of the samples of a real LeNet-5-sized run: half the measured rate)."""
    from stalesgd.analysis.calibrate import sim_timing_costs
    from stalesgd.sim.engine import simulate_timing
    from stalesgd.sim.timing import Gamma

    n_params, slice_, n = 3978, 3e-3, 8000
    costs = sim_timing_costs("hogwild", n_params, COSTS)
    made = simulate_timing("hogwild", workers + 1, cores=2, compute=Gamma(2e-3, 0.05),
                           read=costs["read"], update=costs["update"], cas_cost=costs["cas"],
                           updates=n, seed=1, time_slice=slice_)
    u = made.updates
    mine = np.asarray(u["worker"]) < workers
    rows = {k: np.asarray(u[k])[mine] for k in ("worker", "t_read", "t_apply", "tau",
                                                 "attempts", "dropped")}
    path = fake_folder(tmp_path, "hogwild", workers, 2, rows)
    cal = calibrate(path, costs=COSTS)
    entry = cal.configuration("hogwild", workers)
    assert entry["oversubscribed"] and entry["effective_cores"] == 2
    cal_file = cal.save(tmp_path / "cal.json")
    spec = expand(experiment_from_flags(
        "sim", problem=PROBLEM, algorithm="hogwild", workers=workers, updates=int(mine.sum()),
        seed=1, sim={"timing_only": True, "calibration": str(cal_file)}))[0]
    again = SimRun(spec, progress=False).run().updates
    assert records_throughput(again) == pytest.approx(records_throughput(rows), rel=0.05)


def test_a_gradient_longer_than_the_slice_is_deconvolved(tmp_path):
    """4 workers on 2 cores, a gradient of 20 ms and a 3 ms slice: every cycle is stretched
    to about 40 ms, none stands out as descheduled; the gradient must come out at 20 ms (it
    came out at 40: simulations ran at half the measured rate)."""
    grad, slice_, m, cores, horizon = 20e-3, 3e-3, 4, 2, 2.0
    worker, t_read = two_per_core(grad, slice_, m, cores, horizon)
    path = fake_folder(tmp_path, "leashed", m, cores, {
        "worker": worker, "t_read": t_read, "t_apply": t_read + 19e-3})
    cal = calibrate(path, costs=COSTS)
    entry = cal.configuration("leashed", m)
    assert entry["oversubscribed"] and entry["effective_cores"] == 2
    assert entry["preempted_cycles"] == 0  # no cycle stood out
    assert entry["compute"]["mean"] == pytest.approx(grad, rel=0.05)
    # Two cycles of worker 0 held up by 0.1 s more stand out, but the slices hide inside
    # every cycle: no slice estimate (a real LeNet-5 run at batch 128 had 4 ms slices, and
    # running time between such hold-ups per hold-up made it 150-260 ms)
    w0 = np.flatnonzero(worker == 0)
    for i in (w0[20], w0[30]):
        t_read[i:][worker[i:] == 0] += 0.1
    path = fake_folder(tmp_path / "held", "leashed", m, cores, {
        "worker": worker, "t_read": t_read, "t_apply": t_read + 19e-3})
    cal = calibrate(path, costs=COSTS)
    assert cal.configuration("leashed", m)["preempted_cycles"] == 2
    assert cal.data["time_slice"] == 4e-3 and cal.data["time_slice_source"].startswith("default")


def test_no_hogwild_write_is_read_off_cycles_that_all_hold_waits(tmp_path):
    """A Hogwild! gradient longer than the slice: every cycle is interrupted and none stands
    out, so the τ of the "short" cycles counts other workers' slices, not a window: no write
    time is estimated from them (the micro-measured one stays)."""
    grad, slice_, m, cores, horizon = 20e-3, 3e-3, 4, 2, 2.0
    worker, t_read = two_per_core(grad, slice_, m, cores, horizon)
    t_apply = t_read + 19e-3
    path = fake_folder(tmp_path, "hogwild", m, cores, {
        "worker": worker, "t_read": t_read, "t_apply": t_apply,
        "tau": claims_between(t_read, t_apply)})
    entry = calibrate(path, costs=COSTS).configuration("hogwild", m)
    assert entry["oversubscribed"] and entry["preempted_cycles"] == 0
    assert "hogwild_write_s" not in entry


def test_calibrate_refuses_folders_without_real_runs(tmp_path):
    exp = experiment_from_flags("sim", problem="logreg-synthetic", algorithm="lock", workers=1,
                                updates=50, sim={"timing_only": True, "compute": "det:1ms"})
    folder = run_experiment(exp, out=tmp_path, progress=False, echo=lambda _m: None).folder
    with pytest.raises(CalibrationError, match="no real run"):
        calibrate(folder, costs=COSTS)


@pytest.mark.parametrize("kind", ["gamma", "lognormal"])
def test_fit_compute_chooses_the_family_by_likelihood(kind):
    rng = np.random.default_rng(1)
    mean, cv = 20e-6, 0.6
    if kind == "gamma":
        x = rng.gamma(1 / cv**2, mean * cv**2, 4000)
    else:
        s2 = np.log1p(cv**2)
        x = rng.lognormal(np.log(mean) - s2 / 2, np.sqrt(s2), 4000)
    fit = fit_compute(x)["fit"]
    assert fit["kind"] == kind
    assert fit["mean"] == pytest.approx(mean, rel=0.05)
    assert fit["cv"] == pytest.approx(cv, rel=0.1)


# ------------------------------------------------------------------------- command line


def test_cli_calibrate_then_sim_end_to_end(real_folder, tmp_path, capsys):
    assert main(["calibrate", str(real_folder)]) == 0
    out = capsys.readouterr().out
    assert "compute, pooled" in out and "lock" in out
    default = real_folder / "calibration.json"
    assert default.is_file()
    target = tmp_path / "model.json"
    assert main(["calibrate", str(real_folder), "--out", str(target), "--model",
                 "parametric", "--run", "r0000"]) == 0
    cal = load_calibration(target)
    assert cal.data["default_model"] == "parametric"
    assert cal.data["source"]["run_ids"] == ["r0000"]
    code = main(["sim", "--problem", PROBLEM, "--algorithm", "lock", "--workers", "2",
                 "--updates", "500", "--timing-only", "--calibration", str(target),
                 "--out", str(tmp_path / "res"), "--no-progress"])
    assert code == 0
    runs = load_results(next((tmp_path / "res").iterdir())).runs
    assert bool(runs["calibrated"].iloc[0]) and bool(runs["prediction"].iloc[0])
    assert runs["calibration_model"].iloc[0] == "parametric"
    capsys.readouterr()
    assert main(["calibrate", str(tmp_path / "nothing-here")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_an_explicit_default_value_still_overrides_the_file(cal_file):
    """compute/time_slice given explicitly win even when equal to the built-in defaults."""
    spec = sim_spec(cal_file, workers=1, compute="exp:2ms", time_slice="4ms")
    s = SimRun(spec, progress=False).run().summary
    assert s["calibration_overrides"].split(",") == ["compute", "time_slice"]
    assert s["compute"] == "exp:2ms" and s["time_slice"] == "4ms"
    plain = SimRun(sim_spec(cal_file, workers=1), progress=False).run().summary
    assert plain["calibration_overrides"] == ""


def test_hogwild_write_share_from_mean_staleness(tmp_path):
    """Hogwild's contended element-wise write is estimated from E[τ] ≈ (m − 1)·(window share),
    so the calibrated simulation of the same configuration reproduces the measured E[τ].

    Only for a run on a steady machine: on an idle one the simulation missed E[τ] by
    0.004-0.007; beside a busy loop runs were slowed for a third of their time (the
    calibration names such runs) and missed by 0.09-0.29, and some slowed all along (too short
    for the machine's load to be read) missed by more than 0.15 unnamed.  So a run is measured
    again, up to three times, when it was disturbed or missed; the test fails if every steady
    run missed."""
    exp = parse_experiment({
        "name": "hog", "engine": "real", "seeds": [0], "workers": 2,
        "problem": {"name": PROBLEM, "batch": 16}, "algorithm": {"name": "hogwild"},
        "stop": {"updates": 6000}, "eval": {"every_updates": 3000},
    })
    misses, disturbed = [], {}
    for attempt in range(3):
        folder = run_experiment(exp, out=tmp_path / str(attempt), progress=False,
                                echo=lambda _m: None).folder
        cal = calibrate(folder)
        disturbed = cal.data["source"]["disturbed_runs"]
        if disturbed:
            continue
        entry = cal.configuration("hogwild", 2)
        if entry["oversubscribed"]:  # another process held a core: no share can be read off τ
            assert "hogwild_write_s" not in entry
            return
        path = cal.save(tmp_path / f"cal{attempt}.json")
        write = entry["hogwild_write_s"]
        cycle = 1.0 / (entry["updates_per_s"] / 2)
        assert 0.0 < write < cycle
        sim = SimRun(sim_spec(path, workers=2, algorithm="hogwild", updates=6000),
                     progress=False).run()
        assert sim.summary["calibration_match"] == "exact"
        misses.append(abs(float(np.mean(sim.updates["tau"])) - entry["mean_tau"]))
        if misses[-1] < 0.15:
            return
    if not misses:
        pytest.skip(f"the machine was not steady in three runs: {disturbed}")
    raise AssertionError(f"the simulated E[τ] missed the measured by {misses} (>= 0.15)")


def test_oversubscribed_hogwild_borrows_the_write_time(tmp_path):
    """With more workers than cores no window share can be read off τ; the cores still run
    `cores` writers at a time, so the write time of the configuration on its own cores is
    used (and taken out of the compute samples)."""
    if len(os.sched_getaffinity(0)) not in (2, 3):
        pytest.skip("needs a machine with 2 or 3 cores (2 workers own, 4 oversubscribed)")
    exp = parse_experiment({
        "name": "hog", "engine": "real", "seeds": [0], "workers": 2,
        "problem": {"name": PROBLEM, "batch": 16}, "algorithm": {"name": "hogwild"},
        "stop": {"updates": 4000}, "eval": {"every_updates": 2000},
        "sweep": {"workers": [2, 4]},
    })
    folder = run_experiment(exp, out=tmp_path, progress=False, echo=lambda _m: None).folder
    cal = calibrate(folder)
    own, over = cal.configuration("hogwild", 2), cal.configuration("hogwild", 4)
    assert over["oversubscribed"]  # 4 workers on this machine's cores
    if own["oversubscribed"]:  # another process held a core: nothing to borrow, the
        # oversubscribed runs' own cycles without a gap give it, if anything
        assert "without a descheduled gap" in over.get("hogwild_write_source",
                                                       "without a descheduled gap")
        return
    assert over["hogwild_write_s"] == own["hogwild_write_s"]
    assert "m = 2" in over["hogwild_write_source"]
    assert "E[τ]" in own["hogwild_write_source"]




def test_runs_that_kept_a_sample_of_rows_cannot_calibrate(tmp_path):
    exp = parse_experiment({
        "name": "sampled", "engine": "real", "workers": 1,
        "problem": {"name": "logreg-synthetic", "batch": 16},
        "algorithm": {"name": "lock"}, "stop": {"updates": 500},
        "record": {"rows": "every:10"},
    })
    out = run_experiment(exp, out=tmp_path, progress=False, echo=lambda _m: None)
    res = load_results(out.folder)
    assert len(res.updates) == 50 and int(res.staleness["count"].sum()) == 500
    with pytest.raises(CalibrationError, match=r"kept only some update rows \(log rows "
                                               r"every:10\)"):
        calibrate(out.folder)


def test_the_summary_says_when_a_configuration_had_fewer_cores_than_it_could_use(cal_file):
    """A real run on a machine shared with other load gets fewer effective cores; its
    simulations then get as few (a newcomer's `--cores 2` turned the same run into a
    prediction without a word)."""
    data = json.loads(cal_file.read_text())
    two = next(c for c in data["configurations"] if c["workers"] == 2)
    original = load_calibration(cal_file).summary_text()
    assert ("effectively had" in original) == (two["effective_cores"] < 2)
    two["effective_cores"] = 1
    shared = cal_file.with_name("shared.json")
    shared.write_text(json.dumps(data))
    text = load_calibration(shared).summary_text()
    assert "m=2 " in text and "effectively had 1 of 2 cores" in text and "--cores" in text


def test_a_run_that_changed_speed_or_shared_the_machine_is_named_in_the_calibration(tmp_path):
    # one worker: 3,000 cycles of 10 us, then 3,000 of 20 us (the machine got slower)
    cycles = np.r_[np.full(3000, 10e-6), np.full(3000, 20e-6)]
    t = np.r_[0.0, np.cumsum(cycles)[:-1]]
    path = fake_folder(tmp_path, "lock", 1, 2, {"worker": np.zeros(t.size, np.int32),
                                                 "t_read": t, "t_apply": t + 8e-6},
                       other_cpu_share=0.3, steal_share=0.0,
                       core_round_trip_ns_start=350.0, core_round_trip_ns_end=330.0,
                       cpu_seconds=0.12, worker_cpu_seconds=0.09)
    cal = calibrate(path, costs=COSTS)
    found = cal.data["source"]["disturbed_runs"]["r0000"]
    why = found["why"]
    assert 0.6 <= found["slow_share"] <= 0.75 and found["other_cpu_share"] == 0.3
    slow = [int(m.group(1)) for w in why if (m := re.search(r"(\d+)% of the run", w))]
    assert slow and 60 <= slow[0] <= 75  # 2/3 of its time went at half speed
    assert any("other processes 30% of its CPUs' time" in w for w in why)
    assert cal.data["source"]["runs_on_cpus_apart"] == ["r0000"]
    # the run lasted 0.09 s: its monitor used 0.03 s of CPU, a third of a core
    assert cal.data["source"]["monitor_core_share"]["r0000"] == pytest.approx(1 / 3, rel=0.01)
    text = cal.summary_text()
    assert "not a steady machine in run r0000" in text and "without a shared cache" in text
    assert "runs whose monitor (evaluations, record) took a tenth of a core or more" in text


def test_a_steady_run_leaves_the_calibration_without_warnings(tmp_path):
    t = np.arange(6000) * 10e-6
    path = fake_folder(tmp_path, "lock", 1, 2, {"worker": np.zeros(t.size, np.int32),
                                                 "t_read": t, "t_apply": t + 8e-6},
                       other_cpu_share=0.01, steal_share=0.0)
    cal = calibrate(path, costs=COSTS)
    assert cal.data["source"]["disturbed_runs"] == {}
    assert "steady" not in cal.summary_text()


def test_steady_only_leaves_out_an_unsteady_repetition_where_a_steady_one_is_left(tmp_path):
    def one_worker(cycles):
        t = np.r_[0.0, np.cumsum(cycles)[:-1]]
        return {"worker": np.zeros(t.size, np.int32), "t_read": t, "t_apply": t + 8e-6}

    steady = one_worker(np.full(6000, 10e-6))
    slowed = one_worker(np.r_[np.full(3000, 10e-6), np.full(3000, 20e-6)])
    both = fake_folder_of(tmp_path / "both", "lock", 1, 2, [(steady, {}), (slowed, {})])
    every = calibrate(both, costs=COSTS)
    assert every.data["source"]["run_ids"] == ["r0000", "r0001"]
    assert list(every.data["source"]["disturbed_runs"]) == ["r0001"]
    only = calibrate(both, costs=COSTS, steady_only=True)
    assert only.data["source"]["run_ids"] == ["r0000"]
    assert only.data["source"]["left_out_unsteady"] == ["r0001"]
    assert only.data["source"]["disturbed_runs"] == {}
    assert "left out as unsteady (a steady run of the same configuration is used): r0001" \
        in only.summary_text()
    # the steady run's cycles alone (10 us), not the mixture's (12.5 us on average)
    alone_steady = calibrate(fake_folder_of(tmp_path / "s", "lock", 1, 2, [(steady, {})]),
                             costs=COSTS)
    assert only.configuration("lock", 1)["compute"]["mean"] == pytest.approx(
        alone_steady.configuration("lock", 1)["compute"]["mean"], rel=1e-9)
    assert every.configuration("lock", 1)["compute"]["mean"] > \
        only.configuration("lock", 1)["compute"]["mean"] + 2e-6
    # a configuration whose every run is unsteady keeps them (and names them)
    alone = calibrate(fake_folder_of(tmp_path / "alone", "lock", 1, 2, [(slowed, {})]),
                      costs=COSTS, steady_only=True)
    assert alone.data["source"]["run_ids"] == ["r0000"]
    assert alone.data["source"]["left_out_unsteady"] == []
    assert list(alone.data["source"]["disturbed_runs"]) == ["r0000"]


def test_cli_calibrate_steady_only(tmp_path, capsys):
    t = np.arange(6000) * 10e-6
    path = fake_folder(tmp_path, "lock", 1, 2, {"worker": np.zeros(t.size, np.int32),
                                                 "t_read": t, "t_apply": t + 8e-6})
    assert main(["calibrate", str(path), "--steady-only", "--out",
                 str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["source"]["left_out_unsteady"] == []


def test_the_automatic_calibration_names_the_unsteady_runs_it_read(tmp_path):
    from pathlib import Path

    from stalesgd.app.autocalibration import AutoCalibrations

    t = np.r_[0.0, np.cumsum(np.r_[np.full(3000, 10e-6), np.full(3000, 20e-6)])[:-1]]
    folder = Path(fake_folder(tmp_path, "lock", 1, 2, {"worker": np.zeros(t.size, np.int32),
                                                        "t_read": t, "t_apply": t + 8e-6}))
    said: list[str] = []
    AutoCalibrations(folder, said.append)._fit(folder / "c.json", ["r0000"], None)
    assert said[-1].endswith(": c.json (not a steady machine in run r0000: see `stalesgd "
                             "calibrate` or the report's flags)")
