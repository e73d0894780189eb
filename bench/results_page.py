"""Generate ``docs/results.md`` from the results folders of the reproduction experiments.

Usage (from the repository root)::

    python bench/results_page.py [FOLDER ...] [--results results] [--out results/results.md]

Each folder is matched to its experiment by the ``name`` in its ``config.toml``
(:data:`EXPERIMENTS`, or the same name with ``-small``).  Experiments not given on the command
line use the newest folder under ``--results`` (the full-scale experiment's if there is one,
else its ``-small`` variant's; ``--small`` prefers the small ones).  The script says which
folders it uses before it reads them.

The page goes to ``results/results.md`` unless ``--out`` names another file; the committed
``docs/results.md`` is replaced only when asked for by name.  Experiments without a folder
(none given, none found) keep the section and the claims rows they have on the page at
``--out``, word for word (each claims row ends with an HTML comment naming its experiment),
so that one reproduction can be re-run and its section replaced alone.  Each section records
the scale of its folder (full or small variant, number of seeds) in a comment; a page is never
overwritten with a section of a different scale than the one it holds, unless
``--replace-scale`` says so, so that a quick run of the ``-small`` files cannot silently
replace the results of the full-scale ones.  Every number on the page is computed here from
the folders' run records and from the C++ measurements in ``../shared/reference``; nothing
is typed in by hand.  A few key figures of each folder's report are copied to
``docs/figures/`` so that the page is self-contained.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from stalesgd.analysis import Analysis, analyse
from stalesgd.analysis.formatting import markdown_table
from stalesgd.analysis.headline import headline

from stalesgd.data import DATASETS

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT_DIR = ROOT / "bench" / "experiments"
REFERENCE = ROOT.parent / "shared" / "reference" / "cpp_async_lenet_cifar10.json"
#: The C++ reference's loss level of the "less is more" claim.
CPP_LEVEL = 0.6
CLAIM_HEADER = "| claim of the papers | what this suite measured | reproduced? |"

Claim = tuple[str, str, str]


# ---------------------------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------------------------


def folder_name(folder: Path) -> str:
    """The experiment ``name`` recorded in a results folder's ``config.toml``."""
    cfg = folder / "config.toml"
    if not cfg.is_file():
        raise SystemExit(f"{folder}: not a results folder (no config.toml)")
    return str(tomllib.loads(cfg.read_text(encoding="utf-8")).get("name", ""))


def experiment_of(name: str) -> str | None:
    """The experiment of :data:`EXPERIMENTS` a folder named ``name`` belongs to (or None)."""
    base = name.removesuffix("-small")
    return base if base in EXPERIMENTS else None


def newest(results: Path, experiment: str, prefer_small: bool = False) -> Path | None:
    """The newest results folder of ``experiment`` under ``results`` (full scale first, then
    ``-small``; the other way round with ``prefer_small``)."""
    variants = [experiment, f"{experiment}-small"]
    for variant in reversed(variants) if prefer_small else variants:
        hits = sorted(p for p in results.glob(f"{variant}-2*")
                      if p.is_dir() and (p / "runs.parquet").exists()
                      and folder_name(p) == variant)
        if hits:
            return hits[-1]
    return None


def command_for(name: str) -> str:
    """The command that produces a folder of experiment ``name`` (its file in bench/), with
    the data path set when its problem reads a data set from files."""
    path = EXPERIMENT_DIR / f"{name.replace('-', '_')}.toml"
    rel = path.relative_to(ROOT).as_posix()
    if not path.exists():
        return f"`STALESGD_DATA=../shared/data stalesgd run {rel}` (file not found in " \
               "bench/experiments)"
    problem = tomllib.loads(path.read_text(encoding="utf-8")).get("problem", {}).get("name", "")
    files = problem.partition("-")[2] in DATASETS
    return f"`{'STALESGD_DATA=../shared/data ' if files else ''}stalesgd run {rel}`"


