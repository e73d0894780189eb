"""Figures of throughput and speedup against the number of workers.

* ``throughput_vs_workers.png`` — mean updates/s against workers per algorithm (colour),
  step-size rule (marker) and engine (line style and marker fill: real filled, others open),
  error bars over seeds, with the linear-ideal line m × seq throughput (algorithms are
  dodged slightly sideways so that equal values stay visible);
* ``speedup_vs_workers.png`` — speedup against workers with the linear-ideal line y = m: time
  to target of the 1-worker run of the same algorithm and rule (``seq`` when there is none)
  over time to target at m (left), and the same ratio of updates/s (right).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .load import Loaded
from .plotting import THOUSANDS, engine_order, numeric_column, save_figure

__all__ = ["speedup_figure", "speedup_points", "throughput_figure"]


def throughput_figure(speedup: pd.DataFrame, path: Path) -> Path | None:
    """Mean updates/s against workers, one line per (algorithm, step-size rule, engine), error
    bars = standard deviation over seeds; the dashed grey line is m × the throughput of ``seq``
    (per engine).  Returns None without throughput values."""
    df = speedup[np.isfinite(pd.to_numeric(speedup["updates_per_s"], errors="coerce"))]
    if df.empty:
        return None
    engines = engine_order(df["engine"].astype(str))
    rules = sorted(set(df["stepsize"].dropna().astype(str)))
    algs = sorted(set(df["algorithm"].dropna().astype(str)))
    markers = "osD^v<>p*"
    styles = ["-", "--", ":", "-."]
    fills = ["full", "none", "left", "bottom"]
    fig = Figure(figsize=(7.0, 4.4))
    ax = fig.add_subplot()
    m_max = float(pd.to_numeric(df["workers"], errors="coerce").max())
    # dodge overlapping points of different algorithms at the same m a little sideways
    dodge = 0.025 * max(m_max - 1.0, 1.0)
    for (alg, rule, engine), grp in df.groupby(["algorithm", "stepsize", "engine"], sort=True):
        grp = grp.sort_values("workers")
        label = f"{alg}" + (f" / {rule}" if len(rules) > 1 else "") + (
            f" ({engine})" if len(engines) > 1 else "")
        yerr = grp["updates_per_s_std"].to_numpy(dtype=np.float64)
        shift = (algs.index(str(alg)) - (len(algs) - 1) / 2) * dodge
        ax.errorbar(grp["workers"].to_numpy(dtype=np.float64) + shift,
                    grp["updates_per_s"].to_numpy(dtype=np.float64),
                    yerr=np.where(np.isfinite(yerr), yerr, 0.0), capsize=3,
                    color=f"C{algs.index(str(alg)) % 10}",
                    ls=styles[engines.index(str(engine)) % len(styles)],
                    marker=markers[rules.index(str(rule)) % len(markers)] if rules else "o",
                    ms=7, fillstyle=fills[engines.index(str(engine)) % len(fills)],
                    label=label)
    for engine, grp in df[df["algorithm"] == "seq"].groupby("engine"):
        base = float(grp["updates_per_s"].mean())
        m = np.linspace(1, max(m_max, 1.0), 50)
        ax.plot(m, base * m, color="0.5", ls=(0, (4, 3)), lw=1,
                label="linear ideal (m × seq)" + (f" ({engine})" if len(engines) > 1 else ""))
    ax.set_xlabel("workers m")
    ax.set_ylabel("updates / s")
    ax.set_xticks(sorted(set(pd.to_numeric(df["workers"], errors="coerce").dropna()
                             .astype(int))))
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(THOUSANDS)
    ax.set_title("Throughput against workers", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.12, top=0.92)
    return save_figure(fig, path)


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
    r["_t"] = numeric_column(r, "time_to_target").where(r["reached"].astype(bool)
                                             if "reached" in r else True)
    r["_ups"] = numeric_column(r, "updates_per_s")
    r["workers"] = numeric_column(r, "workers")
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
    engines = engine_order(pts["engine"].astype(str))
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
    return [save_figure(fig, path)]
