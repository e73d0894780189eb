"""Step-size tables: their length, the clamped lookup kernels use, and the TAIL-τ builders.

A rule is materialised as a float64 table ``s[0..tau_max]`` (τ beyond ``tau_max`` uses the
last entry); kernels look it up with :func:`eta_of`.  :func:`tail_table` and
:func:`tail_original_table` are the pure table builders of the PDF-based rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numba
import numpy as np

from stalesgd.validation import OptionError, integer

__all__ = ["as_weights", "check_tau_max", "default_tau_max", "eta_of", "tail_original_table",
           "tail_table"]


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


def as_weights(pdf: Any, name: str = "pdf") -> np.ndarray:
    """``pdf`` as a float64 array of weights indexed by τ: one-dimensional, non-empty, finite,
    non-negative and not all zero (a PDF or a histogram); :class:`OptionError` otherwise."""
    allowed = "a non-empty array of finite non-negative weights indexed by τ, not all zero"
    try:
        p = np.asarray(pdf, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise OptionError(name, pdf, allowed, "is not an array of numbers") from None
    if p.ndim != 1 or p.size == 0:
        raise OptionError(name, pdf, allowed, "is not a non-empty 1-D array")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise OptionError(name, pdf, allowed, "must hold finite non-negative values")
    if not p.sum() > 0:
        raise OptionError(name, pdf, allowed, "sums to zero")
    return p


def check_tau_max(tau_max: Any) -> int:
    """``tau_max`` as an int >= 0 (the last index of a table)."""
    return integer(tau_max, "tau_max", 0)


def tail_table(pdf: np.ndarray | Sequence[float], tau_max: int, A: float = 1.0) -> np.ndarray:
    """TAIL-τ table s[τ] = 1 + A·(P[T>τ] − P[T<τ]) for τ = 0..tau_max.

    ``pdf`` is a PDF or a histogram (normalised here).  Mass above
    ``tau_max`` is lumped into the last bin, which is exactly what the clamped
    lookup does with such τ, so E[s(τ)] = 1 holds under the given law
    whatever ``tau_max`` is.  Non-increasing by construction: s[τ+1] − s[τ] =
    −A·(p[τ] + p[τ+1]), and the cumulative sums below keep that in floating
    point too.
    """
    tau_max = check_tau_max(tau_max)
    w = as_weights(pdf)
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
    :class:`~stalesgd.stepsize.rules.TailOriginalRule`).
    """
    tau_max = check_tau_max(tau_max)
    w = as_weights(pdf)
    total = float(w.sum()) if normaliser is None else float(normaliser)
    if not total > 0:
        raise ValueError(f"normaliser must be positive, got {normaliser!r}")
    c = np.zeros(tau_max + 1)
    head = min(w.size, tau_max + 1)
    c[:head] = w[:head]
    below = np.concatenate(([0.0], np.cumsum(c)[:-1])) / total
    return 1.0 + A * (1.0 - 2.0 * below)
