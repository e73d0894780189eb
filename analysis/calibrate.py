"""Fit the simulator's timing model to a real run: ``stalesgd calibrate REAL_DIR``.

What the real timestamps contain (``real/workers.py``), per update of one worker:

* ``lock``: ``t_read`` right after taking the lock, before the copy; ``t_apply`` after the
  update, before the release.  ``t_apply − t_read`` = copy + compute + wait for the lock +
  update; the batch draw, the log write and the wait at the read lock lie between one
  update's ``t_apply`` and the next ``t_read``.
* ``hogwild``: ``t_read`` before the atomic read of ``v`` (no copy: the gradient reads θ in
  place); ``t_apply`` after the fetch-add and the element-wise update.
* ``leashed``: ``t_read`` before taking the published vector; ``t_apply`` after the successful
  publish; in between the compute and, per attempt, a fused copy-and-apply
  (``dst = src − η g``) and a compare-and-swap.

The simulator adds ``read + compute + update`` (and ``cas_cost``, lock waits, scheduler
delays) per update (``sim/model.py``) with *no* gap between one update and the next read of
the same worker.  The one quantity that matches both is a worker's **cycle**, the time from
one ``t_read`` to its next ``t_read``: the calibrated compute time of one update is its cycle
minus what the simulator adds itself (``read + update`` for ``lock``; ``update + cas`` for
``hogwild``, whose simulated read is set to 0 because the real one is part of the gradient;
``cas + attempts·(read + update + cas)`` for ``leashed``).  So batch draw, time stamps and
log writes are folded into compute, and a calibrated simulation reproduces the measured
updates/s of an uncontended run by construction.

Hogwild's element-wise write is the exception: under contention it runs far slower than
its micro-measured cost (two cores writing and reading the same dense vector), and where a
configuration has m ≥ 2 workers on their own cores its write time is estimated from the
measured staleness instead: the other m − 1 workers' claims fall into a worker's read→claim
window in proportion to that window's share of the cycle, E[τ] ≈ (m − 1)·share, and the rest
of the cycle is the write (``hogwild_write_s`` in the configuration; the simulation of that
configuration uses it as the update time).  That estimate assumes independent phases, so the
share is then fitted by simulation (with at least :data:`MIN_FIT_UPDATES` updates): of a grid
of shares and the estimate, the one whose timing-only simulation of the configuration comes
nearest the measured PDF(τ).  In oversubscribed configurations (m > cores)
only ``cores`` workers write at once: they take the write time of the folder's hogwild
configuration with the most workers on their own cores, when there is one; else the estimate
is read off the τ of the cycles without a descheduled gap (with the cores the run used as
the workers running at once; a gap's τ counts other workers' slices, not the window) and
fitted by simulation in the same way, with the file's time slice.
``hogwild_write_source`` says which.

Read (copy) and update (apply) costs cannot be separated from the records: the timestamps
bracket read, compute and update together.  They come from a **micro-measurement** of the
same loops on this machine at calibration time (copy, apply, fused copy-apply, one
compare-and-swap), recorded in the file with the host name.  Lock hand-over is estimated
from the records (a different worker's ``t_read`` right after a ``t_apply``); the scheduler
time slice from oversubscribed runs (a worker's running time from its first to its last
descheduled gap per gap after the first; not from runs in which every cycle holds waits,
and not above :data:`MAX_SLICE`), else the simulator's default.  With fewer than twice as
many workers as cores, some workers have a core to themselves and show no gaps; the slice
comes from the others.  Cores come from ``machine.json``.

Pooling: one compute model **per configuration** (algorithm, workers) of the folder, with
per-worker samples, plus a **pooled** model over all configurations.  A simulation of a
measured configuration uses its own model (workers beyond the measured ones resample that
configuration's pooled samples); any other configuration starts from the same algorithm's
nearest measured configuration (or the pooled model: ``stalesgd.sim.run.PREDICT_FROM``) and
is labelled a prediction.  In oversubscribed runs (workers > cores) cycles that include a
descheduled gap (longer than ``max(2 × lower quartile, lower quartile + 1 ms)``) are left
out, because the simulator's scheduler adds those delays itself; in runs with workers ≤ cores
every cycle is kept (including interference by other processes, which the simulator cannot
model).

Other load: on a shared machine the workers may get fewer cores than ``machine.json`` lists.
Each run's *effective parallelism* (CPU time of its undisturbed cycles per second) gives the
whole cores it used (``effective_cores``: rounded up unless within 0.15 of the integer below),
which is what "oversubscribed" is judged against and what a calibrated simulation uses.  The
core time other processes took within those cores is put back as long compute samples
(randomly chosen descheduled cycles): in the simulator a worker then holds a core while a
foreign process would have, so throughput and the partial overlap of workers match.  As the
other descheduled cycles are left out, the long ones kept are as few as makes the samples'
mean carry that core time spread over every cycle (their excess over a worker's median
short cycle).  Less than :data:`EDGE_SLACK` of the run's core
time is taken for the run's edges (workers starting and stopping apart), not for another
process.

Runs with workers slowed down on purpose (``slowdown``, :mod:`stalesgd.slowdown`) are left
out (``source.skipped_run_ids``): a calibration describes the machine's workers as they are,
and a simulation with a slowdown applies it to them (and is labelled a prediction).

The file format, its loader and the compatibility check live in :mod:`stalesgd.calibration`;
the micro-measurement in :mod:`stalesgd.real.costs`.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from stalesgd.real.costs import measure_costs

from stalesgd.algorithms import ALGORITHMS, get_algorithm
from stalesgd.calibration import FORMAT, VERSION, Calibration, CalibrationError
from stalesgd.data.errors import DataNotFoundError
from stalesgd.staleness import distances, histogram
from stalesgd.units import adds_delay

from .calibrate_ps import CALIBRATED_ALGORITHMS, fit_network, ps_compute, row_timings
from .load import AnalysisError, read_folder
from .steadiness import (
    MONITOR_FLAG,
    cell_number,
    disturbances,
    monitor_share,
    placement_note,
    slow_shares,
)

__all__ = [
    "calibrate",
    "fit_compute",
    "worker_cycles",
]

#: algorithms whose records can be calibrated (``sync`` logs only worker 0's rounds)
CALIBRATABLE = tuple(a.name for a in ALGORITHMS.values() if a.calibratable)
#: the simulator's default scheduler slice (seconds), used when no oversubscribed run shows it
DEFAULT_TIME_SLICE = 4e-3
#: the longest slice an estimate may give (seconds; Linux's are a few milliseconds): above it
#: too few gaps stood out to measure one, and the default is used
MAX_SLICE = 0.1
#: share of a run's core time that its edges (workers starting and stopping apart) leave
#: unused: less core time missing than this is not another process's
EDGE_SLACK = 0.02
#: read→claim window shares tried when a Hogwild! configuration's write time is fitted by
#: simulation (besides the estimate from E[τ])
WINDOW_SHARES = (0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 0.95, 1.0)
#: simulated updates per window share tried
WINDOW_FIT_UPDATES = 20_000
#: fewest applied updates of a configuration whose write is fitted by simulation (fewer: the
#: measured PDF(τ) is too coarse to choose between shares, and the estimate stays)
MIN_FIT_UPDATES = 1000
#: cycles left out at the start of every worker (compilation is done, but caches warm up)
WARMUP_CYCLES = 5
#: most compute samples stored per worker and for a pooled model (evenly thinned)
MAX_SAMPLES = 20000
MACHINE_FIELDS = ("hostname", "cpu_model", "machine", "logical_cores", "physical_cores",
                  "usable_cores", "os")


# ---------------------------------------------------------------------------------------------
# From records to compute samples
# ---------------------------------------------------------------------------------------------


def worker_cycles(updates, workers: int) -> list[dict[str, np.ndarray]]:
    """Per worker, in ``t_read`` order: ``cycle`` (next ``t_read`` − this ``t_read``),
    ``gap`` (next ``t_read`` − this ``t_apply``), and ``attempts`` and ``tau`` of the update
    that the cycle starts with (dropped gradients included, as they use the worker's time
    too)."""
    out = []
    for w in range(int(workers)):
        rows = updates[updates["worker"] == w].sort_values("t_read")
        tr = rows["t_read"].to_numpy(np.float64)
        ta = rows["t_apply"].to_numpy(np.float64)
        att = rows["attempts"].to_numpy(np.int64) if "attempts" in rows else np.ones(tr.size)
        tau = rows["tau"].to_numpy(np.int64) if "tau" in rows else np.zeros(tr.size, np.int64)
        out.append({"cycle": np.diff(tr), "gap": tr[1:] - ta[:-1], "attempts": att[:-1],
                    "tau": tau[:-1], "t_read": tr[:-1]})
    return out


def sim_timing_costs(algorithm: str, n_params: int, cal: dict[str, Any],
                     coords: float | None = None) -> dict[str, float]:
    """Read, update and CAS seconds per update that a calibrated simulation uses for
    ``algorithm`` (:meth:`stalesgd.algorithms.Algorithm.sim_costs` of the measured
    per-parameter costs; ``coords``: the coordinates a sparse run's updates wrote); the same
    numbers are subtracted from the measured cycles."""
    return get_algorithm(algorithm).sim_costs(n_params, cal["read_per_param"],
                                              cal["update_per_param"], cal["fused_per_param"],
                                              cal["cas_cost"], coords=coords)


#: the shortest descheduled gap told apart from a slow cycle (Linux gives a runnable thread
#: at least about a millisecond once it runs; cycles slowed by co-running workers, e.g. 2–3 ×
#: a 300 µs gradient, are compute)
MIN_GAP = 1e-3


def _long_threshold(cycles: np.ndarray) -> float:
    """Cycles above this include a descheduled gap: twice the lower quartile, and at least
    :data:`MIN_GAP` above it.  The quartile, not the median: with twice as many workers as
    cores and a gradient not much shorter than the scheduler's slice, most cycles are
    interrupted, and a threshold on the median (formerly 10 × median) let every gap through
    as compute."""
    base = float(np.quantile(cycles, 0.25)) if cycles.size else 0.0
    return max(2.0 * base, base + MIN_GAP)


def _stretches(cycles: np.ndarray, long: np.ndarray) -> tuple[float, int]:
    """One worker's running time between its first and last descheduled gap, and the time
    slices it ran in that time (one per gap after the first): a slice estimate that does not
    depend on where in a cycle the preemption falls.  From the cycle holding gap i to the one
    holding gap j the worker ran j − i slices and, on average, as many cycles' time as the
    two cycles' indices differ (the parts of the two long cycles on either side of their gaps
    add up to about one cycle).  The median run of short cycles between two gaps, the first
    estimate, left those parts out: with a gradient of half the slice it found half."""
    idx = np.flatnonzero(long)
    if idx.size < 2 or long.all():
        return 0.0, 0
    return float((idx[-1] - idx[0]) * cycles[~long].mean()), int(idx.size - 1)


def _fit_moments(kind: str, samples: np.ndarray) -> dict[str, Any]:
    x = samples[samples > 0]
    mean = float(np.mean(samples)) if samples.size else 0.0
    cv = float(np.std(x) / np.mean(x)) if x.size else 0.0
    if x.size < 2 or cv < 1e-6:  # (near) constant: no likelihood to compare
        return {"kind": kind, "mean": mean, "cv": cv, "loglik": math.nan}
    try:
        return _mle(kind, x)
    except (ValueError, RuntimeError, FloatingPointError):
        return {"kind": kind, "mean": mean, "cv": cv, "loglik": math.nan}


def _mle(kind: str, x: np.ndarray) -> dict[str, Any]:
    from scipy import stats

    if kind == "gamma":
        a, _, scale = stats.gamma.fit(x, floc=0)
        mean, cv = a * scale, 1.0 / math.sqrt(a)
        ll = float(np.sum(stats.gamma.logpdf(x, a, 0, scale)))
    else:
        s, _, scale = stats.lognorm.fit(x, floc=0)
        mean, cv = scale * math.exp(s * s / 2), math.sqrt(math.expm1(s * s))
        ll = float(np.sum(stats.lognorm.logpdf(x, s, 0, scale)))
    return {"kind": kind, "mean": float(mean), "cv": float(cv), "loglik": ll}


def fit_compute(samples: np.ndarray, max_samples: int = MAX_SAMPLES) -> dict[str, Any]:
    """The compute model of a sample of durations (seconds): summary, both parametric fits
    (gamma and log-normal by maximum likelihood, location 0) with the better one as ``fit``,
    and the (thinned) samples in integer nanoseconds for empirical resampling."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        raise CalibrationError("no compute samples to fit")
    fits = {k: _fit_moments(k, _thin(x, 5000)) for k in ("gamma", "lognormal")}
    lls = {k: f["loglik"] for k, f in fits.items() if math.isfinite(f["loglik"])}
    best = max(lls, key=lls.get) if lls else "gamma"
    mean = float(x.mean())
    return {
        "n": int(x.size),
        "mean": mean,
        "cv": float(x.std() / mean) if mean > 0 else 0.0,
        "p50": float(np.median(x)),
        "p99": float(np.quantile(x, 0.99)),
        "fit": dict(fits[best]),
        "fits": fits,
        "samples_ns": _to_ns(_thin(x, max_samples)),
    }


