"""The distributed engine (``ray``) against the pattern of Ray's documented parameter-server
example, and its per-update overhead against the thread engine.

Ray's example ("Parameter Server", asynchronous version) keeps the loop in the driver: it
waits for any worker's gradient (``ray.wait``), hands it to the server actor's
``apply_gradients``, and sends that worker the returned weights for its next gradient.
Here that pattern computes its gradients with the same Numba kernel as stalesgd's engines,
on the same problem (MNIST MLP 784-128-10 by default), so the two differ only in how
messages flow.  For each batch size and worker count the script prints updates/s of both,
their ratio, stalesgd's rate as a share of the thread engine's 1-worker rate, and the peak
memory of the Ray process tree (driver and every ``ray::`` actor process, sampled) during
a run of the most workers.

Both rates are steady-state rates: the example's loop is timed after a warm-up call, and
stalesgd's from its first read to its last apply (the update rows' ``t_read``/``t_apply``;
the run's own ``updates_per_s`` also counts the workers' start, and is printed beside it).
Memory is sampled in a run of its own: the sampler reads ``/proc`` every 50 ms, which on a
small machine takes CPU from the run it watches.

    python bench/ray_engine.py                      # batch 16 and 128, 1, 2, 4 workers
    python bench/ray_engine.py --updates 500 --batches 16 --workers 1 2

Ray must be installed (``pip install 'stalesgd[ray]'``).  Measurements on a loaded machine
are pessimistic for both sides alike; compare the ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
SHARED_DATA = HERE.parent / "shared" / "data"


def spec_for(engine: str, workers: int, batch: int, updates: int, problem: str, options):
    from stalesgd.experiment import expand, experiment_from_flags

    exp = experiment_from_flags(engine, problem=problem, algorithm="lock", workers=workers,
                                updates=updates, lr=0.01, batch=batch,
                                problem_options=options)
    s = expand(exp)[0]
    return dataclasses.replace(s, eval=dataclasses.replace(s.eval, every_updates=None,
                                                           every_seconds=1e9))


class DocServer:
    """The example's server: holds the weights, applies the gradients it is given."""

    def __init__(self, theta: np.ndarray, lr: float) -> None:
        self.theta = theta.copy()
        self.lr = lr

    def apply_gradients(self, *gradients: np.ndarray) -> np.ndarray:
        self.theta -= self.lr * np.sum(gradients, axis=0)
        return self.theta

    def get_weights(self) -> np.ndarray:
        return self.theta


class DocWorker:
    """The example's worker: the gradient of its next minibatch at the weights sent."""

    def __init__(self, problem, batch: int, seed: int) -> None:
        self.problem = problem
        self.rng = np.random.default_rng(seed)
        self.batch = batch
        model = problem.model
        self.grad = np.zeros(model.n_params, dtype=model.dtype)
        self.ws = model.workspace(batch)
        self.X = problem.dataset.inputs("train")

    def compute_gradients(self, weights: np.ndarray) -> np.ndarray:
        idx = self.rng.integers(0, self.problem.dataset.n_train, self.batch)
        m = self.problem.model
        m.grad_kernel(weights, self.X, self.problem.dataset.y_train, idx, self.grad, self.ws,
                      m.dims)
        return self.grad.copy()


def doc_pattern(ray, problem, workers: int, batch: int, updates: int) -> float:
    """Updates/s of the example's asynchronous loop."""
    theta = problem.init_params(0)
    ps = ray.remote(num_cpus=0)(DocServer).remote(theta, 0.01)
    ref = ray.put(problem)
    ws = [ray.remote(num_cpus=0)(DocWorker).remote(ref, batch, i) for i in range(workers)]
    weights = ps.get_weights.remote()
    ray.get([w.compute_gradients.remote(weights) for w in ws])  # compile, warm up
    t = time.monotonic()
    pending = {w.compute_gradients.remote(weights): w for w in ws}
    for _ in range(updates):
        ready, _ = ray.wait(list(pending))
        w = pending.pop(ready[0])
        weights = ps.apply_gradients.remote(ready[0])
        pending[w.compute_gradients.remote(weights)] = w
    ray.get(weights)
    rate = updates / (time.monotonic() - t)
    for a in [ps, *ws]:
        ray.kill(a)
    return rate


def tree_rss_bytes() -> int:
    """Resident bytes of this process and every Ray actor or core process of this user."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if int(pid) != os.getpid() and b"ray" not in cmd:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
    return total


def steady_rate(record) -> float:
    """Applied updates per second from the first read to the last apply (the update rows)."""
    u = record.updates
    keep = ~np.asarray(u["dropped"], dtype=bool)
    t_read, t_apply = np.asarray(u["t_read"])[keep], np.asarray(u["t_apply"])[keep]
    return float(keep.sum() / (t_apply.max() - t_read.min()))


def peak_rss_during(fn) -> tuple[object, int]:
    peak = [tree_rss_bytes()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], tree_rss_bytes())
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        out = fn()
    finally:
        done.set()
        t.join()
    return out, peak[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--updates", type=int, default=2000)
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 128])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--problem", default="mlp-mnist")
    args = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import ray
    from stalesgd.real.engine import RealRun
    from stalesgd.real.ps.engine import RayRun

    from stalesgd.problems.registry import make_problem

    options = {"hidden": [128], "data_dir": str(SHARED_DATA)} if "mnist" in args.problem \
        else {}
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    print(f"{'batch':>5} {'m':>3} {'stalesgd upd/s':>15} {'(whole run)':>11} "
          f"{'example upd/s':>14} {'ratio':>6} {'of thread m=1':>13} {'peak RSS (MB)':>14}")
    for batch in args.batches:
        problem = make_problem(args.problem, dtype="float64", **options)
        thread = RealRun(spec_for("real", 1, batch, args.updates * 5, args.problem, options),
                         progress=False).run().summary["updates_per_s"]
        for m in args.workers:
            spec = spec_for("ray", m, batch, args.updates, args.problem, options)
            rec = RayRun(spec, progress=False).run()
            ours, whole = steady_rate(rec), rec.summary["updates_per_s"]
            theirs = doc_pattern(ray, problem, m, batch, args.updates)
            peak = "-"
            if m == max(args.workers):
                _, nbytes = peak_rss_during(lambda spec=spec: RayRun(spec, progress=False).run())
                peak = f"{nbytes / 1e6:.0f}"
            print(f"{batch:>5} {m:>3} {ours:>15.0f} {whole:>11.0f} {theirs:>14.0f} "
                  f"{ours / theirs:>6.2f} {ours / thread:>13.3f} {peak:>14}")
    ray.shutdown()


if __name__ == "__main__":
    main()
