"""Whether a real run went at one speed from its start to its end, and whether it had the
machine to itself.

On a shared or virtual machine the same code changes speed within a run: the host moves the
virtual CPUs between cores that share a cache and cores that do not (measured on 2-vCPU
machines: a lock run of two workers at batch 16 went from 27,000 to 15,000 updates/s a third
of the way through and stayed there; see :mod:`stalesgd.real.placement`), or other work takes
the cores (:mod:`stalesgd.real.load`).  Such a run mixes two machines: its PDF(τ) is a
mixture that a simulation of one machine does not reproduce, and a calibration from it fits
neither.  This module measures it from the record, so that a comparison that misses can say
why: :func:`slow_share` from the update rows, :func:`disturbances` for a run's row, and
:func:`placement_note` for where its CPUs were.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["BUSY_FLAG", "FAR_NS", "MONITOR_FLAG", "SLOW_FLAG", "SLOW_RATIO", "cell_number",
           "disturbances",
           "judged", "monitor_note", "monitor_share", "placement_note", "slow_share",
           "slow_shares"]

#: a stretch of a run slower than this share of its top speed is slow
SLOW_RATIO = 0.7
#: most stretches a run is cut into, and fewest updates a stretch holds on average
MAX_BINS = 50
MIN_PER_BIN = 200
#: fewest stretches to judge a run by (fewer: too few updates, the share is NaN; with 8, one
#: stretch short by chance was 12 % of the run, and 9 % of steady runs were flagged)
MIN_BINS = 20
#: the share of updates at either end of a run outside its span (a straggling last apply
#: must not stretch the run)
EDGE_QUANTILE = 0.005
#: a run slow for at least this share of its time is flagged
SLOW_FLAG = 0.1
#: a run whose CPUs gave at least this share of their time to other processes or the
#: hypervisor is flagged
BUSY_FLAG = 0.05
#: a CPU round trip at least this long (ns) at both ends of a run: its CPUs were on cores
#: without a shared cache (≈ 60 ns on a shared one, 300+ apart; stalesgd.real.placement) ...
FAR_NS = 200.0
#: ... and at most this long: longer ones are a descheduled thread on a busy machine, not a
#: distance between caches
MAX_ROUND_TRIP_NS = 5000.0
#: a real run whose monitor thread (evaluations, draining the update record) used at least
#: this share of one core is flagged: the workers had that much less of the cores, which the
#: simulator does not model (MNIST MLP and LeNet-5 runs with the default ~50 evaluations of
#: 2,000 rows: 0.17-0.74 of a core; logistic regression 0.05-0.07)
MONITOR_FLAG = 0.1
#: engines whose runs measure a machine (simulations are steady by construction)
MEASURED_ENGINES = ("real", "ray")


def slow_share(t_apply: np.ndarray) -> float:
    """Share of a run's time spent in stretches slower than :data:`SLOW_RATIO` × its top
    speed.

    ``t_apply``: the times of the run's applied updates.  The run (without the first and
    last :data:`EDGE_QUANTILE` of its updates) is cut into equal stretches (at most
    :data:`MAX_BINS`, each holding :data:`MIN_PER_BIN` updates on average) and the first and
    the last stretch are left out (the start, and a stretch cut short).  The top speed is
    the highest median of three stretches in a row, so a single fast stretch by chance does
    not set it and a fast start of three stretches does.  NaN when fewer than
    :data:`MIN_BINS` stretches remain."""
    t = np.asarray(t_apply, dtype=np.float64).ravel()
    t = t[np.isfinite(t)]
    if t.size < 2:
        return math.nan
    start, end = (float(x) for x in np.quantile(t, [EDGE_QUANTILE, 1.0 - EDGE_QUANTILE]))
    bins = min(MAX_BINS, t.size // MIN_PER_BIN)
    if bins < MIN_BINS + 2 or not end > start:
        return math.nan
    counts, _ = np.histogram(t, bins=bins, range=(start, end))
    inner = counts[1:-1].astype(np.float64)
    top = float(np.max(np.median(np.lib.stride_tricks.sliding_window_view(inner, 3), axis=1)))
    if not top > 0:
        return math.nan
    return float(np.mean(inner < SLOW_RATIO * top))


def judged(row: Mapping[str, Any]) -> bool:
    """Whether a run's speed says something about its machine: a measured run (not a
    simulation) with a fixed number of workers (an elastic controller changes the speed by
    design) that kept every update row."""
    rows_kept = row.get("log_rows")
    return (str(row.get("engine")) in MEASURED_ENGINES
            and not cell_number(row.get("controller_changes")) > 0
            and not (isinstance(rows_kept, str) and rows_kept != "all"))


def slow_shares(runs: pd.DataFrame, updates: pd.DataFrame, key: str = "uid") -> np.ndarray:
    """:func:`slow_share` per run of a runs table, its update rows found by ``key`` (``uid``
    in loaded folders, ``run_id`` in one folder); NaN for the runs not :func:`judged`."""
    out = np.full(len(runs), np.nan)
    if not len(runs) or updates.empty:
        return out
    applied = updates[~updates["dropped"].fillna(False).astype(bool)]
    times = {k: g.to_numpy(np.float64) for k, g in applied.groupby(key)["t_apply"]}
    for i, (_, row) in enumerate(runs.iterrows()):
        t = times.get(row[key])
        if t is not None and judged(row):
            out[i] = slow_share(t)
    return out


def disturbances(row: Mapping[str, Any]) -> list[str]:
    """What disturbed a real run, in words, from its runs-table row (``slow_share`` as the
    loader adds it; ``record_waits``, ``other_cpu_share`` and ``steal_share`` as the engine
    records them); empty for an undisturbed run or one that lacks the columns.  A run whose
    workers waited for room in the update record was slowed by the engine's recorder, not
    by the machine, and is said to be so."""
    out = []
    slow = cell_number(row.get("slow_share"))
    if slow >= SLOW_FLAG:
        waits = cell_number(row.get("record_waits"))
        cause = (f"its workers waited {int(waits)} times for room in the update record: "
                 "the engine's recorder, not the machine" if waits > 0
                 else "the machine changed speed")
        out.append(f"below {SLOW_RATIO:g}× its top speed for {slow:.0%} of the run ({cause})")
    other, steal = cell_number(row.get("other_cpu_share")), cell_number(row.get("steal_share"))
    busy = (0.0 if math.isnan(other) else other) + (0.0 if math.isnan(steal) else steal)
    if busy >= BUSY_FLAG:
        parts = [f"other processes {other:.0%}"] if other >= 0.005 else []
        parts += [f"the hypervisor {steal:.0%}"] if steal >= 0.005 else []
        out.append(f"machine shared: {' and '.join(parts)} of its CPUs' time")
    return out


def monitor_share(row: Mapping[str, Any]) -> float:
    """Share of one core that a real run's monitor thread used: the process's CPU time
    less its workers', per second of the run (NaN without the columns)."""
    if str(row.get("engine")) != "real":
        return math.nan
    seconds = cell_number(row.get("seconds"))
    own = cell_number(row.get("cpu_seconds")) - cell_number(row.get("worker_cpu_seconds"))
    return max(own, 0.0) / seconds if seconds > 0 else math.nan


def monitor_note(row: Mapping[str, Any]) -> str:
    """"monitor took …" when a real run's monitor used at least :data:`MONITOR_FLAG` of a
    core (its evaluations: fewer rows, ``[eval] max_rows``, or a longer interval lighten
    it), else ""."""
    share = monitor_share(row)
    if share >= MONITOR_FLAG:
        return f"monitor took {share:.2f} of a core (evaluations, record)"
    return ""


def placement_note(row: Mapping[str, Any]) -> str:
    """"CPUs apart …" when a real run's CPUs were on cores without a shared cache at both
    its ends (a state of the machine that can last a whole run, in which the same code runs
    up to twice as slowly when workers share parameters often), else ""."""
    start = cell_number(row.get("core_round_trip_ns_start"))
    end = cell_number(row.get("core_round_trip_ns_end"))
    if FAR_NS <= start <= MAX_ROUND_TRIP_NS and FAR_NS <= end <= MAX_ROUND_TRIP_NS:
        return f"CPUs apart at start and end (round trip {start:.0f} / {end:.0f} ns)"
    return ""


def cell_number(value: Any) -> float:
    """A float from a table cell that may be missing (None, NaN, pandas' NA: NaN then)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return math.nan
    return x
