"""Numba helpers shared by the dense models' kernels, and their initialisers.

Everything here that runs per step is ``@njit(nogil=True)`` and allocation
free: it reads and writes arrays the caller preallocated.  The helpers keep
arithmetic in the array's own dtype (``scalar_like`` casts Python floats so
that float32 kernels never silently widen to float64).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.core.errors import TypingError
from numba.extending import overload

from stalesgd.jitcache import cached
from stalesgd.memory import LINE_BYTES, prefetch
from stalesgd.problems.base import INIT_SCHEMES


def scalar_like(x, arr):  # pragma: no cover - replaced by the overload in jitted code
    """``x`` converted to the element type of ``arr`` (usable inside ``@njit`` code)."""
    return arr.dtype.type(x)


@overload(scalar_like, inline="always")
def _scalar_like_impl(x, arr):
    dt = arr.dtype

    def impl(x, arr):
        return dt(x)

    return impl


# --- inputs: a float array, packed images (uint8 pixels, per-channel lookup table), or CSR ---
#
# Kernels take their inputs ``X`` in one of three forms (see ``Dataset.inputs``):
# a 2-D float array; the CSR tuple ``(indptr, indices, values, n_cols)`` of a sparse set
# (``stalesgd.data.csr``); or the tuple ``(pixels, coef)`` of uint8 pixels ``(n, C*H*W)`` and
# ``(C, 3)`` float rows ``(scale, shift, factor)``: the input of pixel ``p`` in channel ``c``
# is ``(p·scale − shift)·factor`` -- the operations (and roundings) of the dense
# normalisation, so the same inputs bit for bit in 4 (float32) or 8 (float64) times less
# memory, and a faster gather (a quarter of the bytes per row; the arithmetic vectorises).
# The helpers below hide the difference; they are resolved at compile time.  ``copy_row``
# writes a whole row (dense models); ``row_span`` and ``row_entry`` walk a row's stored
# entries (every column of a dense row, the non-zeros of a sparse one), for the linear
# models of ``stalesgd.problems.linear``.

CSR_LEN = 4  # length of the CSR input tuple


def _is_csr(X):
    return isinstance(X, tuple) and len(X) == CSR_LEN


def n_rows(X):  # pragma: no cover - replaced by the overload in jitted code
    """Number of examples in kernel inputs ``X`` (any form)."""
    if _is_csr(X):
        return X[0].shape[0] - 1
    return X[0].shape[0] if isinstance(X, tuple) else X.shape[0]


def n_cols(X):  # pragma: no cover - replaced by the overload in jitted code
    """Number of features per example in kernel inputs ``X`` (any form)."""
    if _is_csr(X):
        return X[3]
    return X[0].shape[1] if isinstance(X, tuple) else X.shape[1]


def row_span(X, r):  # pragma: no cover - replaced by the overload in jitted code
    """``(start, stop)``: the positions of example ``r``'s stored entries, for ``row_entry``."""
    if _is_csr(X):
        return X[0][r], X[0][r + 1]
    return 0, n_cols(X)


def row_entry(X, r, p):  # pragma: no cover - replaced by the overload in jitted code
    """``(column, value)`` of the stored entry at position ``p`` of example ``r``."""
    if _is_csr(X):
        return X[1][p], X[2][p]
    out = np.empty(n_cols(X), dtype=X[1].dtype if isinstance(X, tuple) else X.dtype)
    copy_row(X, r, out)
    return p, out[p]


def copy_row(X, r, out):  # pragma: no cover - replaced by the overload in jitted code
    """Write example ``r`` of ``X`` as floats into the 1-D array ``out``."""
    if _is_csr(X):
        out[:] = 0
        a, b = X[0][r], X[0][r + 1]
        out[X[1][a:b]] = X[2][a:b]
    elif isinstance(X, tuple):
        pix, coef = X
        per = pix[r].reshape(coef.shape[0], -1)
        v = np.multiply(per, coef[:, 0, None], dtype=coef.dtype)
        out[:] = ((v - coef[:, 1, None]) * coef[:, 2, None]).ravel()
    else:
        out[:] = X[r]


def _csr_type(X):
    return isinstance(X, types.BaseTuple) and len(X) == CSR_LEN


@overload(n_rows, inline="always")
def _n_rows_impl(X):
    if _csr_type(X):
        return lambda X: X[0].shape[0] - 1
    if isinstance(X, types.BaseTuple):
        return lambda X: X[0].shape[0]
    return lambda X: X.shape[0]


@overload(n_cols, inline="always")
def _n_cols_impl(X):
    if _csr_type(X):
        return lambda X: X[3]
    if isinstance(X, types.BaseTuple):
        return lambda X: X[0].shape[1]
    return lambda X: X.shape[1]


