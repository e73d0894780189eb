"""Benchmarks of the real engine: updates/s per algorithm, scaling from 1 to 2
workers, overhead against the bare gradient kernel, Leashed-SGD's publish
statistics, staleness under oversubscription, and peak RSS of an MNIST run.
(Scripts beside it measure what a pytest benchmark cannot: ``real_long_run.py``,
``real_rss_vs_length.py``, ``real_stress.py``, ``real_oversubscribed.py`` and
``real_compare_throughput.py``.)

The model is the MLP 784-128-10 on MNIST (from ``../shared/data`` or the
usual search path; a synthetic set of the same shape when MNIST is absent,
which ``extra_info["data"]`` says).  Updates/s come from the run records
(compilation excluded); each figure is the median of ``REPEATS`` runs
(``SCALING_REPEATS`` for the scaling from 1 to 2 workers, with the min and max of
the 2-worker runs over the 1-worker median).  Run with ``make bench``; excluded
from ``make test``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from stalesgd.real.engine import RealRun

from stalesgd.experiment import expand, experiment_from_flags
from stalesgd.problems.registry import make_problem

pytestmark = pytest.mark.bench

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REPEATS = 3
#: runs of each worker count in the scaling benchmark: the target (two workers >= 1.85x one
#: in every repetition) is judged on min, median and max of at least five
SCALING_REPEATS = 5
#: Updates per run, by batch: about a second of work per worker.
UPDATES = {16: 8000, 128: 2500}


def _mnist_options() -> tuple[str, dict]:
    if (SHARED_DATA / "mnist").is_dir():
        return "mlp-mnist", {"hidden": [128], "data_dir": str(SHARED_DATA)}
    try:
        make_problem("mlp-mnist", n_train=10)
        return "mlp-mnist", {"hidden": [128]}
    except Exception:  # noqa: BLE001 - no MNIST anywhere: same shapes, synthetic
        return "mlp-synthetic", {"hidden": [128], "n_features": 784, "n_classes": 10,
                                 "n_train": 60000, "n_test": 2000}


PROBLEM, OPTIONS = _mnist_options()


def _spec(algorithm: str, workers: int, batch: int, dtype: str, updates: int, seed: int = 0):
    exp = experiment_from_flags("real", problem=PROBLEM, algorithm=algorithm, workers=workers,
                                updates=updates, lr=0.01, batch=batch, dtype=dtype, seed=seed)
    spec = expand(exp)[0]
    problem = dataclasses.replace(spec.problem, options=dict(OPTIONS))
    ev = dataclasses.replace(spec.eval, every_updates=None, every_seconds=1e9, max_rows=500)
    return dataclasses.replace(spec, problem=problem, eval=ev)


def _median_run(algorithm: str, workers: int, batch: int, dtype: str, updates: int,
                repeats: int = REPEATS):
    summaries = []
    for r in range(repeats):
        spec = _spec(algorithm, workers, batch, dtype, updates, seed=r)
        rec = RealRun(spec, progress=False).run()
        summaries.append(rec.summary | {"tau_p99": float(np.quantile(rec.updates["tau"], 0.99))})
    ups = [s["updates_per_s"] for s in summaries]
    mid = summaries[int(np.argsort(ups)[len(ups) // 2])]
    return float(np.median(ups)), mid, summaries


#: a cache-line round trip below this is a placement of the two CPUs near each other (shared
#: last-level cache), above FAR_NS far apart (real/placement.py); in between: mixed
NEAR_NS, FAR_NS = 150.0, 250.0


def _by_placement(summaries: list[dict], one: float) -> dict:
    """Each 2-worker run's updates/s and round trips, and the 2-over-1 ratio per placement."""
    rts = [(s["core_round_trip_ns_start"], s["core_round_trip_ns_end"]) for s in summaries]
    ups = [s["updates_per_s"] for s in summaries]
    near = [u for u, r in zip(ups, rts, strict=True) if max(r) < NEAR_NS]
    far = [u for u, r in zip(ups, rts, strict=True) if min(r) > FAR_NS]
    return {"updates_per_s_2w_runs": ups, "round_trip_ns_2w_runs": rts,
            "scaling_2v1_near": float(np.median(near)) / one if near else None,
            "scaling_2v1_far": float(np.median(far)) / one if far else None}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch", [16, 128])
