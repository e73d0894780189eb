"""Stress the real engine: many more threads than cores, every update recorded exactly once.

For each of lock, Hogwild! and Leashed-SGD (persistence ∞ and 1), runs 8 worker threads
(on however many cores there are: 2 here) for 10⁷ updates of ``logreg-synthetic``, the
update rows streamed to a results folder, then checks

* every update index k = 0..N−1 is on disk exactly once (and dropped gradients, counted
  separately, match the run's count);
* Leashed-SGD's pool accounting is back where it started: only the published vector is
  held (its count 1, every other 0: no vector leaked) and the in-use counter says 1;
  the high-water mark stays within the pool (2m + 1).

Prints one line per configuration (wall time, updates/s, record waits, pool figures) and
PASS or FAIL.

    python bench/real_stress.py
    python bench/real_stress.py --updates 1000000 --workers 16
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIGS = (("lock", None), ("hogwild", None), ("leashed", None), ("leashed", 1))


def stress(algorithm: str, persistence: int | None, workers: int, updates: int,
           folder: Path) -> tuple[bool, str]:
    """One stressed run; (passed, what was seen)."""
    import pyarrow.parquet as pq
    from stalesgd.real import control as C
    from stalesgd.real.engine import RealRun
    from stalesgd.real.pool import pool_size

    from stalesgd.experiment import expand, experiment_from_flags
    from stalesgd.records import UpdateLog

    kw = {} if persistence is None else {"persistence": persistence}
    spec = expand(experiment_from_flags("real", problem="logreg-synthetic",
                                        algorithm=algorithm, workers=workers,
                                        updates=updates, **kw))[0]
    spec = dataclasses.replace(spec, eval=dataclasses.replace(
        spec.eval, every_updates=None, every_seconds=1.0))
    log = UpdateLog("all", folder=folder, run_id="r0000")
    run = RealRun(spec, progress=False, updates=log)
    t0 = time.perf_counter()
    s = run.run().summary
    wall = time.perf_counter() - t0
    seen = np.zeros(updates, dtype=np.uint8)
    dropped = 0
    for f in log.files:
        t = pq.read_table(f, columns=["k", "dropped"])
        drop = t.column("dropped").to_numpy(zero_copy_only=False)
        dropped += int(drop.sum())
        np.add.at(seen, t.column("k").to_numpy()[~drop], 1)
    exact = bool(np.all(seen == 1))
    ok = exact and s["updates"] == updates and dropped == s["dropped"]
    line = (f"{algorithm:8s} persistence {'inf' if persistence is None else persistence:>3}: "
            f"{s['updates']} updates in {s['seconds']:.1f} s ({s['updates_per_s']:.0f}/s; "
            f"wall {wall:.0f} s), every k once: {exact}, dropped {dropped} "
            f"(run says {s['dropped']}), record waits {s['record_waits']}, workers applied "
            f"{s['workers_applied']}/{workers}")
    if algorithm == "leashed":
        sh = run.shared
        latest = int(sh.ctrl[C.C_LATEST]) % sh.pool.shape[0]
        others = np.delete(sh.refs, latest)
        leaked = int(np.count_nonzero(others))
        in_use = int(sh.ctrl[C.C_IN_USE])
        high = s["pool_high_water"]
        pool_ok = (sh.refs[latest] == 1 and leaked == 0 and in_use == 1
                   and high <= pool_size(workers))
        ok = ok and pool_ok
        line += (f"; pool: published count {sh.refs[latest]}, leaked {leaked}, in use "
                 f"{in_use}, high water {high}/{pool_size(workers)}, claim waits "
                 f"{s['pool_claim_waits']}, failed publishes {s['failed_publishes']}")
    return ok, line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--updates", type=int, default=10_000_000)
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args(argv)
    passed = True
    for algorithm, persistence in CONFIGS:
        folder = Path(tempfile.mkdtemp(prefix="stalesgd-stress-"))
        try:
            ok, line = stress(algorithm, persistence, args.workers, args.updates, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        print(("PASS " if ok else "FAIL ") + line, flush=True)
        passed = passed and ok
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
