"""Loading MNIST, Fashion-MNIST and CIFAR-10 from their upstream files into a Dataset.

The files are found along the search path (:mod:`.paths`), verified on first
read in the process (:mod:`.files`), parsed with ``np.frombuffer`` and
kept as uint8 pixels with the per-channel coefficients of their float inputs (a
packed :class:`Dataset`: MNIST in 55 MB instead of 219 MB of float32).  Verified parses
are also kept on disk between processes (:mod:`.parsed_cache`, keyed by the files' bytes).
In memory nothing is memoised but the checksum verdicts, so memory is not held for data
sets no run uses, with one exception: the split that :func:`check_files` parsed with
``keep=True`` (a run's check just before its load) is handed to the next load of the same
unchanged files, once, so that a run does not read its files twice.  The pixels
are read-only, so sharing them is safe.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

import stalesgd.data.parsed_cache as parsed_cache
from stalesgd.validation import flag

from .cifar import parse_cifar_batch
from .dataset import Dataset
from .errors import DataCorruptError
from .files import file_key, forget_verdicts, read_verified
from .idx import parse_idx
from .paths import Location, locate
from .registry import MANIFEST_NAME, DataSpec, get_spec
from .transforms import channel_stats, check_count, check_normalize, pixel_coefficients

REAL_OPTIONS = ("n_train", "n_test", "normalize", "verify")


@dataclass(frozen=True)
class RawSplit:
    """Parsed upstream arrays: uint8 pixels ``(n, C*H*W)`` and uint8 labels, plus stats."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