def _thin(x: np.ndarray, n: int) -> np.ndarray:
    if x.size <= n:
        return x
    return x[np.linspace(0, x.size - 1, n).round().astype(np.int64)]


def _to_ns(x: np.ndarray) -> list[int]:
    return [int(v) for v in np.maximum(np.rint(x * 1e9), 0).astype(np.int64)]


# ---------------------------------------------------------------------------------------------
# The calibration
# ---------------------------------------------------------------------------------------------


def calibrate(folder: str | Path, *, runs: Sequence[str] | None = None,
              max_workers: int | None = None,
              costs: dict[str, Any] | None = None, steady_only: bool = False) -> Calibration:
    """Fit the simulator's timing model to the real runs of a results folder: the thread
    engine's runs (engine ``real``), or, in a folder without any or when ``runs`` names
    them, the distributed engine's (engine ``ray``), which fit the simulator's
    parameter-server topology (:mod:`stalesgd.analysis.calibrate_ps`).

    ``runs`` restricts to those run ids (default: every real run of a calibratable
    algorithm); all selected runs must share engine, problem, batch and dtype.  ``max_workers``
    keeps only the runs with at most that many workers: simulations of more workers are
    then out-of-sample predictions, and the file records the bound (``source.max_workers``)
    so that they are labelled as such (engine ``sim[m<=N]`` in reports).  ``costs`` replaces
    the micro-measurement of :func:`stalesgd.real.costs.measure_costs` (tests; other
    machines).  ``steady_only`` leaves out the runs on an unsteady machine
    (:func:`~stalesgd.analysis.steadiness.disturbances`) of every configuration that also has
    a steady run (the file lists them in ``source.left_out_unsteady``).
    """
    try:
        res = read_folder(folder)
    except AnalysisError as exc:
        raise CalibrationError(str(exc)) from None
    folder = Path(folder)
    table = res.runs
    if table.empty:
        raise CalibrationError(f"results folder {folder.name} holds no runs")
    engine = _engine(table, runs, folder.name)
    sel = table[table["engine"] == engine]
    if runs is not None:
        sel = sel[sel["run_id"].isin(list(runs))]
    if max_workers is not None:
        if isinstance(max_workers, bool) or not isinstance(max_workers, int | np.integer) \
                or max_workers < 1:
            raise CalibrationError(f"max_workers must be an integer >= 1, not {max_workers!r}")
        fewer = sel[sel["workers"] <= max_workers]
        if fewer.empty:
            raise CalibrationError(
                f"results folder {folder.name} has no {engine} run with at most {max_workers} "
                f"workers (its {engine} runs have {sorted(set(map(int, sel['workers'])))})")
        sel = fewer
    algorithms = CALIBRATED_ALGORITHMS if engine == "ray" else CALIBRATABLE
    skipped = sorted(set(sel["run_id"][~sel["algorithm"].isin(algorithms)]))
    sel = sel[sel["algorithm"].isin(algorithms)]
    if "net_delay" in sel:  # messages delayed on purpose describe no machine's network
        delayed = sel["net_delay"].map(adds_delay).astype(bool)
        skipped = sorted(set(skipped) | set(sel["run_id"][delayed]))
        sel = sel[~delayed]
    if "slowdown" in sel:  # runs with stragglers on purpose describe no machine's workers
        slowed = sel["slowdown"].fillna("").astype(str) != ""
        if slowed.all() and not sel.empty:
            raise CalibrationError(
                f"every {engine} run of {folder.name} to calibrate from slows workers down on "
                f"purpose (slowdown {sorted(set(sel['slowdown']))}); calibrate from runs "
                "without a slowdown and give the simulation the slowdown instead "
                "(stalesgd sim --slowdown W=F --calibration FILE)")
        skipped = sorted(set(skipped) | set(sel["run_id"][slowed]))
        sel = sel[~slowed]
    if sel.empty:
        raise CalibrationError(
            f"results folder {folder.name} has no {engine} run of {', '.join(algorithms)} "
            f"(without a slowdown or network delay on purpose) to calibrate from (engines: "
            f"{sorted(set(table['engine']))}, algorithms: {sorted(set(table['algorithm']))}"
            + (f"; left out: runs {', '.join(skipped)}" if skipped else "") + ")")
    if "log_rows" in sel:
        sampled = sel[sel["log_rows"].fillna("all") != "all"]
        if not sampled.empty:
            r = sampled.iloc[0]
            raise CalibrationError(
                f"run {r['run_id']} of {folder.name} kept only some update rows (log rows "
                f"{r['log_rows']}); a calibration needs every cycle of every worker: choose "
                "runs recorded with log rows 'all' (--run) or record again without --log-rows")
    disturbed = _disturbed(res, sel)
    unsteady_out: list[str] = []
    if steady_only:
        sel, unsteady_out = _leave_out_unsteady(sel, disturbed)
        disturbed = {rid: v for rid, v in disturbed.items() if rid not in unsteady_out}
    keys = sorted({(r.problem, int(r.batch), str(r.dtype)) for r in sel.itertuples()})
    if len(keys) > 1:
        raise CalibrationError(
            f"results folder {folder.name} mixes problems {keys}; choose the runs of one "
            "(problem, batch, dtype) with runs=[...] / --run")
    problem, batch, dtype = keys[0]
    from stalesgd.problems.registry import make_problem

    options = _problem_options(res.config)  # what the file records: no path of this machine
    # ... but the data are looked for where the runs found them, then in the usual places
    where = (res.config.get("problem", {}).get("options") or {}).get("data_dir")
    try:
        n_params = int(make_problem(problem, dtype=dtype, **options, **(
            {"data_dir": where} if where else {})).model.n_params)
    except DataNotFoundError as exc:
        raise CalibrationError(f"the data set of {problem} is needed for the model's size: "
                               f"{exc}") from None
    cores = int(res.machine.get("usable_cores") or res.machine.get("logical_cores") or 0)
    if cores < 1:
        raise CalibrationError(f"machine.json of {folder.name} does not give the core count "
                               "(usable_cores / logical_cores)")
    if costs is None:
        costs = measure_costs(n_params, dtype)
        costs_source = (f"micro-benchmark on {_hostname()} at calibration time; read/update "
                        "are not separable from the records")
    else:
        costs = dict(costs)
        costs_source = str(costs.pop("source", "given"))
    cal_costs = {k: float(costs[k]) for k in ("read_per_param", "update_per_param",
                                               "fused_per_param", "cas_cost")}
    head = {
        "format": FORMAT,
        "version": VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "stalesgd": _version(),
        "source": {"folder": folder.resolve().name, "run_ids": sorted(sel["run_id"]),
                   "skipped_run_ids": skipped,
                   "max_workers": None if max_workers is None else int(max_workers),
                   "disturbed_runs": disturbed,
                   "left_out_unsteady": unsteady_out,
                   "runs_on_cpus_apart": sorted(str(r["run_id"]) for _, r in sel.iterrows()
                                                if placement_note(r)),
                   "monitor_core_share": {rid: share for rid, share in zip(
                       sel["run_id"].astype(str), (monitor_share(r) for _, r in sel.iterrows()),
                       strict=True) if share >= MONITOR_FLAG}},
        "machine": {k: res.machine.get(k) for k in MACHINE_FIELDS},
        "problem": {"name": problem, "batch": batch, "dtype": dtype, "n_params": n_params,
                    "options": options, "sparse": _sparse_coords(sel) is not None},
        "cores": cores,
        **cal_costs,
        "costs_source": costs_source,
        "cas_source": costs.get("cas_source", costs_source),
    }
    if engine == "ray":
        return _calibrate_servers(res, sel, head, n_params)

    configs, pooled, handovers = [], [], []
    fits: list[tuple[int, dict[str, Any]]] = []  # Hogwild! writes to fit once the slice is known
    # running time and time slices between descheduled gaps: lock runs / the others
    stretches = {True: np.zeros(2), False: np.zeros(2)}
    hogwild_write: tuple[float, int] | None = None  # from the most workers on own cores
    for alg, workers in sorted({(r.algorithm, int(r.workers)) for r in sel.itertuples()}):
        rows = sel[(sel["algorithm"] == alg) & (sel["workers"] == workers)]
        ids = sorted(rows["run_id"])
        entry, samples, ran_slices, hand, fit = _configuration(
            res, ids, alg, workers, cores, n_params, cal_costs,
            write_hint=hogwild_write if alg == "hogwild" else None,
            coords=_sparse_coords(rows))
        if fit is not None and not entry["oversubscribed"]:  # no scheduler: no slice needed
            samples = _fit_write(entry, fit, DEFAULT_TIME_SLICE)
        elif fit is not None:
            fits.append((len(configs), fit))
        if alg == "hogwild" and not entry["oversubscribed"] and "hogwild_write_s" in entry:
            hogwild_write = (float(entry["hogwild_write_s"]), workers)
        configs.append(entry)
        pooled.append(samples)
        stretches[alg == "lock"] += ran_slices
        handovers.extend(hand)
    # The slice: running time per slice between descheduled gaps, from the runs of other
    # algorithms than lock if any were oversubscribed (a lock worker blocked behind a
    # descheduled holder shows a gap of its own too)
    for lock in (False, True):
        ran, slices = stretches[lock]
        if slices > 0 and 0 < ran <= MAX_SLICE * slices:
            time_slice = float(ran / slices)
            runs = "lock runs" if lock else "runs"
            slice_source = (f"measured: running time per slice between descheduled gaps "
                            f"({int(slices)} slices) in oversubscribed {runs}")
            break
    else:
        time_slice = DEFAULT_TIME_SLICE
        slice_source = ("default (no oversubscribed run to measure it in: none, or only runs "
                        "in which no cycle stands out, such as gradients that outlast the "
                        f"slice, or too few gaps for a slice of at most {MAX_SLICE:g} s)")
    for i, fit in fits:  # with the slice the calibrated simulations will use
        pooled[i] = _fit_write(configs[i], fit, time_slice)
    if len(handovers) >= 10:
        handover = float(np.median(handovers))
        handover_source = f"measured: median of {len(handovers)} contended hand-overs"
    else:
        handover = 0.0
        handover_source = "default 0 (too few contended lock hand-overs in the records)"
    data = {
        **head,
        "time_slice": time_slice,
        "time_slice_source": slice_source,
        "effective_cores": _effective_cores(configs, cores),
        "lock_handover": handover,
        "lock_handover_source": handover_source,
        "default_model": "empirical",
        "pooled": fit_compute(np.concatenate(pooled)),
        "configurations": configs,
    }
    return Calibration(_finite(data))


