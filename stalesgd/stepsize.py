"""Staleness-adaptive step-size rules, their online PDF(τ) estimator, and the ASAP.SGD checker.

Every rule is η(τ) = η0 · s(τ).  Engines never evaluate a formula per step:
a rule is materialised as a float64 table ``s[0..tau_max]`` (τ beyond
``tau_max`` uses the last entry) and kernels look it up with :func:`eta_of`,
a clamped index that is safe inside ``@njit(nogil=True)`` loops.  Rules that
learn PDF(τ) while a run goes on (``tail``, ``tail-original``, ``model``)
hand out a :class:`TauEstimator`; the engine's monitor feeds it the τ samples
the workers logged and receives a new table (same length, so it can be copied
into the table the workers read) whenever the estimate changes.

Rules (DESIGN §5), built by name with :func:`make_rule`:

==================  ==========================================================
``constant``        s = 1
``inverse``         s = 1/(τ+1)
``exponential``     s = exp(−βτ), β = (2/τthr)·ln(1 + τthr/2), τthr = m + 1
``tail``            s = 1 + A·(P[T>τ] − P[T<τ]) from the run's PDF(τ)
``tail-original``   s = 1 + A·(1 − 2·P[T<τ]), the released C++ form
``model``           the ``tail`` rule applied to a fitted Poisson/CMP law
``delay-adaptive``  s = min(1, m/τ), s(0) = 1
==================  ==========================================================

:func:`check_conditions` reports, for any table and any PDF, the ASAP.SGD
conditions: s ≥ 0, bounded, non-increasing and E_τ[s(τ)] = 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numba
import numpy as np

from stalesgd import staleness
from stalesgd.jitcache import cached

__all__ = [
    "RULES",
    "ConditionReport",
    "StepSizeRule",
    "TauEstimator",
    "check_conditions",
    "default_tau_max",
    "eta_of",
    "make_rule",
    "rule_names",
    "rule_options",
    "tail_original_table",
    "tail_table",
]


# ----------------------------------------------------------------------------
# Lookup inside kernels
# ----------------------------------------------------------------------------


def default_tau_max(workers: int) -> int:
    """Length − 1 of the step-size table every engine indexes for an m-worker run: generous
    enough for the staleness such a run shows (τ beyond it uses the last entry)."""
    return max(64, 16 * int(workers))



@numba.njit(nogil=True)
def eta_of(table: np.ndarray, tau: int) -> float:
    """Clamped table lookup: ``table[min(tau, len(table) − 1)]`` (τ < 0 reads entry 0).

    Pure and allocation-free, callable from ``@njit(nogil=True)`` worker
    loops.  Pass ``lr * s`` to get η directly, or ``s`` and multiply by η0.
    τ < 0 cannot arise (τ = t1 − t0 ≥ 0); it is clamped rather than allowed to
    wrap around to the end of the table.
    """
    n = table.shape[0]
    if tau >= n:
        return table[n - 1]
    if tau < 0:
        return table[0]
    return table[tau]


# ----------------------------------------------------------------------------
# Pure table builders
# ----------------------------------------------------------------------------


def _as_weights(pdf: np.ndarray | Sequence[float], name: str = "pdf") -> np.ndarray:
    p = np.asarray(pdf, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array indexed by τ")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError(f"{name} must hold finite non-negative values")
    if not p.sum() > 0:
        raise ValueError(f"{name} sums to zero; need at least one observation")
    return p


def _check_tau_max(tau_max: int) -> int:
    if isinstance(tau_max, bool) or int(tau_max) != tau_max or tau_max < 0:
        raise ValueError(f"tau_max must be a non-negative integer, got {tau_max!r}")
    return int(tau_max)


def tail_table(pdf: np.ndarray | Sequence[float], tau_max: int, A: float = 1.0) -> np.ndarray:
    """TAIL-τ table s[τ] = 1 + A·(P[T>τ] − P[T<τ]) for τ = 0..tau_max.

    ``pdf`` is a PDF or a histogram (normalised here).  Mass above
    ``tau_max`` is lumped into the last bin, which is exactly what the clamped
    lookup does with such τ, so E[s(τ)] = 1 holds under the given law
    whatever ``tau_max`` is.  Non-increasing by construction: s[τ+1] − s[τ] =
    −A·(p[τ] + p[τ+1]), and the cumulative sums below keep that in floating
    point too.
    """
    tau_max = _check_tau_max(tau_max)
    w = _as_weights(pdf)
    p = np.zeros(tau_max + 1)
    head = min(w.size, tau_max + 1)
    p[:head] = w[:head]
    p[-1] += w[head:].sum()
    p /= w.sum()
    below = np.concatenate(([0.0], np.cumsum(p)[:-1]))  # P[T < τ]
    above = np.concatenate((np.cumsum(p[::-1])[::-1][1:], [0.0]))  # P[T > τ]
    s = 1.0 + A * (above - below)
    # For A ≤ 1, s ≥ 0 in exact arithmetic; clip the −1e-16 that rounding can leave
    # (monotone, so s stays non-increasing).
    return np.maximum(s, 0.0) if A <= 1.0 else s


def tail_original_table(
    pdf: np.ndarray | Sequence[float],
    tau_max: int,
    A: float = 1.0,
    normaliser: float | None = None,
) -> np.ndarray:
    """Released C++ TAIL table s[τ] = 1 + A·(1 − 2·P[T<τ]) for τ = 0..tau_max.

    P[T<τ] = Σ_{t<τ} counts[t] / ``normaliser``; by default the normaliser is
    the total of ``pdf`` (a proper PDF), in which case E[s] = 1 + A·Σp².  The
    C++ code divided by the nominal window size instead (see
    :class:`TailOriginalRule`).
    """
    tau_max = _check_tau_max(tau_max)
    w = _as_weights(pdf)
    total = float(w.sum()) if normaliser is None else float(normaliser)
    if not total > 0:
        raise ValueError(f"normaliser must be positive, got {normaliser!r}")
    c = np.zeros(tau_max + 1)
    head = min(w.size, tau_max + 1)
    c[:head] = w[:head]
    below = np.concatenate(([0.0], np.cumsum(c)[:-1])) / total
    return 1.0 + A * (1.0 - 2.0 * below)


# ----------------------------------------------------------------------------
# The ASAP.SGD checker
# ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConditionReport:
    """The ASAP.SGD conditions of a table under a PDF, with the numbers behind them.

    ``mean`` is E_τ[s(τ)] under the PDF with clamped lookup; ``max_increase``
    the largest s[τ+1] − s[τ] (≤ 0 for a non-increasing table).
    """

    nonnegative: bool
    bounded: bool
    nonincreasing: bool
    normalised: bool
    mean: float
    min: float
    max: float
    max_increase: float
    tol: float

    @property
    def ok(self) -> bool:
        """True when all four conditions hold."""
        return self.nonnegative and self.bounded and self.nonincreasing and self.normalised

    def failures(self) -> list[str]:
        """Human-readable list of the conditions that fail."""
        out = []
        if not self.nonnegative:
            out.append(f"s >= 0 fails (min {self.min:.6g})")
        if not self.bounded:
            out.append(f"bounded fails (max {self.max:.6g})")
        if not self.nonincreasing:
            out.append(f"non-increasing fails (largest rise {self.max_increase:.3g})")
        if not self.normalised:
            out.append(f"E[s] = 1 fails (E[s] = {self.mean:.12g}, tol {self.tol:g})")
        return out

    def __str__(self) -> str:
        status = "ok" if self.ok else "; ".join(self.failures())
        return (
            f"E[s]={self.mean:.12g} min={self.min:.6g} max={self.max:.6g} "
            f"max_rise={self.max_increase:.3g}: {status}"
        )


def check_conditions(
    table: np.ndarray | Sequence[float],
    pdf: np.ndarray | Sequence[float],
    *,
    tol: float = 1e-9,
    bound: float | None = None,
) -> ConditionReport:
    """Check a step-size table against the ASAP.SGD conditions under a PDF(τ).

    ``pdf`` may be a PDF or a histogram (normalised here) of any length: mass
    beyond the table is charged to its last entry, as the clamped lookup
    does.  *Bounded* means all entries finite and, if ``bound`` is given, at
    most ``bound``; *non-increasing* and *normalised* (|E[s] − 1| ≤ ``tol``)
    are tested to ``tol``.
    """
    s = np.asarray(table, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError("table must be a non-empty 1-D array")
    w = _as_weights(pdf)
    p = w / w.sum()
    finite = bool(np.all(np.isfinite(s)))
    idx = np.minimum(np.arange(p.size), s.size - 1)
    m = float(np.dot(p, s[idx]))
    rise = float(np.max(np.diff(s))) if s.size > 1 else 0.0
    smin, smax = float(np.min(s)), float(np.max(s))
    bounded = finite and (bound is None or smax <= bound)
    return ConditionReport(
        nonnegative=bool(smin >= -tol),
        bounded=bounded,
        nonincreasing=bool(rise <= tol),
        normalised=bool(abs(m - 1.0) <= tol),
        mean=m,
        min=smin,
        max=smax,
        max_increase=rise,
        tol=tol,
    )


# ----------------------------------------------------------------------------
# Online PDF(τ) estimation
# ----------------------------------------------------------------------------

# Slots of TauEstimator.state (int64).
_TOTAL, _COLLECTED, _RING_POS, _RING_FILL, _SINCE, _DONE, _FULL = range(7)
_STATE_SIZE = 7


@cached
@numba.njit(nogil=True)
def _ingest(
    taus: np.ndarray,
    workers: np.ndarray,
    seen: np.ndarray,
    window_counts: np.ndarray,
    ring: np.ndarray,
    refresh_counts: np.ndarray,
    state: np.ndarray,
    warmup: int,
    window: int,
    patience_total: int,
    refresh_every: int,
    quirks: bool,
) -> int:
    """Feed τ samples into the estimator state; return 0, 1 (window closed) or 2 (refresh due).

    Allocation-free; callable from njit code.  ``workers`` is ignored when
    ``quirks`` (global counting); otherwise it gives each sample's worker.
    When a refresh falls due, the histogram of the sliding window at that
    moment is written to ``refresh_counts`` (so the result does not depend on
    how the samples were split into calls).
    Returns -1 if a τ is negative and -2 if a worker id is out of range
    (the sample is then not counted).
    """
    m = seen.shape[0]
    tau_max = window_counts.shape[0] - 1
    ring_size = ring.shape[0]
    result = 0
    for i in range(taus.shape[0]):
        tau = taus[i]
        if tau < 0:
            return -1
        total = state[_TOTAL]
        state[_TOTAL] = total + 1
        tb = tau if tau < tau_max else tau_max
        if ring_size > 0:
            pos = state[_RING_POS]
            ring[pos] = tb
            pos += 1
            if pos == ring_size:
                pos = 0
            state[_RING_POS] = pos
            if state[_RING_FILL] < ring_size:
                state[_RING_FILL] += 1
        if state[_DONE] == 0:
            if quirks:
                # C++: samples with warmup·m < step < (warmup+window)·m, τ in range.
                if total > warmup * m and total < (warmup + window) * m and tau <= tau_max:
                    window_counts[tau] += 1
                    state[_COLLECTED] += 1
                if total >= (warmup + window) * m - 1:
                    state[_DONE] = 1
                    state[_SINCE] = 0
                    result = 1
            else:
                w = workers[i]
                if w < 0 or w >= m:
                    return -2
                k = seen[w]
                seen[w] = k + 1
                if k >= warmup and k < warmup + window:
                    window_counts[tb] += 1
                    state[_COLLECTED] += 1
                    if k == warmup + window - 1:
                        state[_FULL] += 1
                if state[_COLLECTED] > 0 and (state[_FULL] >= m or state[_TOTAL] >= patience_total):
                    state[_DONE] = 1
                    state[_SINCE] = 0
                    result = 1
        else:
            state[_SINCE] += 1
            if refresh_every > 0 and state[_SINCE] >= refresh_every:
                state[_SINCE] = 0
                result = 2
                refresh_counts[:] = 0
                for j in range(state[_RING_FILL]):
                    refresh_counts[ring[j]] += 1
    return result


class TauEstimator:
    """Online PDF(τ) estimate that turns into step-size tables (TAIL-τ, ASAP.SGD §4).

    Protocol (DESIGN §5): ignore each worker's first ``warmup`` updates,
    collect its next ``window``; when every worker has contributed its window
    (or, if some worker is idle, once ``patience·(warmup+window)·m`` updates
    have been seen) the histogram, normalised by the samples actually
    collected, yields the first table.  With ``refresh_every = K > 0`` a new
    table is computed every K updates from the last ``refresh_window``
    samples (a sliding window).  Until the first table the rule uses s = 1.

    ``quirks=True`` reproduces the released C++ instead: global counting
    (samples with update index strictly between warmup·m and
    (warmup+window)·m, so 5m − 1 of them), τ above ``tau_max`` dropped, the
    nominal normaliser window·m, and no refresh.

    State is a handful of preallocated int64 arrays (``seen``,
    ``window_counts``, ``ring``, ``refresh_counts``, ``state``) updated by the njit kernel
    ``_ingest``; :meth:`update` is the Python entry point for the engines'
    monitor thread and the simulator.  Not thread-safe: one caller.
    """

    def __init__(
        self,
        rule: _PdfRule,
        *,
        tau_max: int,
        workers: int,
        warmup: int = 10,
        window: int = 5,
        refresh_every: int = 0,
        refresh_window: int | None = None,
        patience: float = 2.0,
        quirks: bool = False,
    ):
        self.rule = rule
        self.tau_max = _check_tau_max(tau_max)
        self.workers = _positive_int("workers", workers)
        self.warmup = _nonneg_int("warmup", warmup)
        self.window = _positive_int("window", window)
        self.refresh_every = _nonneg_int("refresh_every", refresh_every)
        if quirks and self.refresh_every:
            raise ValueError("refresh_every must be 0 with quirks=True (the C++ never refreshed)")
        if refresh_window is None:
            refresh_window = max(self.window * self.workers, self.refresh_every)
        self.refresh_window = _positive_int("refresh_window", refresh_window)
        if not (isinstance(patience, int | float) and patience >= 1.0):
            raise ValueError(f"patience must be a number >= 1, got {patience!r}")
        self.patience = float(patience)
        self.quirks = bool(quirks)
        self.seen = np.zeros(self.workers, dtype=np.int64)
        self.window_counts = np.zeros(self.tau_max + 1, dtype=np.int64)
        self.ring = np.zeros(self.refresh_window if self.refresh_every else 0, dtype=np.int64)
        self.refresh_counts = np.zeros(self.tau_max + 1, dtype=np.int64)
        self.state = np.zeros(_STATE_SIZE, dtype=np.int64)
        self._patience_total = int(
            math.ceil(self.patience * (self.warmup + self.window) * self.workers)
        )
        self._no_workers = np.zeros(0, dtype=np.int64)
        self.table: np.ndarray = np.ones(self.tau_max + 1)
        """The current table (s = 1 until the first estimate)."""
        self.counts: np.ndarray | None = None
        """The histogram behind the current table (None before the first)."""
        self.n_tables = 0
        """How many tables :meth:`update` has produced."""

    @property
    def ready(self) -> bool:
        """True once the first window has closed and a table has been produced."""
        return bool(self.state[_DONE])

    @property
    def total(self) -> int:
        """Number of τ samples fed so far."""
        return int(self.state[_TOTAL])

    @property
    def collected(self) -> int:
        """Number of samples in the first window."""
        return int(self.state[_COLLECTED])

    def update(
        self, taus: np.ndarray | Sequence[int], workers: np.ndarray | Sequence[int] | None = None
    ) -> np.ndarray | None:
        """Feed the τ samples logged since the last call; return a new table or None.

        ``workers`` gives each sample's worker id (0..m−1); it may be omitted
        with one worker or with ``quirks=True``.  Samples must come in the
        order the updates were applied.  The returned table has length
        ``tau_max + 1`` and is also kept as :attr:`table`.
        """
        t = np.ascontiguousarray(taus, dtype=np.int64).reshape(-1)
        if workers is None:
            if not self.quirks and self.workers > 1:
                raise ValueError(
                    "workers (one id per τ sample) is required to count warm-up per worker"
                )
            wk = np.zeros(t.size, dtype=np.int64) if not self.quirks else self._no_workers
        else:
            wk = np.ascontiguousarray(workers, dtype=np.int64).reshape(-1)
            if wk.size != t.size:
                raise ValueError(f"workers has {wk.size} entries but taus has {t.size}")
        if t.size == 0:
            return None
        code = _ingest(
            t,
            wk,
            self.seen,
            self.window_counts,
            self.ring,
            self.refresh_counts,
            self.state,
            self.warmup,
            self.window,
            self._patience_total,
            self.refresh_every,
            self.quirks,
        )
        if code == -1:
            raise ValueError(f"taus holds a negative staleness ({int(t.min())}); τ must be >= 0")
        if code == -2:
            raise ValueError(
                f"workers holds an id outside 0..{self.workers - 1} "
                f"(min {int(wk.min())}, max {int(wk.max())})"
            )
        if code == 0:
            return None
        if code == 2:
            counts = self.refresh_counts.copy()
            normaliser = float(counts.sum())
        else:
            counts = self.window_counts.copy()
            if self.quirks:
                normaliser = float(self.window * self.workers)
            else:
                normaliser = float(counts.sum())
        self.counts = counts
        self.table = self.rule.table_from_counts(counts, self.tau_max, normaliser=normaliser)
        self.n_tables += 1
        return self.table


# ----------------------------------------------------------------------------
# Rules
# ----------------------------------------------------------------------------


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return int(value)


def _nonneg_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
    return int(value)


def _number(key: str, value: Any, *, minimum: float | None = None, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{key} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{key} must be finite, got {value!r}")
    if positive and not v > 0:
        raise ValueError(f"{key} must be > 0, got {value!r}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{key} must be >= {minimum}, got {value!r}")
    return v


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return bool(value)


class StepSizeRule:
    """Base class: η(τ) = lr · s(τ), materialised by :meth:`table`.

    Subclasses set ``name``, ``defaults`` (allowed options and their default
    values) and implement :meth:`table`.  Construct through :func:`make_rule`.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    adaptive: ClassVar[bool] = False

    def __init__(self, *, workers: int, lr: float, **options: Any):
        self.workers = _positive_int("workers", workers)
        self.lr = _number("lr", lr, positive=True)
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            allowed = ", ".join(self.defaults) or "none"
            raise ValueError(
                f"step-size rule {self.name!r} has no option {', '.join(map(repr, unknown))}; "
                f"allowed options: {allowed}"
            )
        self.options: dict[str, Any] = {**self.defaults, **options}
        self._validate()

    def _validate(self) -> None:
        """Check and normalise ``self.options`` (subclasses)."""

    def table(self, tau_max: int) -> np.ndarray:
        """The factor table s[0..tau_max] (float64)."""
        raise NotImplementedError

    def eta_table(self, tau_max: int) -> np.ndarray:
        """The step-size table η[0..tau_max] = lr · s."""
        return self.lr * self.table(tau_max)

    def estimator(self, tau_max: int) -> TauEstimator | None:
        """An online estimator producing new tables, or None for a fixed rule."""
        return None

    def spec(self) -> dict[str, Any]:
        """Name, lr, workers and scalar options, for run records and configs."""
        opts = {k: v for k, v in self.options.items() if not isinstance(v, np.ndarray)}
        return {"name": self.name, "lr": self.lr, "workers": self.workers, **opts}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()})"


