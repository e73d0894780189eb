"""Reading data files (raw or ``.gz``) and verifying their checksums, once per process.

Policy: a file is verified the first time it is read in a process (the MD5 of
its decompressed bytes, computed on the buffer that is parsed anyway, so it
costs one hash pass, about 0.1 s for MNIST's training images).  The verdict is
memoised by (path, size, mtime), so later loads of an unchanged file skip the
hash; ``stalesgd data verify`` always recomputes.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataCorruptError, DataReadError
from .paths import fix_hint
from .registry import CIFAR_RECORD, MANIFEST_NAME, DataSpec, FileSpec


@dataclass(frozen=True)
class FileCheck:
    """The verdict on one file: ``OK``, ``MISMATCH``, ``CORRUPT``, ``UNREADABLE`` or
    ``MISSING``."""

    name: str
    path: Path | None
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when the file verified."""
        return self.status == "OK"


_verdicts: dict[tuple[str, int, int], FileCheck] = {}


def file_key(path: Path) -> tuple[str, int, int]:
    """Identity of a file's current content for memoisation: (path, size, mtime_ns)."""
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def clear_verdicts() -> None:
    """Forget every memoised checksum verdict (tests; files edited in place)."""
    _verdicts.clear()


def forget_verdicts(paths) -> None:
    """Forget the memoised verdicts on ``paths``, so that their next read hashes them."""
    for path in paths:
        try:
            _verdicts.pop(file_key(Path(path)), None)
        except OSError:
            pass


def read_decompressed(path: Path, dataset: str) -> bytes:
    """The content of ``path``, gunzipped when it ends in ``.gz``.

    A damaged gzip stream raises :class:`DataCorruptError` and a file that cannot be read
    :class:`DataReadError`, each naming the file.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataReadError(
            f"{path}: cannot read it ({exc.strerror or exc}).\n{fix_hint(dataset)}"
        ) from None
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataCorruptError(
            f"{path}: cannot decompress ({exc}); the file is damaged.\n{fix_hint(dataset)}"
        ) from exc


def md5_hex(data: bytes) -> str:
    """Hex MD5 of ``data``."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def read_manifest(folder: Path) -> dict[str, str]:
    """The ``name -> md5`` sums recorded by ``download`` in ``folder`` (empty if none)."""
    p = folder / MANIFEST_NAME
    if not p.is_file():
        return {}
    out: dict[str, str] = {}
    for line in p.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[1]] = parts[0].lower()
    return out


def write_manifest(folder: Path, sums: dict[str, str]) -> Path:
    """Record ``name -> md5`` sums in ``folder`` in ``md5sum`` format."""
    p = folder / MANIFEST_NAME
    p.write_text("".join(f"{md5}  {name}\n" for name, md5 in sorted(sums.items())))
    return p


def _structure_problem(spec: DataSpec, fspec: FileSpec, data: bytes) -> str | None:
    """Why ``data`` cannot be ``fspec`` by size/structure, or None if it looks right."""
    if len(data) != fspec.size:
        return f"size {len(data)} bytes after decompression, expected {fspec.size}"
    if spec.kind == "cifar":
        labels = np.frombuffer(data, dtype=np.uint8)[::CIFAR_RECORD]
        if labels.size and int(labels.max()) >= spec.n_classes:
            return f"label byte {int(labels.max())} out of range 0..{spec.n_classes - 1}"
    return None


def check_bytes(spec: DataSpec, fspec: FileSpec, path: Path, data: bytes, *,
                use_manifest: bool = True) -> FileCheck:
    """Verify the decompressed ``data`` of ``path`` against ``fspec``.

    Uses the registry MD5 when published, else the download manifest in the
    file's folder, else structure only (size and label range) and says so.
    """
    problem = _structure_problem(spec, fspec, data)
    expected = fspec.md5
    if expected is None and use_manifest:
        expected = read_manifest(path.parent).get(fspec.name)
    if expected is not None:
        got = md5_hex(data)
        if got != expected:
            detail = f"md5 {got}, expected {expected}"
            if problem:
                detail += f"; {problem}"
            return FileCheck(fspec.name, path, "MISMATCH", detail)
        source = "published md5" if fspec.md5 else f"md5 recorded in {MANIFEST_NAME}"
        return FileCheck(fspec.name, path, "OK", source)
    if problem:
        return FileCheck(fspec.name, path, "CORRUPT", problem)
    return FileCheck(
        fspec.name, path, "OK",
        "structure only (size, labels 0..9): no per-file md5 is published",
    )


def check_file(spec: DataSpec, fspec: FileSpec, path: Path, *, fresh: bool = False) -> FileCheck:
    """Verify one file on disk, memoised per process unless ``fresh``."""
    key = file_key(path)
    if not fresh and key in _verdicts:
        return _verdicts[key]
    try:
        data = read_decompressed(path, spec.name)
    except DataCorruptError as exc:
        verdict = FileCheck(fspec.name, path, "CORRUPT", str(exc).splitlines()[0])
    except DataReadError as exc:
        return FileCheck(fspec.name, path, "UNREADABLE", str(exc).splitlines()[0])
    else:
        verdict = check_bytes(spec, fspec, path, data)
    _verdicts[key] = verdict
    return verdict


def read_verified(spec: DataSpec, fspec: FileSpec, path: Path, verify: bool = True) -> bytes:
    """Decompressed bytes of ``path``, verified once per process when ``verify``.

    Raises :class:`DataCorruptError` naming the file, the reason and the fix.
    """
    data = read_decompressed(path, spec.name)
    if not verify:
        return data
    key = file_key(path)
    verdict = _verdicts.get(key)
    if verdict is None:
        verdict = check_bytes(spec, fspec, path, data)
        _verdicts[key] = verdict
    if not verdict.ok:
        raise DataCorruptError(
            f"{path}: {verdict.status} ({verdict.detail}); the file is damaged or not the "
            f"upstream {fspec.name}. Delete or replace it.\n{fix_hint(spec.name)}"
        )
    return data
