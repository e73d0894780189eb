"""How well a calibrated simulation reproduces the real run it was calibrated from.

For each algorithm (lock, hogwild, leashed) and worker count m (1, 2 and, oversubscribed on
a small machine, 4 and 8): run the real engine, calibrate the simulator from that run alone
(``stalesgd.analysis.calibrate``), simulate the same configuration (timing only) with the
calibration, and print

* ``TV self``: total-variation distance between simulated and measured PDF(τ);
* ``thr ratio``: simulated / measured updates/s, both measured the same way from the update
  records (applied updates / (last ``t_apply`` − first ``t_read``));
* ``TV m=1`` and ``thr m=1``: the same for a *prediction* from the algorithm's m = 1
  calibration only (its compute model transferred to m workers, on the effective cores ``c``
  that the m-worker run got), where m > 1;
* ``TV all`` and ``thr all``: the same for one calibration from *all* runs of the folder
  (what ``[sim] calibration = "auto"`` in experiment files does): an oversubscribed Hogwild!
  configuration then takes the contended write time of the configuration on its own cores;
* ``c`` and ``eff``: the effective cores used by the simulation and the measured effective
  parallelism of the real run (CPU time of undisturbed cycles per second; below the machine's
  cores when other processes share it).

Run from the repository: ``.venv/bin/python bench/calibration_fidelity.py [--updates N]
[--problem P] [--workers 1,2,4,8] [--out DIR]``.  Real runs are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from stalesgd.analysis.calibrate import calibrate
from stalesgd.app.runner import run_experiment
from stalesgd.real.costs import measure_costs
from stalesgd.sim.run import SimRun

from stalesgd.experiment import expand, experiment_from_flags, parse_experiment
from stalesgd.problems.registry import make_problem
from stalesgd.records import load_results
from stalesgd.staleness import histogram, tv_distance

ALGORITHMS = ("lock", "hogwild", "leashed")


def throughput(updates) -> float:
    """Applied updates per second over the span of the records (first read to last apply)."""
    ok = ~np.asarray(updates["dropped"], dtype=bool)
    t_apply = np.asarray(updates["t_apply"])[ok]
    span = float(t_apply.max() - np.min(np.asarray(updates["t_read"])))
    return t_apply.size / span if span > 0 else float("nan")


def applied_tau(updates) -> np.ndarray:
    """τ of the applied updates."""
    return np.asarray(updates["tau"])[~np.asarray(updates["dropped"], dtype=bool)]


def simulate(problem: str, batch: int, alg: str, m: int, updates: int, cal_path: Path,
             seed: int = 0, cores: int | None = None):
    """The calibrated timing-only simulation of one configuration; (updates, summary)."""
    exp = experiment_from_flags("sim", problem=problem, algorithm=alg, workers=m, batch=batch,
                                updates=updates, seed=seed,
                                sim={"timing_only": True, "calibration": str(cal_path),
                                     "cores": cores})
    rec = SimRun(expand(exp)[0], progress=False).run()
    return rec.updates, rec.summary


def main(argv: list[str] | None = None) -> int:
    """Run the fidelity table; returns 0."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="mlp-synthetic")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--updates", type=int, default=20000)
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS))
    ap.add_argument("--out", default=None, help="keep the real results here (default: temp)")
    args = ap.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    algs = [a.strip() for a in args.algorithms.split(",")]
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="calfid-"))
    root.mkdir(parents=True, exist_ok=True)

    exp = parse_experiment({
        "name": "fidelity", "engine": "real", "seeds": [0],
        "problem": {"name": args.problem, "batch": args.batch},
        "stop": {"updates": args.updates}, "eval": {"every_updates": args.updates // 4},
        "sweep": {"algorithm.name": algs, "workers": workers},
    })
    outcome = run_experiment(exp, out=root, progress=False, echo=lambda _m: None)
    res = load_results(outcome.folder)
    n_params = make_problem(args.problem).model.n_params
    costs = measure_costs(n_params)
    costs["source"] = "micro-benchmark (bench)"

    rows = []
    base: dict[str, Path] = {}
    all_path = calibrate(outcome.folder, costs=costs).save(root / "cal-all.json")
    for run in res.runs.sort_values(["algorithm", "workers"]).itertuples():
        alg, m = run.algorithm, int(run.workers)
        real_up = res.updates[res.updates["run_id"] == run.run_id]
        cal = calibrate(outcome.folder, runs=[run.run_id], costs=costs)
        path = root / f"cal-{alg}-{m}.json"
        cal.save(path)
        if m == 1:
            base[alg] = path
        sim_up, summ = simulate(args.problem, args.batch, alg, m, args.updates, path)
        h_real = histogram(applied_tau(real_up))
        tv = tv_distance(histogram(applied_tau(sim_up)), h_real)
        thr_real, thr_sim = throughput(real_up), throughput(sim_up)
        eff = cal.configuration(alg, m)["effective_parallelism"]
        row = {"alg": alg, "m": m, "cores": summ["cores"], "eff": eff, "thr_real": thr_real,
               "ratio": thr_sim / thr_real, "tv": tv,
               "mean_tau_real": float(applied_tau(real_up).mean()),
               "mean_tau_sim": float(applied_tau(sim_up).mean()),
               "slice_ms": cal.data["time_slice"] * 1e3,
               "tv1": float("nan"), "ratio1": float("nan")}
        up_all, _ = simulate(args.problem, args.batch, alg, m, args.updates, all_path)
        row["tv_all"] = tv_distance(histogram(applied_tau(up_all)), h_real)
        row["ratio_all"] = throughput(up_all) / thr_real
        if m > 1 and alg in base:
            # the m = 1 compute model, on the cores this run actually got
            up1, s1 = simulate(args.problem, args.batch, alg, m, args.updates, base[alg],
                               cores=summ["cores"])
            assert s1["prediction"]
            row["tv1"] = tv_distance(histogram(applied_tau(up1)), h_real)
            row["ratio1"] = throughput(up1) / thr_real
        rows.append(row)

    head = (f"{'alg':8s} {'m':>2s} {'c':>2s} {'eff':>4s} {'real upd/s':>10s} {'sim/real':>8s} "
            f"{'TV self':>7s} {'E[tau] real':>11s} {'E[tau] sim':>10s} {'slice ms':>8s} "
            f"{'TV m=1':>7s} {'thr m=1':>7s} {'TV all':>7s} {'thr all':>7s}")
    print(f"problem {args.problem}, batch {args.batch}, {args.updates} updates per run; "
          f"results in {outcome.folder}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['alg']:8s} {r['m']:2d} {r['cores']:2d} {r['eff']:4.2f} {r['thr_real']:10.0f} "
              f"{r['ratio']:8.3f} {r['tv']:7.3f} {r['mean_tau_real']:11.2f} "
              f"{r['mean_tau_sim']:10.2f} {r['slice_ms']:8.2f} {r['tv1']:7.3f} "
              f"{r['ratio1']:7.3f} {r['tv_all']:7.3f} {r['ratio_all']:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