class ConstantRule(StepSizeRule):
    """``constant``: s(τ) = 1, plain SGD step size whatever the staleness (the baseline)."""

    name = "constant"

    def table(self, tau_max: int) -> np.ndarray:
        """All ones."""
        return np.ones(_check_tau_max(tau_max) + 1)


class InverseRule(StepSizeRule):
    """``inverse``: s(τ) = 1/(τ + 1).

    Source: the staleness-dependent rate η/τ of Zhang, Gupta, Lian and Liu,
    "Staleness-aware async-SGD for distributed deep learning", IJCAI 2016;
    τ + 1 keeps τ = 0 finite, as the released C++ (``INVERSE``) does.
    """

    name = "inverse"

    def table(self, tau_max: int) -> np.ndarray:
        """1/(τ+1) for τ = 0..tau_max."""
        return 1.0 / (np.arange(_check_tau_max(tau_max) + 1, dtype=np.float64) + 1.0)


class ExponentialRule(StepSizeRule):
    """``exponential``: s(τ) = exp(−βτ), β = (2/τthr)·ln(1 + τthr/2), τthr = m + 1.

    Source: the staleness dampening of FLeet (Damaskinos, Guerraoui,
    Kermarrec, Nitu, Patra, Taïani, "FLeet: Online Federated Learning via
    Staleness Awareness and Performance Prediction", Middleware 2020), with
    the threshold τthr = m + 1 used by the released C++ (``FLEET``).
    Options: ``tau_thr`` (default m + 1); ``quirks`` (default false) = the
    C++'s integer division τthr/2 inside the logarithm.
    """

    name = "exponential"
    defaults: ClassVar[dict[str, Any]] = {"tau_thr": None, "quirks": False}

    def _validate(self) -> None:
        if self.options["tau_thr"] is None:
            self.options["tau_thr"] = self.workers + 1
        self.options["tau_thr"] = _number("tau_thr", self.options["tau_thr"], positive=True)
        self.options["quirks"] = _flag("quirks", self.options["quirks"])

    @property
    def beta(self) -> float:
        """The decay rate β."""
        thr = self.options["tau_thr"]
        half = float(int(thr) // 2) if self.options["quirks"] else thr / 2.0
        return 2.0 / thr * math.log1p(half)

    def table(self, tau_max: int) -> np.ndarray:
        """exp(−βτ) for τ = 0..tau_max."""
        return np.exp(-self.beta * np.arange(_check_tau_max(tau_max) + 1, dtype=np.float64))


class DelayAdaptiveRule(StepSizeRule):
    """``delay-adaptive``: s(τ) = min(1, m/τ), with s(0) = 1.

    Source: the delay-adaptive step sizes of Mishchenko, Bach, Even and
    Woodworth, "Asynchronous SGD Beats Minibatch SGD Under Arbitrary Delays",
    NeurIPS 2022, which keep the full step for delays up to about the number
    of workers and shrink it like 1/τ beyond.  Writing it relative to η0 as
    min(1, m/τ) is this project's form (DESIGN §5).  Not normalised: the
    checker reports E[s] < 1 when τ > m has mass.
    """

    name = "delay-adaptive"

    def table(self, tau_max: int) -> np.ndarray:
        """min(1, m/τ) for τ = 0..tau_max (1 at τ = 0)."""
        t = np.arange(_check_tau_max(tau_max) + 1, dtype=np.float64)
        out = np.ones_like(t)
        pos = t > 0
        out[pos] = np.minimum(1.0, self.workers / t[pos])
        return out


_ONLINE_DEFAULTS: dict[str, Any] = {
    "A": 1.0,
    "pdf": None,
    "warmup": 10,
    "window": 5,
    "refresh_every": 0,
    "refresh_window": None,
    "patience": 2.0,
}


class _PdfRule(StepSizeRule):
    """A rule computed from PDF(τ): fixed if a ``pdf`` option is given, else online."""

    defaults: ClassVar[dict[str, Any]] = dict(_ONLINE_DEFAULTS)

    def _validate(self) -> None:
        o = self.options
        o["A"] = _number("A", o["A"], minimum=0.0)
        if o["pdf"] is not None:
            o["pdf"] = _as_weights(o["pdf"], "pdf")
        o["warmup"] = _nonneg_int("warmup", o["warmup"])
        o["window"] = _positive_int("window", o["window"])
        o["refresh_every"] = _nonneg_int("refresh_every", o["refresh_every"])
        if o["refresh_window"] is not None:
            o["refresh_window"] = _positive_int("refresh_window", o["refresh_window"])
        o["patience"] = _number("patience", o["patience"], minimum=1.0)

    @property
    def adaptive(self) -> bool:  # type: ignore[override]
        """True when the table is learned online (no fixed ``pdf`` option)."""
        return self.options["pdf"] is None

    def table_from_counts(
        self, counts: np.ndarray, tau_max: int, *, normaliser: float | None = None
    ) -> np.ndarray:
        """The table for a histogram (or PDF) of τ; ``normaliser`` defaults to its total."""
        raise NotImplementedError

    def table(self, tau_max: int) -> np.ndarray:
        """The table for the fixed ``pdf`` option, or all ones before anything is known."""
        if self.options["pdf"] is None:
            return np.ones(_check_tau_max(tau_max) + 1)
        return self.table_from_counts(self.options["pdf"], tau_max)

    def _quirks(self) -> bool:
        return False

    def estimator(self, tau_max: int) -> TauEstimator | None:
        """A fresh :class:`TauEstimator` for this rule, or None when ``pdf`` fixes the table."""
        if not self.adaptive:
            return None
        o = self.options
        return TauEstimator(
            self,
            tau_max=tau_max,
            workers=self.workers,
            warmup=o["warmup"],
            window=o["window"],
            refresh_every=o["refresh_every"],
            refresh_window=o["refresh_window"],
            patience=o["patience"],
            quirks=self._quirks(),
        )


class TailRule(_PdfRule):
    """``tail`` (TAIL-τ): s(τ) = 1 + A·(P[T>τ] − P[T<τ]) from the run's own PDF(τ).

    Source: Bäckström, Papatriantafilou and Tsigas, "ASAP.SGD: Instance-based
    Adaptiveness to Staleness in Asynchronous SGD", ICML 2022 (TAIL-τ).  The
    mid-rank form used here is the one DESIGN §5 fixes: it meets the paper's
    conditions exactly (non-negative for A ≤ 1, bounded by 1 + A,
    non-increasing, E[s] = 1 under the PDF it is built from), whereas the
    released code's form (``tail-original``) is not normalised.  PDF(τ) is
    estimated online (:class:`TauEstimator`) unless a fixed ``pdf`` is given.
    Options: ``A`` (1), ``pdf``, ``warmup`` (10 per worker), ``window`` (5
    per worker), ``refresh_every`` (0 = never), ``refresh_window``
    (max(window·m, refresh_every)), ``patience`` (2).
    """

    name = "tail"

    def table_from_counts(
        self, counts: np.ndarray, tau_max: int, *, normaliser: float | None = None
    ) -> np.ndarray:
        """TAIL-τ table of the histogram (normalised by its total: the samples collected)."""
        return tail_table(counts, tau_max, self.options["A"])


class TailOriginalRule(_PdfRule):
    """``tail-original``: s(τ) = 1 + A·(1 − 2·P[T<τ]), the released C++ TAIL rule.

    Source: the ``TAIL`` strategy of the ASAP.SGD authors' C++ framework
    (dcs-chalmers/shared-memory-sgd, ``NetworkExecutor::compute_tail_dist``).
    Under a proper PDF its mean is 1 + A·Σp² (up to 1 + A on a point mass), so
    it is offered to reproduce published results, not as a normalised rule.
    With ``quirks=true`` (the default) the estimator copies the C++ exactly
    where it can: samples counted by global update index strictly between
    warmup·m and (warmup+window)·m (5m − 1 samples), τ above the table dropped,
    P[T<τ] divided by the nominal window·m instead of the samples seen, and no
    refresh.  Two C++ effects are not reproduced: the table was computed when
    step (warmup+window)·m was *claimed*, so updates still in flight (about
    m − 1) were missing from the window; and its clamp ``staleness >> 199``
    (a shift, not a comparison) sends τ ≥ 128 to the last entry.
    With ``quirks=false`` it uses the same estimator as ``tail``.
    """

    name = "tail-original"
    defaults: ClassVar[dict[str, Any]] = {**_ONLINE_DEFAULTS, "quirks": True}

    def _validate(self) -> None:
        super()._validate()
        self.options["quirks"] = _flag("quirks", self.options["quirks"])
        if self.options["quirks"] and self.options["refresh_every"]:
            raise ValueError(
                "tail-original: refresh_every must be 0 with quirks=true (the C++ never "
                "refreshed); set quirks=false to refresh"
            )

    def _quirks(self) -> bool:
        return self.options["quirks"]

    def table_from_counts(
        self, counts: np.ndarray, tau_max: int, *, normaliser: float | None = None
    ) -> np.ndarray:
        """C++ TAIL table; P[T<τ] = Σ_{t<τ} counts / normaliser (default: the total)."""
        return tail_original_table(counts, tau_max, self.options["A"], normaliser)


class ModelRule(_PdfRule):
    """``model`` (MindTheStep-style): the ``tail`` rule applied to a fitted law of τ.

    Source: Bäckström, Papatriantafilou and Tsigas, "MindTheStep-AsyncPSGD:
    Adaptive Asynchronous Parallel Stochastic Gradient Descent", IEEE BigData
    2019, which models τ as Poisson or Conway–Maxwell–Poisson (CMP) and adapts
    the step size to the modelled staleness.  We could not find that paper's
    own step-size formula, so this rule is the project's interpretation, not
    a reproduction: fit the family (``staleness.fit_cmp`` /
    ``staleness.fit_poisson``, maximum likelihood) to the observed τ and
    apply TAIL-τ's s(τ) = 1 + A·(P[T>τ] − P[T<τ]) to the fitted law, which
    keeps E[s] = 1 under that law and smooths the small online sample.
    Options: ``family`` ("cmp" default, "poisson", or "auto" = the better by
    AIC), plus those of ``tail``.  If CMP does not apply (all τ equal) it
    falls back to Poisson.
    """

    name = "model"
    defaults: ClassVar[dict[str, Any]] = {**_ONLINE_DEFAULTS, "family": "cmp"}
    families: ClassVar[tuple[str, ...]] = ("cmp", "poisson", "auto")

    def _validate(self) -> None:
        super()._validate()
        if self.options["family"] not in self.families:
            raise ValueError(
                f"model: family {self.options['family']!r} is not allowed; "
                f"choose one of {', '.join(self.families)}"
            )
        self.last_fit: staleness.Fit | None = None

    def fit(self, counts: np.ndarray) -> staleness.Fit:
        """Fit the configured family to a histogram (with the fallbacks described above)."""
        fam = self.options["family"]
        if fam == "poisson":
            return staleness.fit_poisson(counts)
        fits = [staleness.fit_cmp(counts)]
        if fam == "auto" or not (fits[0].applicable and fits[0].converged):
            fits.append(staleness.fit_poisson(counts))
        ok = [f for f in fits if f.applicable and f.converged]
        return staleness.best_fit(ok) if fam == "auto" else ok[0]

    def table_from_counts(
        self, counts: np.ndarray, tau_max: int, *, normaliser: float | None = None
    ) -> np.ndarray:
        """TAIL-τ table of the law fitted to the histogram."""
        tau_max = _check_tau_max(tau_max)
        f = self.fit(np.asarray(counts, dtype=np.float64))
        self.last_fit = f
        pmf = f.pmf(max(tau_max, f.support_max()))
        return tail_table(pmf, tau_max, self.options["A"])


RULES: dict[str, type[StepSizeRule]] = {
    cls.name: cls
    for cls in (
        ConstantRule,
        InverseRule,
        ExponentialRule,
        TailRule,
        TailOriginalRule,
        ModelRule,
        DelayAdaptiveRule,
    )
}


def rule_names() -> tuple[str, ...]:
    """The allowed rule names, in DESIGN order."""
    return tuple(RULES)


def rule_options(name: str) -> dict[str, Any]:
    """The options a rule accepts, with their defaults (None: derived from workers)."""
    return dict(_rule_class(name).defaults)


def _rule_class(name: str) -> type[StepSizeRule]:
    try:
        return RULES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"step-size rule {name!r} is not allowed; choose one of {', '.join(RULES)}"
        ) from None


def make_rule(name: str, *, workers: int, lr: float, **options: Any) -> StepSizeRule:
    """Build a step-size rule by name (``--stepsize NAME``) with its options.

    ``workers`` is m (used by ``exponential``, ``delay-adaptive`` and the
    per-worker windows), ``lr`` is η0.  Unknown names or options raise a
    ValueError listing what is allowed.
    """
    return _rule_class(name)(workers=workers, lr=lr, **options)
