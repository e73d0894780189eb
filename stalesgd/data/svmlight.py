"""Read LIBSVM / svmlight text files (RCV1, news20, …) into the sparse input form.

One example per line: ``LABEL INDEX:VALUE INDEX:VALUE …``, an optional ``# comment`` to
the end of the line, an optional ``qid:N`` after the label (ignored).  Blank and
comment-only lines are skipped.  Class labels: ±1 become classes 0/1 (−1 → 0); any other
integer labels become the classes 0..K−1 in ascending order (so 0..K−1 stay as they are,
LIBSVM's 1..K and the 2/4 of some binary sets are renumbered).  Indices are 1-based as the
format defines them unless the file uses index 0 (``zero_based="auto"``, as scikit-learn
reads them) or the caller says otherwise.  Entries of a line may come in any order; a
repeated index or a non-finite value is an error; explicit zeros are dropped.  A ``.gz``
or ``.bz2`` file is decompressed.
"""

from __future__ import annotations

import bz2
import gzip
import io
import math
import os
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .csr import CSRMatrix, csr_from_coo
from .errors import DataCorruptError, DataNotFoundError, DataReadError

__all__ = ["MAX_INDEX", "class_labels", "parse_svmlight", "read_svmlight", "text_lines",
           "write_svmlight"]

#: the largest feature index a file may use (column numbers are 32-bit integers)
MAX_INDEX = 2**31 - 2
#: what reading a damaged compressed file raises
_DECOMPRESSION_ERRORS = (zlib.error, gzip.BadGzipFile, EOFError)


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
    _check_zero_based(zero_based)
    path = Path(path)
    f = _open(path)
    try:
        with f:
            X, labels = parse_svmlight(f, str(path), n_features=n_features,
                                       zero_based=zero_based, dtype=dtype)
    except UnicodeDecodeError as exc:
        raise DataCorruptError(f"{path}: not a text file ({exc.reason})") from exc
    except _DECOMPRESSION_ERRORS as exc:
        raise DataCorruptError(f"{path}: not a readable {path.suffix} file ({exc})") from exc
    except OSError as exc:
        if path.suffix in (".gz", ".bz2"):  # (bz2 says "Invalid data stream")
            raise DataCorruptError(f"{path}: not a readable {path.suffix} file ({exc})"
                                   ) from exc
        raise DataReadError(f"cannot read svmlight file {path}: {exc}") from exc
    return X, class_labels(str(path), labels)[0]


def text_lines(content: str) -> Iterable[str]:
    """The lines of a file's decoded text, split as reading the file in text mode splits
    them (``\n``, ``\r\n`` or ``\r``), so that a file read whole and one read line by line
    give the same lines and the same line numbers in errors."""
    return io.StringIO(content, newline=None)


def write_svmlight(path: str | os.PathLike[str], X: CSRMatrix, y: np.ndarray) -> Path:
    """Write the rows of ``X`` with labels ``y`` as an svmlight file (1-based indices,
    values as Python prints floats, so they read back exactly; classes 0/1 of a binary set
    as −1/+1, other labels as they are); returns the path."""
    path = Path(path)
    X = _as_csr(X)
    y = np.asarray(y)
    if y.shape != (X.shape[0],):
        raise ValueError(f"y has shape {y.shape}; expected ({X.shape[0]},), a label per row")
    if y.dtype.kind not in "biuf" or (y.dtype.kind == "f" and not np.isfinite(y).all()):
        raise ValueError(f"y must hold finite numbers (class numbers or targets); got {y.dtype}"
                         + (" with NaN or infinity" if y.dtype.kind == "f" else ""))
    binary = y.dtype.kind in "biu" and set(np.unique(y.astype(np.int64)).tolist()) <= {0, 1}
    labels = [str(2 * int(v) - 1) if binary else repr(v.item()) for v in y]
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix, open)
    with opener(path, "wt", encoding="utf-8") as f:
        for r, label in enumerate(labels):
            a, b = int(X.indptr[r]), int(X.indptr[r + 1])
            entries = " ".join(f"{j + 1}:{v!r}" for j, v in
                               zip(X.indices[a:b].tolist(), X.values[a:b].tolist(), strict=True))
            f.write(f"{label} {entries}\n" if entries else f"{label}\n")
    return path


def _as_csr(X: Any) -> CSRMatrix:
    """``X`` as a :class:`CSRMatrix`: one already, a SciPy sparse matrix, or a 2-D array."""
    if isinstance(X, CSRMatrix):
        return X
    if hasattr(X, "tocsr"):  # SciPy
        X = X.tocsr()
        X.sort_indices()
        return CSRMatrix(np.asarray(X.indptr, np.int64), np.asarray(X.indices, np.int32),
                         np.asarray(X.data, np.float64), int(X.shape[1]))
    A = np.asarray(X)
    if A.ndim != 2 or A.dtype.kind not in "biuf":
        raise TypeError(f"X must be a CSRMatrix, a SciPy sparse matrix or a 2-D array of "
                        f"numbers; got {type(X).__name__} {getattr(A, 'shape', '')}")
    rows, cols = np.nonzero(A)  # (row-major: sorted by row, then column)
    return csr_from_coo(rows, cols, A[rows, cols], A.shape[0], A.shape[1], np.float64)


