"""What every figure of a report shares: the :class:`FigureFile` record, saving, engine colours.

Drawing uses matplotlib's object API on the Agg canvas (no pyplot, no global state, no
display needed) with fixed margins (``tight_layout`` cost half a second per figure).  Each
figure module draws one topic; :mod:`.figures` draws them all for a report.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

__all__ = [
    "DPI",
    "THOUSANDS",
    "FigureFile",
    "engine_color",
    "engine_order",
    "numeric_column",
    "save_figure",
    "wrap",
]

DPI = 110
#: axis labels with thousands separators (1,000,000)
THOUSANDS = FuncFormatter(lambda v, _pos: f"{v:,.0f}")
_ENGINE_STYLE = {"real": {"color": "C0"}, "sim": {"color": "C1"}}
_EXTRA_COLORS = ["C2", "C3", "C4", "C5", "C6"]


@dataclass(frozen=True)
class FigureFile:
    """One written figure: its path, a title, a one-line caption, its kind (``pdf``,
    ``convergence``, ``throughput``, ``speedup``, ``memory``, ``elastic``, ``stepsize``,
    ``tau_time``, ``theory``) and configuration (empty for cross-configuration plots)."""

    path: Path
    title: str
    caption: str
    kind: str
    config_key: str = ""


def engine_order(engines: Iterable[str]) -> list[str]:
    """The distinct engines, sorted with ``real`` (the reference) first."""
    return sorted(set(engines), key=lambda e: (e != "real", e))


def engine_color(engine: str, engines: Sequence[str]) -> str:
    """The colour of ``engine`` in every figure: real and sim fixed, others by their place in
    ``engines``."""
    if engine in _ENGINE_STYLE:
        return _ENGINE_STYLE[engine]["color"]
    others = [e for e in engines if e not in _ENGINE_STYLE]
    return _EXTRA_COLORS[others.index(engine) % len(_EXTRA_COLORS)] if engine in others else "k"


def save_figure(fig: Figure, path: Path) -> Path:
    """Render ``fig`` on the Agg canvas into the PNG ``path`` (folders created); returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI)
    return path


def wrap(text: str, width: int = 70) -> str:
    """``text`` broken into lines of at most ``width`` characters at spaces (for titles)."""
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    return "\n".join(lines)


def numeric_column(frame: pd.DataFrame, col: str) -> pd.Series:
    """``frame[col]`` as float64 (unparseable values NaN), or all NaN when there is no such
    column (older or foreign folders)."""
    if col not in frame:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    return pd.to_numeric(frame[col], errors="coerce").astype("float64")

