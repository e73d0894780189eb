"""What else the machine did while a run went on: other processes' CPU time, and the time the
hypervisor took the virtual CPUs away ("steal").

A real run's timings are this code's alone only on a quiet machine.  Another process on the
cores (a compiler, a second experiment, a test suite) or a host that runs other guests on the
same physical cores lengthens some cycles, and a calibration then takes the lost time for
gradient time or for the scheduler's.  Linux counts both per CPU in ``/proc/stat`` (in clock
ticks, 10 ms on most kernels): the CPUs' busy time, of which this process's own
(``getrusage``) is subtracted, and their steal time.  Two snapshots of the CPUs this process
may run on, at the start line and at the end of a run, give the shares of those CPUs' time
that went elsewhere.

The counters move in whole ticks: a window of fewer than :data:`MIN_TICKS` ticks (on two
CPUs, a run shorter than a quarter of a second) is too coarse to say anything, and its shares
are NaN, as they are where the counters are absent (other systems than Linux).
"""

from __future__ import annotations

import math
import os
import resource
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MIN_TICKS", "CpuCounters", "MachineLoad", "cpu_counters", "machine_load",
           "parse_proc_stat"]

#: where Linux keeps the machine's CPU time counters
PROC_STAT = Path("/proc/stat")
#: fields of a ``cpu`` line of /proc/stat, in order (``guest`` and ``guest_nice`` are already
#: counted in ``user`` and ``nice``)
FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
#: the ones that are CPU time spent running something on this machine
BUSY = ("user", "nice", "system", "irq", "softirq")
#: fewest clock ticks (all the CPUs' together) a window must span for shares to be given:
#: one tick is then at most 2 % of it (over 2 ms, one tick read as 66 % other load)
MIN_TICKS = 50


@dataclass(frozen=True)
class CpuCounters:
    """The CPU time counters of the CPUs this process may use, at one moment (seconds summed
    over those CPUs), this process's own CPU time (all its threads), and the tick length."""

    busy: float
    steal: float
    total: float
    own: float
    tick: float = 0.01


@dataclass(frozen=True)
class MachineLoad:
    """Shares of the CPUs' time between two snapshots: ``other`` ran other processes (or the
    kernel for them), ``steal`` was taken by the hypervisor.  NaN where unknown."""

    other: float
    steal: float


def parse_proc_stat(text: str, ticks_per_second: float,
                    cpus: Iterable[int] | None = None) -> tuple[float, float, float]:
    """(busy, steal, total) CPU-seconds from the text of /proc/stat: of the CPUs numbered
    ``cpus`` (their ``cpuN`` lines), or of every CPU (the aggregate ``cpu`` line) when None.

    Raises ValueError when a line is missing or malformed, or the tick rate is not > 0."""
    if not ticks_per_second > 0:
        raise ValueError(f"/proc/stat: clock ticks per second must be > 0, not "
                         f"{ticks_per_second!r}")
    wanted = {"cpu"} if cpus is None else {f"cpu{int(c)}" for c in cpus}
    if not wanted:
        raise ValueError("/proc/stat: no CPU to read")
    sums = dict.fromkeys(FIELDS, 0)
    found: set[str] = set()
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] not in wanted:
            continue
        try:
            values = [int(v) for v in parts[1:1 + len(FIELDS)]]
        except ValueError:
            raise ValueError(f"/proc/stat: the {parts[0]} line is not numbers: {line!r}") from None
        if len(values) < 4:  # (old kernels lack the later columns, steal among them)
            raise ValueError(f"/proc/stat: the {parts[0]} line is too short: {line!r}")
        for name, value in zip(FIELDS, values, strict=False):
            sums[name] += value
        found.add(parts[0])
    if found != wanted:
        raise ValueError(f"/proc/stat has no line for {', '.join(sorted(wanted - found))}")
    busy = sum(sums[f] for f in BUSY)
    return (busy / ticks_per_second, sums["steal"] / ticks_per_second,
            sum(sums.values()) / ticks_per_second)


def _ticks_per_second() -> float:
    try:
        rate = float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100.0
    return rate if rate > 0 else 100.0


def _my_cpus() -> list[int] | None:
    """The CPUs this process may run on (None: unknown, read every CPU)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def cpu_counters() -> CpuCounters | None:
    """A snapshot of the counters, or None where the machine does not provide them."""
    rate = _ticks_per_second()
    try:
        text = PROC_STAT.read_text()
        try:
            busy, steal, total = parse_proc_stat(text, rate, _my_cpus())
        except ValueError:  # (CPU numbers the file does not list: count every CPU)
            busy, steal, total = parse_proc_stat(text, rate)
    except (OSError, ValueError):
        return None
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return CpuCounters(busy=busy, steal=steal, total=total, own=ru.ru_utime + ru.ru_stime,
                       tick=1.0 / rate)


def machine_load(start: CpuCounters | None, end: CpuCounters | None) -> MachineLoad:
    """The shares of the CPUs' time from ``start`` to ``end`` that other processes and the
    hypervisor took: NaN when a snapshot is missing or fewer than :data:`MIN_TICKS` ticks
    passed.  Other load is clipped at 0: the process's own time and the CPUs' ticks are
    counted apart and can differ by a tick or two."""
    if start is None or end is None:
        return MachineLoad(math.nan, math.nan)
    total = end.total - start.total
    if not total >= MIN_TICKS * end.tick:
        return MachineLoad(math.nan, math.nan)
    other = max((end.busy - start.busy) - (end.own - start.own), 0.0) / total
    steal = max(end.steal - start.steal, 0.0) / total
    return MachineLoad(min(other, 1.0), min(steal, 1.0))
