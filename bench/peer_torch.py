"""Peer comparison: PyTorch's Hogwild MNIST example against stalesgd's ``hogwild``.

:func:`run_torch_hogwild` is a faithful equivalent of ``pytorch/examples``'
``mnist_hogwild``: ``torch.multiprocessing`` with the ``spawn`` start method,
one process per worker, the model's parameters moved to shared memory with
``model.share_memory()``, and in each process ``torch.manual_seed(seed + rank)``,
``optim.SGD(model.parameters(), lr, momentum=0)`` and the loop
``zero_grad / forward / loss / backward / step`` on the shared model, with no
lock around the step.  What is changed, so that the two implementations train
the same thing, is what the example leaves to its CNN and DataLoader:

* the model is stalesgd's MLP (ReLU hidden layers, linear output, mean softmax
  cross-entropy, ``F.cross_entropy`` = the example's ``nll_loss(log_softmax)``),
  starting from the very parameters ``MLP.init_params(seed)`` gives stalesgd;
* the data are the arrays of ``stalesgd.data.load_dataset`` (standardised as
  stalesgd does), shared with the workers, and each step draws ``batch`` rows
  uniformly with replacement (``torch.randint``), as stalesgd's workers do,
  instead of a shuffled DataLoader;
* updates are counted globally: after its backward pass a worker takes an
  update index from one shared counter (fetch-add under the counter's lock)
  and, as stalesgd's workers do, drops the step and stops once the index
  reaches the budget, so both sides apply exactly ``updates`` updates;
* the parent process is the monitor, as in stalesgd's engine: it polls the
  counter every ``POLL_SECONDS``, and every ``eval_every_updates`` updates (or
  ``eval_every_seconds``) copies the shared parameters (racy, as stalesgd's
  hogwild snapshot) into stalesgd's flat layout and evaluates them with
  stalesgd's own ``Problem.evaluate`` (same split, same rows, same kernel),
  so losses and times to target are measured the same way on both sides.

Run ``python bench/peer_torch.py --help`` for the command-line comparison; the
benchmark is ``bench/test_peer_torch.py``.  PyTorch is the optional extra
``stalesgd[torch]``; this module imports it only inside its functions.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from stalesgd.data.dataset import Dataset
from stalesgd.problems.registry import Problem

#: Monitor poll interval, the same as stalesgd's real engine.
POLL_SECONDS = 0.01
#: Default evaluation cadence and rows: stalesgd's ``stalesgd real`` defaults.
EVAL_EVERY_UPDATES = 500
EVAL_ROWS = 2000


def torch_available() -> bool:
    """True when PyTorch can be imported (the optional extra ``stalesgd[torch]``)."""
    return importlib.util.find_spec("torch") is not None


def mlp_problem(data: Dataset | Problem | str | os.PathLike[str], hidden: Sequence[int],
                dtype: str = "float32") -> Problem:
    """The ``mlp-mnist`` problem both implementations train and evaluate.

    ``data`` is a loaded :class:`Dataset`, a ready :class:`Problem` (returned
    as is after checking it is an MLP of widths ``hidden``), or a directory
    searched for MNIST by ``stalesgd.data.load_dataset``.
    """
    from stalesgd.data import load_dataset
    from stalesgd.problems.mlp import MLP

    if isinstance(data, Problem):
        if data.model.name != "mlp" or tuple(data.model.hidden) != tuple(hidden):
            raise ValueError(f"data={data.name!r} is not allowed here; an MLP problem with "
                             f"hidden={list(hidden)} is needed")
        return data
    if not isinstance(data, Dataset):
        data = load_dataset("mnist", dtype=dtype, data_dir=data)
    if data.n_classes < 2:
        raise ValueError(f"data={data.name!r} is not allowed; a classification set is needed")
    model = MLP(n_features=data.n_features, n_classes=data.n_classes, hidden=tuple(hidden),
                dtype=data.dtype)
    return Problem(name=f"mlp-{data.name}", model=model, dataset=data)


def _torch_mlp(problem: Problem, theta: np.ndarray):
    """A ``torch.nn.Sequential`` MLP holding the flat stalesgd parameters ``theta``."""
    import torch
    from torch import nn

    sizes = problem.model.sizes
    layers: list[Any] = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        w_off, (din, dout) = problem.model.layers[f"W{i + 1}"]
        b_off, _ = problem.model.layers[f"b{i + 1}"]
        with torch.no_grad():  # stalesgd keeps W as (in, out); torch.nn.Linear as (out, in)
            lin.weight.copy_(torch.from_numpy(theta[w_off:w_off + din * dout].reshape(din, dout).T))
            lin.bias.copy_(torch.from_numpy(theta[b_off:b_off + dout]))
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).to(torch.float32 if theta.dtype == np.float32
                                      else torch.float64)


def torch_to_flat(problem: Problem, model, out: np.ndarray) -> np.ndarray:
    """Copy the torch MLP's parameters into ``out`` in stalesgd's flat layout; returns ``out``."""
    linears = [m for m in model if hasattr(m, "weight")]
    for i, lin in enumerate(linears):
        w_off, (din, dout) = problem.model.layers[f"W{i + 1}"]
        b_off, _ = problem.model.layers[f"b{i + 1}"]
        out[w_off:w_off + din * dout].reshape(din, dout)[...] = lin.weight.detach().numpy().T
        out[b_off:b_off + dout] = lin.bias.detach().numpy()
    return out


def _torch_worker(rank, model, X, y, counter, stop, barrier, n_max, batch, lr, seed,
                  torch_threads):
    """One Hogwild process: the example's ``train`` with uniform minibatches and a global count."""
    import torch
    import torch.nn.functional as F
    from torch import optim

    torch.set_num_threads(torch_threads)
    torch.manual_seed(seed + rank)
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.0)
    model.train()
    n_rows = X.shape[0]
    lock = counter.get_lock()
    barrier.wait()  # the parent starts its clock when every worker is ready
    while not stop.value:
        idx = torch.randint(n_rows, (batch,))
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X[idx]), y[idx])
        loss.backward()
        if not math.isfinite(loss.item()):
            stop.value = 2
            break
        with lock:
            k = counter.value
            counter.value = k + 1
        if k >= n_max:
            stop.value = 1
            break
        optimizer.step()