@overload(row_span, inline="always")
def _row_span_impl(X, r):
    if _csr_type(X):
        return lambda X, r: (X[0][r], X[0][r + 1])
    if isinstance(X, types.BaseTuple):
        return lambda X, r: (0, X[0].shape[1])
    return lambda X, r: (0, X.shape[1])


@overload(row_entry, inline="always")
def _row_entry_impl(X, r, p):
    if _csr_type(X):
        return lambda X, r, p: (X[1][p], X[2][p])
    if isinstance(X, types.BaseTuple):
        ft = X.types[1].dtype

        def packed(X, r, p):
            pix, coef = X
            c = p // (pix.shape[1] // coef.shape[0])
            return p, (ft(pix[r, p]) * coef[c, 0] - coef[c, 1]) * coef[c, 2]
        return packed
    return lambda X, r, p: (p, X[r, p])


@njit(nogil=True, inline="always")
def _prefetch_lines(arr, start, stop, step):
    """Prefetch the lines of ``arr[start:stop]`` (``step`` elements a line; its last too)."""
    if stop > start:
        for p in range(start, stop, step):
            prefetch(arr, p)
        prefetch(arr, stop - 1)


def prefetch_rows(X, rows):  # pragma: no cover - replaced by the overload in jitted code
    """Start loading the stored entries of the examples ``rows`` of ``X`` (a hint)."""


