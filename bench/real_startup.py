"""Start-up of a short real run: wall seconds from the command to the results folder.

Runs ``stalesgd real`` (200 updates of the MNIST MLP, lock, two workers, by default;
``--engine sim`` the same simulated, with numeric replay) as a
fresh process, "cold" (empty caches: ``NUMBA_CACHE_DIR`` and ``XDG_CACHE_HOME``, where the
kernels and the parsed data set are kept, set to a new temporary folder) and "warm" (the same
command again with the caches the cold run filled), several
rounds, cold and warm alternately.  With ``--baseline`` another checkout's ``stalesgd``
(its ``.venv``) runs the same rounds interleaved, so that both see the same load on a shared
machine.  Prints each one's median, minimum and maximum, and the targets (warm ≤ 1.5 s, cold
≤ 4 s).

    python bench/real_startup.py                          # needs ../shared/data or --data-dir
    python bench/real_startup.py --rounds 7 --baseline ../stalesgd-main
    python bench/real_startup.py --engine sim --rounds 2 --baseline ../stalesgd-main
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
TARGETS = {"warm": 1.5, "cold": 4.0}


def command(checkout: Path, data_dir: str, out: str, extra: list[str],
            engine: str = "real") -> list[str]:
    """The run, as a user types it, with ``checkout``'s installed command."""
    exe = checkout / ".venv" / "bin" / "stalesgd"
    if not exe.exists():
        raise SystemExit(f"{exe} does not exist: run `make venv` in {checkout} first")
    return [str(exe), engine, "--problem", "mlp-mnist", "--algorithm", "lock", "--workers",
            "2", "--updates", "200", "--data-dir", data_dir, "--out", out, "--no-progress",
            *extra]


def timed(cmd: list[str], cache: Path) -> float:
    """Wall seconds of ``cmd`` with its caches in ``cache``; fails loudly."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), XDG_CACHE_HOME=str(cache),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0 or "results:" not in done.stdout:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="cold + warm pairs (default 5)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another checkout (with its .venv) measured alternately")
    ap.add_argument("--data-dir", default=str(HERE.parent / "shared" / "data"),
                    help="where MNIST is (default: ../shared/data)")
    ap.add_argument("--engine", choices=("real", "sim"), default="real",
                    help="the command measured (the targets are those of real)")
    ap.add_argument("extra", nargs="*", help="more flags for the run (after --)")
    args = ap.parse_args(argv)
    checkouts = {"here": HERE}
    if args.baseline is not None:
        checkouts["baseline"] = args.baseline.resolve()
    walls: dict[tuple[str, str], list[float]] = {(c, k): [] for c in checkouts
                                                 for k in ("cold", "warm")}
    scratch = Path(tempfile.mkdtemp(prefix="stalesgd-startup-"))
    try:
        for r in range(args.rounds):
            for name, checkout in checkouts.items():
                cache = scratch / f"numba-{name}-{r}"
                cmd = command(checkout, args.data_dir, str(scratch / "results"), args.extra,
                              args.engine)
                walls[name, "cold"].append(timed(cmd, cache))
                walls[name, "warm"].append(timed(cmd, cache))
                shutil.rmtree(cache, ignore_errors=True)
                shutil.rmtree(scratch / "results", ignore_errors=True)
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{c} {k} {w[-1]:.2f} s" for (c, k), w in walls.items()), file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{'checkout':10s} {'cache':5s} {'median s':>9s} {'min':>6s} {'max':>6s}  target")
    for (name, kind), w in walls.items():
        print(f"{name:10s} {kind:5s} {statistics.median(w):9.2f} {min(w):6.2f} {max(w):6.2f}"
              f"  ≤ {TARGETS[kind]:g} s")
    if args.baseline is not None:
        for kind in ("cold", "warm"):
            ratio = (statistics.median(walls["baseline", kind])
                     / statistics.median(walls["here", kind]))
            print(f"{kind}: baseline / here = {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
