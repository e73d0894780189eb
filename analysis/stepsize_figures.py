"""Figure of the step sizes applied: ``stepsize_tables.png``.

η(τ) as the runs applied it (read off the ``updates`` table) per step-size rule and m, one
line per algorithm and engine, with the pooled PDF(τ) as grey bars behind (right axis, 0..1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from .load import Loaded
from .plotting import engine_order, save_figure

__all__ = ["stepsize_figure", "stepsize_points"]


def stepsize_points(loaded: Loaded) -> pd.DataFrame:
    """η against τ as the runs applied it, from the ``updates`` table (dropped gradients left
    out): one row per (stepsize, workers, algorithm, engine, tau) with ``eta`` (median over the
    second half of each run, once an adaptive rule has settled), ``eta_min``/``eta_max`` (over
    the whole run, warm-up included) and ``n`` (updates)."""
    cols = ["stepsize", "workers", "algorithm", "engine", "tau", "eta", "eta_min", "eta_max",
            "n"]
    runs, upd = loaded.runs, loaded.updates
    if runs.empty or upd.empty or "eta" not in upd:
        return pd.DataFrame(columns=cols)
    u = upd[~upd["dropped"].fillna(False).astype(bool)] if "dropped" in upd else upd
    u = u[np.isfinite(u["eta"].astype(float))]
    if u.empty:
        return pd.DataFrame(columns=cols)
    meta = runs[["uid", "stepsize", "workers", "algorithm", "engine"]].copy()
    meta["stepsize"] = meta["stepsize"].fillna("?").astype(str)
    u = u[["uid", "k", "tau", "eta"]].merge(meta, on="uid")
    half = u.groupby("uid")["k"].transform("median")
    groups = ["stepsize", "workers", "algorithm", "engine", "tau"]
    whole = u.groupby(groups).agg(eta_min=("eta", "min"), eta_max=("eta", "max"),
                                  n=("eta", "size"))
    late = u[u["k"] >= half].groupby(groups)["eta"].median()
    out = whole.join(late, how="left").reset_index()
    out["eta"] = out["eta"].fillna(0.5 * (out["eta_min"] + out["eta_max"]))
    return out[cols]


def stepsize_figure(loaded: Loaded, path: Path) -> list[Path]:
    """η(τ) per step-size rule (rows) and m (columns; m = 1 only when no m > 1 exists), one
    line per algorithm (colour) and engine (line style), min–max band over the run, pooled
    PDF(τ) of the panel as grey bars on a right axis (0..1)."""
    pts = stepsize_points(loaded)
    if pts.empty:
        return []
    ms = sorted(set(pts["workers"].astype(int)))
    if len(ms) > 1:
        ms = [m for m in ms if m > 1]
    rules = sorted(set(pts["stepsize"]))
    algs = sorted(set(pts["algorithm"].astype(str)))
    engines = engine_order(pts["engine"].astype(str))
    styles = ["-", "--", ":", "-."]
    nrows, ncols = len(rules), len(ms)
    fig = Figure(figsize=(max(3.6 * ncols, 6.0) + 1.8, 2.8 * nrows + 1.1))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, rule in enumerate(rules):
        for j, m in enumerate(ms):
            ax = axes[i, j]
            sel = pts[(pts["stepsize"] == rule) & (pts["workers"].astype(int) == m)]
            if sel.empty:
                ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes,
                        color="0.5")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{rule}, m={m}", fontsize=9)
                continue
            pooled = sel.groupby("tau")["n"].sum()
            cdf = pooled.cumsum() / pooled.sum()
            x_max = int(max(5, cdf.index[np.searchsorted(cdf.to_numpy(), 0.999)]))
            bg = ax.twinx()
            shown = pooled[pooled.index <= x_max]
            bg.bar(shown.index, shown.to_numpy() / pooled.sum(), width=0.9, color="0.85",
                   zorder=0)
            bg.set_ylim(0, 1)
            bg.tick_params(labelsize=7, colors="0.45")
            if j == ncols - 1:
                bg.set_ylabel("P(τ) (grey bars)", fontsize=8, color="0.45")
            else:
                bg.set_yticklabels([])
            ax.set_zorder(bg.get_zorder() + 1)
            ax.patch.set_visible(False)
            for (alg, engine), g in sel.groupby(["algorithm", "engine"]):
                g = g[g["tau"] <= x_max].sort_values("tau")
                color = f"C{algs.index(str(alg)) % 10}"
                ls = styles[engines.index(str(engine)) % len(styles)]
                x = g["tau"].to_numpy(dtype=np.float64)
                ax.fill_between(x, g["eta_min"], g["eta_max"], color=color, alpha=0.12,
                                step="mid", lw=0)
                ax.plot(x, g["eta"], color=color, ls=ls, marker="o", ms=3, lw=1.3,
                        drawstyle="steps-mid")
            ax.set_xlim(-0.6, x_max + 0.6)
            ax.set_ylim(bottom=0)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
            ax.set_title(f"{rule}, m={m}", fontsize=9)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=8)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.3g}"))
            if j == 0:
                ax.set_ylabel("step size η", fontsize=9)
            if i == nrows - 1:
                ax.set_xlabel("staleness τ", fontsize=9)
    handles = [Line2D([], [], color=f"C{k % 10}", lw=2, label=a) for k, a in enumerate(algs)]
    if len(engines) > 1:
        handles += [Line2D([], [], color="0.3", ls=styles[k % len(styles)], label=e)
                    for k, e in enumerate(engines)]
    handles += [Patch(color="C0", alpha=0.15, label="min–max over the run"),
                Patch(color="0.85", label="P(τ), pooled")]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.suptitle("Step size applied against staleness, η(τ) = lr · s(τ)", fontsize=11)
    fig.subplots_adjust(left=0.9 / fig.get_figwidth(), right=1 - 1.95 / fig.get_figwidth(),
                        bottom=0.6 / fig.get_figheight(), top=1 - 0.75 / fig.get_figheight(),
                        hspace=0.45, wspace=0.22)
    return [save_figure(fig, path)]