@overload(prefetch_rows, inline="always")
def _prefetch_rows_impl(X, rows):
    """Sparse rows: every cache line of each row's column indices and values (the rows of a
    minibatch lie at random places: without the hint each costs a miss to main memory
    when the kernel first reads it).  Dense and packed rows: nothing (a row is one long
    run of lines, which the processor's own prefetcher follows)."""
    if not _csr_type(X):
        return lambda X, rows: None
    col_step = max(LINE_BYTES * 8 // X[1].dtype.bitwidth, 1)  # elements a line
    val_step = max(LINE_BYTES * 8 // X[2].dtype.bitwidth, 1)

    def csr(X, rows):
        n = n_rows(X)
        for i in range(rows.shape[0]):
            r = rows[i]
            if 0 <= r < n:
                start, stop = row_span(X, r)
                _prefetch_lines(X[1], start, stop, col_step)
                _prefetch_lines(X[2], start, stop, val_step)
    return csr


@overload(copy_row)
def _copy_row_impl(X, r, out):
    if _csr_type(X):
        def csr(X, r, out):
            indptr, indices, values, _ = X
            out[:] = 0
            for p in range(indptr[r], indptr[r + 1]):
                out[indices[p]] = values[p]
        return csr

    if isinstance(X, types.BaseTuple):
        ft = X.types[1].dtype  # the float type of the coefficients (and of the inputs)

        def packed(X, r, out):
            pix, coef = X
            channels = coef.shape[0]
            plane = pix.shape[1] // channels
            row = pix[r]
            for c in range(channels):
                scale = coef[c, 0]
                shift = coef[c, 1]
                factor = coef[c, 2]
                base = c * plane
                for q in range(plane):
                    out[base + q] = (ft(row[base + q]) * scale - shift) * factor
        return packed

    if not isinstance(X, types.Array) or not isinstance(X.dtype, types.Float):
        raise TypingError(f"kernel inputs must be a float array or (uint8 pixels, float "
                          f"table) from Dataset.inputs(); got {X} (pass dataset.inputs(split), "
                          f"not the packed pixels alone)")

    def dense(X, r, out):
        for j in range(X.shape[1]):
            out[j] = X[r, j]
    return dense


@cached
@njit(nogil=True, fastmath=False)
def gather_rows(X, idx, out):
    """Copy rows ``X[idx]`` as floats into the 2-D array ``out`` (``(len(idx), n_cols(X))``)."""
    n = n_rows(X)
    for i in range(idx.shape[0]):
        r = idx[i]
        if r < 0 or r >= n:
            raise IndexError("minibatch row index out of range")
        copy_row(X, r, out[i])


@cached
@njit(nogil=True, fastmath=False)
def softplus(z):
    """Stable log(1 + exp(z)) in float64: max(z, 0) + log1p(exp(-|z|))."""
    z = np.float64(z)
    return max(z, 0.0) + np.log1p(np.exp(-abs(z)))


@njit(nogil=True, inline="always")
def sigmoid_softplus(z):
    """``(sigmoid(z), softplus(z))`` in float64, stable (never exponentiates a positive
    number), with one exponential: both are made of ``exp(−|z|)``."""
    z = np.float64(z)
    e = np.exp(-abs(z))
    s = 1.0 / (1.0 + e) if z >= 0.0 else e / (1.0 + e)
    return s, max(z, 0.0) + np.log1p(e)


@cached
@njit(nogil=True, fastmath=False)
def softmax_xent_rows(Z, y, idx, scale):
    """Softmax cross-entropy over the rows of ``Z`` (logits), in place.

    Row ``i`` has label ``y[idx[i]]``.  On return
    ``Z[i] = scale * (softmax(Z[i]) - onehot(y[idx[i]]))`` (with ``scale = 1/B``
    this is the gradient of the mean loss with respect to the logits); ``scale``
    must have ``Z``'s dtype.
    Returns ``(loss_sum, n_correct)``: the summed loss as float64, computed
    with log-sum-exp so that huge logits give finite values, and how many rows
    have their largest logit at the label.
    """
    B, K = Z.shape
    loss = 0.0
    correct = 0
    for i in range(B):
        lab = y[idx[i]]
        if lab < 0 or lab >= K:
            raise IndexError("class label out of range")
        m = Z[i, 0]
        am = 0
        for k in range(1, K):
            if Z[i, k] > m:
                m = Z[i, k]
                am = k
        if am == lab:
            correct += 1
        zy = Z[i, lab]
        s = scalar_like(0.0, Z)
        for k in range(K):
            e = np.exp(Z[i, k] - m)
            Z[i, k] = e
            s += e
        loss += np.log(np.float64(s)) + np.float64(m) - np.float64(zy)
        f = scale / s
        for k in range(K):
            Z[i, k] *= f
        Z[i, lab] -= scale
    return loss, correct


@cached
@njit(nogil=True, fastmath=False)
def softmax_xent_loss_rows(Z, y, idx):
    """Summed softmax cross-entropy (float64, log-sum-exp) and correct count; ``Z`` unchanged.

    Row ``i`` of the logits ``Z`` has label ``y[idx[i]]``.
    """
    B, K = Z.shape
    loss = 0.0
    correct = 0
    for i in range(B):
        lab = y[idx[i]]
        if lab < 0 or lab >= K:
            raise IndexError("class label out of range")
        m = Z[i, 0]
        am = 0
        for k in range(1, K):
            if Z[i, k] > m:
                m = Z[i, k]
                am = k
        if am == lab:
            correct += 1
        s = 0.0
        for k in range(K):
            s += np.exp(np.float64(Z[i, k] - m))
        loss += np.log(s) + np.float64(m) - np.float64(Z[i, lab])
    return loss, correct


@cached
@njit(nogil=True, fastmath=False)
def sgd_step(theta, grad, eta):
    """theta -= eta * grad, element-wise, in theta's dtype."""
    e = scalar_like(eta, theta)
    for i in range(theta.shape[0]):
        theta[i] -= e * grad[i]


@njit(nogil=True, fastmath=False)
def evaluate_chunks(loss_kernel, theta, X, y, idx, chunk, ws, dims):
    """Sum ``loss_kernel`` over ``idx`` in chunks of ``chunk`` rows, in one call.

    Returns ``(loss_sum, n_correct)`` over all rows; ``ws`` must hold a
    workspace for ``chunk`` rows.
    """
    n = idx.shape[0]
    total = 0.0
    correct = 0
    start = 0
    while start < n:
        stop = min(start + chunk, n)
        ls, nc = loss_kernel(theta, X, y, idx[start:stop], ws, dims)
        total += ls
        correct += nc
        start = stop
    return total, correct


# --- initialisation (Python side, called once per run) --------------------------------------


def check_scheme(scheme: str) -> str:
    """Validate an init scheme name against ``base.INIT_SCHEMES``."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init scheme {scheme!r} is not allowed; use one of {INIT_SCHEMES}")
    return scheme


def init_weight(
    rng: np.random.Generator, fan_in: int, fan_out: int, scheme: str, shape: tuple[int, ...]
) -> np.ndarray:
    """Draw one weight matrix in float64 for an explicit scheme.

    ``he``: N(0, 2/fan_in) (He et al. 2015, for ReLU layers);
    ``glorot``: U(-a, a) with a = sqrt(6/(fan_in + fan_out)), std sqrt(2/(fan_in + fan_out))
    (Glorot & Bengio 2010); ``normal``: N(0, 0.01²) as in the reference C++ code.
    """
    if scheme == "he":
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)
    if scheme == "glorot":
        a = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-a, a, size=shape)
    if scheme == "normal":
        return rng.normal(0.0, 0.01, size=shape)
    raise ValueError(f"init scheme {scheme!r} is not allowed here; use 'he', 'glorot' or 'normal'")
