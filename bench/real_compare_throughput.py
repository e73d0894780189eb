"""Updates/s of the real engine here against another checkout of stalesgd, run alternately.

Each measurement is one child process of one checkout's Python: a short warm-up run
(compilation, allocator), then the measured run, without evaluations while it runs.
Measurements alternate between the checkouts, configuration by configuration, so that
both see the same load on a shared machine; the table gives the median of ``--repeats``
per configuration and the ratio this checkout / the other, of updates/s and of the worker
threads' CPU time per update (which other load on the machine disturbs less).

    python bench/real_compare_throughput.py --baseline ../stalesgd-main   # its .venv is used
    python bench/real_compare_throughput.py --baseline ../stalesgd-main --repeats 5

``--gates`` measures instead, in this checkout alone, a worker loop compiled with forced
interleavings possible but unused (an empty script: every gate checks the script and
stands open) against the normal loop (no script: the gates compile to nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
SHARED_DATA = HERE.parent / "shared" / "data"

#: problem -> (updates per measured run, problem options)
PROBLEMS = {
    "logreg-synthetic": (2_000_000, {}),
    "mlp-mnist": (20_000, {"hidden": [128], "data_dir": str(SHARED_DATA)}),
}
ALGORITHMS = ("lock", "hogwild", "leashed")
WORKERS = (1, 2)

SNIPPET = """
import dataclasses, json, sys
import numpy as np
from stalesgd.experiment import expand, experiment_from_flags
from stalesgd.real.engine import RealRun
alg, m, problem, n, opts, gates = json.loads(sys.argv[1])
def spec(updates, seed):
    exp = experiment_from_flags("real", problem=problem, algorithm=alg, workers=m,
                                updates=updates, lr=0.01, batch=16, seed=seed,
                                problem_options=opts)
    s = expand(exp)[0]
    return dataclasses.replace(s, eval=dataclasses.replace(s.eval, every_updates=None,
                                                           every_seconds=1e9))
kw = {"schedule": np.zeros(0, dtype=np.int64)} if gates else {}
RealRun(spec(max(n // 10, 100), 1), progress=False, **kw).run()
s = RealRun(spec(n, 0), progress=False, **kw).run().summary
print(json.dumps([s["updates_per_s"], s["worker_cpu_seconds"] / s["updates"] * 1e9]))
"""


def measure(python: Path, alg: str, m: int, problem: str, gates: bool = False
            ) -> tuple[float, float]:
    """Updates/s of one measured run in a child process of ``python``, and the worker
    threads' CPU nanoseconds per update (less sensitive to other load on the machine)."""
    n, opts = PROBLEMS[problem]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([str(python), "-c", SNIPPET, json.dumps([alg, m, problem, n * m,
                                                                  opts, gates])],
                         env=env, capture_output=True, text=True, check=True)
    ups, cpu = json.loads(out.stdout.strip().splitlines()[-1])
    return float(ups), float(cpu)


def table(rows: list[tuple[str, list, list]], names: tuple[str, str]) -> str:
    """Medians per configuration: updates/s and worker CPU ns per update, each side."""
    lines = [f"{'configuration':30s} {'updates/s ' + names[0]:>20s} {names[1]:>12s} ratio"
             f"   {'CPU ns/update ' + names[0]:>22s} {names[1]:>10s} ratio",
             "-" * 112]
    for label, a, b in rows:
        ua, ub = (statistics.median(x[0] for x in side) for side in (a, b))
        ca, cb = (statistics.median(x[1] for x in side) for side in (a, b))
        lines.append(f"{label:30s} {ua:20,.0f} {ub:12,.0f} {ua / ub:5.3f}   "
                     f"{ca:22,.0f} {cb:10,.0f} {ca / cb:5.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", type=Path, help="the other checkout (with its .venv)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gates", action="store_true", help="open gates against none, here")
    ap.add_argument("--problems", nargs="*", default=list(PROBLEMS))
    ap.add_argument("--algorithms", nargs="*", default=list(ALGORITHMS))
    ap.add_argument("--workers", type=int, nargs="*", default=list(WORKERS))
    args = ap.parse_args(argv)
    here = Path(sys.executable)
    if args.gates:
        names, pairs = ("no script", "empty script"), [(here, False), (here, True)]
    else:
        if args.baseline is None:
            ap.error("--baseline is required (or --gates)")
        other = args.baseline.resolve() / ".venv" / "bin" / "python"
        names, pairs = ("this", "baseline"), [(here, False), (other, False)]
    configs = [(alg, m, p) for p in args.problems for alg in args.algorithms
               for m in args.workers]
    results = {c: ([], []) for c in configs}
    for r in range(args.repeats):
        for c in configs:
            order = (0, 1) if r % 2 == 0 else (1, 0)  # alternate who goes first
            for side in order:
                python, gates = pairs[side]
                results[c][side].append(measure(python, *c, gates=gates))
            a, b = results[c]
            print(f"repeat {r + 1}: {c[0]} m={c[1]} {c[2]}: updates/s {a[-1][0]:,.0f} / "
                  f"{b[-1][0]:,.0f}, CPU ns/update {a[-1][1]:,.0f} / {b[-1][1]:,.0f}",
                  flush=True)
    rows = [(f"{alg} m={m} {p}", *results[(alg, m, p)]) for alg, m, p in configs]
    print(table(rows, names))
    for i, what in enumerate(("updates/s", "CPU ns/update")):
        ratios = [statistics.median(x[i] for x in a) / statistics.median(x[i] for x in b)
                  for _, a, b in rows]
        print(f"{what}: median ratio {statistics.median(ratios):.3f}, min {min(ratios):.3f},"
              f" max {max(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