# ---------------------------------------------------------------------------------------------
# Number helpers
# ---------------------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def fmt(v: float | None, spec: str = ".3g") -> str:
    """``v`` formatted, or an en dash when missing; infinity reads "not reached"."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "not reached"
    return format(v, spec)


def secs(v: float | None, spec: str = ".3g") -> str:
    """Seconds with their unit, or "not reached" / an en dash."""
    text = fmt(v, spec)
    return f"{text} s" if v is not None and math.isfinite(v) else text


def pct(v: float) -> str:
    """A signed percentage (``0.29`` -> ``+29 %``)."""
    return "–" if not math.isfinite(v) else f"{100 * v:+.0f} %"


def _runs(analysis: Analysis) -> pd.DataFrame:
    runs = analysis.loaded.runs.copy()
    t = pd.to_numeric(runs["time_to_target"], errors="coerce").to_numpy(dtype=np.float64)
    runs["ttt"] = np.where(np.isfinite(t), t, np.inf)  # not reached / diverged: infinite
    runs["failed"] = ~np.isfinite(t)
    return runs


def _select(runs: pd.DataFrame, **where) -> pd.DataFrame:
    for key, value in where.items():
        runs = runs[runs[key] == value]
    return runs


def median_ttt(runs: pd.DataFrame, **where) -> float:
    """Median time to target over seeds, a run that missed the target counting as infinite
    (so the median is finite only when at least half the seeds reached it)."""
    sel = _select(runs, **where)
    return float(np.median(sel["ttt"].to_numpy())) if len(sel) else math.nan


def failed_share(runs: pd.DataFrame, **where) -> tuple[int, int]:
    """(runs that diverged or missed the target, runs) among those selected."""
    sel = _select(runs, **where)
    return int(sel["failed"].sum()), len(sel)


def real_cpu_share(runs: pd.DataFrame, cores: int) -> float:
    """Share of the cores the real runs could use that their workers got (CPU seconds of the
    workers ÷ wall seconds × min(m, cores)): below 1 when other load shared the machine."""
    real = runs[runs["engine"] == "real"]
    if real.empty or "worker_cpu_seconds" not in real:
        return math.nan
    cpu = pd.to_numeric(real["worker_cpu_seconds"], errors="coerce")
    wall = pd.to_numeric(real["seconds"], errors="coerce") * np.minimum(real["workers"], cores)
    ok = cpu.notna() & wall.notna() & (wall > 0)
    return float(cpu[ok].sum() / wall[ok].sum()) if ok.any() else math.nan


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def config_table(analysis: Analysis) -> pd.DataFrame:
    """One row per configuration × engine: the speedup table's throughput and time to target,
    the median over seeds (misses infinite), runs that missed, and the staleness summary."""
    runs = _runs(analysis)
    sp = analysis.speedup
    st = analysis.stale.per_config.set_index(["config_key", "engine"])
    rows = []
    for _, r in sp.iterrows():
        sel = runs[(runs["config_key"] == r["config_key"]) & (runs["engine"] == r["engine"])]
        cores = pd.to_numeric(sel.get("cores"), errors="coerce").dropna()
        key = (r["config_key"], r["engine"])
        tau = st.loc[key] if key in st.index else None
        rows.append({
            "engine": r["engine"], "algorithm": r["algorithm"], "m": int(r["workers"]),
            "cores": int(cores.iloc[0]) if len(cores) else "",
            "step size": r["stepsize"], "lr": _first(sel, "lr"), "runs": int(r["runs"]),
            "updates/s": fmt(float(r["updates_per_s"]), ".0f"),
            "mean τ": fmt(float(tau["mean"]), ".3g") if tau is not None else "–",
            "p99 τ": fmt(float(tau["p99"]), ".0f") if tau is not None else "–",
            "missed target": f"{int(sel['failed'].sum())}/{len(sel)}",
            "time to target, mean of reached (s)": fmt(float(r["time_to_target"])),
            "median (s)": fmt(float(np.median(sel["ttt"])) if len(sel) else math.nan),
        })
    out = pd.DataFrame(rows)
    return out.sort_values(["engine", "algorithm", "step size", "lr", "m"], kind="stable")


def _first(frame: pd.DataFrame, col: str):
    vals = frame[col].dropna() if col in frame else []
    return vals.iloc[0] if len(vals) else ""


def _median(sel: pd.DataFrame, col: str) -> float:
    """Median of a numeric column over the rows (NaN when there is none)."""
    v = pd.to_numeric(sel[col], errors="coerce").dropna() if col in sel else pd.Series()
    return float(v.median()) if len(v) else math.nan


def memory_table(analysis: Analysis) -> pd.DataFrame:
    """Real runs: parameter-buffer bytes, Leashed's pool high-water, failed publishes per
    update and the process's peak RSS (medians over seeds)."""
    runs = analysis.loaded.runs
    real = runs[runs["engine"] == "real"]
    rows = []
    for (alg, m), g in real.groupby(["algorithm", "workers"], sort=True):
        fails = _median(g, "failed_publishes")
        upd = _median(g, "updates")
        rows.append({"algorithm": alg, "m": int(m), "runs": len(g),
                     "parameter buffers (MB)": fmt(_median(g, "peak_param_bytes") / 1e6, ".3f"),
                     "pool high-water (vectors)": fmt(_median(g, "pool_high_water"), ".0f"),
                     "failed publishes / update": fmt(fails / upd if upd else math.nan, ".3f"),
                     "process peak RSS (MB)": fmt(_median(g, "peak_rss_bytes") / 1e6, ".0f")})
    return pd.DataFrame(rows)


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def figure_time_vs_m(analysis: Analysis, path: Path, title: str) -> Path:
    """Median simulated time to target against m (one line per algorithm × step size × lr;
    seeds as dots, a missed target drawn at the top), beside the C++ reference's time to
    :data:`CPP_LEVEL` against threads."""
    runs = _runs(analysis)
    sim = runs[runs["engine"] == "sim"]
    cpp = cpp_reference()
    fig = Figure(figsize=(10 if cpp else 5.5, 3.8))
    axes = fig.subplots(1, 2 if cpp else 1, squeeze=False)[0]
    ax = axes[0]
    finite = sim["ttt"][np.isfinite(sim["ttt"])]
    top = float(finite.max()) * 1.15 if len(finite) else 1.0
    for (alg, rule, lr), g in sim.groupby(["algorithm", "stepsize", "lr"], sort=True):
        ms = sorted(set(g["workers"]))
        med = [median_ttt(g, workers=m) for m in ms]
        line = ax.plot(ms, [v if math.isfinite(v) else np.nan for v in med], marker="o",
                       label=f"{alg} {rule} η={lr}")[0]
        ax.scatter(g["workers"], np.minimum(g["ttt"], top), s=10, alpha=0.4,
                   color=line.get_color())
    ax.axhline(top, color="grey", lw=0.5, ls=":")
    ax.text(0.01, top, "missed the target", transform=ax.get_yaxis_transform(), fontsize=7,
            color="grey", va="bottom")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("workers m (simulated, one core each)")
    ax.set_ylabel(f"time to loss {_first(sim, 'target_loss')} (simulated s)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    if cpp:
        ax2 = axes[1]
        th = list(cpp.times)
        ax2.plot(th, [cpp.times[t] for t in th], marker="o", color="black")
        ax2.set_xlabel("threads (C++ reference)")
        ax2.set_ylabel(f"time to training loss {CPP_LEVEL} (s)")
        ax2.set_title("C++ lock AsyncSGD, LeNet, CIFAR-10", fontsize=9)
    return _save(fig, path)


def figure_rules(analysis: Analysis, path: Path) -> Path:
    """Median simulated time to target per step-size rule (bars, one group per m) and the
    share of runs that missed the target (annotated)."""
    runs = _runs(analysis)
    sim = runs[runs["engine"] == "sim"]
    rules = sorted(set(sim["stepsize"]))
    scales = sorted(set(sim["workers"]))
    fig = Figure(figsize=(10, 3.8))
    ax = fig.subplots()
    width = 0.8 / max(len(rules), 1)
    for i, rule in enumerate(rules):
        xs = np.arange(len(scales)) + i * width
        med = [median_ttt(sim, stepsize=rule, workers=m) for m in scales]
        bars = ax.bar(xs, [v if math.isfinite(v) else 0 for v in med], width, label=rule)
        for x, m, v, b in zip(xs, scales, med, bars, strict=True):
            f, n = failed_share(sim, stepsize=rule, workers=m)
            ax.text(x, b.get_height(), f"{f}/{n}" if math.isfinite(v) else f"×{f}/{n}",
                    ha="center", va="bottom", fontsize=6)
    ax.set_xticks(np.arange(len(scales)) + 0.4 - width / 2, [f"m = {m}" for m in scales])
    ax.set_ylabel(f"median time to loss {_first(sim, 'target_loss')} (simulated s)")
    ax.set_title("step-size rules, lock AsyncSGD (numbers: runs that missed the target; "
                 "× = median missed)", fontsize=9)
    ax.set_ylim(top=ax.get_ylim()[1] * 1.3)
    ax.legend(fontsize=7, ncol=4, loc="upper left")
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------


def claims_leashed(analysis: Analysis) -> list[Claim]:
    """Leashed-SGD: less memory, faster convergence than lock-based and Hogwild!."""
    runs = _runs(analysis)
    real = runs[runs["engine"] == "real"]
    problem = _first(runs, "problem")
    out: list[Claim] = []
    cells, saves = [], []
    for m in sorted(w for w in set(real["workers"]) if w > 1):
        par = {a: float(pd.to_numeric(_select(real, algorithm=a, workers=m)["peak_param_bytes"],
                                      errors="coerce").median())
               for a in ("lock", "hogwild", "leashed")}
        if all(math.isfinite(v) and v > 0 for v in par.values()):
            vs = {a: par["leashed"] / par[a] - 1 for a in ("lock", "hogwild")}
            saves += list(vs.values())
            cells.append(f"m = {m}: leashed vs lock {pct(vs['lock'])}, vs hogwild "
                         f"{pct(vs['hogwild'])}")
    if cells:
        verdict = ("yes" if max(saves) < 0 else
                   "no: Leashed-SGD's buffers took more memory" if min(saves) >= 0 else
                   "partly")
        out.append(("Leashed-SGD: up to 17 % less memory than lock-based AsyncSGD and Hogwild!",
                    f"{problem}, real runs, peak parameter-buffer bytes (median over seeds): "
                    + "; ".join(cells) + ". Process peak RSS is not compared: the runs of a "
                    "sweep share one process, whose peak only grows.", verdict))
    for engine in ("real", "sim"):
        sel = runs[(runs["engine"] == engine) & (runs["workers"] > 1)]
        cells, wins, total = [], 0, 0
        for m in sorted(set(sel["workers"])):
            t = {a: median_ttt(sel, algorithm=a, workers=m) for a in ("lock", "hogwild",
                                                                     "leashed")}
            if any(math.isnan(v) for v in t.values()):
                continue
            total += 1
            best = min(t, key=t.get)
            wins += best == "leashed" and math.isfinite(t[best])
            cells.append(f"m = {m}: lock {fmt(t['lock'])}, hogwild {fmt(t['hogwild'])}, "
                         f"leashed {fmt(t['leashed'])}")
        if total:
            verdict = ("yes" if wins == total else "no" if wins == 0 else
                       f"partly: Leashed fastest at {wins} of {total} scales")
            where = ("real, 2 cores" if engine == "real"
                     else "simulated (calibrated), one core per worker")
            target = _first(sel, "target_loss")
            out.append(("Leashed-SGD converges faster than lock-based AsyncSGD and Hogwild!",
                        f"{problem}, {where}: median time (s) to loss {target}: "
                        + "; ".join(cells),
                        verdict))
    return out


def claims_tail(analysis: Analysis) -> list[Claim]:
    """TAIL-τ: average speed-up over a constant step, against all baselines; tail-original."""
    runs = _runs(analysis)
    sim = runs[runs["engine"] == "sim"]
    out: list[Claim] = []
    scales = sorted(set(sim["workers"]))
    rules = sorted(set(sim["stepsize"]))
    gains, cells = [], []
    for m in scales:
        c, t = (median_ttt(sim, stepsize=r, workers=m) for r in ("constant", "tail"))
        (fc, nc), (ft, nt) = (failed_share(sim, stepsize=r, workers=m)
                              for r in ("constant", "tail"))
        gain = c / t - 1 if math.isfinite(c) and math.isfinite(t) else math.nan
        if math.isfinite(gain):
            gains.append(gain)
        pair = paired_gain(sim, "constant", "tail", workers=m)
        cells.append(f"m = {m}: constant {secs(c)} ({fc}/{nc} missed), tail {secs(t)} "
                     f"({ft}/{nt} missed), speed-up {pct(gain)} (per seed, over the "
                     f"{pair[1]} seeds both reached: {pct(pair[0])})")
    if cells:
        mean = float(np.mean(gains)) if gains else math.nan
        verdict = ("no: TAIL-τ was slower on average" if math.isfinite(mean) and mean <= 0 else
                   f"direction yes, size {pct(mean)} vs +29 %" if math.isfinite(mean) else
                   "not measurable: the median run missed the target")
        out.append(("TAIL-τ: 29 % average speed-up over a constant step size (LeNet, CIFAR-10, "
                    "seed poster)",
                    "simulated lock AsyncSGD, MLP on Fashion-MNIST, median time to target over "
                    f"{_seeds(sim)} seeds (speed-up = T_constant / T_tail − 1): "
                    + "; ".join(cells) + f"; mean speed-up {pct(mean)}", verdict))
    if rules:
        ranks, cells = [], []
        for m in scales:
            t = {r: median_ttt(sim, stepsize=r, workers=m) for r in rules}
            order = sorted(rules, key=lambda r: (t[r], failed_share(sim, stepsize=r,
                                                                    workers=m)[0]))
            ranks.append(order.index("tail") + 1 if "tail" in order else 0)
            lead = (f"fastest {order[0]} ({secs(t[order[0]])})" if math.isfinite(t[order[0]])
                    else f"no rule's median run reached the target; fewest misses {order[0]} "
                    f"({failed_share(sim, stepsize=order[0], workers=m)[0]})")
            cells.append(f"m = {m}: {lead}, tail ranks {ranks[-1]} of {len(rules)}")
        miss = {r: failed_share(sim, stepsize=r) for r in rules}
        cells.append("runs that missed the target: "
                     + ", ".join(f"{r} {f}/{n}" for r, (f, n) in miss.items()))
        best = sum(r == 1 for r in ranks)
        verdict = ("yes" if best == len(ranks) else "no" if best == 0 else
                   f"partly: fastest at {best} of {len(ranks)} scales")
        out.append(("TAIL-τ is faster and more stable than the other step-size rules "
                    "(constant, inverse, exponential, model, delay-adaptive)",
                    "; ".join(cells), verdict))
    if {"tail", "tail-original"} <= set(rules):
        cells = []
        for m in scales:
            a, b = (median_ttt(sim, stepsize=r, workers=m) for r in ("tail", "tail-original"))
            (fa, n), (fb, _) = (failed_share(sim, stepsize=r, workers=m)
                                for r in ("tail", "tail-original"))
            cells.append(f"m = {m}: tail {secs(a)} ({fa}/{n} missed), tail-original "
                         f"{secs(b)} ({fb}/{n} missed)")
        out.append(("tail (normalised, E[s(τ)] = 1) vs tail-original (the released C++ formula,"
                    " mean up to 1.5)", "; ".join(cells), "no published claim; for reference"))
    return out


def paired_gain(runs: pd.DataFrame, base: str, rule: str, **where) -> tuple[float, int]:
    """Mean over seeds of T_base / T_rule − 1 where both step-size rules reached the target
    with that seed, and the number of such seeds."""
    sel = _select(runs, **where)
    a = sel[sel["stepsize"] == base].set_index("seed")["ttt"]
    b = sel[sel["stepsize"] == rule].set_index("seed")["ttt"]
    both = [k for k in a.index.intersection(b.index)
            if math.isfinite(a[k]) and math.isfinite(b[k])]
    if not both:
        return math.nan, 0
    return float(np.mean([a[k] / b[k] - 1 for k in both])), len(both)


def _seeds(runs: pd.DataFrame) -> int:
    return int(runs["seed"].nunique())


@dataclass(frozen=True)
class CppReference:
    """The C++ runs' time to :data:`CPP_LEVEL` per thread count (whole seconds; inf if never
    reached) and mean staleness."""

    times: dict[int, float]
    mean_tau: dict[int, float]

    @property
    def fastest(self) -> int:
        """Thread count that reached the level first."""
        return min(self.times, key=self.times.get)


def cpp_reference(path: Path = REFERENCE, level: float = CPP_LEVEL) -> CppReference | None:
    """Read the C++ reference measurements (None when the file is absent)."""
    if not path.exists():
        return None
    runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
    times, taus = {}, {}
    for threads, run in runs.items():
        loss, t = np.asarray(run["epoch_loss"]), np.asarray(run["epoch_time"], dtype=float)
        hit = np.flatnonzero(loss <= level)
        times[int(threads)] = float(t[hit[0]]) if hit.size else math.inf
        h = np.asarray(run["staleness_dist"], dtype=float)
        taus[int(threads)] = float((np.arange(h.size) * h).sum() / h.sum())
    return CppReference(times=dict(sorted(times.items())), mean_tau=dict(sorted(taus.items())))


def savings(times: dict[int, float]) -> tuple[int, float, float] | None:
    """For time to target by worker count: the fastest m*, the share of workers it leaves idle
    against the largest m tried (1 − m*/m_max), and the share of core-seconds to target it
    saves (1 − m*·T(m*) / (m_max·T(m_max)); 1 when m_max never reached the target)."""
    ok = {m: t for m, t in times.items() if math.isfinite(t)}
    if not ok:
        return None
    best, top = min(ok, key=ok.get), max(times)
    core_s = 1 - best * ok[best] / (top * times[top]) if math.isfinite(times[top]) else 1.0
    return best, 1 - best / top, core_s


def claims_less(analysis: Analysis) -> list[Claim]:
    """Fewer workers can win: fastest m in the simulator; resources saved; the C++ reference."""
    runs = _runs(analysis)
    sim = runs[runs["engine"] == "sim"]
    label = ", ".join(sorted(set(sim["problem"])))
    out: list[Claim] = []
    for lr in sorted(set(sim["lr"])):
        sel = sim[sim["lr"] == lr]
        times = {int(m): median_ttt(sel, workers=m) for m in sorted(set(sel["workers"]))}
        missed = {m: failed_share(sel, workers=m) for m in times}
        s = savings(times)
        text = (f"{label}, η = {lr}, simulated, median time (s) to loss "
                f"{_first(sel, 'target_loss')} by m: "
                + ", ".join(f"{m}: {fmt(t)}" + (f" ({missed[m][0]}/{missed[m][1]} missed)"
                                                 if missed[m][0] else "")
                            for m, t in times.items()))
        if s is None:
            out.append(("Fewer workers can win", text + "; no m reached the target", "–"))
            continue
        best, idle, core_s = s
        top = max(times)
        gap = (f"{times[top] / times[best]:.2f}× sooner than m = {top}"
               if math.isfinite(times[top]) else f"m = {top} missed the target")
        verdict = (f"yes: m = {best} fastest, {gap}" if best < top
                   else f"no: the most workers (m = {top}) were fastest")
        out.append((f"Fewer workers can win: the C++ runs reached loss {CPP_LEVEL} fastest with "
                    "33 threads, not 60", text, verdict))
        verdict = ("no saving" if best == top else
                   f"yes, {100 * idle:.0f} % ≥ 67 %" if idle >= 0.67 else
                   f"partly: {100 * idle:.0f} % of workers (< 67 %)")
        out.append(("Up to 67 % of computing resources saved by running fewer workers",
                    f"{label}, η = {lr}: the fastest m = {best} leaves {100 * idle:.0f} % of "
                    f"the {top} workers idle and "
                    + (f"saves {100 * core_s:.0f} % of the core-seconds to target against "
                       f"m = {top}" if math.isfinite(times[top]) else
                       f"reaches the target, which m = {top}'s median run did not"),
                    verdict))
    return out


def _rate(sel: pd.DataFrame) -> float:
    """Median updates/s from first read to last apply (a real run's table rate counts its
    start-up), the table's rate where a run did not keep every row."""
    span = _median(sel, "updates_per_s_span")
    return span if math.isfinite(span) else _median(sel, "updates_per_s")


def collision_table(analysis: Analysis) -> pd.DataFrame:
    """Sparse runs: coordinates an update wrote and the share that collided, against m
    (medians over seeds), beside mean τ."""
    runs = analysis.loaded.runs
    rows = []
    for (engine, alg, m), g in runs.groupby(["engine", "algorithm", "workers"], sort=True):
        rows.append({"engine": engine, "algorithm": alg, "m": int(m), "runs": len(g),
                     "updates/s": fmt(_rate(g), ".0f"),
                     "mean τ": fmt(_median(g, "mean_tau"), ".3g"),
                     "coordinates / update": fmt(_median(g, "coords_per_update"), ".3g"),
                     "collision rate": fmt(_median(g, "collision_rate"), ".3f")})
    return pd.DataFrame(rows)


def claims_sparse(analysis: Analysis) -> list[Claim]:
    """Hogwild! on a sparse problem (Niu et al. 2011): near-linear speed-up, faster than
    locking, rare collisions."""
    runs = _runs(analysis)
    real, sim = runs[runs["engine"] == "real"], runs[runs["engine"] == "sim"]
    problem, target = _first(runs, "problem"), _first(runs, "target_loss")
    algs = ("hogwild", "lock", "leashed")
    out: list[Claim] = []
    ups = {(a, m): _rate(_select(real, algorithm=a, workers=m)) for a in algs for m in (1, 2)}
    ttt = {(a, m): median_ttt(real, algorithm=a, workers=m) for a in algs for m in (1, 2)}
    scale = {a: ups[a, 2] / ups[a, 1] for a in algs}
    sim_m = sorted(int(m) for m in set(sim["workers"]) if m > 2)
    sim_t = {m: median_ttt(sim, algorithm="hogwild", workers=m) for m in [1, *sim_m]}
    text = (f"{problem}, batch 1, real, 2 cores: 2 workers give {scale['hogwild']:.2f}× the "
            f"updates/s of 1 (lock {scale['lock']:.2f}×, Leashed-SGD {scale['leashed']:.2f}×); "
            f"time to loss {target}: 1 worker {secs(ttt['hogwild', 1])}, 2 workers "
            f"{secs(ttt['hogwild', 2])}. Simulated (calibrated), one core per worker, median "
            "time to target: " + ", ".join(f"m = {m}: {secs(t)}" for m, t in sim_t.items()))
    ideal = [sim_t[1] / (m * sim_t[m]) for m in sim_m if math.isfinite(sim_t[m])]
    verdict = ("yes" if scale["hogwild"] >= 1.8 and ideal and min(ideal) >= 0.5 else
               "no" if scale["hogwild"] < 1.2 else
               f"partly: {scale['hogwild']:.2f}× on 2 real cores"
               + (f"; simulated {min(ideal):.0%}–{max(ideal):.0%} of linear at m = "
                  f"{sim_m[0]}–{sim_m[-1]}" if ideal else ""))
    out.append(("Hogwild!: near-linear speed-up on sparse problems (Niu et al. 2011)", text,
                verdict))
    lock_t = {m: median_ttt(sim, algorithm="lock", workers=m) for m in sim_m}
    text = (f"{problem}, real, m = 2: Hogwild! {fmt(ups['hogwild', 2], '.3g')} updates/s, lock "
            f"{fmt(ups['lock', 2], '.3g')}, Leashed-SGD {fmt(ups['leashed', 2], '.3g')}; time to "
            f"loss {target}: Hogwild! {secs(ttt['hogwild', 2])}, lock {secs(ttt['lock', 2])}, "
            f"Leashed-SGD {secs(ttt['leashed', 2])}. Simulated: "
            + ", ".join(f"m = {m}: Hogwild! {secs(sim_t[m])}, lock {secs(lock_t[m])}"
                        for m in sim_m))
    wins = [ups["hogwild", 2] > ups["lock", 2]] + [sim_t[m] < lock_t[m] for m in sim_m]
    verdict = ("yes" if all(wins) else "no" if not any(wins) else
               f"partly: faster in {sum(wins)} of {len(wins)} comparisons")
    out.append(("Hogwild! is faster than locking on sparse problems", text, verdict))
    col = {m: _median(_select(sim, algorithm="hogwild", workers=m), "collision_rate")
           for m in [2, *sim_m]}
    real_col = _median(_select(real, algorithm="hogwild", workers=2), "collision_rate")
    text = (f"{problem}: share of the coordinates Hogwild!'s updates wrote that another update "
            f"since their read had written: real m = 2 {fmt(real_col, '.3f')}; simulated "
            + ", ".join(f"m = {m}: {fmt(c, '.3f')}" for m, c in col.items()))
    rare = [m for m, c in col.items() if math.isfinite(c) and c < 0.1]
    verdict = (f"yes up to m = {max(rare)}" if rare and max(rare) == max(col) else
               f"partly: below 10 % up to m = {max(rare)}, {fmt(col[max(col)], '.2f')} at "
               f"m = {max(col)}" if rare else "no")
    out.append(("Sparse updates rarely collide (why Hogwild! needs no locks there)", text,
                verdict))
    return out


def claims_cpp() -> list[Claim]:
    """The C++ reference itself: which thread count reached :data:`CPP_LEVEL` first, and the
    resources running it instead of the most threads saves."""
    cpp = cpp_reference()
    if cpp is None:
        return [("C++ reference: 33 threads fastest", "../shared/reference not found", "–")]
    best, idle, core_s = savings(cpp.times)
    top = max(cpp.times)
    text = (f"`../shared/reference` (LeNet, CIFAR-10, training loss {CPP_LEVEL}): "
            + ", ".join(f"{k} threads {secs(v, '.0f')} (mean τ {cpp.mean_tau[k]:.1f})"
                        for k, v in cpp.times.items())
            + f"; {best} threads leave {100 * idle:.0f} % of the {top} threads idle and save "
            f"{100 * core_s:.0f} % of the thread-seconds to the level")
    verdict = (f"yes: {best} threads fastest" if best < top else f"no: {top} threads fastest")
    return [(f"C++ measurements: fastest to loss {CPP_LEVEL} with 33 threads, not 60", text,
             verdict + " (re-read from the data, not re-measured)")]


@dataclass(frozen=True)
class Experiment:
    """One reproduction: its title, what it stands for, and how its claims are judged."""

    title: str
    claims: Callable[[Analysis], list[Claim]]
    memory: bool = False
    #: sparse runs: the collision-rate table
    collisions: bool = False
    #: the report figures copied next to the page (when the report drew them)
    figures: tuple[str, ...] = ("throughput_vs_workers.png",)


EXPERIMENTS: dict[str, Experiment] = {
    "leashed-vs-lock-hogwild": Experiment(
        "Leashed-SGD vs lock-based AsyncSGD vs Hogwild! (MLP 784-128-128-128-10, MNIST)",
        claims_leashed, memory=True,
        figures=("speedup_vs_workers.png", "throughput_vs_workers.png", "memory.png")),
    "leashed-vs-lock-hogwild-cnn": Experiment(
        "Leashed-SGD vs lock-based AsyncSGD vs Hogwild! on a CNN (LeNet-5, MNIST)",
        claims_leashed, memory=True,
        figures=("speedup_vs_workers.png", "throughput_vs_workers.png", "memory.png")),
    "tail-vs-baselines": Experiment(
        "TAIL-τ vs the baseline step-size rules (lock AsyncSGD, MLP, Fashion-MNIST)",
        claims_tail),
    "less-is-more": Experiment(
        "Less is more: time to target against m (LeNet-5, Fashion-MNIST)",
        claims_less),
    "less-is-more-mlp": Experiment(
        "Less is more on the MLP (784-128-128-128-10, Fashion-MNIST)",
        claims_less),
    "sparse-hogwild": Experiment(
        "Hogwild! on a sparse problem (logistic regression, text-like data)",
        claims_sparse, collisions=True,
        figures=("speedup_vs_workers.png", "throughput_vs_workers.png")),
}


# ---------------------------------------------------------------------------------------------
# Page
# ---------------------------------------------------------------------------------------------


def section(experiment: str, folder: Path, docs: Path) -> tuple[list[str], list[Claim]]:
    """The Markdown section of one results folder, and its rows of the claims table."""
    spec = EXPERIMENTS[experiment]
    analysis = analyse([folder], run_fits=False, families=("geometric", "poisson"))
    machine = analysis.loaded.folders[0].machine
    runs = analysis.loaded.runs
    cores = int(machine.get("usable_cores") or machine.get("logical_cores") or 1)
    share = real_cpu_share(runs, cores)
    name = folder_name(folder)
    seconds = pd.to_numeric(runs["seconds"], errors="coerce")
    problems = ", ".join(f"`{p}`" for p in sorted(set(runs["problem"])))
    lines = [f"## {spec.title}", "", scale_marker(experiment, folder, runs), "",
             f"Problem: {problems}.", "",
             f"- command: {command_for(name)}",
             f"- folder: `results/{folder.name}` ({len(runs)} runs, "
             f"{_plural(int(runs['seed'].nunique()), 'seed')}; recorded "
             f"{machine.get('recorded_at', '?')}, "
             f"commit {str(machine.get('git_commit', '?'))[:7]}"
             f"{' + local changes' if machine.get('git_dirty') else ''})",
             f"- machine: {machine.get('cpu_model')}, {cores} usable cores; the real runs' "
             f"workers got {fmt(100 * share, '.0f')} % of the cores they could use (other "
             "load shares this machine)",
             f"- simulated seconds are predictions for a machine with one core per worker "
             f"(calibrated from the real runs); real runs: "
             f"{secs(float(seconds[runs['engine'] == 'real'].sum()), '.0f')} of training", ""]
    cfg = tomllib.loads((folder / "config.toml").read_text(encoding="utf-8"))
    if cfg.get("eval", {}).get("split") == "train":
        lines += [f"Loss and time to target on the training split (the first "
                  f"{cfg['eval'].get('max_rows', 'all'):,} training rows), not the test "
                  "split.", ""]
    lines += ["Headline (`stalesgd.analysis.headline`):", ""]
    lines += [f"- {h}" for h in headline(analysis).lines] + [""]
    lines += ["Per configuration (`analyse(...)`: speedup and staleness tables; time to "
              "target over the seeds that reached it, and the median over all seeds with a "
              "miss counted as never):", "", markdown_table(config_table(analysis)), ""]
    if spec.memory:
        lines += ["Memory and publishing, real runs (medians over seeds):", "",
                  markdown_table(memory_table(analysis)), ""]
    if spec.collisions:
        lines += ["Collisions (medians over seeds; updates/s from first read to last apply):",
                  "", markdown_table(collision_table(analysis)), ""]
    if experiment.startswith("less-is-more") and (cpp := cpp_reference()) is not None:
        ref = pd.DataFrame({"threads": list(cpp.times),
                            f"time to training loss {CPP_LEVEL} (s)":
                                [fmt(v, ".0f") for v in cpp.times.values()],
                            "mean τ": [fmt(v, ".1f") for v in cpp.mean_tau.values()]})
        lines += ["C++ reference (`../shared/reference`, LeNet on CIFAR-10, lock AsyncSGD):",
                  "", markdown_table(ref), ""]
    figs = docs / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    for fig in spec.figures:
        src = folder / "figures" / fig
        if src.exists():
            dst = figs / f"{experiment}-{fig}"
            shutil.copyfile(src, dst)
            lines += [f"![{experiment}: {fig}](figures/{dst.name})", ""]
    if experiment.startswith("less-is-more"):
        dst = figure_time_vs_m(analysis, figs / f"{experiment}-time_to_target_vs_m.png",
                               spec.title)
        lines += [f"![{experiment}: time to target against m](figures/{dst.name})", ""]
    if experiment == "tail-vs-baselines":
        dst = figure_rules(analysis, figs / f"{experiment}-rules.png")
        lines += [f"![{experiment}: step-size rules](figures/{dst.name})", ""]
    lines += [f"Full report: `results/{folder.name}/report.html` (not in the repository).", ""]
    return lines, spec.claims(analysis)


@dataclass(frozen=True)
class Scale:
    """How big the folder behind a section of the page was: the experiment file's variant
    (``full`` or ``small``) and the number of seeds."""

    variant: str
    seeds: int

    def __str__(self) -> str:
        return f"{self.variant}, {self.seeds} seed{'s' if self.seeds != 1 else ''}"


_MARKER = re.compile(r"<!-- scale: (?P<exp>[a-z0-9-]+) variant=(?P<variant>full|small) "
                     r"seeds=(?P<seeds>[0-9]+) -->")


def folder_scale(folder: Path, runs: pd.DataFrame | None = None) -> Scale:
    """The scale of a results folder: its experiment's variant and how many seeds it ran."""
    variant = "small" if folder_name(folder).endswith("-small") else "full"
    if runs is None:
        cfg = tomllib.loads((folder / "config.toml").read_text(encoding="utf-8"))
        seeds = len(cfg.get("seeds", [0]))
    else:
        seeds = int(runs["seed"].nunique())
    return Scale(variant, seeds)


def scale_marker(experiment: str, folder: Path, runs: pd.DataFrame) -> str:
    """The comment that records a section's scale on the page (read by :func:`page_scales`)."""
    sc = folder_scale(folder, runs)
    return f"<!-- scale: {experiment} variant={sc.variant} seeds={sc.seeds} -->"


def page_scales(text: str) -> dict[str, Scale]:
    """Experiment -> the scale of its section on an existing page.  Pages written before the
    markers existed: the variant from the section's command (``_small.toml``) and the seeds
    from its folder line."""
    found = {m["exp"]: Scale(m["variant"], int(m["seeds"])) for m in _MARKER.finditer(text)}
    for part in text.split("\n## ")[1:]:
        cmd = re.search(r"stalesgd run bench/experiments/([a-z0-9_]+)\.toml", part)
        seeds = re.search(r"\(\d+ runs, (\d+) seeds;", part)
        if cmd is None or seeds is None:
            continue
        stem = cmd.group(1)
        exp = stem.removesuffix("_small").replace("_", "-")
        if exp in EXPERIMENTS and exp not in found:
            found[exp] = Scale("small" if stem.endswith("_small") else "full",
                               int(seeds.group(1)))
    return found


def scale_conflicts(out: Path, chosen: dict[str, Path]) -> list[str]:
    """Sections of the page at ``out`` that the chosen folders would replace with another
    scale (one line each, saying what is there and what would replace it)."""
    if not out.is_file():
        return []
    have = page_scales(out.read_text(encoding="utf-8"))
    lines = []
    for exp, folder in chosen.items():
        new = folder_scale(folder)
        if exp in have and have[exp] != new:
            lines.append(f"{exp}: the page holds {have[exp]}; {folder} is {new}")
    return lines


def choose(folders: Iterable[Path], results: Path, prefer_small: bool) -> dict[str, Path]:
    """Experiment -> folder: the folders given, else the newest under ``results``."""
    chosen: dict[str, Path] = {}
    for f in folders:
        exp = experiment_of(folder_name(f))
        if exp is None:
            raise SystemExit(f"{f}: experiment {folder_name(f)!r} is not one of "
                             f"{', '.join(EXPERIMENTS)} (or -small)")
        chosen[exp] = f
    for exp in EXPERIMENTS:
        if exp not in chosen and (hit := newest(results, exp, prefer_small)) is not None:
            chosen[exp] = hit
    return {e: chosen[e] for e in EXPERIMENTS if e in chosen}


#: the end of a claims row: the experiment it belongs to (an HTML comment: not rendered)
_ROW_TAG = re.compile(r"<!-- (?P<exp>[a-z0-9-]+) --> \|$")
#: the tag of the C++ reference's row (written with the less-is-more experiments)
CPP_TAG = "cpp-reference"


def claim_row(claim: Claim, tag: str) -> str:
    """A row of the claims table, tagged with its experiment."""
    c, m, r = claim
    return f"| {c} | {m} | {r} <!-- {tag} --> |"


def kept_from_page(text: str, regenerated: Iterable[str]
                   ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Of an existing page: the sections (experiment -> lines) and tagged claims rows
    (tag -> rows) of the experiments not in ``regenerated``, to be kept as they are."""
    regenerated = set(regenerated)
    titles = {spec.title: exp for exp, spec in EXPERIMENTS.items()}
    sections: dict[str, list[str]] = {}
    for part in text.split("\n## ")[1:]:
        exp = titles.get(part.split("\n", 1)[0].strip())
        if exp is not None and exp not in regenerated:
            sections[exp] = ("## " + part).rstrip("\n").split("\n") + [""]
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        tag = _ROW_TAG.search(line) if line.startswith("| ") else None
        if tag is not None and tag["exp"] not in regenerated:
            rows.setdefault(tag["exp"], []).append(line)
    if any(e.startswith("less-is-more") for e in regenerated):
        rows.pop(CPP_TAG, None)
    return sections, rows


def build_page(chosen: dict[str, Path], docs: Path,
               kept: tuple[dict[str, list[str]], dict[str, list[str]]] = ({}, {})
               ) -> tuple[str, int]:
    """The page's Markdown, and the number of claims rows: the sections of the ``chosen``
    folders, and the ``kept`` sections and rows (:func:`kept_from_page`) of the others, in
    the order of :data:`EXPERIMENTS`."""
    body: list[str] = []
    rows: list[str] = []
    kept_sections, kept_rows = kept
    for exp in EXPERIMENTS:
        if exp in chosen:
            lines, claims = section(exp, chosen[exp], docs)
            body += lines
            rows += [claim_row(c, exp) for c in claims]
        elif exp in kept_sections:
            body += kept_sections[exp]
            rows += kept_rows.get(exp, [])
    if any(e.startswith("less-is-more") for e in chosen):
        rows += [claim_row(c, CPP_TAG) for c in claims_cpp()]
    else:
        rows += kept_rows.get(CPP_TAG, [])
    load = os.getloadavg()
    head = ["# Results: the papers' claims, re-measured", "",
            "Generated by `python bench/results_page.py` from the results folders named in each "
            "section; every number comes from those folders or from the C++ measurements in "
            "`../shared/reference`. Simulated runs at more workers than this machine's cores "
            "are predictions of the simulator (numeric replay), calibrated from the real runs "
            "of the same folder, on a simulated machine with one core per worker. CIFAR-10 is "
            "not available here: Fashion-MNIST stands in for it; the TAIL-τ comparison uses the "
            "MLP (LeNet is too slow to replay 210 runs on 2 cores); less-is-more uses LeNet-5, "
            "less-is-more-mlp the MLP."
            " Time to target is the first evaluation at or below the target loss (test loss, "
            "2,000 test rows, unless a section says otherwise).", "",
            "Regenerate: `python bench/results_page.py --out docs/results.md` (newest folder "
            "of each experiment under `results/`; it refuses folders of another scale than "
            "this page's, and keeps the sections, with their claims, of experiments it finds "
            f"no folder for). Load average when this page was generated: {load[0]:.2f}, "
            f"{load[1]:.2f}, {load[2]:.2f} (1, 5, 15 min).", "",
            CLAIM_HEADER, "|---|---|---|"]
    head += rows + [""]
    return "\n".join(head + body) + "\n", len(rows)


def main(argv: list[str] | None = None) -> int:
    """Command line entry: choose the folders, write the page, print what was written."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="*", type=Path, help="results folders (default: newest)")
    ap.add_argument("--results", type=Path, default=Path("results"),
                    help="where to look for the newest folders (default: results)")
    ap.add_argument("--out", type=Path, default=Path("results") / "results.md",
                    help="the page to write (default: results/results.md; the committed page "
                         "is docs/results.md)")
    ap.add_argument("--small", action="store_true",
                    help="prefer the -small variants' folders when looking under --results")
    ap.add_argument("--replace-scale", action="store_true",
                    help="allow sections of another scale (small/full variant, seeds) to "
                         "replace those the page at --out holds")
    args = ap.parse_args(argv)
    chosen = choose(args.folders, args.results, args.small)
    if not chosen:
        print(f"no results folders of {', '.join(EXPERIMENTS)} under {args.results}")
        return 1
    for exp, folder in chosen.items():
        print(f"{exp}: {folder} ({folder_scale(folder)})")
    conflicts = scale_conflicts(args.out, chosen)
    if conflicts and not args.replace_scale:
        print(f"not writing {args.out}: it holds results of another scale than these folders:")
        for line in conflicts:
            print(f"  {line}")
        print("give the folders of the same scale, another --out, or --replace-scale")
        return 2
    kept: tuple[dict[str, list[str]], dict[str, list[str]]] = ({}, {})
    if args.out.is_file():
        kept = kept_from_page(args.out.read_text(encoding="utf-8"), chosen)
        for exp in kept[0]:
            print(f"{exp}: no folder; its section and claims are kept from {args.out}")
    text, n_claims = build_page(chosen, args.out.parent, kept)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({n_claims} claims, {len(chosen)} experiments)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
