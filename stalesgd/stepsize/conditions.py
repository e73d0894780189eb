"""The ASAP.SGD checker: does a step-size table meet the conditions under a PDF(τ)?

:func:`check_conditions` reports, for any table and any PDF, whether s ≥ 0, s is bounded,
non-increasing and E_τ[s(τ)] = 1, with the numbers behind each verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stalesgd.stepsize.tables import as_weights

__all__ = ["ConditionReport", "check_conditions"]



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
    w = as_weights(pdf)
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
