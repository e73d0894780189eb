"""A long real run through the command line: every update row on disk, bounded memory.

Runs ``stalesgd real --problem logreg-synthetic --workers 2 --updates N`` (10⁸ by default)
in a child process, then reads the results folder's ``updates.parquet`` one row group at a
time and checks that the applied updates' indices are exactly 0..N−1, each once (in the
order they were applied, as the monitor drains them).  Prints the wall time, the child's
peak RSS, the run's updates/s and stop reason, and how often the workers waited for the
record.  Exit status 0 if every check passed.

    python bench/real_long_run.py                      # 10^8 updates, lock, ~5 minutes
    python bench/real_long_run.py --updates 10000000 --algorithm hogwild --keep
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def run_child(cmd: list[str]) -> tuple[float, int, int]:
    """Run ``cmd``; return its wall seconds, peak RSS (bytes) and exit status."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, usage.ru_maxrss * 1024, child.returncode


def check_update_rows(path: Path, n: int) -> dict[str, object]:
    """Walk ``updates.parquet`` row group by row group: are the applied updates' k exactly
    0..n−1, each once?  In drain order they must come as 0, 1, 2, …; if they do not, a
    bitmap tells missing from repeated ones."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    expected, in_order, rows, dropped = 0, True, 0, 0
    for i in range(pf.num_row_groups):
        group = pf.read_row_group(i, columns=["k", "dropped"])
        k = group.column("k").to_numpy()
        drop = group.column("dropped").to_numpy(zero_copy_only=False)
        rows += len(k)
        dropped += int(drop.sum())
        k = k[~drop]
        if in_order and np.array_equal(k, np.arange(expected, expected + len(k))):
            expected += len(k)
        else:
            in_order = False
    if in_order:
        return {"rows": rows, "dropped": dropped, "in_order": True,
                "exact": expected == n, "missing": n - expected, "repeated": 0}
    seen = np.zeros(n, dtype=np.uint8)
    outside = 0
    for i in range(pf.num_row_groups):
        group = pf.read_row_group(i, columns=["k", "dropped"])
        k = group.column("k").to_numpy()[~group.column("dropped").to_numpy(
            zero_copy_only=False)]
        outside += int(((k < 0) | (k >= n)).sum())
        k = k[(k >= 0) & (k < n)]
        np.add.at(seen, k, 1)
    missing, repeated = int((seen == 0).sum()), int((seen > 1).sum())
    return {"rows": rows, "dropped": dropped, "in_order": False,
            "exact": missing == repeated == outside == 0, "missing": missing,
            "repeated": repeated}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--updates", type=int, default=100_000_000)
    ap.add_argument("--algorithm", default="lock")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the results folder")
    args = ap.parse_args(argv)
    out = Path(tempfile.mkdtemp(prefix="stalesgd-long-"))
    stalesgd = Path(sys.executable).with_name("stalesgd")
    cmd = [str(stalesgd), "real", "--problem", "logreg-synthetic", "--algorithm",
           args.algorithm, "--workers", str(args.workers), "--updates", str(args.updates),
           "--out", str(out), "--no-progress"]
    print("$", " ".join(cmd), flush=True)
    try:
        wall, rss, code = run_child(cmd)
        print(f"exit {code}, wall {wall:.1f} s, peak RSS {rss / 2**20:.0f} MB", flush=True)
        if code != 0:
            return 1
        import pandas as pd

        folder = next(out.iterdir())
        run = pd.read_parquet(folder / "runs.parquet").iloc[0]
        size = (folder / "updates.parquet").stat().st_size
        print(f"run: {run['updates']} updates in {run['seconds']:.1f} s "
              f"({run['updates_per_s']:.0f}/s), stop_reason {run['stop_reason']}, "
              f"record_waits {run['record_waits']}, engine peak RSS "
              f"{run['peak_rss_bytes'] / 2**20:.0f} MB; updates.parquet {size / 2**30:.2f} GiB",
              flush=True)
        t0 = time.perf_counter()
        check = check_update_rows(folder / "updates.parquet", args.updates)
        print(f"rows on disk: {check['rows']} ({check['dropped']} dropped), k = 0..N-1 "
              f"exactly once: {check['exact']} (in order: {check['in_order']}, missing "
              f"{check['missing']}, repeated {check['repeated']}); checked in "
              f"{time.perf_counter() - t0:.0f} s")
        ok = bool(check["exact"]) and int(run["updates"]) == args.updates
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"kept {out}")
        else:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