def _engine(table: Any, runs: Sequence[str] | None, folder: str) -> str:
    """The engine whose runs calibrate: that of the ``runs`` named (one engine), else
    ``real`` when the folder has thread-engine runs, else ``ray``."""
    engines = set(table["engine"])
    if runs is not None:
        named = table[table["run_id"].isin(list(runs))]
        missing = sorted(set(runs) - set(named["run_id"]))
        usable = sorted(table["run_id"][table["engine"].isin(["real", "ray"])])
        if missing or not set(named["engine"]) <= {"real", "ray"}:
            bad = missing or sorted(named["run_id"][~named["engine"].isin(["real", "ray"])])
            raise CalibrationError(f"run ids {bad} are not real or ray runs of {folder}; "
                                   f"runs to calibrate from: {usable}")
        if len(set(named["engine"])) > 1:
            raise CalibrationError(f"runs {sorted(runs)} of {folder} mix the thread engine "
                                   "and the distributed engine; calibrate from the runs of one")
        return str(named["engine"].iloc[0])
    return "real" if "real" in engines or "ray" not in engines else "ray"


def _calibrate_servers(res: Any, sel: Any, head: dict[str, Any], n_params: int
                       ) -> Calibration:
    """The calibration of the parameter-server topology from ``ray`` runs (module doc of
    :mod:`stalesgd.analysis.calibrate_ps`); ``head``: the file's keys common to both kinds."""
    cores = int(head["cores"])
    read = head["read_per_param"] * n_params
    update = head["update_per_param"] * n_params
    itemsize = np.dtype(head["problem"]["dtype"]).itemsize
    hog = sel[sel["algorithm"] == "hogwild"]
    counts = sorted({int(k) for k in hog["shards"].dropna()}) if "shards" in hog else []
    if len(counts) > 1:
        raise CalibrationError(
            f"the hogwild runs of {res.path.name} split θ over different numbers of servers "
            f"(shards {counts}); calibrate from the runs of one shard count (--run)")
    shards = counts[0] if counts else 1
    configs, pooled = [], []
    for alg, workers in sorted({(r.algorithm, int(r.workers)) for r in sel.itertuples()}):
        ids = sorted(sel["run_id"][(sel["algorithm"] == alg) & (sel["workers"] == workers)])
        timings: list[tuple[float, float]] = []
        per_worker: list[list[np.ndarray]] = [[] for _ in range(workers)]
        applied, span, taus = 0, 0.0, []
        for rid in ids:
            up = res.updates[res.updates["run_id"] == rid]
            ok = up[~up["dropped"].astype(bool)]
            if len(ok) < 2 or ok["t_pulled"].isna().any():
                raise CalibrationError(f"run {rid} has {len(ok)} updates with pull and push "
                                       "times; need more to calibrate")
            timings.append(row_timings(up["worker"].to_numpy(), up["t_read"].to_numpy(float),
                                       up["t_apply"].to_numpy(float),
                                       up["dropped"].to_numpy(bool)))
            for w, x in enumerate(ps_compute(up, alg, workers, update)):
                per_worker[w].append(x)
            applied += len(ok)
            span += float(ok["t_apply"].max() - up["t_read"].min())
            taus.append(ok["tau"].to_numpy(np.int64))
        pw = [np.concatenate(x) if x else np.zeros(0) for x in per_worker]
        allc = np.concatenate(pw)
        if allc.size == 0:
            raise CalibrationError(f"runs {ids} ({alg}, m={workers}) have too few updates per "
                                   f"worker (need more than {WARMUP_CYCLES + 1})")
        tau = np.concatenate(taus)
        configs.append({"algorithm": alg, "workers": workers, "run_ids": ids,
                        "samples": pw, "pooled": allc, "updates": applied,
                        "updates_per_s": applied / span, "tau": tau,
                        "mean_tau": float(tau.mean()),
                        "row_timings": tuple(float(np.median(x)) for x in zip(*timings,
                                                                               strict=True))})
        pooled.append(allc)
    for c in configs:  # every configuration computes as its algorithm's fewest workers did
        c["compute"] = min((x for x in configs if x["algorithm"] == c["algorithm"]),
                           key=lambda x: x["workers"])["pooled"]
    one_machine = "cluster" not in sel or bool((sel["cluster"].fillna("local") == "local").all())
    network, fits = fit_network(configs, n_params * itemsize, read, update, shards,
                                cores if one_machine else None)
    entries = [{
        "algorithm": c["algorithm"], "workers": c["workers"], "run_ids": c["run_ids"],
        "oversubscribed": False, "effective_cores": c["workers"],
        "updates": c["updates"], "updates_per_s": c["updates_per_s"],
        "mean_tau": c["mean_tau"], "preempted_cycles": 0, "coords_per_update": None,
        "compute": fit_compute(c["pooled"]),
        "per_worker_ns": [_to_ns(_thin(x, MAX_SAMPLES)) for x in c["samples"]],
        **fit} for c, fit in zip(configs, fits, strict=True)]
    data = {
        **head,
        "topology": "ps",
        "network": {**network, "shards": shards,
                    "source": "fitted by timing-only simulation to the measured updates/s and "
                              "cycle timings (analysis/calibrate_ps.py)"},
        "time_slice": DEFAULT_TIME_SLICE,
        "time_slice_source": "default (the distributed engine's records do not show it)",
        "effective_cores": cores,
        "lock_handover": 0.0,
        "lock_handover_source": "none (parameter servers)",
        "default_model": "empirical",
        "pooled": fit_compute(np.concatenate(pooled)),
        "configurations": entries,
    }
    return Calibration(_finite(data))


