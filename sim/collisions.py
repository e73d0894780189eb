"""The collision rate of a simulated run on a sparse problem.

The real engine counts, per coordinate an update writes, whether an update claimed or
applied after this update's read wrote it first (:mod:`stalesgd.real.sparse_workers`):
the *collision rate* is the share of written coordinates that collided.  The simulator
counts the same way, from one of two sources:

* **numeric replay** counts as it applies (:class:`ReplayCollisions`, the compiled
  :func:`tally_read` / :func:`tally_apply`): an update writes the coordinates of the sparse
  gradient it applies, computed at the version it read, exactly as in the real engine (a
  coordinate whose gradient value is 0 is not written: for the hinge loss, every row beyond
  the margin).
* **timing-only** runs have no θ, so :class:`CollisionCounter` counts from the update rows:
  worker ``w``'s ``i``-th row (applied or dropped) is its ``i``-th read, so its minibatch is
  the ``i``-th of the worker's stream (from the per-worker seeds every engine derives from
  the run seed) and its read version is ``t0 = k − τ``; the coordinates it writes are taken
  as those of the model's sparse gradient of that minibatch at the initial parameters.  For
  the logistic and softmax losses these are the minibatch's features and the bias at any θ
  (barring a value that happens to be exactly 0), the same as in replay; for the hinge loss
  it over-counts once rows pass the margin (replay then writes fewer coordinates).

Both are counted in the order of the update index k, chunk by chunk as the run goes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, types
from numba.extending import overload

from stalesgd.jitcache import specialise
from stalesgd.problems.registry import Problem
from stalesgd.seeds import worker_seeds

from .batches import BatchStream

__all__ = ["CollisionCounter", "ReplayCollisions", "tally_apply", "tally_read"]

# the counts of a tally: updates applied so far (the next update's stamp − 1), coordinates
# written, coordinates that collided
T_APPLIED, T_WRITTEN, T_COLLIDED = range(3)


class ReplayCollisions:
    """Numeric replay's collision count: ``arrays`` = (writers, read versions, counts) for
    :func:`tally_read` / :func:`tally_apply` (``writers[j]`` = 1 + the index of the last
    update that wrote coordinate ``j``; ``read versions[w]`` = the version worker ``w`` last
    read)."""

    def __init__(self, n_params: int, workers: int) -> None:
        self.arrays = (np.zeros(int(n_params), np.int64), np.zeros(int(workers), np.int64),
                       np.zeros(3, np.int64))

    @property
    def rate(self) -> float:
        """Collided / written coordinates (NaN before any update)."""
        counts = self.arrays[2]
        written = int(counts[T_WRITTEN])
        return int(counts[T_COLLIDED]) / written if written else float("nan")


@njit(nogil=True, inline="always")
def _stamp(writers, coords, n, t0, stamp):  # noqa: ANN001
    """Stamp the ``n`` distinct coordinates ``coords[:n]`` of the update that writes
    ``stamp`` (1 + its index) and read version ``t0``; returns how many collided (written
    by an update after that read: ``writers[j] > t0``)."""
    collided = 0
    for p in range(n):
        j = coords[p]
        collided += writers[j] > t0
        writers[j] = stamp
    return collided


def tally_read(tally, w):  # noqa: ANN001
    """Worker ``w`` reads the current version (compiled code only; ``tally`` None: nothing
    is counted)."""


@overload(tally_read, inline="always")
def _tally_read(tally, w):  # noqa: ANN001
    if isinstance(tally, types.NoneType):
        return lambda tally, w: None

    def note(tally, w):  # noqa: ANN001
        read_at, counts = tally[1], tally[2]  # (indexed, not unpacked: see sim.updates)
        read_at[w] = counts[T_APPLIED]
    return note


def tally_apply(tally, store, w):  # noqa: ANN001
    """Worker ``w``'s sparse gradient in ``store`` is applied as the next update: count its
    coordinates and those another update wrote since ``w``'s read, and stamp them (compiled
    code only; ``tally`` None: nothing is counted)."""


@overload(tally_apply, inline="always")
def _tally_apply(tally, store, w):  # noqa: ANN001
    if isinstance(tally, types.NoneType):
        return lambda tally, store, w: None

    def count(tally, store, w):  # noqa: ANN001
        writers, read_at, counts = tally[0], tally[1], tally[2]
        gidx, nnz = store[0], store[2]
        t0 = read_at[w]
        stamp = counts[T_APPLIED] + 1
        counts[T_APPLIED] = stamp
        n = nnz[w]
        counts[T_WRITTEN] += n
        counts[T_COLLIDED] += _stamp(writers, gidx[w], n, t0, stamp)
    return count


@njit(nogil=True)
def count_collisions(kernel, theta0, X, y, batches, k, tau, dropped, writers,  # noqa: ANN001
                     gidx, gval, ws, dims, counts):
    """Stamp the coordinates of each applied row's gradient (``writers[j]`` = 1 + the index
    of the last update that wrote ``j``) and add to ``counts`` [written, collided]."""
    for r in range(k.shape[0]):
        if dropped[r]:
            continue
        t0 = k[r] - tau[r]
        stamp = k[r] + 1
        nnz = kernel(theta0, X, y, batches[r], gidx, gval, ws, dims)[1]
        counts[0] += nnz
        counts[1] += _stamp(writers, gidx, nnz, t0, stamp)


class CollisionCounter:
    """Counts the coordinates a sparse run's updates wrote and how many collided, from the
    rows handed to :meth:`add` in the order the simulation logs them: a timing-only run's
    count (see the module docstring)."""

    def __init__(self, problem: Problem, workers: int, batch: int, seed: int,
                 sampling: str = "replacement") -> None:
        if not problem.sparse:
            raise ValueError(f"problem {problem.name!r} is not sparse: no collision rate")
        model, data = problem.model, problem.dataset
        self.streams = [BatchStream(s, data.n_train, batch, sampling)
                        for s in worker_seeds(seed, workers)]
        self.batch = int(batch)
        self.theta0 = problem.init_params(seed)
        self.data = (data.inputs("train"), data.y_train)
        self.dims = model.dims
        cap = model.sparse_capacity(batch)
        self.gidx = np.zeros(cap, dtype=np.int64)
        self.gval = np.zeros(cap, dtype=model.dtype)
        self.ws = problem.workspace(batch)
        self.writers = np.zeros(model.n_params, dtype=np.int64)
        self.counts = np.zeros(2, dtype=np.int64)
        self.count = specialise(count_collisions, model.sparse_grad_kernel)

    def add(self, columns: dict[str, Any]) -> None:
        """Count the rows ``columns`` (``worker``, ``k``, ``tau``, ``dropped``) in order."""
        worker = np.asarray(columns["worker"], dtype=np.int64)
        if worker.size == 0:
            return
        batches = np.empty((worker.shape[0], self.batch), dtype=np.int64)
        for w in np.unique(worker):
            mine = worker == w
            batches[mine] = self.streams[int(w)].take(int(mine.sum()))
        X, y = self.data
        self.count(self.theta0, X, y, batches, np.asarray(columns["k"], dtype=np.int64),
                   np.asarray(columns["tau"], dtype=np.int64),
                   np.asarray(columns["dropped"], dtype=np.bool_), self.writers, self.gidx,
                   self.gval, self.ws, self.dims, self.counts)

    @property
    def rate(self) -> float:
        """Collided / written coordinates (NaN before any update)."""
        written, collided = int(self.counts[0]), int(self.counts[1])
        return collided / written if written else float("nan")
