"""Data sets: seeded synthetic generators and readers of the standard files.

Entry point: :func:`load_dataset`.  File-based sets (``mnist``,
``fashion-mnist``, ``cifar10``) are found along the search path of DESIGN §9
(see :mod:`stalesgd.data.paths`), verified once per file per process
(:mod:`stalesgd.data.files`) and memoised; ``synthetic`` is generated from the
seed and needs no files.  ``stalesgd data …`` lives in :mod:`stalesgd.data.cli`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .dataset import Dataset
from .errors import DataCorruptError, DataDownloadError, DataError, DataNotFoundError
from .files import clear_verdicts
from .real import REAL_OPTIONS, clear_parsed, load_real
from .registry import ALL_NAMES, DATASETS
from .synthetic import make_synthetic

__all__ = [
    "ALL_NAMES",
    "DATASETS",
    "DataCorruptError",
    "DataDownloadError",
    "DataError",
    "DataNotFoundError",
    "Dataset",
    "clear_caches",
    "load_dataset",
]


def clear_caches() -> None:
    """Forget memoised parsed arrays and checksum verdicts (files replaced in place)."""
    clear_parsed()
    clear_verdicts()


def _dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype={dtype!r} is not allowed; use 'float32' or 'float64'")
    return dt


def load_dataset(name: str, *, dtype: Any = "float64",
                 data_dir: str | os.PathLike[str] | None = None, seed: int = 0,
                 **options: Any) -> Dataset:
    """Load or generate the data set ``name`` as a :class:`Dataset`.

    ``name``: ``"synthetic"``, ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"``.
    ``dtype``: ``"float32"`` or ``"float64"`` for the inputs (and regression
    targets); class labels are always int64.

    Synthetic options: ``kind`` = ``"regression"`` (default),
    ``"classification"`` or ``"images"``, then that kind's options (see
    :data:`stalesgd.data.synthetic.KIND_OPTIONS`: ``n_train``, ``n_test``,
    ``n_features``, ``n_classes``, ``separation``, ``noise``, ``cond``,
    ``bias``, ``input_shape``, ``normalize``); ``seed`` fixes the draw.

    File-based options: ``n_train``/``n_test`` (keep the first rows),
    ``normalize`` = ``"standard"`` (default; [0,1] then per-channel training
    mean/std) or ``"unit"`` ([0,1] only), ``verify`` (default True);
    ``data_dir`` is searched first.  ``seed`` is accepted and unused.

    Raises :class:`DataNotFoundError` / :class:`DataCorruptError` with the file,
    every place looked and the fixing command; ``ValueError`` for a bad name
    or option, listing what is allowed.
    """
    dt = _dtype(dtype)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} is not allowed; use a non-negative integer")
    if name == "synthetic":
        if data_dir is not None:
            raise ValueError("data_dir is not allowed for 'synthetic' (it needs no files)")
        kind = options.pop("kind", "regression")
        return make_synthetic(kind, seed=int(seed), dtype=dt, **options)
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; allowed: {', '.join(ALL_NAMES)}")
    unknown = sorted(set(options) - set(REAL_OPTIONS))
    if unknown:
        raise ValueError(
            f"option(s) {unknown} not allowed for data set {name!r}; allowed: "
            f"{list(REAL_OPTIONS)} (plus dtype, data_dir, seed)"
        )
    return load_real(name, dtype=dt, data_dir=data_dir, **options)
