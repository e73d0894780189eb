"""Benchmarks of the simulator: simulated updates per wall second in timing-only mode, against
a bare SimPy loop measured in the same process, and the overhead of numeric replay on top of
the gradient cost.

Targets (simulator issue): timing-only ``lock`` with 16 workers ≥ 200,000 simulated updates/s
(a bare SimPy loop manages about 500,000 events/s on this machine); numeric replay's own
overhead ≤ 25 % over the gradient kernel alone.  Run with ``make bench``.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import simpy
from stalesgd.sim.engine import simulate_timing
from stalesgd.sim.run import SimRun

from stalesgd.experiment import expand, experiment_from_flags
from stalesgd.problems.registry import make_problem

pytestmark = pytest.mark.bench

REPEATS = 3


def _bare_simpy_events_per_s(n: int = 200_000) -> float:
    """One process doing n timeouts: the floor of what any SimPy model can reach."""

    def proc(env: simpy.Environment):
        for _ in range(n):
            yield env.timeout(1.0)

    best = 0.0
    for _ in range(REPEATS):
        env = simpy.Environment()
        env.process(proc(env))
        t0 = time.perf_counter()
        env.run()
        best = max(best, n / (time.perf_counter() - t0))
    return best


@pytest.mark.parametrize("algorithm,workers,loop", [("lock", 16, "fast"), ("hogwild", 16, "fast"),
                                                    ("leashed", 16, "fast"), ("lock", 64, "fast"),
                                                    ("lock", 16, "simpy")])
def test_timing_only_throughput(benchmark, algorithm, workers, loop):
    """Simulated updates per wall-clock second, timing only, exponential compute times.

    ``loop="fast"`` is the default (the heap-based fast path applies: cores = workers);
    ``"simpy"`` forces the SimPy model that oversubscribed or elastic runs use."""
    n = 100_000

    def run():
        t0 = time.perf_counter()
        res = simulate_timing(algorithm, workers, cores=workers, compute="exp:1ms",
                              updates=n, seed=0, n_params=7850, fast=loop == "fast")
        assert res.config["event_loop"] == loop
        return n / (time.perf_counter() - t0), res

    rates = []
    res = None
    for _ in range(REPEATS - 1):
        rate, res = run()
        rates.append(rate)
    rate, res = benchmark.pedantic(run, rounds=1, iterations=1)
    rates.append(rate)
    ups = float(np.median(rates))
    bare = _bare_simpy_events_per_s()
    benchmark.extra_info.update(updates_per_s=ups, bare_simpy_events_per_s=bare,
                                sim_vs_bare_simpy=ups / bare, workers=workers,
                                target_updates_per_s=200_000)


REPLAYS = [("mlp", 16, "lock", "constant"), ("mlp", 128, "lock", "constant"),
           ("logreg", 16, "lock", "constant"), ("logreg", 16, "hogwild", "constant"),
           ("logreg", 16, "leashed", "constant"), ("logreg", 16, "lock", "tail"),
           ("logreg", 16, "leashed", "tail")]


@pytest.mark.parametrize("model,batch,algorithm,rule", REPLAYS)
def test_numeric_replay_overhead(benchmark, bare_sgd, model, batch, algorithm, rule):
    """Numeric replay with 4 simulated workers against the bare kernel loop.

    Only the simulation is timed (problem and data are built before); the overhead is the
    wall time over the bare loop's, minus one, on the same machine in the same process.
    Logistic regression (a gradient of a few microseconds) is where the simulator's own
    per-update cost shows; it runs longer so that the timing is not noise.
    """
    n = {("mlp", 16): 4000, ("mlp", 128): 1500, ("logreg", 16): 40000}[model, batch]
    name = f"{model}-synthetic"
    options = {"n_features": 784, "n_train": 20000, "n_test": 500}
    if model == "mlp":
        options |= {"hidden": [128], "n_classes": 10}
    exp = experiment_from_flags("sim", problem=name, algorithm=algorithm, workers=4,
                                updates=n, lr=0.01, batch=batch, dtype="float32",
                                stepsize=rule, problem_options=options,
                                sim={"compute": "exp:1ms", "cores": 4})
    spec = expand(exp)[0]
    spec = dataclasses.replace(spec, eval=dataclasses.replace(spec.eval, every_updates=n))
    problem = make_problem(name, dtype="float32", **options)  # built once, outside the timing
    SimRun(spec, progress=False, problem=problem).run()  # compile

    def run():
        sim = SimRun(spec, progress=False, problem=problem)
        t0 = time.perf_counter()
        sim.run()
        return time.perf_counter() - t0

    walls = [run() for _ in range(REPEATS - 1)]
    walls.append(benchmark.pedantic(run, rounds=1, iterations=1))
    wall = float(np.median(walls))
    bare = bare_sgd(problem, batch, n, REPEATS)
    benchmark.extra_info.update(updates_per_s=n / wall, bare_kernel_updates_per_s=n / bare,
                                replay_overhead=wall / bare - 1.0, target_overhead=0.25)