def run_torch_hogwild(workers: int, hidden: Sequence[int], batch: int, lr: float,
                      updates: int | None = None, seconds: float | None = None,
                      target_loss: float | None = None,
                      data: Dataset | Problem | str | os.PathLike[str] | None = None,
                      seed: int = 0, torch_threads: int = 1, *,
                      eval_every_updates: int | None = EVAL_EVERY_UPDATES,
                      eval_every_seconds: float | None = None, eval_rows: int = EVAL_ROWS,
                      at_target: bool = False) -> dict[str, Any]:
    """Train the MLP with PyTorch's Hogwild example and measure it as stalesgd measures itself.

    Stops after ``updates`` global updates or ``seconds`` (at least one), or
    at ``target_loss`` when ``at_target``.  Returns ``updates``,
    ``seconds`` (worker start to the last join, set-up and spawn excluded),
    ``updates_per_s``, ``time_to_target`` and ``updates_to_target`` (first
    evaluation at or below ``target_loss``; NaN/None if never), ``final_loss``
    and ``final_accuracy`` (evaluated after the join), ``diverged`` and the
    evaluation trace ``evals`` (``t``, ``k``, ``loss``, ``accuracy`` lists).
    """
    if not torch_available():
        raise RuntimeError("PyTorch is not installed; install the extra: pip install "
                           "'stalesgd[torch]'")
    import torch
    import torch.multiprocessing as mp

    if int(workers) < 1:
        raise ValueError(f"workers={workers!r} is not allowed; must be at least 1")
    if int(batch) < 1 or not lr > 0:
        raise ValueError(f"batch={batch!r}, lr={lr!r} are not allowed; both must be positive")
    if updates is None and seconds is None:
        raise ValueError("updates=None and seconds=None is not allowed; give at least one")
    if (eval_every_updates is None) == (eval_every_seconds is None):
        raise ValueError("give exactly one of eval_every_updates and eval_every_seconds, got "
                         f"{eval_every_updates!r} and {eval_every_seconds!r}")
    if data is None:
        raise ValueError("data=None is not allowed; give a Dataset, a Problem or a data dir")
    problem = mlp_problem(data, hidden)
    d = problem.dataset
    theta = problem.init_params(seed)
    snapshot = np.empty_like(theta)
    torch.set_num_threads(torch_threads)
    model = _torch_mlp(problem, theta)
    model.share_memory()
    X = torch.from_numpy(d.features("train")).clone().share_memory_()
    y = torch.from_numpy(np.asarray(d.y_train, dtype=np.int64)).clone().share_memory_()
    ctx = mp.get_context("spawn")
    n_max = int(updates) if updates is not None else 2**62
    counter = ctx.Value("q", 0)
    stop = ctx.Value("b", 0, lock=False)
    barrier = ctx.Barrier(int(workers) + 1)
    procs = [ctx.Process(target=_torch_worker, daemon=True,
                         args=(r, model, X, y, counter, stop, barrier, n_max, int(batch),
                               float(lr), int(seed), int(torch_threads)))
             for r in range(int(workers))]
    evals: dict[str, list] = {"t": [], "k": [], "loss": [], "accuracy": []}

    def evaluate(t_origin: float) -> float:
        k = min(int(counter.value), n_max)
        t = time.perf_counter() - t_origin
        torch_to_flat(problem, model, snapshot)
        with np.errstate(all="ignore"):
            loss, acc = problem.evaluate(snapshot, "test", eval_rows)
        for key, v in zip(("t", "k", "loss", "accuracy"), (t, k, loss, acc), strict=True):
            evals[key].append(v)
        return loss

    with threadpool_limits(limits=1):
        problem.evaluate(snapshot, "test", 8)  # compile stalesgd's evaluation kernel first
        for p in procs:
            p.start()
        try:
            # θ_0 is evaluated before the workers pass the barrier: afterwards they update the
            # shared model at once, and with more workers than cores the parent may be
            # descheduled before its first snapshot (seen: 4 workers on 2 cores)
            torch_to_flat(problem, model, snapshot)
            with np.errstate(all="ignore"):
                loss0, acc0 = problem.evaluate(snapshot, "test", eval_rows)
            barrier.wait(timeout=300)
            t_origin = time.perf_counter()
            for key, v in zip(("t", "k", "loss", "accuracy"), (0.0, 0, loss0, acc0),
                              strict=True):
                evals[key].append(v)
            next_t = eval_every_seconds or math.inf
            next_k = eval_every_updates or math.inf
            while any(p.is_alive() for p in procs):
                time.sleep(POLL_SECONDS)
                now = time.perf_counter() - t_origin
                k = int(counter.value)
                if now >= next_t or k >= next_k:
                    loss = evaluate(t_origin)
                    while next_t <= now:
                        next_t += eval_every_seconds
                    while next_k <= k:
                        next_k += eval_every_updates
                    if not math.isfinite(loss):
                        stop.value = 2
                    if target_loss is not None and at_target and loss <= target_loss:
                        stop.value = stop.value or 1
                if seconds is not None and now >= seconds:
                    stop.value = stop.value or 1
            for p in procs:
                p.join()
            t_end = time.perf_counter() - t_origin
        finally:
            stop.value = stop.value or 1
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.terminate()
        bad = [p.exitcode for p in procs if p.exitcode != 0]
        if bad:
            raise RuntimeError(f"a PyTorch Hogwild worker failed (exit codes {bad})")
        evaluate(t_origin)
    n = min(int(counter.value), n_max)
    t_hit, k_hit = math.nan, None
    if target_loss is not None:
        hit = [i for i, v in enumerate(evals["loss"]) if v <= target_loss]
        if hit:
            t_hit, k_hit = evals["t"][hit[0]], evals["k"][hit[0]]
    return {
        "implementation": "torch", "workers": int(workers), "updates": n,
        "seconds": t_end, "updates_per_s": n / t_end if t_end > 0 else math.nan,
        "target_loss": math.nan if target_loss is None else float(target_loss),
        "time_to_target": t_hit, "updates_to_target": k_hit,
        "final_loss": float(evals["loss"][-1]), "final_accuracy": float(evals["accuracy"][-1]),
        "diverged": stop.value == 2 or not math.isfinite(evals["loss"][-1]),
        "torch_version": torch.__version__, "evals": evals,
    }