@pytest.mark.parametrize("algorithm", ["lock", "hogwild", "leashed"])
def test_engine_scaling(benchmark, bare_sgd, algorithm, batch, dtype):
    """1 and 2 workers; the benchmark's timed call is the 2-worker run."""
    n = UPDATES[batch]
    one, s1, _ = _median_run(algorithm, 1, batch, dtype, n, SCALING_REPEATS)
    bare = n / bare_sgd(make_problem(PROBLEM, dtype=dtype, **OPTIONS), batch, n, REPEATS)
    two, s2, runs2 = benchmark.pedantic(
        lambda: _median_run(algorithm, 2, batch, dtype, 2 * n, SCALING_REPEATS),
        rounds=1, iterations=1)
    each = [s["updates_per_s"] / one for s in runs2]  # every 2-worker run over the 1-worker median
    info = {
        "data": PROBLEM, "updates_per_s": two, "updates_per_s_1w": one,
        "scaling_2v1": two / one, "scaling_2v1_min": min(each), "scaling_2v1_max": max(each),
        "bare_kernel_updates_per_s": bare,
        "engine_vs_bare_1w": one / bare, "mean_tau_2w": s2["mean_tau"],
        "tau_p99_2w": s2["tau_p99"], "peak_param_bytes_2w": s2["peak_param_bytes"],
        **_by_placement(runs2, one),
    }
    if algorithm == "leashed":
        info.update(failed_per_update_2w=s2["failed_publishes"] / s2["updates"],
                    tries_per_update_2w=s2["tries_per_update"],
                    pool_high_water_2w=s2["pool_high_water"])
    benchmark.extra_info.update(info)


@pytest.mark.parametrize("workers", [4, 8])
@pytest.mark.parametrize("algorithm", ["lock", "hogwild", "leashed"])
def test_oversubscription(benchmark, algorithm, workers):
    """More workers than the 2 cores: τ grows a heavy tail (p99 ≫ mean); recorded."""
    ups, s, _ = benchmark.pedantic(
        lambda: _median_run(algorithm, workers, 16, "float32", 8000), rounds=1, iterations=1)
    benchmark.extra_info.update(
        data=PROBLEM, updates_per_s=ups, workers=workers, mean_tau=s["mean_tau"],
        tau_p99=s["tau_p99"], tau_p99_over_mean=s["tau_p99"] / max(s["mean_tau"], 1e-12),
        failed_per_update=(s.get("failed_publishes", 0) / s["updates"]),
        workers_applied=s["workers_applied"], record_waits=s["record_waits"],
    )


def test_peak_rss_of_an_mnist_run(benchmark, tmp_path):
    """Peak RSS of a whole `stalesgd real` process (MLP on MNIST, 2 workers, leashed)."""
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "stalesgd.app.cli", "real", "--problem", PROBLEM,
           "--algorithm", "leashed", "--workers", "2", "--updates", "5000", "--dtype", "float32",
           "--out", str(out), "--no-progress"]
    env = dict(os.environ)
    if (SHARED_DATA / "mnist").is_dir():
        env["STALESGD_DATA"] = str(SHARED_DATA)
    if PROBLEM != "mlp-mnist":
        pytest.skip("MNIST is not available; the RSS figure is only meaningful on it")
    benchmark.pedantic(lambda: subprocess.run(cmd, check=True, env=env, capture_output=True),
                       rounds=1, iterations=1)
    from stalesgd.records import load_results

    folder = next(out.iterdir())
    runs = load_results(folder).runs
    rss = int(runs["peak_rss_bytes"].iloc[0])
    benchmark.extra_info.update(peak_rss_bytes=rss, peak_rss_mb=rss / 2**20,
                                vs_cpp_reference_791mb=rss / (791 * 2**20),
                                cpu=json.loads((folder / "machine.json").read_text())["cpu_model"])
