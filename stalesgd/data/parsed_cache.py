"""Parsed upstream data sets kept on disk, so that a process does not decompress them again.

Decompressing, verifying and parsing MNIST's files takes about 0.3 s, a fifth of a short
run's start-up, and every ``stalesgd`` process paid it.  After a verified parse the arrays
are written here, under a key made of the SHA-256 of every source file's bytes, the data
set's name and the source of the code that reads and parses them (:data:`PARSER_MODULES`);
a later process that reads the same bytes with the same code (hashing MNIST's 11 MB of
``.gz`` files takes about 10 ms) loads the arrays instead.  A changed, replaced or damaged
source file has other bytes, hence another key: it is parsed and verified again.  An entry
holds the SHA-256 of its own arrays (names, dtypes, shapes and bytes), checked on every
load (about 40 ms for MNIST), so a damaged or edited entry is parsed anew, never used.
Only verified parses are stored or used (``verify=False`` parses every time).

Entries live in ``<user cache>/parsed/<name>-<key>/`` (see
:func:`~stalesgd.data.paths.user_cache_root`); an entry not used for :data:`STALE_AFTER`
is removed when another entry of the set is written.  The cache is an optimisation only:
an entry that cannot be read or does not match its digest is ignored (and removed), and one
that cannot be written (read-only or full disk) is skipped.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .paths import user_cache_root

__all__ = ["ARRAYS", "FORMAT", "cache_folder", "content_key", "load", "store"]

#: version of the entries' layout; a change makes every older entry a miss
FORMAT = 2
#: the arrays of an entry, in the order of :class:`~stalesgd.data.real.RawSplit`
ARRAYS = ("X_train", "y_train", "X_test", "y_test", "mean", "std")
#: the modules whose code decides what a parse gives: their source is part of the key
PARSER_MODULES = ("stalesgd.data.real", "stalesgd.data.idx", "stalesgd.data.cifar",
                  "stalesgd.data.files", "stalesgd.data.registry",
                  "stalesgd.data.transforms", "stalesgd.data.parsed_cache")
#: the file in an entry holding the SHA-256 of its arrays
DIGEST = "digest.sha256"
#: an entry of a set unused for this long is removed when another is written (seconds)
STALE_AFTER = 7 * 24 * 3600.0
#: a half-written entry (its writer was killed) older than this is removed (seconds)
ABANDONED_AFTER = 3600.0


def cache_folder() -> Path:
    """Where the entries are (created on the first store)."""
    return user_cache_root() / "parsed"


@functools.lru_cache(maxsize=4)
def _parser_source(modules: tuple[str, ...]) -> bytes:
    """A digest of NumPy's version and the source of ``modules`` (read once a process)."""
    h = hashlib.sha256(np.__version__.encode())
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            h.update(Path(spec.origin).read_bytes())
    return h.digest()


def content_key(name: str, files: Mapping[str, Path]) -> str:
    """The key of data set ``name`` read from ``files`` (upstream name -> path): a SHA-256
    of the format, the parsing code, the name and each file's name and bytes."""
    h = hashlib.sha256(f"stalesgd-parsed {FORMAT} {name}\n".encode())
    h.update(_parser_source(PARSER_MODULES))
    for upstream, path in sorted(files.items()):
        h.update(f"{upstream} ".encode())
        h.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return h.hexdigest()[:32]


def _digest(arrays: tuple[np.ndarray, ...]) -> str:
    h = hashlib.sha256()
    for a, arr in zip(ARRAYS, arrays, strict=True):
        h.update(f"{a} {arr.dtype.str} {arr.shape}\n".encode())
        h.update(np.ascontiguousarray(arr).data)
    return h.hexdigest()


def _entry(name: str, key: str) -> Path:
    return cache_folder() / f"{name}-{key}"


def load(name: str, key: str) -> tuple[np.ndarray, ...] | None:
    """The arrays stored for ``(name, key)`` (read-only, in :data:`ARRAYS` order), or None
    when there is no entry that reads back as it was written."""
    entry = _entry(name, key)
    if not entry.is_dir():
        return None
    try:
        arrays = tuple(np.load(entry / f"{a}.npy", allow_pickle=False) for a in ARRAYS)
        intact = (entry / DIGEST).read_text().strip() == _digest(arrays)
    except (OSError, ValueError, EOFError):
        intact = False
    if not intact:
        shutil.rmtree(entry, ignore_errors=True)  # damaged or edited: parse again
        return None
    try:
        os.utime(entry)  # (used: not stale)
    except OSError:
        pass
    for a in arrays:
        a.flags.writeable = False
    return arrays


def store(name: str, key: str, arrays: tuple[np.ndarray, ...]) -> bool:
    """Write ``arrays`` (in :data:`ARRAYS` order) as the entry ``(name, key)`` and remove the
    set's stale entries; False when the disk refused (nothing is left half-written)."""
    folder = cache_folder()
    entry = _entry(name, key)
    tmp: Path | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if entry.exists() and not entry.is_dir():
            entry.unlink()  # (not ours: a file where the entry goes)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder))
        for a, arr in zip(ARRAYS, arrays, strict=True):
            np.save(tmp / f"{a}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        (tmp / DIGEST).write_text(_digest(arrays) + "\n")
        try:
            os.replace(tmp, entry)  # atomic: a reader sees no entry or a whole one
            tmp = None
        except OSError:
            if not entry.is_dir():  # (else another process stored it first: ours goes)
                raise
    except OSError:
        return False
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    _prune(folder, name, entry)
    return True


def _prune(folder: Path, name: str, keep: Path) -> None:
    """Remove the set's entries unused for :data:`STALE_AFTER` and its half-written ones
    older than :data:`ABANDONED_AFTER`."""
    now = time.time()
    for other in [*folder.glob(f"{name}-*"), *folder.glob(f".{name}-*")]:
        if other == keep or not other.is_dir() or other.is_symlink():
            continue
        age = STALE_AFTER if not other.name.startswith(".") else ABANDONED_AFTER
        try:
            if now - other.stat().st_mtime < age:
                continue
        except OSError:
            continue
        shutil.rmtree(other, ignore_errors=True)
