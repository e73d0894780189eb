"""The report's cross-cutting figures (issues 6 and 8), drawn beside those of :mod:`.figures`.

* ``speedup_vs_workers.png`` — speedup against workers with the linear-ideal line y = m: time
  to target of the 1-worker run of the same algorithm and rule (``seq`` when there is none)
  over time to target at m (left), and the same ratio of updates/s (right);
* ``tau_over_time_<i>.png`` — τ against time (seconds since the start) for every
  configuration with m > 1, small multiples: p50/p90/p99 of τ over time bins per engine, and
  the largest τ of each bin as dots, so that oversubscription bursts stand out;
* ``stepsize_tables.png`` — η(τ) as the runs applied it (read off the ``updates`` table) per
  step-size rule and m, one line per algorithm and engine, with the pooled PDF(τ) as grey bars
  behind (right axis, 0..1);
* ``memory.png`` — peak parameter-buffer bytes, the Leashed-SGD pool high-water and peak RSS
  per algorithm and m (bar charts);
* ``elastic_<i>.png`` — per elastic run, loss against time with the active level m(t) as a
  step line on a second axis, probing phases shaded.

Each ``*_figure`` function returns the paths written, or an empty list when the loaded
folders have nothing to plot; :func:`extra_figures` draws them all and returns notes that say
which were skipped and why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from .figures import FigureFile, _engine_color, _save, _wrap
from .load import Loaded

__all__ = [
    "elastic_figures",
    "elastic_runs",
    "extra_figures",
    "memory_figure",
    "speedup_figure",
    "speedup_points",
    "stepsize_figure",
    "stepsize_points",
    "tau_time_figures",
]

PANELS_PER_FIGURE = 12
"""Small multiples per figure (τ over time); more configurations spill into further files."""
ELASTIC_PER_FIGURE = 4
"""Elastic runs (one panel each) per figure."""
TIME_BINS = 120
"""Time bins of the τ-over-time quantiles."""

_QUANTILES = ((0.5, "p50", "-", 1.8), (0.9, "p90", "--", 1.2), (0.99, "p99", ":", 1.2))


def _engines(values: Sequence[str]) -> list[str]:
    return sorted(set(values), key=lambda e: (e != "real", e))


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


def _bytes_unit(largest: float) -> tuple[float, str]:
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if largest >= scale:
            return float(scale), unit
    return 1.0, "B"


def _num(frame: pd.DataFrame, col: str) -> pd.Series:
    if col not in frame:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    return pd.to_numeric(frame[col], errors="coerce").astype("float64")


# ---------------------------------------------------------------------------------------------
# Speedup against workers
# ---------------------------------------------------------------------------------------------


def speedup_points(loaded: Loaded) -> pd.DataFrame:
    """Speedup of each (configuration, engine) over its 1-worker baseline.

    The baseline is the ``workers = 1`` run group of the same engine, problem, algorithm,
    step-size rule, lr, batch and dtype; when there is none, the ``seq`` group of the same
    engine, problem, rule, lr, batch and dtype.  Columns: ``algorithm``, ``stepsize``,
    ``engine``, ``workers``, ``baseline`` (``m=1`` or ``seq``), ``speedup`` (ratio of the mean
    times to target over the seeds that reached it; NaN when either did not) and
    ``throughput_speedup`` (ratio of mean updates/s).
    """
    runs = loaded.runs
    cols = ["algorithm", "stepsize", "engine", "workers", "baseline", "speedup",
            "throughput_speedup"]
    if runs.empty or "workers" not in runs:
        return pd.DataFrame(columns=cols)
    r = runs.copy()
    ident = [c for c in ("engine", "problem", "algorithm", "stepsize", "lr", "batch", "dtype")
             if c in r]
    for c in ident:
        r[c] = r[c].astype(object).where(r[c].notna(), "")
    r["_t"] = _num(r, "time_to_target").where(r["reached"].astype(bool)
                                             if "reached" in r else True)
    r["_ups"] = _num(r, "updates_per_s")
    r["workers"] = _num(r, "workers")
    agg = r.groupby(ident + ["workers"], dropna=False).agg(t=("_t", "mean"),
                                                           ups=("_ups", "mean")).reset_index()
    rows = []
    no_alg = [c for c in ident if c != "algorithm"]
    for _, row in agg.iterrows():
        if row.get("algorithm") == "seq":
            continue
        same = np.ones(len(agg), dtype=bool)
        for c in ident:
            same &= (agg[c] == row[c]).to_numpy()
        base = agg[same & (agg["workers"] == 1).to_numpy()]
        kind = "m=1"
        if base.empty:
            same = np.ones(len(agg), dtype=bool)
            for c in no_alg:
                same &= (agg[c] == row[c]).to_numpy()
            base = agg[same & (agg["algorithm"] == "seq").to_numpy()] if "algorithm" in agg \
                else base.iloc[0:0]
            kind = "seq"
        if base.empty:
            continue
        b = base.iloc[0]
        rows.append({"algorithm": row.get("algorithm", ""), "stepsize": row.get("stepsize", ""),
                     "engine": row["engine"], "workers": float(row["workers"]),
                     "baseline": kind,
                     "speedup": b["t"] / row["t"] if row["t"] > 0 else math.nan,
                     "throughput_speedup": b["ups"] / b["ups"] * row["ups"] / b["ups"]
                     if b["ups"] > 0 else math.nan})
    return pd.DataFrame(rows, columns=cols)


def speedup_figure(loaded: Loaded, path: Path) -> list[Path]:
    """Speedup (time to target, left; updates/s, right) against workers per algorithm (colour),
    rule (marker) and engine (line style), with the linear ideal y = m; nothing drawn (empty
    list) when no configuration has a 1-worker or ``seq`` baseline and m > 1."""
    pts = speedup_points(loaded)
    pts = pts[np.isfinite(pts["throughput_speedup"].astype(float)) | np.isfinite(
        pts["speedup"].astype(float))]
    if pts.empty or pts["workers"].max() <= 1:
        return []
    engines = _engines(pts["engine"].astype(str))
    rules = sorted(set(pts["stepsize"].astype(str)))
    algs = sorted(set(pts["algorithm"].astype(str)))
    markers, styles = "osD^v<>p*", ["-", "--", ":", "-."]
    has_t = bool(np.isfinite(pts["speedup"].astype(float)).any())
    fig = Figure(figsize=(10.5, 4.4))
    ax_t, ax_u = fig.subplots(1, 2)
    m_max = float(pts["workers"].max())
    ms = sorted(set(pts["workers"].astype(int)))
    top = m_max
    for (alg, rule, engine), grp in pts.groupby(["algorithm", "stepsize", "engine"]):
        grp = grp.sort_values("workers")
        kw = dict(color=f"C{algs.index(str(alg)) % 10}",
                  ls=styles[engines.index(str(engine)) % len(styles)],
                  marker=markers[rules.index(str(rule)) % len(markers)], ms=6,
                  fillstyle="full" if engines.index(str(engine)) == 0 else "none")
        label = f"{alg}" + (f" / {rule}" if len(rules) > 1 else "") + (
            f" ({engine})" if len(engines) > 1 else "")
        for ax, col in ((ax_t, "speedup"), (ax_u, "throughput_speedup")):
            y = grp[col].to_numpy(dtype=np.float64)
            ok = np.isfinite(y)
            if ok.any():
                ax.plot(grp["workers"].to_numpy(dtype=np.float64)[ok], y[ok], label=label, **kw)
                top = max(top, float(y[ok].max()))
    for ax in (ax_t, ax_u):
        ax.plot([1, m_max], [1, m_max], color="0.4", ls=(0, (4, 3)), lw=1.2,
                label="linear ideal (= m)")
        ax.axhline(1.0, color="0.75", lw=0.8)
        ax.set_xlabel("workers m")
        ax.set_xticks(ms)
        ax.set_xlim(0.7, m_max + 0.3)
        ax.set_ylim(0, top * 1.08)
        ax.grid(alpha=0.3)
    base = ", ".join(sorted(set(pts["baseline"].astype(str))))
    ax_t.set_ylabel(f"speedup in time to target (vs {base})")
    ax_u.set_ylabel(f"updates/s ratio (vs {base})")
    ax_t.set_title("Time to target" + ("" if has_t else " (no run reached the target)"),
                   fontsize=10)
    ax_u.set_title("Throughput", fontsize=10)
    handles, labels = ax_u.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center right", frameon=False)
    fig.suptitle("Speedup against workers", fontsize=11)
    fig.subplots_adjust(left=0.07, right=0.78, bottom=0.12, top=0.86, wspace=0.25)
    return [_save(fig, path)]


# ---------------------------------------------------------------------------------------------
# τ over time
# ---------------------------------------------------------------------------------------------


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
    multi = runs[_num(runs, "workers") > 1]
    upd = upd[~upd["dropped"].fillna(False).astype(bool)] if "dropped" in upd else upd
    have = set(upd["uid"])
    keys = sorted({k for k, u in zip(multi["config_key"], multi["uid"], strict=True)
                   if u in have})
    if not keys:
        return []
    engines = _engines(runs["engine"].dropna().astype(str))
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
            for engine in _engines(grp["engine"].astype(str)):
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
                color = _engine_color(engine, engines)
                for _, name, ls, lw in _QUANTILES:
                    ax.plot(q["t"], q[name], color=color, ls=ls, lw=lw)
                ax.plot(q["t"], q["max"], ".", color=color, ms=2.5, alpha=0.5)
                big = max(big, float(np.nanmax(q["max"])))
            if big > 30:
                ax.set_yscale("symlog", linthresh=2.0, linscale=0.6)
            ax.set_ylim(bottom=-0.3 if big <= 30 else 0)
            ax.set_title(_wrap(title, 45), fontsize=9)
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
        handles = [Patch(color=_engine_color(e, engines), label=e) for e in engines
                   if e in set(multi[multi["config_key"].isin(chunk)]["engine"].astype(str))]
        from matplotlib.lines import Line2D
        handles += [Line2D([], [], color="0.3", ls=ls, lw=lw, label=f"{name} of τ per time bin")
                    for _, name, ls, lw in _QUANTILES]
        handles.append(Line2D([], [], color="0.3", marker=".", ls="", label="max τ per bin"))
        fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8,
                   frameon=False, bbox_to_anchor=(0.5, 1 - 0.55 / fig.get_figheight()))
        part = f" ({start // PANELS_PER_FIGURE + 1})" if len(keys) > PANELS_PER_FIGURE else ""
        fig.suptitle(_wrap(f"Staleness over time{part}" + (f": {shared}" if shared else ""),
                           110), fontsize=11)
        top = 1 - 0.95 / fig.get_figheight()
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.55 / fig.get_figheight() + 0.03,
                            top=top, hspace=0.5, wspace=0.18)
        name = f"tau_over_time_{start // PANELS_PER_FIGURE + 1}.png"
        paths.append(_save(fig, out / name))
    return paths


# ---------------------------------------------------------------------------------------------
# η(τ) tables
# ---------------------------------------------------------------------------------------------


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
    engines = _engines(pts["engine"].astype(str))
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
    from matplotlib.lines import Line2D
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
    return [_save(fig, path)]


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------


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
        vals = _num(runs, col)
        have = runs[np.isfinite(vals) & (vals > 0)]
        if have.empty:
            continue
        real = have[have["engine"] == "real"]
        use = real if len(real) else have
        panels.append((col, title, use, "real" if len(real) else ", ".join(
            _engines(use["engine"].astype(str)))))
    if not panels:
        return []
    ms_all = sorted({int(m) for _, _, u, _ in panels for m in _num(u, "workers").dropna()})
    cmap_colors = [f"C{i % 10}" for i in range(len(ms_all))]
    fig = Figure(figsize=(3.9 * len(panels) + 1.2, 4.0))
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)).ravel()
    for ax, (col, title, use, eng) in zip(axes, panels, strict=True):
        algs = sorted(set(use["algorithm"].astype(str)))
        agg = use.assign(_v=_num(use, col), _m=_num(use, "workers").astype(int)).groupby(
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
                    n = _num(use[(use["algorithm"] == alg) & (_num(use, "workers") == m)],
                             "pool_high_water").max()
                    if np.isfinite(n):
                        ax.text(x, v, f"{int(n)}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(algs)))
        ax.set_xticklabels(algs, fontsize=9)
        ax.set_ylabel(f"{unit}", fontsize=9)
        ax.set_ylim(0, float(agg.max()) / scale * 1.15)
        ax.set_title(_wrap(f"{title} ({eng})", 40), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(labelsize=8)
    handles = [Patch(color=cmap_colors[i], label=f"m = {m}") for i, m in enumerate(ms_all)]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False,
               title="workers", title_fontsize=8)
    fig.suptitle("Memory per algorithm and number of workers (mean over seeds and rules)",
                 fontsize=11)
    fig.subplots_adjust(left=0.8 / fig.get_figwidth(), right=1 - 1.15 / fig.get_figwidth(),
                        bottom=0.1, top=0.82, wspace=0.3)
    return [_save(fig, path)]


# ---------------------------------------------------------------------------------------------
# Elastic runs
# ---------------------------------------------------------------------------------------------


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
            tgt = float(_num(pd.DataFrame([run]), "target_loss").iloc[0])
            if math.isfinite(tgt):
                ax.axhline(tgt, color="0.4", ls="--", lw=1)
            ax2 = ax.twinx()
            ax2.step(t, np.append(m, m[-1]), where="post", color="C3", lw=1.6)
            big = int(_num(pd.DataFrame([run]), "workers").iloc[0]) if "workers" in run \
                else int(m.max())
            big = max(big, int(m.max()))
            ax2.set_ylim(0, big + 0.6)
            ax2.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(big, 8) + 1))
            ax2.set_ylabel("active workers m(t)", color="C3", fontsize=9)
            ax2.tick_params(axis="y", colors="C3", labelsize=8)
            mean_active = float(_num(pd.DataFrame([run]), "mean_active").iloc[0])
            cpu = float(_num(pd.DataFrame([run]), "cpu_seconds").iloc[0])
            bits = [f"{run.get('engine', '')} {run.get('algorithm', '')} M={big}",
                    f"controller {run.get('controller', '?')}"]
            if math.isfinite(mean_active):
                bits.append(f"mean active {mean_active:.2f}")
            if math.isfinite(cpu):
                bits.append(f"CPU {cpu:.3g} s")
            tt = float(_num(pd.DataFrame([run]), "time_to_target").iloc[0])
            if math.isfinite(tt):
                bits.append(f"target at {tt:.3g} s")
            ax.set_title(f"{run['source']}/{run['run_id']}: " + ", ".join(bits), fontsize=9)
        axes[-1].set_xlabel("time since start (s)", fontsize=9)
        from matplotlib.lines import Line2D
        handles = [Line2D([], [], color="C0", lw=1.4, label="loss (left axis)"),
                   Line2D([], [], color="C3", lw=1.6, label="m(t) (right axis)"),
                   Patch(color="gold", alpha=0.3, label="probing phase"),
                   Line2D([], [], color="0.4", ls="--", label="target loss")]
        fig.legend(handles=handles, loc="upper center", ncol=4, fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, 1 - 0.45 / fig.get_figheight()))
        fig.suptitle("Elastic parallelism: loss and active workers over time", fontsize=11)
        fig.subplots_adjust(left=0.08, right=0.92, bottom=0.55 / fig.get_figheight(),
                            top=1 - 0.85 / fig.get_figheight(), hspace=0.55)
        paths.append(_save(fig, out / f"elastic_{start // ELASTIC_PER_FIGURE + 1}.png"))
    return paths


# ---------------------------------------------------------------------------------------------
# All of them
# ---------------------------------------------------------------------------------------------


def extra_figures(loaded: Loaded, out: Path) -> tuple[list[FigureFile], list[str]]:
    """Draw every figure of this module into ``out``; return them (report order) and notes
    naming each figure that was skipped and why."""
    files: list[FigureFile] = []
    notes: list[str] = []
    got = speedup_figure(loaded, out / "speedup_vs_workers.png")
    if got:
        files.append(FigureFile(got[0], "Speedup against workers",
                                "Left: time to target of the 1-worker run of the same "
                                "algorithm and rule (seq where there is none) over time to "
                                "target at m, mean over the seeds that reached it; right: the "
                                "same ratio of updates/s. Dashed: linear ideal (speedup = m).",
                                "speedup"))
    else:
        notes.append("Speedup figure skipped: no configuration with m > 1 has a 1-worker or "
                     "seq baseline of the same algorithm/rule.")
    got = memory_figure(loaded, out / "memory.png")
    if got:
        files.append(FigureFile(got[0], "Memory", "Peak parameter-buffer bytes, the Leashed-SGD "
                                "buffer-pool high-water (buffer count on top of each bar) and "
                                "the peak RSS of the process when the run ended (runs in one "
                                "process share it: later runs inherit earlier peaks).",
                                "memory"))
    else:
        notes.append("Memory figure skipped: no run recorded peak_param_bytes, "
                     "pool_high_water_bytes or peak_rss_bytes.")
    got = elastic_figures(loaded, out)
    for i, p in enumerate(got):
        files.append(FigureFile(p, "Elastic parallelism" + (f" ({i + 1})" if len(got) > 1
                                                            else ""),
                                "Loss on consistent snapshots against time (left axis) and the "
                                "active level m(t) the controller set (right axis); shaded: "
                                "probing phases.", "elastic"))
    if not got:
        notes.append("Elastic figure skipped: no run with an elastic controller (and a control "
                     "trace) in these folders.")
    got = stepsize_figure(loaded, out / "stepsize_tables.png")
    if got:
        files.append(FigureFile(got[0], "Step-size tables η(τ)",
                                "η applied against τ, read off the updates: the line is the "
                                "median over the second half of each run (adaptive rules "
                                "settled), the band min–max over the whole run (warm-up "
                                "included); grey bars: pooled PDF(τ) of the panel (right "
                                "axis). τ beyond the 99.9 % quantile is cut.", "stepsize"))
    else:
        notes.append("Step-size figure skipped: no update carries a step size (eta).")
    got = tau_time_figures(loaded, out)
    for i, p in enumerate(got):
        files.append(FigureFile(p, "Staleness over time" + (f" ({i + 1})" if len(got) > 1
                                                            else ""),
                                f"τ against time per configuration with m > 1: p50/p90/p99 "
                                f"over {TIME_BINS} time bins (seeds pooled) and the largest τ "
                                "of each bin as dots; bursts show descheduled workers.",
                                "tau_time"))
    if not got:
        notes.append("Staleness-over-time figure skipped: no configuration with m > 1 "
                     "has per-update records.")
    return files, notes
