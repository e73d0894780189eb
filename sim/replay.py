"""Numeric replay: the real gradient kernels evaluated at the θ each simulated read saw.

:class:`NumericReplay` is the :class:`~stalesgd.sim.simulation.ReplayHook` of the
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
  seconds (a timer on the simulated clock), and once at the end; the loss is taken on
  the current θ, which is consistent by construction.  A target loss can stop the run;
  a non-finite minibatch loss, or an evaluated loss that is not finite or has grown
  10⁴-fold (:func:`stalesgd.divergence.diverged`), marks it diverged and stops it.

Batched execution (speed, same arithmetic): ``read`` and ``apply`` only *record* the
operation (worker, η); the recorded sequence runs in one compiled loop
(minibatch draws included) whenever θ is needed — before every evaluation, when
:attr:`NumericReplay.theta` is read (elastic controllers), every :data:`FLUSH_OPS`
operations, before update rows leave the simulation and at the end of the run.  The
order of reads and applies is the one of the simulation, so θ and every gradient are
bit for bit those of running each operation at once.  A read that gives a non-finite
loss stops the run retroactively at that read (its row count and simulated time,
:meth:`~stalesgd.sim.model.Simulation.stop_retroactively`).  Tables an online step-size
rule produced after that read are not counted (:meth:`StepSizes.cut`).  The simulator's
compiled loop records into the same :class:`OpBuffer` itself (:meth:`NumericReplay.inline`).
With ``threads`` > 1 the recorded sequence runs on several cores
(:class:`~stalesgd.sim.pipeline.ReplayPipeline`: the gradients of the reads in flight in
parallel, each on a copy of the θ its read saw, the applies in order), with the same results
bit for bit; :func:`~stalesgd.sim.pipeline.replay_threads` chooses the count.  On a sparse
problem the gradients are the model's sparse ones, applied where they write
(:mod:`~stalesgd.sim.updates`), on one core, while their buffers (memory m·capacity) are
smaller than dense ones (m·d).

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
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from stalesgd.divergence import diverged
from stalesgd.jitcache import specialise
from stalesgd.memory import line_copy
from stalesgd.problems.registry import Problem
from stalesgd.records import EvalLog
from stalesgd.seeds import worker_seeds

from .batches import BatchStream, mt_draw
from .buffers import O_CODE, O_COUNT, O_ETA, O_READ_FED, O_READ_ROWS, O_READ_T
from .collisions import ReplayCollisions, tally_apply, tally_read
from .pipeline import (
    LoopChoice,
    ReplayPipeline,
    gradient_seconds,
    max_replay_threads,
    replay_threads,
    threads_allowed,
    threads_from_env,
)
from .simulation import ReplayHook
from .stepsizes import StepSizes
from .updates import (
    apply_gradient,
    apply_mean_gradient,
    compute_gradient,
    sparse_store,
    store_workers,
)

if TYPE_CHECKING:
    from .simulation import Simulation

__all__ = ["FLUSH_OPS", "NumericReplay", "OpBuffer"]

#: reads and applies buffered by :class:`NumericReplay` before one compiled replay call
FLUSH_OPS = 4096


@njit(nogil=True)
def _replay_ops(kernel, theta, X, y, dims, ws, store, ops, etas, idx,  # noqa: ANN001
                mt_key, mt_pos, n_rows, mask, scratch, tally):
    """Run a recorded sequence of reads and applies in one compiled loop.

    ``ops[i] = 2·worker + is_apply``; a read computes the worker's gradient at the current
    θ on its next minibatch into ``store`` (dense rows or a sparse store:
    :mod:`~stalesgd.sim.updates`), an apply does θ ← θ − η g with η = ``etas[i]``; ``2·workers
    + 1`` applies the mean of every worker's gradient.  Minibatches are drawn here from the
    workers' Mersenne Twister states ``mt_key``/``mt_pos`` when ``mask > 0`` (into
    ``scratch``), else taken from the rows of ``idx`` in read order.  Returns the index of
    the first read with a non-finite loss (the ops after it are not run), or −1.  ``tally``:
    the collision count of a sparse store (:class:`~stalesgd.sim.collisions.ReplayCollisions`'
    arrays), or None.
    """
    r = 0
    m = store_workers(store)
    for i in range(ops.shape[0]):
        op = ops[i]
        w = op >> 1
        if op & 1:
            if w == m:
                apply_mean_gradient(theta, store, etas[i])
            else:
                apply_gradient(theta, store, w, etas[i])
                tally_apply(tally, store, w)
        else:
            tally_read(tally, w)
            if mask > 0:
                mt_draw(mt_key, mt_pos, w, n_rows, mask, scratch)
                loss = compute_gradient(kernel, theta, X, y, scratch, store, w, ws, dims)
            else:
                loss = compute_gradient(kernel, theta, X, y, idx[r], store, w, ws, dims)
            r += 1
            if not np.isfinite(loss):
                return i
    return -1


class OpBuffer:
    """Numeric replay's reads and applies not yet run, in the order the simulation made them.

    Per op: its code (``2·worker`` a read, ``2·worker + 1`` an apply, ``2·workers + 1`` the
    mean apply of a ``sync`` round) and an apply's η; per read: the rows logged before it,
    the simulated time and the samples an online rule had been fed (where to stop the run
    if that read diverged).  The compiled loop writes the same arrays (:attr:`arrays`); the
    buffer is run once :attr:`flush_at` ops are in it, so it stays small.
    """

    def __init__(self, workers: int, flush_at: int) -> None:
        self.flush_at = int(flush_at)
        size = self.flush_at + int(workers) + 2  # (at most one apply per worker between reads)
        self.ints = np.zeros((O_COUNT + 1, size), np.int64)
        self.floats = np.zeros((O_READ_T + 1, size))
        #: [ops, reads] in the buffer (shared with the compiled loop)
        self.count = self.ints[O_COUNT]
        self.arrays = (self.ints, self.floats)

    @property
    def n_ops(self) -> int:
        """Ops in the buffer."""
        return int(self.count[0])

    @property
    def full(self) -> bool:
        """Whether the buffer must be run before another op is added."""
        return int(self.count[0]) >= self.ints.shape[1]

    def read(self, worker: int, rows: int, t: float, fed: int) -> bool:
        """Record a read; True when the buffer should be run now."""
        i, r = int(self.count[0]), int(self.count[1])
        self.ints[O_CODE, i] = worker << 1
        self.ints[O_READ_ROWS, r] = rows
        self.ints[O_READ_FED, r] = fed
        self.floats[O_READ_T, r] = t
        self.count[:2] = (i + 1, r + 1)
        return i + 1 >= self.flush_at

    def apply(self, code: int, eta: float) -> None:
        """Record an apply (``code``: ``2·worker + 1``, or ``2·workers + 1`` for the mean)."""
        i = int(self.count[0])
        self.ints[O_CODE, i] = code
        self.floats[O_ETA, i] = eta
        self.count[0] = i + 1

    def take(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Empty the buffer: (codes, η, and per read rows, time, samples fed), as copies."""
        n, r = int(self.count[0]), int(self.count[1])
        out = (self.ints[O_CODE, :n].copy(), self.floats[O_ETA, :n].copy(),
               self.ints[O_READ_ROWS, :r].copy(), self.floats[O_READ_T, :r].copy(),
               self.ints[O_READ_FED, :r].copy())
        self.count[:2] = 0
        return out


