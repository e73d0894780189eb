"""Whether a real run had a steady machine (analysis/steadiness.py), and where it is said:
the report's flags and the calibration's summary."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from stalesgd.analysis.report import run_flags
from stalesgd.analysis.steadiness import (
    SLOW_FLAG,
    disturbances,
    monitor_note,
    monitor_share,
    placement_note,
    slow_share,
    slow_shares,
)


def times(rates_and_durations, seed=0):
    """Apply times of a run going at each (updates/s, seconds) in turn, with jitter."""
    rng = np.random.default_rng(seed)
    out, t0 = [], 0.0
    for rate, seconds in rates_and_durations:
        n = int(rate * seconds)
        out.append(t0 + np.sort(rng.uniform(0.0, seconds, n)))
        t0 += seconds
    return np.concatenate(out)


def test_a_steady_run_has_no_slow_stretch():
    assert slow_share(times([(20_000, 2.5)])) == 0.0


@pytest.mark.parametrize("fast_part", [0.2, 0.5, 0.8])
def test_a_run_that_halves_its_speed_is_slow_for_the_rest(fast_part):
    t = times([(20_000, 2.5 * fast_part), (10_000, 2.5 * (1 - fast_part))])
    assert slow_share(t) == pytest.approx(1 - fast_part, abs=0.06)


def test_a_dip_of_an_eighth_of_the_run_is_found_and_flagged():
    t = times([(20_000, 1.0), (8_000, 0.3), (20_000, 1.2)])
    share = slow_share(t)
    assert share == pytest.approx(0.12, abs=0.03)
    assert disturbances({"slow_share": share})


def test_a_fast_start_of_a_few_stretches_sets_the_top_speed():
    # fast for the first 6 % of the run only: the rest is slow, not the norm
    assert slow_share(times([(20_000, 0.15), (10_000, 2.35)])) > 0.85


def test_a_straggling_last_update_does_not_stretch_the_run():
    t = np.r_[times([(20_000, 2.0)]), 20.0]  # one apply 18 s after the others
    assert slow_share(t) == 0.0


def test_steady_runs_are_not_flagged_by_chance():
    """Updates at independent random times (no machine change): the run is cut so that one
    stretch short by chance is not a tenth of it."""
    rng = np.random.default_rng(3)
    shares = [slow_share(np.sort(rng.uniform(0.0, 2.0, n))) for n in (4500, 8000) * 50]
    assert max(shares) < SLOW_FLAG


def test_disturbances_name_what_was_measured():
    quiet = {"slow_share": 0.02, "other_cpu_share": 0.01, "steal_share": 0.0}
    assert disturbances(quiet) == []
    words = disturbances({"slow_share": 0.42, "other_cpu_share": 0.20, "steal_share": 0.03})
    assert any("42%" in w and "the machine changed speed" in w for w in words)
    assert any("other processes 20% and the hypervisor 3%" in w for w in words)
    assert disturbances({}) == []  # a simulation, or an older folder: nothing to say


def test_a_slow_stretch_from_the_engines_own_recorder_is_not_blamed_on_the_machine():
    (words,) = disturbances({"slow_share": 0.25, "record_waits": 4})
    assert "waited 4 times for room in the update record" in words
    assert "machine changed speed" not in words


def test_cpus_apart_only_for_round_trips_of_a_cache_distance():
    assert placement_note({"core_round_trip_ns_start": 340.0, "core_round_trip_ns_end": 320.0})
    assert not placement_note({"core_round_trip_ns_start": 340.0,
                               "core_round_trip_ns_end": 61.0})  # moved together: no note
    # 8 ms: a descheduled thread on a busy machine, not a distance
    assert not placement_note({"core_round_trip_ns_start": 868.0,
                               "core_round_trip_ns_end": 8_359_316.0})
    assert not placement_note({})


def test_the_runs_table_flags_a_disturbed_run():
    row = {"evaluated": True, "slow_share": 0.88, "other_cpu_share": 0.0, "steal_share": 0.0}
    assert "changed speed" in run_flags(row)


def test_only_measured_runs_with_a_fixed_worker_count_are_judged():
    t = times([(20_000, 1.0), (10_000, 1.5)])
    updates = pd.DataFrame({"uid": ["a/r0"] * t.size + ["a/r1"] * t.size
                            + ["a/r2"] * t.size,
                            "t_apply": np.concatenate([t, t, t]),
                            "dropped": np.zeros(3 * t.size, bool)})
    runs = pd.DataFrame({"uid": ["a/r0", "a/r1", "a/r2"], "engine": ["real", "sim", "real"],
                         "controller_changes": [0, 0, 3], "log_rows": ["all"] * 3})
    shares = slow_shares(runs, updates)
    assert shares[0] == pytest.approx(0.6, abs=0.06)
    assert math.isnan(shares[1]) and math.isnan(shares[2])
    runs["log_rows"] = "every:7"  # a sample of the rows: its rate is not the run's
    assert np.isnan(slow_shares(runs, updates)).all()


def test_a_monitor_that_took_a_tenth_of_a_core_is_named():
    row = {"engine": "real", "seconds": 2.0, "cpu_seconds": 3.98, "worker_cpu_seconds": 3.50}
    assert monitor_share(row) == pytest.approx(0.24)
    assert monitor_note(row) == "monitor took 0.24 of a core (evaluations, record)"
    light = {**row, "cpu_seconds": 3.62}  # 0.06 of a core: not worth a flag
    assert monitor_note(light) == ""
    assert math.isnan(monitor_share({**row, "engine": "sim"}))  # a simulation has none
    assert monitor_note({"engine": "real"}) == ""  # an older folder: nothing to say
    assert "monitor took 0.24 of a core" in run_flags({**row, "evaluated": True})
