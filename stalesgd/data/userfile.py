"""The data set ``file``: examples read from a file the user names.

Formats, chosen by the file's suffix (or the option ``format`` where the name does not
tell, e.g. LIBSVM's ``rcv1_train.binary.bz2``):

``.npz``
    a NumPy archive with the arrays ``X`` (2-D, rows are examples) and ``y`` (1-D, one
    label per row), and optionally ``X_test`` and ``y_test`` (both or neither).  Saved with
    ``numpy.savez`` or ``numpy.savez_compressed``; object arrays are refused (no pickle).
``.csv``
    comma-separated numbers, one example per line; the label is the last column unless
    ``label_column`` says otherwise (0-based, negative counts from the end); ``header =
    true`` skips a first line of column names.

Options (problem options in an experiment file, ``--data-file``/``--data-sha256`` or
``-o KEY=VALUE`` on the command line): ``file`` (the path, relative to the current folder),
``format`` (``npz``, ``csv`` or ``svmlight``; default: from the suffix), ``sha256`` (the
file's expected SHA-256, checked before anything runs and again when it is loaded),
``kind`` (``classification``: labels are the integers 0..K-1, each one present;
``regression``: any finite numbers; a problem picks the one its model solves),
``label_column``, ``header``, ``test_fraction`` and ``n_train``/``n_test`` (keep the first
rows of each split).

Without a test split (every ``.csv`` and svmlight file, an ``.npz`` without ``X_test``) a
hold-out is taken: ``ceil(test_fraction × rows)`` rows (default 20 %) drawn with
``numpy.random.default_rng(seed).permutation`` (``seed`` is the problem option, default 0)
form the test split, the others the training split, both in file order.

Every value must be finite.  A file that is missing, unreadable, not in its format or whose
arrays are of the wrong shape is refused with a :class:`~stalesgd.data.DataError` naming the
file and what is wrong; a bad option with an :class:`~stalesgd.validation.OptionError`.
What a file holds is read once per process for checking (memoised by path, size and
modification time) and again when the problem is built.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import math
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stalesgd.validation import OptionError, choice, flag, integer, known_keys, number, text

from .csr import CSRMatrix
from .dataset import Dataset
from .errors import DataCorruptError, DataNotFoundError, DataReadError
from .files import file_key
from .svmlight import class_labels, parse_svmlight, text_lines
from .transforms import check_count

__all__ = ["FILE_OPTIONS", "FILE_SUFFIXES", "FileFacts", "check_file_set", "file_identity",
           "load_file_set"]

#: the options of the ``file`` data set
FILE_OPTIONS = ("file", "format", "sha256", "kind", "label_column", "header", "test_fraction",
                "n_train", "n_test")
#: the formats read, and the suffixes that name them
FORMATS: dict[str, tuple[str, ...]] = {"npz": (".npz",), "csv": (".csv",),
                                       "svmlight": (".svm", ".svmlight", ".libsvm")}
FILE_SUFFIXES = tuple(suffix for suffixes in FORMATS.values() for suffix in suffixes)
#: compressed text files: the suffix after the format's, and how to open it
COMPRESSIONS = {".gz": gzip.decompress, ".bz2": bz2.decompress}
_TEXT_FORMATS = ("csv", "svmlight")
_ANY_FILE = "the path of a .npz, .csv or svmlight (.svm) file"
KINDS = ("classification", "regression")
DEFAULT_TEST_FRACTION = 0.2
NPZ_KEYS = ("X", "y", "X_test", "y_test")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: how a data file was named, in messages about it
_NAMED = "(--data-file, or file in the problem options)"


@dataclass(frozen=True)
class FileFacts:
    """What a data file holds, known after reading it once: its absolute path and SHA-256,
    the rows of each split (``n_test`` None: no test split), features and classes (0 for
    regression)."""

    path: str
    sha256: str
    n_rows: int
    n_test: int | None
    n_features: int
    n_classes: int
    max_row_nnz: int | None = None
    """Sparse (svmlight) files: the most non-zeros of a row; None for dense files."""
    largest: float = 0.0
    """The largest magnitude of a value a run reads as a float (inputs; regression targets),
    for the check that they fit the run's dtype."""
    labels: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The classes of the rows of ``X`` (classification), for the check that the training
    split holds every class."""


@dataclass(frozen=True)
class _Arrays:
    X: np.ndarray | CSRMatrix
    y: np.ndarray
    X_test: np.ndarray | None
    y_test: np.ndarray | None
    labels: list[float] | None = None  # svmlight classes: the label each one stands for


#: the largest class label a file may hold (labels are the integers 0..K-1)
MAX_CLASS = 1_000_000

_facts: dict[tuple[Any, ...], FileFacts] = {}
_digests: dict[tuple[str, int, int], str] = {}


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options with defaults filled in, each value checked (no file is read)."""
    known_keys(options, "", FILE_OPTIONS, "options of data set 'file'")
    if "file" not in options:
        raise OptionError("file", None, f"{_ANY_FILE} (--data-file PATH, or file = \"PATH\" "
                          "in the problem options)", "is missing")
    path = text(options["file"], "file", _ANY_FILE)
    fmt, compression = _format_of(path, options.get("format"))
    o = {"file": path, "format": fmt, "compression": compression,
         "kind": choice(options.get("kind", "classification"), "kind", KINDS),
         "label_column": integer(options.get("label_column", -1), "label_column"),
         "header": flag(options.get("header", False), "header"),
         "test_fraction": number(options.get("test_fraction", DEFAULT_TEST_FRACTION),
                                 "test_fraction", 0.0, 1.0, positive=True,
                                 allowed="a number > 0 and < 1"),
         "n_train": options.get("n_train"), "n_test": options.get("n_test")}
    if o["test_fraction"] >= 1.0:
        raise OptionError("test_fraction", o["test_fraction"], "a number > 0 and < 1")
    if "sha256" in options:
        digest = options["sha256"]
        if not isinstance(digest, str) or not _SHA256.match(digest.lower()):
            raise OptionError("sha256", digest, "64 hexadecimal digits (`sha256sum FILE`)")
        o["sha256"] = digest.lower()
    if fmt != "csv":
        why = "a .npz file names its arrays" if fmt == "npz" else "svmlight lines start with it"
        for key in ("label_column", "header"):
            if key in options:
                raise OptionError(key, options[key], f"no {key}: {why}",
                                  f"is set for a {'.npz' if fmt == 'npz' else fmt} file")
    return o


