"""The in-memory form every data set takes, real or synthetic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .csr import CSRMatrix

SPLITS = ("train", "test")


@dataclass
class Dataset:
    """Train and test examples ready for the kernels.

    Three storage forms:

    * dense (``pixel_coef is None``): ``X_*`` are 2-D, C-contiguous arrays of
      the requested float dtype;
    * packed images (``pixel_coef`` given): ``X_*`` are the uint8 pixels
      ``(n, C*H*W)`` and ``pixel_coef`` is a ``(C, 3)`` array of that float
      dtype, rows ``(scale, shift, factor)``: the model input of pixel value
      ``p`` in channel ``c`` is ``(p·scale − shift)·factor``, rounded to the
      dtype after each operation.  That is exactly the normalisation a dense
      float copy would hold (``transforms.pixels_to_inputs``), in a quarter
      (float32) or an eighth (float64) of the memory: MNIST's training set
      takes 47 MB instead of 188;
    * sparse (``X_*`` are :class:`~stalesgd.data.csr.CSRMatrix`): memory proportional to
      the non-zeros; kernels take ``(indptr, indices, values, n_cols)``.

    Kernels take :meth:`inputs` (either form; ``stalesgd.problems._kernels``
    reads both); code that wants float rows asks :meth:`features`.  Images are
    flattened channel-major, C×H×W; ``y_*`` are int64 labels for
    classification (``n_classes > 0``) or floats of the same dtype for
    regression (``n_classes == 0``).  ``input_shape`` is ``(C, H, W)`` for
    images and ``(d,)`` otherwise.  ``meta`` carries generator facts such as
    the true weights of a synthetic regression.
    """

    name: str
    X_train: np.ndarray | CSRMatrix
    y_train: np.ndarray
    X_test: np.ndarray | CSRMatrix
    y_test: np.ndarray
    n_classes: int
    input_shape: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    pixel_coef: np.ndarray | None = None

    def __post_init__(self) -> None:
        coef = self.pixel_coef
        if coef is None:
            return
        if coef.ndim != 2 or coef.shape[1] != 3 or coef.dtype not in (np.float32, np.float64):
            raise ValueError(f"pixel_coef must be a float32/float64 (channels, 3) array; got "
                             f"{coef.shape} {coef.dtype}")
        for name in ("X_train", "X_test"):
            X = getattr(self, name)
            if X.dtype != np.uint8 or X.ndim != 2:
                raise ValueError(f"packed {name} must be 2-D uint8 pixels; got {X.ndim}-D "
                                 f"{X.dtype}")
            if X.shape[1] % coef.shape[0]:
                raise ValueError(f"{name} has {X.shape[1]} columns, not a multiple of the "
                                 f"{coef.shape[0]} channels of pixel_coef")

    @property
    def packed(self) -> bool:
        """True when ``X_*`` are uint8 pixels decoded with :attr:`pixel_coef`."""
        return self.pixel_coef is not None

    @property
    def sparse(self) -> bool:
        """True when ``X_*`` are :class:`~stalesgd.data.csr.CSRMatrix`."""
        return isinstance(self.X_train, CSRMatrix)

    @property
    def max_row_nnz(self) -> int:
        """The most non-zeros any example holds (training and test): every feature for a
        dense set."""
        if not self.sparse:
            return self.n_features
        return max(self.X_train.max_row_nnz, self.X_test.max_row_nnz)

    @property
    def dtype(self) -> np.dtype:
        """The float dtype of the model inputs."""
        return (self.X_train if self.pixel_coef is None else self.pixel_coef).dtype

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.X_test.shape[0])

    def inputs(self, split: str) -> np.ndarray | tuple:
        """The ``split``'s examples in the form kernels take: the dense array,
        ``(pixels, pixel_coef)`` for packed images, ``(indptr, indices, values, n_cols)``
        for sparse sets."""
        X = self._split(split)
        if isinstance(X, CSRMatrix):
            return X.kernel_inputs()
        return X if self.pixel_coef is None else (X, self.pixel_coef)

    def features(self, split: str, rows: Any = None) -> np.ndarray:
        """Float model inputs of ``split`` (all rows, or ``rows``: an index or slice).

        Dense sets return the stored array (or its rows); packed and sparse sets decode a
        new float array, so ask for the rows you need.
        """
        X = self._split(split)
        if isinstance(X, CSRMatrix):
            return X.toarray(rows)
        if rows is not None:
            X = X[rows]
        coef = self.pixel_coef
        if coef is None:
            return X
        per = X.reshape(*X.shape[:-1], coef.shape[0], -1)  # (..., C, H*W)
        out = np.multiply(per, coef[:, 0, None], dtype=coef.dtype)
        out -= coef[:, 1, None]
        out *= coef[:, 2, None]
        return np.ascontiguousarray(out.reshape(X.shape))

    def nbytes(self) -> int:
        """Bytes the examples and labels take in memory."""
        extra = 0 if self.pixel_coef is None else self.pixel_coef.nbytes
        return int(self.X_train.nbytes + self.X_test.nbytes + self.y_train.nbytes
                   + self.y_test.nbytes + extra)

    def _split(self, split: str) -> np.ndarray:
        if split == "train":
            return self.X_train
        if split == "test":
            return self.X_test
        raise ValueError(f"split={split!r} is not allowed; use one of {SPLITS}")
