"""How closely the simulated parameter server (``sim --topology ps``) reproduces the
distributed engine: runs of engine ``ray`` measured, the simulator calibrated from them, and
per configuration PDF(τ) total variation and simulated ÷ measured updates/s.

Two calibrations: from every run (in sample) and from the runs of at most ``--fit-workers``
workers (the simulations of more workers are out-of-sample predictions).  The issue's
targets: TV ≤ 0.10 for ``lock`` and ``leashed`` at m = 2, 4, 8, updates/s within 10 %.

Each simulation runs :data:`SIM_FACTOR` times as many updates as its measured run (at least
:data:`MIN_SIM_UPDATES`): a Leashed-SGD run of 8 workers applies a few hundred updates in
8 s, and two samples that small of one law lie about 0.1 apart in TV by chance.  The
``floor`` column is that chance distance for the cell's two sample sizes
(:func:`stalesgd.staleness.tv_sampling_floor`; a lower bound, as successive τ of a run are
correlated).

    python bench/ray_fidelity.py --data-dir DIR                # lock, leashed; 1, 2, 4, 8
    python bench/ray_fidelity.py --algorithms lock --workers 1,2,4 --seconds 5

Ray must be installed (``pip install 'stalesgd[ray]'``); each run starts a local Ray
instance (a few seconds).  Run it on an idle machine: every process of Ray shares its cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from fidelity_matrix import applied_tau, throughput  # (the script's folder is on the path)

HERE = Path(__file__).resolve().parents[1]
#: simulated updates per measured one, and at least
SIM_FACTOR = 4
MIN_SIM_UPDATES = 2000
SHARED_DATA = HERE.parent / "shared" / "data"


def measure(args, root: Path) -> Path:
    """Run the ``ray`` configurations; returns the results folder."""
    from stalesgd.app.runner import run_experiment

    from stalesgd.experiment import parse_experiment

    exp = parse_experiment({
        "name": "ray-fidelity", "engine": "ray", "workers": 1, "seeds": [args.seed],
        "problem": {"name": args.problem, "batch": args.batch,
                    "options": {"data_dir": args.data_dir} if args.data_dir else {}},
        "algorithm": {"name": args.algorithms[0]},
        "stepsize": {"rule": "constant", "lr": 0.01},
        "stop": {"seconds": args.seconds},
        "sweep": {"algorithm.name": args.algorithms, "workers": args.workers},
    }, source="bench/ray_fidelity.py")
    outcome = run_experiment(exp, root, progress=False, echo=print)
    return Path(outcome.folder)


def simulate(args, alg: str, m: int, calibration: Path, updates: int):
    """A calibrated timing-only simulation of ``updates`` updates of one configuration: its
    update rows."""
    from stalesgd.sim.run import SimRun

    from stalesgd.experiment import expand, experiment_from_flags

    options = {"data_dir": args.data_dir} if args.data_dir else {}
    exp = experiment_from_flags("sim", problem=args.problem, algorithm=alg, workers=m,
                                batch=args.batch, updates=updates, seed=args.seed,
                                problem_options=options,
                                sim={"timing_only": True, "topology": "ps",
                                     "calibration": str(calibration)})
    return SimRun(expand(exp)[0], progress=False).run().updates


def summary_lines(cells: list[dict]) -> list[str]:
    """Per algorithm and calibration, the median TV and median |updates/s error| over the
    cells: finer than the count of cells that meet the target when two models of the
    network are compared on the same runs."""
    lines = []
    for alg in sorted({c["algorithm"] for c in cells}):
        for kind in sorted({c["calibration"] for c in cells}):
            group = [c for c in cells if c["algorithm"] == alg and c["calibration"] == kind]
            if group:
                tv = statistics.median(c["tv"] for c in group)
                err = statistics.median(abs(c["updates_per_s"] - 1) for c in group)
                lines.append(f"  {alg:8s} {kind:10s} {len(group)} cells: median TV {tv:.3f}, "
                             f"median |updates/s error| {err:.0%}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", default="mlp-mnist")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--algorithms", default="lock,leashed")
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each measured run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fit-workers", type=int, default=2)
    ap.add_argument("--data-dir", default=None, help="where MNIST is (default: the usual "
                    "places, or ../shared/data beside the repository)")
    ap.add_argument("--out", default=None, help="keep the ray runs here (default: temp)")
    ap.add_argument("--reuse", default=None, metavar="DIR",
                    help="a results folder of ray runs from an earlier call: measure nothing")
    args = ap.parse_args(argv)
    args.algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    args.workers = [int(w) for w in args.workers.split(",")]
    if args.data_dir is None and not os.environ.get("STALESGD_DATA") and SHARED_DATA.is_dir():
        args.data_dir = str(SHARED_DATA)
    if args.data_dir and not os.environ.get("STALESGD_DATA"):  # (calibrate looks there too)
        os.environ["STALESGD_DATA"] = args.data_dir

    from stalesgd.analysis.calibrate import calibrate

    from stalesgd.records import load_results
    from stalesgd.staleness import distances, histogram, tv_sampling_floor

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.reuse) if args.reuse else measure(
            args, Path(args.out) if args.out else Path(tmp))
        cals = {"in sample": calibrate(folder).save(Path(tmp) / "all.json"),
                f"m<={args.fit_workers}": calibrate(folder, max_workers=args.fit_workers)
                .save(Path(tmp) / "fit.json")}
        res = load_results(folder)
        runs, updates = res.runs, res.updates
        rows = []
        for r in runs.itertuples():
            measured = updates[updates["run_id"] == r.run_id]
            for kind, cal in cals.items():
                if kind != "in sample" and int(r.workers) <= args.fit_workers:
                    continue
                real_tau = applied_tau(measured)
                sim = simulate(args, r.algorithm, int(r.workers), cal,
                               max(SIM_FACTOR * real_tau.size, MIN_SIM_UPDATES))
                sim_tau = applied_tau(sim)
                d = distances(histogram(sim_tau), histogram(real_tau))
                rows.append({"algorithm": r.algorithm, "workers": int(r.workers),
                             "calibration": kind, "tv": d.tv,
                             "tv_floor": tv_sampling_floor(histogram(real_tau), sim_tau.size),
                             "measured_updates": int(real_tau.size),
                             "simulated_updates": int(sim_tau.size),
                             "updates_per_s": throughput(sim) / throughput(measured)})
    measured = float(runs["seconds"].median()) if "seconds" in runs else args.seconds
    print(f"\n{args.problem} batch {args.batch}, measured runs of {measured:.3g} s, simulated "
          f"{SIM_FACTOR}× their updates (at least {MIN_SIM_UPDATES}); folder {folder}")
    print(f"{'algorithm':10s} {'m':>3s}  {'calibration':12s} {'TV':>6s} {'floor':>6s} "
          f"{'upd/s sim/ray':>14s} {'updates measured':>17s}")
    for row in rows:
        print(f"{row['algorithm']:10s} {row['workers']:3d}  {row['calibration']:12s} "
              f"{row['tv']:6.3f} {row['tv_floor']:6.3f} {row['updates_per_s']:14.2f} "
              f"{row['measured_updates']:17d}")
    target = [r for r in rows if r["algorithm"] in ("lock", "leashed") and r["workers"] > 1]
    if target:
        met = sum(r["tv"] <= 0.10 and abs(r["updates_per_s"] - 1) <= 0.10 for r in target)
        print(f"\ntarget (lock, leashed, m > 1: TV <= 0.10 and updates/s within 10 %): "
              f"met in {met} of {len(target)} cells")
        for line in summary_lines(target):
            print(line)
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
