"""Benchmarks of the simulator: simulated updates per wall second in timing-only mode (the
compiled loop on a machine with a core per worker, with fewer cores than workers and under
elastic control, and the SimPy processes), the overhead of numeric replay on top of the
gradient cost, and the memory of long runs.

Targets: timing-only ``lock`` with 16 workers ≥ 200,000 simulated updates/s (a bare SimPy
loop manages about 500,000 events/s on this machine); numeric replay's own overhead ≤ 25 %
over the gradient kernel alone; numeric replay of ``lock`` with 16 workers on every usable
core ≥ 1.8× the one-core replay's simulated updates per wall second on 2 idle cores (MLP
784-128-10 and LeNet-5, batch 16); the peak memory of a run ten times as long within 10 %
(rows leave the simulation chunk by chunk).  Run with ``make bench``; one benchmark alone
with e.g. ``.venv/bin/python -m pytest bench/test_sim.py -m bench -k all_cores -s``.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time

import numpy as np
import pytest
import simpy
from stalesgd.sim.engine import simulate_timing
from stalesgd.sim.pipeline import THREADS_ENV
from stalesgd.sim.run import SimRun

from stalesgd.experiment import expand, experiment_from_flags
from stalesgd.machine import usable_cores
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


SCHEDULE = [(0.1, 8), (0.2, 32), (0.3, 16)]


@pytest.mark.parametrize("algorithm,workers,cores,loop,elastic", [
    ("lock", 16, 16, "compiled", False), ("hogwild", 16, 16, "compiled", False),
    ("leashed", 16, 16, "compiled", False), ("lock", 64, 64, "compiled", False),
    ("lock", 64, 16, "compiled", False), ("hogwild", 64, 16, "compiled", False),
    ("leashed", 64, 16, "compiled", False), ("lock", 32, 32, "compiled", True),
    ("lock", 16, 16, "simpy", False), ("lock", 64, 16, "simpy", False)])
def test_timing_only_throughput(benchmark, algorithm, workers, cores, loop, elastic):
    """Simulated updates per wall-clock second, timing only, exponential compute times.

    ``cores < workers``: the scheduler's time slices and run queue (4 ms slices); ``elastic``:
    workers parked and resumed by a schedule; ``"simpy"`` runs the SimPy processes (the
    definition) instead of the compiled loop."""
    n = 100_000

    def run():
        t0 = time.perf_counter()
        res = simulate_timing(algorithm, workers, cores=cores, compute="exp:1ms", updates=n,
                              seed=0, n_params=7850, fast=loop == "compiled",
                              active_schedule=SCHEDULE if elastic else None)
        assert res.config["event_loop"] == loop and res.n_updates == n
        return n / (time.perf_counter() - t0), res

    rates = []
    for _ in range(REPEATS - 1):
        rates.append(run()[0])
    rate, _ = benchmark.pedantic(run, rounds=1, iterations=1)
    rates.append(rate)
    ups = float(np.median(rates))
    bare = _bare_simpy_events_per_s()
    benchmark.extra_info.update(updates_per_s=ups, bare_simpy_events_per_s=bare,
                                sim_vs_bare_simpy=ups / bare, workers=workers, cores=cores,
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


#: the replay-on-all-cores cases: model, dtype, simulated updates per timed run
ALL_CORES = [("mlp", "float64", 3000), ("mlp", "float32", 3000), ("lenet", "float64", 600),
             ("lenet", "float32", 600)]


@pytest.mark.parametrize("model,dtype,n", ALL_CORES)
def test_numeric_replay_on_all_cores(benchmark, monkeypatch, model, dtype, n):
    """Numeric replay of ``lock`` with 16 simulated workers, batch 16: simulated updates per
    wall second with the gradients on every usable core against the one-core replay, timed
    alternately in the same process (each pair sees the same load); the final θ of both must
    be the same bits.  MLP 784-128-10 on synthetic 784-feature data, LeNet-5 on synthetic
    28×28 images.  ``replay_parallel_vs_serial`` is the median of the pairs' ratios; on a
    loaded machine it understates what idle cores give.  ``replay_automatic_vs_serial``:
    the same with the thread count left automatic (the loop chosen batch by batch)."""
    cores = usable_cores() or 1
    if cores < 2:
        pytest.skip("one usable core: nothing to run in parallel")
    workers = 16
    if model == "mlp":
        name = "mlp-synthetic"
        options = {"n_features": 784, "n_train": 20000, "n_test": 500, "hidden": [128],
                   "n_classes": 10}
    else:
        name, options = "lenet-synthetic", {"n_train": 2000, "n_test": 200}
    exp = experiment_from_flags("sim", problem=name, algorithm="lock", workers=workers,
                                updates=n, lr=0.01, batch=16, dtype=dtype,
                                problem_options=options,
                                sim={"compute": "exp:1ms", "cores": workers})
    spec = expand(exp)[0]
    spec = dataclasses.replace(spec, eval=dataclasses.replace(spec.eval, every_updates=n))
    problem = make_problem(name, dtype=dtype, **options)  # built once, outside the timing

    def run(threads: int | None) -> tuple[float, np.ndarray]:
        if threads is None:  # the automatic choice, batch by batch (what users get)
            monkeypatch.delenv(THREADS_ENV, raising=False)
        else:
            monkeypatch.setenv(THREADS_ENV, str(threads))
        sim = SimRun(spec, progress=False, problem=problem)
        t0 = time.perf_counter()
        sim.run()
        wall = time.perf_counter() - t0
        assert threads is None or sim.hook.threads == threads
        return wall, sim.hook.theta.copy()

    run(1), run(cores), run(None)  # compile
    serial, parallel, ratios, auto_ratios = [], [], [], []
    for _ in range(REPEATS - 1):
        (w1, t1), (w2, t2), (w3, t3) = run(1), run(cores), run(None)
        assert np.array_equal(t1, t2) and np.array_equal(t1, t3)
        serial.append(n / w1)
        parallel.append(n / w2)
        ratios.append(w1 / w2)
        auto_ratios.append(w1 / w3)
    w1, t1 = run(1)
    w2, t2 = benchmark.pedantic(run, args=(cores,), rounds=1, iterations=1)
    assert np.array_equal(t1, t2)
    serial.append(n / w1)
    parallel.append(n / w2)
    ratios.append(w1 / w2)
    benchmark.extra_info.update(
        updates_per_s=float(np.median(parallel)), serial_updates_per_s=float(np.median(serial)),
        replay_parallel_vs_serial=float(np.median(ratios)), ratio_min=float(min(ratios)),
        ratio_max=float(max(ratios)), threads=cores, workers=workers, batch=16,
        target_replay_parallel_vs_serial=1.8,
        replay_automatic_vs_serial=float(np.median(auto_ratios)))
    print(f"\n{model} {dtype}: one core {np.median(serial):.0f} upd/s, {cores} threads "
          f"{np.median(parallel):.0f} upd/s, ratio median {np.median(ratios):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f}); automatic choice "
          f"{np.median(auto_ratios):.2f} (min {min(auto_ratios):.2f}, "
          f"max {max(auto_ratios):.2f})")


_PEAK = """
import sys
from stalesgd.app.cli import main
from stalesgd.machine import peak_rss_bytes
code = main(["sim", "--problem", "logreg-synthetic", "--algorithm", "leashed", "--workers",
             "8", "--cores", "4", "--compute", "exp:2ms", "--timing-only", "--updates",
             sys.argv[1], "--log-rows", sys.argv[2], "--out", sys.argv[3], "--no-progress"])
print(peak_rss_bytes())
sys.exit(code)
"""


@pytest.mark.parametrize("rows,short", [("none", 1_000_000), ("all", 3_000_000)])
def test_memory_of_long_runs_is_bounded(benchmark, tmp_path, rows, short):
    """Peak resident memory of a 10⁷-update timing-only run against a shorter one: with no
    rows kept (the simulator alone), and with every row written to the results folder (after
    the first chunks, whose writing sets the writer's own peak)."""

    def peak(updates: int) -> int:
        out = subprocess.run([sys.executable, "-c", _PEAK, str(updates), rows,
                              str(tmp_path / str(updates))], capture_output=True, text=True,
                             check=True)
        return int(out.stdout.strip().splitlines()[-1])

    before = peak(short)
    t0 = time.perf_counter()
    after = benchmark.pedantic(peak, args=(10_000_000,), rounds=1, iterations=1)
    benchmark.extra_info.update(peak_rss_short_bytes=before, peak_rss_long_bytes=after,
                                short_updates=short, rss_long_over_short=after / before,
                                updates_per_call=10_000_000, wall_s=time.perf_counter() - t0,
                                target_rss_long_over_short=1.1)
