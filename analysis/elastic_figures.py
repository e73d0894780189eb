"""Figures of elastic runs: ``elastic_<i>.png``.

Per elastic run, loss against time with the active level m(t) as a step line on a second
axis, probing phases shaded.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from .load import Loaded
from .plotting import numeric_column, save_figure

__all__ = ["ELASTIC_PER_FIGURE", "elastic_figures", "elastic_runs"]

ELASTIC_PER_FIGURE = 4
"""Elastic runs (one panel each) per figure."""


def elastic_runs(loaded: Loaded) -> pd.DataFrame:
    """The runs driven by an elastic controller: a ``controller`` other than ``static``, or,
    in folders without that column, a control trace with more than one level."""
    runs = loaded.runs
    if runs.empty:
        return runs
    ctl = runs["controller"] if "controller" in runs else pd.Series(None, index=runs.index)
    named = ctl.notna() & ~ctl.astype(str).isin(["", "static", "None", "nan"])
    control = loaded.control
    if control is not None and len(control):
        levels = control.groupby("uid")["m"].nunique()
        varied = runs["uid"].map(levels).fillna(0) > 1
        named = named | (ctl.isna() & varied)
    return runs[named.to_numpy(dtype=bool)]


def _level_steps(ctl: pd.DataFrame, end: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start times, levels and probing flags of the trace's phases, sorted, closed at ``end``."""
    t = ctl["t_set"].to_numpy(dtype=np.float64) if "t_set" in ctl else np.full(len(ctl), np.nan)
    t = np.where(np.isfinite(t), t, ctl["t"].to_numpy(dtype=np.float64))
    order = np.argsort(t, kind="stable")
    t = np.append(t[order], max(end, float(t.max()) if len(t) else end))
    t[0] = min(t[0], 0.0) if len(t) > 1 else t[0]
    return t, ctl["m"].to_numpy(dtype=np.float64)[order], \
        ctl["probing"].fillna(False).to_numpy(dtype=bool)[order]


def elastic_figures(loaded: Loaded, out: Path) -> list[Path]:
    """Loss against time with m(t) on a second axis for every elastic run (see the module
    docstring), :data:`ELASTIC_PER_FIGURE` runs per file; empty list when there is none."""
    el = elastic_runs(loaded)
    control = loaded.control
    if el.empty or control is None or control.empty:
        return []
    el = el[el["uid"].isin(set(control["uid"]))]
    if el.empty:
        return []
    el = el.sort_values(["source", "run_id"])
    paths = []
    for start in range(0, len(el), ELASTIC_PER_FIGURE):
        chunk = el.iloc[start:start + ELASTIC_PER_FIGURE]
        n = len(chunk)
        fig = Figure(figsize=(9.5, 2.9 * n + 0.9))
        axes = np.atleast_1d(fig.subplots(n, 1, squeeze=False)).ravel()
        for ax, (_, run) in zip(axes, chunk.iterrows(), strict=True):
            ctl = control[control["uid"] == run["uid"]]
            ev = loaded.evals[loaded.evals["uid"] == run["uid"]].sort_values("t")
            end = float(run.get("seconds", math.nan))
            if not math.isfinite(end):
                end = float(ev["t"].max()) if len(ev) else float(ctl["t"].max())
            t, m, probing = _level_steps(ctl, end)
            for a, b, p in zip(t[:-1], t[1:], probing, strict=True):
                if p and b > a:
                    ax.axvspan(a, b, color="gold", alpha=0.22, lw=0)
            loss = ev["loss"].to_numpy(dtype=np.float64)
            ok = np.isfinite(loss)
            ax.plot(ev["t"].to_numpy()[ok], loss[ok], color="C0", lw=1.4, label="loss")
            if ok.any() and (loss[ok] > 0).all() and loss[ok].max() / loss[ok].min() > 30:
                ax.set_yscale("log")
            ax.set_ylabel("loss", color="C0", fontsize=9)
            ax.tick_params(axis="y", colors="C0", labelsize=8)
            ax.tick_params(axis="x", labelsize=8)
            ax.set_xlim(0, max(end, float(t[-1])))
            ax.grid(alpha=0.3)
            tgt = float(numeric_column(pd.DataFrame([run]), "target_loss").iloc[0])
            if math.isfinite(tgt):
                ax.axhline(tgt, color="0.4", ls="--", lw=1)
            ax2 = ax.twinx()
            ax2.step(t, np.append(m, m[-1]), where="post", color="C3", lw=1.6)
            big = int(numeric_column(pd.DataFrame([run]), "workers").iloc[0]) if "workers" in run \
                else int(m.max())
            big = max(big, int(m.max()))
            ax2.set_ylim(0, big + 0.6)
            ax2.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(big, 8) + 1))
            ax2.set_ylabel("active workers m(t)", color="C3", fontsize=9)
            ax2.tick_params(axis="y", colors="C3", labelsize=8)
            mean_active = float(numeric_column(pd.DataFrame([run]), "mean_active").iloc[0])
            cpu = float(numeric_column(pd.DataFrame([run]), "cpu_seconds").iloc[0])
            bits = [f"{run.get('engine', '')} {run.get('algorithm', '')} M={big}",
                    f"controller {run.get('controller', '?')}"]
            if math.isfinite(mean_active):
                bits.append(f"mean active {mean_active:.2f}")
            if math.isfinite(cpu):
                bits.append(f"CPU {cpu:.3g} s")
            tt = float(numeric_column(pd.DataFrame([run]), "time_to_target").iloc[0])
            if math.isfinite(tt):
                bits.append(f"target at {tt:.3g} s")
            ax.set_title(f"{run['source']}/{run['run_id']}: " + ", ".join(bits), fontsize=9)
        axes[-1].set_xlabel("time since start (s)", fontsize=9)
        handles = [Line2D([], [], color="C0", lw=1.4, label="loss (left axis)"),
                   Line2D([], [], color="C3", lw=1.6, label="m(t) (right axis)"),
                   Patch(color="gold", alpha=0.3, label="probing phase"),
                   Line2D([], [], color="0.4", ls="--", label="target loss")]
        fig.legend(handles=handles, loc="upper center", ncol=4, fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, 1 - 0.45 / fig.get_figheight()))
        fig.suptitle("Elastic parallelism: loss and active workers over time", fontsize=11)
        fig.subplots_adjust(left=0.08, right=0.92, bottom=0.55 / fig.get_figheight(),
                            top=1 - 0.85 / fig.get_figheight(), hspace=0.55)
        paths.append(save_figure(fig, out / f"elastic_{start // ELASTIC_PER_FIGURE + 1}.png"))
    return paths
