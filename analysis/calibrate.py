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
configuration uses it as the update time).  Oversubscribed configurations (m > cores) give
no such estimate (time slicing, not the window share, decides τ there); as only ``cores``
workers write at once, they take the write time of the folder's hogwild configuration with
the most workers on their own cores, when there is one (``hogwild_write_source`` says so).

Read (copy) and update (apply) costs cannot be separated from the records: the timestamps
bracket read, compute and update together.  They come from a **micro-measurement** of the
same loops on this machine at calibration time (copy, apply, fused copy-apply, one
compare-and-swap), recorded in the file with the host name.  Lock hand-over is estimated
from the records (a different worker's ``t_read`` right after a ``t_apply``); the scheduler
time slice from oversubscribed runs (the length of a worker's uninterrupted bursts between
descheduled gaps), else the simulator's default.  Cores come from ``machine.json``.

Pooling: one compute model **per configuration** (algorithm, workers) of the folder, with
per-worker samples, plus a **pooled** model over all configurations.  A simulation of a
measured configuration uses its own model (workers beyond the measured ones resample that
configuration's pooled samples); any other configuration uses the pooled model and is
labelled a prediction.  In oversubscribed runs (workers > cores) cycles that include a
descheduled gap (longer than ``max(10 × median, median + 200 µs)``) are left out, because
the simulator's scheduler adds those delays itself; in runs with workers ≤ cores every cycle
is kept (including interference by other processes, which the simulator cannot model).

Other load: on a shared machine the workers may get fewer cores than ``machine.json`` lists.
Each run's *effective parallelism* (CPU time of its undisturbed cycles per second) gives the
whole cores it used (``effective_cores``: rounded up unless within 0.15 of the integer below),
which is what "oversubscribed" is judged against and what a calibrated simulation uses.  The
core time other processes took within those cores is put back as long compute samples
(randomly chosen descheduled cycles, until their excess adds up to it): in the simulator a
worker then holds a core while a foreign process would have, so throughput and the partial
overlap of workers match.

The file is JSON (:data:`FORMAT`, :data:`VERSION`); :func:`load_calibration` validates it and
:func:`check_compatible` checks it against a run (problem, batch, dtype).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stalesgd.algorithms import ALGORITHMS, get_algorithm
from stalesgd.records import load_results

__all__ = [
    "FORMAT",
    "VERSION",
    "CalibrationError",
    "Calibration",
    "calibrate",
    "check_compatible",
    "fit_compute",
    "load_calibration",
    "measure_costs",
    "worker_cycles",
]

FORMAT = "stalesgd-calibration"
VERSION = 1
#: algorithms whose records can be calibrated (``sync`` logs only worker 0's rounds)
CALIBRATABLE = tuple(a.name for a in ALGORITHMS.values() if a.calibratable)
#: the simulator's default scheduler slice (seconds), used when no run was oversubscribed
DEFAULT_TIME_SLICE = 4e-3
#: cycles left out at the start of every worker (compilation is done, but caches warm up)
WARMUP_CYCLES = 5
#: most compute samples stored per worker and for a pooled model (evenly thinned)
MAX_SAMPLES = 20000
MACHINE_FIELDS = ("hostname", "cpu_model", "machine", "logical_cores", "physical_cores",
                  "usable_cores", "os")


class CalibrationError(ValueError):
    """A results folder that cannot be calibrated, or a bad/incompatible calibration file."""


# ---------------------------------------------------------------------------------------------
# Micro-measurement of the per-parameter kernels
# ---------------------------------------------------------------------------------------------


def _kernels():
    from numba import njit

    @njit(nogil=True)
    def copy_loop(dst, src, reps):
        for _ in range(reps):
            for j in range(src.shape[0]):
                dst[j] = src[j]

    @njit(nogil=True)
    def apply_loop(theta, grad, eta, reps):
        for _ in range(reps):
            for j in range(theta.shape[0]):
                theta[j] -= eta * grad[j]

    @njit(nogil=True)
    def fused_loop(dst, src, grad, eta, reps):
        for _ in range(reps):
            for j in range(src.shape[0]):
                dst[j] = src[j] - eta * grad[j]

    return copy_loop, apply_loop, fused_loop


def _time_per_call(fn, args: tuple, budget: float = 0.004, repeats: int = 5) -> float:
    """Median seconds per repetition of ``fn(*args, reps)``, each timing ~``budget`` seconds."""
    fn(*args, 1)  # compile
    reps = 16
    while True:
        t = time.perf_counter()
        fn(*args, reps)
        dt = time.perf_counter() - t
        if dt >= budget or reps >= 1 << 24:
            break
        reps *= 4 if dt < budget / 8 else 2
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args, reps)
        times.append((time.perf_counter() - t) / reps)
    return float(np.median(times))


def measure_costs(n_params: int, dtype: str = "float64") -> dict[str, Any]:
    """Per-parameter copy, apply and fused copy-apply costs (seconds) and one CAS (seconds),
    measured on this machine with the engines' loops (single thread, warm caches)."""
    if int(n_params) < 1:
        raise CalibrationError(f"n_params {n_params!r} must be >= 1")
    n = int(n_params)
    rng = np.random.default_rng(0)
    src = rng.standard_normal(n).astype(dtype)
    dst = np.empty_like(src)
    grad = rng.standard_normal(n).astype(dtype) * 1e-6
    copy_loop, apply_loop, fused_loop = _kernels()
    copy = _time_per_call(copy_loop, (dst, src))
    apply = _time_per_call(apply_loop, (dst, grad, 1e-3))
    fused = _time_per_call(fused_loop, (dst, src, grad, 1e-3))
    cas, cas_source = _measure_cas()
    return {
        "read_per_param": copy / n,
        "update_per_param": apply / n,
        "fused_per_param": fused / n,
        "cas_cost": cas,
        "cas_source": cas_source,
        "n_params": n,
        "dtype": str(dtype),
    }


def _measure_cas() -> tuple[float, str]:
    """Seconds per uncontended compare-and-swap (the atomics the engines use), or 0."""
    try:
        from numba import njit
        from stalesgd.real.atomics import atomic_cas
    except ImportError:  # pragma: no cover - real engine always present in this package
        return 0.0, "default 0 (atomics not importable)"

    @njit(nogil=True)
    def cas_loop(arr, reps):
        for r in range(reps):
            atomic_cas(arr, 0, r, r + 1)

    slot = np.zeros(8, dtype=np.int64)
    return _time_per_call(cas_loop, (slot,)), "micro-benchmark (uncontended)"


# ---------------------------------------------------------------------------------------------
# From records to compute samples
# ---------------------------------------------------------------------------------------------


def worker_cycles(updates, workers: int) -> list[dict[str, np.ndarray]]:
    """Per worker, in ``t_read`` order: ``cycle`` (next ``t_read`` − this ``t_read``),
    ``gap`` (next ``t_read`` − this ``t_apply``) and ``attempts`` of the update that the
    cycle starts with (dropped gradients included, as they use the worker's time too)."""
    out = []
    for w in range(int(workers)):
        rows = updates[updates["worker"] == w].sort_values("t_read")
        tr = rows["t_read"].to_numpy(np.float64)
        ta = rows["t_apply"].to_numpy(np.float64)
        att = rows["attempts"].to_numpy(np.int64) if "attempts" in rows else np.ones(tr.size)
        out.append({"cycle": np.diff(tr), "gap": tr[1:] - ta[:-1], "attempts": att[:-1],
                    "t_read": tr[:-1]})
    return out


def sim_timing_costs(algorithm: str, n_params: int, cal: dict[str, Any]) -> dict[str, float]:
    """Read, update and CAS seconds per update that a calibrated simulation uses for
    ``algorithm`` (:meth:`stalesgd.algorithms.Algorithm.sim_costs` of the measured
    per-parameter costs); the same numbers are subtracted from the measured cycles."""
    return get_algorithm(algorithm).sim_costs(n_params, cal["read_per_param"],
                                              cal["update_per_param"], cal["fused_per_param"],
                                              cal["cas_cost"])


def _long_threshold(cycles: np.ndarray) -> float:
    med = float(np.median(cycles)) if cycles.size else 0.0
    return max(10.0 * med, med + 200e-6)


def _bursts(cycles: np.ndarray, long: np.ndarray) -> np.ndarray:
    """Lengths of runs of short cycles between two long (descheduled) ones."""
    idx = np.flatnonzero(long)
    if idx.size < 2:
        return np.zeros(0)
    csum = np.concatenate([[0.0], np.cumsum(np.where(long, 0.0, cycles))])
    return csum[idx[1:]] - csum[idx[:-1] + 1]


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


@dataclass
class Calibration:
    """A fitted timing model: the JSON document (``data``) and where it came from."""

    data: dict[str, Any]
    path: Path | None = None

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON to ``path`` (parent folders must exist); returns the path."""
        path = Path(path)
        path.write_text(json.dumps(self.data, indent=1, allow_nan=False))
        self.path = path
        return path

    def configuration(self, algorithm: str, workers: int) -> dict[str, Any] | None:
        """The measured configuration entry for (algorithm, workers), or None."""
        for c in self.data["configurations"]:
            if c["algorithm"] == algorithm and int(c["workers"]) == int(workers):
                return c
        return None

    def summary_text(self) -> str:
        """A short human-readable summary of the fitted model."""
        d = self.data
        us = 1e6
        p = d["problem"]
        lines = [
            f"calibration of {p['name']} (batch {p['batch']}, {p['dtype']}, {p['n_params']} "
            f"params) from runs {', '.join(d['source']['run_ids'])} of {d['source']['folder']}",
            f"machine: {d['machine'].get('hostname')} ({d['machine'].get('cpu_model')}), "
            f"cores = {d['cores']}, time slice = {d['time_slice'] * 1e3:.3g} ms "
            f"({d['time_slice_source']})",
            f"per parameter: read {d['read_per_param'] * 1e9:.3g} ns, update "
            f"{d['update_per_param'] * 1e9:.3g} ns, fused copy-apply "
            f"{d['fused_per_param'] * 1e9:.3g} ns ({d['costs_source']})",
            f"cas {d['cas_cost'] * 1e9:.3g} ns; lock hand-over {d['lock_handover'] * 1e9:.3g} ns "
            f"({d['lock_handover_source']})",
        ]
        pooled = d["pooled"]
        f = pooled["fit"]
        lines.append(f"compute, pooled: mean {pooled['mean'] * us:.3g} us, cv {pooled['cv']:.3g},"
                     f" n = {pooled['n']}; best fit {f['kind']}:{f['mean'] * us:.3g}us:"
                     f"{f['cv']:.3g}")
        for c in d["configurations"]:
            m = c["compute"]
            extra = ""
            if c.get("leashed"):
                extra = f", failed publishes/update {c['leashed']['failed_per_update']:.3g}"
            lines.append(
                f"  {c['algorithm']:8s} m={c['workers']:<3d} compute mean {m['mean'] * us:.3g} us "
                f"cv {m['cv']:.3g} ({m['fit']['kind']}), measured {c['updates_per_s']:.4g} "
                f"updates/s, mean tau {c['mean_tau']:.3g}"
                + (f", {c['preempted_cycles']} descheduled cycles left out"
                   if c["oversubscribed"] else "") + extra)
        return "\n".join(lines)


def calibrate(folder: str | Path, *, runs: Sequence[str] | None = None,
              costs: dict[str, Any] | None = None) -> Calibration:
    """Fit the simulator's timing model to the real runs of a results folder.

    ``runs`` restricts to those run ids (default: every real run of a calibratable
    algorithm); all selected runs must share problem, batch and dtype.  ``costs`` replaces
    the micro-measurement of :func:`measure_costs` (tests; other machines).
    """
    res = load_results(folder)
    folder = Path(folder)
    table = res.runs
    if table.empty:
        raise CalibrationError(f"results folder {folder.name} holds no runs")
    sel = table[table["engine"] == "real"]
    if runs is not None:
        missing = sorted(set(runs) - set(sel["run_id"]))
        if missing:
            raise CalibrationError(f"run ids {missing} are not real runs of {folder.name}; "
                                   f"real runs: {sorted(sel['run_id'])}")
        sel = sel[sel["run_id"].isin(list(runs))]
    skipped = sorted(set(sel["run_id"][~sel["algorithm"].isin(CALIBRATABLE)]))
    sel = sel[sel["algorithm"].isin(CALIBRATABLE)]
    if sel.empty:
        raise CalibrationError(
            f"results folder {folder.name} has no real run of {', '.join(CALIBRATABLE)} to "
            f"calibrate from (engines: {sorted(set(table['engine']))}, algorithms: "
            f"{sorted(set(table['algorithm']))})")
    keys = sorted({(r.problem, int(r.batch), str(r.dtype)) for r in sel.itertuples()})
    if len(keys) > 1:
        raise CalibrationError(
            f"results folder {folder.name} mixes problems {keys}; choose the runs of one "
            "(problem, batch, dtype) with runs=[...] / --run")
    problem, batch, dtype = keys[0]
    from stalesgd.problems.registry import make_problem

    options = _problem_options(res.config)
    n_params = int(make_problem(problem, dtype=dtype, **options).model.n_params)
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

    configs, pooled, handovers = [], [], []
    bursts: dict[bool, list[float]] = {True: [], False: []}  # lock runs / the others
    gap_estimates: dict[bool, list[float]] = {True: [], False: []}
    hogwild_write: tuple[float, int] | None = None  # from the most workers on own cores
    for alg, workers in sorted({(r.algorithm, int(r.workers)) for r in sel.itertuples()}):
        ids = sorted(sel[(sel["algorithm"] == alg) & (sel["workers"] == workers)]["run_id"])
        entry, samples, burst, hand, gaps = _configuration(
            res, ids, alg, workers, cores, n_params, cal_costs,
            write_hint=hogwild_write if alg == "hogwild" else None)
        if alg == "hogwild" and not entry["oversubscribed"] and "hogwild_write_s" in entry:
            hogwild_write = (float(entry["hogwild_write_s"]), workers)
        configs.append(entry)
        pooled.append(samples)
        bursts[alg == "lock"].extend(burst)
        handovers.extend(hand)
        gap_estimates[alg == "lock"].extend(gaps)
    # A worker's uninterrupted burst between two descheduled gaps is one time slice; lock
    # workers' bursts also end when they block on the lock, so for lock-only folders the
    # slice comes from the gaps of runs with one worker more than cores (a preempted worker
    # then waits one slice for its turn).
    if bursts[False]:
        time_slice = float(np.median(bursts[False]))
        slice_source = (f"measured: median of {len(bursts[False])} uninterrupted bursts in "
                        "oversubscribed runs")
    elif gap_estimates[True]:
        time_slice = float(np.median(gap_estimates[True]))
        slice_source = (f"measured: median of {len(gap_estimates[True])} descheduled gaps "
                        "in lock runs with one worker more than cores")
    else:
        time_slice = DEFAULT_TIME_SLICE
        slice_source = "default (no oversubscribed run to measure it)"
    if len(handovers) >= 10:
        handover = float(np.median(handovers))
        handover_source = f"measured: median of {len(handovers)} contended hand-overs"
    else:
        handover = 0.0
        handover_source = "default 0 (too few contended lock hand-overs in the records)"
    data = {
        "format": FORMAT,
        "version": VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "stalesgd": _version(),
        "source": {"folder": folder.resolve().name, "run_ids": sorted(sel["run_id"]),
                   "skipped_run_ids": skipped},
        "machine": {k: res.machine.get(k) for k in MACHINE_FIELDS},
        "problem": {"name": problem, "batch": batch, "dtype": dtype, "n_params": n_params,
                    "options": options},
        "cores": cores,
        "time_slice": time_slice,
        "time_slice_source": slice_source,
        "effective_cores": _effective_cores(configs, cores),
        **cal_costs,
        "costs_source": costs_source,
        "cas_source": costs.get("cas_source", costs_source),
        "lock_handover": handover,
        "lock_handover_source": handover_source,
        "default_model": "empirical",
        "pooled": fit_compute(np.concatenate(pooled)),
        "configurations": configs,
    }
    return Calibration(_finite(data))


def _effective_cores(configs: list[dict[str, Any]], cores: int) -> int:
    """Cores the runs actually got: the most any multi-worker configuration used (other load
    on the machine can leave fewer than ``machine.json`` reports); all cores without one."""
    multi = [c["effective_cores"] for c in configs if c["workers"] > 1]
    return max(multi) if multi else cores


def _configuration(res, ids: list[str], alg: str, workers: int, cores: int, n_params: int,
                   cal: dict[str, float], write_hint: tuple[float, int] | None = None):
    """One configuration's entry, its pooled compute samples, bursts, hand-overs, and
    time-slice estimates from the descheduled gaps.  ``write_hint``: (Hogwild! write time,
    its workers) from a configuration on its own cores, for an oversubscribed one."""
    costs = sim_timing_costs(alg, n_params, cal)
    per_worker: list[list[np.ndarray]] = [[] for _ in range(workers)]
    bursts: list[float] = []
    handovers: list[float] = []
    gap_slices: list[float] = []
    left_out = 0
    n_applied = 0
    span = 0.0
    taus = []
    effs: list[float] = []
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
        cyc = [(x["cycle"][WARMUP_CYCLES:], x["attempts"][WARMUP_CYCLES:])
               for x in worker_cycles(up, workers)]
        longs = [c > _long_threshold(c) for c, _ in cyc]
        short = np.concatenate([c[~lg] for (c, _), lg in zip(cyc, longs, strict=True)])
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
        keep_long = _foreign_gaps(cyc, longs, foreign)
        for w, ((c, a), long) in enumerate(zip(cyc, longs, strict=True)):
            if c.size == 0:
                continue
            if run_over:
                long = long & ~keep_long[w]
                left_out += int(long.sum())
                bursts.extend(_bursts(c, long).tolist())
                if workers == eff_cores + 1:  # with more, blocked lock waiters skew it
                    med = float(np.median(c))
                    gap_slices.extend((c[long] - med).tolist())
                c, a = c[~long], a[~long]
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
    if alg == "hogwild" and over and write_hint is not None:
        # time slicing decides τ here; the cores run `cores` workers at a time, which write
        # into θ as fast (or as slowly) as the same number of workers on their own cores
        write = max(write_hint[0], costs["update"])
        write_source = f"from the m = {write_hint[1]} configuration on its own cores"
        extra = write - costs["update"]
        pw = [np.maximum(x - extra, 0.0) for x in pw]
        allc = np.concatenate(pw)
    elif alg == "hogwild" and workers > 1 and not over and tau.size:
        # The records bracket gradient and element-wise write together (no timestamp at the
        # claim), and under contention the write slows far beyond its micro-measured cost.
        # With m equal workers on their own cores and independent phases, the other m − 1
        # workers' claims fall into a worker's read→claim window in proportion to its share
        # of the cycle: E[τ] ≈ (m − 1)·share.  The rest of the cycle is the write.
        cycle = float(allc.mean()) + costs["update"] + costs["cas"]
        share = float(np.clip(tau.mean() / (workers - 1), 0.05, 1.0))
        write = max((1.0 - share) * cycle, costs["update"])
        write_source = f"from the measured E[τ] = {tau.mean():.3g} (window share {share:.3g})"
        extra = write - costs["update"]
        pw = [np.maximum(x - extra, 0.0) for x in pw]
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
    return entry, allc, bursts, handovers, gap_slices


def _cores_used(eff: float, cores: int) -> int:
    """Whole cores a run with effective parallelism ``eff`` used: ``eff`` rounded up unless
    within 0.15 of the integer below (timing noise), between 1 and the machine's ``cores``."""
    return min(int(cores), max(1, math.ceil(eff - 0.15)))


def _foreign_gaps(cyc, longs, foreign: float) -> list[np.ndarray]:
    """Per worker, which long cycles to keep as compute so that their excess over the
    worker's median cycle adds up to ``foreign`` seconds (chosen in a fixed random order)."""
    keep = [np.zeros(lg.shape, bool) for lg in longs]
    if foreign <= 0:
        return keep
    cand = [(w, i, float(c[i] - np.median(c))) for w, ((c, _), lg) in
            enumerate(zip(cyc, longs, strict=True)) for i in np.flatnonzero(lg)]
    total = 0.0
    for j in np.random.default_rng(0).permutation(len(cand)):
        if total >= foreign:
            break
        w, i, excess = cand[j]
        keep[w][i] = True
        total += excess
    return keep


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


# ---------------------------------------------------------------------------------------------
# Loading and checking
# ---------------------------------------------------------------------------------------------

_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format": str, "version": int, "source": dict, "machine": dict, "problem": dict,
    "cores": int, "time_slice": (int, float), "read_per_param": (int, float),
    "update_per_param": (int, float), "fused_per_param": (int, float),
    "cas_cost": (int, float), "lock_handover": (int, float), "default_model": str,
    "pooled": dict, "configurations": list,
}


