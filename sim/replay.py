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

Batched execution (speed, same arithmetic): ``read`` and ``apply`` only *record* the
operation (worker, η); the recorded sequence runs in one compiled loop
(:func:`_replay_ops`, minibatch draws included) whenever θ is needed — before every
evaluation, when :attr:`NumericReplay.theta` is read (elastic controllers), every
:data:`FLUSH_OPS` operations and at the end of the run (:meth:`ReplayHook.flush`).  The
order of reads and applies is the one of the simulation, so θ and every gradient are
bit for bit those of running each operation at once.  A read that gives a non-finite
loss stops the run retroactively at that read (its row count and simulated time,
:meth:`~stalesgd.sim.model.Simulation.stop_retroactively`).  Tables an online step-size
rule produced after that read are not counted (:meth:`StepSizes.cut`).  The simulator's
fast path appends to the buffers directly (:meth:`NumericReplay.inline`).

Bit-for-bit agreement with the real engine: minibatches come from one legacy
Mersenne-Twister stream per worker (``np.random.RandomState(seed_w)``) with the
per-worker seeds every engine derives from the run seed
(:func:`stalesgd.seeds.worker_seeds`);
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

from stalesgd.problems._kernels import n_rows as n_examples
from stalesgd.problems.registry import Problem
from stalesgd.seeds import worker_seeds
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
]

#: minibatches drawn per refill of a worker's index buffer
BATCH_CHUNK = 256




