"""When a run counts as diverged: one rule for every engine.

A run diverges when an evaluated loss is not finite (NaN or infinite: θ overflowed), or when
it has grown :data:`BLOWUP_FACTOR` times above the run's first evaluated loss (taken as at
least 1, so that a run that starts near its optimum is not judged by noise).  SGD that is
merely slow or noisy never grows its loss by orders of magnitude; one whose step size is far
too large does, long before its parameters overflow, and the rest of such a run measures
nothing.  Engines stop a diverged run and record ``diverged = True``.
"""

from __future__ import annotations

import math

__all__ = ["BLOWUP_FACTOR", "diverged"]

#: a loss this many times the first evaluated loss (at least 1) means the run diverged
BLOWUP_FACTOR = 1e4


def diverged(loss: float, first_loss: float | None) -> bool:
    """Whether ``loss`` marks a diverged run whose first evaluated loss was ``first_loss``
    (None: this is the first evaluation)."""
    if not math.isfinite(loss):
        return True
    if first_loss is None or not math.isfinite(first_loss):
        return False
    return loss > BLOWUP_FACTOR * max(abs(first_loss), 1.0)
