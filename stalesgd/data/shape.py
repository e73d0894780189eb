"""What a data set will be, known from its name and options without generating or reading it.

:func:`check_dataset` checks every option the way :func:`stalesgd.data.load_dataset` takes
it (an :class:`~stalesgd.validation.OptionError` naming the option, the value and what is
allowed) and returns the :class:`DataShape`: sizes of the splits, classes and input shape.
Experiments use it to refuse a bad option, a minibatch larger than the training set or a
model that does not fit the data when they are read, before any run starts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from stalesgd.seeds import MAX_SEED
from stalesgd.validation import OptionError, choice, flag, integer, known_keys

from .real import REAL_OPTIONS
from .registry import ALL_NAMES, DATASETS, FILE_SET, GENERATED_NAMES, split_sizes
from .sparse import resolve_sparse_options
from .synthetic import resolve_options
from .transforms import check_count, check_normalize
from .userfile import check_file_set

__all__ = ["DataShape", "check_dataset", "check_dtype"]

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class DataShape:
    """The sizes of a data set: examples per split, classes (0 for regression), the shape of
    one input, and whether inputs are kept as uint8 pixels (``packed``)."""

    name: str
    n_train: int
    n_test: int
    n_classes: int
    input_shape: tuple[int, ...]
    packed: bool
    nnz_per_row: int | None = None
    """Sparse sets: the most entries a row holds (their memory is proportional to it)."""

    @property
    def n_features(self) -> int:
        """Input values per example."""
        return math.prod(self.input_shape)

    def nbytes(self, dtype: Any) -> int:
        """Bytes the loaded inputs take in memory (uint8 pixels, or floats of ``dtype``)."""
        rows = self.n_train + self.n_test
        if self.nnz_per_row is not None:  # CSR: int32 column and a float value per entry
            return rows * (self.nnz_per_row * (4 + np.dtype(dtype).itemsize) + 8)
        per_value = 1 if self.packed else np.dtype(dtype).itemsize
        return rows * self.n_features * per_value


def check_dtype(dtype: Any) -> np.dtype:
    """``float32`` or ``float64`` as a NumPy dtype."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise OptionError("dtype", dtype, ", ".join(DTYPES))
    return dt


def _check_data_dir(name: str, data_dir: Any) -> None:
    if data_dir is None:
        return
    if name in GENERATED_NAMES:
        raise OptionError("data_dir", data_dir, f"no data_dir: {name} data needs no files")
    if not isinstance(data_dir, str | os.PathLike) or not str(data_dir):
        raise OptionError("data_dir", data_dir, "a folder (a non-empty path)")


def check_dataset(name: Any, *, dtype: Any = "float64", data_dir: Any = None, seed: Any = 0,
                  **options: Any) -> tuple[DataShape, dict[str, Any]]:
    """Check a data set's name and options; returns its :class:`DataShape` and the options
    as the loader takes them (synthetic: ``kind`` and that kind's options, defaults filled in).

    Generates nothing and reads no file but the one the ``file`` set names (once per
    process while it is unchanged: :mod:`stalesgd.data.userfile`).
    """
    name = choice(name, "data set", ALL_NAMES)
    check_dtype(dtype)
    integer(seed, "seed", 0, MAX_SEED)
    if name == FILE_SET:
        facts, checked, (n_train, n_test) = check_file_set(data_dir, dtype=dtype,
                                                           seed=int(seed), **options)
        return DataShape(name, n_train, n_test, facts.n_classes, (facts.n_features,),
                         packed=False, nnz_per_row=facts.max_row_nnz), checked
    _check_data_dir(name, data_dir)
    if name == "synthetic":
        opts = dict(options)
        kind = opts.pop("kind", "regression")
        checked = resolve_options(kind, opts)
        images = kind == "images"
        shape = DataShape(name, checked["n_train"], checked["n_test"],
                          checked.get("n_classes", 0),
                          checked["input_shape"] if images else (checked["n_features"],),
                          packed=images)
        return shape, {"kind": kind, **checked}
    if name == "sparse":
        checked = resolve_sparse_options(dict(options))
        shape = DataShape(name, checked["n_train"], checked["n_test"], checked["n_classes"],
                          (checked["n_features"],), packed=False, nnz_per_row=checked["nnz"])
        return shape, checked
    spec = DATASETS[name]
    known_keys(options, "", REAL_OPTIONS, f"options of data set {name!r}")
    n_train, n_test = split_sizes(spec)
    checked = dict(options)
    if "normalize" in checked:
        check_normalize(checked["normalize"])
    if "verify" in checked:
        flag(checked["verify"], "verify")
    shape = DataShape(name, check_count("n_train", checked.get("n_train"), n_train),
                      check_count("n_test", checked.get("n_test"), n_test), spec.n_classes,
                      spec.input_shape, packed=True)
    return shape, checked
