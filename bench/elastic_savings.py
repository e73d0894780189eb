"""Elastic against static parallelism: resources to reach a target loss, over seeds.

For each number of worker threads M, every controller (``static`` = all M workers, the
baseline; ``window``, ``ternary``, ``model``; ``fixed-k`` = static at k workers, an oracle that
knows the best level in advance, which is what a ``schedule`` would encode) runs the same
problem from the same seeds, each run stopping at the target loss or its update budget.
Per run: time to target, CPU-seconds to target, peak memory, and whether it reached the target
(a run that diverged or ran out of budget did not).  Per (M, controller): the non-convergence
rate, medians and ranges, and, paired by seed with the static run, the CPU-seconds saved
(1 − cpu/cpu_static), the time ratio (time/time_static) and the memory ratio.

``--sim`` (the simulator, simulated seconds).  The comparison of
``bench/experiments/elastic.toml``: lock AsyncSGD, MLP 784-128-128-128-10 on MNIST (float32,
batch 16, η = 0.01), target test loss 0.30 within 30,000 updates, M = 16, 32, 64 with one
simulated core per worker, numeric replay.  Timing from ``stalesgd calibrate`` of a real
lock run of this problem on the 2-core machine: compute log-normal (mean 280 µs, CV 0.62),
copy θ under the lock 14.5 µs, apply 26.4 µs — so the lock caps throughput at ~24,000
updates/s (~8 workers' worth) and more workers only add staleness.  CPU-seconds are
∫ min(m(t), cores) dt (a parked worker uses no core).  Probe 500 / execute 2,000 updates.

``--real`` (this machine, wall seconds, process CPU-seconds from ``getrusage``, each run in
its own process so that peak RSS is the run's own): lock and leashed, MLP 784-128-10 on
MNIST (float32, batch 16, η = 0.05), target test loss 0.25 within 40,000 updates, M = 4 and 8
threads on 2 cores (oversubscribed), probe 1,500 / execute 6,000 updates (the engine does
~5,000 updates/s here, so a probe lasts ~0.3 s).

Usage (from the repository root; MNIST from ``--data-dir``, ``$STALESGD_DATA`` or the usual
search path)::

    python bench/elastic_savings.py --data-dir ../shared/data            # both, ~15 min
    python bench/elastic_savings.py --data-dir ../shared/data --quick    # ~3 min
    python bench/elastic_savings.py --sim --seeds 8 --csv sim.csv        # one part, more seeds
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stalesgd.experiment import ControllerSpec, RunSpec, expand, load_experiment, parse_experiment

EXPERIMENT = Path(__file__).resolve().parent / "experiments" / "elastic.toml"
#: the elastic controllers compared with static; the fixed-k oracle is added per part
ELASTIC = ("window", "ternary", "model")
SIM_ORACLE = 8  # the lock saturates at ~8 workers' worth of throughput in the sim setting
REAL_ORACLE = 2  # two cores
REAL = {"problem": "mlp-mnist", "hidden": [128], "dtype": "float32", "batch": 16, "lr": 0.05,
        "updates": 60000, "target": 0.10, "every": 250, "max_rows": 1000,
        "probe": 500, "execute": 2000}


# ---------------------------------------------------------------------------------------------
# the simulator
# ---------------------------------------------------------------------------------------------


def sim_specs(workers: list[int], seeds: list[int], oracle: int = SIM_ORACLE,
              lr: float | None = None) -> list[RunSpec]:
    """The runs of ``elastic.toml`` restricted to ``workers`` and ``seeds`` (and with step
    size ``lr`` if given), plus, per M and seed, the static baseline (all M) and the
    fixed-``oracle`` static run.

    The experiment file sweeps only the probing controllers: its shared ``[controller]
    options`` (probe, execute) are unknown to ``static``, so static runs are made here."""
    base = [s for s in expand(load_experiment(EXPERIMENT))
            if s.workers in workers and s.seed in seeds]
    if lr is not None:
        base = [dataclasses.replace(s, stepsize=dataclasses.replace(s.stepsize, lr=lr))
                for s in base]
    out: list[RunSpec] = []
    for M in workers:
        for seed in seeds:
            mine = [s for s in base if s.workers == M and s.seed == seed]
            if not mine:
                raise SystemExit(f"elastic.toml has no run with workers = {M}, seed = {seed}")
            ref = mine[0]
            out.append(dataclasses.replace(ref, controller=ControllerSpec("static", {})))
            if oracle < M:
                out.append(dataclasses.replace(
                    ref, controller=ControllerSpec("static", {"m": oracle})))
            out.extend(mine)
    return out


def _label(spec: RunSpec) -> str:
    c = spec.controller
    if c.name == "static" and c.options.get("m", spec.workers) != spec.workers:
        return f"fixed-{c.options['m']}"
    return c.name


def run_sim_specs(specs: list[RunSpec], log: bool = True) -> pd.DataFrame:
    """Run every spec in the simulator (in this process); one row per run."""
    from stalesgd.sim.run import run_sim

    rows = []
    for i, spec in enumerate(specs):
        t0 = time.perf_counter()
        s = run_sim(spec, progress=False).summary
        rows.append(_row("sim", spec.algorithm.name, spec.workers, _label(spec), spec.seed, s,
                         spec.stop.target_loss))
        if log:
            r = rows[-1]
            print(f"  [{i + 1}/{len(specs)}] sim M={spec.workers} {r['controller']:<8} "
                  f"seed={spec.seed} reached={r['reached']} t={r['time']:.3f} "
                  f"cpu={r['cpu_seconds']:.2f} m̄={r['mean_active']:.1f} "
                  f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def _row(engine: str, algorithm: str, M: int, controller: str, seed: int, s: dict[str, Any],
         target: float | None) -> dict[str, Any]:
    ttt = s.get("time_to_target")
    ttt = math.nan if ttt is None else float(ttt)
    diverged = bool(s.get("diverged"))
    reached = math.isfinite(ttt) and not diverged
    return {"engine": engine, "algorithm": algorithm, "M": M, "controller": controller,
            "seed": seed, "reached": reached, "diverged": diverged,
            "time_to_target": ttt, "time": float(s.get("seconds") or math.nan),
            "updates": int(s.get("updates") or 0),
            "cpu_seconds": float(s.get("cpu_seconds", math.nan)),
            "mean_active": float(s.get("mean_active", math.nan)),
            "changes": int(s.get("controller_changes") or 0),
            "final_loss": float(s.get("final_loss") or math.nan),
            "peak_param_bytes": float(s.get("peak_param_bytes") or math.nan),
            "peak_rss_bytes": float(s.get("peak_rss_bytes") or math.nan),
            "target": target}


# ---------------------------------------------------------------------------------------------
# the real engine, in this process; peak RSS made per-run by resetting the high-water mark
# ---------------------------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS high-water mark (Linux ≥ 4.0: ``5`` to
    ``/proc/self/clear_refs``), so that the next run's ``peak_rss_bytes`` is its own peak (on
    top of what the process already holds: the data set, compiled kernels).  False if the
    kernel does not offer it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def real_raw(algorithm: str, M: int, controller: str, options: dict[str, Any],
             seed: int, cfg: dict[str, Any] = REAL) -> dict[str, Any]:
    """The raw experiment (as in a TOML file) of one real run."""
    return {"name": "elastic-real", "engine": "real", "workers": M, "seeds": [seed],
            "problem": {"name": cfg["problem"], "batch": cfg["batch"], "dtype": cfg["dtype"],
                        "options": {"hidden": cfg["hidden"]}},
            "algorithm": {"name": algorithm}, "stepsize": {"rule": "constant", "lr": cfg["lr"]},
            "stop": {"updates": cfg["updates"], "target_loss": cfg["target"],
                     "at_target": True},
            "eval": {"every_updates": cfg["every"], "max_rows": cfg["max_rows"]},
            "controller": {"name": controller, "options": options}}


def run_real_one(raw: dict[str, Any]) -> dict[str, Any]:
    """Run one real experiment in this process (peak RSS reset first); its run summary."""
    from stalesgd.real.engine import run_real

    spec = expand(parse_experiment(raw))[0]
    reset_peak_rss()
    return run_real(spec, progress=False).summary


def real_plan(configs: list[tuple[str, int]], seeds: list[int],
              cfg: dict[str, Any] = REAL) -> list[tuple[str, int, str, dict[str, Any], int]]:
    """(algorithm, M, label, controller, seed) of every real run, for each (algorithm, M)
    of ``configs``."""
    plan = []
    for alg, M in configs:
        ctls: list[tuple[str, str, dict[str, Any]]] = [("static", "static", {})]
        if REAL_ORACLE < M:
            ctls.append((f"fixed-{REAL_ORACLE}", "static", {"m": REAL_ORACLE}))
        ctls += [(c, c, {"probe": cfg["probe"], "execute": cfg["execute"]}) for c in ELASTIC]
        for seed in seeds:
            for label, name, opts in ctls:
                plan.append((alg, M, label, {"name": name, "options": opts}, seed))
    return plan


def run_real_plan(plan: list, cfg: dict[str, Any] = REAL, log: bool = True) -> pd.DataFrame:
    """Run the real plan (seeds interleaved across controllers, so a change in the machine's
    background load hits every controller alike); one row per run.  Each algorithm first runs
    a short unrecorded warm-up (kernel compilation, the allocator settling)."""
    for alg in dict.fromkeys(p[0] for p in plan):
        t0 = time.perf_counter()
        warm = dict(cfg, updates=1000, target=1e-6)
        run_real_one(real_raw(alg, 2, "static", {}, 0, warm))
        if log:
            print(f"  warm-up {alg}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    rows = []
    for i, (alg, M, label, ctl, seed) in enumerate(plan):
        raw = real_raw(alg, M, ctl["name"], ctl["options"], seed, cfg)
        t0 = time.perf_counter()
        s = run_real_one(raw)
        load = os.getloadavg()[0]
        row = _row("real", alg, M, label, seed, s, cfg["target"])
        row["load1"] = load
        rows.append(row)
        if log:
            print(f"  [{i + 1}/{len(plan)}] real {alg} M={M} {label:<8} seed={seed} "
                  f"reached={row['reached']} t={row['time']:.2f} cpu={row['cpu_seconds']:.2f} "
                  f"m̄={row['mean_active']:.2f} rss={row['peak_rss_bytes'] / 2**20:.0f}MiB "
                  f"load={load:.2f} ({time.perf_counter() - t0:.1f} s)",
                  file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------


def _msd(x: pd.Series | np.ndarray, pct: bool = False) -> str:
    """'mean ± sd (n)' of the finite values, or '–'."""
    v = np.asarray(x, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "–"
    f = 100.0 if pct else 1.0
    sd = float(np.std(v, ddof=1)) * f if v.size > 1 else 0.0
    unit = "%" if pct else ""
    return f"{float(np.mean(v)) * f:.{0 if pct else 2}f}{unit} ± {sd:.{0 if pct else 2}f} " \
           f"(n={v.size})"


def _med(x: pd.Series, fmt: str = "{:.3g}") -> str:
    """'median [min–max]' of the finite values, or '–'."""
    v = np.asarray(x, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "–"
    return f"{fmt.format(np.median(v))} [{fmt.format(v.min())}–{fmt.format(v.max())}]"


def savings(df: pd.DataFrame) -> pd.DataFrame:
    """Per (engine, algorithm, M, controller): non-convergence, time and CPU-seconds to target
    (median [range] over the runs that reached it), mean active workers, peak memory, and the
    seed-paired comparison with static (CPU saved, time ratio, memory ratio; mean ± sd over
    the seeds where both reached the target)."""
    rows = []
    keys = ["engine", "algorithm", "M"]
    for (eng, alg, M), grp in df.groupby(keys, sort=True):
        st = grp[grp.controller == "static"].set_index("seed")
        for ctl, d in grp.groupby("controller", sort=False):
            d = d.set_index("seed")
            hit = d[d.reached]
            both = [s for s in hit.index if s in st.index and st.loc[s, "reached"]]
            cpu_saved = [1 - hit.loc[s, "cpu_seconds"] / st.loc[s, "cpu_seconds"] for s in both]
            t_ratio = [hit.loc[s, "time_to_target"] / st.loc[s, "time_to_target"] for s in both]
            mem_col = "peak_rss_bytes" if eng == "real" else "peak_param_bytes"
            mem_ratio = [d.loc[s, mem_col] / st.loc[s, mem_col] for s in d.index
                         if s in st.index]
            par_ratio = [d.loc[s, "peak_param_bytes"] / st.loc[s, "peak_param_bytes"]
                         for s in d.index if s in st.index]
            rows.append({
                "engine": eng, "algorithm": alg, "M": M, "controller": ctl,
                "not_conv": f"{int((~d.reached).sum())}/{len(d)} "
                            f"({int(d.diverged.sum())} div)",
                "time_to_target": _med(hit.time_to_target),
                "cpu_to_target": _med(hit.cpu_seconds),
                "mean_m": f"{d.mean_active.mean():.1f}",
                "cpu_saved": _msd(np.array(cpu_saved), pct=True),
                "time_ratio": _msd(np.array(t_ratio)),
                "mem_ratio": _msd(np.array(mem_ratio)),
                "param_ratio": _msd(np.array(par_ratio)),
                "peak_rss_MiB": _med(d.peak_rss_bytes / 2**20, "{:.0f}"),
            })
    out = pd.DataFrame(rows)
    if (out.engine == "sim").all():
        out = out.drop(columns=["peak_rss_MiB", "mem_ratio"])
    return out


def _config(text: str) -> tuple[str, int]:
    """``ALGORITHM:M`` (e.g. ``lock:8``) as a pair."""
    alg, _, m = text.partition(":")
    if alg not in ("lock", "hogwild", "leashed") or not m.isdigit() or int(m) < 1:
        raise argparse.ArgumentTypeError(f"real config {text!r}: expected ALGORITHM:M with "
                                         "ALGORITHM lock, hogwild or leashed and M >= 1")
    return alg, int(m)


def main(argv: list[str] | None = None) -> None:
    """Command line: run the simulator and/or real comparison and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sim", action="store_true", help="only the simulator part")
    ap.add_argument("--real", action="store_true", help="only the real-engine part")
    ap.add_argument("--quick", action="store_true",
                    help="sim M = 64 and real lock:8 only, 2 seeds (~3 minutes)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 5; quick 2)")
    ap.add_argument("--workers", type=int, nargs="+", default=None,
                    help="sim: M values (default 16 32 64; quick 64)")
    ap.add_argument("--configs", type=_config, nargs="+", default=None,
                    help="real: ALGORITHM:M pairs (default lock:4 lock:8 leashed:8; quick "
                         "lock:8)")
    ap.add_argument("--sim-lr", type=float, default=None,
                    help="sim: override the step size of elastic.toml (0.01)")
    ap.add_argument("--data-dir", default=None, help="data sets root (sets STALESGD_DATA)")
    ap.add_argument("--csv", default=None, help="also write the per-run rows here")
    args = ap.parse_args(argv)
    if args.data_dir:
        os.environ["STALESGD_DATA"] = str(Path(args.data_dir).resolve())
    both = not (args.sim or args.real)
    seeds = list(range(args.seeds if args.seeds else (2 if args.quick else 5)))
    frames = []
    if args.sim or both:
        ws = args.workers or ([64] if args.quick else [16, 32, 64])
        t0 = time.perf_counter()
        frames.append(run_sim_specs(sim_specs(ws, seeds, lr=args.sim_lr)))
        print(f"sim part: {time.perf_counter() - t0:.0f} s wall", file=sys.stderr)
    if args.real or both:
        configs = args.configs or ([("lock", 8)] if args.quick
                                   else [("lock", 4), ("lock", 8), ("leashed", 8)])
        t0 = time.perf_counter()
        print(f"real part: load before {os.getloadavg()}", file=sys.stderr)
        frames.append(run_real_plan(real_plan(configs, seeds)))
        print(f"real part: {time.perf_counter() - t0:.0f} s wall, load after "
              f"{os.getloadavg()}", file=sys.stderr)
    df = pd.concat(frames, ignore_index=True)
    if args.csv:
        df.to_csv(args.csv, index=False)
    with pd.option_context("display.width", 250, "display.max_columns", 30,
                           "display.max_colwidth", 40):
        for eng, d in df.groupby("engine", sort=False):
            print(f"\n== {eng} ==")
            print(savings(d).drop(columns=["engine"]).to_string(index=False))
        if "load1" in df:
            r = df[df.engine == "real"]
            print(f"\nreal runs: 1-min load average {r.load1.min():.2f}–{r.load1.max():.2f} "
                  f"(median {r.load1.median():.2f}) on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    from stalesgd.data import DataError

    try:
        main()
    except DataError as exc:  # data not found or corrupt: the message says how to fix it
        raise SystemExit(f"elastic_savings: {exc}") from None
