"""A worker of the distributed engine: a plain class the engine turns into a Ray actor.

It holds the training data (shared read-only through Ray's object store), its minibatch
indices, gradient and workspace, and runs the loop the algorithm registry names for engine
``ray`` (:mod:`stalesgd.real.ps.loops`) until the server says the run has ended.  Its
minibatches are drawn exactly as the thread engine's workers draw them (Numba's generator
seeded with the worker's seed, :mod:`stalesgd.real.ps.kernels`), with the same gradient
kernel, so the two engines see the same data in the same order.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from stalesgd.algorithms import get_algorithm
from stalesgd.problems.registry import Problem
from stalesgd.units import parse_distribution

from ..sampling import batch_rows, new_sampler
from .cluster import node_name
from .kernels import apply_mean, apply_step, draw_rows, publish_step, seed_draws
from .link import Link

__all__ = ["Worker", "WorkerSetup"]

#: a parked worker's first nap (seconds); naps double up to PARK_MAX_NAP
PARK_NAP = 1e-3
PARK_MAX_NAP = 20e-3


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker of a run shares."""

    algorithm: str
    batch: int
    lr: float
    persistence: int  # < 0: unbounded
    bounds: tuple[int, ...]  # hogwild: shard s holds θ[bounds[s]:bounds[s+1]]
    slowdown: tuple[float, ...] = ()  # each worker's factor (stalesgd.slowdown); () none
    net_delay: str | None = None  # the added delay per message (a distribution), or none
    sampling: str = "replacement"  # the minibatch scheme (stalesgd.real.sampling)


class Worker:
    """One worker: pulls θ, computes a gradient with the model's kernel, pushes it."""

    def __init__(self, index: int, seed: int, problem: Problem, setup: WorkerSetup,
                 servers: list[Any]) -> None:
        self.index = int(index)
        self.seed = int(seed)
        self.problem = problem
        self.setup = setup
        self.servers = servers
        model = problem.model
        self.kernel = model.grad_kernel
        self.dims = model.dims
        self.X = problem.dataset.inputs("train")
        self.y = problem.dataset.y_train
        self.n_rows = problem.dataset.n_train
        self.sampler = new_sampler(setup.batch, self.n_rows, setup.sampling)
        self.batch_idx = batch_rows(self.sampler)
        self.ws = model.workspace(setup.batch)
        self.n_params = int(model.n_params)
        self.theta = np.zeros(model.n_params, dtype=model.dtype)  # the pulled copy
        self.grad = np.zeros(model.n_params, dtype=model.dtype)
        self.new = np.zeros(model.n_params, dtype=model.dtype)  # Leashed-SGD's θ to publish
        # the driver parks (active False) and resumes this worker (elastic control), and
        # tells it when the run is over (a parked, spinning or delayed worker asks no server)
        self.active = True
        self.over = False
        self.parked_seconds = 0.0
        self.origin = math.nan
        self.gradient_seconds = 0.0
        # Leashed-SGD: the worker's copy of the step-size table, and publish counts
        self.table_version = -1
        self.table = np.ones(1)
        self.failed = 0
        self.slow = setup.slowdown[self.index] if setup.slowdown else 1.0
        self.link = Link(None if setup.net_delay is None else
                         parse_distribution(setup.net_delay), self.seed,
                         over=lambda: self.over)

    def node(self) -> str:
        """The node this worker runs on (see :func:`~stalesgd.real.ps.cluster.node_name`)."""
        return node_name()

    def clock(self) -> float:
        """This process's monotonic clock (for the driver's offset estimate)."""
        return time.monotonic()

    def prepare(self) -> float:
        """Compile (or load) the kernels this worker runs; returns the seconds it took."""
        t = time.monotonic()
        seed_draws(self.seed)
        draw_rows(self.sampler, self.batch_idx, self.n_rows)
        self.kernel(self.theta, self.X, self.y, self.batch_idx, self.grad, self.ws, self.dims)
        scratch = np.zeros_like(self.theta)
        apply_step(scratch, self.grad, 0.0)
        publish_step(scratch, self.theta, self.grad, 0.0)
        apply_mean(scratch, self.grad.reshape(1, -1), 0.0)
        return time.monotonic() - t

    def set_active(self, active: bool) -> None:
        """Park (False) or resume (True) this worker; the driver calls it during the run
        (the actor runs two threads: :meth:`run` and the driver's calls)."""
        self.active = bool(active)

    def end(self) -> None:
        """The run is over: a parked worker leaves its loop, a straggler's spin and a
        message delay are cut short."""
        self.over = True

    def wait_while_parked(self) -> bool:
        """Called at the top of each step: while parked, hold no parameter-sized buffer and
        sleep in naps that double from :data:`PARK_NAP` to :data:`PARK_MAX_NAP`; False when
        the run ended meanwhile."""
        if self.active:
            return True
        t = time.monotonic()
        dtype = self.theta.dtype
        self.theta = self.grad = self.new = np.zeros(0, dtype=dtype)
        nap = PARK_NAP
        while not self.active and not self.over:
            time.sleep(nap)
            nap = min(2 * nap, PARK_MAX_NAP)
        self.theta, self.grad, self.new = (np.zeros(self.n_params, dtype=dtype)
                                           for _ in range(3))
        self.parked_seconds += time.monotonic() - t
        return not self.over

    def now(self) -> float:
        """Seconds since the run's start, on the driver's clock."""
        return time.monotonic() - self.origin

    def run(self, origin: float) -> dict[str, Any]:
        """Run this worker's loop until the run ends; returns its counters.  ``origin`` is the
        run's t = 0 on this process's monotonic clock."""
        self.origin = float(origin)
        seed_draws(self.seed)  # the same stream as the thread engine's worker
        self.sampler = new_sampler(self.setup.batch, self.n_rows, self.setup.sampling)
        self.batch_idx = batch_rows(self.sampler)  # (prepare drew from the first ones)
        loop = get_algorithm(self.setup.algorithm).implementation("ray")
        try:
            loop(self)
        finally:
            self.link.close()
        return {"gradient_seconds": self.gradient_seconds, "failed": self.failed,
                "parked_seconds": self.parked_seconds}

    def gradient(self) -> float:
        """The gradient of the drawn minibatch at :attr:`theta`, into :attr:`grad`; returns
        the minibatch loss.  A slowed-down worker then spins for (factor − 1) × the time it
        took (:mod:`stalesgd.slowdown`)."""
        t = time.monotonic()
        loss = self.kernel(self.theta, self.X, self.y, self.batch_idx, self.grad, self.ws,
                           self.dims)
        t_end = time.monotonic()
        self.gradient_seconds += t_end - t
        if self.slow > 1.0:
            until = t_end + (self.slow - 1.0) * (t_end - t)
            while time.monotonic() < until and not self.over:
                pass
        return float(loss)

    def draw(self) -> None:
        """The next minibatch's rows."""
        draw_rows(self.sampler, self.batch_idx, self.n_rows)

    def eta(self, tau: int) -> float:
        """η = lr · s(τ) from the worker's copy of the server's table (Leashed-SGD)."""
        last = self.table.shape[0] - 1
        return self.setup.lr * self.table[min(tau, last)]

    def take_table(self, news: tuple[int, np.ndarray] | None) -> None:
        """Keep a newer step-size table the server sent."""
        if news is not None:
            self.table_version, self.table = news[0], np.asarray(news[1], dtype=np.float64)
