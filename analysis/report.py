"""Reports: ``report.md`` and a self-contained ``report.html`` for one or more results folders.

:func:`write_report` takes an :class:`~.tables.Analysis` (or computes one with
:func:`~.tables.analyse`), draws its figures (:mod:`.figures`) and writes ``report.md`` (the
tables as Markdown, figures linked from ``figures/``) and ``report.html`` (the same tables as
HTML, every figure embedded as a base64 PNG, no external file or network needed) into an
output folder.  ``stalesgd report DIR`` writes them into the results folder
itself; ``stalesgd compare DIR [DIR ...]`` joins several folders (e.g. one sim, one real),
prints :func:`comparison_text` and writes the report into a new folder (DESIGN §3, §8).
"""

from __future__ import annotations

import base64
import html
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stalesgd.staleness import FAMILIES

from .figures import make_figures
from .formatting import display, html_table, markdown_table, text_table
from .headline import headline
from .load import AnalysisError
from .plotting import FigureFile
from .steadiness import disturbances, monitor_note, placement_note
from .tables import Analysis, analyse
from .theory_report import TOO_LOOSE, bounds_table, gradient_bounds_table, theory_table

__all__ = [
    "ReportFiles",
    "comparison_text",
    "default_compare_dir",
    "run_flags",
    "write_report",
]

