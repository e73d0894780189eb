"""The parameter servers of the distributed engine: plain classes that the engine turns into
Ray actors (this module does not import Ray).

:class:`ParameterServer` holds θ and the version counter v for ``seq``, ``lock``, ``sync``
and ``leashed``; :class:`Shard` holds one slice of θ for ``hogwild`` (shard 0 also holds the
update counter).  An actor runs one method at a time, in the order the calls arrive, so
"the server applies pushes one at a time in arrival order" is what the actor does; the
methods are coroutines only so that a ``sync`` pull can wait for its round without holding
the actor.  Step sizes: η = lr · s(τ) from the rule's table, which an online rule (TAIL-τ)
re-estimates here, on the server, from every applied update's (τ, worker).

Every applied update (and every dropped gradient) becomes a row: the worker's times
(``t_read``, ``t_pulled``, ``t_pushed``, already on the driver's clock) and the server's
``t_apply``; the engine takes the rows with :meth:`ParameterServer.take_rows` while the
run goes on.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import numpy as np

from stalesgd.stepsize import StepSizeRule

from .cluster import node_name
from .kernels import apply_mean, apply_step

__all__ = ["ParameterServer", "RoundServer", "RowBuffer", "Shard", "StepTable"]

#: row fields in the order :meth:`RowBuffer.add` takes them
ROW_FIELDS = ("k", "worker", "t_read", "t_pulled", "t_pushed", "t_apply", "tau", "eta",
              "attempts", "dropped")


class RowBuffer:
    """Rows of applied updates and dropped gradients, handed out in batches."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, k: int, worker: int, t_read: float, t_pulled: float, t_pushed: float,
            t_apply: float, tau: int, eta: float, attempts: int = 1,
            dropped: bool = False) -> None:
        self.rows.append((k, worker, t_read, t_pulled, t_pushed, t_apply, tau, eta, attempts,
                          dropped))

    def take(self) -> dict[str, np.ndarray]:
        """The rows added since the last call, as columns (empty columns when none)."""
        rows, self.rows = self.rows, []
        cols = list(zip(*rows, strict=True)) if rows else [()] * len(ROW_FIELDS)
        types = (np.int64, np.int32, np.float64, np.float64, np.float64, np.float64,
                 np.int64, np.float64, np.int32, bool)
        return {name: np.asarray(col, dtype=t)
                for name, col, t in zip(ROW_FIELDS, cols, types, strict=True)}


class StepTable:
    """η = lr · s(τ) from the rule's table, learned online when the rule is adaptive."""

    def __init__(self, rule: StepSizeRule, tau_max: int, lr: float) -> None:
        self.lr = float(lr)
        self._rule, self._tau_max = rule, tau_max
        self.table = np.ascontiguousarray(rule.table(tau_max), dtype=np.float64)
        self.estimator = rule.estimator(tau_max)
        self.version = 0
        self._one = np.zeros(1, dtype=np.int64)
        self._who = np.zeros(1, dtype=np.int64)

    def eta(self, tau: int) -> float:
        """η for staleness ``tau`` (τ beyond the table uses its last entry)."""
        last = self.table.shape[0] - 1
        return self.lr * self.table[min(tau, last)]

    def feed(self, tau: int, worker: int) -> None:
        """An applied update's (τ, worker) for the online estimate; a new table takes effect
        from the next update."""
        if self.estimator is None:
            return
        self._one[0], self._who[0] = tau, worker
        new = self.estimator.update(self._one, self._who)
        if new is not None:
            self.table = np.ascontiguousarray(new, dtype=np.float64)
            self.version += 1

    def prepare(self) -> None:
        """Compile the online estimator's update now (on a throwaway estimator), not at the
        run's first update."""
        if self.estimator is not None:
            one = np.zeros(1, dtype=np.int64)
            self.rule_estimator_copy().update(one, one)

    def rule_estimator_copy(self) -> Any:
        return self._rule.estimator(self._tau_max)

    @property
    def tables(self) -> int:
        """Tables the online rule produced."""
        return 0 if self.estimator is None else self.estimator.n_tables


class _Stoppable:
    """The stop state every server shares: the update budget, a stop reason, the clock."""

    def __init__(self, n_max: int) -> None:
        self.n_max = int(n_max)
        self.stop_reason = ""
        self.origin = math.nan  # this process's monotonic time of the run's t = 0
        self.rows = RowBuffer()

    def start(self, origin: float) -> None:
        """Set t = 0 (``origin`` on this process's monotonic clock)."""
        self.origin = float(origin)

    def now(self) -> float:
        return time.monotonic() - self.origin

    def clock(self) -> float:
        """This process's monotonic clock (for the driver's offset estimate)."""
        return time.monotonic()

    def node(self) -> str:
        """The node this server runs on (see :func:`~stalesgd.real.ps.cluster.node_name`)."""
        return node_name()

    @property
    def stopped(self) -> bool:
        return bool(self.stop_reason)

    def stop(self, reason: str) -> None:
        """End the run (the first reason given is kept)."""
        self.stop_reason = self.stop_reason or reason

    def take_rows(self) -> dict[str, np.ndarray]:
        return self.rows.take()

    def prepare(self) -> None:
        """Compile what the first update would otherwise compile mid-run: the update loop
        for a gradient as it arrives (a read-only array), and the step-size estimator."""
        theta = self.theta
        arrived = np.zeros_like(theta)
        arrived.flags.writeable = False
        apply_step(theta, arrived, 0.0)
        steps = getattr(self, "steps", None)
        if steps is not None:
            steps.prepare()


