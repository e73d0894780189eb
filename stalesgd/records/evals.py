"""The evaluations of a run as an engine collects them (the run record's ``evals`` table)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["EvalLog"]


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