def _effective_cores(configs: list[dict[str, Any]], cores: int) -> int:
    """Cores the runs actually got: the most any multi-worker configuration used (other load
    on the machine can leave fewer than ``machine.json`` reports); all cores without one."""
    multi = [c["effective_cores"] for c in configs if c["workers"] > 1]
    return max(multi) if multi else cores


def _sparse_coords(runs: Any) -> float | None:
    """The mean coordinates an update of these sparse runs wrote (None: dense runs)."""
    if "sparse" not in runs or not runs["sparse"].fillna(False).astype(bool).all():
        return None
    coords = runs["coords_per_update"].to_numpy(np.float64)
    return float(np.nanmean(coords)) if np.isfinite(coords).any() else None


def _configuration(res, ids: list[str], alg: str, workers: int, cores: int, n_params: int,
                   cal: dict[str, float], write_hint: tuple[float, int] | None = None,
                   coords: float | None = None):
    """One configuration's entry, its pooled compute samples, the running time and slices
    between its workers' descheduled gaps (:func:`_stretches`), its hand-overs, and what
    :func:`_fit_write` needs to fit Hogwild!'s write time by simulation (or None).
    ``write_hint``: (Hogwild! write time, its workers) from a configuration on its own
    cores, for an oversubscribed one;
    ``coords``: the coordinates an update of these sparse runs wrote (None: dense)."""
    costs = sim_timing_costs(alg, n_params, cal, coords)
    per_worker: list[list[np.ndarray]] = [[] for _ in range(workers)]
    ran = slices = 0.0
    handovers: list[float] = []
    left_out = 0
    n_applied = 0
    span = 0.0
    taus = []
    effs: list[float] = []
    short_cycles: list[np.ndarray] = []  # cycles without a descheduled gap, and their τ
    short_taus: list[np.ndarray] = []
    window_ok = True  # whether the short cycles' τ measure a window (no interleaved run)
    failed = dropped = tries = 0.0
    over = False
    for rid in ids:
        up = res.updates[res.updates["run_id"] == rid]
        dropped_mask = up["dropped"].to_numpy(bool)
        applied = up[~dropped_mask]
        if len(applied) < 2:
            raise CalibrationError(f"run {rid} has {len(applied)} updates; need more to "
                                   "calibrate")
        run_span = float(applied["t_apply"].max() - up["t_read"].min())
        n_applied += len(applied)
        span += run_span
        taus.append(applied["tau"].to_numpy(np.int64))
        att = up["attempts"].to_numpy(np.int64)
        failed += float((att[~dropped_mask] - 1).sum() + att[dropped_mask].sum())
        dropped += float(dropped_mask.sum())
        tries += float(att[~dropped_mask].sum())
        cycles = worker_cycles(up, workers)
        cyc = [(x["cycle"][WARMUP_CYCLES:], x["attempts"][WARMUP_CYCLES:]) for x in cycles]
        longs = [c > _long_threshold(c) for c, _ in cyc]
        short = np.concatenate([c[~lg] for (c, _), lg in zip(cyc, longs, strict=True)])
        short_cycles.append(short)
        short_taus.extend(x["tau"][WARMUP_CYCLES:][~lg] for x, lg in zip(cycles, longs,
                                                                         strict=True))
        # effective parallelism: CPU time of the undisturbed cycles per second of the run
        eff = len(up) * float(short.mean()) / run_span if short.size and run_span > 0 else 1.0
        effs.append(eff)
        eff_cores = _cores_used(eff, cores)
        run_over = workers > eff_cores
        over = over or run_over
        # core time that other processes took from the run's cores: kept as long compute
        # samples (a foreign process holding a core), the other gaps left to the scheduler
        foreign = max(eff_cores * run_span - len(up) * float(short.mean()), 0.0) \
            if run_over and short.size else 0.0
        if foreign < EDGE_SLACK * eff_cores * run_span:  # the run's edges, not a process
            foreign = 0.0
        keep_long = _foreign_gaps(cyc, longs, foreign)
        # Undisturbed cycles that add up to more core time than the cores had still hold
        # waits: a gradient much longer than the scheduler's slice is interrupted in every
        # cycle, evenly, so no cycle stands out as descheduled.  Their share of the cores is
        # what a cycle's own work took (2 % of slack for the edges of the run).
        interleaved = eff_cores / eff if run_over and eff > (1 + EDGE_SLACK) * eff_cores else 1.0
        if interleaved != 1.0:  # its "short" cycles hold waits too: their τ is no window's
            window_ok = False
        for w, ((c, a), long) in enumerate(zip(cyc, longs, strict=True)):
            if c.size == 0:
                continue
            if run_over:
                if interleaved == 1.0:  # (else most gaps hide inside cycles: no estimate)
                    r, n = _stretches(c, long)  # (a gap kept as compute still ended a slice)
                    ran, slices = ran + r, slices + n
                long = long & ~keep_long[w]
                left_out += int(long.sum())
                c, a = c[~long] * interleaved, a[~long]
            comp = np.maximum(c - get_algorithm(alg).cycle.overhead(a, costs), 0.0)
            per_worker[w].append(comp)
        if alg == "lock" and workers > 1 and not run_over:
            handovers.extend(_handovers(up))
    pw = [np.concatenate(x) if x else np.zeros(0) for x in per_worker]
    if not any(x.size for x in pw):
        raise CalibrationError(f"runs {ids} ({alg}, m={workers}) have too few updates per "
                               f"worker (need more than {WARMUP_CYCLES + 1})")
    allc = np.concatenate(pw)
    tau = np.concatenate(taus)
    write = None
    write_source = ""
    fit: dict[str, Any] | None = None  # what _fit_write needs, if the write is to be fitted
    if alg == "hogwild" and over and write_hint is not None:
        # time slicing decides τ here; the cores run `cores` workers at a time, which write
        # into θ as fast (or as slowly) as the same number of workers on their own cores
        write = max(write_hint[0], costs["update"])
        write_source = f"from the m = {write_hint[1]} configuration on its own cores"
        pw = _less_write(pw, write, costs)
        allc = np.concatenate(pw)
    elif alg == "hogwild" and workers > 1 and tau.size:
        # The records bracket gradient and element-wise write together (no timestamp at the
        # claim), and under contention the write slows far beyond its micro-measured cost.
        # With n equal workers running at once and independent phases, the other n − 1
        # workers' claims fall into a worker's read→claim window in proportion to its share
        # of the cycle: E[τ] ≈ (n − 1)·share.  The rest of the cycle is the write.  On its
        # own cores n = m, from every update; oversubscribed (no configuration on its own
        # cores to take the write from) n = the cores the run used, from the updates of the
        # cycles without a descheduled gap (a gap's τ counts the other workers' slices).
        running = workers if not over else _cores_used(float(np.mean(effs)), cores)
        window = tau if not over else np.concatenate(short_taus)
        raw = np.concatenate(short_cycles)
        if running > 1 and (window_ok or not over) and window.size and raw.size:
            cycle = (float(allc.mean()) + costs["update"] + costs["cas"] if not over
                     else float(raw.mean()))
            share = float(np.clip(window.mean() / (running - 1), 0.05, 1.0))
            write_source = (f"from the measured E[τ] = {window.mean():.3g} of "
                            + ("every update" if not over else
                               f"the cycles without a descheduled gap, {running} workers "
                               "running at once")
                            + f" (window share {share:.3g})")
            if n_applied >= MIN_FIT_UPDATES:
                # the estimate assumes independent phases; the running workers' phases can
                # lock (time slicing, equal cycles), so the share is chosen by simulating this
                # configuration (:func:`_fit_write`; oversubscribed, once the file's time
                # slice is known)
                fit = {"workers": workers, "cores": running, "per_worker": pw, "costs": costs,
                       "cycle": cycle, "tau": tau, "estimate": share, "updates": n_applied,
                       "estimated": write_source}
            else:
                write_source += (f"; not fitted by simulation: {n_applied} updates, fewer "
                                 f"than {MIN_FIT_UPDATES}")
            write = _write_time(share, cycle, costs)
            pw = _less_write(pw, write, costs)
            allc = np.concatenate(pw)
    entry: dict[str, Any] = {
        "algorithm": alg,
        "workers": workers,
        "run_ids": ids,
        "oversubscribed": over,
        "effective_parallelism": float(np.mean(effs)),
        "effective_cores": _cores_used(float(np.mean(effs)), cores),
        "updates": int(n_applied),
        "updates_per_s": n_applied / span if span > 0 else math.nan,
        "mean_tau": float(tau.mean()) if tau.size else math.nan,
        "preempted_cycles": left_out,
        "coords_per_update": coords,
        "compute": fit_compute(allc),
        "per_worker_ns": [_to_ns(_thin(x, MAX_SAMPLES)) for x in pw],
    }
    if write is not None:
        entry["hogwild_write_s"] = write
        entry["hogwild_write_source"] = write_source
    if alg == "leashed":
        entry["leashed"] = {"failed_per_update": failed / max(n_applied, 1),
                            "dropped_share": dropped / max(n_applied + dropped, 1),
                            "tries_per_update": tries / max(n_applied, 1)}
    return entry, allc, (ran, slices), handovers, fit