class ParameterServer(_Stoppable):
    """θ and its version v on one actor: ``seq``, ``lock``, ``sync``, ``leashed``."""

    def __init__(self, algorithm: str, theta: np.ndarray, rule: StepSizeRule, tau_max: int,
                 lr: float, n_max: int, workers: int) -> None:
        super().__init__(n_max)
        self.algorithm = algorithm
        self.theta = np.array(theta, copy=True)
        self.v = 0
        self.m = int(workers)
        self.steps = StepTable(rule, tau_max, lr)
        self.failed = 0  # leashed: publishes refused because v had moved on
        self.success_tries = 0
        self.failed_at_stop = 0
        self.dropped = 0

    # ----- what every worker asks --------------------------------------------------------

    def pull(self, table_version: int = -1) -> tuple:
        """(θ, v, stopped, table or None): θ and its version, and the step-size table if it
        is newer than ``table_version``."""
        return self.theta.copy(), self.v, self.stopped, self._table_since(table_version)

    def _table_since(self, version: int) -> tuple[int, np.ndarray] | None:
        if version == self.steps.version:
            return None
        return self.steps.version, self.steps.table

    def status(self) -> tuple[int, bool, str]:
        """(v, stopped, stop reason)."""
        return self.v, self.stopped, self.stop_reason

    def snapshot(self) -> tuple[np.ndarray, int]:
        """θ and its version (consistent: nothing runs between the two)."""
        return self.theta.copy(), self.v

    def stop_run(self, reason: str) -> None:
        """End the run."""
        self.stop(reason)

    def diverged(self, worker: int) -> None:
        """A worker's minibatch loss was not finite."""
        self.stop("diverged")

    def counters(self) -> dict[str, Any]:
        return {"failed_publishes": self.failed, "failed_publishes_at_stop": self.failed_at_stop,
                "success_tries": self.success_tries, "dropped": self.dropped,
                "stepsize_tables": self.steps.tables, "updates": self.v}

    # ----- lock / seq ----------------------------------------------------------------------

    def push(self, worker: int, grad: np.ndarray, t0: int, t_read: float, t_pulled: float,
             t_pushed: float) -> None:
        """Apply a gradient computed at version ``t0`` now: τ = v − t0."""
        if self.stopped:
            return
        k = self.v
        if k >= self.n_max:
            self.stop("updates")
            return
        tau = k - t0
        eta = self.steps.eta(tau)
        apply_step(self.theta, grad, eta)
        self.v = k + 1
        self.rows.add(k, worker, t_read, t_pulled, t_pushed, self.now(), tau, eta)
        self.steps.feed(tau, worker)
        if self.v >= self.n_max:
            self.stop("updates")

    # ----- leashed -------------------------------------------------------------------------

    def publish(self, worker: int, theta_new: np.ndarray, t1: int, t0: int, eta: float,
                attempts: int, t_read: float, t_pulled: float, t_pushed: float,
                table_version: int) -> tuple:
        """Replace θ by ``theta_new`` if v is still ``t1`` (the worker built it from θ_t1).

        Returns (published, v, θ or None, stopped, table or None): on a refusal the newer θ
        comes back, for the worker to apply its gradient to."""
        if self.stopped:
            self.failed_at_stop += attempts - 1
            return False, self.v, None, True, None
        if self.v != t1:
            self.failed += 1
            return (False, self.v, self.theta.copy(), False,
                    self._table_since(table_version))
        if t1 >= self.n_max:
            self.stop("updates")
            return False, self.v, None, True, None
        self.theta = np.array(theta_new, copy=True)
        self.v = t1 + 1
        tau = t1 - t0
        self.success_tries += attempts
        self.rows.add(t1, worker, t_read, t_pulled, t_pushed, self.now(), tau, eta, attempts)
        self.steps.feed(tau, worker)
        if self.v >= self.n_max:
            self.stop("updates")
        return True, self.v, None, self.stopped, None

    def drop(self, worker: int, tau: int, attempts: int, t_read: float, t_pulled: float,
             t_pushed: float) -> None:
        """A gradient given up after ``attempts`` refused publishes."""
        self.rows.add(-1, worker, t_read, t_pulled, t_pushed, self.now(), tau, 0.0, attempts,
                      True)
        self.dropped += 1


