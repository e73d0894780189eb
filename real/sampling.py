"""Minibatch sampling inside the worker loops: rows with replacement, or reshuffled epochs.

Each worker draws its own minibatches from its own seeded stream (Numba's generator, which
the worker seeds at its start; :func:`stalesgd.seeds.worker_seeds`).  Two schemes
(:data:`SAMPLING`), chosen per run (``problem.sampling``, ``--sampling``):

``replacement`` (the default)
    every row of a minibatch is drawn uniformly from the training set, independently;
``epochs``
    the worker walks a permutation of the training rows, minibatch after minibatch, and
    shuffles it again (in place, Fisher–Yates with ``randint(0, i + 1)`` for ``i = n−1 … 1``)
    each time it has used every row once: each worker sees every row once per epoch, as
    scikit-learn's ``SGDClassifier`` or a shuffling data loader does.  A minibatch that
    straddles the end of an epoch takes its last rows from the next permutation.

The simulator's numeric replay draws the same rows from the same seeds
(:class:`stalesgd.sim.batches.BatchStream`).  A worker's sampler is one int64 array (so
that the worker loops keep one argument for it): ``[batch, cursor, rows…, order…]``, with
``cursor`` −1 for ``replacement`` and the permutation ``order`` (one entry per training row)
only for ``epochs``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

from stalesgd.experiment.spec import SAMPLING

__all__ = ["SAMPLING", "batch_rows", "draw_batch", "first_epoch", "new_sampler",
           "sampler_bytes"]

_HEADER = 2


def sampler_bytes(batch: int, n_rows: int, sampling: str) -> int:
    """The bytes of one worker's sampler (the permutation dominates with ``epochs``)."""
    order = int(n_rows) if sampling == "epochs" else 0
    return 8 * (_HEADER + int(batch) + order)


def new_sampler(batch: int, n_rows: int, sampling: str,
                zeros: Callable[..., np.ndarray] = np.zeros) -> np.ndarray:
    """A worker's sampler for minibatches of ``batch`` rows out of ``n_rows`` (``zeros``
    allocates it: e.g. on a cache line of its own)."""
    if sampling not in SAMPLING:
        raise ValueError(f"sampling {sampling!r} is not known; allowed: {', '.join(SAMPLING)}")
    epochs = sampling == "epochs"
    s = zeros(sampler_bytes(batch, n_rows, sampling) // 8, np.int64)
    s[0] = int(batch)
    s[1] = int(n_rows) if epochs else -1  # epochs: the first draw shuffles
    if epochs:
        s[_HEADER + int(batch):] = np.arange(int(n_rows), dtype=np.int64)
    return s


@njit(nogil=True, inline="always")
def batch_rows(sampler: np.ndarray) -> np.ndarray:
    """The row indices of the current minibatch (a view of the sampler, made once)."""
    return sampler[_HEADER:_HEADER + sampler[0]]


@njit(nogil=True, inline="always")
def _shuffle(sampler: np.ndarray, base: int, n_rows: int) -> None:
    """A new epoch: shuffle the permutation ``sampler[base:base + n_rows]`` in place."""
    for j in range(n_rows - 1, 0, -1):
        k = np.random.randint(0, j + 1)
        t = sampler[base + j]
        sampler[base + j] = sampler[base + k]
        sampler[base + k] = t


@njit(nogil=True, inline="always")
def first_epoch(sampler: np.ndarray, rows: np.ndarray, n_rows: int) -> None:
    """Shuffle the first epoch's permutation now (the first draw would), so that a worker
    does it before the run's clock starts; nothing for ``replacement``."""
    if sampler[1] >= n_rows:
        _shuffle(sampler, _HEADER + rows.shape[0], n_rows)
        sampler[1] = 0


@njit(nogil=True, inline="always")
def draw_batch(sampler: np.ndarray, rows: np.ndarray, n_rows: int) -> None:
    """Fill ``rows`` (:func:`batch_rows` of ``sampler``) with the next minibatch."""
    cursor = sampler[1]
    if cursor < 0:
        for i in range(rows.shape[0]):
            rows[i] = np.random.randint(0, n_rows)
        return
    base = _HEADER + rows.shape[0]
    for i in range(rows.shape[0]):
        if cursor >= n_rows:
            _shuffle(sampler, base, n_rows)
            cursor = 0
        rows[i] = sampler[base + cursor]
        cursor += 1
    sampler[1] = cursor
