"""Read LIBSVM / svmlight text files (RCV1, news20, …) into the sparse input form.

One example per line: ``LABEL INDEX:VALUE INDEX:VALUE …``, an optional ``# comment`` to
the end of the line, an optional ``qid:N`` after the label (ignored).  Blank and
comment-only lines are skipped.  Labels ±1 become classes 0/1 (−1 → 0); other labels must be
non-negative integers, taken as class numbers.  Indices are 1-based as the format defines
them unless the file uses index 0 (``zero_based="auto"``, as scikit-learn reads them) or
the caller says otherwise.  Entries of a line may come in any order; a repeated index or a
non-finite value is an error; explicit zeros are dropped.  A ``.gz`` file is decompressed.
"""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .csr import CSRMatrix
from .errors import DataCorruptError, DataNotFoundError, DataReadError

__all__ = ["read_svmlight"]


def read_svmlight(path: str | os.PathLike[str], *, n_features: int | None = None,
                  zero_based: bool | str = "auto", dtype: Any = np.float64
                  ) -> tuple[CSRMatrix, np.ndarray]:
    """``(X, y)`` of the svmlight file ``path``: a :class:`~stalesgd.data.csr.CSRMatrix` of
    ``dtype`` values and int64 class labels (see the module docstring).

    ``n_features``: the number of columns (default: the largest index seen + 1); an index
    beyond it is an error.  ``zero_based``: ``True``, ``False`` or ``"auto"``.
    Raises :class:`~stalesgd.data.DataNotFoundError` / :class:`~stalesgd.data.DataReadError`
    for a missing or unreadable file and :class:`~stalesgd.data.DataCorruptError` naming
    the line and what is wrong for a malformed one.
    """
    if zero_based not in (True, False, "auto"):
        raise ValueError(f"zero_based={zero_based!r} is not allowed; use True, False or 'auto'")
    path = Path(path)
    labels, lengths, cols, vals = _parse(path)
    cols_arr = np.asarray(cols, dtype=np.int64)
    if zero_based == "auto":
        zero_based = bool(cols_arr.size) and int(cols_arr.min()) == 0
    if not zero_based:
        if cols_arr.size and int(cols_arr.min()) < 1:
            raise DataCorruptError(f"{path}: index 0 in a file read as 1-based; pass "
                                   "zero_based=True (or 'auto')")
        cols_arr -= 1
    width = int(cols_arr.max()) + 1 if cols_arr.size else 1
    if n_features is not None:
        if cols_arr.size and width > n_features:
            raise DataCorruptError(f"{path}: feature index {width - (0 if zero_based else -1)}"
                                   f" is beyond n_features = {n_features}")
        width = int(n_features)
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    X = CSRMatrix(indptr, cols_arr.astype(np.int32), np.asarray(vals, dtype=dtype), width)
    return X, _classes(path, labels)


def _open(path: Path) -> Any:
    if not path.is_file():
        raise DataNotFoundError(f"svmlight file {path} does not exist (or is not a file)")
    try:
        return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)  # noqa: SIM115
    except OSError as exc:
        raise DataReadError(f"cannot read svmlight file {path}: {exc}") from exc


def _parse(path: Path) -> tuple[list[float], list[int], list[int], list[float]]:
    """Labels, entries per row, and every row's (index, value) pairs sorted by index."""
    labels: list[float] = []
    lengths: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    try:
        with _open(path) as f:
            for number, line in enumerate(f, start=1):
                tokens = line.partition("#")[0].split()
                if not tokens:
                    continue
                where = f"{path}, line {number}"
                labels.append(_number(tokens[0], where, "label"))
                row: dict[int, float] = {}
                for tok in tokens[1:]:
                    key, sep, value = tok.partition(":")
                    if key == "qid":
                        continue
                    if not sep or not key.isdigit():
                        raise DataCorruptError(f"{where}: {tok!r} is not INDEX:VALUE (a "
                                               "non-negative integer index, a colon, a number)")
                    j = int(key)
                    if j in row:
                        raise DataCorruptError(f"{where}: index {j} appears twice")
                    v = _number(value, where, f"the value of index {j}")
                    if v != 0.0:
                        row[j] = v
                for j in sorted(row):
                    cols.append(j)
                    vals.append(row[j])
                lengths.append(len(row))
    except UnicodeDecodeError as exc:
        raise DataCorruptError(f"{path}: not a text file ({exc.reason})") from exc
    except (OSError, EOFError) as exc:
        if isinstance(exc, DataNotFoundError | DataReadError):
            raise
        raise DataReadError(f"cannot read svmlight file {path}: {exc}") from exc
    if not labels:
        raise DataCorruptError(f"{path}: no examples (every line is blank or a comment)")
    return labels, lengths, cols, vals


def _number(text: str, where: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise DataCorruptError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(v):
        raise DataCorruptError(f"{where}: {what} {text!r} is not finite")
    return v


def _classes(path: Path, labels: list[float]) -> np.ndarray:
    """Labels as int64 classes: ±1 → 1/0, else non-negative integers as they are."""
    y = np.asarray(labels)
    if set(np.unique(y)) <= {-1.0, 1.0}:
        return (y > 0).astype(np.int64)
    bad = (y < 0) | (y != np.round(y))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataCorruptError(f"{path}: label {y[first]:g} of example {first + 1} is not "
                               "allowed; labels are ±1 or non-negative integers (class numbers)")
    return y.astype(np.int64)
