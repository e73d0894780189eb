"""Peer comparison: stalesgd's ``hogwild`` against PyTorch's Hogwild MNIST example.

Same MLP (784-128-128-128-10), same initial parameters, same standardised
MNIST arrays, batch 16, constant step size 0.05, float32, one BLAS / intra-op
thread per worker, the same number of updates and the same evaluation
(stalesgd's ``Problem.evaluate`` on the first 2000 test rows every
``EVAL_EVERY`` updates).  Recorded in ``extra_info``: updates/s of both and
their ratio, time to the target loss of both and the speed-up, final loss and
accuracy, and the machine's load average.  Needs the optional extra
``stalesgd[torch]`` and MNIST in ``<repo>/../shared/data``; skipped otherwise.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed (optional extra: pip install 'stalesgd[torch]')")

from peer_torch import _torch_mlp, compare, mlp_problem, torch_to_flat  # noqa: E402

pytestmark = pytest.mark.bench

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HIDDEN = [128, 128, 128]
BATCH = 16
LR = 0.05
UPDATES = 8000
TARGET_LOSS = 0.2
EVAL_EVERY = 250


@pytest.fixture(scope="module")
def problem():
    """The float32 ``mlp-mnist`` problem shared by both implementations."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"MNIST is not available in {SHARED_DATA.name}/mnist next to the repository")
    from stalesgd.data import load_dataset

    return mlp_problem(load_dataset("mnist", dtype="float32", data_dir=SHARED_DATA), HIDDEN)


def test_same_model_same_gradient(problem):
    """The torch MLP built from stalesgd's θ0 gives the same loss and gradient on a batch."""
    import torch.nn.functional as F

    torch.set_num_threads(1)
    theta = problem.init_params(3)
    model = _torch_mlp(problem, theta)
    assert np.array_equal(torch_to_flat(problem, model, np.empty_like(theta)), theta)
    idx = np.random.default_rng(1).integers(0, problem.dataset.X_train.shape[0], BATCH)
    grad = np.zeros_like(theta)
    loss = problem.loss_grad(theta, idx, grad, problem.workspace(BATCH))
    X = torch.from_numpy(problem.dataset.features("train", idx))
    y = torch.from_numpy(np.asarray(problem.dataset.y_train[idx], dtype=np.int64))
    t_loss = F.cross_entropy(model(X), y)
    t_loss.backward()
    for lin in (m for m in model if hasattr(m, "weight")):
        lin.weight.data = lin.weight.grad
        lin.bias.data = lin.bias.grad
    t_grad = torch_to_flat(problem, model, np.empty_like(theta))
    assert t_loss.item() == pytest.approx(loss, rel=1e-5)
    np.testing.assert_allclose(t_grad, grad, rtol=1e-3, atol=1e-5 * np.abs(grad).max())


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_hogwild_vs_torch(benchmark, problem, workers):
    """Both apply exactly UPDATES updates; stalesgd's figures over PyTorch's are recorded."""
    load_before = os.getloadavg()[0]
    result = benchmark.pedantic(
        lambda: compare(workers, hidden=HIDDEN, batch=BATCH, lr=LR, updates=UPDATES,
                        target_loss=TARGET_LOSS, data=problem, seed=0,
                        eval_every_updates=EVAL_EVERY),
        rounds=1, iterations=1)
    ours, theirs = result["stalesgd"], result["torch"]
    for r in (ours, theirs):
        assert r["updates"] == UPDATES
        assert not r["diverged"]
        assert r["final_loss"] < r["evals"]["loss"][0]
    # same initial parameters, same evaluation: the loss at t = 0 agrees exactly
    assert ours["evals"]["loss"][0] == theirs["evals"]["loss"][0]
    benchmark.extra_info.update(
        workers=workers, hidden=str(HIDDEN), batch=BATCH, lr=LR, updates=UPDATES,
        target_loss=TARGET_LOSS, eval_every_updates=EVAL_EVERY,
        updates_per_s=ours["updates_per_s"], torch_updates_per_s=theirs["updates_per_s"],
        stalesgd_vs_torch_updates_per_s=result["updates_per_s_ratio"],
        time_to_target=ours["time_to_target"], torch_time_to_target=theirs["time_to_target"],
        stalesgd_vs_torch_time_to_target=result["time_to_target_speedup"],
        updates_to_target=ours["updates_to_target"],
        torch_updates_to_target=theirs["updates_to_target"],
        final_loss=ours["final_loss"], torch_final_loss=theirs["final_loss"],
        final_accuracy=ours["final_accuracy"], torch_final_accuracy=theirs["final_accuracy"],
        mean_tau=ours["mean_tau"], torch_version=theirs["torch_version"],
        load_average_1m_before=load_before, load_average_1m_after=os.getloadavg()[0],
        reached_target=bool(math.isfinite(ours["time_to_target"])
                            and math.isfinite(theirs["time_to_target"])),
    )


def test_torch_stops_at_target_within_a_time_budget(problem):
    """With ``seconds`` and ``at_target``, the PyTorch run stops at the first evaluation at or
    below the target, well before the budget, and reports when it got there."""
    from peer_torch import run_torch_hogwild

    r = run_torch_hogwild(2, HIDDEN, BATCH, LR, seconds=60.0, target_loss=0.5, data=problem,
                          eval_every_updates=EVAL_EVERY, at_target=True)
    losses = r["evals"]["loss"]
    first = next(i for i, v in enumerate(losses) if v <= 0.5)
    assert first == len(losses) - 2  # the hit, then only the final evaluation after the join
    assert r["time_to_target"] == r["evals"]["t"][first] < r["seconds"] < 60.0
    assert r["updates_to_target"] <= r["updates"]


def test_bad_arguments_are_named(problem):
    """Invalid settings raise errors that name the offending argument."""
    from peer_torch import run_torch_hogwild

    with pytest.raises(ValueError, match="workers=0"):
        run_torch_hogwild(0, HIDDEN, BATCH, LR, updates=10, data=problem)
    with pytest.raises(ValueError, match="updates=None and seconds=None"):
        run_torch_hogwild(1, HIDDEN, BATCH, LR, data=problem)
    with pytest.raises(ValueError, match="hidden="):
        run_torch_hogwild(1, [64], BATCH, LR, updates=10, data=problem)
