"""Figures of staleness: PDF(τ) per configuration, and τ over the course of the runs.

* ``pdf_<config>.png`` — PDF(τ) per configuration, one curve per engine, with the best fitted
  law as dots and the TV/KS/W1 distance to the reference engine in the legend; long tails are
  cut at the 99.9 % quantile (the mass beyond is given in the legend); log-y on request or
  automatically when the probabilities span more than two decades;
* ``tau_over_time_<i>.png`` — τ against time (seconds since the start) for every
  configuration with m > 1, small multiples: p50/p90/p99 of τ over time bins per engine, and
  the largest τ of each bin as dots, so that oversubscription bursts stand out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from stalesgd import staleness as st

from .load import Loaded
from .plotting import engine_color, engine_order, numeric_column, save_figure, wrap

__all__ = ["PANELS_PER_FIGURE", "TIME_BINS", "pdf_figure", "tau_time_figures"]

PANELS_PER_FIGURE = 12
"""Small multiples per figure (τ over time); more configurations spill into further files."""
TIME_BINS = 120
"""Time bins of the τ-over-time quantiles."""

_QUANTILES = ((0.5, "p50", "-", 1.8), (0.9, "p90", "--", 1.2), (0.99, "p99", ":", 1.2))


def pdf_figure(key: str, hists: dict[str, np.ndarray], path: Path,
               dists: dict[str, st.PdfDistances] | None = None,
               fits: dict[str, st.Fit] | None = None, log_y: bool | None = None) -> Path:
    """Draw the PDF(τ) of one configuration for each engine (``hists``: engine -> counts).

    ``dists``: distance of each non-reference engine to the reference (shown in the legend);
    ``fits``: best fitted law per engine (drawn as dots); ``log_y``: None = automatic.
    """
    if not hists:
        raise ValueError(f"no staleness histogram for configuration {key!r}")
    engines = engine_order(hists)
    cut = 0
    for h in hists.values():
        cut = max(cut, int(st.quantiles(h, 0.999)[0]))
    longest = max(int(np.flatnonzero(h)[-1]) for h in hists.values())
    x_max = max(min(longest, max(cut, 10)), 5)
    fig = Figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot()
    smallest, largest = 1.0, 0.0
    for engine in engines:
        h = hists[engine]
        p = st.pdf(h)
        shown = np.zeros(x_max + 1)
        shown[: min(p.size, x_max + 1)] = p[: x_max + 1]
        tail = float(p[x_max + 1:].sum())
        color = engine_color(engine, engines)
        label = f"{engine} (n={int(h.sum()):,}, mean τ={st.mean(h):.3g})"
        if dists and engine in dists:
            d = dists[engine]
            label += f"\n  TV={d.tv:.3f} KS={d.ks:.3f} W1={d.w1:.3g}"
        if tail > 0:
            label += (f"\n  mass beyond τ={x_max}: {tail:.2%} "
                      f"(max τ {int(np.flatnonzero(h)[-1]):,})")
        edges = np.arange(x_max + 2) - 0.5
        fill = engine == engines[0]
        ax.stairs(shown, edges, color=color, lw=1.6, label=label, fill=fill,
                  alpha=0.35 if fill else 1.0)
        if fill:
            ax.stairs(shown, edges, color=color, lw=1.6)
        nz = shown[shown > 0]
        if nz.size:
            smallest, largest = min(smallest, float(nz.min())), max(largest, float(nz.max()))
        fit = (fits or {}).get(engine)
        if fit is not None:
            t = np.arange(x_max + 1)
            ax.plot(t, fit.pmf(x_max), ".", color=color, ms=4 if x_max > 40 else 6,
                    label=f"  {engine} fit: {fit.family}")
    if log_y is None:
        log_y = largest > 0 and largest / smallest > 100
    if log_y:
        ax.set_yscale("log")
        ax.set_ylim(bottom=max(smallest / 3, 1e-9), top=1.5)  # probabilities: nothing above 1
    ax.set_xlim(-0.6, x_max + 0.6)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("staleness τ")
    ax.set_ylabel("P(τ)")
    ax.set_title(wrap(f"PDF(τ): {key}"), fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.12, top=0.87)
    return save_figure(fig, path)


def _common_words(keys: Sequence[str]) -> tuple[str, list[str]]:
    """The words every key shares (for a suptitle) and each key without them (panel titles)."""
    split = [k.split() for k in keys]
    common = set(split[0]).intersection(*split[1:]) if split else set()
    if len(keys) == 1:
        common = set()
    shared = " ".join(w for w in split[0] if w in common) if split else ""
    rest = [" ".join(w for w in s if w not in common) or k for s, k in zip(split, keys,
                                                                           strict=True)]
    return shared, rest


def _grid(n: int, ncols: int = 3) -> tuple[int, int]:
    ncols = min(ncols, n)
    return math.ceil(n / ncols), ncols


def _tau_quantiles(t: np.ndarray, tau: np.ndarray, bins: int) -> dict[str, np.ndarray]:
    """Per time bin: centre, p50/p90/p99 and max of τ (bins without updates are dropped)."""
    order = np.argsort(t, kind="stable")
    t, tau = t[order], tau[order]
    edges = np.linspace(t[0], t[-1], bins + 1) if t[-1] > t[0] else np.array([t[0], t[0] + 1])
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(edges) - 2)
    frame = pd.DataFrame({"b": idx, "tau": tau})
    g = frame.groupby("b")["tau"]
    q = g.quantile([q for q, *_ in _QUANTILES]).unstack()
    out = {"t": 0.5 * (edges[q.index.to_numpy()] + edges[q.index.to_numpy() + 1]),
           "max": g.max().to_numpy(dtype=np.float64)}
    for qq, name, *_ in _QUANTILES:
        out[name] = q[qq].to_numpy(dtype=np.float64)
    return out


def tau_time_figures(loaded: Loaded, out: Path, bins: int = TIME_BINS) -> list[Path]:
    """τ against time for every configuration with m > 1 (see the module docstring); one
    file per :data:`PANELS_PER_FIGURE` configurations, empty list when there is none."""
    runs, upd = loaded.runs, loaded.updates
    if runs.empty or upd.empty:
        return []
    multi = runs[numeric_column(runs, "workers") > 1]
    upd = upd[~upd["dropped"].fillna(False).astype(bool)] if "dropped" in upd else upd
    have = set(upd["uid"])
    keys = sorted({k for k, u in zip(multi["config_key"], multi["uid"], strict=True)
                   if u in have})
    if not keys:
        return []
    engines = engine_order(runs["engine"].dropna().astype(str))
    by_uid = {u: g for u, g in upd.groupby("uid", sort=False)}
    paths = []
    for start in range(0, len(keys), PANELS_PER_FIGURE):
        chunk = keys[start:start + PANELS_PER_FIGURE]
        shared, titles = _common_words(chunk)
        nrows, ncols = _grid(len(chunk))
        fig = Figure(figsize=(4.1 * ncols + 0.6, 2.7 * nrows + 1.0))
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax, key, title in zip(axes, chunk, titles, strict=False):
            grp = multi[multi["config_key"] == key]
            big = 0.0
            for engine in engine_order(grp["engine"].astype(str)):
                frames = [by_uid[u] for u in grp.loc[grp["engine"] == engine, "uid"]
                          if u in by_uid]
                if not frames:
                    continue
                u = pd.concat(frames)
                t = u["t_apply"].to_numpy(dtype=np.float64)
                tau = u["tau"].to_numpy(dtype=np.float64)
                ok = np.isfinite(t) & np.isfinite(tau)
                if not ok.any():
                    continue
                q = _tau_quantiles(t[ok], tau[ok], bins)
                color = engine_color(engine, engines)
                for _, name, ls, lw in _QUANTILES:
                    ax.plot(q["t"], q[name], color=color, ls=ls, lw=lw)
                ax.plot(q["t"], q["max"], ".", color=color, ms=2.5, alpha=0.5)
                big = max(big, float(np.nanmax(q["max"])))
            if big > 30:
                ax.set_yscale("symlog", linthresh=2.0, linscale=0.6)
            ax.set_ylim(bottom=-0.3 if big <= 30 else 0)
            ax.set_title(wrap(title, 45), fontsize=9)
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.tick_params(labelsize=8)
        for ax in axes[len(chunk):]:
            ax.set_visible(False)
        for i, ax in enumerate(axes[:len(chunk)]):
            if i % ncols == 0:
                ax.set_ylabel("staleness τ", fontsize=9)
            if i >= len(chunk) - ncols:
                ax.set_xlabel("time since start (s)", fontsize=9)
        handles = [Patch(color=engine_color(e, engines), label=e) for e in engines
                   if e in set(multi[multi["config_key"].isin(chunk)]["engine"].astype(str))]
        handles += [Line2D([], [], color="0.3", ls=ls, lw=lw, label=f"{name} of τ per time bin")
                    for _, name, ls, lw in _QUANTILES]
        handles.append(Line2D([], [], color="0.3", marker=".", ls="", label="max τ per bin"))
        fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8,
                   frameon=False, bbox_to_anchor=(0.5, 1 - 0.55 / fig.get_figheight()))
        part = f" ({start // PANELS_PER_FIGURE + 1})" if len(keys) > PANELS_PER_FIGURE else ""
        fig.suptitle(wrap(f"Staleness over time{part}" + (f": {shared}" if shared else ""),
                           110), fontsize=11)
        top = 1 - 0.95 / fig.get_figheight()
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.55 / fig.get_figheight() + 0.03,
                            top=top, hspace=0.5, wspace=0.18)
        name = f"tau_over_time_{start // PANELS_PER_FIGURE + 1}.png"
        paths.append(save_figure(fig, out / name))
    return paths
