"""Elastic parallelism against static parallelism in the simulator: CPU-seconds and simulated
time to a target loss, non-convergence, over seeds (issue 8's measurement).

Lock AsyncSGD on ``logreg-synthetic`` with a large step size (0.5), exponential compute times
(mean 2 ms), one simulated core per worker, numeric replay, target loss 0.385, at most 60,000
updates; M = 16, 32, 64 workers; controllers ``static`` (m = M), ``window`` and ``model``
(probe 500 updates, execute 2,000).  Times and CPU-seconds are simulated (CPU-seconds =
∫ min(m(t), cores) dt).  Usage::

    python bench/elastic_savings.py [--seeds 5] [--workers 16 32 64] [--csv out.csv]

``--real`` measures the real engine instead, on this machine: lock, MLP 784-128-10 on MNIST
(float32, lr 0.05; data from ``STALESGD_DATA`` or the usual search path), target 0.12 within
120,000 updates, M = 4 and 8 threads (oversubscribed on 2 cores), probe 3,000 / execute
12,000 updates; wall seconds and process CPU-seconds::

    STALESGD_DATA=../shared/data python bench/elastic_savings.py --real --seeds 3 --workers 4 8
"""

from __future__ import annotations

import argparse
import dataclasses

import pandas as pd
from stalesgd.sim.run import run_sim

from stalesgd.experiment import expand, experiment_from_flags

CONTROLLERS = (("static", {}), ("window", {"probe": 500, "execute": 2000}),
               ("model", {"probe": 500, "execute": 2000}))


def measure(workers: list[int], seeds: int) -> pd.DataFrame:
    """One row per (M, controller, seed): time and CPU-seconds to target, mean active m."""
    rows = []
    for M in workers:
        for name, options in CONTROLLERS:
            for seed in range(seeds):
                exp = experiment_from_flags(
                    "sim", problem="logreg-synthetic", algorithm="lock", workers=M, lr=0.5,
                    updates=60000, target_loss=0.385, seed=seed, sim={"compute": "exp:2ms"},
                    controller=name, controller_options=options)
                spec = expand(exp)[0]
                spec = dataclasses.replace(
                    spec, stop=dataclasses.replace(spec.stop, at_target=True),
                    eval=dataclasses.replace(spec.eval, every_updates=500))
                s = run_sim(spec, progress=False).summary
                rows.append({"M": M, "controller": name, "seed": seed,
                             "time_to_target": s.get("time_to_target"),
                             "cpu_seconds": s.get("cpu_seconds"),
                             "mean_active": s.get("mean_active"),
                             "diverged": bool(s.get("diverged"))})
    return pd.DataFrame(rows)


def measure_real(workers: list[int], seeds: int) -> pd.DataFrame:
    """The same comparison on the real engine (wall time, process CPU-seconds)."""
    from stalesgd.real.engine import run_real

    rows = []
    for M in workers:
        for name, options in CONTROLLERS:
            opts = {k: 6 * v for k, v in options.items()}  # longer phases: ~6k updates/s
            for seed in range(seeds):
                exp = experiment_from_flags(
                    "real", problem="mlp-mnist", algorithm="lock", workers=M, lr=0.05,
                    updates=120000, target_loss=0.12, seed=seed, dtype="float32",
                    problem_options={"hidden": [128]}, controller=name,
                    controller_options=opts)
                spec = expand(exp)[0]
                spec = dataclasses.replace(
                    spec, stop=dataclasses.replace(spec.stop, at_target=True),
                    eval=dataclasses.replace(spec.eval, every_updates=500))
                s = run_real(spec, progress=False).summary
                rows.append({"M": M, "controller": name, "seed": seed,
                             "time_to_target": s.get("time_to_target"),
                             "cpu_seconds": s.get("cpu_seconds"),
                             "mean_active": s.get("mean_active"),
                             "diverged": bool(s.get("diverged"))})
    return pd.DataFrame(rows)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (M, controller): runs that reached the target, medians, CPU saved against static."""
    def agg(d: pd.DataFrame) -> pd.Series:
        hit = d["time_to_target"].notna() & ~d["diverged"]
        return pd.Series({"reached": f"{int(hit.sum())}/{len(d)}",
                          "time_to_target_median": d.loc[hit, "time_to_target"].median(),
                          "cpu_seconds_median": d["cpu_seconds"].median(),
                          "cpu_to_target_median": d.loc[hit, "cpu_seconds"].median(),
                          "mean_active": d["mean_active"].mean()})
    out = df.groupby(["M", "controller"]).apply(agg, include_groups=False)
    static = out.xs("static", level="controller")["cpu_seconds_median"]
    out["cpu_vs_static"] = [row.cpu_seconds_median / static.loc[m]
                            for (m, _), row in out.iterrows()]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--workers", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--csv", default=None, help="also write the per-run rows here")
    ap.add_argument("--real", action="store_true", help="the real engine (see above)")
    args = ap.parse_args()
    df = (measure_real if args.real else measure)(args.workers, args.seeds)
    if args.csv:
        df.to_csv(args.csv, index=False)
    print(summary(df).round(3).to_string())


if __name__ == "__main__":
    main()
