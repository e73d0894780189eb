"""Seeded synthetic data sets: they need no files, so the built-in default runs on them.

Three kinds (option ``kind=``), all drawn with ``numpy.random.default_rng(seed)``
in float64 and then cast, so the same seed gives the same data bit for bit:

``regression``
    ``x ~ N(0, S²)`` with ``S`` diagonal, geometric from 1 to ``1/sqrt(cond)``
    (so the feature covariance has condition number ``cond``);
    ``y = x·w_true + bias + noise·ε``.  ``meta`` carries the generating
    ``w_true``/``b_true`` and the least-squares minimiser ``w_star``/``b_star``
    of the training set (the exact optimum of the empirical squared loss).
``classification``
    a Gaussian mixture: ``n_classes`` means at pairwise distance
    ``separation`` (orthonormal directions when ``n_classes <= n_features``,
    centred), within-class covariance ``noise²·I``, balanced classes in random
    order.  Larger ``separation`` means easier classes.
``images``
    small image classification without files (e.g. LeNet smoke runs): each
    class is a random blocky prototype (blocks of 4×4 pixels); an image is its
    class prototype, contrast ``separation``, plus ``noise`` per pixel,
    clipped to [0,1] and stored as bytes, then normalised exactly like real
    images (``normalize=``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stalesgd.validation import OptionError, choice, integer, known_keys, number

from .dataset import Dataset
from .transforms import channel_stats, check_normalize, pixel_coefficients

#: Allowed options and defaults of each kind.
KIND_OPTIONS: dict[str, dict[str, Any]] = {
    "regression": {"n_train": 10000, "n_test": 2000, "n_features": 20, "noise": 0.1,
                   "cond": 1.0, "bias": 0.0},
    "classification": {"n_train": 10000, "n_test": 2000, "n_features": 20, "n_classes": 2,
                       "separation": 2.0, "noise": 1.0},
    "images": {"n_train": 2000, "n_test": 500, "input_shape": (1, 28, 28), "n_classes": 10,
               "separation": 1.0, "noise": 0.25, "normalize": "standard"},
}
KINDS = tuple(KIND_OPTIONS)
#: most input values a synthetic set may hold, (n_train + n_test) × features: it is drawn in
#: float64 in memory (800 MB at this bound)
MAX_VALUES = 10**8
#: most classes of a synthetic classification
MAX_CLASSES = 1000


def _input_shape(value: Any) -> tuple[int, int, int]:
    allowed = "[C, H, W] of three integers >= 1, e.g. [1, 28, 28]"
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise OptionError("input_shape", value, allowed)
    return tuple(integer(v, f"input_shape[{i}]", 1) for i, v in enumerate(value))


def resolve_options(kind: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Defaults of ``kind`` overridden by ``options``, every value checked (an
    :class:`~stalesgd.validation.OptionError` naming the option and what is allowed)."""
    kind = choice(kind, "kind", KINDS)
    known_keys(options, "", KIND_OPTIONS[kind], f"options of synthetic kind {kind!r}")
    o = {**KIND_OPTIONS[kind], **options}
    o["n_train"] = integer(o["n_train"], "n_train", 1)
    o["n_test"] = integer(o["n_test"], "n_test", 1)
    if kind == "images":
        o["input_shape"] = _input_shape(o["input_shape"])
        o["normalize"] = check_normalize(o["normalize"])
        width = math.prod(o["input_shape"])
    else:
        o["n_features"] = width = integer(o["n_features"], "n_features", 1)
    if "n_classes" in o:
        o["n_classes"] = integer(o["n_classes"], "n_classes", 2, MAX_CLASSES)
    o["noise"] = number(o["noise"], "noise", 0.0)
    if "separation" in o:
        o["separation"] = number(o["separation"], "separation", 0.0)
    if kind == "regression":
        o["cond"] = number(o["cond"], "cond", 1.0)
        o["bias"] = number(o["bias"], "bias")
    if (o["n_train"] + o["n_test"]) * width > MAX_VALUES:
        raise OptionError("n_train", o["n_train"], f"an integer with (n_train + n_test) × "
                          f"{width} input values <= {MAX_VALUES}", "is too large")
    return o