def _format_of(path: str, fmt: Any) -> tuple[str, str | None]:
    """The file's format (the option ``format``, else from the suffix) and its compression
    suffix (None: not compressed)."""
    if Path(path).is_dir():
        raise DataReadError(f"{Path(path).absolute()}: is a folder, not a data file {_NAMED}")
    suffixes = [x.lower() for x in Path(path).suffixes]
    compression = suffixes[-1] if suffixes and suffixes[-1] in COMPRESSIONS else None
    inner = suffixes[-2 if compression else -1] if len(suffixes) > bool(compression) else ""
    if fmt is None:
        fmt = next((f for f, names in FORMATS.items() if inner in names), None)
        if fmt is None:
            raise OptionError("file", path, f"a file ending in {', '.join(FILE_SUFFIXES)} "
                              f"(.csv and svmlight files also with {' or '.join(COMPRESSIONS)} "
                              "after it), or the option format naming its format",
                              f"has the unsupported suffix {inner or '(none)'!r}")
    fmt = choice(fmt, "format", tuple(FORMATS))
    if compression is not None and fmt not in _TEXT_FORMATS:
        raise OptionError("file", path, f"a {fmt} file without {compression} (only .csv and "
                          "svmlight text is decompressed)")
    return fmt, compression


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataNotFoundError(f"{path}: no such data file {_NAMED}; give {_ANY_FILE}"
                                ) from None
    except IsADirectoryError:
        raise DataReadError(f"{path}: is a folder, not a data file {_NAMED}") from None
    except OSError as exc:
        raise DataReadError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _parse_npz(path: Path, raw: bytes) -> _Arrays:
    if not raw.startswith(b"PK"):
        raise DataCorruptError(f"{path}: not a NumPy .npz archive (a zip file written by "
                               "numpy.savez); the option format or the suffix says npz")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            keys = set(archive.files)
            extra = sorted(keys - set(NPZ_KEYS))
            if extra or not {"X", "y"} <= keys:
                raise DataCorruptError(
                    f"{path}: holds the arrays {', '.join(sorted(keys)) or '(none)'}; a data "
                    f"file holds X and y, optionally X_test and y_test (numpy.savez(PATH, "
                    f"X=X, y=y))")
            if ("X_test" in keys) != ("y_test" in keys):
                raise DataCorruptError(f"{path}: has only one of X_test and y_test; give both "
                                       "or neither (then a hold-out is taken)")
            arrays = {k: archive[k] for k in NPZ_KEYS if k in keys}
        for k, a in arrays.items():
            if not isinstance(a, np.ndarray):  # (a member that is not an .npy file)
                raise DataCorruptError(f"{path}: its member {k!r} is not a NumPy array "
                                       "(numpy.savez(PATH, X=X, y=y) writes them)")
    except DataCorruptError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataCorruptError(f"{path}: not a readable NumPy .npz archive of numbers ({exc})"
                               ) from None
    return _Arrays(arrays["X"], arrays["y"], arrays.get("X_test"), arrays.get("y_test"))


