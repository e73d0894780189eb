"""Numeric replay: the real gradient kernels evaluated at the θ each simulated read saw.

:class:`NumericReplay` is the :class:`~stalesgd.sim.model.ReplayHook` of the
simulator's numeric mode.  The timing model decides *when* a worker reads and
applies; this hook does the arithmetic of DESIGN §4 at those instants:

* **read** (worker ``w`` at version ``t0``): draw ``w``'s next minibatch and
  compute the gradient at the current θ right away.  In the model every read
  happens in a process step of its own, after the update that produced version
  ``t0`` was applied and before any later one, so the current θ *is* θ_{t0}, the
  consistent snapshot of the version read (``lock``, ``leashed``, ``seq``,
  ``sync``).  The gradient is a deterministic function of (θ_{t0}, minibatch), so
  computing it at read time gives exactly what computing it later on a kept copy
  of θ_{t0} would: no θ versions need to be kept at all, only one gradient per
  worker in flight (memory m·d).  For ``hogwild`` this means simulated reads are
  **consistent at read start: no tearing** (no mix of versions inside one read) and
  no lost element updates are modelled; the staleness τ is still the one of the
  timing model.
* **apply** (worker ``w``'s gradient read at ``t0`` applied on version ``t1``):
  θ ← θ − η g with η = lr·s(τ), τ = t1 − t0, from the step-size rule's table
  (:class:`StepSizes`: online rules such as TAIL-τ are fed every applied (τ, worker)
  and switch to each new table at once).  ``sync`` applies the mean of the round's m
  gradients.  Dropped gradients (``leashed``) are discarded.
* **evaluations** on the simulated clock: at t = 0, then every ``every_updates``
  applied updates (right after the update) or every ``every_seconds`` simulated
  seconds (a SimPy process), and once at the end; the loss is taken on the current
  θ, which is consistent by construction.  A target loss can stop the run; a
  non-finite minibatch or evaluated loss marks it diverged and stops it.

Bit-for-bit agreement with the real engine: minibatches come from one legacy
Mersenne-Twister stream per worker (``np.random.RandomState(seed_w)``) with the
per-worker seeds the real engine derives from the run seed (:func:`worker_seeds`);
its draws equal those of the real workers' ``np.random.randint`` in Numba, and the
update kernels below repeat the real engine's loops, so ``seq`` (or ``lock`` with one
worker) replays the real ``seq`` run update for update.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import simpy
from numba import njit

from stalesgd.problems.registry import Problem
from stalesgd.stepsize import StepSizeRule

from .model import ReplayHook

if TYPE_CHECKING:
    from .model import Simulation

__all__ = [
    "BatchStream",
    "EvalLog",
    "NumericReplay",
    "StepSizes",
    "apply_step",
    "worker_seeds",
]

#: minibatches drawn per refill of a worker's index buffer
BATCH_CHUNK = 256


def worker_seeds(seed: int, workers: int) -> list[int]:
    """Per-worker minibatch seeds derived from the run seed.

    The same formula as the real engine (``SeedSequence(seed).spawn(m)[w]``, first
    32-bit word of its state), so a simulated worker draws the same minibatches as
    the real worker with the same index.  Recorded as ``worker_seeds`` in the summary.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed {seed!r} must be an integer >= 0")
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        raise ValueError(f"workers {workers!r} must be an integer >= 1")
    children = np.random.SeedSequence(int(seed)).spawn(int(workers))
    return [int(c.generate_state(1, dtype=np.uint32)[0]) for c in children]


class BatchStream:
    """One worker's minibatches: row indices drawn uniformly with replacement.

    Draws come from ``np.random.RandomState(seed)`` in chunks; the sequence equals
    ``randint(0, n_rows)`` called once per index, which is what the real engine's
    Numba workers do after ``np.random.seed(seed)``.
    """

    __slots__ = ("_rs", "_n_rows", "_batch", "_buf", "_pos")

    def __init__(self, seed: int, n_rows: int, batch: int) -> None:
        if int(n_rows) < 1:
            raise ValueError(f"n_rows {n_rows!r} must be >= 1")
        if int(batch) < 1:
            raise ValueError(f"batch {batch!r} must be >= 1")
        self._rs = np.random.RandomState(int(seed))
        self._n_rows = int(n_rows)
        self._batch = int(batch)
        self._buf = np.empty(0, dtype=np.int64)
        self._pos = 0

    def next(self) -> np.ndarray:
        """The next minibatch's row indices (an int64 view, valid until the next refill)."""
        pos = self._pos
        if pos >= self._buf.shape[0]:
            self._buf = self._rs.randint(0, self._n_rows, size=self._batch * BATCH_CHUNK,
                                         dtype=np.int64)
            pos = 0
        self._pos = pos + self._batch
        return self._buf[pos : pos + self._batch]


