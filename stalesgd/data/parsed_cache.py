"""Parsed upstream data sets kept on disk, so that a process does not decompress them again.

Decompressing, verifying and parsing MNIST's files takes about 0.3 s, a fifth of a short
run's start-up, and every ``stalesgd`` process paid it.  After a verified parse the arrays
are written here, under a key made of the SHA-256 of every source file's bytes (and the
data set's name and this format's version); a later process that reads the same bytes
(hashing MNIST's 11 MB of ``.gz`` files takes about 10 ms) loads the arrays instead.  A
changed, replaced or damaged file has other bytes, hence another key: it is parsed and
verified again, and an entry is never trusted for content it was not made from.  Only
verified parses are stored or used (``verify=False`` parses every time).

Entries live in ``<user cache>/parsed/<name>-<key>/`` (see
:func:`~stalesgd.data.paths.user_cache_root`); writing one replaces the other entries of
the same data set.  The cache is an optimisation only: an entry that cannot be read is
ignored (and removed), and one that cannot be written (read-only or full disk) is skipped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .paths import user_cache_root

__all__ = ["FORMAT", "ARRAYS", "cache_folder", "content_key", "load", "store"]

#: version of the entries' layout; a change makes every older entry a miss
FORMAT = 1
#: a half-written entry (its writer was killed) older than this is removed (seconds)
ABANDONED_AFTER = 3600.0
#: the arrays of an entry, in the order of :class:`~stalesgd.data.real.RawSplit`
ARRAYS = ("X_train", "y_train", "X_test", "y_test", "mean", "std")


def cache_folder() -> Path:
    """Where the entries are (created on the first store)."""
    return user_cache_root() / "parsed"


def content_key(name: str, files: Mapping[str, Path]) -> str:
    """The key of data set ``name`` read from ``files`` (upstream name -> path): a SHA-256
    of the format, the name and each file's name and bytes."""
    h = hashlib.sha256(f"stalesgd-parsed {FORMAT} {name}\n".encode())
    for upstream, path in sorted(files.items()):
        h.update(f"{upstream} ".encode())
        h.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return h.hexdigest()[:32]


def _entry(name: str, key: str) -> Path:
    return cache_folder() / f"{name}-{key}"


def load(name: str, key: str) -> tuple[np.ndarray, ...] | None:
    """The arrays stored for ``(name, key)`` (read-only, in :data:`ARRAYS` order), or None
    when there is no readable entry."""
    entry = _entry(name, key)
    if not entry.is_dir():
        return None
    try:
        arrays = tuple(np.load(entry / f"{a}.npy", allow_pickle=False) for a in ARRAYS)
    except (OSError, ValueError, EOFError):
        shutil.rmtree(entry, ignore_errors=True)  # damaged: parse again and store anew
        return None
    for a in arrays:
        a.flags.writeable = False
    return arrays


def store(name: str, key: str, arrays: tuple[np.ndarray, ...]) -> bool:
    """Write ``arrays`` (in :data:`ARRAYS` order) as the entry ``(name, key)`` and remove the
    data set's other entries; False when the disk refused (nothing is left half-written)."""
    folder = cache_folder()
    entry = _entry(name, key)
    tmp: Path | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder))
        for a, arr in zip(ARRAYS, arrays, strict=True):
            np.save(tmp / f"{a}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        try:
            os.replace(tmp, entry)  # atomic: a reader sees no entry or a whole one
        except OSError:
            if not entry.is_dir():  # (another process may have stored it first)
                raise
        tmp = None
    except OSError:
        return False
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    now = time.time()
    for other in [*folder.glob(f"{name}-*"), *folder.glob(f".{name}-*")]:
        if other == entry or not other.is_dir():
            continue
        if other.name.startswith("."):  # a store that did not finish (killed mid-write)
            try:
                if now - other.stat().st_mtime < ABANDONED_AFTER:
                    continue
            except OSError:
                continue
        shutil.rmtree(other, ignore_errors=True)
    return True
