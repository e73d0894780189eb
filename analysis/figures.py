"""Every figure of a report, drawn into one folder in report order, with titles and captions.

The figures, by the module that draws them:

* :mod:`.throughput_figures`: ``throughput_vs_workers.png``, ``speedup_vs_workers.png``;
* :mod:`.staleness_figures`: ``pdf_<config>.png`` per configuration, ``tau_over_time_<i>.png``;
* :mod:`.convergence_figures`: ``convergence_<config>.png`` per configuration with
  evaluations, ``theory.png`` (least-squares runs against the exact recursion);
* :mod:`.memory_figures`: ``memory.png``; :mod:`.elastic_figures`: ``elastic_<i>.png``;
  :mod:`.stepsize_figures`: ``stepsize_tables.png``.

A figure with nothing to show is not drawn; :func:`make_figures` says which and why.
"""

from __future__ import annotations

from pathlib import Path

from stalesgd import staleness as st

from .convergence_figures import convergence_figure, theory_figure
from .elastic_figures import elastic_figures
from .load import config_slug
from .memory_figures import memory_figure
from .plotting import FigureFile
from .staleness_figures import TIME_BINS, pdf_figure, tau_time_figures
from .stepsize_figures import stepsize_figure
from .tables import Analysis
from .throughput_figures import speedup_figure, throughput_figure

__all__ = ["make_figures"]

#: the cross-configuration figures by kind: title, caption, and the note when none is drawn
_CROSS_CONFIGURATION = {
    "speedup": (
        "Speedup against workers",
        "Left: time to target of the 1-worker run of the same algorithm and rule (seq where "
        "there is none) over time to target at m, mean over the seeds that reached it; right: "
        "the same ratio of updates/s. Dashed: linear ideal (speedup = m).",
        "Speedup figure skipped: no configuration with m > 1 has a 1-worker or seq baseline "
        "of the same algorithm/rule."),
    "memory": (
        "Memory",
        "Peak parameter-buffer bytes, the Leashed-SGD buffer-pool high-water (buffer count on "
        "top of each bar) and the peak RSS of the process when the run ended (runs in one "
        "process share it: later runs inherit earlier peaks).",
        "Memory figure skipped: no run recorded peak_param_bytes, pool_high_water_bytes or "
        "peak_rss_bytes."),
    "elastic": (
        "Elastic parallelism",
        "Loss on consistent snapshots against time (left axis) and the active level m(t) the "
        "controller set (right axis); shaded: probing phases.",
        "Elastic figure skipped: no run with an elastic controller (and a control trace) in "
        "these folders."),
    "stepsize": (
        "Step-size tables η(τ)",
        "η applied against τ, read off the updates: the line is the median over the second "
        "half of each run (adaptive rules settled), the band min–max over the whole run "
        "(warm-up included); grey bars: pooled PDF(τ) of the panel (right axis). τ beyond the "
        "99.9 % quantile is cut.",
        "Step-size figure skipped: no update carries a step size (eta)."),
    "tau_time": (
        "Staleness over time",
        f"τ against time per configuration with m > 1: p50/p90/p99 over {TIME_BINS} time bins "
        "(seeds pooled) and the largest τ of each bin as dots; bursts show descheduled "
        "workers.",
        "Staleness-over-time figure skipped: no configuration with m > 1 has per-update "
        "records."),
}


def make_figures(analysis: Analysis, out_dir: str | Path, log_y: bool | None = None,
                 reference: str = "real") -> tuple[list[FigureFile], list[str]]:
    """Draw every figure of ``analysis`` into ``out_dir`` (created; old PNGs there are removed
    first so that the folder lists exactly this report's figures).

    Returns the figures in report order and notes naming each figure that was skipped and
    why.  ``log_y``: log scale of the PDF(τ) axes (None = automatic); ``reference``: the
    engine the PDF(τ) distances are measured from.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    files = _per_configuration(analysis, out, log_y, reference)
    notes: list[str] = []
    loaded = analysis.loaded
    for kind, paths in (("speedup", speedup_figure(loaded, out / "speedup_vs_workers.png")),
                        ("memory", memory_figure(loaded, out / "memory.png")),
                        ("elastic", elastic_figures(loaded, out)),
                        ("stepsize", stepsize_figure(loaded, out / "stepsize_tables.png")),
                        ("tau_time", tau_time_figures(loaded, out))):
        title, caption, skipped = _CROSS_CONFIGURATION[kind]
        for i, path in enumerate(paths):
            numbered = title + (f" ({i + 1})" if len(paths) > 1 else "")
            files.append(FigureFile(path, numbered, caption, kind))
        if not paths:
            notes.append(skipped)
    if analysis.theory is not None:
        got = theory_figure(analysis.theory, out / "theory.png")
        if got is not None:
            files.append(FigureFile(
                got, "Runs against the exact recursion",
                "Solid: the run's evaluated loss minus the evaluation split's minimum; dashed: "
                "E[loss] − min from the exact recursion for i.i.d. staleness drawn from the "
                "run's own measured PDF(τ), with its step sizes, batch and θ_0 (least squares "
                "only).", "theory"))
    return files, notes


def _per_configuration(analysis: Analysis, out: Path, log_y: bool | None,
                       reference: str) -> list[FigureFile]:
    """Throughput against workers, then PDF(τ) and convergence of every configuration."""
    loaded, stale = analysis.loaded, analysis.stale
    files: list[FigureFile] = []
    dist_rows = {(r.config_key, r.engine_b): r for r in stale.distances.itertuples()}
    keys = sorted({k for k, _ in stale.config_hists} | set(loaded.runs["config_key"]))
    tp = throughput_figure(analysis.speedup, out / "throughput_vs_workers.png")
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