@njit(nogil=True)
def apply_step(theta: np.ndarray, grad: np.ndarray, eta: float) -> None:
    """θ ← θ − η g element by element, exactly as the real engine's workers do."""
    for j in range(theta.shape[0]):
        theta[j] -= eta * grad[j]


@njit(nogil=True)
def _apply_mean(theta: np.ndarray, grads: np.ndarray, scale: float) -> None:
    """θ ← θ − scale · Σ_w g_w, summed in worker order (the real ``sync`` loop)."""
    n_workers = grads.shape[0]
    for j in range(theta.shape[0]):
        acc = 0.0
        for w in range(n_workers):
            acc += grads[w, j]
        theta[j] -= scale * acc


class StepSizes:
    """η(τ) = lr · s(τ) from a rule's table, refreshed online for adaptive rules.

    For a rule with an online estimator (``tail``, ``tail-original``, ``model``
    without a fixed ``pdf``), :meth:`eta` feeds the applied (τ, worker) to the
    estimator *after* looking up η, and a new table takes effect from the next
    update; once the estimator can produce no more tables (its window closed and no
    refresh is configured) feeding stops.  The real engine feeds the same samples from
    its monitor thread, a few milliseconds late; here the switch is exact.
    """

    def __init__(self, rule: StepSizeRule, tau_max: int, lr: float | None = None) -> None:
        if isinstance(tau_max, bool) or not isinstance(tau_max, int | np.integer) or tau_max < 0:
            raise ValueError(f"tau_max {tau_max!r} must be an integer >= 0")
        self.rule = rule
        self.lr = float(rule.lr if lr is None else lr)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr {lr!r} must be a finite number > 0")
        self.tau_max = int(tau_max)
        self.table = np.ascontiguousarray(rule.table(self.tau_max), dtype=np.float64)
        self.last = self.table.shape[0] - 1
        self.estimator = rule.estimator(self.tau_max)
        self._feeding = self.estimator is not None
        self._tau = np.zeros(1, dtype=np.int64)
        self._worker = np.zeros(1, dtype=np.int64)

    @classmethod
    def from_table(cls, table: np.ndarray | Sequence[float], lr: float) -> StepSizes:
        """A fixed table s[0..τmax] (no rule, no estimator)."""
        s = np.ascontiguousarray(table, dtype=np.float64).reshape(-1)
        if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s < 0):
            raise ValueError("step-size table must be a non-empty array of finite values >= 0")
        self = cls.__new__(cls)
        self.rule = None
        self.lr = float(lr)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr {lr!r} must be a finite number > 0")
        self.tau_max = s.size - 1
        self.table = s
        self.last = s.size - 1
        self.estimator = None
        self._feeding = False
        self._tau = np.zeros(1, dtype=np.int64)
        self._worker = np.zeros(1, dtype=np.int64)
        return self

    @property
    def n_tables(self) -> int:
        """Tables the online estimator produced so far (0 for fixed rules)."""
        return 0 if self.estimator is None else self.estimator.n_tables

    def eta(self, tau: int, worker: int) -> float:
        """η for one applied update with staleness ``tau`` by ``worker``; feeds the estimator."""
        eta = self.lr * float(self.table[tau if tau < self.last else self.last])
        if self._feeding:
            self._feed(tau, worker)
        return eta

    def _feed(self, tau: int, worker: int) -> None:
        est = self.estimator
        self._tau[0] = tau
        self._worker[0] = worker
        new = est.update(self._tau, self._worker)
        if new is not None:
            self.table = np.ascontiguousarray(new, dtype=np.float64)
            self.last = self.table.shape[0] - 1
        if est.ready and (est.quirks or est.refresh_every == 0):
            self._feeding = False

    def etas(self, tau: np.ndarray, worker: np.ndarray) -> np.ndarray:
        """η for a whole sequence of applied updates, with the same result as calling
        :meth:`eta` on each in order (vectorised once the estimator is done)."""
        tau = np.asarray(tau, dtype=np.int64)
        worker = np.asarray(worker, dtype=np.int64)
        out = np.empty(tau.shape[0], dtype=np.float64)
        i = 0
        while i < tau.shape[0] and self._feeding:
            out[i] = self.eta(int(tau[i]), int(worker[i]))
            i += 1
        out[i:] = self.lr * self.table[np.minimum(tau[i:], self.last)]
        return out


