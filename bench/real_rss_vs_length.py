"""Memory does not grow with a real run's length: peak RSS of a long run against a short one.

Runs ``stalesgd real --problem logreg-synthetic --workers 2 --seconds T`` in a child
process for a short and a long T (10 s and 60 s by default), each with every update row
written to its results folder, and compares the children's peak RSS.  Passes when the long
run's peak is within 10 % of the short one's.

    python bench/real_rss_vs_length.py
    python bench/real_rss_vs_length.py --short 5 --long 30 --algorithm hogwild
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from real_long_run import run_child

TOLERANCE = 0.10


def measure(seconds: float, algorithm: str, workers: int) -> tuple[int, dict]:
    """Peak RSS (bytes) of one command-line run of ``seconds``, and its runs row."""
    import pandas as pd

    out = Path(tempfile.mkdtemp(prefix="stalesgd-rss-"))
    try:
        cmd = [str(Path(sys.executable).with_name("stalesgd")), "real", "--problem",
               "logreg-synthetic", "--algorithm", algorithm, "--workers", str(workers),
               "--seconds", str(seconds), "--out", str(out), "--no-progress"]
        print("$", " ".join(cmd), flush=True)
        _, rss, code = run_child(cmd)
        if code != 0:
            raise SystemExit(f"the run failed with exit status {code}")
        run = pd.read_parquet(next(out.iterdir()) / "runs.parquet").iloc[0].to_dict()
        return rss, run
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", type=float, default=10.0)
    ap.add_argument("--long", type=float, default=60.0)
    ap.add_argument("--algorithm", default="lock")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    peaks = {}
    for seconds in (args.short, args.long):
        rss, run = measure(seconds, args.algorithm, args.workers)
        peaks[seconds] = rss
        print(f"{seconds:g} s: {run['updates']} updates ({run['updates_per_s']:.0f}/s), "
              f"stop_reason {run['stop_reason']}, record_waits {run['record_waits']}, "
              f"peak RSS {rss / 2**20:.0f} MB", flush=True)
    ratio = peaks[args.long] / peaks[args.short]
    ok = ratio <= 1 + TOLERANCE
    print(f"peak RSS {args.long:g} s / {args.short:g} s = {ratio:.3f} "
          f"({'PASS' if ok else 'FAIL'}: within {TOLERANCE:.0%})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