def _write_time(share: float, cycle: float, costs: dict[str, float]) -> float:
    """Hogwild!'s write time when the read→claim window is ``share`` of a ``cycle`` (never
    below the micro-measured update)."""
    return max((1.0 - share) * cycle, costs["update"])


def _less_write(per_worker: list[np.ndarray], write: float, costs: dict[str, float]
                ) -> list[np.ndarray]:
    """Compute samples with the part of a Hogwild! ``write`` beyond the micro-measured update
    taken out (the records bracket both; never below 0)."""
    extra = write - costs["update"]
    return [np.maximum(x - extra, 0.0) for x in per_worker]


def _fit_write(entry: dict[str, Any], fit: dict[str, Any], time_slice: float) -> np.ndarray:
    """Fit a Hogwild! configuration's write time by simulation
    (:func:`_fit_window_share`) with ``time_slice`` (the file's; any, on its own cores);
    update its ``entry`` (write,
    its source, compute samples and fit) and return its pooled compute samples."""
    costs = fit["costs"]
    share, tv = _fit_window_share(fit["workers"], fit["cores"], fit["per_worker"], costs,
                                  fit["cycle"], time_slice, fit["tau"], fit["estimate"],
                                  fit["updates"])
    write = _write_time(share, fit["cycle"], costs)
    pw = _less_write(fit["per_worker"], write, costs)
    allc = np.concatenate(pw)
    entry["hogwild_write_s"] = write
    entry["hogwild_write_source"] = (f"fitted by simulation to the measured PDF(τ): window "
                                     f"share {share:.3g} (TV {tv:.3g}); estimated "
                                     f"{fit['estimated']}")
    entry["compute"] = fit_compute(allc)
    entry["per_worker_ns"] = [_to_ns(_thin(x, MAX_SAMPLES)) for x in pw]
    return allc