@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`."""

    folder: Path
    markdown: Path
    html: Path
    figures: list[Path]


# ---------------------------------------------------------------------------------------------
# The report's tables
# ---------------------------------------------------------------------------------------------


def run_flags(row: Mapping[str, Any]) -> str:
    """What a reader of a run's row must know (the runs table's ``flags`` cell): diverged,
    interrupted, no evaluations or target not reached, updates applied with η = 0, a
    simulation beyond what its calibration measured (a prediction), and a real run that did
    not have a steady machine (:func:`~stalesgd.analysis.steadiness.disturbances`)."""
    out = []
    if _true(row.get("diverged")):
        out.append("diverged")
    if _true(row.get("interrupted")):
        out.append("interrupted")
    if not _true(row.get("evaluated")):
        out.append("no evals")
    elif np.isfinite(row.get("target_loss", math.nan)) and not _true(row.get("reached")):
        out.append("target not reached")
    zero = row.get("zero_step_updates")
    if zero is not None and not pd.isna(zero) and int(zero) > 0:
        out.append(f"{int(zero)} updates with η = 0")
    if _true(row.get("prediction")):
        out.append("prediction (beyond the calibration)")
    out += disturbances(row)
    out += [note for note in (placement_note(row), monitor_note(row)) if note]
    return ", ".join(out)


def _true(value: Any) -> bool:
    """A flag cell that may be missing (older folders, other engines: NA)."""
    return value is not None and not pd.isna(value) and bool(value)


def runs_display(analysis: Analysis) -> pd.DataFrame:
    """The runs table as text cells (one row per run)."""
    runs = analysis.loaded.runs.copy()
    if runs.empty:
        return pd.DataFrame()
    runs["flags"] = [run_flags(r) for _, r in runs.iterrows()]
    stale = analysis.stale.per_run
    if not stale.empty:
        runs = runs.drop(columns=["mean_tau"], errors="ignore").merge(
            stale[["uid", "mean"]].rename(columns={"mean": "mean_tau"}), on="uid", how="left")
    cols = [("run_id", "run", "")]
    if len(analysis.loaded.sources) > 1:
        cols.insert(0, ("source", "folder", ""))
    cols += [("engine", "engine", ""), ("algorithm", "algorithm", ""), ("workers", "m", ""),
             ("stepsize", "rule", ""), ("lr", "lr", ".4g"), ("batch", "batch", ""),
             ("seed", "seed", ""), ("updates", "updates", ","), ("seconds", "seconds", ".3g"),
             ("updates_per_s", "updates/s", ","), ("mean_tau", "mean τ", ".3g"),
             ("final_loss", "final loss", ".4g"), ("target_loss", "target", ".4g"),
             ("time_to_target", "time to target (s)", ".3g"),
             ("updates_to_target", "updates to target", "int"),
             ("peak_rss_bytes", "peak RSS (MB)", ".4g"), ("flags", "flags", "")]
    if "peak_rss_bytes" in runs:
        runs["peak_rss_bytes"] = pd.to_numeric(runs["peak_rss_bytes"], errors="coerce") / 1e6
    if "core_round_trip_ns_start" in runs:  # where the host placed the CPUs (real, m > 1)
        a = pd.to_numeric(runs["core_round_trip_ns_start"], errors="coerce")
        b = pd.to_numeric(runs.get("core_round_trip_ns_end"), errors="coerce")
        runs["round_trip"] = [f"{x:.0f} / {y:.0f}" if math.isfinite(x) and math.isfinite(y)
                              else "–" for x, y in zip(a, b, strict=True)]
        cols.insert(-1, ("round_trip", "CPU round trip (ns)", ""))
    if "sparse" in runs and runs["sparse"].fillna(False).astype(bool).any():
        # sparse problems: coordinates an update wrote and the share that collided
        cols.insert(-1, ("coords_per_update", "coords / update", ".3g"))
        cols.insert(-1, ("collision_rate", "collision rate", ".3f"))
    if "slowdown" in runs and runs["slowdown"].fillna("").astype(str).ne("").any():
        # stragglers on purpose: who was slowed, and each worker's updates and mean τ
        runs["slowdown"] = runs["slowdown"].fillna("–")
        cols.insert(cols.index(("workers", "m", "")) + 1, ("slowdown", "slowdown", ""))
        for col in ("updates_by_worker", "mean_tau_by_worker"):
            runs[col] = runs[col].fillna("–") if col in runs else "–"
        cols.insert(-1, ("updates_by_worker", "updates by worker", ""))
        cols.insert(-1, ("mean_tau_by_worker", "mean τ by worker", ""))
    if "net_delay" in runs and runs["net_delay"].fillna("").astype(str).ne("").any():
        runs["net_delay"] = runs["net_delay"].fillna("–")
        cols.insert(cols.index(("workers", "m", "")) + 1, ("net_delay", "net delay", ""))
    return display(runs, cols)


_STALE_COLS = [("n", "n", ","), ("mean", "mean τ", ".3g"), ("var", "var", ".3g"),
               ("dispersion", "var/mean", ".3g"), ("p50", "p50", "int"), ("p90", "p90", "int"),
               ("p99", "p99", "int"), ("max", "max", "int"), ("best_law", "best law (AIC)", ""),
               ("law_params", "parameters", ""), ("aic", "AIC", ".6g")]


def staleness_display(analysis: Analysis) -> pd.DataFrame:
    """PDF(τ) summary and best law per configuration and engine, as text cells."""
    cols = [("config_key", "configuration", ""), ("engine", "engine", ""), ("runs", "runs", "")]
    return display(analysis.stale.per_config, cols + _STALE_COLS)


def staleness_runs_display(analysis: Analysis) -> pd.DataFrame:
    """PDF(τ) summary and best law per run, as text cells."""
    cols = [("run_id", "run", ""), ("engine", "engine", ""), ("seed", "seed", "")]
    if len(analysis.loaded.sources) > 1:
        cols.insert(0, ("source", "folder", ""))
    return display(analysis.stale.per_run, cols + _STALE_COLS)


def distances_display(analysis: Analysis) -> pd.DataFrame:
    """TV, KS and W1 between engines per configuration, as text cells."""
    return display(analysis.stale.distances, [
        ("config_key", "configuration", ""), ("engine_a", "reference", ""),
        ("engine_b", "engine", ""), ("n_a", "n ref", ","), ("n_b", "n", ","),
        ("tv", "TV", ".4f"), ("tv_floor", "TV by chance", ".4f"), ("ks", "KS", ".4f"),
        ("ks_pvalue", "KS p-value", ".3g"),
        ("w1", "W1 (τ)", ".4g"), ("updates_per_s_ratio", "updates/s ÷ ref", ".3g"),
        ("time_to_target_ratio", "time to target ÷ ref", ".3g")])


def speedup_display(analysis: Analysis) -> pd.DataFrame:
    """Throughput, targets, non-convergence and speedup per configuration, as text cells."""
    return display(analysis.speedup, [
        ("config_key", "configuration", ""), ("engine", "engine", ""), ("runs", "runs", ""),
        ("updates_per_s", "updates/s", ","), ("updates_per_s_std", "± (sd)", ","),
        ("target_loss", "target", ".4g"), ("reached", "reached", ""),
        ("time_to_target", "time to target (s)", ".3g"),
        ("updates_to_target", "updates to target", ","),
        ("nonconv_rate", "non-converged", "%"), ("judged", "of runs", ""),
        ("speedup", "speedup vs seq", ".3g"), ("throughput_ratio", "= throughput ×", ".3g"),
        ("efficiency_ratio", "efficiency", ".3g"),
        ("throughput_ratio_run", "updates/s ratio (whole run)", ".3g")])


# ---------------------------------------------------------------------------------------------
# Header: experiment, machine, config
# ---------------------------------------------------------------------------------------------


def _machine_lines(machine: dict[str, Any]) -> list[str]:
    if not machine:
        return ["machine: not recorded (no machine.json)"]
    cores = "/".join(str(machine.get(k, "?")) for k in
                     ("logical_cores", "physical_cores", "usable_cores"))
    mem = machine.get("memory_bytes")
    lines = [f"CPU: {machine.get('cpu_model') or '?'}; cores logical/physical/usable: {cores}"
             + (f"; memory {mem / 2**30:.1f} GiB" if isinstance(mem, int | float) else "")]
    lines.append(f"OS: {machine.get('os', '?')}; Python {machine.get('python', '?')}; "
                 f"stalesgd {machine.get('stalesgd', '?')} (git "
                 f"{str(machine.get('git_commit') or '?')[:10]}"
                 f"{', dirty' if machine.get('git_dirty') else ''})")
    libs = machine.get("libraries") or {}
    if libs:
        lines.append("libraries: " + ", ".join(f"{k} {v}" for k, v in libs.items()
                                               if v is not None))
    if machine.get("recorded_at"):
        lines.append(f"recorded at {machine['recorded_at']}")
    return lines


def _config_text(path: Path) -> str:
    p = path / "config.toml"
    return p.read_text() if p.exists() else "(no config.toml)"


def _title(analysis: Analysis) -> str:
    names = []
    for res, src in zip(analysis.loaded.folders, analysis.loaded.sources, strict=True):
        names.append(str(res.config.get("name") or src))
    if len(names) == 1:
        return f"stalesgd report: {names[0]}"
    return "stalesgd comparison: " + " vs ".join(dict.fromkeys(names))


_DEFINITIONS = [
    "Staleness τ: of applied updates (dropped gradients left out); a configuration's PDF pools "
    "its seeds.",
    "Best law: lowest AIC among geometric, Poisson, Conway–Maxwell–Poisson and negative "
    "binomial (maximum likelihood, stalesgd.staleness).",
    "Distances: total variation ½Σ|p−q|, Kolmogorov–Smirnov max|F−G| (two-sample p-value; "
    "conservative for discrete τ and optimistic for autocorrelated τ, as it treats updates as "
    "independent samples), Wasserstein-1 Σ|F−G| in units of τ.  TV by chance: the median TV "
    "between two independent samples of the two sizes drawn from the reference's PDF (a "
    "lower bound, as successive τ are correlated): a TV at or below it cannot tell the two "
    "PDFs apart, and one up to about twice it is still consistent with chance.",
    "Speedup vs seq = T_seq / T (mean time to target over the seeds that reached it) = "
    "throughput ratio × efficiency ratio, with throughput = updates to target / time to "
    "target and efficiency = U_seq / U (updates to target).",
    "CPU round trip: nanoseconds for a cache line to go between the two CPUs a real run with "
    "m > 1 ran on and back, at its start / end (stalesgd.real.placement); on a virtual "
    "machine ≈ 60 ns means the host placed them on cores sharing a cache, ≈ 300+ ns apart, "
    "where runs that share parameters often (small batches) can be up to 2× slower.",
    "Machine flags of a real run (stalesgd.analysis.steadiness): *below 0.7× its top speed "
    "for X % of the run* — the run cut into up to 50 stretches of at least 200 updates, its "
    "top speed the highest median of three stretches in a row, flagged from a tenth of the "
    "run (the machine changed speed, or the engine's update record made the workers wait, "
    "as the flag says); *machine shared* — other processes or the hypervisor (steal) took at "
    "least 5 % of the time of the CPUs the run could use (Linux /proc/stat, runs of at "
    "least 50 clock ticks; stalesgd.real.load); *CPUs apart* — a round trip of 200–5,000 "
    "ns at both ends of the run; *monitor took X of a core* — the run's own monitor thread "
    "(evaluations, draining the update record) used at least 0.1 of a core, which the "
    "workers did not have (fewer rows per evaluation, [eval] max_rows, or a longer "
    "interval lighten it).",
    "Non-converged: diverged, or evaluated with a target and never reached it; runs without "
    "evaluations and interrupted runs are not judged unless they diverged.",
    "Theory checks (least-squares runs only): E[loss] from the exact recursion for i.i.d. "
    "staleness drawn from the run's measured PDF(τ) (stalesgd.analysis.theory); gap = loss − "
    "minimum on the evaluation split; Hogwild! envelope = Niu et al. 2011, Prop. 4.1 on the "
    "training gap with constants over ‖θ−θ*‖ ≤ ‖θ_0−θ*‖, checked on the recursion's expected "
    "gap and, where the run evaluates the whole training set, on the run's own.",
    "Gradient-norm bounds (least-squares runs with a constant step): the envelopes of Lian et "
    "al. 2015 (Thm. 1), Koloskova et al. 2022 and Mishchenko et al. 2022 on (1/t)Σ_{k<t} "
    "E‖∇f(θ_k)‖², checked at every step of the recursion fed with the run's PDF(τ), with L, σ² "
    "over ‖θ−θ*‖ ≤ ‖θ_0−θ*‖, F0, the run's largest τ and τ_C = workers; 'not checked' gives "
    "the reason, e.g. the theorem's step-size condition fails at the run's step.",
    "Bound checks: min × / median × = envelope ÷ curve over the checked steps; 'below' = the "
    "curve stayed under the envelope at every checked step, which is consistent with the "
    "bound and no more: every statement and constant was transcribed from memory, not "
    "checked against the paper (column 'statement and constants'), and the constants hold "
    "only while the iterates stay in the ball; 'too loose to fail' = the envelope lies at "
    f"least {TOO_LOOSE:g}× above the curve at every checked step, so no plausible error of a "
    "run or of the simulator could cross it: such a check cannot fail and tells nothing.",
]


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _sections(analysis: Analysis) -> list[tuple[str, str, pd.DataFrame]]:
    return [
        ("runs", "Runs", runs_display(analysis)),
        ("staleness", "Staleness PDF(τ) per configuration", staleness_display(analysis)),
        ("distances", "Simulated vs measured: PDF(τ) distances, updates/s and time to target",
         distances_display(analysis)),
        ("speedup", "Throughput, time to target and speedup", speedup_display(analysis)),
        ("staleness-runs", "Staleness PDF(τ) per run", staleness_runs_display(analysis)),
    ] + ([("theory", "Theory checks (least squares)", theory_table(analysis.theory)),
          ("theory-gradient", "Theory checks: bounds on the average squared gradient norm",
           gradient_bounds_table(analysis.theory)),
          ("theory-bounds", "Theory checks: the bounds, where their statements come from, and "
           "how loose they are here", bounds_table(analysis.theory))]
         if analysis.theory is not None and not analysis.theory.table.empty else [])


def _headline_lines(analysis: Analysis) -> tuple[str, ...]:
    return headline(analysis).lines


def _markdown(analysis: Analysis, out: Path) -> str:
    lines = [f"# {_title(analysis)}", ""]
    head = _headline_lines(analysis)
    if head:
        lines += ["## Headline", ""] + [f"- {h}" for h in head] + [""]
    for src, res in zip(analysis.loaded.sources, analysis.loaded.folders, strict=True):
        lines += [f"## Folder `{src}`", ""]
        lines += [f"- {line}" for line in _machine_lines(res.machine)]
        lines += ["", "<details><summary>config.toml</summary>", "", "```toml",
                  _config_text(res.path).rstrip(), "```", "", "</details>", ""]
    if analysis.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in analysis.notes] + [""]
    for _, title, table in _sections(analysis):
        lines += [f"## {title}", "", markdown_table(table)]
    lines += ["## Definitions", ""] + [f"- {d}" for d in _DEFINITIONS] + [""]
    lines += ["## Figures", ""]
    for fig in analysis.figures:
        rel = fig.path.relative_to(out).as_posix() if fig.path.is_relative_to(out) \
            else fig.path.as_posix()
        lines += [f"### {fig.title}", "", f"![{fig.title}]({rel})", "", fig.caption, ""]
    if not analysis.figures:
        lines += ["_(no figures: nothing to plot)_", ""]
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em;
     border-bottom: 1px solid #ccc; } h3 { font-size: 1em; }
