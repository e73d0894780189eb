"""Figures of a results folder (or several joined): PNG files under ``<dir>/figures/``.

* ``pdf_<config>.png`` — PDF(τ) per configuration, one curve per engine, with the best fitted
  law as dots and the TV/KS/W1 distance to the reference engine in the legend; long tails are
  cut at the 99.9 % quantile (the mass beyond is given in the legend); log-y on request or
  automatically when the probabilities span more than two decades;
* ``convergence_<config>.png`` — loss against updates and against time, one thin line per seed,
  coloured by engine, target loss dashed, diverged runs marked ×;
* ``throughput_vs_workers.png`` — mean updates/s against workers per algorithm (colour),
  step-size rule (marker) and engine (line style and marker fill: real filled, others open),
  error bars over seeds, with the linear-ideal line m × seq throughput (algorithms are
  dodged slightly sideways so that equal values stay visible).

Drawing uses matplotlib's object API on the Agg canvas (no pyplot, no global state, no
display needed) with fixed margins (``tight_layout`` cost half a second per figure).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from stalesgd import staleness as st

from .load import Loaded, config_slug
from .staleness_report import StalenessTables

__all__ = [
    "FigureFile",
    "convergence_figure",
    "make_figures",
    "pdf_figure",
    "throughput_figure",
]

DPI = 110
_THOUSANDS = FuncFormatter(lambda v, _pos: f"{v:,.0f}")
_ENGINE_STYLE = {"real": {"color": "C0"}, "sim": {"color": "C1"}}
_EXTRA_COLORS = ["C2", "C3", "C4", "C5", "C6"]


@dataclass(frozen=True)
class FigureFile:
    """One written figure: its path, a title, a one-line caption, its kind (``pdf``,
    ``convergence``, ``throughput``) and configuration (empty for cross-configuration plots)."""

    path: Path
    title: str
    caption: str
    kind: str
    config_key: str = ""


def _engine_color(engine: str, engines: Sequence[str]) -> str:
    if engine in _ENGINE_STYLE:
        return _ENGINE_STYLE[engine]["color"]
    others = [e for e in engines if e not in _ENGINE_STYLE]
    return _EXTRA_COLORS[others.index(engine) % len(_EXTRA_COLORS)] if engine in others else "k"


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI)
    return path


def _wrap(text: str, width: int = 70) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    return "\n".join(lines)


def pdf_figure(key: str, hists: dict[str, np.ndarray], path: Path,
               dists: dict[str, st.PdfDistances] | None = None,
               fits: dict[str, st.Fit] | None = None, log_y: bool | None = None) -> Path:
    """Draw the PDF(τ) of one configuration for each engine (``hists``: engine -> counts).

    ``dists``: distance of each non-reference engine to the reference (shown in the legend);
    ``fits``: best fitted law per engine (drawn as dots); ``log_y``: None = automatic.
    """
    if not hists:
        raise ValueError(f"no staleness histogram for configuration {key!r}")
    engines = sorted(hists, key=lambda e: (e != "real", e))
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
        color = _engine_color(engine, engines)
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
    ax.set_title(_wrap(f"PDF(τ): {key}"), fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.12, top=0.87)
    return _save(fig, path)


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
    engines = sorted(set(runs["engine"].astype(str)), key=lambda e: (e != "real", e))
    fig = Figure(figsize=(9.0, 3.8))
    ax_k, ax_t = fig.subplots(1, 2, sharey=True)
    labelled: set[str] = set()
    finite_losses = []
    for _, run in runs.sort_values(["engine", "seed"]).iterrows():
        e = ev[ev["uid"] == run["uid"]].sort_values("t", kind="stable")
        if e.empty:
            continue
        color = _engine_color(str(run["engine"]), engines)
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
    ax_k.xaxis.set_major_formatter(_THOUSANDS)
    ax_k.legend(fontsize=8)
    fig.suptitle(_wrap(f"Convergence: {key}", 100), fontsize=10)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.86, wspace=0.06)
    return _save(fig, path)


def throughput_figure(speedup: pd.DataFrame, path: Path) -> Path | None:
    """Mean updates/s against workers, one line per (algorithm, step-size rule, engine), error
    bars = standard deviation over seeds; the dashed grey line is m × the throughput of ``seq``
    (per engine).  Returns None without throughput values."""
    df = speedup[np.isfinite(pd.to_numeric(speedup["updates_per_s"], errors="coerce"))]
    if df.empty:
        return None
    engines = sorted(set(df["engine"].astype(str)), key=lambda e: (e != "real", e))
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
    ax.yaxis.set_major_formatter(_THOUSANDS)
    ax.set_title("Throughput against workers", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.12, top=0.92)
    return _save(fig, path)


def make_figures(loaded: Loaded, stale: StalenessTables, speedup: pd.DataFrame,
                 out_dir: str | Path, log_y: bool | None = None,
                 reference: str = "real") -> list[FigureFile]:
    """Draw every figure into ``out_dir`` (created; old PNGs there are removed first so that
    the folder lists exactly this report's figures) and return them in report order."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    files: list[FigureFile] = []
    dist_rows = {(r.config_key, r.engine_b): r for r in stale.distances.itertuples()}
    keys = sorted({k for k, _ in stale.config_hists} | set(loaded.runs["config_key"]))
    tp = throughput_figure(speedup, out / "throughput_vs_workers.png")
    if tp is not None:
        files.append(FigureFile(tp, "Throughput against workers",
                                "Mean updates/s over seeds per algorithm; dashed grey: linear "
                                "ideal from seq.", "throughput"))
    for key in keys:
        hists = {e: h for (k, e), h in stale.config_hists.items() if k == key}
        if not hists:
            continue
        dists = {e: st.PdfDistances(r.tv, r.ks, r.ks_pvalue, r.w1)
                 for (k, e), r in dist_rows.items() if k == key}
        fits = {e: f for (k, e), f in stale.config_fits.items() if k == key}
        path = pdf_figure(key, hists, out / f"pdf_{config_slug(key)}.png", dists, fits, log_y)
        ref = reference if reference in hists else sorted(hists)[0]
        cap = "PDF(τ) per engine, pooled over seeds"
        if dists:
            cap += f"; distances to {ref} in the legend"
        files.append(FigureFile(path, f"PDF(τ): {key}", cap + ".", "pdf", key))
    for key in keys:
        runs = loaded.runs[loaded.runs["config_key"] == key]
        path = convergence_figure(key, runs, loaded.evals,
                                  out / f"convergence_{config_slug(key)}.png")
        if path is not None:
            files.append(FigureFile(path, f"Convergence: {key}",
                                    "Loss against updates and against time; one line per run.",
                                    "convergence", key))
    return files
