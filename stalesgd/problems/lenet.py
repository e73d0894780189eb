"""LeNet-5 over one flat parameter vector, with Numba loss and gradient kernels.

Architecture (for an input of C×H×W, either 1×28×28 or 3×32×32)::

    conv1  5×5, C → 6, 'valid', with bias   → 6×(H-4)×(W-4)
    max-pool 2×2 (stride 2), then ReLU      → 6×(H-4)/2×(W-4)/2
    conv2  5×5, 6 → 16, 'valid', with bias  → 16×(H-12)/2×(W-12)/2
    max-pool 2×2 (stride 2), then ReLU      → 16×4×4 = 256   (28×28)
                                              16×5×5 = 400   (32×32)
    fc1    FEAT → 120, ReLU
    fc2    120 → 84, ReLU                   (optional: ``fc84=False`` drops it,
                                             as the reference experiments did)
    out    120 or 84 → 10, softmax cross-entropy (log-sum-exp)

The activation is ReLU everywhere.  ReLU and max-pooling commute
(max(relu(a)) = relu(max(a))), so the kernels pool the pre-activation and
apply the bias and ReLU to the four times smaller pooled map; the gradient is
the usual one (routed to the window's first maximum, zero where the pooled
value is not positive).  At exact ties inside a pooling window (blank image
areas) the function is not differentiable and the kernels pick the first
maximum (row-major).

Parameters live in one flat vector ``theta`` (float32 or float64), in this
order, each weight stored row-major as (out, in...) like PyTorch:
``conv1.w (6,C,5,5)``, ``conv1.b (6,)``, ``conv2.w (16,6,5,5)``,
``conv2.b (16,)``, ``fc1.w (120,FEAT)``, ``fc1.b``, [``fc2.w (84,120)``,
``fc2.b``], ``out.w (10,120|84)``, ``out.b (10,)``.

Kernels (module level, ``@njit(nogil=True)``) follow :mod:`stalesgd.problems.base`.
Batches run in chunks of :data:`CHUNK` rows, stored sample-last
(:mod:`stalesgd.problems.lenet_layout`), through the layer passes of
:mod:`stalesgd.problems.lenet_passes`: convolutions band by band as BLAS GEMMs over the
patches of all samples of the chunk (:func:`stalesgd.problems.gemm.gemm`), pooling fused
with bias and ReLU, dense layers as GEMMs with the chunk as the short side.  Every
intermediate is a view of ``ws``; nothing is allocated per call.  BLAS must be held to
one thread by the caller (threadpoolctl) when kernels run in worker threads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from stalesgd.jitcache import cached
from stalesgd.problems._kernels import scalar_like, softmax_xent_loss_rows, softmax_xent_rows
from stalesgd.problems.base import INIT_SCHEMES, Model, resolve_dtype
from stalesgd.problems.lenet_layout import (
    CHUNK,
    D_C1B,
    D_C2B,
    D_F1B,
    D_F2B,
    D_FC84,
    D_FEAT,
    D_FLAST,
    D_OB,
    D_OH1,
    D_OH2,
    D_OW1,
    D_OW2,
    F1,
    F2,
    L_END,
    L_LANES,
    L_Z,
    N1,
    N2,
    N_CLASSES,
    K,
    layout,
    make_dims,
)
from stalesgd.problems.lenet_passes import (
    conv1_backward,
    conv1_forward,
    conv2_backward,
    conv2_forward,
    dense_backward,
    dense_forward,
    gather,
)
from stalesgd.validation import flag

__all__ = ["ALLOWED_INPUT_SHAPES", "CHUNK", "N_CLASSES", "LeNet5", "grad_kernel", "loss_kernel"]

#: The input shapes (C, H, W) LeNet-5 is defined for here.
ALLOWED_INPUT_SHAPES = ((1, 28, 28), (3, 32, 32))


# --------------------------------------------------------------------------- forward / backward


@njit(nogil=True)
def _forward(theta, X, idx, start, b, ws, dims):
    """Forward pass of rows ``idx[start:start+b]``; leaves logits and activations in ``ws``."""
    gather(X, idx, start, b, ws, dims)
    conv1_forward(theta, b, ws, dims)
    conv2_forward(theta, b, ws, dims)
    dense_forward(theta, b, ws, dims)


@njit(nogil=True)
def _backward(theta, grad, b, ws, dims, first):
    """Backward pass for the chunk whose forward pass is in ``ws``; accumulates into ``grad``.

    Expects the logits' gradient in the ``z`` region.  Biases of ``grad`` must be zeroed by
    the caller before the first chunk; weights are overwritten when ``first`` and
    accumulated otherwise.
    """
    dense_backward(theta, grad, b, ws, dims, first)
    conv2_backward(theta, grad, b, ws, dims, first)
    conv1_backward(grad, b, ws, dims, first)


# --------------------------------------------------------------------------- public kernels


@cached
@njit(nogil=True)
def grad_kernel(theta, X, y, idx, grad, ws, dims):
    """Mean softmax cross-entropy over ``X[idx]``; its gradient is written into ``grad``.

    Follows :mod:`stalesgd.problems.base`: no allocation, callable from other
    ``@njit(nogil=True)`` code; ``ws`` needs ``LeNet5.workspace_size(len(idx))``
    elements.  Returns the mean loss as float64.
    """
    n = idx.shape[0]
    # biases are accumulated; weights are overwritten by the first chunk
    for off, size in ((dims[D_C1B], N1), (dims[D_C2B], N2), (dims[D_F1B], F1),
                      (dims[D_OB], N_CLASSES)):
        grad[off : off + size] = 0
    if dims[D_FC84] != 0:
        grad[dims[D_F2B] : dims[D_F2B] + F2] = 0
    if n == 0:
        grad[:] = 0
        return 0.0
    scale = scalar_like(1.0 / n, ws)
    loss = 0.0
    start = idx.shape[0] - n  # 0, typed as a run-time int (no literal specialisation)
    while start < n:
        b = min(CHUNK, n - start)
        _forward(theta, X, idx, start, b, ws, dims)
        L = layout(dims, b)
        z = ws[L[L_Z] : L[L_LANES]].reshape((b, N_CLASSES))
        lsum, _ = softmax_xent_rows(z, y, idx[start : start + b], scale)
        loss += lsum
        _backward(theta, grad, b, ws, dims, start == 0)
        start += b
    return loss / n


@cached
@njit(nogil=True)
def loss_kernel(theta, X, y, idx, ws, dims):
    """Summed softmax cross-entropy over ``X[idx]`` and the number of correct predictions.

    Same rules as :func:`grad_kernel`; rows are processed in chunks of
    :data:`CHUNK`.  Returns ``(loss_sum: float64, n_correct: int64)``.
    """
    n = idx.shape[0]
    loss = 0.0
    correct = 0
    start = idx.shape[0] - n  # 0, typed as a run-time int (no literal specialisation)
    while start < n:
        b = min(CHUNK, n - start)
        _forward(theta, X, idx, start, b, ws, dims)
        L = layout(dims, b)
        z = ws[L[L_Z] : L[L_LANES]].reshape((b, N_CLASSES))
        lsum, c = softmax_xent_loss_rows(z, y, idx[start : start + b])
        loss += lsum
        correct += c
        start += b
    return loss, correct


# --------------------------------------------------------------------------- the model


class LeNet5(Model):
    """LeNet-5 (conv 5×5→6, pool, conv 5×5→16, pool, FC 120, [FC 84], FC 10), ReLU.

    ``input_shape`` is (C, H, W): (1, 28, 28) for MNIST-like data or
    (3, 32, 32) for CIFAR-10.  ``fc84=False`` omits the 84-unit layer, as the
    reference C++ experiments did.  ``dtype`` is ``"float32"`` or ``"float64"``.
    See the module docstring for the exact layout and kernels.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        fc84: bool = True,
        dtype: str | type | np.dtype = "float64",
    ) -> None:
        try:
            shape = tuple(int(v) for v in input_shape)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"input_shape {input_shape!r} is not allowed; use one of {ALLOWED_INPUT_SHAPES}"
            ) from exc
        if shape not in ALLOWED_INPUT_SHAPES:
            raise ValueError(
                f"input_shape {input_shape!r} is not allowed; use one of {ALLOWED_INPUT_SHAPES}"
            )
        fc84 = flag(fc84, "fc84")
        self.dtype = resolve_dtype(dtype)
        self.input_shape = shape
        self.fc84 = bool(fc84)
        self.name = "lenet"
        self.is_classifier = True

        C, H, W = shape
        oh2 = (H - K + 1) // 2 - K + 1
        ow2 = (W - K + 1) // 2 - K + 1
        feat = N2 * (oh2 // 2) * (ow2 // 2)
        flast = F2 if self.fc84 else F1

        specs: list[tuple[str, tuple[int, ...]]] = [
            ("conv1.w", (N1, C, K, K)),
            ("conv1.b", (N1,)),
            ("conv2.w", (N2, N1, K, K)),
            ("conv2.b", (N2,)),
            ("fc1.w", (F1, feat)),
            ("fc1.b", (F1,)),
        ]
        if self.fc84:
            specs += [("fc2.w", (F2, F1)), ("fc2.b", (F2,))]
        specs += [("out.w", (N_CLASSES, flast)), ("out.b", (N_CLASSES,))]
        layers: dict[str, tuple[int, tuple[int, ...]]] = {}
        offset = 0
        for lname, lshape in specs:
            layers[lname] = (offset, lshape)
            offset += int(np.prod(lshape))
        self.layers = layers
        self.n_params = offset
        self.dims = make_dims(shape, self.fc84, {k: v[0] for k, v in layers.items()})

    def __repr__(self) -> str:
        return (f"LeNet5(input_shape={self.input_shape}, fc84={self.fc84}, "
                f"dtype='{self.dtype.name}', n_params={self.n_params})")

    @property
    def grad_kernel(self) -> Any:
        """The module-level Numba :func:`grad_kernel` (shared by every LeNet5)."""
        return grad_kernel

    @property
    def loss_kernel(self) -> Any:
        """The module-level Numba :func:`loss_kernel` (shared by every LeNet5)."""
        return loss_kernel

    @property
    def n_features(self) -> int:
        """Length of one flattened input row, C·H·W."""
        C, H, W = self.input_shape
        return C * H * W

    def workspace_size(self, batch: int) -> int:
        """Scratch elements for ``batch`` rows (bounded: batches are processed in chunks)."""
        if int(batch) < 0:
            raise ValueError(f"batch {batch!r} is not allowed; use a non-negative integer")
        b = max(1, min(int(batch), CHUNK))
        return int(layout(self.dims, b)[L_END])

    def init_params(self, seed: int, scheme: str = "default") -> np.ndarray:
        """A fresh parameter vector drawn from ``numpy.random.default_rng(seed)``.

        Schemes: ``default`` — He normal, N(0, 2/fan_in), for the ReLU layers
        (conv1, conv2, fc1, fc2) and Glorot uniform, U(±√(6/(fan_in+fan_out))),
        for the output layer; ``he`` — He normal everywhere; ``glorot`` —
        Glorot uniform everywhere; ``normal`` — N(0, 0.01²) everywhere, as
        the reference C++ implementation.  For a convolution fan_in = C_in·25
        and fan_out = C_out·25.  Biases are zero.  Values are drawn in
        float64, layer by layer in ``layers`` order, then cast, so the same
        seed gives the same parameters (up to rounding) in both precisions.

        He scaling keeps the second moment of ReLU layers, but each max-pool
        raises it, so the default logits start wide: on standardised MNIST the
        initial loss is about 8 (fc84 on) rather than ln 10 ≈ 2.3; ``normal``
        starts at ≈ 2.30 like the reference, ``glorot`` at ≈ 2.36.
        """
        if scheme not in INIT_SCHEMES:
            raise ValueError(f"scheme {scheme!r} is not allowed; use one of {INIT_SCHEMES}")
        rng = np.random.default_rng(seed)
        theta = np.zeros(self.n_params, dtype=np.float64)
        for lname, (offset, shape) in self.layers.items():
            if not lname.endswith(".w"):
                continue
            size = int(np.prod(shape))
            fan_in = int(np.prod(shape[1:]))
            fan_out = shape[0] * (int(np.prod(shape[2:])) if len(shape) > 2 else 1)
            rule = scheme
            if scheme == "default":
                rule = "glorot" if lname == "out.w" else "he"
            if rule == "he":
                w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size)
            elif rule == "glorot":
                lim = np.sqrt(6.0 / (fan_in + fan_out))
                w = rng.uniform(-lim, lim, size)
            else:
                w = rng.normal(0.0, 0.01, size)
            theta[offset : offset + size] = w
        return theta.astype(self.dtype)

    def flops(self, batch: int) -> tuple[int, int]:
        """Floating-point operations (forward, backward) of one gradient on ``batch`` rows.

        Multiply-adds count 2.  Forward: each convolution 2·outputs·C_in·25,
        each dense layer 2·in·out, per sample.  Backward: the weight gradient
        of every layer (same count as its forward) plus the input gradient of
        every layer but conv1 (its input is the data).  Pooling, ReLU, bias
        and softmax are not counted.
        """
        C, _, _ = self.input_shape
        d = self.dims
        conv1 = 2 * N1 * d[D_OH1] * d[D_OW1] * C * K * K
        conv2 = 2 * N2 * d[D_OH2] * d[D_OW2] * N1 * K * K
        dense = 2 * d[D_FEAT] * F1
        if self.fc84:
            dense += 2 * F1 * F2
        dense += 2 * d[D_FLAST] * N_CLASSES
        fwd = int(conv1 + conv2 + dense)
        bwd = int(2 * (conv2 + dense) + conv1)
        return int(batch) * fwd, int(batch) * bwd
