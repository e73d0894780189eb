"""Reader of the IDX format used by MNIST and Fashion-MNIST (raw or ``.gz``).

IDX: two zero bytes, a type code, the number of dimensions ``k``, then ``k``
big-endian uint32 sizes, then the values in row-major order, big-endian.
Parsing is a single ``np.frombuffer`` over the buffer (no copy for bytes).
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from .errors import DataCorruptError
from .files import read_decompressed

#: IDX type code -> numpy dtype (big-endian where it matters).
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse an IDX buffer into an array of its declared shape and type.

    Raises :class:`DataCorruptError` naming ``source`` when the header or the
    length is wrong.  The result is read-only when it views ``data``.
    """
    if len(data) < 4:
        raise DataCorruptError(f"{source}: {len(data)} bytes, too short for an IDX header")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in IDX_TYPES:
        raise DataCorruptError(
            f"{source}: not an IDX file (magic {data[:4].hex()}; expected 0000 then a type "
            f"code in {sorted(hex(t) for t in IDX_TYPES)})"
        )
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataCorruptError(f"{source}: IDX header declares {ndim} dimensions, truncated")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_TYPES[type_code]
    count = int(np.prod(shape, dtype=np.int64))
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        raise DataCorruptError(
            f"{source}: {len(data)} bytes but the IDX header {shape} of {dtype} needs {expected}"
        )
    return np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, raw or ``.gz`` (no checksum; see :mod:`stalesgd.data.real`)."""
    p = Path(path)
    return parse_idx(read_decompressed(p, p.parent.name), str(p))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed if ``path`` ends in ``.gz``).

    Used by tests and tools to make files of the format; the type code follows
    the array's dtype.
    """
    arr = np.asarray(array)
    codes = {(dt.kind, dt.itemsize): code for code, dt in IDX_TYPES.items()}
    code = codes.get((arr.dtype.kind, arr.dtype.itemsize))
    if code is None:
        raise ValueError(
            f"dtype {arr.dtype} has no IDX type code; allowed: "
            f"{[str(np.dtype(d).newbyteorder('=')) for d in IDX_TYPES.values()]}"
        )
    dt = IDX_TYPES[code]
    header = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = header + np.ascontiguousarray(arr, dtype=dt).tobytes()
    p = Path(path)
    if p.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=6)
    p.write_bytes(payload)
    return p
