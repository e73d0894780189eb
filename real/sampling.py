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
the permutation ``order`` (one entry per training row) for ``epochs``, and for
``replacement`` ``cursor`` −1 (or −2 once the next minibatch is drawn) and ``order`` the
next minibatch: a worker draws one minibatch ahead, in the same order from the same stream,
so that :func:`next_rows` can tell which rows come next and the loop can start loading
them (:func:`stalesgd.problems._kernels.prefetch_rows`) while it computes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

from stalesgd.experiment.spec import SAMPLING

__all__ = ["SAMPLING", "batch_rows", "draw_batch", "first_epoch", "new_sampler", "next_rows",
           "sampler_bytes"]

_HEADER = 2
#: ``cursor`` of a ``replacement`` sampler: the next minibatch not drawn yet / drawn
_AHEAD_EMPTY, _AHEAD_DRAWN = -1, -2


def sampler_bytes(batch: int, n_rows: int, sampling: str) -> int:
    """The bytes of one worker's sampler (the permutation dominates with ``epochs``)."""
    order = int(n_rows) if sampling == "epochs" else int(batch)
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
    s[1] = int(n_rows) if epochs else _AHEAD_EMPTY  # epochs: the first draw shuffles
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
def _draw_ahead(sampler: np.ndarray, base: int, batch: int, n_rows: int) -> None:
    """``replacement``: draw the next minibatch into ``sampler[base:base + batch]``."""
    for i in range(batch):
        sampler[base + i] = np.random.randint(0, n_rows)
    sampler[1] = _AHEAD_DRAWN


@njit(nogil=True, inline="always")
def first_epoch(sampler: np.ndarray, rows: np.ndarray, n_rows: int) -> None:
    """Shuffle the first epoch's permutation (``epochs``) or draw the first minibatch
    (``replacement``) now, as the first draw would, so that a worker does it before the
    run's clock starts."""
    base = _HEADER + rows.shape[0]
    if sampler[1] >= n_rows:
        _shuffle(sampler, base, n_rows)
        sampler[1] = 0
    elif sampler[1] == _AHEAD_EMPTY:
        _draw_ahead(sampler, base, rows.shape[0], n_rows)


@njit(nogil=True, inline="always")
def next_rows(sampler: np.ndarray, rows: np.ndarray, n_rows: int) -> np.ndarray:
    """The rows the next :func:`draw_batch` will give, where they are known without drawing
    (always with ``replacement``; with ``epochs`` unless the next minibatch reaches into the
    next epoch's permutation, not shuffled yet): else no rows."""
    base = _HEADER + rows.shape[0]
    cursor = sampler[1]
    if cursor == _AHEAD_DRAWN:
        return sampler[base:base + rows.shape[0]]
    if 0 <= cursor and cursor + rows.shape[0] <= n_rows:
        return sampler[base + cursor:base + cursor + rows.shape[0]]
    return sampler[:0]


@njit(nogil=True, inline="always")
def draw_batch(sampler: np.ndarray, rows: np.ndarray, n_rows: int) -> None:
    """Fill ``rows`` (:func:`batch_rows` of ``sampler``) with the next minibatch."""
    cursor = sampler[1]
    base = _HEADER + rows.shape[0]
    if cursor < 0:
        if cursor == _AHEAD_EMPTY:
            _draw_ahead(sampler, base, rows.shape[0], n_rows)
        for i in range(rows.shape[0]):
            rows[i] = sampler[base + i]
        _draw_ahead(sampler, base, rows.shape[0], n_rows)
        return
    for i in range(rows.shape[0]):
        if cursor >= n_rows:
            _shuffle(sampler, base, n_rows)
            cursor = 0
        rows[i] = sampler[base + cursor]
        cursor += 1
    sampler[1] = cursor
