"""Multilayer perceptron: any depth and width, ReLU hidden layers, softmax cross-entropy.

Parameters, in order inside the flat vector, for layer l = 1..L:
``W{l}`` of shape ``(d_{l-1}, d_l)`` (row-major, so a minibatch forward pass
is one GEMM ``A_{l-1} @ W_l``) followed by ``b{l}`` of shape ``(d_l,)``.
``dims = [L, d_0, d_1, ..., d_L]`` (int64) with ``d_0`` the number of input
features and ``d_L`` the number of classes.  With no hidden layer this is
exactly softmax regression (see ``softmax.py``).

The loss is the mean softmax cross-entropy of the minibatch, computed with
log-sum-exp.  Kernels gather the minibatch into the workspace and run every
matrix product as ``np.dot(a, b, out)`` on workspace views, so a step
allocates nothing; bias and ReLU are fused into one pass after each GEMM.

Workspace for a batch of B rows: ``B * (d_0 + d_1 + ... + d_L)`` elements for
the activations (the backward pass overwrites them with the deltas) plus
``B * max(d_1..d_{L-1})`` scratch for back-propagated activations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

from stalesgd.jitcache import cached
from stalesgd.problems._kernels import (
    check_scheme,
    gather_rows,
    init_weight,
    scalar_like,
    softmax_xent_loss_rows,
    softmax_xent_rows,
)
from stalesgd.problems.base import Model, resolve_dtype
from stalesgd.validation import OptionError, a_type, integer


@cached
@njit(nogil=True, fastmath=False)
def _forward(theta, X, idx, ws, dims):
    """Forward pass into the workspace; returns (offset of the logits in ws, n_params)."""
    L = dims[0]
    B = idx.shape[0]
    d0 = dims[1]
    A = ws[: B * d0].reshape((B, d0))
    gather_rows(X, idx, A)
    zero = scalar_like(0.0, ws)
    a_off = 0
    pos = B * d0
    w_off = 0
    for layer in range(L):
        din = dims[1 + layer]
        dout = dims[2 + layer]
        W = theta[w_off : w_off + din * dout].reshape((din, dout))
        b = theta[w_off + din * dout : w_off + din * dout + dout]
        Ain = ws[a_off : a_off + B * din].reshape((B, din))
        Z = ws[pos : pos + B * dout].reshape((B, dout))
        np.dot(Ain, W, Z)
        if layer < L - 1:
            for i in range(B):
                for j in range(dout):
                    v = Z[i, j] + b[j]
                    Z[i, j] = v if v > zero else zero
        else:
            for i in range(B):
                for j in range(dout):
                    Z[i, j] += b[j]
        a_off = pos
        pos += B * dout
        w_off += din * dout + dout
    return a_off, w_off


@cached
@njit(nogil=True, fastmath=False)
def mlp_grad_kernel(theta, X, y, idx, grad, ws, dims):
    """Mean softmax cross-entropy of ``X[idx]``, its gradient into ``grad`` (contract in base)."""
    L = dims[0]
    B = idx.shape[0]
    K = dims[1 + L]
    z_off, w_end = _forward(theta, X, idx, ws, dims)
    Z = ws[z_off : z_off + B * K].reshape((B, K))
    inv_b = scalar_like(1.0 / B, ws)
    zero = scalar_like(0.0, ws)
    loss_sum, _ = softmax_xent_rows(Z, y, idx, inv_b)
    # scratch for back-propagated activations lies after the last activation block
    scratch = z_off + B * K
    w_off = w_end
    d_off = z_off
    for layer in range(L - 1, -1, -1):
        din = dims[1 + layer]
        dout = dims[2 + layer]
        w_off -= din * dout + dout
        a_off = d_off - B * din
        dZ = ws[d_off : d_off + B * dout].reshape((B, dout))
        Ain = ws[a_off : a_off + B * din].reshape((B, din))
        gW = grad[w_off : w_off + din * dout].reshape((din, dout))
        gb = grad[w_off + din * dout : w_off + din * dout + dout]
        np.dot(Ain.T, dZ, gW)
        for j in range(dout):
            gb[j] = zero
        for i in range(B):
            for j in range(dout):
                gb[j] += dZ[i, j]
        if layer > 0:
            W = theta[w_off : w_off + din * dout].reshape((din, dout))
            S = ws[scratch : scratch + B * din].reshape((B, din))
            np.dot(dZ, W.T, S)
            # Ain holds ReLU outputs; relu'(z) = 1 exactly where the output is positive
            for i in range(B):
                for j in range(din):
                    Ain[i, j] = S[i, j] if Ain[i, j] > zero else zero
        d_off = a_off
    return loss_sum / B


@cached
@njit(nogil=True, fastmath=False)
def mlp_loss_kernel(theta, X, y, idx, ws, dims):
    """Summed softmax cross-entropy and correct count over ``X[idx]`` (contract in base)."""
    L = dims[0]
    B = idx.shape[0]
    K = dims[1 + L]
    z_off, _ = _forward(theta, X, idx, ws, dims)
    Z = ws[z_off : z_off + B * K].reshape((B, K))
    return softmax_xent_loss_rows(Z, y, idx)


#: widest hidden layer allowed
MAX_WIDTH = 65536


def hidden_sizes(hidden: Any) -> tuple[int, ...]:
    """The hidden-layer widths, checked: a list of integers in 1..:data:`MAX_WIDTH` (an
    integer means one layer, an empty list none); an
    :class:`~stalesgd.validation.OptionError` naming ``hidden`` otherwise."""
    if isinstance(hidden, int | np.integer) and not isinstance(hidden, bool):
        hidden = (hidden,)
    if not isinstance(hidden, list | tuple):
        raise OptionError("hidden", hidden, f"a list of layer widths in 1..{MAX_WIDTH}, e.g. "
                          "[128, 64]", f"is {a_type(hidden)}, not a list of widths")
    return tuple(integer(h, f"hidden[{i}]", 1, MAX_WIDTH) for i, h in enumerate(hidden))


@dataclass(kw_only=True)
class MLP(Model):
    """Fully connected ReLU network with a softmax cross-entropy head.

    ``MLP(n_features=784, n_classes=10, hidden=(128,), dtype="float32")``;
    ``hidden=()`` gives softmax regression.  Default initialisation: He
    normal for layers followed by a ReLU, Glorot uniform for the output
    layer; biases zero.
    """

    n_features: int
    n_classes: int
    hidden: tuple[int, ...] = (128,)
    sizes: tuple[int, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        self.dtype = resolve_dtype(self.dtype)
        if int(self.n_features) <= 0:
            raise ValueError(f"n_features={self.n_features!r} is not allowed; must be positive")
        if int(self.n_classes) < 2:
            raise ValueError(f"n_classes={self.n_classes!r} is not allowed; must be at least 2")
        self.hidden = hidden_sizes(self.hidden)
        self.sizes = (int(self.n_features), *self.hidden, int(self.n_classes))
        self.name = "mlp"
        n_layers = len(self.sizes) - 1
        self.dims = np.array([n_layers, *self.sizes], dtype=np.int64)
        off = 0
        self.layers = {}
        for i in range(n_layers):
            din, dout = self.sizes[i], self.sizes[i + 1]
            self.layers[f"W{i + 1}"] = (off, (din, dout))
            off += din * dout
            self.layers[f"b{i + 1}"] = (off, (dout,))
            off += dout
        self.n_params = off
        self.is_classifier = True

    @property
    def grad_kernel(self) -> Any:
        """``mlp_grad_kernel`` (contract in ``base``)."""
        return mlp_grad_kernel

    @property
    def loss_kernel(self) -> Any:
        """``mlp_loss_kernel`` (contract in ``base``)."""
        return mlp_loss_kernel

    def workspace_size(self, batch: int) -> int:
        """Activations of every layer for ``batch`` rows plus one back-propagation scratch block."""
        if int(batch) <= 0:
            raise ValueError(f"batch={batch!r} is not allowed; must be positive")
        widest_hidden = max(self.sizes[1:-1], default=0)
        return int(batch) * (sum(self.sizes) + widest_hidden)

    def init_params(self, seed: int, scheme: str = "default") -> np.ndarray:
        """Seeded parameters: weights per ``scheme`` (see ``base.Model.init_params``), biases 0.

        Draws are made in float64 from ``numpy.random.default_rng(seed)`` layer by
        layer and then cast, so float32 and float64 inits agree up to rounding.
        """
        check_scheme(scheme)
        rng = np.random.default_rng(seed)
        theta = np.zeros(self.n_params, dtype=np.float64)
        n_layers = len(self.sizes) - 1
        for i in range(n_layers):
            din, dout = self.sizes[i], self.sizes[i + 1]
            s = scheme
            if s == "default":
                s = "he" if i < n_layers - 1 else "glorot"
            off, shape = self.layers[f"W{i + 1}"]
            theta[off : off + din * dout] = init_weight(rng, din, dout, s, shape).ravel()
        return theta.astype(self.dtype)