def _text(path: Path, raw: bytes, compression: str | None) -> str:
    """The file's text, decompressed if it is compressed."""
    if compression is not None:
        try:
            raw = COMPRESSIONS[compression](raw)
        except (OSError, EOFError, ValueError, zlib.error) as exc:
            raise DataCorruptError(f"{path}: not a readable {compression} file ({exc})"
                                   ) from None
    try:
        return raw.decode("utf-8-sig")  # (a byte-order mark, as Windows writes, is dropped)
    except UnicodeDecodeError as exc:
        raise DataCorruptError(f"{path}: not UTF-8 text ({exc})") from None


def _parse_svmlight(path: Path, content: str, kind: str) -> _Arrays:
    X, labels = parse_svmlight(text_lines(content), str(path))
    if kind == "regression":
        return _Arrays(X, labels, None, None)
    distinct = np.unique(labels)
    if distinct.size < 2:
        raise DataCorruptError(f"{path}: every example has the label {distinct[0]:g}; a "
                               "classifier needs at least 2 classes (kind = 'regression' "
                               "reads labels as targets)")
    y, names = class_labels(str(path), labels)
    return _Arrays(X, y, None, None, names)


def _parse_csv(path: Path, content: str, label_column: int, header: bool) -> _Arrays:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": checked below
            table = np.loadtxt(io.StringIO(content), delimiter=",", skiprows=int(header),
                               ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise DataCorruptError(_csv_problem(path, str(exc), header)) from None
    if table.size == 0:
        raise DataCorruptError(f"{path}: holds no examples")
    n_cols = table.shape[1]
    if n_cols < 2:
        raise DataCorruptError(f"{path}: has {n_cols} column; a data file needs at least one "
                               "feature and the label")
    if not -n_cols <= label_column < n_cols:
        raise OptionError("label_column", label_column,
                          f"a column of the file: an integer in {-n_cols}..{n_cols - 1}")
    col = label_column % n_cols
    return _Arrays(np.delete(table, col, axis=1), table[:, col], None, None)


def _csv_problem(path: Path, numpy_message: str, header: bool) -> str:
    """NumPy's complaint about a cell, told as the example's row and the column, both
    counted from 1 (NumPy counts rows from 0, without the header, blank and comment lines);
    the header hint only when the first row is the one that is not numbers."""
    found = re.search(r"string '(.*)' to float64 at row (\d+), column (\d+)", numpy_message)
    if found is None:
        numpy_message = numpy_message.split("; use `usecols`")[0]  # (NumPy's, not ours)
        return f"{path}: not comma-separated numbers ({numpy_message})"
    row = int(found.group(2)) + 1
    text = (f"{path}: example {row}" + (" (after the header line)" if header else "")
            + f", column {found.group(3)}: {found.group(1)!r} is not a number; a data file "
            "holds comma-separated numbers")
    return text + ("; a first line of names needs header = true"
                   if row == 1 and not header else "")


def _bad_values(a: np.ndarray, name: str) -> str | None:
    bad = ~np.isfinite(a)
    if not bad.any():
        return None
    where = np.argwhere(bad)[0]
    count = int(bad.sum())
    at = f"{name}[{', '.join(str(int(i)) for i in where)}]"
    return (f"{name} has {count} non-finite value{'s' if count != 1 else ''} (NaN or "
            f"infinity), first at {at} (rows and columns counted from 0)")


def _check_arrays(path: Path, a: _Arrays, kind: str) -> int:
    """Refuse arrays of the wrong shape, type or values; returns the number of classes."""
    pairs = [("X", "y", a.X, a.y)]
    if a.X_test is not None:
        pairs.append(("X_test", "y_test", a.X_test, a.y_test))
    for xn, yn, X, y in pairs:
        for name, arr in ((xn, X), (yn, y)):
            if isinstance(arr, CSRMatrix):
                continue  # the svmlight reader checked its numbers
            if arr.dtype.kind not in "biuf":
                raise DataCorruptError(f"{path}: {name} holds {arr.dtype} values; numbers are "
                                       "allowed")
        if not isinstance(X, CSRMatrix) and X.ndim != 2:
            raise DataCorruptError(f"{path}: {xn} has shape {X.shape}; expected (rows, "
                                   "features)")
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise DataCorruptError(f"{path}: {yn} has shape {y.shape}; expected "
                                   f"({X.shape[0]},), one label per row of {xn}")
        if X.shape[0] == 0:
            raise DataCorruptError(f"{path}: {xn} has no rows (an empty split)")
        if X.shape[1] == 0:
            raise DataCorruptError(f"{path}: {xn} has no features (shape {X.shape})")
        for name, arr in ((xn, X), (yn, y)):
            why = None if isinstance(arr, CSRMatrix) else _bad_values(arr, name)
            if why:
                raise DataCorruptError(f"{path}: {why}")
    if a.X_test is not None and a.X_test.shape[1] != a.X.shape[1]:
        raise DataCorruptError(f"{path}: X_test has {a.X_test.shape[1]} features, X has "
                               f"{a.X.shape[1]}")
    if kind == "regression":
        return 0
    splits = [("y", a.y)] + ([] if a.y_test is None else [("y_test", a.y_test)])
    for name, y in splits:
        bad = (y != np.round(y)) | (y < 0) | (y > MAX_CLASS)
        if np.any(bad):
            odd = ", ".join(f"{v:g}" for v in y[bad][:5])
            hint = ("; for labels -1 and +1 write 0 and 1 (an svmlight file's ±1 are read as "
                    "1 and 0)" if np.all(np.isin(y, (-1, 1))) else
                    "; a regression model (linreg) reads them as targets")
            raise DataCorruptError(f"{path}: labels must be the integers 0..K-1 for a "
                                   f"classifier; {name} holds {odd}{hint}")
    labels = a.y if a.y_test is None else np.concatenate([a.y, a.y_test])
    present = np.unique(labels.astype(np.int64))
    k = int(present[-1]) + 1
    if present.size < 2 or present.size != k:
        missing = sorted(set(range(k)) - set(present.tolist()))[:5]
        only_test = [] if a.y_test is None else sorted(
            set(np.unique(a.y_test.astype(np.int64)).tolist())
            - set(np.unique(a.y.astype(np.int64)).tolist()))[:5]
        raise DataCorruptError(f"{path}: labels must be the integers 0..K-1 with every class "
                               f"present and K >= 2; found {present.size} distinct label(s) "
                               f"up to {k - 1}" + (f", missing {missing}" if missing else "")
                               + (f"; y_test holds {only_test}, which y does not"
                                  if only_test else ""))
    return k


def _another_file(path: Path, digest: str, expected: str) -> DataCorruptError:
    """The error for a file whose SHA-256 is not the one the run was given."""
    return DataCorruptError(f"{path}: sha256 {digest}, expected {expected} (option sha256): "
                            "the file is not the one the experiment (or --data-sha256) names")


def _read(path: Path, options: dict[str, Any]) -> tuple[_Arrays, str, int]:
    """The checked arrays of the file, its SHA-256 and its number of classes."""
    raw = _read_bytes(path)
    digest = hashlib.sha256(raw).hexdigest()
    _digests[file_key(path)] = digest
    expected = options.get("sha256")
    if expected is not None and digest != expected:
        raise _another_file(path, digest, expected)
    if options["format"] == "npz":
        arrays = _parse_npz(path, raw)
    elif options["format"] == "csv":
        arrays = _parse_csv(path, _text(path, raw, options["compression"]),
                            options["label_column"], options["header"])
    else:
        arrays = _parse_svmlight(path, _text(path, raw, options["compression"]),
                                 options["kind"])
    return arrays, digest, _check_arrays(path, arrays, options["kind"])


def _facts_of(options: dict[str, Any]) -> FileFacts:
    path = Path(options["file"]).absolute()
    try:
        key = (file_key(path), options["format"], options["kind"], options["label_column"],
               options["header"])
    except OSError:
        key = None  # missing or unreadable: _read says which
    if key in _facts:
        facts = _facts[key]
        if options.get("sha256") not in (None, facts.sha256):
            raise _another_file(path, facts.sha256, options["sha256"])
        return facts
    arrays, digest, k = _read(path, options)
    facts = FileFacts(str(path), digest, int(arrays.X.shape[0]),
                      None if arrays.X_test is None else int(arrays.X_test.shape[0]),
                      int(arrays.X.shape[1]), k, _max_row_nnz(arrays.X), _largest(arrays, k),
                      arrays.y.astype(np.int64) if k else None)
    if key is not None:
        _facts[key] = facts
    return facts


def _max_row_nnz(X: np.ndarray | CSRMatrix) -> int | None:
    return X.max_row_nnz if isinstance(X, CSRMatrix) else None


def _largest(a: _Arrays, n_classes: int) -> float:
    """The largest magnitude among the inputs (and the targets of a regression)."""
    parts = [a.X, a.X_test] + ([a.y, a.y_test] if not n_classes else [])
    top = 0.0
    for part in parts:
        values = part.values if isinstance(part, CSRMatrix) else part
        if values is not None and values.size:
            top = max(top, float(np.max(np.abs(values))))
    return top


def _check_dtype_range(facts: FileFacts, dtype: Any) -> None:
    """Refuse values that become infinite in the run's dtype (float32 tops at 3.4e38)."""
    dt = np.dtype(dtype)
    if dt.kind == "f" and facts.largest > float(np.finfo(dt).max):
        raise DataCorruptError(f"{facts.path}: holds a value of magnitude {facts.largest:.3g}, "
                               f"beyond the largest {dt.name} ({float(np.finfo(dt).max):.3g}); "
                               "read it as float64 (--dtype float64, problem.dtype)")


def _hold_out(n_rows: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the hold-out test split and of the training split (sorted), the same for
    the same seed."""
    perm = np.random.default_rng(seed).permutation(n_rows)
    return np.sort(perm[:n_test]), np.sort(perm[n_test:])


def _check_training_classes(facts: FileFacts, n_test: int, n_train: int, seed: int) -> None:
    """Refuse a training split (after the hold-out and ``n_train``) that lacks a class."""
    if facts.labels is None:
        return
    y = facts.labels if facts.n_test is not None else facts.labels[
        _hold_out(facts.n_rows, n_test, seed)[1]]
    missing = sorted(set(range(facts.n_classes)) - set(np.unique(y[:n_train]).tolist()))
    if missing:
        where = ("X" if facts.n_test is not None else
                 f"the training rows left after the hold-out (option seed = {seed})")
        raise DataCorruptError(
            f"{facts.path}: class(es) {', '.join(map(str, missing[:5]))} do not occur in "
            f"{where}" + (f" within n_train = {n_train}" if n_train < y.shape[0] else "")
            + "; every class must be trained on (more rows, another seed, or X_test/y_test "
            "with X holding every class)")


def _split_sizes(facts: FileFacts, test_fraction: float) -> tuple[int, int]:
    if facts.n_test is not None:
        return facts.n_rows, facts.n_test
    if facts.n_rows < 2:
        raise DataCorruptError(f"{facts.path}: has {facts.n_rows} row; a hold-out test split "
                               "needs at least 2 (or give X_test and y_test)")
    n_test = min(facts.n_rows - 1, math.ceil(test_fraction * facts.n_rows))
    return facts.n_rows - n_test, n_test


def check_file_set(data_dir: Any = None, *, dtype: Any = "float64", seed: int = 0,
                   **options: Any) -> tuple[FileFacts, dict[str, Any], tuple[int, int]]:
    """Check the options of the ``file`` set and the file itself (read once per process):
    its facts, the options as :func:`load_file_set` takes them, and the sizes of the
    training and test splits it will have."""
    if data_dir is not None:
        raise OptionError("data_dir", data_dir, "no data_dir: the option file names the file")
    checked = _check_options(options)
    facts = _facts_of(checked)
    n_train, n_test = _split_sizes(facts, checked["test_fraction"])
    sizes = (check_count("n_train", checked["n_train"], n_train),
             check_count("n_test", checked["n_test"], n_test))
    _check_dtype_range(facts, dtype)
    _check_training_classes(facts, n_test, sizes[0], int(seed))
    return facts, dict(options), sizes


def file_identity(path: str | Path) -> tuple[str, str]:
    """The absolute path and SHA-256 of a data file (hashed once per process while it is
    unchanged), for the run record."""
    path = Path(path).absolute()
    key = file_key(path)
    if key not in _digests:
        _digests[key] = hashlib.sha256(_read_bytes(path)).hexdigest()
    return str(path), _digests[key]


def _rows(X: np.ndarray | CSRMatrix, rows: np.ndarray) -> np.ndarray | CSRMatrix:
    return X.take_rows(rows) if isinstance(X, CSRMatrix) else X[rows]


def load_file_set(*, dtype: np.dtype, seed: int = 0, **options: Any) -> Dataset:
    """The :class:`Dataset` of the ``file`` set (options as :func:`check_file_set` returns
    them; see the module docstring for the hold-out)."""
    checked = _check_options({k: v for k, v in options.items() if v is not None})
    path = Path(checked["file"]).absolute()
    arrays, digest, k = _read(path, checked)
    X, y = arrays.X, arrays.y
    held_out = arrays.X_test is None
    if held_out:
        facts = FileFacts(str(path), digest, int(X.shape[0]), None, int(X.shape[1]), k)
        _, n_test = _split_sizes(facts, checked["test_fraction"])
        test, train = _hold_out(X.shape[0], n_test, seed)
        X, y, X_test, y_test = _rows(X, train), y[train], _rows(X, test), y[test]
    else:
        X_test, y_test = arrays.X_test, arrays.y_test
    ntr = check_count("n_train", checked["n_train"], X.shape[0])
    nte = check_count("n_test", checked["n_test"], X_test.shape[0])
    label_type = np.int64 if k else dtype

    def inputs(a: np.ndarray | CSRMatrix, n: int) -> np.ndarray | CSRMatrix:
        if isinstance(a, CSRMatrix):
            return (a if n == a.shape[0] else a.row_range(0, n)).astype(dtype)
        return np.ascontiguousarray(a[:n], dtype=dtype)

    return Dataset(
        name="file", X_train=inputs(X, ntr), y_train=y[:ntr].astype(label_type),
        X_test=inputs(X_test, nte), y_test=y_test[:nte].astype(label_type), n_classes=k,
        input_shape=(int(X.shape[1]),),
        meta={"file": str(path), "sha256": digest, "format": checked["format"],
              "class_labels": arrays.labels, "held_out": held_out,
              "test_fraction": checked["test_fraction"] if held_out else None,
              "hold_out_seed": int(seed) if held_out else None},
    )
