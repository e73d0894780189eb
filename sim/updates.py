"""The update arithmetic of numeric replay, written once for every loop that applies one.

θ ← θ − η g element by element, exactly as the real engine's workers do, and the ``sync``
round's θ ← θ − (η/m) Σ_w g_w summed in worker order as the real ``sync`` loop: the one-core
replay, the several-core pipeline and the i.i.d.-staleness mode all call these, so their θ
are the same bits.

The one-core replay keeps the workers' gradients in flight in a *store*: for a dense
problem the rows ``grads[w]`` of the model's gradient kernel; for a sparse one (a model
with the sparse gradient contract on CSR inputs, :mod:`stalesgd.problems.base`) the tuple
``(gidx, gval, nnz)`` of each worker's distinct coordinates and values, as the real sparse
workers hold them.  :func:`compute_gradient`, :func:`apply_gradient` and
:func:`apply_mean_gradient` do the same thing to either store, so one replay loop serves
both.  A sparse update costs what it touches, not the whole vector, and gives the same θ
bit for bit: the dense gradient is zero wherever the sparse one lists nothing (θ − η·0 is θ),
and both kernels sum a coordinate's entries in the same order.  A sparse ``sync`` round
subtracts each worker's gradient times η/m in worker order, as the real sparse ``sync``
does (a dense round sums the gradients first: the same θ to rounding).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from stalesgd.jitcache import cached

__all__ = ["apply_gradient", "apply_mean_gradient", "apply_mean_step", "apply_step",
           "compute_gradient", "sparse_store", "store_workers"]


@cached
@njit(nogil=True)
def apply_step(theta: np.ndarray, grad: np.ndarray, eta: float) -> None:
    """θ ← θ − η g element by element, exactly as the real engine's workers do."""
    for j in range(theta.shape[0]):
        theta[j] -= eta * grad[j]


@cached
@njit(nogil=True)
def apply_mean_step(theta: np.ndarray, grads: np.ndarray, eta: float) -> None:
    """θ ← θ − (η/m) Σ_w g_w over the m rows of ``grads``, summed in row order per element."""
    m = grads.shape[0]
    scale = eta / m
    for j in range(theta.shape[0]):
        acc = 0.0
        for v in range(m):
            acc += grads[v, j]
        theta[j] -= scale * acc


def sparse_store(workers: int, capacity: int, dtype: np.typing.DTypeLike
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An empty sparse store: ``capacity`` coordinates (the model's ``sparse_capacity``) for
    each of ``workers`` gradients."""
    return (np.zeros((workers, capacity), np.int64), np.zeros((workers, capacity), dtype),
            np.zeros(workers, np.int64))


def _is_sparse(store: types.Type) -> bool:
    return isinstance(store, types.BaseTuple)


# The sparse branches below index the store rather than unpack it: in an overload inlined
# with ``inline="always"``, an element written through an array unpacked from a tuple
# argument (``a, b, c = store; c[w] = v``) was lost (seen with Numba 0.68; an indexed one is kept).


def compute_gradient(kernel, theta, X, y, rows, store, w, ws, dims):  # noqa: ANN001
    """Worker ``w``'s gradient of ``rows`` at θ into ``store``; returns the minibatch loss
    (compiled code only)."""


@overload(compute_gradient, inline="always")
def _compute_gradient(kernel, theta, X, y, rows, store, w, ws, dims):  # noqa: ANN001
    if _is_sparse(store):
        def sparse(kernel, theta, X, y, rows, store, w, ws, dims):  # noqa: ANN001
            gidx, gval, nnz = store[0], store[1], store[2]  # (not unpacked: see below)
            loss, count = kernel(theta, X, y, rows, gidx[w], gval[w], ws, dims)
            nnz[w] = count
            return loss
        return sparse
    return lambda kernel, theta, X, y, rows, store, w, ws, dims: kernel(
        theta, X, y, rows, store[w], ws, dims)


def apply_gradient(theta, store, w, eta):  # noqa: ANN001
    """θ ← θ − η g_w (compiled code only)."""


@overload(apply_gradient, inline="always")
def _apply_gradient(theta, store, w, eta):  # noqa: ANN001
    if _is_sparse(store):
        def sparse(theta, store, w, eta):  # noqa: ANN001
            gidx, gval, nnz = store[0], store[1], store[2]  # (not unpacked: see below)
            for p in range(nnz[w]):
                theta[gidx[w, p]] -= eta * gval[w, p]
        return sparse
    return lambda theta, store, w, eta: apply_step(theta, store[w], eta)


def apply_mean_gradient(theta, store, eta):  # noqa: ANN001
    """The ``sync`` round's θ ← θ − (η/m) Σ_w g_w (compiled code only; see the module
    docstring for the order)."""


@overload(apply_mean_gradient, inline="always")
def _apply_mean_gradient(theta, store, eta):  # noqa: ANN001
    if _is_sparse(store):
        def sparse(theta, store, eta):  # noqa: ANN001
            gidx, gval, nnz = store[0], store[1], store[2]  # (not unpacked: see below)
            scale = eta / nnz.shape[0]
            for w in range(nnz.shape[0]):
                for p in range(nnz[w]):
                    theta[gidx[w, p]] -= scale * gval[w, p]
        return sparse
    return lambda theta, store, eta: apply_mean_step(theta, store, eta)


def store_workers(store):  # noqa: ANN001
    """How many workers' gradients ``store`` holds (compiled code only)."""


@overload(store_workers, inline="always")
def _store_workers(store):  # noqa: ANN001
    if _is_sparse(store):
        return lambda store: store[2].shape[0]
    return lambda store: store.shape[0]