def run_stalesgd_hogwild(workers: int, hidden: Sequence[int], batch: int, lr: float,
                         updates: int | None = None, seconds: float | None = None,
                         target_loss: float | None = None,
                         data: Dataset | Problem | str | os.PathLike[str] | None = None,
                         seed: int = 0, *, eval_every_updates: int | None = EVAL_EVERY_UPDATES,
                         eval_every_seconds: float | None = None, eval_rows: int = EVAL_ROWS,
                         at_target: bool = False) -> dict[str, Any]:
    """The same run on stalesgd's real engine (``hogwild``, constant step size, float32).

    Equivalent to ``stalesgd real --problem mlp-mnist --algorithm hogwild ...``
    with the same problem object as :func:`run_torch_hogwild`; returns the
    same keys, taken from the run record.
    """
    from stalesgd.real.engine import RealRun

    from stalesgd.experiment import EvalSpec, expand, experiment_from_flags

    if data is None:
        raise ValueError("data=None is not allowed; give a Dataset, a Problem or a data dir")
    problem = mlp_problem(data, hidden)
    exp = experiment_from_flags("real", problem="mlp-mnist", algorithm="hogwild",
                                workers=int(workers), lr=float(lr), batch=int(batch),
                                dtype=problem.model.dtype.name, updates=updates, seconds=seconds,
                                target_loss=target_loss, seed=seed,
                                problem_options={"hidden": list(hidden)})
    spec = expand(exp)[0]
    spec = dataclasses.replace(
        spec, eval=EvalSpec(every_updates=eval_every_updates, every_seconds=eval_every_seconds,
                            split="test", max_rows=eval_rows),
        stop=dataclasses.replace(spec.stop, at_target=at_target))
    rec = RealRun(spec, progress=False, problem=problem).run()
    s, ev = rec.summary, rec.evals
    k_hit = s["updates_to_target"]
    return {
        "implementation": "stalesgd", "workers": int(workers), "updates": int(s["updates"]),
        "seconds": float(s["seconds"]), "updates_per_s": float(s["updates_per_s"]),
        "target_loss": float(s["target_loss"]), "time_to_target": float(s["time_to_target"]),
        "updates_to_target": None if k_hit is None else int(k_hit),
        "final_loss": float(s["final_loss"]), "final_accuracy": float(ev["accuracy"][-1]),
        "diverged": bool(s["diverged"]), "mean_tau": float(s["mean_tau"]),
        "evals": {c: np.asarray(ev[c]).tolist() for c in ("t", "k", "loss", "accuracy")},
    }


