"""The cache-line round trip between two CPUs that real runs record (real/placement.py)."""

from __future__ import annotations

import math
import os
import time

import pytest
from stalesgd.real.engine import RealRun
from stalesgd.real.placement import core_round_trip_ns

from stalesgd.experiment import expand, experiment_from_flags

TWO_CPUS = len(os.sched_getaffinity(0)) >= 2


@pytest.mark.skipif(not TWO_CPUS, reason="needs two CPUs for two spinning threads")
def test_a_round_trip_is_a_positive_time_or_nan_when_a_partner_stalls():
    ns = core_round_trip_ns(2_000)
    # NaN: a player gave up, its CPU taken by another process for 50 M spins (a loaded host)
    assert math.isnan(ns) or (math.isfinite(ns) and ns > 0.0)


@pytest.mark.slow  # a timing range: other load on the machine turns it into a hand-over
@pytest.mark.skipif(not TWO_CPUS, reason="needs two CPUs for two spinning threads")
def test_a_round_trip_takes_tens_to_thousands_of_nanoseconds():
    ns = core_round_trip_ns(5_000)
    assert 5.0 < ns < 20_000.0  # a cache line between two cores, not a scheduler hand-over


def test_one_cpu_gives_nan_instead_of_spinning_on_it():
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})  # this thread, and the threads it starts
        assert math.isnan(core_round_trip_ns(1_000))
    finally:
        os.sched_setaffinity(0, before)


def test_trips_must_be_positive():
    with pytest.raises(ValueError, match="trips"):
        core_round_trip_ns(0)


@pytest.mark.parametrize("workers", [1, 2])
def test_real_runs_record_the_round_trip_at_both_ends(workers):
    exp = experiment_from_flags("real", problem="logreg-synthetic", algorithm="lock",
                                workers=workers, updates=500)
    s = RealRun(expand(exp)[0], progress=False).run().summary
    for key in ("core_round_trip_ns_start", "core_round_trip_ns_end"):
        if workers == 1 or not TWO_CPUS:
            assert math.isnan(s[key])
        else:  # (its range depends on the machine's load: see the slow test above)
            assert math.isnan(s[key]) or (math.isfinite(s[key]) and s[key] > 0.0)


@pytest.mark.skipif(not TWO_CPUS, reason="needs two CPUs for two spinning threads")
def test_a_round_trip_stops_at_its_time_budget():
    """However many trips are asked for, the measurement ends soon after its budget (a
    loaded host once stretched 50,000 trips to a minute)."""
    t0 = time.perf_counter()
    ns = core_round_trip_ns(10**12, seconds=0.02)
    assert time.perf_counter() - t0 < 5.0  # 10^12 trips would take hours
    assert math.isnan(ns) or (math.isfinite(ns) and ns > 0.0)