table { border-collapse: collapse; font-size: 0.82em; margin: 0.5em 0; display: block;
        overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
tbody tr:nth-child(even) { background: #fafafa; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; } .notes li { color: #8a4b00; }
"""


def _img_tag(fig: FigureFile) -> str:
    data = base64.b64encode(fig.path.read_bytes()).decode("ascii")
    return (f'<figure id="{html.escape(fig.path.stem)}"><img alt="{html.escape(fig.title)}" '
            f'data-file="{html.escape(fig.path.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(fig.title)} — {html.escape(fig.caption)}</figcaption>"
            "</figure>")


def _html(analysis: Analysis) -> str:
    title = html.escape(_title(analysis))
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{title}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
             f"<h1>{title}</h1>"]
    head = _headline_lines(analysis)
    if head:
        parts.append("<h2>Headline</h2><ul>")
        parts += [f"<li>{html.escape(h)}</li>" for h in head]
        parts.append("</ul>")
    for src, res in zip(analysis.loaded.sources, analysis.loaded.folders, strict=True):
        parts.append(f"<h2>Folder <code>{html.escape(src)}</code></h2><ul>")
        parts += [f"<li>{html.escape(line)}</li>" for line in _machine_lines(res.machine)]
        parts.append("</ul><details><summary>config.toml</summary><pre>"
                     f"{html.escape(_config_text(res.path))}</pre></details>")
    if analysis.notes:
        parts.append('<h2>Notes</h2><ul class="notes">')
        parts += [f"<li>{html.escape(n)}</li>" for n in analysis.notes]
        parts.append("</ul>")
    for anchor, heading, table in _sections(analysis):
        parts.append(f'<h2 id="{anchor}">{html.escape(heading)}</h2>')
        parts.append(html_table(table))
    parts.append("<h2>Definitions</h2><ul>")
    parts += [f"<li>{html.escape(d)}</li>" for d in _DEFINITIONS]
    parts.append("</ul>")
    parts.append('<h2 id="figures">Figures</h2>')
    parts += [_img_tag(f) for f in analysis.figures]
    if not analysis.figures:
        parts.append("<p><em>(no figures: nothing to plot)</em></p>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def write_report(dirs: str | Path | Iterable[str | Path], out_dir: str | Path | None = None,
                 target: float | None = None, log_y: bool | None = None,
                 run_fits: bool = True, families: Iterable[str] = FAMILIES,
                 analysis: Analysis | None = None) -> ReportFiles:
    """Analyse ``dirs`` and write ``report.md``, ``report.html`` and ``figures/*.png``.

    ``out_dir`` defaults to the single folder given (an error for several folders: pass one).
    ``analysis``: a result of :func:`analyse` to reuse instead of loading again.
    """
    if isinstance(dirs, str | Path):
        dirs = [dirs]
    dirs = [Path(d) for d in dirs]
    if out_dir is None:
        if len(dirs) != 1:
            raise AnalysisError(f"{len(dirs)} results folders given; say where the joint "
                                "report goes (out_dir)")
        out_dir = dirs[0]
    out = Path(out_dir)
    if analysis is None:
        analysis = analyse(dirs, target=target, run_fits=run_fits, families=families)
    out.mkdir(parents=True, exist_ok=True)
    analysis.figures, skipped = make_figures(analysis, out / "figures", log_y=log_y)
    analysis.notes = list(analysis.notes) + [n for n in skipped
                                             if not n.startswith("Elastic figure skipped")]
    md, page = out / "report.md", out / "report.html"
    md.write_text(_markdown(analysis, out), encoding="utf-8")
    page.write_text(_html(analysis), encoding="utf-8")
    return ReportFiles(folder=out, markdown=md, html=page,
                       figures=[f.path for f in analysis.figures])


def comparison_text(analysis: Analysis) -> str:
    """The comparison tables (staleness per configuration, engine distances, speedup) as
    plain text for the terminal."""
    out = [_title(analysis), ""]
    for note in analysis.notes:
        out.append(f"note: {note}")
    if analysis.notes:
        out.append("")
    for anchor, heading, table in _sections(analysis):
        if anchor in ("runs", "staleness-runs"):
            continue
        out += [heading, text_table(table)]
    return "\n".join(out)


def default_compare_dir(root: str | Path = "results") -> Path:
    """A fresh ``<root>/compare-<YYYYmmdd-HHMMSS>`` path (``-2``, ``-3``… if taken); not
    created."""
    root = Path(root)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1, 1000):
        path = root / (f"compare-{stamp}" + ("" if i == 1 else f"-{i}"))
        if not path.exists():
            return path
    raise FileExistsError(f"no free compare folder name under {root}")