def _fit_window_share(workers: int, cores: int, per_worker: list[np.ndarray],
                      costs: dict[str, float], cycle: float, time_slice: float,
                      tau: np.ndarray, estimate: float, updates: int) -> tuple[float, float]:
    """Of ``estimate`` and :data:`WINDOW_SHARES` (then halfway to the best one's neighbours),
    the read→claim window share whose timing-only simulation of this Hogwild!
    configuration (its workers' compute samples less the write, ``cores`` cores,
    ``time_slice``) gives the PDF(τ) nearest to the measured ``tau``, and that total
    variation (NaN, with the estimate, if no share's simulation moved).  Measured on real
    runs: E[τ] of the cycles without a gap gave the share of softmax runs (τ = 0 in half of
    them), but too small a share for the MLP at batch 128 (simulated τ = 0 twice as often
    as measured)."""
    from stalesgd.sim.engine import simulate_timing
    from stalesgd.sim.simulation import SimulationStalled
    from stalesgd.sim.timing import Empirical

    pooled = np.concatenate([x for x in per_worker if x.size])
    measured = histogram(np.asarray(tau))

    def tv_of(share: float) -> float:
        comp = [Empirical(x) for x in _less_write(
            [x if x.size else pooled for x in per_worker], _write_time(share, cycle, costs),
            costs)]
        try:
            made = simulate_timing("hogwild", workers, cores=cores, compute=comp,
                                   read=costs["read"], update=_write_time(share, cycle, costs),
                                   cas_cost=costs["cas"],
                                   updates=min(int(updates), WINDOW_FIT_UPDATES), seed=0,
                                   time_slice=time_slice)
        except SimulationStalled:  # a cycle of no time at all: not this share
            return math.inf
        if made.interrupted:  # Ctrl-C: the simulation kept its rows, the fit must stop
            raise KeyboardInterrupt
        return distances(histogram(np.asarray(made.updates["tau"])), measured).tv

    grid = sorted({float(estimate), *WINDOW_SHARES})
    tvs = [tv_of(share) for share in grid]
    i = int(np.argmin(tvs))
    best = (tvs[i], grid[i])
    # one step finer: halfway to each neighbour of the best
    for j in (i - 1, i + 1):
        if 0 <= j < len(grid):
            share = (grid[i] + grid[j]) / 2
            tv = tv_of(share)
            if tv < best[0]:
                best = (tv, share)
    if not math.isfinite(best[0]):  # no share gave a simulation that moves: keep the estimate
        return float(estimate), math.nan
    return best[1], best[0]


