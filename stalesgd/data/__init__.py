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

from .dataset import Dataset
from .errors import (
    DataCorruptError,
    DataDownloadError,
    DataError,
    DataNotFoundError,
    DataReadError,
)
from .files import clear_verdicts
from .real import check_files, load_real
from .registry import ALL_NAMES, DATASETS, FILE_SET
from .shape import DataShape, check_dataset, check_dtype
from .sparse import make_sparse
from .synthetic import make_synthetic
from .userfile import FILE_SUFFIXES, file_identity, load_file_set

__all__ = [
    "ALL_NAMES",
    "DATASETS",
    "FILE_SET",
    "FILE_SUFFIXES",
    "DataCorruptError",
    "DataDownloadError",
    "DataError",
    "DataNotFoundError",
    "DataReadError",
    "DataShape",
    "Dataset",
    "check_dataset",
    "check_files",
    "clear_caches",
    "file_identity",
    "load_dataset",
]


def clear_caches() -> None:
    """Forget the memoised checksum verdicts (files replaced in place)."""
    clear_verdicts()


def load_dataset(name: str, *, dtype: Any = "float64",
                 data_dir: str | os.PathLike[str] | None = None, seed: int = 0,
                 **options: Any) -> Dataset:
    """Load or generate the data set ``name`` as a :class:`Dataset`.

    ``name``: ``"synthetic"``, ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"`` or
    ``"file"`` (a ``.npz`` or ``.csv`` file the option ``file`` names; its options in
    :mod:`stalesgd.data.userfile`).
    ``dtype``: ``"float32"`` or ``"float64"`` for the inputs (and regression
    targets); class labels are always int64.

    Synthetic options: ``kind`` = ``"regression"`` (default),
    ``"classification"`` or ``"images"``, then that kind's options (see
    :data:`stalesgd.data.synthetic.KIND_OPTIONS`: ``n_train``, ``n_test``,
    ``n_features``, ``n_classes``, ``separation``, ``noise``, ``cond``,
    ``bias``, ``input_shape``, ``normalize``); ``seed`` fixes the draw.

    ``"sparse"``: text-like CSR data (:mod:`stalesgd.data.sparse`), options ``n_train``,
    ``n_test``, ``n_features``, ``nnz``, ``n_classes``, ``noise``, ``zipf``.

    File-based options: ``n_train``/``n_test`` (keep the first rows),
    ``normalize`` = ``"standard"`` (default; [0,1] then per-channel training
    mean/std) or ``"unit"`` ([0,1] only), ``verify`` (default True);
    ``data_dir`` is searched first.  ``seed`` is accepted and unused.

    Raises :class:`DataNotFoundError` / :class:`DataCorruptError` / :class:`DataReadError`
    with the file, every place looked and the fixing command; an
    :class:`~stalesgd.validation.OptionError` (a ValueError) for a bad name or option,
    naming it and what is allowed (:func:`check_dataset` makes the same checks without
    loading anything).
    """
    dt = check_dtype(dtype)
    _, checked = check_dataset(name, dtype=dt, data_dir=data_dir, seed=seed, **options)
    if name == "synthetic":
        kind = checked.pop("kind")
        return make_synthetic(kind, seed=int(seed), dtype=dt, **checked)
    if name == FILE_SET:
        return load_file_set(dtype=dt, seed=int(seed), **checked)
    if name == "sparse":
        return make_sparse(seed=int(seed), dtype=dt, **checked)
    return load_real(name, dtype=dt, data_dir=data_dir, **checked)