def load_calibration(path: str | Path) -> Calibration:
    """Read and validate a calibration file; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"calibration file {path} does not exist (write one with "
                               "`stalesgd calibrate REAL_DIR`)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"calibration file {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        fmt = data.get("format") if isinstance(data, dict) else None
        raise CalibrationError(f"calibration file {path} is not a stalesgd calibration "
                               f"(format = {fmt!r}, expected {FORMAT!r})")
    if data.get("version") != VERSION:
        raise CalibrationError(f"calibration file {path} has version {data.get('version')!r}; "
                               f"this stalesgd reads version {VERSION} (re-run calibrate)")
    for key, kind in _REQUIRED.items():
        if key not in data:
            raise CalibrationError(f"calibration file {path} lacks the key {key!r}")
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise CalibrationError(f"calibration file {path}: {key} = {data[key]!r} has the "
                                   f"wrong type")
    for key in ("time_slice", "read_per_param", "update_per_param", "fused_per_param",
                "cas_cost", "lock_handover"):
        if not (math.isfinite(data[key]) and data[key] >= 0):
            raise CalibrationError(f"calibration file {path}: {key} = {data[key]!r} must be a "
                                   "finite number of seconds >= 0")
    if data["time_slice"] <= 0 or data["cores"] < 1:
        raise CalibrationError(f"calibration file {path}: time_slice and cores must be > 0")
    if data["default_model"] not in ("empirical", "parametric"):
        raise CalibrationError(f"calibration file {path}: default_model = "
                               f"{data['default_model']!r}; allowed: empirical, parametric")
    for where, model in [("pooled", data["pooled"])] + [
            (f"configurations[{i}].compute", c.get("compute") if isinstance(c, dict) else None)
            for i, c in enumerate(data["configurations"])]:
        _check_model(path, where, model)
    for key in ("name", "batch", "dtype", "n_params"):
        if key not in data["problem"]:
            raise CalibrationError(f"calibration file {path} lacks problem.{key}")
    return Calibration(data, path)


def _check_model(path: Path, where: str, model: Any) -> None:
    if not isinstance(model, dict):
        raise CalibrationError(f"calibration file {path}: {where} is not a compute model")
    s = model.get("samples_ns")
    if not isinstance(s, list) or not s or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in s):
        raise CalibrationError(f"calibration file {path}: {where}.samples_ns must be a "
                               "non-empty list of integer nanoseconds >= 0")
    fit = model.get("fit")
    if not isinstance(fit, dict) or fit.get("kind") not in ("gamma", "lognormal") or not (
            isinstance(fit.get("mean"), int | float) and fit["mean"] > 0
            and isinstance(fit.get("cv"), int | float) and fit["cv"] >= 0):
        raise CalibrationError(f"calibration file {path}: {where}.fit must be "
                               "{kind: gamma|lognormal, mean > 0, cv >= 0}")


def check_compatible(cal: Calibration, problem: str, batch: int, dtype: str) -> None:
    """Raise :class:`CalibrationError` unless ``cal`` was fitted to this problem, batch and
    dtype (compute times depend on all three)."""
    p = cal.data["problem"]
    got = (problem, int(batch), str(dtype))
    want = (p["name"], int(p["batch"]), str(p["dtype"]))
    if got != want:
        where = cal.path if cal.path is not None else "calibration"
        raise CalibrationError(
            f"calibration file {where} was fitted to problem {want[0]} batch {want[1]} "
            f"{want[2]}; this run is {got[0]} batch {got[1]} {got[2]} (calibrate from a real "
            "run of the same problem, batch and dtype)")