def make_regression(*, n_train: int, n_test: int, n_features: int, noise: float, cond: float,
                    bias: float, seed: int, dtype: np.dtype) -> Dataset:
    """Linear regression with a known solution (see the module docstring); options as
    :func:`resolve_options` checked them."""
    d = n_features
    rng = np.random.default_rng(seed)
    w_true = rng.standard_normal(d)
    scale = np.geomspace(1.0, 1.0 / math.sqrt(cond), d) if d > 1 else np.ones(1)
    n = n_train + n_test
    X = rng.standard_normal((n, d)) * scale
    y = X @ w_true + bias + noise * rng.standard_normal(n)
    Xtr, ytr = X[:n_train], y[:n_train]
    A = np.hstack([Xtr, np.ones((n_train, 1))])
    sol, *_ = np.linalg.lstsq(A, ytr, rcond=None)
    resid = A @ sol - ytr
    return Dataset(
        name="synthetic",
        X_train=np.ascontiguousarray(Xtr, dtype=dtype),
        y_train=np.ascontiguousarray(ytr, dtype=dtype),
        X_test=np.ascontiguousarray(X[n_train:], dtype=dtype),
        y_test=np.ascontiguousarray(y[n_train:], dtype=dtype),
        n_classes=0,
        input_shape=(d,),
        meta={
            "kind": "regression", "seed": seed, "noise": noise, "cond": cond,
            "feature_scale": scale,
            "w_true": w_true, "b_true": bias,
            "w_star": sol[:d], "b_star": float(sol[d]),
            "train_mse_star": float(np.mean(resid**2)),
        },
    )


def mixture_means(rng: np.random.Generator, n_classes: int, d: int,
                  separation: float) -> np.ndarray:
    """``n_classes`` centred means in R^d at pairwise distance ``separation``.

    Exact when ``n_classes <= d`` (orthonormal directions); otherwise random
    unit directions, so distances are only approximately ``separation``.
    """
    G = rng.standard_normal((d, n_classes))
    if n_classes <= d:
        Q, _ = np.linalg.qr(G)
        dirs = Q[:, :n_classes].T
    else:
        dirs = (G / np.linalg.norm(G, axis=0)).T
    means = dirs * (separation / math.sqrt(2.0))
    return means - means.mean(axis=0)


def make_classification(*, n_train: int, n_test: int, n_features: int, n_classes: int,
                        separation: float, noise: float, seed: int,
                        dtype: np.dtype) -> Dataset:
    """Gaussian-mixture classification (see the module docstring); options as
    :func:`resolve_options` checked them."""
    d, K = n_features, n_classes
    rng = np.random.default_rng(seed)
    means = mixture_means(rng, K, d, separation)
    n = n_train + n_test
    y = rng.permutation(np.arange(n) % K)
    X = means[y] + noise * rng.standard_normal((n, d))
    meta: dict[str, Any] = {"kind": "classification", "seed": seed, "means": means,
                            "separation": separation, "noise": noise}
    if K == 2 and noise > 0:
        # Bayes-optimal accuracy of two equal-weight isotropic Gaussians.
        meta["bayes_accuracy"] = 0.5 * (1.0 + math.erf(separation / (2 * noise) / math.sqrt(2)))
    return Dataset(
        name="synthetic",
        X_train=np.ascontiguousarray(X[:n_train], dtype=dtype),
        y_train=y[:n_train].astype(np.int64),
        X_test=np.ascontiguousarray(X[n_train:], dtype=dtype),
        y_test=y[n_train:].astype(np.int64),
        n_classes=K,
        input_shape=(d,),
        meta=meta,
    )


def make_images(*, n_train: int, n_test: int, input_shape: tuple[int, ...], n_classes: int,
                separation: float, noise: float, normalize: str, seed: int,
                dtype: np.dtype) -> Dataset:
    """Synthetic image classification shaped like a real image set (see the module
    docstring); options as :func:`resolve_options` checked them."""
    K = n_classes
    C, H, W = input_shape
    rng = np.random.default_rng(seed)
    block = 4
    coarse = rng.random((K, C, -(-H // block), -(-W // block)))
    protos = np.repeat(np.repeat(coarse, block, axis=2), block, axis=3)[:, :, :H, :W]
    n = n_train + n_test
    y = rng.permutation(np.arange(n) % K)
    imgs = 0.5 + separation * (protos[y] - 0.5) + noise * rng.standard_normal((n, C, H, W))
    pixels = np.rint(np.clip(imgs, 0.0, 1.0) * 255.0).astype(np.uint8).reshape(n, -1)
    mean, std = channel_stats(pixels[:n_train], C)
    return Dataset(
        name="synthetic",
        X_train=_readonly(pixels[:n_train]),
        y_train=y[:n_train].astype(np.int64),
        X_test=_readonly(pixels[n_train:]),
        y_test=y[n_train:].astype(np.int64),
        n_classes=K,
        input_shape=(C, H, W),
        pixel_coef=pixel_coefficients(dtype, C, normalize, mean, std),
        meta={"kind": "images", "seed": seed, "separation": separation, "noise": noise,
              "normalize": normalize, "channel_mean": mean.tolist(),
              "channel_std": std.tolist()},
    )


def make_synthetic(kind: str, *, seed: int, dtype: np.dtype, **options: Any) -> Dataset:
    """Dispatch to the generator of ``kind`` after checking its options."""
    opts = resolve_options(kind, options)
    maker = {"regression": make_regression, "classification": make_classification,
             "images": make_images}[kind]
    return maker(seed=seed, dtype=dtype, **opts)


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only C-contiguous copy (pixels are data, never scratch; real sets are the same)."""
    a = np.array(a, order="C", copy=True)
    a.flags.writeable = False
    return a
