"""I.i.d. staleness injection: SGD where update k uses the gradient at θ_{k−τ_k}, τ_k ~ PDF.

This is the model most convergence theory is written for (and the one whose
expected error on quadratics obeys an exact linear recursion, DESIGN §8): no
workers and no timing, just one sequential loop

    τ_k ~ pdf (i.i.d.),  t0 = max(k − τ_k, 0),  θ_{k+1} = θ_k − lr·s(τ)·∇f_{B_k}(θ_{t0})

that keeps the last τmax + 1 iterates in a ring buffer (τmax = the last τ with
positive probability).  Before update τ_k, the read falls back to θ_0, and the
recorded τ is the effective one, k − t0, so ``tau`` keeps the meaning of DESIGN §4.
On a sparse problem (:mod:`stalesgd.problems.base`'s sparse contract) it keeps θ_k and an
undo log of the coordinates the last τmax updates wrote instead, where rewinding costs less
than the ring's passes over the whole vector (:func:`_iterates`): the same bits, at a cost
proportional to what the updates touch.

Randomness: minibatches come from worker 0's stream of the simulator and the real
engine (:func:`~stalesgd.seeds.worker_seeds`), the τ draws from a separate
stream of the same seed, so with ``pdf = [1]`` (τ ≡ 0) the run is plain sequential
SGD, bit for bit the same as ``seq`` in the simulator's numeric replay.

The updates run in one compiled loop per stretch between evaluations (at most
:data:`CHUNK` updates and :data:`CHUNK_ROWS` minibatch rows; η of a stretch is looked up
before it, feeding an online rule in the same order as one update at a time would), so a
cheap gradient is not dwarfed by Python.

The record uses an *update clock*: time is the number of updates applied
(``t_read = t0``, ``t_apply = k + 1``, evaluation at version k has ``t = k``), so
``seconds`` equals ``updates`` and ``updates_per_s`` is 1; ``wall_seconds`` is the
loop's run time.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numba import njit

from stalesgd.divergence import diverged as blew_up
from stalesgd.experiment import (
    AlgorithmSpec,
    EvalSpec,
    ProblemSpec,
    RunSpec,
    SimSpec,
    StepsizeSpec,
    StopSpec,
)
from stalesgd.jitcache import specialise
from stalesgd.problems.registry import Problem
from stalesgd.records import EvalLog, RunRecord, engine_summary, update_stats
from stalesgd.seeds import worker_seeds
from stalesgd.stepsize import StepSizeRule, make_rule

from .batches import BatchStream
from .stepsizes import StepSizes
from .updates import apply_step

__all__ = ["run_iid_staleness", "TAU_STREAM_KEY"]

#: spawn key of the τ stream: ``SeedSequence(seed, spawn_key=(TAU_STREAM_KEY,))``
TAU_STREAM_KEY = 0x7A55


@njit(nogil=True)
def _step_into(dst: np.ndarray, src: np.ndarray, grad: np.ndarray, eta: float) -> None:
    """dst ← src − η g element by element (the same arithmetic as an in-place step)."""
    for j in range(dst.shape[0]):
        dst[j] = src[j] - eta * grad[j]


@njit(nogil=True)
def _iid_steps(kernel, ring, X, y, dims, ws, grad, batches, tau, etas, k0):  # noqa: ANN001
    """Updates k0, k0 + 1, … (one per row of ``batches``): the gradient at θ_{k−τ_k} from
    the ring of iterates, then θ_{k+1} = θ_k − η_k g.  Returns how many were applied (fewer
    than asked when a minibatch loss is not finite: that update is not applied)."""
    size = ring.shape[0]
    for i in range(batches.shape[0]):
        k = k0 + i
        loss = kernel(ring[(k - tau[i]) % size], X, y, batches[i], grad, ws, dims)
        if not np.isfinite(loss):
            return i
        if size == 1:
            apply_step(ring[0], grad, etas[i])
        else:
            _step_into(ring[(k + 1) % size], ring[k % size], grad, etas[i])
    return batches.shape[0]


@njit(nogil=True)
def _iid_sparse_steps(kernel, theta, view, log_idx, log_old, log_n, X, y, dims, ws, gidx,  # noqa: ANN001
                      gval, batches, tau, etas, k0):
    """What :func:`_iid_steps` does, for a sparse gradient kernel without a ring of whole
    iterates: update k's undo entries (each coordinate it wrote and the value before) stay
    in slot k mod ``log_n.size`` of the log.  ``view`` equals θ_k between updates; for the
    gradient at θ_{k−τ} the entries of updates k − 1 down to k − τ are written back into it
    (the oldest last, so each coordinate gets its value at version k − τ), then θ_k's values
    again.  Returns how many updates were applied."""
    slots = log_n.shape[0]
    for i in range(batches.shape[0]):
        k = k0 + i
        t0 = k - tau[i]
        for s in range(k - 1, t0 - 1, -1):
            q = s % slots
            for p in range(log_n[q]):
                view[log_idx[q, p]] = log_old[q, p]
        loss, nnz = kernel(view, X, y, batches[i], gidx, gval, ws, dims)
        for s in range(t0, k):
            q = s % slots
            for p in range(log_n[q]):
                j = log_idx[q, p]
                view[j] = theta[j]
        if not np.isfinite(loss):
            return i
        q = k % slots
        eta = etas[i]
        for p in range(nnz):
            j = gidx[p]
            old = theta[j]
            log_idx[q, p] = j
            log_old[q, p] = old
            new = old - eta * gval[p]
            theta[j] = new
            view[j] = new
        log_n[q] = nnz
    return batches.shape[0]


class _RingOfIterates:
    """θ_{k−τmax} … θ_k kept whole, for any gradient kernel."""

    def __init__(self, problem: Problem, theta: np.ndarray, tau_max: int, batch: int) -> None:
        self.ring = np.empty((tau_max + 1, theta.size), dtype=theta.dtype)
        self.ring[0] = theta
        self.grad = np.zeros(theta.size, dtype=theta.dtype)
        self.ws = problem.workspace(batch)
        self.steps = specialise(_iid_steps, problem.model.grad_kernel)
        self.nbytes = self.ring.nbytes + self.grad.nbytes

    def theta(self, k: int) -> np.ndarray:
        """θ_k (k the number of updates applied so far)."""
        return self.ring[k % self.ring.shape[0]]

    def advance(self, X: Any, y: np.ndarray, dims: np.ndarray, batches: np.ndarray,
                tau: np.ndarray, etas: np.ndarray, k0: int) -> int:
        """Updates k0, k0 + 1, …; how many were applied (see :func:`_iid_steps`)."""
        return self.steps(self.ring, X, y, dims, self.ws, self.grad, batches, tau, etas, k0)


class _UndoLog:
    """θ_k and the coordinates the last τmax updates wrote, with their values before, for a
    sparse gradient kernel (:func:`_iid_sparse_steps`): an update costs what it touches
    times its τ instead of the whole vector, and gives the same bits as the ring."""

    def __init__(self, problem: Problem, theta: np.ndarray, tau_max: int, batch: int) -> None:
        model = problem.model
        capacity = model.sparse_capacity(batch)
        slots = max(tau_max, 1)
        self.current = theta.copy()
        self.view = theta.copy()
        self.log_idx = np.zeros((slots, capacity), np.int64)
        self.log_old = np.zeros((slots, capacity), theta.dtype)
        self.log_n = np.zeros(slots, np.int64)
        self.gidx = np.zeros(capacity, np.int64)
        self.gval = np.zeros(capacity, theta.dtype)
        self.ws = problem.workspace(batch)
        self.steps = specialise(_iid_sparse_steps, model.sparse_grad_kernel)
        self.nbytes = sum(a.nbytes for a in (self.current, self.view, self.log_idx,
                                             self.log_old, self.gidx, self.gval))

    def theta(self, k: int) -> np.ndarray:  # noqa: ARG002 (θ_k is the current vector)
        """θ_k (k the number of updates applied so far)."""
        return self.current

    def advance(self, X: Any, y: np.ndarray, dims: np.ndarray, batches: np.ndarray,
                tau: np.ndarray, etas: np.ndarray, k0: int) -> int:
        """Updates k0, k0 + 1, …; how many were applied (see :func:`_iid_sparse_steps`)."""
        return self.steps(self.current, self.view, self.log_idx, self.log_old, self.log_n, X,
                          y, dims, self.ws, self.gidx, self.gval, batches, tau, etas, k0)


def _iterates(problem: Problem, theta: np.ndarray, pdf: np.ndarray, batch: int
              ) -> _RingOfIterates | _UndoLog:
    """The undo log for a sparse problem when rewinding E[τ] updates of a minibatch's
    capacity, there and back, touches fewer coordinates than the ring's two passes over the
    whole vector; else the ring.  Measured on the set of ``bench/sparse_hogwild.py``
    (20,001 parameters; both give the same bits): batch 1, τ uniform on 0…16 ring 99 k,
    log 1,091 k updates/s; on 0…512 ring 30–36 k, log 48–49 k; batch 16 on 0…16 ring 65 k,
    log 73 k; on 0…32 ring 59 k, log 42 k (the rule picks the ring there)."""
    tau_max = pdf.size - 1
    if problem.sparse:
        mean_tau = float(np.dot(np.arange(pdf.size), pdf))
        if (1.0 + mean_tau) * problem.model.sparse_capacity(batch) <= theta.size / 2:
            return _UndoLog(problem, theta, tau_max, batch)
    return _RingOfIterates(problem, theta, tau_max, batch)


#: updates per compiled call at most, and minibatch rows (the minibatches of a call are
#: drawn at once, so large batches make shorter calls: memory stays bounded)
CHUNK = 4096
CHUNK_ROWS = 1 << 16


def _check_pdf(pdf: np.ndarray | Sequence[float]) -> np.ndarray:
    p = np.asarray(pdf, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError("pdf must be a non-empty 1-D array indexed by τ (pdf[t] = P[τ = t])")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or not p.sum() > 0:
        raise ValueError("pdf must hold finite values >= 0 with a positive sum")
    if abs(p.sum() - 1.0) > 1e-9:
        raise ValueError(f"pdf must sum to 1 (got {p.sum():.12g}); normalise it first")
    last = int(np.flatnonzero(p)[-1])
    return p[: last + 1] / p[: last + 1].sum()


def _step_sizes(stepsize: str | StepSizeRule | np.ndarray | Sequence[float], lr: float,
                workers: int, tau_max: int, options: Mapping[str, Any] | None) -> StepSizes:
    if isinstance(stepsize, str):
        rule = make_rule(stepsize, workers=workers, lr=lr, **dict(options or {}))
        return StepSizes(rule, tau_max, lr)
    if options:
        raise ValueError("stepsize_options only apply when stepsize is a rule name")
    if isinstance(stepsize, StepSizeRule):
        return StepSizes(stepsize, tau_max, lr)
    return StepSizes.from_table(np.asarray(stepsize, dtype=np.float64), lr)


def run_iid_staleness(
    problem: Problem,
    pdf: np.ndarray | Sequence[float],
    *,
    updates: int,
    lr: float,
    stepsize: str | StepSizeRule | np.ndarray | Sequence[float] = "constant",
    stepsize_options: Mapping[str, Any] | None = None,
    workers: int = 1,
    batch: int = 16,
    seed: int = 0,
    eval_every: int | None = None,
    split: str = "test",
    max_rows: int | None = 2000,
    theta0: np.ndarray | None = None,
    run_id: str = "iid",
    final_params: np.ndarray | None = None,
    sampling: str = "replacement",
) -> RunRecord:
    """Run ``updates`` SGD steps on ``problem`` with staleness drawn i.i.d. from ``pdf``.

    ``pdf[t]`` is P[τ = t] (it must sum to 1).  The step size is η(τ) = lr·s(τ) with
    ``stepsize`` a rule name (options in ``stepsize_options``; ``workers`` is the m the
    rule sees, e.g. for ``exponential``; an online rule such as ``tail`` learns its table
    from the drawn τ), a :class:`~stalesgd.stepsize.StepSizeRule`, or a table s[0..] directly.
    ``eval_every`` (default ``updates // 50``) sets how often the loss on ``split`` is
    evaluated (also at k = 0 and at the end).  ``theta0`` defaults to
    ``problem.init_params(seed)``; ``final_params``, if given, receives the last iterate;
    ``sampling`` is how minibatches are drawn (``replacement``, ``epochs``).
    A non-finite minibatch loss, or an evaluated loss that diverged by the rule of
    :func:`stalesgd.divergence.diverged`, stops the run and marks it diverged.
    Returns a :class:`~stalesgd.records.RunRecord` with ``engine = "iid"`` on the update
    clock (see the module docstring).
    """
    if isinstance(updates, bool) or not isinstance(updates, int | np.integer) or updates < 1:
        raise ValueError(f"updates {updates!r} must be an integer >= 1")
    if isinstance(batch, bool) or not isinstance(batch, int | np.integer) or batch < 1:
        raise ValueError(f"batch {batch!r} must be an integer >= 1")
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr {lr!r} must be a finite number > 0")
    if eval_every is None:
        eval_every = max(1, int(updates) // 50)
    if isinstance(eval_every, bool) or not isinstance(eval_every, int | np.integer) \
            or eval_every < 1:
        raise ValueError(f"eval_every {eval_every!r} must be an integer >= 1")
    if split not in ("train", "test"):
        raise ValueError(f"split {split!r} is not allowed; use 'train' or 'test'")
    p = _check_pdf(pdf)
    tau_max = p.size - 1
    n = int(updates)
    step = _step_sizes(stepsize, float(lr), int(workers), tau_max, stepsize_options)

    model, data = problem.model, problem.dataset
    seed0 = worker_seeds(seed, 1)[0]
    stream = BatchStream(seed0, data.n_train, batch, sampling)
    tau_rng = np.random.Generator(np.random.PCG64(
        np.random.SeedSequence(int(seed), spawn_key=(TAU_STREAM_KEY,))))
    drawn = tau_rng.choice(p.size, size=n, p=p) if p.size > 1 else np.zeros(n, np.int64)
    ks = np.arange(n, dtype=np.int64)
    tau = np.minimum(drawn.astype(np.int64), ks)  # no read before θ_0

    theta = problem.init_params(seed) if theta0 is None else np.array(theta0, copy=True)
    if theta.shape != (model.n_params,) or theta.dtype != model.dtype:
        raise ValueError(f"theta0 must be a ({model.n_params},) {model.dtype} array; "
                         f"got {theta.shape} {theta.dtype}")
    if final_params is not None and (final_params.shape != theta.shape
                                     or final_params.dtype != theta.dtype):
        raise ValueError(f"final_params must be a {theta.shape} {theta.dtype} array; "
                         f"got {final_params.shape} {final_params.dtype}")
    iterates = _iterates(problem, theta, p, int(batch))
    X, y, dims = data.inputs("train"), data.y_train, model.dims
    eta = np.full(n, math.nan)
    evals = EvalLog()

    def evaluate(k: int) -> bool:
        """Evaluate θ_k; whether the run diverged."""
        with np.errstate(all="ignore"):
            loss, acc = problem.evaluate(iterates.theta(k), split, max_rows)
        first = evals.loss[0] if evals.loss else None
        evals.add(float(k), k, loss, acc, 1)
        return blew_up(loss, first)

    chunk = max(1, min(CHUNK, CHUNK_ROWS // int(batch)))
    no_worker = np.zeros(min(n, chunk), np.int64)
    diverged = evaluate(0)
    done = 0
    t_wall = time.perf_counter()
    while done < n and not diverged:
        # up to the next evaluation, in chunks: η of the chunk in order (an online rule
        # fed as it goes), then its updates in one compiled call
        stop = min(n, (done // eval_every + 1) * eval_every, done + chunk)
        fed = step.fed
        eta[done:stop] = step.etas(tau[done:stop], no_worker[: stop - done])
        applied = iterates.advance(X, y, dims, stream.take(stop - done), tau[done:stop],
                                   eta[done:stop], done)
        if done + applied < stop:  # a non-finite minibatch loss: the rule saw only up to it
            step.cut(min(step.fed, fed + applied))
            eta[done + applied:stop] = math.nan
            done += applied
            diverged = True
            break
        done = stop
        if done % eval_every == 0 and evaluate(done):
            diverged = True
    wall = time.perf_counter() - t_wall
    if final_params is not None:
        final_params[:] = iterates.theta(done)
    if not evals.k or evals.k[-1] != done:
        diverged = evaluate(done) or diverged

    updates_cols = {
        "k": ks[:done].copy(),
        "worker": np.zeros(done, dtype=np.int32),
        "t_read": (ks[:done] - tau[:done]).astype(np.float64),
        "t_apply": (ks[:done] + 1).astype(np.float64),
        "tau": tau[:done].copy(),
        "eta": eta[:done],
        "attempts": np.ones(done, dtype=np.int32),
        "dropped": np.zeros(done, dtype=bool),
    }
    rule_name = stepsize if isinstance(stepsize, str) else (
        stepsize.name if isinstance(stepsize, StepSizeRule) else "table")
    spec = RunSpec(
        experiment="iid", run_id=run_id, index=0, engine="iid", workers=int(workers),
        seed=int(seed),
        problem=ProblemSpec(name=problem.name, batch=int(batch), dtype=str(model.dtype),
                            sampling=sampling),
        algorithm=AlgorithmSpec(name="iid"), stepsize=StepsizeSpec(rule=rule_name, lr=float(lr)),
        stop=StopSpec(updates=n), eval=EvalSpec(every_updates=int(eval_every), split=split),
        sim=SimSpec())
    ev = evals.arrays()
    summary = engine_summary(
        "iid", spec, ev, update_stats(updates_cols), float(done), diverged, False,
        peak_param_bytes=int(iterates.nbytes), peak_rss_bytes=None,
        stop_reason="diverged" if diverged else "updates", clock="updates",
        worker_seeds=str(seed0), pdf=json.dumps([float(v) for v in p]), tau_max=tau_max,
        stepsize_tables=step.n_tables, wall_seconds=wall)
    return RunRecord(summary=summary, updates=updates_cols, evals=ev)