def _cores_used(eff: float, cores: int) -> int:
    """Whole cores a run with effective parallelism ``eff`` used: ``eff`` rounded up unless
    within 0.15 of the integer below (timing noise), between 1 and the machine's ``cores``."""
    return min(int(cores), max(1, math.ceil(eff - 0.15)))


def _foreign_gaps(cyc, longs, foreign: float) -> list[np.ndarray]:
    """Per worker, which long cycles to keep as compute (chosen in a fixed random order) so
    that the samples' mean carries the ``foreign`` seconds of core time spread over every
    cycle: their excess over the worker's median short cycle (the median of all its cycles
    is a long one when most are descheduled) adds up to ``foreign`` times the share of all
    cycles the samples keep.  The other long cycles are left out (the
    simulator's scheduler adds those gaps), so with ``foreign`` kept whole the long ones
    made up too large a part of the samples (a fifth of them, at half the measured rate, in
    a run of 8 workers on 2 cores where half the cycles were descheduled)."""
    keep = [np.zeros(lg.shape, bool) for lg in longs]
    if foreign <= 0:
        return keep
    cycles = sum(lg.size for lg in longs)
    short = sum(int((~lg).sum()) for lg in longs)
    typical = [float(np.median(c[~lg])) if (~lg).any() else math.nan
               for (c, _), lg in zip(cyc, longs, strict=True)]
    fallback = float(np.nanmedian(typical)) if not np.isnan(typical).all() else 0.0
    cand = [(w, i, float(c[i] - (fallback if math.isnan(typical[w]) else typical[w])))
            for w, ((c, _), lg) in enumerate(zip(cyc, longs, strict=True))
            for i in np.flatnonzero(lg)]
    total = 0.0
    kept = 0
    for j in np.random.default_rng(0).permutation(len(cand)):
        if total >= foreign * (short + kept) / cycles:
            break
        w, i, excess = cand[j]
        keep[w][i] = True
        total += excess
        kept += 1
    return keep


