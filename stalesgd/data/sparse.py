"""A seeded synthetic sparse data set shaped like bag-of-words text (name ``sparse``).

Like a tokenised corpus: ``n_features`` terms whose frequencies follow a Zipf law
(term of rank ``r`` drawn with probability ∝ ``1/r^zipf``; the ranks are scattered over the
feature numbers by a random permutation, as a vocabulary's ids are), ``nnz`` term draws per
document (repeats merge, so a row holds a few fewer entries, and a repeated term a larger
count), values ``(1 + log count)·idf`` normalised to unit length per row (tf-idf, as RCV1's
rows).  Labels come from a planted linear separator ``W_true`` (one N(0, 1) column per
class): the class of the largest score ``x·W_true[:, k]``; each label is then replaced by a
uniformly drawn class with probability ``noise``.  Everything is drawn with
``numpy.random.default_rng(seed)``, so the same seed gives the same data bit for bit.
Stored as :class:`~stalesgd.data.csr.CSRMatrix` (memory proportional to the non-zeros).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stalesgd.validation import OptionError, integer, known_keys, number

from .csr import CSRMatrix
from .dataset import Dataset

#: Allowed options and defaults of the sparse set.
SPARSE_OPTIONS: dict[str, Any] = {"n_train": 20000, "n_test": 2000, "n_features": 20000,
                                  "nnz": 50, "n_classes": 2, "noise": 0.05, "zipf": 1.0}
#: most term draws (rows × nnz) a sparse set may hold
MAX_ENTRIES = 10**8
#: most classes of a sparse set
MAX_CLASSES = 1000


def resolve_sparse_options(options: dict[str, Any]) -> dict[str, Any]:
    """Defaults overridden by ``options``, every value checked (an
    :class:`~stalesgd.validation.OptionError` naming the option and what is allowed)."""
    known_keys(options, "", SPARSE_OPTIONS, "options of data set 'sparse'")
    o = {**SPARSE_OPTIONS, **options}
    o["n_train"] = integer(o["n_train"], "n_train", 1)
    o["n_test"] = integer(o["n_test"], "n_test", 1)
    o["n_features"] = integer(o["n_features"], "n_features", 2)
    o["nnz"] = integer(o["nnz"], "nnz", 1, o["n_features"])
    o["n_classes"] = integer(o["n_classes"], "n_classes", 2, MAX_CLASSES)
    o["noise"] = number(o["noise"], "noise", 0.0, 1.0)
    o["zipf"] = number(o["zipf"], "zipf", 0.0, 10.0)
    if (o["n_train"] + o["n_test"]) * o["nnz"] > MAX_ENTRIES:
        raise OptionError("n_train", o["n_train"], f"an integer with (n_train + n_test) × "
                          f"nnz <= {MAX_ENTRIES}", "is too large")
    return o


#: the most (entry, class) products :func:`make_sparse` holds at once when it scores the rows
SCORE_CHUNK = 1 << 22
#: about the most term draws :func:`make_sparse` turns into rows at once (its temporaries,
#: some tens of bytes a draw, are what it holds besides the finished set)
DRAW_CHUNK = 1 << 21


def make_sparse(*, n_train: int, n_test: int, n_features: int, nnz: int, n_classes: int,
                noise: float, zipf: float, seed: int, dtype: np.dtype) -> Dataset:
    """The text-like sparse set of the module docstring; options as
    :func:`resolve_sparse_options` checked them.

    The rows are made in chunks written into the finished arrays (sized for ``nnz``
    entries a row, the bound :class:`~stalesgd.data.shape.DataShape` counts), so that
    generating takes about the memory of the set plus a chunk's temporaries; the data are
    those of one pass over all draws, bit for bit."""
    d, K, n = n_features, n_classes, n_train + n_test
    rng = np.random.default_rng(seed)
    freq = 1.0 / np.arange(1, d + 1, dtype=np.float64) ** zipf
    freq /= freq.sum()
    term_of_rank = rng.permutation(d)
    idf = np.log(1.0 / (freq * d) + 1.0)[np.argsort(term_of_rank)]  # by feature number
    # The n·nnz uniform draws come next in the stream, then W_true and the label noise:
    # W_true is drawn from a copy of the generator advanced past the draws (one 64-bit
    # output per double), so that each chunk of rows can be scored as it is made.
    after = np.random.Generator(np.random.PCG64())
    after.bit_generator.state = rng.bit_generator.state
    after.bit_generator.advance(n * nnz)
    w_true = after.standard_normal((d, K))
    cum = np.cumsum(freq)
    y = np.zeros(n, dtype=np.int64)
    rows_per_chunk = max(1, DRAW_CHUNK // nnz)
    splits = []
    for first, stop in ((0, n_train), (n_train, n)):
        indptr = np.zeros(stop - first + 1, dtype=np.int64)
        indices = np.empty((stop - first) * nnz, dtype=np.int32)
        values = np.empty((stop - first) * nnz, dtype=dtype)
        for a in range(first, stop, rows_per_chunk):
            b = min(a + rows_per_chunk, stop)
            rows, cols, vals = _rows(rng, cum, term_of_rank, idf, b - a, nnz, d)
            y[a:b] = _labels(rows, cols, vals, w_true, b - a)
            at = int(indptr[a - first])
            np.cumsum(np.bincount(rows, minlength=b - a), out=indptr[a - first + 1:b - first + 1])
            indptr[a - first + 1:b - first + 1] += at
            indices[at:at + rows.shape[0]] = cols
            values[at:at + rows.shape[0]] = vals
        end = int(indptr[-1])  # (repeated terms merged: the arrays' tails stay unused)
        splits.append(CSRMatrix(indptr, indices[:end], values[:end], d))
    flip = after.random(n) < noise
    y[flip] = after.integers(0, K, int(flip.sum()))
    return Dataset(
        name="sparse",
        X_train=splits[0],
        y_train=y[:n_train].copy(),
        X_test=splits[1],
        y_test=y[n_train:].copy(),
        n_classes=K,
        input_shape=(d,),
        meta={"kind": "sparse", "seed": seed, "noise": noise, "zipf": zipf, "nnz": nnz,
              "w_true": w_true, "flipped_share": float(flip.mean())},
    )


def _rows(rng: np.random.Generator, cum: np.ndarray, term_of_rank: np.ndarray,
          idf: np.ndarray, n_rows: int, nnz: int, d: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The next ``n_rows`` documents as entries (row within the chunk, column, tf-idf value
    normalised per row), sorted by row then column, repeated terms merged."""
    ranks = np.searchsorted(cum, rng.random(n_rows * nnz), side="right")
    np.minimum(ranks, d - 1, out=ranks)  # (a draw of exactly 1.0 after rounding)
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), nnz)
    keys, counts = np.unique(rows * d + term_of_rank[ranks], return_counts=True)
    rows, cols = keys // d, keys % d
    vals = (1.0 + np.log(counts)) * idf[cols]
    norms = np.sqrt(np.bincount(rows, weights=vals * vals, minlength=n_rows))
    vals /= norms[rows]
    return rows, cols, vals


def _labels(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, w_true: np.ndarray,
            n_rows: int) -> np.ndarray:
    """The planted separator's class of each row: the largest score ``x·W_true[:, k]``."""
    K = w_true.shape[1]
    scores = np.zeros((n_rows, K))
    # entries in chunks of at most SCORE_CHUNK entries × classes (the same sums in the same
    # order as one np.add.at over all entries, without an entries × classes temporary)
    step = max(1, SCORE_CHUNK // K)
    for a in range(0, rows.shape[0], step):
        np.add.at(scores, rows[a:a + step], vals[a:a + step, None] * w_true[cols[a:a + step]])
    return scores.argmax(axis=1)