class NumericReplay(ReplayHook):
    """Replays a simulated run numerically on ``problem`` (see the module docstring).

    ``theta0`` defaults to ``problem.init_params(seed)`` (as the real engine);
    ``step`` gives η(τ); exactly one of ``every_updates``/``every_seconds`` may be set
    (neither: evaluations only at the start and the end).  ``target_loss`` with
    ``at_target`` stops the run at the first evaluation at or below it.  ``threads``: how
    many threads run the batched replay (1: one core; None: the automatic choice of
    :func:`~stalesgd.sim.pipeline.replay_threads`, which the ``STALESGD_REPLAY_THREADS``
    environment variable overrides; when the choice is automatic, each batch then runs on
    the faster of the pipeline and one core, :class:`~stalesgd.sim.pipeline.LoopChoice`);
    results are the same bits for any count (a sparse problem always replays on one core).
    ``sampling``: how the workers draw their minibatches (:mod:`stalesgd.real.sampling`), as
    the real engine's workers.  ``count_collisions``: count the collision rate of a sparse
    problem's updates as they are applied (:attr:`collisions`; asynchronous algorithms only:
    a ``sync`` round's mean is not counted).  After the
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
        threads: int | None = None,
        sampling: str = "replacement",
        count_collisions: bool = False,
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
        #: sparse gradients (only the coordinates an update touches) for sparse problems,
        #: unless a worker's sparse gradient buffers (indices and values for every stored
        #: entry of a minibatch) would outgrow a dense gradient: large batches keep dense ones
        itemsize = np.dtype(model.dtype).itemsize
        capacity = model.sparse_capacity(batch) if problem.sparse else 0
        self.sparse = problem.sparse and capacity * (8 + itemsize) <= model.n_params * itemsize
        self.kernel = model.sparse_grad_kernel if self.sparse else model.grad_kernel
        self.X, self.y, self.dims = data.inputs("train"), data.y_train, model.dims
        self.n_train = int(data.n_train)
        self.seeds = worker_seeds(seed, self.m)
        # the workers' minibatch streams; when the compiled replay draws the indices itself
        # (a ``mask`` > 0, every usual dataset size) only their initial states are used
        self.streams = [BatchStream(s, data.n_train, batch, sampling) for s in self.seeds]
        theta = problem.init_params(seed) if theta0 is None else np.array(theta0, copy=True)
        if theta.shape != (model.n_params,) or theta.dtype != model.dtype:
            raise ValueError(f"theta0 must be a ({model.n_params},) {model.dtype} array; "
                             f"got {theta.shape} {theta.dtype}")
        self._theta = theta
        #: the workers' gradients in flight (:mod:`~stalesgd.sim.updates`)
        self.store = (sparse_store(self.m, capacity, model.dtype) if self.sparse else
                      np.zeros((self.m, model.n_params), dtype=model.dtype))
        #: the collision rate counted as the sparse gradients are applied (None: not counted,
        #: or dense gradients: the simulation then counts from its rows)
        self.collisions = (ReplayCollisions(model.n_params, self.m)
                           if count_collisions and self.sparse else None)
        self._tally = None if self.collisions is None else self.collisions.arrays
        self.ws = problem.workspace(batch)
        self.batch = int(batch)
        #: the reads and applies not yet run
        self.ops = OpBuffer(self.m, FLUSH_OPS)
        # minibatch draws inside the compiled replay: the workers' legacy MT19937 states
        # (the streams' RandomState), used when randint's masked 32-bit path applies
        self._mask = self.streams[0].mask
        self._mt_key = np.zeros((self.m, 624), dtype=np.uint32)
        self._mt_pos = np.zeros(self.m, dtype=np.int64)
        if self._mask:
            for w, stream in enumerate(self.streams):
                self._mt_key[w], self._mt_pos[w] = stream.mt_state()
        self._scratch = np.zeros(self.batch, dtype=np.int64)
        self._no_idx = np.zeros((0, self.batch), dtype=np.int64)
        self._gradient_s: float | None = None
        # the one-core loop bound to the kernel: kept in the on-disk cache for the built-in
        # models (compiled only when used)
        self._replay_ops = specialise(_replay_ops, self.kernel)
        #: threads the batched replay may run on (1: the one-core loop; see ``pipeline.py``)
        self.threads = self._threads(threads)
        self._pipeline = None if self.threads == 1 else ReplayPipeline(
            self.threads, self.kernel, self._theta, self.X, self.y, self.dims, self.ws,
            self.store, self.batch, self._mt_key, self._mt_pos, self.n_train, self._mask)
        #: with the automatic thread count, which loop runs each batch (the pipeline or the
        #: one-core loop, whichever is faster at the moment); None: always the one set
        automatic = threads is None and threads_from_env() is None
        self.loop_choice = LoopChoice(self._gradient_seconds()) \
            if self._pipeline is not None and automatic else None
        if self.loop_choice is not None:
            self.ops.flush_at = LoopChoice.TRIAL_OPS  # (the first batch is a trial)
        # compile the batched replay for these argument types now, not on the clock (the
        # pipeline compiled its own loops)
        if self._pipeline is None or self.loop_choice is not None:
            self._one_core(np.zeros(0, np.int64), np.zeros(0), self._no_idx)
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

    def _threads(self, threads: int | None) -> int:
        """``threads`` checked, or the automatic choice (:func:`replay_threads`).  A sparse
        problem replays on one core whatever the count (the pipeline hands whole θ copies
        between cores, far longer than a sparse update; the results are the same bits)."""
        if threads is None:
            return 1 if self.sparse else replay_threads(self.m, self._gradient_seconds)
        if isinstance(threads, bool) or not isinstance(threads, int | np.integer) or \
                not 1 <= threads <= max_replay_threads():
            raise ValueError(f"threads {threads!r} is not allowed; use {threads_allowed()} "
                             "or None (automatic)")
        return 1 if self.sparse else int(threads)

    def _gradient_seconds(self) -> float:
        """One gradient's time at θ0 (:func:`~stalesgd.sim.pipeline.gradient_seconds`),
        measured once, on copies: the run's arrays are not touched."""
        if self._gradient_s is None:
            self._gradient_s = gradient_seconds(
                self.kernel, self._theta.copy(), self.X, self.y, self.dims, line_copy(self.ws),
                self.batch, self.n_train)
        return self._gradient_s

    def _run_ops(self, ops: np.ndarray, etas: np.ndarray, idx: np.ndarray) -> int:
        """Run a batch: on the one-core loop, the pipeline, or the one :attr:`loop_choice`
        picks (then timed)."""
        choice = self.loop_choice
        if choice is None:
            if self._pipeline is None:
                return self._one_core(ops, etas, idx)
            return self._pipeline.run(ops, etas, idx)
        pipeline = choice.use_pipeline()
        t0 = time.perf_counter()
        bad = self._pipeline.run(ops, etas, idx) if pipeline else self._one_core(ops, etas, idx)
        choice.record(pipeline, time.perf_counter() - t0, int(np.count_nonzero((ops & 1) == 0)))
        self.ops.flush_at = LoopChoice.TRIAL_OPS if choice.next_is_trial() else FLUSH_OPS
        return bad

    def _one_core(self, ops: np.ndarray, etas: np.ndarray, idx: np.ndarray) -> int:
        return self._replay_ops(self._theta, self.X, self.y, self.dims, self.ws, self.store,
                                ops, etas, idx, self._mt_key, self._mt_pos, self.n_train,
                                self._mask, self._scratch, self._tally)

    def flush(self) -> None:
        """Run the buffered reads and applies (one compiled call).

        Reads and applies are recorded as the simulation makes them and evaluated in
        batches, in the same order, which gives the same θ as evaluating each at once.  If
        a read's loss is not finite the run is marked diverged and stopped where that read
        happened (its row count and simulated time); later ops are discarded.
        """
        if not self.ops.n_ops:
            return
        ops, etas, read_rows, read_t, read_fed = self.ops.take()
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
            self.step.cut(int(read_fed[j]))  # an online rule was fed only up to this read
            if self.sim is not None:
                self.sim.stop_retroactively(int(read_rows[j]), float(read_t[j]))

    def inline(self) -> NumericReplay | None:
        """For the simulator's compiled loop: this replay, whose :attr:`ops` the loop fills
        itself, doing exactly what :meth:`read`, :meth:`apply`, :meth:`apply_mean` and
        :meth:`~stalesgd.sim.simulation.ReplayHook.drop` do (η from ``step.eta_list``,
        ``step.feed`` while ``step.feeding``, :meth:`eval_due` when a version reaches
        :attr:`next_eval_k`).  None when a subclass changes one of those methods: its calls
        are then made, on the SimPy processes."""
        cls = type(self)
        plain = (cls.read, cls.apply, cls.apply_mean, cls.drop) == _PLAIN
        return self if plain else None

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
            sim.call_after(self.every_seconds, self._timed_evaluation)

    def read(self, worker: int, version: int) -> None:
        """Compute ``worker``'s gradient on its next minibatch at the current θ (= θ_version)."""
        sim = self.sim
        if sim is None:  # not bound to a simulation (used on its own)
            rows, t = 0, 0.0
        elif sim.stopped:
            return
        else:
            rows, t = sim.rows_logged, sim.now
        if self.ops.read(worker, rows, t, self.step.fed):
            self.flush()

    def apply(self, worker: int, t0: int, t1: int) -> float:
        """θ ← θ − lr·s(t1 − t0)·g_worker; returns η (NaN once the run has stopped)."""
        sim = self.sim
        if sim is not None and sim.stopped:
            return math.nan
        eta = self.step.eta(t1 - t0, worker)
        if self.ops.full:
            self.flush()
        self.ops.apply((worker << 1) | 1, eta)
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
        if self.ops.full:
            self.flush()
        self.ops.apply((self.m << 1) | 1, eta)
        if version + 1 >= self._next_eval_k:
            self._eval_after_update(version + 1)
        return eta

    # ----------------------------------------------------------------- evaluations
    def _eval_after_update(self, k: int) -> None:
        every = self.every_updates
        while self._next_eval_k <= k:
            self._next_eval_k += every
        sim = self.sim
        self._evaluate(sim.now, k, sim.active, after_current=True)

    def _timed_evaluation(self) -> None:
        sim = self.sim
        if sim.stopped or sim.active == 0:
            return
        self._evaluate(sim.now, sim.v, sim.active, after_current=False)
        sim.call_after(self.every_seconds, self._timed_evaluation)

    def _evaluate(self, t: float, k: int, active: int, *, after_current: bool) -> float:
        was_diverged = self.diverged
        self.flush()
        if self.diverged and not was_diverged:
            return math.nan  # a buffered read diverged before this point: no evaluation
        with np.errstate(all="ignore"):
            loss, acc = self.problem.evaluate(self._theta, self.split, self.max_rows)
        first = self.evals.loss[0] if self.evals.loss else None
        self.evals.add(t, k, loss, acc, active)
        if diverged(loss, first):
            self.diverged = True
            self.stop_reason = self.stop_reason or "diverged"
            if self.sim is not None:
                self.sim.stop(after_current=after_current)
        elif self.target_loss is not None and self.at_target and loss <= self.target_loss:
            self.stop_reason = self.stop_reason or "target"
            if self.sim is not None:
                self.sim.stop(after_current=after_current)
        return loss

    def finish(self, t: float, k: int, interrupted: bool) -> None:
        """The closing evaluation at the end of the run, also of an interrupted one (its final
        loss is then that of the θ it reached; a second Ctrl-C skips it), unless the last
        evaluation already saw version ``k``."""
        if self.evals.k and self.evals.k[-1] == k:
            return
        active = self.sim.active if self.sim is not None else self.m
        try:
            self._evaluate(t, k, active, after_current=False)
        except KeyboardInterrupt:
            if not interrupted:
                raise


#: the methods :meth:`NumericReplay.inline` stands in for (overrides and patches opt out)
_PLAIN = (NumericReplay.read, NumericReplay.apply, NumericReplay.apply_mean, ReplayHook.drop)
