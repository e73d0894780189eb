"""Step sizes of a simulated run: η(τ) = lr · s(τ), with online rules learning as it goes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from stalesgd.stepsize import StepSizeRule

__all__ = ["StepSizes"]


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
        #: whether the online estimator still learns (then :meth:`feed` every update)
        self.feeding = self.estimator is not None
        #: samples fed to the estimator so far
        self.fed = 0
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
        self.feeding = False
        self.fed = 0
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
        self.feeding = False

    def _set_table(self, table: np.ndarray) -> None:
        self.table = np.ascontiguousarray(table, dtype=np.float64)
        self.last = self.table.shape[0] - 1
        #: lr·s(τ) as Python floats (the same products), for the per-update lookup
        self.eta_list: list[float] = (self.lr * self.table).tolist()

    def eta(self, tau: int, worker: int) -> float:
        """η for one applied update with staleness ``tau`` by ``worker``; feeds the estimator."""
        last = self.last
        eta = self.eta_list[tau if tau < last else last]
        if self.feeding:
            self.feed(tau, worker)
        return eta

    def feed(self, tau: int, worker: int) -> None:
        """Feed one applied update's (τ, worker) to the online rule (which may switch to a
        new table for later updates)."""
        est = self.estimator
        self._tau[0] = tau
        self._worker[0] = worker
        new = est.update(self._tau, self._worker)
        self.fed += 1
        if new is not None:
            self._set_table(new)
            self._table_at.append(self.fed)
        if est.ready and (est.quirks or est.refresh_every == 0):
            self.feeding = False

    def etas(self, tau: np.ndarray, worker: np.ndarray) -> np.ndarray:
        """η for a whole sequence of applied updates, with the same result as calling
        :meth:`eta` on each in order (vectorised once the estimator is done)."""
        tau = np.asarray(tau, dtype=np.int64)
        worker = np.asarray(worker, dtype=np.int64)
        out = np.empty(tau.shape[0], dtype=np.float64)
        i = 0
        while i < tau.shape[0] and self.feeding:
            out[i] = self.eta(int(tau[i]), int(worker[i]))
            i += 1
        out[i:] = self.lr * self.table[np.minimum(tau[i:], self.last)]
        return out
