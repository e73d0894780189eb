"""The online PDF(τ) estimator of the adaptive step-size rules (``tail``, ``tail-original``,
``model``).

The engines' monitor (or the simulator) feeds it the τ samples the workers logged and receives
a new table whenever the estimate changes (same length, so that it can be copied into the
table the workers read).  The per-sample work is one compiled kernel (``_ingest``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numba
import numpy as np

from stalesgd.jitcache import cached
from stalesgd.stepsize.tables import check_tau_max
from stalesgd.validation import OptionError, integer, number

__all__ = ["DEFAULT_PATIENCE", "MAX_COUNT", "MAX_PATIENCE", "MAX_REFRESH_WINDOW", "TableSource",
           "TauEstimator"]

#: largest warm-up, window and refresh period (updates per worker, or updates): far beyond any
#: run, small enough that the estimator's counters never overflow
MAX_COUNT = 10**9
#: largest sliding window of a refreshing estimator (it is held in memory: 8 bytes per sample)
MAX_REFRESH_WINDOW = 10**7
#: largest patience factor
MAX_PATIENCE = 1000.0
#: default patience: the first window waits for a late worker for up to
#: 100·(warmup + window)·m updates (3,000 with two workers and DESIGN's warm-up and window).
#: A worker that starts a few milliseconds late is common on a loaded machine (measured: 400
#: and 1,200 updates after the other, two runs of three); a shorter patience then closes the
#: window on the first worker's τ = 0 alone, and A = 1 gives every later stale update η = 0.
DEFAULT_PATIENCE = 100.0


class TableSource(Protocol):
    """What the estimator turns its histograms into tables with (a PDF-based rule)."""

    def table_from_counts(self, counts: np.ndarray, tau_max: int, *,
                          normaliser: float | None = None) -> np.ndarray:
        """The table for a histogram of τ."""
        ...


def check_estimator_options(workers: Any, warmup: Any, window: Any, refresh_every: Any,
                            refresh_window: Any, patience: Any) -> dict[str, Any]:
    """The estimator's settings, checked (:class:`OptionError` naming the option) and with
    ``refresh_window`` resolved (default max(window·m, refresh_every), at most
    :data:`MAX_REFRESH_WINDOW`)."""
    m = integer(workers, "workers", 1)
    out: dict[str, Any] = {
        "warmup": integer(warmup, "warmup", 0, MAX_COUNT),
        "window": integer(window, "window", 1, MAX_COUNT),
        "refresh_every": integer(refresh_every, "refresh_every", 0, MAX_COUNT),
        "patience": number(patience, "patience", 1.0, MAX_PATIENCE),
    }
    if refresh_window is None:
        refresh_window = min(max(out["window"] * m, out["refresh_every"]), MAX_REFRESH_WINDOW)
    out["refresh_window"] = integer(refresh_window, "refresh_window", 1, MAX_REFRESH_WINDOW)
    return out


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
        rule: TableSource,
        *,
        tau_max: int,
        workers: int,
        warmup: int = 10,
        window: int = 5,
        refresh_every: int = 0,
        refresh_window: int | None = None,
        patience: float = DEFAULT_PATIENCE,
        quirks: bool = False,
    ):
        self.rule = rule
        self.tau_max = check_tau_max(tau_max)
        self.workers = integer(workers, "workers", 1)
        opts = check_estimator_options(workers, warmup, window, refresh_every, refresh_window,
                                       patience)
        self.warmup, self.window = opts["warmup"], opts["window"]
        self.refresh_every, self.refresh_window = opts["refresh_every"], opts["refresh_window"]
        self.patience = opts["patience"]
        if quirks and self.refresh_every:
            raise OptionError("refresh_every", refresh_every, "0 with quirks = true (the C++ "
                              "never refreshed)")
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
