"""What else the machine did during a real run: other processes' CPU time and steal
(real/load.py), and the real engine's record of it."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stalesgd.real.engine import RealRun
from stalesgd.real.load import (
    MIN_TICKS,
    CpuCounters,
    MachineLoad,
    cpu_counters,
    machine_load,
    parse_proc_stat,
)

from stalesgd.experiment import expand, experiment_from_flags

LINUX = Path("/proc/stat").exists()
STAT = """cpu  4000 100 600 2000 10 0 8 300 0 0
cpu0 2000 50 300 1000 5 0 4 150 0 0
cpu1 2000 50 300 1000 5 0 4 150 0 0
intr 123
"""


def test_the_aggregate_cpu_line_gives_busy_steal_and_total_seconds():
    busy, steal, total = parse_proc_stat(STAT, ticks_per_second=100.0)
    assert busy == pytest.approx((4000 + 100 + 600 + 0 + 8) / 100)  # idle, iowait left out
    assert steal == pytest.approx(3.0)
    assert total == pytest.approx((4000 + 100 + 600 + 2000 + 10 + 8 + 300) / 100)


def test_the_cpus_the_process_may_use_are_read_from_their_own_lines():
    busy, steal, total = parse_proc_stat(STAT, ticks_per_second=100.0, cpus=[1])
    assert busy == pytest.approx((2000 + 50 + 300 + 4) / 100)
    assert steal == pytest.approx(1.5)
    with pytest.raises(ValueError, match="no line for cpu7"):
        parse_proc_stat(STAT, ticks_per_second=100.0, cpus=[1, 7])


def test_an_old_kernel_without_a_steal_column_counts_no_steal():
    busy, steal, total = parse_proc_stat("cpu  10 0 5 85\n", ticks_per_second=100.0)
    assert (busy, steal, total) == (pytest.approx(0.15), 0.0, pytest.approx(1.0))


@pytest.mark.parametrize("text", ["", "cpu0 1 2 3 4\n", "cpu  a b c d\n", "cpu\n", "cpu 1 2\n"])
def test_unreadable_counters_are_refused(text):
    with pytest.raises(ValueError, match="/proc/stat"):
        parse_proc_stat(text, ticks_per_second=100.0)


@pytest.mark.parametrize("rate", [0.0, -100.0, float("nan")])
def test_a_tick_rate_that_is_no_rate_is_refused(rate):
    with pytest.raises(ValueError, match="ticks per second"):
        parse_proc_stat(STAT, ticks_per_second=rate)


def test_the_shares_subtract_the_process_own_time():
    start = CpuCounters(busy=10.0, steal=1.0, total=20.0, own=2.0)
    end = CpuCounters(busy=16.0, steal=2.0, total=30.0, own=5.0)  # 10 s of CPU time passed
    load = machine_load(start, end)
    assert load.other == pytest.approx((6.0 - 3.0) / 10.0)
    assert load.steal == pytest.approx(0.1)
    # this process counted a tick more than the machine did: no negative share
    assert machine_load(start, CpuCounters(12.0, 1.0, 30.0, 5.0)).other == 0.0


def test_missing_counters_give_nan_not_an_error():
    c = CpuCounters(1.0, 0.0, 2.0, 0.5)
    for a, b in ((None, c), (c, None), (c, c)):  # (c, c): no tick passed
        load = machine_load(a, b)
        assert isinstance(load, MachineLoad) and math.isnan(load.other)
        assert math.isnan(load.steal)


def test_a_window_of_a_few_ticks_is_too_coarse_to_judge():
    """One 10 ms tick in a 2 ms run read as 66 % other load: fewer than MIN_TICKS ticks
    give NaN."""
    start = CpuCounters(busy=10.0, steal=0.0, total=20.0, own=2.0, tick=0.01)
    few = CpuCounters(busy=10.01, steal=0.0, total=20.0 + (MIN_TICKS - 1) * 0.01, own=2.0)
    assert math.isnan(machine_load(start, few).other)
    enough = CpuCounters(busy=10.01, steal=0.0, total=20.0 + MIN_TICKS * 0.01, own=2.0)
    assert machine_load(start, enough).other == pytest.approx(0.01 / (MIN_TICKS * 0.01))


@pytest.mark.skipif(not LINUX, reason="needs Linux's /proc/stat")
def test_another_process_spinning_shows_as_other_load():
    """A process spinning on one CPU for 0.6 s takes a share 1/CPUs of the machine's time
    (at least; other work on the machine only adds to it); this process, sleeping, none."""
    cpus = sum(1 for line in Path("/proc/stat").read_text().splitlines()
               if line.startswith("cpu") and line[3:4].isdigit())
    spinner = subprocess.Popen([sys.executable, "-c",
                                "import time\nt = time.time()\nwhile time.time() - t < 0.8: pass"])
    try:
        time.sleep(0.1)
        start = cpu_counters()
        time.sleep(0.6)
        end = cpu_counters()
    finally:
        spinner.wait()
    load = machine_load(start, end)
    assert load.other >= 0.6 / cpus, load


@pytest.mark.skipif(not LINUX, reason="needs Linux's /proc/stat")
def test_a_real_run_records_the_machine_load():
    exp = experiment_from_flags("real", problem="logreg-synthetic", algorithm="lock",
                                workers=2, seconds=0.6)  # (at least MIN_TICKS ticks)
    s = RealRun(expand(exp)[0], progress=False).run().summary
    for key in ("other_cpu_share", "steal_share"):
        assert 0.0 <= s[key] <= 1.0, (key, s[key])
