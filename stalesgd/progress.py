"""The progress bar of one run: over updates, or over (wall or simulated) seconds.

Engines show one while a run goes on: by applied updates when the run stops after a number
of updates, else by seconds of its time budget, with the last evaluated loss beside it.
Seconds are shown rounded (``4.0/5.0 s``), never as raw floats.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OPEN_ENDED_SECONDS", "RunProgress"]

#: a time budget beyond this (seconds, about 11.6 days) is shown as open-ended: the seconds
#: so far, without a bar or a remaining time that would be astronomical
OPEN_ENDED_SECONDS = 1e6


class RunProgress:
    """A tqdm bar for one run, or nothing when ``enabled`` is false.

    ``updates``: the run's update budget (the bar counts updates); otherwise ``seconds``
    (the bar counts seconds, labelled ``unit``: ``s`` or ``sim-s``).
    """

    def __init__(self, enabled: bool, updates: int | None, seconds: float | None,
                 unit: str = "s") -> None:
        self.by_updates = updates is not None
        self.total = float(updates if updates is not None else (seconds or 0.0))
        self.shown: float = 0
        self.bar: Any = None
        if enabled:
            from tqdm.auto import tqdm

            open_ended = not self.by_updates and self.total > OPEN_ENDED_SECONDS
            if self.by_updates:
                fmt = None
            elif open_ended:  # a budget no run reaches: the seconds so far, no bar
                fmt = "{desc}{n:.1f} " + unit + " [{elapsed}{postfix}]"
            else:
                fmt = ("{l_bar}{bar}| {n:.1f}/{total:.1f} " + unit
                       + " [{elapsed}<{remaining}{postfix}]")
            self.bar = tqdm(total=updates if self.by_updates else self.total,
                            unit="upd" if self.by_updates else unit, dynamic_ncols=True,
                            leave=False, bar_format=fmt)

    @property
    def enabled(self) -> bool:
        """Whether a bar is shown."""
        return self.bar is not None

    def update(self, updates: int, seconds: float) -> None:
        """The run has applied ``updates`` updates in ``seconds``."""
        if self.bar is None:
            return
        value = int(updates) if self.by_updates else min(float(seconds), self.total)
        if value > self.shown:  # (whole updates stay whole: "250/1000", not "250.0/1000")
            self.bar.update(value - self.shown)  # tqdm throttles the redraws itself
            self.shown = value

    def loss(self, loss: float) -> None:
        """Show the last evaluated loss beside the bar."""
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)

    def close(self) -> None:
        """Remove the bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
