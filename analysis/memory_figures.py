"""Figure of memory: ``memory.png``.

Peak parameter-buffer bytes, the Leashed-SGD pool high-water and peak RSS per algorithm and
m (grouped bar charts, one panel per measure present).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .load import Loaded
from .plotting import engine_order, numeric_column, save_figure, wrap

__all__ = ["memory_figure"]


def _bytes_unit(largest: float) -> tuple[float, str]:
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if largest >= scale:
            return float(scale), unit
    return 1.0, "B"


_MEMORY = (("peak_param_bytes", "Peak parameter buffers"),
           ("pool_high_water_bytes", "Leashed-SGD pool high-water"),
           ("peak_rss_bytes", "Peak RSS of the process"))


def memory_figure(loaded: Loaded, path: Path) -> list[Path]:
    """Grouped bars per algorithm (groups) and m (bars, mean over seeds and rules) of the peak
    parameter-buffer bytes, the Leashed-SGD pool high-water (bytes; the buffer count on top)
    and the peak RSS, one panel each for the measures present.  Real runs are used when they
    have the measure, else every engine's."""
    runs = loaded.runs
    if runs.empty:
        return []
    panels = []
    for col, title in _MEMORY:
        vals = numeric_column(runs, col)
        have = runs[np.isfinite(vals) & (vals > 0)]
        if have.empty:
            continue
        real = have[have["engine"] == "real"]
        use = real if len(real) else have
        panels.append((col, title, use, "real" if len(real) else ", ".join(
            engine_order(use["engine"].astype(str)))))
    if not panels:
        return []
    ms_all = sorted({int(m) for _, _, u, _ in panels
                     for m in numeric_column(u, "workers").dropna()})
    cmap_colors = [f"C{i % 10}" for i in range(len(ms_all))]
    fig = Figure(figsize=(3.9 * len(panels) + 1.2, 4.0))
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)).ravel()
    for ax, (col, title, use, eng) in zip(axes, panels, strict=True):
        algs = sorted(set(use["algorithm"].astype(str)))
        workers = numeric_column(use, "workers")
        agg = use.assign(_v=numeric_column(use, col), _m=workers.astype(int)).groupby(
            ["algorithm", "_m"])["_v"].mean()
        scale, unit = _bytes_unit(float(agg.max()))
        width = 0.8 / max(len(ms_all), 1)
        for gi, alg in enumerate(algs):
            for bi, m in enumerate(ms_all):
                if (alg, m) not in agg.index:
                    continue
                v = float(agg[(alg, m)]) / scale
                x = gi - 0.4 + width * (bi + 0.5)
                ax.bar(x, v, width=width * 0.92, color=cmap_colors[bi])
                if col == "pool_high_water_bytes" and "pool_high_water" in use:
                    mine = use[(use["algorithm"] == alg) & (workers == m)]
                    n = numeric_column(mine, "pool_high_water").max()
                    if np.isfinite(n):
                        ax.text(x, v, f"{int(n)}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(algs)))
        ax.set_xticklabels(algs, fontsize=9)
        ax.set_ylabel(f"{unit}", fontsize=9)
        ax.set_ylim(0, float(agg.max()) / scale * 1.15)
        ax.set_title(wrap(f"{title} ({eng})", 40), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(labelsize=8)
    handles = [Patch(color=cmap_colors[i], label=f"m = {m}") for i, m in enumerate(ms_all)]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False,
               title="workers", title_fontsize=8)
    fig.suptitle("Memory per algorithm and number of workers (mean over seeds and rules)",
                 fontsize=11)
    fig.subplots_adjust(left=0.8 / fig.get_figwidth(), right=1 - 1.15 / fig.get_figwidth(),
                        bottom=0.1, top=0.82, wspace=0.3)
    return [save_figure(fig, path)]