class BatchStream:
    """One worker's minibatches: row indices drawn uniformly with replacement.

    Draws come from ``np.random.RandomState(seed)`` in chunks; the sequence equals
    ``randint(0, n_rows)`` called once per index, which is what the real engine's
    Numba workers do after ``np.random.seed(seed)``.  For ``2 <= n_rows < 2**32`` the
    chunks are made from raw 32-bit Mersenne-Twister outputs with the same masked
    rejection as ``randint`` (vectorised; several times faster, the same indices).
    """

    __slots__ = ("_rs", "_n_rows", "_batch", "_buf", "_pos", "_mask", "_accept")

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
        rng = self._n_rows - 1  # randint's range; its masked rejection uses 32-bit draws
        self._mask = (1 << rng.bit_length()) - 1 if 0 < rng < 0xFFFFFFFF else 0
        self._accept = (rng + 1) / (self._mask + 1) if self._mask else 1.0

    def _more(self, count: int) -> np.ndarray:
        """At least ``count`` further indices of the stream (more is fine: they are kept)."""
        if not self._mask:
            return self._rs.randint(0, self._n_rows, size=count, dtype=np.int64)
        parts, got = [], 0
        while got < count:
            raw = self._rs.randint(0, 1 << 32, size=int((count - got) / self._accept) + 64,
                                   dtype=np.uint32)
            v = raw & np.uint32(self._mask)
            v = v[v < self._n_rows]
            parts.append(v)
            got += v.shape[0]
        return np.concatenate(parts).astype(np.int64)

    def _ensure(self, need: int) -> None:
        left = self._buf.shape[0] - self._pos
        if left < need:
            more = self._more(max(need - left, self._batch * BATCH_CHUNK))
            self._buf = np.concatenate([self._buf[self._pos :], more]) if left else more
            self._pos = 0

    def next(self) -> np.ndarray:
        """The next minibatch's row indices (an int64 view, valid until the next refill)."""
        b = self._batch
        self._ensure(b)
        pos = self._pos
        self._pos = pos + b
        return self._buf[pos : pos + b]

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` minibatches as an ``(n, batch)`` int64 array (a copy): the same rows
        as ``n`` calls of :meth:`next`."""
        b = self._batch
        need = int(n) * b
        self._ensure(need)
        pos = self._pos
        self._pos = pos + need
        return self._buf[pos : pos + need].reshape(int(n), b).copy()


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


@njit(nogil=True)
def _mt_twist(key: np.ndarray) -> None:
    """Regenerate the 624 words of a Mersenne-Twister state (NumPy's ``mt19937_gen``)."""
    n, m_ = 624, 397
    for i in range(n):
        y = (np.uint64(key[i]) & np.uint64(0x80000000)) | \
            (np.uint64(key[(i + 1) % n]) & np.uint64(0x7FFFFFFF))
        x = np.uint64(key[(i + m_) % n]) ^ (y >> np.uint64(1))
        if y & np.uint64(1):
            x ^= np.uint64(0x9908B0DF)
        key[i] = np.uint32(x & np.uint64(0xFFFFFFFF))


@njit(nogil=True)
def _mt_draw(key: np.ndarray, pos: np.ndarray, w: int, n_rows: int, mask: int,
             out: np.ndarray) -> None:
    """Fill ``out`` with ``randint(0, n_rows)`` draws of worker ``w``'s legacy Mersenne
    Twister (raw 32-bit outputs, masked rejection: what ``RandomState.randint`` does for a
    range below 2**32), advancing its state ``key[w]``, ``pos[w]``."""
    k = key[w]
    p = pos[w]
    hi = np.uint64(n_rows - 1)
    msk = np.uint64(mask)
    for i in range(out.shape[0]):
        while True:
            if p >= 624:
                _mt_twist(k)
                p = 0
            y = np.uint64(k[p])
            p += 1
            y ^= y >> np.uint64(11)
            y ^= (y << np.uint64(7)) & np.uint64(0x9D2C5680)
            y ^= (y << np.uint64(15)) & np.uint64(0xEFC60000)
            y ^= y >> np.uint64(18)
            v = y & msk
            if v <= hi:
                out[i] = np.int64(v)
                break
    pos[w] = p


@njit(nogil=True)
def _replay_ops(kernel, theta, X, y, dims, ws, grads, losses, ops, etas, idx,  # noqa: ANN001
                mt_key, mt_pos, mask, scratch):
    """Run a recorded sequence of reads and applies in one compiled loop.

    ``ops[i] = 2·worker + is_apply``; a read computes the worker's gradient at the current
    θ on its next minibatch, an apply does θ ← θ − η g with the next ``etas`` value (the
    loop of :func:`apply_step`).  Minibatches are drawn here from the workers' Mersenne
    Twister states ``mt_key``/``mt_pos`` when ``mask > 0`` (into ``scratch``), else taken
    from the rows of ``idx`` in read order.  Returns the index of the first read with a
    non-finite loss (the ops after it are not run), or −1.
    """
    r = 0
    a = 0
    n = theta.shape[0]
    n_rows = n_examples(X)
    for i in range(ops.shape[0]):
        op = ops[i]
        w = op >> 1
        if op & 1:
            eta = etas[a]
            a += 1
            g = grads[w]
            for j in range(n):
                theta[j] -= eta * g[j]
        else:
            if mask > 0:
                _mt_draw(mt_key, mt_pos, w, n_rows, mask, scratch)
                loss = kernel(theta, X, y, scratch, grads[w], ws, dims)
            else:
                loss = kernel(theta, X, y, idx[r], grads[w], ws, dims)
            r += 1
            losses[w] = loss
            if not np.isfinite(loss):
                return i
    return -1


#: reads and applies buffered by :class:`NumericReplay` before one compiled replay call
FLUSH_OPS = 4096


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
        self._set_table(rule.table(self.tau_max))
        self.estimator = rule.estimator(self.tau_max)
        self._feeding = self.estimator is not None
        self._fed = 0  # samples fed to the estimator so far
        self._table_at: list[int] = []  # ... when each of its tables was produced
        self._tables_cut: int | None = None
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
        self._set_table(s)
        self.estimator = None
        self._feeding = False
        self._fed = 0
        self._table_at = []
        self._tables_cut = None
        self._tau = np.zeros(1, dtype=np.int64)
        self._worker = np.zeros(1, dtype=np.int64)
        return self

    @property
    def n_tables(self) -> int:
        """Tables the online estimator produced so far (0 for fixed rules); after
        :meth:`cut` only those produced from the first ``fed`` samples."""
        if self.estimator is None:
            return 0
        n = self.estimator.n_tables
        if self._tables_cut is not None:
            n -= sum(1 for f in self._table_at if f > self._tables_cut)
        return n

    def cut(self, fed: int) -> None:
        """The run ended when only ``fed`` samples had been fed (a divergence found late by
        the batched replay): count only the tables produced up to then, feed no more."""
        self._tables_cut = int(fed) if self._tables_cut is None else min(self._tables_cut, fed)
        self._feeding = False

    def _set_table(self, table: np.ndarray) -> None:
        self.table = np.ascontiguousarray(table, dtype=np.float64)
        self.last = self.table.shape[0] - 1
        #: lr·s(τ) as Python floats (the same products), for the per-update lookup
        self.eta_list: list[float] = (self.lr * self.table).tolist()

    def eta(self, tau: int, worker: int) -> float:
        """η for one applied update with staleness ``tau`` by ``worker``; feeds the estimator."""
        last = self.last
        eta = self.eta_list[tau if tau < last else last]
        if self._feeding:
            self._feed(tau, worker)
        return eta

    def _feed(self, tau: int, worker: int) -> None:
        est = self.estimator
        self._tau[0] = tau
        self._worker[0] = worker
        new = est.update(self._tau, self._worker)
        self._fed += 1
        if new is not None:
            self._set_table(new)
            self._table_at.append(self._fed)
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
        self.X, self.y, self.dims = data.inputs("train"), data.y_train, model.dims
        self.seeds = worker_seeds(seed, self.m)
        # the workers' minibatch streams; when the compiled replay draws the indices itself
        # (``_mask`` > 0, every usual dataset size) only their initial states are used
        self.streams = [BatchStream(s, data.n_train, batch) for s in self.seeds]
        theta = problem.init_params(seed) if theta0 is None else np.array(theta0, copy=True)
        if theta.shape != (model.n_params,) or theta.dtype != model.dtype:
            raise ValueError(f"theta0 must be a ({model.n_params},) {model.dtype} array; "
                             f"got {theta.shape} {theta.dtype}")
        self._theta = theta
        self.grads = np.zeros((self.m, model.n_params), dtype=model.dtype)
        self.losses = np.zeros(self.m, dtype=np.float64)
        self.ws = problem.workspace(batch)
        self.batch = int(batch)
        # reads/applies not yet run: op codes (2·worker + is_apply), applies' η, and per
        # read the rows logged and the simulated time (to stop the run where it diverged)
        self._ops: list[int] = []
        self._etas: list[float] = []
        self._reads: list[tuple[int, float]] = []
        # minibatch draws inside the compiled replay: the workers' legacy MT19937 states
        # (the streams' RandomState), used when randint's masked 32-bit path applies
        self._mask = self.streams[0]._mask
        self._mt_key = np.zeros((self.m, 624), dtype=np.uint32)
        self._mt_pos = np.zeros(self.m, dtype=np.int64)
        if self._mask:
            for w, stream in enumerate(self.streams):
                _, key, pos, _, _ = stream._rs.get_state(legacy=True)
                self._mt_key[w] = key
                self._mt_pos[w] = pos
        self._scratch = np.zeros(self.batch, dtype=np.int64)
        self._no_idx = np.zeros((0, self.batch), dtype=np.int64)
        # compile the batched replay for these argument types now, not on the clock
        self._run_ops(np.zeros(0, np.int64), np.zeros(0), self._no_idx)
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

    @property
    def theta(self) -> np.ndarray:
        """The replayed parameters, up to date (runs the buffered reads and applies first)."""
        self.flush()
        return self._theta

    def _run_ops(self, ops: np.ndarray, etas: np.ndarray, idx: np.ndarray) -> int:
        return _replay_ops(self.kernel, self._theta, self.X, self.y, self.dims, self.ws,
                           self.grads, self.losses, ops, etas, idx, self._mt_key,
                           self._mt_pos, self._mask, self._scratch)

    def flush(self) -> None:
        """Run the buffered reads and applies (one compiled call).

        Reads and applies are recorded as the simulation makes them and evaluated in
        batches, in the same order, which gives the same θ as evaluating each at once.  If
        a read's loss is not finite the run is marked diverged and stopped where that read
        happened (its row count and simulated time); later ops are discarded.
        """
        if not self._ops:
            return
        ops = np.array(self._ops, dtype=np.int64)
        etas = np.array(self._etas, dtype=np.float64)
        read_at = list(self._reads)
        # cleared in place: a fast-path loop may hold references to these lists (inline())
        self._ops.clear()
        self._etas.clear()
        self._reads.clear()
        reads = np.flatnonzero((ops & 1) == 0)
        idx = self._no_idx if self._mask else np.empty((reads.shape[0], self.batch), np.int64)
        if reads.shape[0] and not self._mask:
            who = ops[reads] >> 1
            for w in np.unique(who).tolist():
                pos = np.flatnonzero(who == w)
                idx[pos] = self.streams[w].take(pos.shape[0])
        bad = self._run_ops(ops, etas, idx)
        if bad >= 0:
            j = int(np.searchsorted(reads, bad))  # which read diverged
            self.diverged = True
            self.stop_reason = self.stop_reason or "diverged"
            rows, t, fed = read_at[j]
            self.step.cut(fed)  # an online rule was fed only up to this read
            if self.sim is not None:
                self.sim.stop_retroactively(rows, t)

    def inline(self) -> tuple[list[int], list[float], list[tuple[int, float]], list[float]] | None:
        """For the simulator's fast path: the buffers ``(ops, etas, reads, eta_table)`` that a
        loop may append to directly instead of calling :meth:`read`, :meth:`apply` and
        :meth:`~stalesgd.sim.model.ReplayHook.drop`, doing exactly what they do: a read
        appends ``2·worker`` to ``ops`` and ``(rows logged, now, samples fed)`` to ``reads``
        and calls :meth:`flush` when ``len(ops) >= FLUSH_OPS``; an apply with staleness τ
        appends ``2·worker + 1`` and ``eta_table[min(τ, len − 1)]`` (the table of
        ``step.eta_list`` at that update), then, while ``step._feeding``, feeds (τ, worker)
        to the online rule (``step._feed``, which may replace the table for later updates),
        and calls :meth:`eval_due` when the new version reaches :attr:`next_eval_k`; a drop
        does nothing.  ``None`` when calls must go through the methods (a subclass
        overrides one of them).
        """
        cls = type(self)
        if (cls.read is not _PLAIN_READ or cls.apply is not _PLAIN_APPLY
                or cls.drop is not ReplayHook.drop):
            return None  # (a subclass or a patch that changes read/apply gets its calls)
        return self._ops, self._etas, self._reads, self.step.eta_list

    @property
    def next_eval_k(self) -> float:
        """The version after which the next update-count evaluation is due (inf: none)."""
        return self._next_eval_k

    def eval_due(self, k: int) -> None:
        """The evaluation right after the update that made version ``k`` (see :meth:`inline`)."""
        self._eval_after_update(k)

    # ----------------------------------------------------------------- hook protocol
    def bind(self, sim: Simulation) -> None:
        """Attach to the simulation, evaluate θ0 at t = 0 and start the timed evaluations."""
        self.sim = sim
        self._evaluate(0.0, 0, sim.active, after_current=False)
        if self.every_seconds is not None:
            sim.env.process(self._eval_loop())

    def read(self, worker: int, version: int) -> None:
        """Compute ``worker``'s gradient on its next minibatch at the current θ (= θ_version)."""
        sim = self.sim
        ops = self._ops
        if sim is None:  # not bound to a simulation (used on its own)
            ops.append(worker << 1)
            self._reads.append((0, 0.0, self.step._fed))
        elif sim._rows_at_stop is not None:  # stopped
            return
        else:
            ops.append(worker << 1)
            self._reads.append((sim.log.n, sim.env._now, self.step._fed))
        if len(ops) >= FLUSH_OPS:
            self.flush()

    def apply(self, worker: int, t0: int, t1: int) -> float:
        """θ ← θ − lr·s(t1 − t0)·g_worker; returns η (NaN once the run has stopped)."""
        sim = self.sim
        if sim is not None and sim._rows_at_stop is not None:  # stopped
            return math.nan
        step = self.step
        if step._feeding:
            eta = step.eta(t1 - t0, worker)
        else:
            tau, last = t1 - t0, step.last
            eta = step.eta_list[tau if tau < last else last]
        self._ops.append((worker << 1) | 1)
        self._etas.append(eta)
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
        self.flush()
        if sim is not None and sim.stopped:
            return math.nan
        _apply_mean(self._theta, self.grads, eta / self.m)
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
        was_diverged = self.diverged
        self.flush()
        if self.diverged and not was_diverged:
            return math.nan  # a buffered read diverged before this point: no evaluation
        with np.errstate(all="ignore"):
            loss, acc = self.problem.evaluate(self._theta, self.split, self.max_rows)
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


#: the methods :meth:`NumericReplay.inline` stands in for (overrides and patches opt out)
_PLAIN_READ, _PLAIN_APPLY = NumericReplay.read, NumericReplay.apply