def compare(workers: int, **kw: Any) -> dict[str, Any]:
    """Run stalesgd and PyTorch with the same settings; the two results and their ratios."""
    ours = run_stalesgd_hogwild(workers, **kw)
    theirs = run_torch_hogwild(workers, **kw)
    t_ratio = (theirs["time_to_target"] / ours["time_to_target"]
               if ours["time_to_target"] > 0 else math.nan)
    return {"workers": workers, "stalesgd": ours, "torch": theirs,
            "updates_per_s_ratio": ours["updates_per_s"] / theirs["updates_per_s"],
            "time_to_target_speedup": t_ratio}


def _fmt(x: float) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print stalesgd vs PyTorch Hogwild for each worker count."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--hidden", type=int, nargs="+", default=[128, 128, 128])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--updates", type=int, default=8000)
    ap.add_argument("--target-loss", type=float, default=0.2)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default=None,
                    help="directory holding mnist/ (default: stalesgd's search path)")
    a = ap.parse_args(argv)
    if not torch_available():
        ap.error("PyTorch is not installed; pip install 'stalesgd[torch]'")
    from stalesgd.data import load_dataset

    problem = mlp_problem(load_dataset("mnist", dtype="float32", data_dir=a.data_dir), a.hidden)
    print(f"MLP 784-{'-'.join(map(str, a.hidden))}-10, batch {a.batch}, lr {a.lr}, "
          f"{a.updates} updates, target {a.target_loss}, eval every {a.eval_every} updates")
    print("workers  stalesgd upd/s  torch upd/s  ratio  t_target stalesgd  t_target torch  "
          "final loss stalesgd  final loss torch")
    for m in a.workers:
        r = compare(m, hidden=a.hidden, batch=a.batch, lr=a.lr, updates=a.updates,
                    target_loss=a.target_loss, data=problem, seed=a.seed,
                    eval_every_updates=a.eval_every)
        o, t = r["stalesgd"], r["torch"]
        print(f"{m:7d}  {o['updates_per_s']:14.0f}  {t['updates_per_s']:11.0f}  "
              f"{r['updates_per_s_ratio']:5.2f}  {_fmt(o['time_to_target']):>17}  "
              f"{_fmt(t['time_to_target']):>14}  {o['final_loss']:19.4f}  "
              f"{t['final_loss']:16.4f}")
    return 0


if __name__ == "__main__":
    from stalesgd.data import DataError

    try:
        raise SystemExit(main())
    except DataError as exc:  # data not found or corrupt: the message says how to fix it
        raise SystemExit(f"peer_torch: {exc}") from None
