"""Turning raw pixels into model inputs: [0,1] scaling, normalisation, subsets.

Two normalisations (option ``normalize=``):

``"standard"`` (default)
    pixels scaled to [0,1], then per-channel standardisation with the mean and
    standard deviation of the **full** training set (so a subset sees the same
    transform as the whole set, and test data uses training statistics).
``"unit"``
    the plain [0,1] scaling, ``x / 255`` (what the reference C++ code fed its
    networks).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stalesgd.validation import choice, integer

NORMALIZATIONS = ("standard", "unit")


def check_normalize(normalize: Any) -> str:
    """Validate the ``normalize`` option."""
    return choice(normalize, "normalize", NORMALIZATIONS)


def channel_stats(pixels: np.ndarray, n_channels: int,
                  chunk: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std, in [0,1] units, of uint8 ``pixels`` ``(n, C*H*W)``.

    Sums and sums of squares are accumulated in float64 over chunks of about
    ``chunk`` values; they are integers below 2**53 for any realistic set, so
    exact, and no full-size float copy is made.
    """
    n = pixels.shape[0]
    per = pixels.reshape(n, n_channels, -1)
    rows = max(1, chunk // max(1, per.shape[2]))
    mean = np.empty(n_channels)
    std = np.empty(n_channels)
    for c in range(n_channels):
        s = ss = 0.0
        for start in range(0, n, rows):
            f = per[start:start + rows, c, :].astype(np.float64).ravel()
            s += float(f.sum())
            ss += float(f @ f)
        total = float(n * per.shape[2])
        m = s / total
        var = max(ss / total - m * m, 0.0)
        mean[c] = m / 255.0
        std[c] = np.sqrt(var) / 255.0 if var > 0 else 1.0
    return mean, std


def pixels_to_inputs(pixels: np.ndarray, dtype: np.dtype, n_channels: int, normalize: str,
                     mean: np.ndarray | None = None,
                     std: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``(n, C*H*W)`` pixels -> C-contiguous float inputs of ``dtype``.

    ``normalize="unit"`` gives ``x/255``; ``"standard"`` gives
    ``(x/255 - mean[c]) / std[c]`` with the given per-channel statistics.
    """
    coef = pixel_coefficients(dtype, n_channels, normalize, mean, std)
    out = np.multiply(pixels, coef[0, 0], dtype=dtype)
    if normalize == "standard":
        view = out.reshape(out.shape[0], n_channels, -1)
        view -= coef[None, :, 1, None]
        view *= coef[None, :, 2, None]
    return np.ascontiguousarray(out)


def pixel_coefficients(dtype: np.dtype, n_channels: int, normalize: str,
                       mean: np.ndarray | None = None,
                       std: np.ndarray | None = None) -> np.ndarray:
    """``(n_channels, 3)`` rows ``(scale, shift, factor)`` of ``dtype``: the model input of
    pixel value ``p`` in channel ``c`` is ``(p·scale − shift)·factor``, each operation
    rounded to ``dtype`` -- exactly what :func:`pixels_to_inputs` computes (it uses these
    numbers), so uint8 pixels with these coefficients are the float inputs bit for bit.
    ``"unit"`` has shift 0 and factor 1 (which change nothing).
    """
    check_normalize(normalize)
    dtype = np.dtype(dtype)
    coef = np.zeros((n_channels, 3), dtype=dtype)
    coef[:, 0] = dtype.type(1.0 / 255.0)
    coef[:, 2] = 1
    if normalize == "standard":
        if mean is None or std is None:
            raise ValueError("normalize='standard' needs the training-set mean and std")
        coef[:, 1] = np.asarray(mean, dtype=dtype)
        coef[:, 2] = (1.0 / np.asarray(std, dtype=np.float64)).astype(dtype)
    return coef


def check_count(key: str, value: Any, available: int) -> int:
    """Validate a subset size ``n_train``/``n_test`` (None means all ``available``)."""
    if value is None:
        return available
    return integer(value, key, 1, available)