def _disturbed(res: Any, sel: Any) -> dict[str, dict[str, Any]]:
    """Per run to calibrate from that did not have a steady machine, what disturbed it, in
    words (``why``, :func:`~stalesgd.analysis.steadiness.disturbances`) and in numbers: its
    cycles are not those of this code alone on one steady machine, which a reader of the
    calibration must know."""
    out: dict[str, dict[str, Any]] = {}
    slow = slow_shares(sel, res.updates, key="run_id")
    for share, (_, row) in zip(slow, sel.iterrows(), strict=True):
        found = disturbances({**row.to_dict(), "slow_share": share})
        if found:
            out[str(row["run_id"])] = {
                "why": found, "slow_share": float(share),
                **{k: cell_number(row.get(k)) for k in ("other_cpu_share", "steal_share",
                                                        "record_waits")}}
    return out


def _leave_out_unsteady(sel: Any, disturbed: dict[str, Any]) -> tuple[Any, list[str]]:
    """``sel`` without the unsteady runs of the configurations (algorithm, workers) that
    also have a steady one, and the run ids left out."""
    out: list[str] = []
    for _, rows in sel.groupby(["algorithm", "workers"]):
        ids = [str(r) for r in rows["run_id"]]
        shaky = [r for r in ids if r in disturbed]
        if len(shaky) < len(ids):
            out += shaky
    return sel[~sel["run_id"].astype(str).isin(out)], sorted(out)


def _handovers(up) -> list[float]:
    """Contended lock hand-overs: a worker's ``t_read`` shortly after another worker's
    ``t_apply`` (the releaser stamps ``t_apply`` just before releasing)."""
    tr = up[["t_read", "worker"]].to_numpy()
    ta = up[["t_apply", "worker"]].to_numpy()
    ev = np.concatenate([np.column_stack([tr, np.zeros(len(tr))]),
                         np.column_stack([ta, np.ones(len(ta))])])
    ev = ev[np.argsort(ev[:, 0], kind="stable")]
    out = []
    for i in range(1, len(ev)):
        if ev[i, 2] == 0 and ev[i - 1, 2] == 1 and ev[i, 1] != ev[i - 1, 1]:
            d = ev[i, 0] - ev[i - 1, 0]
            if 0 <= d < 2e-6:
                out.append(float(d))
    return out


def _problem_options(config: dict[str, Any]) -> dict[str, Any]:
    opts = dict(config.get("problem", {}).get("options", {}) or {})
    opts.pop("data_dir", None)
    return opts


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _version() -> str:
    from stalesgd import __version__

    return __version__


def _finite(value: Any) -> Any:
    """NaN/inf to None, recursively (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