def _idx_parts(spec: DataSpec, loc: Location,
               verify: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The parsed and checked ``(pixels (n, C*H*W), labels)`` of each part of an IDX set."""
    arrays = {}
    for f in spec.files:
        path = loc.files[f.name]
        arr = parse_idx(read_verified(spec, f, path, verify), str(path))
        if arr.dtype != np.uint8:
            raise DataCorruptError(f"{path}: IDX type {arr.dtype}, expected unsigned bytes")
        arrays[f.role] = arr
    out = {}
    for part in ("train", "test"):
        X, y = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        path = loc.files[spec.file(f"{part}_images").name]
        if X.ndim != 3 or y.ndim != 1 or X.shape[0] != y.shape[0] \
                or X.shape[1:] != spec.input_shape[1:]:
            raise DataCorruptError(
                f"{path}: images {X.shape} do not match labels {y.shape} "
                f"(expected (n, {spec.input_shape[1]}, {spec.input_shape[2]}) and (n,))"
            )
        if y.size and int(y.max()) >= spec.n_classes:
            raise DataCorruptError(f"{path}: label {int(y.max())} outside 0..{spec.n_classes - 1}")
        out[part] = (X.reshape(X.shape[0], -1), y)
    return out


def _load_idx(spec: DataSpec, loc: Location, verify: bool) -> RawSplit:
    out = _idx_parts(spec, loc, verify)
    mean, std = channel_stats(out["train"][0], spec.input_shape[0])
    return RawSplit(*out["train"], *out["test"], mean, std)


def _load_cifar(spec: DataSpec, loc: Location, verify: bool) -> RawSplit:
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "test": []}
    for f in spec.files:
        path = loc.files[f.name]
        px, lab = parse_cifar_batch(read_verified(spec, f, path, verify), str(path),
                                    spec.n_classes)
        parts["test" if f.role == "test" else "train"].append((px, lab))
    Xtr = np.concatenate([p for p, _ in parts["train"]])
    ytr = np.concatenate([lab for _, lab in parts["train"]])
    Xte, yte = parts["test"][0]
    mean, std = channel_stats(Xtr, spec.input_shape[0])
    return RawSplit(Xtr, ytr, Xte, yte, mean, std)


#: the split a check kept for the load that follows: {(name, file keys, verify): split}
_kept: dict[tuple, RawSplit] = {}


def _kept_key(name: str, loc: Location, verify: bool) -> tuple:
    """Which files, in which state, and whether they were verified."""
    return (name, tuple(sorted((n, file_key(p)) for n, p in loc.files.items())), verify)


def _cache_key(spec: DataSpec, loc: Location) -> str | None:
    """The parsed cache's key of these files, None if one cannot be read (the parse then
    says why)."""
    files = dict(loc.files)
    manifest = loc.folder / MANIFEST_NAME  # (checksums recorded at download take part)
    if manifest.is_file():
        files[MANIFEST_NAME] = manifest
    try:
        return parsed_cache.content_key(spec.name, files)
    except OSError:
        return None


def _parse(spec: DataSpec, loc: Location, verify: bool) -> RawSplit:
    """The split, from the parsed cache when these verified bytes were parsed before."""
    key = _cache_key(spec, loc) if verify else None
    if key is not None:
        cached = parsed_cache.load(spec.name, key)
        if cached is not None:
            return RawSplit(*cached)
        # what goes to disk is verified now, not by an earlier verdict on a file of the
        # same size and time
        forget_verdicts(loc.files.values())
    loader = _load_idx if spec.kind == "idx" else _load_cifar
    raw = loader(spec, loc, verify)
    split = RawSplit(*(_readonly(a) for a in (raw.X_train, raw.y_train, raw.X_test,
                                              raw.y_test)), raw.mean, raw.std)
    if key is not None:
        parsed_cache.store(spec.name, key, tuple(getattr(split, a) for a in parsed_cache.ARRAYS))
    return split


def load_raw(name: str, data_dir: str | os.PathLike[str] | None = None,
             verify: bool = True) -> tuple[RawSplit, Location]:
    """Find, verify and parse a file-based data set (not memoised: see the module doc)."""
    spec = get_spec(name)
    loc = locate(spec, data_dir)
    raw = _kept.pop(_kept_key(name, loc, verify), None)
    return (raw if raw is not None else _parse(spec, loc, verify)), loc


def check_files(name: str, data_dir: str | os.PathLike[str] | None = None,
                verify: bool = True, keep: bool = False) -> Location:
    """Find the files of the file-based data set ``name`` and check that each one can be read,
    decompressed, verified (when ``verify``) and parsed, without keeping their contents
    unless ``keep``: then the next :func:`load_raw` of the same unchanged files takes the
    parsed split instead of reading them again (the previous kept split is dropped).

    Raises the error loading would raise (:class:`DataNotFoundError`,
    :class:`DataCorruptError`, :class:`DataReadError`), so that a run can be refused before
    it starts.  Checksum verdicts are remembered, so the load that follows does not hash the
    files again; files whose bytes an earlier process verified and parsed (the parsed
    cache) pass without being parsed again.
    """
    spec = get_spec(name)
    loc = locate(spec, data_dir)
    if keep:
        _kept.clear()
        _kept[_kept_key(name, loc, verify)] = _parse(spec, loc, verify)
    elif verify and (key := _cache_key(spec, loc)) is not None \
            and parsed_cache.load(spec.name, key) is not None:
        pass  # these bytes were verified and parsed before
    elif spec.kind == "idx":
        _idx_parts(spec, loc, verify)
    else:
        for f in spec.files:
            path = loc.files[f.name]
            parse_cifar_batch(read_verified(spec, f, path, verify), str(path), spec.n_classes)
    return loc


def load_real(name: str, *, dtype: np.dtype, data_dir: str | os.PathLike[str] | None = None,
              n_train: int | None = None, n_test: int | None = None,
              normalize: str = "standard", verify: bool = True) -> Dataset:
    """A :class:`Dataset` from the upstream files of ``name``.

    ``n_train``/``n_test`` keep the first rows of the upstream split (quick
    runs, tests); ``normalize`` is ``"standard"`` or ``"unit"``
    (see :mod:`.transforms`); ``verify=False`` skips the checksum (not the
    structural checks).
    """
    check_normalize(normalize)
    verify = flag(verify, "verify")
    spec = get_spec(name)
    raw, loc = load_raw(name, data_dir, verify)
    ntr = check_count("n_train", n_train, raw.X_train.shape[0])
    nte = check_count("n_test", n_test, raw.X_test.shape[0])
    C = spec.input_shape[0]
    coef = pixel_coefficients(dtype, C, normalize, raw.mean, raw.std)
    # (a subset is copied so that the rest of the parsed split can be freed)
    X_train = raw.X_train if ntr == raw.X_train.shape[0] else _readonly(raw.X_train[:ntr].copy())
    X_test = raw.X_test if nte == raw.X_test.shape[0] else _readonly(raw.X_test[:nte].copy())
    mean, std = raw.mean, raw.std
    n_train_available, n_test_available = int(raw.X_train.shape[0]), int(raw.X_test.shape[0])
    y_train, y_test = raw.y_train[:ntr].astype(np.int64), raw.y_test[:nte].astype(np.int64)
    del raw
    data = Dataset(
        name=name,
        X_train=X_train,
        y_train=y_train,
        X_test=X_test,
        y_test=y_test,
        n_classes=spec.n_classes,
        input_shape=spec.input_shape,
        pixel_coef=coef,
        meta={
            "source": str(loc.folder),
            "found_via": loc.root.label,
            "files": {k: str(v) for k, v in loc.files.items()},
            "verified": verify,
            "normalize": normalize,
            "channel_mean": mean.tolist(),
            "channel_std": std.tolist(),
            "n_train_available": n_train_available,
            "n_test_available": n_test_available,
        },
    )
    return data
