"""Figures of convergence: loss curves per configuration, and runs against the exact recursion.

* ``convergence_<config>.png`` — loss against updates and against time, one thin line per
  seed, coloured by engine, target loss dashed, diverged runs marked ×;
* ``theory.png`` — least-squares runs' loss gaps beside the expected gap from the exact
  recursion fed with their own PDF(τ) (:mod:`.theory_report`), one panel per checked run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .plotting import THOUSANDS, engine_color, engine_order, save_figure, wrap
from .theory_report import TheoryChecks

__all__ = ["MAX_PANELS", "convergence_figure", "theory_figure"]


def _finite(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64).copy()
    y[~np.isfinite(y)] = np.nan
    return y


def convergence_figure(key: str, runs: pd.DataFrame, evals: pd.DataFrame, path: Path
                       ) -> Path | None:
    """Loss against updates (left) and against time (right) for one configuration: one thin
    line per run, coloured by engine.  Returns None when no run of it has evaluations."""
    ev = evals[evals["uid"].isin(set(runs["uid"]))]
    if ev.empty:
        return None
    engines = engine_order(runs["engine"].astype(str))
    fig = Figure(figsize=(9.0, 3.8))
    ax_k, ax_t = fig.subplots(1, 2, sharey=True)
    labelled: set[str] = set()
    finite_losses = []
    for _, run in runs.sort_values(["engine", "seed"]).iterrows():
        e = ev[ev["uid"] == run["uid"]].sort_values("t", kind="stable")
        if e.empty:
            continue
        color = engine_color(str(run["engine"]), engines)
        loss = _finite(e["loss"].to_numpy())
        finite_losses.append(loss[np.isfinite(loss)])
        n_seeds = int((runs["engine"] == run["engine"]).sum())
        label = None
        if run["engine"] not in labelled:
            label = f"{run['engine']} ({n_seeds} run{'s' if n_seeds != 1 else ''})"
            labelled.add(run["engine"])
        marker = "." if len(e) <= 40 else None
        ax_k.plot(e["k"].to_numpy(), loss, color=color, lw=0.9, alpha=0.75, label=label,
                  marker=marker, ms=4)
        ax_t.plot(e["t"].to_numpy(), loss, color=color, lw=0.9, alpha=0.75, marker=marker,
                  ms=4)
        if bool(run.get("diverged", False)) and np.isfinite(loss).any():
            last = int(np.flatnonzero(np.isfinite(loss))[-1])
            for ax, x in ((ax_k, e["k"].to_numpy()), (ax_t, e["t"].to_numpy())):
                ax.plot([x[last]], [loss[last]], "x", color=color, ms=8, mew=2)
    target = pd.to_numeric(runs.get("target_loss"), errors="coerce").dropna()
    if len(target) and np.isfinite(target.iloc[0]):
        for ax in (ax_k, ax_t):
            ax.axhline(float(target.iloc[0]), color="0.4", ls="--", lw=1)
        ax_k.plot([], [], color="0.4", ls="--", lw=1, label=f"target {target.iloc[0]:g}")
    vals = np.concatenate(finite_losses) if finite_losses else np.array([])
    vals = vals[vals > 0]
    if vals.size and vals.max() / vals.min() > 100:
        ax_k.set_yscale("log")
    ax_k.set_xlabel("updates k")
    ax_t.set_xlabel("time (s)")
    ax_k.set_ylabel("loss")
    for ax in (ax_k, ax_t):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(5))
    ax_k.xaxis.set_major_formatter(THOUSANDS)
    ax_k.legend(fontsize=8)
    fig.suptitle(wrap(f"Convergence: {key}", 100), fontsize=10)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.86, wspace=0.06)
    return save_figure(fig, path)


#: panels drawn by :func:`theory_figure` at most (one per checked run, in table order)
MAX_PANELS = 9


def theory_figure(checks: TheoryChecks, path: Path) -> Path | None:
    """Measured loss against the recursion's E[loss], as gaps to the evaluation split's
    minimum on a log scale, one panel per checked run; None when nothing was checked."""
    curves = checks.curves[:MAX_PANELS]
    if not curves:
        return None
    ncols = min(3, len(curves))
    nrows = -(-len(curves) // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, c in zip(axes.ravel(), curves, strict=False):
        ok = c.k > 0
        meas = np.maximum(c.measured[ok] - c.f_min, 1e-300)
        exp = np.maximum(c.expected[ok] - c.f_min, 1e-300)
        ax.plot(c.k[ok], meas, color="tab:blue", lw=1.4, marker="o", ms=2.5, label="run")
        ax.plot(c.k[ok], exp, color="k", ls="--", lw=1.2, label="exact recursion")
        ax.set_yscale("log")
        ax.set_title(c.label, fontsize=9)
        ax.set_xlabel("updates")
        ax.set_ylabel("loss − min (eval split)")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(curves):]:
        ax.set_visible(False)
    axes[0, 0].legend(fontsize=8)
    return save_figure(fig, path)
