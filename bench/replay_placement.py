"""Numeric replay on 2 cores against one, split by where the host placed the two vCPUs.

The replay pipeline hands every θ snapshot and gradient from one core to the other; on a
virtual machine whose vCPUs the host moves between cores that share a cache ("near", a
cache-line round trip of ≈ 60 ns) and cores that do not ("far", ≈ 330 ns), that costs very
different amounts.  This script replays the same simulated run (``lock``, 16 workers, batch
16, MLP 784-128-10 by default) again and again, alternating three ways: the one-core loop
(``STALESGD_REPLAY_THREADS=1``), the pipeline on every batch (``=2``) and the automatic
choice (unset: the pipeline or one core batch by batch, whichever is faster at the moment).
Before each run it measures the round trip, and it prints the updates per wall second of
each way, per placement, with the ratios to the one-core loop.

    python bench/replay_placement.py                         # 12 rounds, float32, 12,000 updates
    python bench/replay_placement.py --dtype float64 --rounds 20
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

from stalesgd.real.placement import core_round_trip_ns
from stalesgd.sim.pipeline import THREADS_ENV
from stalesgd.sim.run import SimRun

from stalesgd.experiment import expand, experiment_from_flags
from stalesgd.problems import make_problem

#: round trip (ns) below which the two vCPUs count as sharing a cache
NEAR_NS = 150.0
WAYS = {"one core": "1", "pipeline": "2", "automatic": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--updates", type=int, default=12000)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=128)
    args = ap.parse_args()
    options = {"n_features": 784, "n_train": 20000, "n_test": 500, "hidden": [args.hidden],
               "n_classes": 10}
    exp = experiment_from_flags("sim", problem="mlp-synthetic", algorithm="lock", workers=16,
                                updates=args.updates, lr=0.01, batch=16, dtype=args.dtype,
                                problem_options=options,
                                sim={"compute": "exp:1ms", "cores": 16})
    spec = expand(exp)[0]
    spec = dataclasses.replace(spec, eval=dataclasses.replace(spec.eval,
                                                              every_updates=args.updates))
    problem = make_problem("mlp-synthetic", dtype=args.dtype, **options)

    def run(way: str) -> tuple[float, float, str]:
        forced = WAYS[way]
        if forced is None:
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = forced
        round_trip = core_round_trip_ns()
        sim = SimRun(spec, progress=False, problem=problem)
        t0 = time.perf_counter()
        sim.run()
        wall = time.perf_counter() - t0
        choice = sim.hook.loop_choice
        used = "" if choice is None else f"{choice.batches[1]}p/{choice.batches[0]}o"
        return args.updates / wall, round_trip, used

    for way in WAYS:  # compile
        run(way)
    rows: list[tuple[str, str, float, float, str]] = []
    for r in range(args.rounds):
        for way in WAYS:
            rate, rt, used = run(way)
            place = "near" if rt < NEAR_NS else "far"
            rows.append((way, place, rate, rt, used))
            print(f"round {r + 1:2d} {way:9s} {rate:8.0f} upd/s  round trip {rt:4.0f} ns "
                  f"({place}) {used}", flush=True)
    one = statistics.median(rate for way, _, rate, _, _ in rows if way == "one core")
    print(f"\nMLP 784-{args.hidden}-10 {args.dtype}, lock, 16 workers, batch 16, "
          f"{args.updates} updates; one-core median {one:.0f} upd/s")
    for place in ("near", "far"):
        for way in ("pipeline", "automatic"):
            rates = [rate for w, p, rate, _, _ in rows if w == way and p == place]
            if rates:
                print(f"  {place:4s} {way:9s} n={len(rates):2d}  median "
                      f"{statistics.median(rates) / one:.2f}x one core  (min "
                      f"{min(rates) / one:.2f}, max {max(rates) / one:.2f})")


if __name__ == "__main__":
    main()