@dataclass
class EvalLog:
    """The evaluations of a run (the run-record ``evals`` table)."""

    t: list[float] = field(default_factory=list)
    k: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    active: list[int] = field(default_factory=list)

    def add(self, t: float, k: int, loss: float, acc: float, active: int) -> None:
        """Append one evaluation."""
        self.t.append(float(t))
        self.k.append(int(k))
        self.loss.append(float(loss))
        self.accuracy.append(float(acc))
        self.active.append(int(active))

    def arrays(self) -> dict[str, np.ndarray]:
        """The columns of the ``evals`` table (without ``run_id``)."""
        return {
            "t": np.asarray(self.t, dtype=np.float64),
            "k": np.asarray(self.k, dtype=np.int64),
            "loss": np.asarray(self.loss, dtype=np.float64),
            "accuracy": np.asarray(self.accuracy, dtype=np.float64),
            "active_workers": np.asarray(self.active, dtype=np.int32),
        }


class NumericReplay(ReplayHook):
    """Replays a simulated run numerically on ``problem`` (see the module docstring).

    ``theta0`` defaults to ``problem.init_params(seed)`` (as the real engine);
    ``step`` gives η(τ); exactly one of ``every_updates``/``every_seconds`` may be set
    (neither: evaluations only at the start and the end).  ``target_loss`` with
    ``at_target`` stops the run at the first evaluation at or below it.  After the
    simulation call :meth:`finish`; :attr:`stop_reason` is ``"target"``,
    ``"diverged"`` or ``""``.
    """

    def __init__(
        self,
        problem: Problem,
        workers: int,
        step: StepSizes,
        *,
        batch: int,
        seed: int,
        theta0: np.ndarray | None = None,
        every_updates: int | None = None,
        every_seconds: float | None = None,
        split: str = "test",
        max_rows: int | None = 2000,
        target_loss: float | None = None,
        at_target: bool = True,
    ) -> None:
        if every_updates is not None and every_seconds is not None:
            raise ValueError("give at most one of every_updates and every_seconds")
        if every_updates is not None and int(every_updates) < 1:
            raise ValueError(f"every_updates {every_updates!r} must be >= 1")
        if every_seconds is not None and not (math.isfinite(every_seconds) and every_seconds > 0):
            raise ValueError(f"every_seconds {every_seconds!r} must be a finite number > 0")
        if split not in ("train", "test"):
            raise ValueError(f"split {split!r} is not allowed; use 'train' or 'test'")
        self.problem = problem
        self.m = int(workers)
        self.step = step
        model, data = problem.model, problem.dataset
        self.kernel = model.grad_kernel
        self.X, self.y, self.dims = data.X_train, data.y_train, model.dims
        self.seeds = worker_seeds(seed, self.m)
        self.streams = [BatchStream(s, data.X_train.shape[0], batch) for s in self.seeds]
        theta = problem.init_params(seed) if theta0 is None else np.array(theta0, copy=True)
        if theta.shape != (model.n_params,) or theta.dtype != model.dtype:
            raise ValueError(f"theta0 must be a ({model.n_params},) {model.dtype} array; "
                             f"got {theta.shape} {theta.dtype}")
        self.theta = theta
        self.grads = np.zeros((self.m, model.n_params), dtype=model.dtype)
        self.losses = np.zeros(self.m, dtype=np.float64)
        self.ws = problem.workspace(batch)
        self.every_updates = None if every_updates is None else int(every_updates)
        self.every_seconds = None if every_seconds is None else float(every_seconds)
        self._next_eval_k = self.every_updates if self.every_updates else math.inf
        self.split, self.max_rows = split, max_rows
        self.target_loss = target_loss
        self.at_target = bool(at_target)
        self.evals = EvalLog()
        self.stop_reason = ""
        self.diverged = False
        self.sim: Simulation | None = None

    # ----------------------------------------------------------------- hook protocol
    def bind(self, sim: Simulation) -> None:
        """Attach to the simulation, evaluate θ0 at t = 0 and start the timed evaluations."""
        self.sim = sim
        self._evaluate(0.0, 0, sim.active, after_current=False)
        if self.every_seconds is not None:
            sim.env.process(self._eval_loop())

    def read(self, worker: int, version: int) -> None:
        """Compute ``worker``'s gradient on its next minibatch at the current θ (= θ_version)."""
        if self.sim is not None and self.sim.stopped:
            return
        loss = self.kernel(self.theta, self.X, self.y, self.streams[worker].next(),
                           self.grads[worker], self.ws, self.dims)
        self.losses[worker] = loss
        if not math.isfinite(loss):
            self._diverge(after_current=False)

    def apply(self, worker: int, t0: int, t1: int) -> float:
        """θ ← θ − lr·s(t1 − t0)·g_worker; returns η (NaN once the run has stopped)."""
        sim = self.sim
        if sim is not None and sim.stopped:
            return math.nan
        eta = self.step.eta(t1 - t0, worker)
        apply_step(self.theta, self.grads[worker], eta)
        if t1 + 1 >= self._next_eval_k:
            self._eval_after_update(t1 + 1)
        return eta

    def apply_mean(self, workers: Sequence[int], version: int) -> float:
        """The ``sync`` round: θ ← θ − (η/m)·Σ g over all m workers; returns η."""
        sim = self.sim
        if sim is not None and sim.stopped:
            return math.nan
        if len(workers) != self.m:
            raise ValueError(f"a sync round needs all {self.m} workers, got {len(workers)}")
        eta = self.step.eta(0, 0)  # the real engine logs sync updates as worker 0, τ = 0
        _apply_mean(self.theta, self.grads, eta / self.m)
        if version + 1 >= self._next_eval_k:
            self._eval_after_update(version + 1)
        return eta

    # ----------------------------------------------------------------- evaluations
    def _eval_after_update(self, k: int) -> None:
        every = self.every_updates
        while self._next_eval_k <= k:
            self._next_eval_k += every
        sim = self.sim
        self._evaluate(sim.env.now, k, sim.active, after_current=True)

    def _eval_loop(self) -> Generator[simpy.Event, None, None]:
        sim = self.sim
        while True:
            yield sim.env.timeout(self.every_seconds)
            if sim.stopped or sim.active == 0:
                return
            self._evaluate(sim.env.now, sim.v, sim.active, after_current=False)

    def _evaluate(self, t: float, k: int, active: int, *, after_current: bool) -> float:
        with np.errstate(all="ignore"):
            loss, acc = self.problem.evaluate(self.theta, self.split, self.max_rows)
        self.evals.add(t, k, loss, acc, active)
        if not math.isfinite(loss):
            self._diverge(after_current=after_current)
        elif self.target_loss is not None and self.at_target and loss <= self.target_loss:
            self.stop_reason = self.stop_reason or "target"
            if self.sim is not None:
                self.sim.stop(after_current=after_current)
        return loss

    def _diverge(self, *, after_current: bool) -> None:
        self.diverged = True
        self.stop_reason = self.stop_reason or "diverged"
        if self.sim is not None:
            self.sim.stop(after_current=after_current)

    def finish(self, t: float, k: int, interrupted: bool) -> None:
        """The closing evaluation at the end of the run (skipped when interrupted or when
        the last evaluation already saw version ``k``)."""
        if interrupted:
            return
        if self.evals.k and self.evals.k[-1] == k:
            return
        active = self.sim.active if self.sim is not None else self.m
        self._evaluate(t, k, active, after_current=False)
