"""Checking a model's gradient kernel against central finite differences.

The built-in models' tests use :func:`check_gradient`, and plug-in authors can call it the
same way from theirs::

    from stalesgd.problems.testing import check_gradient
    check_gradient(model, (X, y))          # raises GradientCheckError when it is wrong

Why these numbers: in float64 the error of a central difference with step ``h`` is
O(h²·f''') + O(eps·|f|/h) ≈ 1e-10 at ``h = 1e-6``, so a tolerance of 1e-7 of the largest
gradient entry is tight and still robust.  A loss with kinks (ReLU, max-pool) can put a
step across a kink; ``steps`` then lists smaller steps to try at that coordinate before it
counts as a failure.  Single precision rounds the loss too coarsely for a finite difference
to check a gradient, so the model must be float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stalesgd.data.dataset import Dataset
from stalesgd.problems.base import Model

__all__ = ["GradientCheck", "GradientCheckError", "check_gradient"]


class GradientCheckError(AssertionError):
    """A gradient kernel that disagrees with finite differences or breaks the contract."""


@dataclass(frozen=True)
class GradientCheck:
    """What :func:`check_gradient` compared: the minibatch loss, how many coordinates, the
    largest disagreement and where (``worst`` is a parameter index), and the scale the
    tolerance is relative to (the largest gradient entry, at least 1e-3)."""

    loss: float
    n_checked: int
    max_error: float
    worst: int
    scale: float


def _inputs(model: Model, data: Any) -> tuple[Any, np.ndarray, Model]:
    """(kernel inputs, labels, model) of a Dataset, a Problem or an ``(X, y)`` pair."""
    if hasattr(data, "dataset") and hasattr(data, "model"):  # a Problem
        model = data.model if model is None else model
        data = data.dataset
    if isinstance(data, Dataset):
        return data.inputs("train"), data.y_train, model
    if isinstance(data, tuple) and len(data) == 2:
        return data[0], data[1], model
    raise TypeError("data must be a stalesgd Problem, a Dataset or an (X, y) pair; got "
                    f"{type(data).__name__}")


def _layer_of(model: Model, k: int) -> str:
    for name, (offset, shape) in model.layers.items():
        if offset <= k < offset + int(np.prod(shape)):
            return f" (layer {name})"
    return ""


def check_gradient(model: Model | None, data: Any, *, theta: np.ndarray | None = None,
                   idx: Any = None, coords: Any = None, steps: tuple[float, ...] = (1e-6,),
                   tol: float = 1e-7, seed: int = 0) -> GradientCheck:
    """Compare ``model.grad_kernel`` with central differences of its own returned loss.

    ``data``: a :class:`~stalesgd.problems.Problem` (its model is used when ``model`` is
    None), a :class:`~stalesgd.data.Dataset` (its training split) or an ``(X, y)`` pair in
    the form the kernels take.  ``theta``: the point (default: ``init_params(seed)`` plus
    N(0, 0.1²) noise, so that no bias sits at zero); ``idx``: the minibatch rows (default:
    8 rows drawn with ``seed``, repeats allowed); ``coords``: the parameter indices to check
    (default: all).  A coordinate passes when ``|analytic - fd| <= tol * scale`` at one of
    ``steps`` (tried in order), ``scale`` being the largest gradient entry (at least 1e-3).

    Also checked: the kernel writes every gradient entry (``grad`` starts as NaN), leaves
    ``theta`` unchanged, and returns the same mean loss as ``loss_kernel``'s sum over
    ``len(idx)`` (relative 1e-9).  Raises :class:`GradientCheckError` naming the first
    problem and the worst coordinates; returns a :class:`GradientCheck` otherwise.
    """
    X, y, model = _inputs(model, data)
    if model is None or model.dtype != np.float64:
        raise ValueError("check_gradient needs a float64 model (finite differences in float32 "
                         f"are rounding noise); got {None if model is None else model.dtype}")
    rng = np.random.default_rng(seed)
    if theta is None:
        theta = model.init_params(seed) + rng.normal(0.0, 0.1, model.n_params)
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    n = len(y)
    idx = (rng.integers(0, n, size=min(8, n)) if idx is None else np.asarray(idx))
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    ws = model.workspace(len(idx))
    name = getattr(model, "name", type(model).__name__)

    def loss_at(point: np.ndarray) -> float:
        return float(model.grad_kernel(point, X, y, idx, np.empty_like(point), ws, model.dims))

    grad = np.full_like(theta, np.nan)
    before = theta.copy()
    loss = float(model.grad_kernel(theta, X, y, idx, grad, ws, model.dims))
    if not np.array_equal(theta, before):
        raise GradientCheckError(f"grad_kernel of {name} changed theta")
    if not np.isfinite(loss):
        raise GradientCheckError(f"grad_kernel of {name} returned the loss {loss!r}")
    unset = np.flatnonzero(~np.isfinite(grad))
    if unset.size:
        first = int(unset[0])
        raise GradientCheckError(f"grad_kernel of {name} left {unset.size} gradient entries "
                                 f"NaN or infinite, first theta[{first}]"
                                 f"{_layer_of(model, first)}")
    loss_sum, _ = model.loss_kernel(theta, X, y, idx, ws, model.dims)
    if abs(loss_sum / len(idx) - loss) > 1e-9 * max(abs(loss), 1.0):
        raise GradientCheckError(f"{name}: grad_kernel returns the mean loss {loss!r} but "
                                 f"loss_kernel sums to {loss_sum!r} over {len(idx)} rows "
                                 f"(mean {loss_sum / len(idx)!r})")
    scale = max(float(np.abs(grad).max()), 1e-3)
    checked = np.arange(theta.size) if coords is None else np.asarray(coords, dtype=np.int64)
    errors = np.empty(checked.size)
    fds = np.empty(checked.size)
    for j, k in enumerate(checked):
        for h in steps:
            tp, tm = theta.copy(), theta.copy()
            tp[k] += h
            tm[k] -= h
            fds[j] = (loss_at(tp) - loss_at(tm)) / (2 * h)
            errors[j] = abs(fds[j] - grad[k])
            if errors[j] <= tol * scale:
                break
    bad = np.flatnonzero(errors > tol * scale)
    worst = int(np.argmax(errors)) if errors.size else 0
    if bad.size:
        shown = "; ".join(f"theta[{checked[j]}]{_layer_of(model, checked[j])} analytic "
                          f"{grad[checked[j]]:.10g} vs finite difference {fds[j]:.10g}"
                          for j in bad[np.argsort(-errors[bad])][:3])
        raise GradientCheckError(f"grad_kernel of {name} disagrees with central differences "
                                 f"at {bad.size} of {checked.size} coordinates (tolerance "
                                 f"{tol:g} x {scale:.3g}); worst: {shown}")
    return GradientCheck(loss=loss, n_checked=int(checked.size),
                         max_error=float(errors[worst]) if errors.size else 0.0,
                         worst=int(checked[worst]) if errors.size else -1, scale=scale)
