"""What else the machine did while a run went on: other processes' CPU time, and the time the
hypervisor took the virtual CPUs away ("steal").

A real run's timings are this code's alone only on a quiet machine.  Another process on the
cores (a compiler, a second experiment, a test suite) or a host that runs other guests on the
same physical cores lengthens some cycles, and a calibration then takes the lost time for
gradient time or for the scheduler's.  Linux counts both for the whole machine in
``/proc/stat`` (in clock ticks, 10 ms on most kernels): the CPUs' busy time, of which this
process's own (``getrusage``) is subtracted, and their steal time.  Two snapshots, at the
start line and at the end of a run, give the shares of the run's CPU time that went elsewhere.

Elsewhere than Linux the counters are absent and the shares are NaN.
"""

from __future__ import annotations

import math
import os
import resource
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuCounters", "MachineLoad", "cpu_counters", "machine_load", "parse_proc_stat"]

#: where Linux keeps the machine's CPU time counters
PROC_STAT = Path("/proc/stat")
#: fields of the aggregate ``cpu`` line of /proc/stat, in order (``guest`` and ``guest_nice``
#: are already counted in ``user`` and ``nice``)
FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
#: the ones that are CPU time spent running something on this machine
BUSY = ("user", "nice", "system", "irq", "softirq")


@dataclass(frozen=True)
class CpuCounters:
    """The machine's CPU time counters at one moment (seconds summed over every CPU), and
    this process's own CPU time (all its threads)."""

    busy: float
    steal: float
    total: float
    own: float


@dataclass(frozen=True)
class MachineLoad:
    """Shares of the machine's CPU time between two snapshots: ``other`` ran other processes
    (or the kernel for them), ``steal`` was taken by the hypervisor.  NaN where unknown."""

    other: float
    steal: float

    @property
    def disturbed(self) -> float:
        """The share that was not this process's to use, other load and steal together."""
        return self.other + self.steal


def parse_proc_stat(text: str, ticks_per_second: float) -> tuple[float, float, float]:
    """(busy, steal, total) CPU-seconds of every CPU together from the text of /proc/stat.

    Raises ValueError when the aggregate ``cpu`` line is missing or malformed."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            try:
                values = [int(v) for v in parts[1:1 + len(FIELDS)]]
            except ValueError:
                raise ValueError(f"/proc/stat: the cpu line is not numbers: {line!r}") from None
            values += [0] * (len(FIELDS) - len(values))  # (old kernels: no steal column)
            ticks = dict(zip(FIELDS, values, strict=True))
            busy = sum(ticks[f] for f in BUSY)
            return (busy / ticks_per_second, ticks["steal"] / ticks_per_second,
                    sum(values) / ticks_per_second)
    raise ValueError("/proc/stat has no aggregate 'cpu' line")


def _ticks_per_second() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100.0


def cpu_counters() -> CpuCounters | None:
    """A snapshot of the counters, or None where the machine does not provide them."""
    try:
        text = PROC_STAT.read_text()
        busy, steal, total = parse_proc_stat(text, _ticks_per_second())
    except (OSError, ValueError):
        return None
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return CpuCounters(busy=busy, steal=steal, total=total, own=ru.ru_utime + ru.ru_stime)


def machine_load(start: CpuCounters | None, end: CpuCounters | None) -> MachineLoad:
    """The shares of the machine's CPU time from ``start`` to ``end`` that other processes
    and the hypervisor took (NaN when a snapshot is missing or no tick passed).  Other load
    is clipped at 0: the process's own time and the machine's ticks are counted apart and can
    differ by a tick or two."""
    if start is None or end is None:
        return MachineLoad(math.nan, math.nan)
    total = end.total - start.total
    if not total > 0:
        return MachineLoad(math.nan, math.nan)
    other = max((end.busy - start.busy) - (end.own - start.own), 0.0) / total
    steal = max(end.steal - start.steal, 0.0) / total
    return MachineLoad(min(other, 1.0), min(steal, 1.0))
