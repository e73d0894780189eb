"""Reader of the CIFAR-10 binary batches (``data_batch_1..5.bin``, ``test_batch.bin``).

Each record is one label byte followed by 3072 pixel bytes: the 32×32 red
plane, then green, then blue, each row-major, so a record's pixels are already
in the C×H×W order the models use.  Pixels are **unsigned** bytes 0..255; the
reference C++ code read them as ``signed char``, which turns every value ≥ 128
into a negative number — this reader uses ``uint8`` throughout.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import DataCorruptError
from .files import read_decompressed
from .registry import CIFAR_RECORD

CIFAR_SHAPE = (3, 32, 32)
CIFAR_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)


def parse_cifar_batch(data: bytes, source: str = "<bytes>",
                      n_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Split a CIFAR-10 binary buffer into pixels ``(n, 3072)`` uint8 and labels ``(n,)`` uint8.

    Raises :class:`DataCorruptError` naming ``source`` when the length is not a
    whole number of 3073-byte records or a label is out of range.
    """
    if len(data) == 0 or len(data) % CIFAR_RECORD:
        raise DataCorruptError(
            f"{source}: {len(data)} bytes is not a whole number of {CIFAR_RECORD}-byte "
            "CIFAR-10 records (1 label byte + 3072 pixel bytes)"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    labels = records[:, 0]
    if int(labels.max()) >= n_classes:
        bad = int(np.argmax(labels >= n_classes))
        raise DataCorruptError(
            f"{source}: record {bad} has label {int(labels[bad])}, allowed 0..{n_classes - 1}"
        )
    return records[:, 1:], labels


def read_cifar_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 binary batch file, raw or ``.gz`` (no checksum)."""
    p = Path(path)
    return parse_cifar_batch(read_decompressed(p, "cifar10"), str(p))


def write_cifar_batch(path: str | os.PathLike[str], pixels: np.ndarray,
                      labels: np.ndarray) -> Path:
    """Write records in the CIFAR-10 binary format (tests, tools).

    ``pixels`` is ``(n, 3, 32, 32)`` or ``(n, 3072)`` uint8 in R, G, B plane order.
    """
    px = np.asarray(pixels, dtype=np.uint8).reshape(len(labels), -1)
    if px.shape[1] != CIFAR_RECORD - 1:
        raise ValueError(f"pixels must hold 3072 values per record, got {px.shape[1]}")
    rec = np.empty((len(labels), CIFAR_RECORD), dtype=np.uint8)
    rec[:, 0] = np.asarray(labels, dtype=np.uint8)
    rec[:, 1:] = px
    p = Path(path)
    p.write_bytes(rec.tobytes())
    return p