class RoundServer(ParameterServer):
    """θ for ``sync``: the m gradients of a round, then their mean.

    Its methods are coroutines, so that all of them run on the actor's one event loop, each
    without interruption until it awaits; only a pull awaits, for the round it asks for."""

    def __init__(self, algorithm: str, theta: np.ndarray, rule: StepSizeRule, tau_max: int,
                 lr: float, n_max: int, workers: int) -> None:
        super().__init__(algorithm, theta, rule, tau_max, lr, n_max, workers)
        self.round = np.zeros((self.m, self.theta.shape[0]), dtype=self.theta.dtype)
        self.round_times: list[tuple[float, float, float] | None] = [None] * self.m
        self.arrived = 0
        self.changed = asyncio.Condition()

    async def prepare(self) -> None:
        super().prepare()
        apply_mean(np.zeros_like(self.theta), self.round, 0.0)

    async def pull_round(self, after: int) -> tuple:
        """(θ, v, stopped, None) once v ≥ ``after`` (or the run ended)."""
        if self.v < after and not self.stopped:
            async with self.changed:
                await self.changed.wait_for(lambda: self.v >= after or self.stopped)
        return self.theta.copy(), self.v, self.stopped, None

    async def push_round(self, worker: int, grad: np.ndarray, t0: int, t_read: float,
                         t_pulled: float, t_pushed: float) -> None:
        """One of the m gradients of round ``t0``; the last one applies their mean (τ = 0)."""
        if self.stopped or t0 != self.v or self.round_times[worker] is not None:
            return
        self.round[worker] = grad
        self.round_times[worker] = (t_read, t_pulled, t_pushed)
        self.arrived += 1
        if self.arrived < self.m:
            return
        k = self.v
        eta = self.steps.eta(0)
        apply_mean(self.theta, self.round, eta)
        first = self.round_times[0]
        self.rows.add(k, 0, first[0], first[1], first[2], self.now(), 0, eta)
        self.steps.feed(0, 0)
        self.arrived = 0
        self.round_times = [None] * self.m
        self.v = k + 1
        if self.v >= self.n_max:
            self.stop("updates")
        async with self.changed:
            self.changed.notify_all()

    async def stop_run(self, reason: str) -> None:
        """End the run; workers waiting for a round are let go."""
        self.stop(reason)
        async with self.changed:
            self.changed.notify_all()

    async def diverged(self, worker: int) -> None:
        await self.stop_run("diverged")

    # what the driver asks, as coroutines (see the class docstring)
    async def start(self, origin: float) -> None:
        super().start(origin)

    async def clock(self) -> float:
        return super().clock()

    async def node(self) -> str:
        return super().node()

    async def status(self) -> tuple[int, bool, str]:
        return super().status()

    async def snapshot(self) -> tuple[np.ndarray, int]:
        return super().snapshot()

    async def take_rows(self) -> dict[str, np.ndarray]:
        return super().take_rows()

    async def counters(self) -> dict[str, Any]:
        return super().counters()


class Shard(_Stoppable):
    """One slice of θ for ``hogwild``; shard 0 also counts the updates.

    A worker pulls every slice (each as that shard has it then: together they may mix
    versions), claims its update index k from shard 0 (τ = k − t0, t0 the count it pulled
    with), and sends each shard its slice of the gradient, which the shard applies on
    arrival, independently of the others."""

    def __init__(self, index: int, theta_slice: np.ndarray, rule: StepSizeRule | None,
                 tau_max: int, lr: float, n_max: int) -> None:
        super().__init__(n_max)
        self.index = int(index)
        self.theta = np.array(theta_slice, copy=True)
        self.v = 0  # shard 0: updates claimed
        self.applied = 0
        self.steps = None if rule is None else StepTable(rule, tau_max, lr)

    def pull(self) -> tuple[np.ndarray, int, bool]:
        """(this slice, the update count (shard 0; else -1), stopped)."""
        return self.theta.copy(), (self.v if self.index == 0 else -1), self.stopped

    def claim(self, worker: int, t0: int, t_read: float, t_pulled: float,
              t_pushed: float) -> tuple[int, float, bool]:
        """Shard 0: the next update index k and η(k − t0), or k = −1 once the run ended."""
        if self.stopped:
            return -1, 0.0, True
        k = self.v
        if k >= self.n_max:
            self.stop("updates")
            return -1, 0.0, True
        self.v = k + 1
        tau = k - t0
        eta = self.steps.eta(tau)
        self.rows.add(k, worker, t_read, t_pulled, t_pushed, self.now(), tau, eta)
        self.steps.feed(tau, worker)
        if self.v >= self.n_max:
            self.stop("updates")
        return k, eta, False

    def apply(self, grad_slice: np.ndarray, eta: float) -> None:
        """θ_slice ← θ_slice − η g_slice."""
        apply_step(self.theta, grad_slice, eta)
        self.applied += 1

    def status(self) -> tuple[int, bool, str]:
        return self.v, self.stopped, self.stop_reason

    def snapshot(self) -> tuple[np.ndarray, int]:
        return self.theta.copy(), self.v

    def stop_run(self, reason: str) -> None:
        self.stop(reason)

    def diverged(self, worker: int) -> None:
        self.stop("diverged")

    def counters(self) -> dict[str, Any]:
        return {"applied": self.applied, "updates": self.v,
                "stepsize_tables": 0 if self.steps is None else self.steps.tables}
