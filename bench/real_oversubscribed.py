"""Far more workers than cores: do they all take turns, and does the run end on time?

Runs ``logreg-synthetic`` with 8, 100 and 1000 worker threads (on the cores there are)
for a time budget, per algorithm, and prints what a researcher asks of such a run: how
long it really took, updates/s, how many workers applied at least one update
(``workers_applied``) and how evenly (the smallest and largest worker's share), the mean,
99th and 99.99th percentile and largest τ (preempted workers make a heavy tail),
and how often the workers waited for the record.

    python bench/real_oversubscribed.py
    python bench/real_oversubscribed.py --workers 100 1000 --seconds 5 --algorithms lock
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def oversubscribed(algorithm: str, workers: int, seconds: float) -> str:
    from stalesgd.real.engine import RealRun

    from stalesgd.experiment import expand, experiment_from_flags

    spec = expand(experiment_from_flags("real", problem="logreg-synthetic",
                                        algorithm=algorithm, workers=workers,
                                        seconds=seconds))[0]
    rec = RealRun(spec, progress=False).run()
    s = rec.summary
    per_worker = np.bincount(rec.updates["worker"], minlength=workers) / s["updates"]
    tau = np.asarray(rec.updates["tau"])
    return (f"{algorithm:8s} m={workers:5d}: {s['seconds']:5.2f} s for {seconds:g} s asked, "
            f"{s['updates_per_s']:9,.0f} updates/s, workers applied "
            f"{s['workers_applied']:4d}/{workers} (share min {per_worker.min():.2e}, max "
            f"{per_worker.max():.2e}, even {1 / workers:.2e}), τ mean {s['mean_tau']:.1f} "
            f"p99 {np.quantile(tau, 0.99):.0f} p99.99 {np.quantile(tau, 0.9999):.0f} max "
            f"{tau.max()}, record waits {s['record_waits']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="*", default=[8, 100, 1000])
    ap.add_argument("--algorithms", nargs="*", default=["lock", "hogwild", "leashed"])
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args(argv)
    for m in args.workers:
        for alg in args.algorithms:
            print(oversubscribed(alg, m, args.seconds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
