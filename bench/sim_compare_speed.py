"""Simulator speed here against another checkout of stalesgd, run alternately.

Measures, in one child process of each checkout's Python per round, the simulated updates per
wall-clock second of timing-only runs (16 workers on 16 cores, 64 workers on 16 cores) and of
numeric replay (4 workers; logistic regression and an MLP), medians of three inside each
round.  Rounds alternate between the checkouts so that both see the same load on a shared
machine; the table gives each checkout's median over the rounds and the ratio here / other.

    python bench/sim_compare_speed.py --baseline ../stalesgd-main   # its .venv is used
    python bench/sim_compare_speed.py --baseline ../stalesgd-main --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

#: the measurement, run by each checkout's Python (only public names old checkouts have too)
CHILD = r"""
import dataclasses, json, time
import numpy as np
from stalesgd.experiment import expand, experiment_from_flags
from stalesgd.problems.registry import make_problem
from stalesgd.sim import simulate_timing
from stalesgd.sim.run import SimRun

out = {}
for alg, m, cores, n in [("lock", 16, 16, 200_000), ("hogwild", 16, 16, 200_000),
                         ("leashed", 16, 16, 200_000), ("lock", 64, 16, 50_000),
                         ("leashed", 64, 16, 50_000)]:
    simulate_timing(alg, m, cores=cores, compute="exp:1ms", updates=500, seed=0, n_params=7850)
    rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        simulate_timing(alg, m, cores=cores, compute="exp:1ms", updates=n, seed=0,
                        n_params=7850)
        rates.append(n / (time.perf_counter() - t0))
    out[f"timing {alg} m={m} cores={cores}"] = float(np.median(rates))
for model, alg, rule, n in [("logreg", "lock", "constant", 40_000),
                            ("logreg", "leashed", "tail", 40_000),
                            ("mlp", "lock", "constant", 4_000)]:
    name = f"{model}-synthetic"
    options = {"n_features": 784, "n_train": 20000, "n_test": 500}
    if model == "mlp":
        options |= {"hidden": [128], "n_classes": 10}
    exp = experiment_from_flags("sim", problem=name, algorithm=alg, workers=4, updates=n,
                                lr=0.01, batch=16, dtype="float32", stepsize=rule,
                                problem_options=options, sim={"compute": "exp:1ms", "cores": 4})
    spec = expand(exp)[0]
    spec = dataclasses.replace(spec, eval=dataclasses.replace(spec.eval, every_updates=n))
    problem = make_problem(name, dtype="float32", **options)
    SimRun(spec, progress=False, problem=problem).run()  # compile
    walls = []
    for _ in range(3):
        sim = SimRun(spec, progress=False, problem=problem)
        t0 = time.perf_counter()
        sim.run()
        walls.append(time.perf_counter() - t0)
    out[f"replay {model} b16 {alg} {rule}"] = n / float(np.median(walls))
print(json.dumps(out))
"""


def measure(python: Path) -> dict[str, float]:
    """One round of every measurement in a child process of ``python``."""
    done = subprocess.run([str(python), "-c", CHILD], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"{python} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, type=Path,
                    help="the other checkout (its .venv/bin/python runs its measurements)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    pythons = {"here": Path(sys.executable),
               "other": args.baseline.resolve() / ".venv" / "bin" / "python"}
    if not pythons["other"].is_file():
        raise SystemExit(f"no {pythons['other']}: run `make test` in {args.baseline} first")
    rounds: dict[str, list[dict[str, float]]] = {"here": [], "other": []}
    for r in range(args.rounds):
        for name in ("other", "here") if r % 2 else ("here", "other"):
            rounds[name].append(measure(pythons[name]))
            print(f"round {r + 1}/{args.rounds}: {name} measured", file=sys.stderr)
    print(f"{'simulated updates per wall second':42s} {'here':>12s} {'other':>12s} {'ratio':>7s}")
    for key in rounds["here"][0]:
        here = statistics.median(x[key] for x in rounds["here"])
        other = statistics.median(x[key] for x in rounds["other"])
        print(f"{key:42s} {here:12,.0f} {other:12,.0f} {here / other:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
