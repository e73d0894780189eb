"""The collision rate of a simulated run on a sparse problem, from its update rows.

The real engine counts, per coordinate an update writes, whether an update claimed or
applied after this update's read wrote it first (:mod:`stalesgd.real.sparse_workers`):
the *collision rate* is the share of written coordinates that collided.  The simulator
knows the same facts from its update rows: worker ``w``'s ``i``-th row (applied or dropped)
is its ``i``-th read, so its minibatch is the ``i``-th of the worker's stream — the one
numeric replay computes on, from the per-worker seeds every engine derives from the run
seed — and its read version is ``t0 = k − τ``.  The coordinates an update writes are those
of the model's sparse gradient of that minibatch at the initial parameters (the minibatch's
features and the bias for the linear models: what a sparse update touches, independent of
θ but for gradient values that happen to be exactly 0).  So the rate is counted the same
way in numeric replay and in timing-only runs, chunk by chunk as rows leave the simulation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from stalesgd.jitcache import specialise
from stalesgd.problems.registry import Problem
from stalesgd.seeds import worker_seeds

from .batches import BatchStream

__all__ = ["CollisionCounter"]


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
        collided = 0
        for p in range(nnz):
            j = gidx[p]
            if writers[j] > t0:
                collided += 1
            writers[j] = stamp
        counts[0] += nnz
        counts[1] += collided


class CollisionCounter:
    """Counts the coordinates a sparse run's updates wrote and how many collided, from the
    rows handed to :meth:`add` in the order the simulation logs them (see the module
    docstring)."""

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
