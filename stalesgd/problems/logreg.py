"""Binary logistic regression with labels in {0, 1}.

Parameters: ``w`` (length d) then the bias ``b`` (one element).  With
``z = x · w + b`` the per-example loss is ``softplus(z) − y·z`` (the negative
log-likelihood), computed stably as ``max(z, 0) + log1p(exp(−|z|)) − y·z``;
the kernels return its mean (gradient) or sum (evaluation).  A prediction is
class 1 when ``z > 0``.  Labels are int64; anything other than 0 or 1 raises.

Workspace for a batch of B rows: ``B·d`` (gathered rows) + ``B`` (margins).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from stalesgd.jitcache import cached
from stalesgd.problems._kernels import (
    check_scheme,
    gather_rows,
    init_weight,
    n_cols,
    scalar_like,
    sigmoid_softplus,
    softplus,
)
from stalesgd.problems.base import Model, resolve_dtype


@cached
@njit(nogil=True, fastmath=False)
def _margins(theta, X, idx, ws):
    """Gather the minibatch and compute z = X[idx] w + b into the workspace."""
    B = idx.shape[0]
    d = n_cols(X)
    Xb = ws[: B * d].reshape((B, d))
    z = ws[B * d : B * d + B]
    gather_rows(X, idx, Xb)
    np.dot(Xb, theta[:d], z)
    b = theta[d]
    for i in range(B):
        z[i] += b
    return Xb, z


@cached
@njit(nogil=True, fastmath=False)
def logreg_grad_kernel(theta, X, y, idx, grad, ws, dims):
    """Mean logistic loss of ``X[idx]`` and its gradient into ``grad`` (contract in base)."""
    B = idx.shape[0]
    d = n_cols(X)
    Xb, z = _margins(theta, X, idx, ws)
    inv_b = 1.0 / B
    loss = 0.0
    gb = 0.0
    for i in range(B):
        lab = y[idx[i]]
        if lab != 0 and lab != 1:
            raise ValueError("logistic regression labels must be 0 or 1")
        zi = np.float64(z[i])
        sig, sp = sigmoid_softplus(zi)
        loss += sp - lab * zi
        dz = (sig - lab) * inv_b
        gb += dz
        z[i] = scalar_like(dz, ws)
    np.dot(Xb.T, z, grad[:d])
    grad[d] = scalar_like(gb, grad)
    return loss * inv_b


@cached
@njit(nogil=True, fastmath=False)
def logreg_loss_kernel(theta, X, y, idx, ws, dims):
    """Summed logistic loss and number of correct predictions over ``X[idx]``."""
    B = idx.shape[0]
    _, z = _margins(theta, X, idx, ws)
    loss = 0.0
    correct = 0
    for i in range(B):
        lab = y[idx[i]]
        if lab != 0 and lab != 1:
            raise ValueError("logistic regression labels must be 0 or 1")
        zi = np.float64(z[i])
        loss += softplus(zi) - lab * zi
        if (zi > 0.0) == (lab == 1):
            correct += 1
    return loss, correct


@dataclass(kw_only=True)
class LogisticRegression(Model):
    """Binary classifier ``LogisticRegression(n_features=d, dtype="float64")``.

    Default initialisation: Glorot uniform weights (fan_in = d, fan_out = 1), bias 0.
    """

    n_features: int

    def __post_init__(self) -> None:
        self.dtype = resolve_dtype(self.dtype)
        if int(self.n_features) <= 0:
            raise ValueError(f"n_features={self.n_features!r} is not allowed; must be positive")
        d = int(self.n_features)
        self.name = "logreg"
        self.dims = np.array([d], dtype=np.int64)
        self.layers = {"w": (0, (d,)), "b": (d, (1,))}
        self.n_params = d + 1
        self.is_classifier = True

    @property
    def grad_kernel(self) -> Any:
        """``logreg_grad_kernel`` (contract in ``base``)."""
        return logreg_grad_kernel

    @property
    def loss_kernel(self) -> Any:
        """``logreg_loss_kernel`` (contract in ``base``)."""
        return logreg_loss_kernel

    def workspace_size(self, batch: int) -> int:
        """Gathered rows plus margins: ``batch * (d + 1)``."""
        if int(batch) <= 0:
            raise ValueError(f"batch={batch!r} is not allowed; must be positive")
        return int(batch) * (int(self.n_features) + 1)

    def init_params(self, seed: int, scheme: str = "default") -> np.ndarray:
        """Seeded weights (``default`` = ``glorot``; others as in ``base``), bias 0."""
        check_scheme(scheme)
        s = "glorot" if scheme == "default" else scheme
        d = int(self.n_features)
        rng = np.random.default_rng(seed)
        theta = np.zeros(d + 1)
        theta[:d] = init_weight(rng, d, 1, s, (d,))
        return theta.astype(self.dtype)