def parse_svmlight(lines: Iterable[str], name: str, *, n_features: int | None = None,
                   zero_based: bool | str = "auto", dtype: Any = np.float64
                   ) -> tuple[CSRMatrix, np.ndarray]:
    """``(X, labels)`` of svmlight text given line by line: the CSR rows and each example's
    label as a float (``name`` names the source in errors; other arguments as
    :func:`read_svmlight`)."""
    _check_zero_based(zero_based)
    labels, lengths, cols, vals, lowest, highest = _parse(lines, name)
    cols_arr = np.asarray(cols, dtype=np.int64)
    if zero_based == "auto":
        zero_based = lowest == 0
    if not zero_based:
        if lowest == 0:
            raise DataCorruptError(f"{name}: index 0 in a file read as 1-based; pass "
                                   "zero_based=True (or 'auto')")
        cols_arr -= 1
    shift = 0 if zero_based else 1
    if highest < 0 and n_features is None:
        raise DataCorruptError(f"{name}: no line has an INDEX:VALUE entry; a data file needs "
                               "at least one feature (or give n_features)")
    width = highest + 1 - shift if highest >= 0 else int(n_features)  # (explicit zeros count)
    if n_features is not None:
        if width > n_features:
            raise DataCorruptError(f"{name}: feature index {highest} is beyond n_features = "
                                   f"{n_features}")
        width = int(n_features)
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    X = CSRMatrix(indptr, cols_arr.astype(np.int32), np.asarray(vals, dtype=dtype), width)
    return X, np.asarray(labels, dtype=np.float64)


def class_labels(name: str, labels: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Float labels as int64 classes (±1 → 1/0, other integers → 0..K−1 in ascending
    order) and the label each class stands for."""
    y = np.asarray(labels, dtype=np.float64)
    distinct = np.unique(y)
    if set(distinct.tolist()) <= {-1.0, 1.0}:
        return (y > 0).astype(np.int64), [-1.0, 1.0]
    bad = y != np.round(y)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataCorruptError(f"{name}: label {y[first]:g} of example {first + 1} is not "
                               "allowed; class labels are integers (±1, 0..K-1, 1..K, …)")
    return np.searchsorted(distinct, y).astype(np.int64), distinct.tolist()


def _check_zero_based(zero_based: Any) -> None:
    if zero_based not in (True, False, "auto"):
        raise ValueError(f"zero_based={zero_based!r} is not allowed; use True, False or 'auto'")


def _open(path: Path) -> Any:
    if not path.is_file():
        raise DataNotFoundError(f"svmlight file {path} does not exist (or is not a file)")
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rt", encoding="utf-8")
        if path.suffix == ".bz2":
            return bz2.open(path, "rt", encoding="utf-8")
        return open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise DataReadError(f"cannot read svmlight file {path}: {exc}") from exc


def _parse(lines: Iterable[str], name: str
           ) -> tuple[list[float], list[int], list[int], list[float], int, int]:
    """Labels, entries per row, every row's (index, value) pairs sorted by index, and the
    lowest and highest index written (explicit zeros included; −1 without any)."""
    labels: list[float] = []
    lengths: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    lowest, highest = MAX_INDEX + 1, -1
    for number, line in enumerate(lines, start=1):
        if number == 1:
            line = line.removeprefix("\ufeff")  # a byte-order mark (files written on Windows)
        tokens = line.partition("#")[0].split()
        if not tokens:
            continue
        where = f"{name}, line {number}"
        labels.append(_number(tokens[0], where, "label"))
        row: dict[int, float] = {}
        seen: set[int] = set()  # (explicit zeros included: they are not kept in ``row``)
        for tok in tokens[1:]:
            key, sep, value = tok.partition(":")
            if key == "qid":
                continue
            if not sep or not (key.isascii() and key.isdigit()):
                raise DataCorruptError(f"{where}: {tok!r} is not INDEX:VALUE (a "
                                       "non-negative integer index, a colon, a number)")
            j = int(key)
            if j > MAX_INDEX:
                raise DataCorruptError(f"{where}: index {j} is beyond the largest allowed, "
                                       f"{MAX_INDEX}")
            lowest, highest = min(lowest, j), max(highest, j)
            if j in seen:
                raise DataCorruptError(f"{where}: index {j} appears twice")
            seen.add(j)
            v = _number(value, where, f"the value of index {j}")
            if v != 0.0:
                row[j] = v
        for j in sorted(row):
            cols.append(j)
            vals.append(row[j])
        lengths.append(len(row))
    if not labels:
        raise DataCorruptError(f"{name}: no examples (every line is blank or a comment)")
    return labels, lengths, cols, vals, lowest, highest


def _number(text: str, where: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise DataCorruptError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(v):
        raise DataCorruptError(f"{where}: {what} {text!r} is not finite")
    return v
