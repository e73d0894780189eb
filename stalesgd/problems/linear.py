"""Linear classifiers that read their inputs entry by entry: fast on sparse (CSR) rows.

Three losses over one layout: parameters ``W`` of shape ``(d, K)`` (row-major: feature
``j``, output ``k`` is coordinate ``j·K + k``) then the bias ``b`` of ``K`` elements, so
the score of example ``x`` is ``z = x·W + b``.

``logreg``  (K = 1) binary logistic regression, labels 0/1: ``softplus(z) − y·z``;
``svm``     (K = 1) linear SVM with the hinge loss, labels 0/1 (as s = ±1):
            ``max(0, 1 − s·z)``; its (sub)gradient is 0 at the kink ``s·z = 1``;
``softmax`` (K ≥ 2) multinomial logistic regression: softmax cross-entropy.

``intercept_step`` (default 1) scales the bias's entries of the gradient, so that an update
moves the bias by that fraction of the step the weights take: scikit-learn's
``SGDClassifier`` moves the intercept with 0.01 of the step on sparse input
(``-o intercept_step=0.01`` does the same for binary models).  The loss is unchanged; only
the update's bias entries are scaled, so with S ≠ 1 the kernels' "gradient" is the loss's
gradient with its bias entries times S (finite differences of the loss see them S times
off; 1: the gradient itself).  ``dims`` carries S as the bits of a float64.

A prediction is class 1 when ``z > 0`` (K = 1), else the largest score.  The dense models
of the same names multiply whole rows with BLAS; these walk each row's stored entries
(``_kernels.row_span``/``row_entry``), so a minibatch costs O(its non-zeros · K) and its
gradient touches only the coordinates of the features it holds (plus the bias).

Besides the dense kernel contract of :mod:`stalesgd.problems.base` they offer the *sparse
gradient contract* documented there (``sparse_grad_kernel``, ``support_copy_kernel``),
which lets an engine apply an update without densifying it.

Workspace for a batch of B rows: ``n_params`` (the sparse kernel's accumulator, kept at
zero between calls) + ``K`` (one row's scores).

The kernels are compiled without Numba's reference counting (:data:`KERNEL_JIT`): they
allocate nothing, and a sparse update is short enough that the counting's atomic operations
on the workspace views and inputs were a quarter of it (one Hogwild! worker on the set of
``bench/sparse_hogwild.py``: 1.67 → 2.22 M updates/s at batch 1, 2.74 → 3.22 M samples/s
at batch 16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from stalesgd.jitcache import cached
from stalesgd.problems._kernels import (
    check_scheme,
    init_weight,
    n_rows,
    row_entry,
    row_span,
    scalar_like,
    sigmoid_softplus,
)
from stalesgd.problems.base import Model, resolve_dtype

#: loss names and the code ``dims[2]`` carries
LOSSES: dict[str, int] = {"logreg": 0, "svm": 1, "softmax": 2}
LOGISTIC, HINGE, SOFTMAX = 0, 1, 2
#: how the kernels are compiled: without reference counting (module docstring)
KERNEL_JIT = {"nogil": True, "fastmath": False, "_nrt": False}


@njit(nogil=True, inline="always")
def _scores(theta, X, r, d, K, z):
    """z = x_r · W + b."""
    start, stop = row_span(X, r)
    if K == 1:  # (the score in a register, not stored back per entry)
        s = theta[d]
        for p in range(start, stop):
            col, val = row_entry(X, r, p)
            s += val * theta[col]
        z[0] = s
        return
    for k in range(K):
        z[k] = theta[d * K + k]
    for p in range(start, stop):
        col, val = row_entry(X, r, p)
        base = col * K
        for k in range(K):
            z[k] += val * theta[base + k]


@njit(nogil=True, inline="always")
def _bias_step(dims, z):
    """The intercept step (``dims[3]``, a float64's bits) in the dtype of ``z``."""
    return scalar_like(dims[3:4].view(np.float64)[0], z)


@njit(nogil=True, inline="always")
def _label(y, r, K, loss):
    lab = y[r]
    if loss == SOFTMAX:
        if lab < 0 or lab >= K:
            raise IndexError("class label out of range")
    elif lab != 0 and lab != 1:
        raise ValueError("logistic regression and SVM labels must be 0 or 1")
    return lab


@njit(nogil=True, inline="always")
def _row_loss(z, lab, K, loss, scale):
    """The row's loss (float64) and whether it is predicted right; replaces ``z`` by
    ``scale ·`` ∂loss/∂z."""
    if loss == SOFTMAX:
        m = z[0]
        am = 0
        for k in range(1, K):
            if z[k] > m:
                m = z[k]
                am = k
        zy = np.float64(z[lab])
        s = 0.0
        for k in range(K):
            e = np.exp(np.float64(z[k] - m))
            z[k] = scalar_like(e, z)
            s += e
        for k in range(K):
            z[k] = scalar_like(np.float64(z[k]) / s * scale, z)
        z[lab] -= scalar_like(scale, z)
        return np.log(s) + np.float64(m) - zy, am == lab
    zi = np.float64(z[0])
    right = (zi > 0.0) == (lab == 1)
    if loss == LOGISTIC:
        sig, sp = sigmoid_softplus(zi)
        z[0] = scalar_like((sig - lab) * scale, z)
        return sp - lab * zi, right
    sign = 2.0 * lab - 1.0
    margin = sign * zi
    if margin < 1.0:
        z[0] = scalar_like(-sign * scale, z)
        return 1.0 - margin, right
    z[0] = scalar_like(0.0, z)
    return 0.0, right


@njit(nogil=True, inline="always")
def _row(theta, X, y, r, n, d, K, loss, z, scale):
    """Row ``r``'s loss and whether it is predicted right, ``scale ·`` ∂loss/∂z left in
    ``z`` (the row index and label checked)."""
    if r < 0 or r >= n:
        raise IndexError("minibatch row index out of range")
    lab = _label(y, r, K, loss)
    _scores(theta, X, r, d, K, z)
    return _row_loss(z, lab, K, loss, scale)


@cached
@njit(**KERNEL_JIT)
def linear_grad_kernel(theta, X, y, idx, grad, ws, dims):
    """Mean loss of ``X[idx]`` and its dense gradient into ``grad`` (contract in base)."""
    d, K, loss = dims[0], dims[1], dims[2]
    B = idx.shape[0]
    z = ws[(d + 1) * K : (d + 2) * K]  # (where the sparse kernel keeps it: ws is shared)
    n = n_rows(X)
    for c in range(grad.shape[0]):
        grad[c] = 0
    inv_b = 1.0 / B
    bs = _bias_step(dims, z)
    total = 0.0
    for i in range(B):
        r = idx[i]
        total += _row(theta, X, y, r, n, d, K, loss, z, inv_b)[0]
        start, stop = row_span(X, r)
        for p in range(start, stop):
            col, val = row_entry(X, r, p)
            for k in range(K):
                grad[col * K + k] += val * z[k]
        for k in range(K):
            grad[d * K + k] += z[k] * bs
    return total * inv_b


@njit(nogil=True, inline="always")
def _add(acc, gidx, cnt, c, g):
    """acc[c] += g, listing c at ``gidx[cnt]`` when acc[c] was zero; returns the new count.

    Without a branch: whether a coordinate is new depends on a load the processor cannot
    predict, and a mispredicted branch per entry cost 2.5× the whole kernel.  A coordinate
    listed whose sum stays or returns to zero (g = 0, cancellation) is dropped by the gather;
    one listed twice is read once there (then it is zero)."""
    a = acc[c]
    gidx[cnt] = c
    acc[c] = a + g
    return cnt + (a == 0)


@njit(nogil=True, inline="always")
def _check_capacity(gidx, entries):
    """Raise unless ``gidx`` has room for ``entries``."""
    if entries > gidx.shape[0]:
        raise IndexError("sparse gradient capacity exceeded (see sparse_capacity)")


@njit(nogil=True, inline="always")
def _check_batch(X, y, idx, n, K, loss, gidx):
    """Check every row index, label and the capacity before the accumulator is touched, so
    that an error leaves the workspace at zero for the next call."""
    entries = 0
    for i in range(idx.shape[0]):
        r = idx[i]
        if r < 0 or r >= n:
            raise IndexError("minibatch row index out of range")
        _label(y, r, K, loss)
        start, stop = row_span(X, r)
        entries += (stop - start + 1) * K
    _check_capacity(gidx, entries)


@njit(nogil=True, inline="always")
def _one_row_sparse_grad(theta, X, y, r, n, gidx, gval, z, d, K, loss, bs):
    """The sparse kernel for a minibatch of the one row ``r``: its columns are distinct,
    so entries are written directly (zeros skipped without a branch)."""
    f = _row(theta, X, y, r, n, d, K, loss, z, 1.0)[0]
    start, stop = row_span(X, r)
    _check_capacity(gidx, (stop - start + 1) * K)
    cnt = 0
    if K == 1:  # (the common case, without the loop over outputs: ~8 % of a batch-1 update)
        z0 = z[0]
        for p in range(start, stop):
            col, val = row_entry(X, r, p)
            g = val * z0
            gidx[cnt] = col
            gval[cnt] = g
            cnt += g != 0
        g = z0 * bs
        gidx[cnt] = d
        gval[cnt] = g
        return f, cnt + (g != 0)
    for k in range(K):
        zk = z[k]
        for p in range(start, stop):
            col, val = row_entry(X, r, p)
            g = val * zk
            gidx[cnt] = col * K + k
            gval[cnt] = g
            cnt += g != 0
        g = zk * bs
        gidx[cnt] = d * K + k
        gval[cnt] = g
        cnt += g != 0
    return f, cnt


@cached
@njit(**KERNEL_JIT)
def linear_sparse_grad_kernel(theta, X, y, idx, gidx, gval, ws, dims):
    """Mean loss of ``X[idx]`` and its gradient as distinct coordinates ``gidx[:nnz]`` with
    non-zero values ``gval[:nnz]``; returns ``(loss, nnz)`` (contract in base)."""
    d, K, loss = dims[0], dims[1], dims[2]
    n_params = (d + 1) * K
    acc = ws[:n_params]  # zero on entry and on return
    z = ws[n_params : n_params + K]
    B = idx.shape[0]
    n = n_rows(X)
    bs = _bias_step(dims, z)
    if B == 1:
        return _one_row_sparse_grad(theta, X, y, idx[0], n, gidx, gval, z, d, K, loss, bs)
    _check_batch(X, y, idx, n, K, loss, gidx)  # (cnt <= entries <= capacity: no overrun)
    inv_b = 1.0 / B
    total = 0.0
    cnt = 0
    for i in range(B):
        r = idx[i]
        total += _row(theta, X, y, r, n, d, K, loss, z, inv_b)[0]
        start, stop = row_span(X, r)
        if K == 1:  # (the common case: the row's one derivative in a register)
            z0 = z[0]
            for p in range(start, stop):
                col, val = row_entry(X, r, p)
                cnt = _add(acc, gidx, cnt, col, val * z0)
            cnt = _add(acc, gidx, cnt, d, z0 * bs)
            continue
        for p in range(start, stop):
            col, val = row_entry(X, r, p)
            for k in range(K):
                cnt = _add(acc, gidx, cnt, col * K + k, val * z[k])
        for k in range(K):
            cnt = _add(acc, gidx, cnt, d * K + k, z[k] * bs)
    nnz = 0
    for q in range(cnt):  # gather (nnz <= q: an entry is read before it can be overwritten)
        c = gidx[q]
        v = acc[c]
        acc[c] = 0
        gidx[nnz] = c
        gval[nnz] = v
        nnz += v != 0
    return total * inv_b, nnz


@cached
@njit(**KERNEL_JIT)
def linear_loss_kernel(theta, X, y, idx, ws, dims):
    """Summed loss and number of correct predictions over ``X[idx]``."""
    d, K, loss = dims[0], dims[1], dims[2]
    z = ws[(d + 1) * K : (d + 2) * K]
    n = n_rows(X)
    total = 0.0
    correct = 0
    for i in range(idx.shape[0]):
        r = idx[i]
        li, right = _row(theta, X, y, r, n, d, K, loss, z, 1.0)
        total += li
        correct += right
    return total, correct


@cached
@njit(**KERNEL_JIT)
def linear_support_copy_kernel(src, dst, X, idx, dims):
    """Copy into ``dst`` the coordinates of ``src`` a gradient at rows ``idx`` reads (their
    features' weights and the bias); returns how many were copied (repeats included)."""
    d, K = dims[0], dims[1]
    copied = 0
    for i in range(idx.shape[0]):
        r = idx[i]
        start, stop = row_span(X, r)
        for p in range(start, stop):
            col = row_entry(X, r, p)[0]
            for k in range(K):
                dst[col * K + k] = src[col * K + k]
            copied += K
    for k in range(K):
        dst[d * K + k] = src[d * K + k]
    return copied + K


@dataclass(kw_only=True)
class LinearClassifier(Model):
    """``LinearClassifier(loss="svm", n_features=d, n_classes=2, max_row_nnz=m)``: a linear
    model of the module docstring; ``max_row_nnz`` (default: every feature) bounds the
    entries of a row and so the sparse gradient's size; ``intercept_step`` scales the bias's
    gradient entries (the module docstring).

    Default initialisation: Glorot uniform weights (fan_in = d, fan_out = K), bias 0 (for
    ``logreg`` the same draw as the dense ``LogisticRegression``).
    """

    loss: str
    n_features: int
    n_classes: int = 2
    max_row_nnz: int | None = None
    intercept_step: float = 1.0

    def __post_init__(self) -> None:
        self.dtype = resolve_dtype(self.dtype)
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r} is not allowed; use one of {tuple(LOSSES)}")
        d = int(self.n_features)
        if d <= 0:
            raise ValueError(f"n_features={self.n_features!r} is not allowed; must be positive")
        if int(self.n_classes) < 2 or (self.loss != "softmax" and int(self.n_classes) != 2):
            raise ValueError(f"n_classes={self.n_classes!r} is not allowed for {self.loss}: "
                             "2 (logreg, svm) or >= 2 (softmax)")
        m = d if self.max_row_nnz is None else int(self.max_row_nnz)
        if not 0 <= m <= d:
            raise ValueError(f"max_row_nnz={self.max_row_nnz!r} is not allowed; 0..{d}")
        self.max_row_nnz = m
        K = int(self.n_classes) if self.loss == "softmax" else 1
        self.name = self.loss
        step = float(self.intercept_step)
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"intercept_step={self.intercept_step!r} is not allowed; must be "
                             "a finite number > 0")
        self.intercept_step = step
        bits = int(np.array([step], dtype=np.float64).view(np.int64)[0])
        self.dims = np.array([d, K, LOSSES[self.loss], bits], dtype=np.int64)
        self.layers = {"W": (0, (d, K)), "b": (d * K, (K,))}
        self.n_params = (d + 1) * K
        self.is_classifier = True

    @property
    def outputs(self) -> int:
        """K: scores per example (1 for the binary losses)."""
        return int(self.dims[1])

    @property
    def grad_kernel(self) -> Any:
        """``linear_grad_kernel`` (contract in ``base``)."""
        return linear_grad_kernel

    @property
    def loss_kernel(self) -> Any:
        """``linear_loss_kernel`` (contract in ``base``)."""
        return linear_loss_kernel

    @property
    def sparse_grad_kernel(self) -> Any:
        """``linear_sparse_grad_kernel`` (sparse contract in ``base``)."""
        return linear_sparse_grad_kernel

    @property
    def support_copy_kernel(self) -> Any:
        """``linear_support_copy_kernel`` (sparse contract in ``base``)."""
        return linear_support_copy_kernel

    def sparse_capacity(self, batch: int) -> int:
        """Most coordinates a gradient of ``batch`` rows lists: ``batch·(max_row_nnz + 1)·K``."""
        if int(batch) <= 0:
            raise ValueError(f"batch={batch!r} is not allowed; must be positive")
        return int(batch) * (int(self.max_row_nnz) + 1) * self.outputs

    def workspace_size(self, batch: int) -> int:
        """The sparse kernel's accumulator and one row's scores: ``n_params + K``."""
        if int(batch) <= 0:
            raise ValueError(f"batch={batch!r} is not allowed; must be positive")
        return self.n_params + self.outputs

    def init_params(self, seed: int, scheme: str = "default") -> np.ndarray:
        """Seeded weights (``default`` = ``glorot``; others as in ``base``), bias 0."""
        check_scheme(scheme)
        s = "glorot" if scheme == "default" else scheme
        d, K = int(self.n_features), self.outputs
        rng = np.random.default_rng(seed)
        theta = np.zeros(self.n_params)
        shape = (d,) if K == 1 else (d, K)
        theta[: d * K] = init_weight(rng, d, K, s, shape).ravel()
        return theta.astype(self.dtype)
