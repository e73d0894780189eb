"""A multilayer perceptron with one hidden tanh layer and a softmax cross-entropy head.

Parameters, in order inside the flat vector: ``W1`` ``(d, h)``, ``b1`` ``(h,)``, ``W2``
``(h, K)``, ``b2`` ``(K,)``; ``dims = [d, h, K]`` (int64).  The kernels keep the contract
of :mod:`stalesgd.problems.base`: compiled with ``@njit(nogil=True)``, they walk the
minibatch one row at a time in a workspace of ``2h + K + d`` elements and allocate nothing.
Each row is copied into the workspace with :func:`stalesgd.problems.inputs.copy_row`, which
reads every form a data set's inputs come in (float rows, MNIST's packed pixels, a sparse
set's CSR rows), so the model runs on every data set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from stalesgd.problems import INIT_SCHEMES, Model, resolve_dtype
from stalesgd.problems.inputs import copy_row
from stalesgd.validation import choice, integer


@njit(nogil=True, fastmath=False)
def _forward_row(theta, x, ws, dims):
    """Hidden activations into ``ws[:h]``, logits into ``ws[h:h+K]``; returns log-sum-exp."""
    d, h, k = dims[0], dims[1], dims[2]
    w2 = d * h + h
    b2 = w2 + h * k
    for j in range(h):
        s = theta[d * h + j]
        for i in range(d):
            s += x[i] * theta[i * h + j]
        ws[j] = math.tanh(s)
    top = -np.inf
    for c in range(k):
        z = theta[b2 + c]
        for j in range(h):
            z += ws[j] * theta[w2 + j * k + c]
        ws[h + c] = z
        top = max(top, z)
    total = 0.0
    for c in range(k):
        total += math.exp(ws[h + c] - top)
    return top + math.log(total)


@njit(nogil=True, fastmath=False)
def tanh_mlp_grad_kernel(theta, X, y, idx, grad, ws, dims):
    """Mean cross-entropy of ``X[idx]``; its gradient written into ``grad``."""
    d, h, k = dims[0], dims[1], dims[2]
    w2 = d * h + h
    b2 = w2 + h * k
    grad[:] = 0.0
    n = idx.shape[0]
    x = ws[2 * h + k:2 * h + k + d]  # the row, as floats
    loss = 0.0
    for r in range(n):
        row = idx[r]
        copy_row(X, row, x)
        lse = _forward_row(theta, x, ws, dims)
        label = y[row]
        loss += lse - ws[h + label]
        for j in range(h):
            ws[h + k + j] = 0.0
        for c in range(k):
            dz = math.exp(ws[h + c] - lse)
            if c == label:
                dz -= 1.0
            dz /= n
            grad[b2 + c] += dz
            for j in range(h):
                grad[w2 + j * k + c] += ws[j] * dz
                ws[h + k + j] += theta[w2 + j * k + c] * dz
        for j in range(h):
            dpre = ws[h + k + j] * (1.0 - ws[j] * ws[j])
            grad[d * h + j] += dpre
            for i in range(d):
                grad[i * h + j] += x[i] * dpre
    return loss / n


@njit(nogil=True, fastmath=False)
def tanh_mlp_loss_kernel(theta, X, y, idx, ws, dims):
    """Summed cross-entropy and correct predictions over ``X[idx]``."""
    d, h, k = dims[0], dims[1], dims[2]
    x = ws[2 * h + k:2 * h + k + d]  # the row, as floats
    loss = 0.0
    correct = 0
    for r in range(idx.shape[0]):
        row = idx[r]
        copy_row(X, row, x)
        lse = _forward_row(theta, x, ws, dims)
        loss += lse - ws[h + y[row]]
        best = 0
        for c in range(1, k):
            if ws[h + c] > ws[h + best]:
                best = c
        if best == y[row]:
            correct += 1
    return loss, correct


@dataclass
class TanhMLP(Model):
    """``TanhMLP(n_features, n_classes, hidden=32, dtype="float64")``."""

    n_features: int = 1
    n_classes: int = 2
    hidden: int = 32

    def __post_init__(self) -> None:
        self.dtype = resolve_dtype(self.dtype)
        d, h, k = int(self.n_features), int(self.hidden), int(self.n_classes)
        if d < 1 or h < 1 or k < 2:
            raise ValueError(f"TanhMLP needs n_features >= 1, hidden >= 1 and n_classes >= 2; "
                             f"got {d}, {h}, {k}")
        self.name = "tanhmlp"
        self.dims = np.array([d, h, k], dtype=np.int64)
        self.layers = {"W1": (0, (d, h)), "b1": (d * h, (h,)),
                       "W2": (d * h + h, (h, k)), "b2": (d * h + h + h * k, (k,))}
        self.n_params = d * h + h + h * k + k
        self.is_classifier = True

    @property
    def grad_kernel(self) -> Any:
        return tanh_mlp_grad_kernel

    @property
    def loss_kernel(self) -> Any:
        return tanh_mlp_loss_kernel

    def workspace_size(self, batch: int) -> int:
        return 2 * int(self.hidden) + int(self.n_classes) + int(self.n_features)

    def init_params(self, seed: int, scheme: str = "default") -> np.ndarray:
        """Glorot uniform weights (``default``, ``glorot``), He normal (``he``) or
        N(0, 0.01²) (``normal``); biases zero.  Drawn in float64, then cast."""
        scheme = choice(scheme, "init", INIT_SCHEMES)
        rng = np.random.default_rng(seed)
        theta = np.zeros(self.n_params)
        for name in ("W1", "W2"):
            off, (din, dout) = self.layers[name]
            if scheme in ("default", "glorot"):
                a = math.sqrt(6.0 / (din + dout))
                w = rng.uniform(-a, a, din * dout)
            elif scheme == "he":
                w = rng.normal(0.0, math.sqrt(2.0 / din), din * dout)
            else:
                w = rng.normal(0.0, 0.01, din * dout)
            theta[off : off + din * dout] = w
        return theta.astype(self.dtype)


def make_tanh_mlp(data: Any, dtype: type, hidden: Any = 32) -> TanhMLP:
    """The plug-in factory: a :class:`TanhMLP` for ``data`` (any data set with classes)."""
    return TanhMLP(n_features=data.n_features, n_classes=data.n_classes,
                   hidden=integer(hidden, "hidden", 1, 100_000), dtype=dtype)
