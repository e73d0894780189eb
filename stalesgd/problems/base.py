"""The contract every model obeys, so that engines can drive any of them.

A *model* owns one flat parameter vector ``theta`` (float32 or float64); its
layers are views into it.  Engines never look inside a model: they call two
Numba kernels with one fixed calling convention, from inside their own
``@njit(nogil=True)`` worker loops, with buffers they preallocated once:

``loss = grad_kernel(theta, X, y, idx, grad, ws, dims)``
    Mean loss of the minibatch ``X[idx], y[idx]`` at ``theta`` (returned as a
    float64), and its gradient written into ``grad`` (overwritten, same
    length and dtype as ``theta``).  ``ws`` is a 1-D scratch array of the
    parameter dtype of at least ``model.workspace_size(len(idx))`` elements;
    ``dims`` is the model's int64 architecture vector.  No allocation, no
    Python, no GIL.

``loss_sum, n_correct = loss_kernel(theta, X, y, idx, ws, dims)``
    Summed loss and number of correct predictions (0 for regression) over
    ``X[idx]``, for evaluation; same rules.

``X`` is what ``Dataset.inputs`` gives: a 2-D, C-contiguous array of the
parameter dtype (images flattened), packed images ``(uint8 pixels, table)``, or the
CSR rows ``(indptr, indices, values, n_cols)`` of a sparse set, read through
:mod:`stalesgd.problems.inputs` (``gather_rows``, ``copy_row``, ``row_span``/``row_entry``);
``y`` is int64 class labels for classifiers and the parameter dtype for
regression.  ``idx`` is an int64 array of row indices.

The *sparse gradient contract*, offered by models whose gradients touch few coordinates
(``sparse_grad_kernel`` is not None; the linear models of ``stalesgd.problems.linear``),
lets an engine apply an update without densifying it:

``loss, nnz = sparse_grad_kernel(theta, X, y, idx, gidx, gval, ws, dims)``
    The same loss as ``grad_kernel``; the gradient's non-zero coordinates written as
    distinct int64 indices ``gidx[:nnz]`` with their values ``gval[:nnz]`` (parameter
    dtype), in no particular order; ``gidx``/``gval`` hold (at least)
    ``model.sparse_capacity(len(idx))`` elements, preallocated once, and a kernel raises
    ``IndexError`` before writing anything when they cannot hold one entry per stored
    entry of the rows (and per bias).  ``ws`` must be all zeros on the first call
    (``model.workspace`` is); the kernel leaves it so, also when it raises.

``copied = support_copy_kernel(src, dst, X, idx, dims)``
    Copy into ``dst`` every coordinate of ``src`` that a gradient at rows ``idx`` reads, so
    that a worker holding a private copy of θ need only refresh those before computing.

A sparse update is short, so how the kernels are compiled shows: when both are compiled
with ``_nrt=False`` (Numba's reference counting off; they may then allocate nothing) the
real engine's sparse workers run without it too (see ``stalesgd.real.sparse_workers``), else
with it (a third to a half of a batch-1 update's time here).

Models kept outside the package obey the same contract; they are registered or installed
as plug-ins (:mod:`stalesgd.problems.plugins`), checked against it before they run, and
their gradients checked with :func:`stalesgd.problems.testing.check_gradient`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stalesgd.memory import line_zeros

DTYPES: dict[str, type] = {"float32": np.float32, "float64": np.float64}
INIT_SCHEMES = ("default", "he", "glorot", "normal")


def resolve_dtype(dtype: str | type | np.dtype) -> np.dtype:
    """Return the numpy dtype named by ``dtype``; only float32 and float64 are allowed."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype {dtype!r} is not allowed; use 'float32' or 'float64'") from exc
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype {dtype!r} is not allowed; use 'float32' or 'float64'")
    return dt


@dataclass
class Model(ABC):
    """A differentiable model over one flat parameter vector.

    Subclasses set ``dims`` (int64 architecture vector passed to the kernels),
    ``n_params`` and ``layers`` (name -> (offset, shape) into ``theta``), and
    provide the two kernels and the workspace size.
    """

    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float64))

    name: str = field(init=False, default="model")
    dims: np.ndarray = field(init=False, repr=False)
    n_params: int = field(init=False, default=0)
    layers: dict[str, tuple[int, tuple[int, ...]]] = field(init=False, default_factory=dict)
    is_classifier: bool = field(init=False, default=True)

    @property
    @abstractmethod
    def grad_kernel(self) -> Any:
        """The Numba ``grad_kernel`` of this model (see the module docstring)."""

    @property
    @abstractmethod
    def loss_kernel(self) -> Any:
        """The Numba ``loss_kernel`` of this model (see the module docstring)."""

    @property
    def sparse_grad_kernel(self) -> Any:
        """The Numba ``sparse_grad_kernel`` (see the module docstring), or None."""
        return None

    @property
    def support_copy_kernel(self) -> Any:
        """The Numba ``support_copy_kernel`` of the sparse contract, or None."""
        return None

    def sparse_capacity(self, batch: int) -> int:
        """Elements of ``gidx``/``gval`` a sparse gradient of ``batch`` rows needs."""
        raise NotImplementedError(f"model {self.name!r} has no sparse gradient")

    @abstractmethod
    def workspace_size(self, batch: int) -> int:
        """Number of scratch elements the kernels need for a batch of ``batch`` rows."""

    @abstractmethod
    def init_params(self, seed: int, scheme: str = "default") -> np.ndarray:
        """A fresh, seeded parameter vector.

        ``scheme``: ``default`` (He for ReLU layers, Glorot otherwise),
        ``he``, ``glorot``, or ``normal`` (N(0, 0.01²) weights, as the
        reference C++ implementation).  Biases start at zero.
        """

    def view(self, theta: np.ndarray, layer: str) -> np.ndarray:
        """The named layer as a view into ``theta`` (no copy)."""
        offset, shape = self.layers[layer]
        size = int(np.prod(shape))
        return theta[offset : offset + size].reshape(shape)

    def workspace(self, batch: int) -> np.ndarray:
        """A preallocated scratch array (zeros) for ``batch`` rows, on cache lines of its own:
        aligned for vector loads, and not shared with another thread's data
        (:mod:`stalesgd.memory`)."""
        return line_zeros(max(1, self.workspace_size(batch)), self.dtype)
