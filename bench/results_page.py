"""Generate ``docs/results.md`` from the results folders of the reproduction experiments.

Usage (from the repository root)::

    python bench/results_page.py [FOLDER ...] [--results results] [--out docs/results.md]

Without folders, the newest folder under ``--results`` of each experiment in
``bench/experiments/`` is used (the full-scale file's if present, else its ``_small``
variant's).  Every number on the page is computed here from the folders (run records, and the
C++ measurements in ``../shared/reference``); nothing is typed in by hand.  Key figures of
each folder's report are copied to ``docs/figures/``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from stalesgd.analysis import analyse
from stalesgd.analysis.headline import headline
from stalesgd.analysis.report import markdown_table

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference" / "cpp_async_lenet_cifar10.json"
EXPERIMENTS = {  # name prefix -> experiment file (full scale; "_small" variant beside it)
    "leashed-vs-lock-hogwild": "leashed_vs_lock_hogwild",
    "tail-vs-baselines": "tail_vs_baselines",
    "less-is-more": "less_is_more",
}
FIGURES = ("speedup_vs_workers.png", "throughput_vs_workers.png", "memory.png",
           "stepsize_tables.png")


def newest(results: Path, name: str) -> Path | None:
    """The newest results folder of experiment ``name`` (full scale first, then small)."""
    for variant in (name, f"{name}-small"):
        hits = sorted(p for p in results.glob(f"{variant}-2*") if p.is_dir())
        if hits:
            return hits[-1]
    return None


def _fmt(v: float, spec: str = ".3g") -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _ttt(sp: pd.DataFrame, engine: str, **where) -> float:
    rows = sp[sp["engine"] == engine]
    for k, v in where.items():
        rows = rows[rows[k] == v]
    return float(rows["time_to_target"].mean()) if len(rows) else math.nan


def _nonconv(sp: pd.DataFrame, engine: str, **where) -> float:
    rows = sp[sp["engine"] == engine]
    for k, v in where.items():
        rows = rows[rows[k] == v]
    judged = rows["judged"].sum()
    return float(rows["not_converged"].sum() / judged) if judged else math.nan


def claims_leashed(analysis) -> list[tuple[str, str, str]]:
    runs, sp = analysis.loaded.runs, analysis.speedup
    real = runs[(runs["engine"] == "real") & (runs["workers"] == 2)]
    out = []
    # Peak RSS is not compared: the runs of a sweep share one process, whose peak only grows
    # (a later run inherits an earlier one's); the parameter buffers are per run.
    par = real.groupby("algorithm")["peak_param_bytes"].median()
    if {"lock", "leashed"} <= set(par.index):
        p = par["leashed"] / par["lock"]
        pool = float(real[real["algorithm"] == "leashed"]["pool_high_water"].max())
        out.append(("Leashed-SGD uses up to 17 % less memory than lock-based AsyncSGD",
                    f"real, m = 2: peak parameter-buffer bytes leashed/lock = {p:.3f} (Leashed "
                    f"pool high-water {_fmt(pool, '.0f')} vectors; lock keeps the shared vector "
                    "and one local copy per worker)",
                    "yes" if p < 1 else "no"))
    for engine, m in (("real", 2), ("sim", 16)):
        t = {a: _ttt(sp, engine, algorithm=a, workers=m) for a in ("lock", "hogwild", "leashed")}
        if all(math.isfinite(v) for v in t.values()):
            best = min(t, key=t.get)
            out.append(("Leashed-SGD converges faster than lock and Hogwild!",
                        f"{engine}, m = {m}: time to target lock {t['lock']:.3g} s, hogwild "
                        f"{t['hogwild']:.3g} s, leashed {t['leashed']:.3g} s",
                        "yes" if best == "leashed" else f"no: {best} was fastest"))
    return out


def claims_tail(analysis) -> list[tuple[str, str, str]]:
    sp = analysis.speedup
    sim = sp[sp["engine"] == "sim"]
    out = []
    ratios, cells = [], []
    for m in sorted(set(sim["workers"])):
        c, t = _ttt(sp, "sim", stepsize="constant", workers=m), _ttt(sp, "sim", stepsize="tail",
                                                                      workers=m)
        nc, nt = (_nonconv(sp, "sim", stepsize=r, workers=m) for r in ("constant", "tail"))
        cells.append(f"m = {m}: constant {_fmt(c)} s ({_fmt(100 * nc, '.0f')} % not "
                     f"converged), tail {_fmt(t)} s ({_fmt(100 * nt, '.0f')} %)")
        if math.isfinite(c) and math.isfinite(t):
            ratios.append(c / t - 1.0)
    if cells:
        mean = float(np.mean(ratios)) if ratios else math.nan
        out.append(("TAIL-τ: 29 % average speed-up over a constant step (LeNet, CIFAR-10)",
                    "sim, MLP on Fashion-MNIST: " + "; ".join(cells)
                    + f"; mean speed-up {_fmt(100 * mean, '.0f')} %",
                    "yes" if math.isfinite(mean) and mean > 0 else "no"))
    rules = sorted(set(sim["stepsize"]))
    means = {r: float(sim[sim["stepsize"] == r]["time_to_target"].mean()) for r in rules}
    nonc = {r: _nonconv(sp, "sim", stepsize=r) for r in rules}
    if means:
        out.append(("TAIL-τ against all baselines (time to target, non-convergence)",
                    "; ".join(f"{r} {_fmt(means[r])} s / {_fmt(100 * nonc[r], '.0f')} %"
                              for r in rules), "see table"))
    if "tail-original" in means and "tail" in means:
        a, b = means["tail"], means["tail-original"]
        out.append(("tail (normalised) vs tail-original (the released C++ formula)",
                    f"mean time to target tail {_fmt(a)} s, tail-original {_fmt(b)} s",
                    "–"))
    return out


def cpp_fastest(level: float = 0.6) -> tuple[str, str]:
    """Which thread count of the C++ reference reached ``level`` first, and the times."""
    if not REFERENCE.exists():
        return "", "C++ reference not found beside the repository"
    runs = json.loads(REFERENCE.read_text())["runs"]
    times = {}
    for threads, run in runs.items():
        loss, t = np.asarray(run["epoch_loss"]), np.asarray(run["epoch_time"])
        hit = np.flatnonzero(loss <= level)
        times[int(threads)] = float(t[hit[0]]) if hit.size else math.inf
    best = min(times, key=times.get)
    return str(best), ", ".join(f"{k} threads {_fmt(v, '.0f')} s" for k, v in sorted(times.items()))


def claims_less(analysis) -> list[tuple[str, str, str]]:
    sp = analysis.speedup
    sim = sp[(sp["engine"] == "sim")].sort_values("workers")
    if sim.empty:
        return []
    t = sim.groupby("workers")["time_to_target"].mean()
    ok = t[np.isfinite(t.to_numpy())]
    if ok.empty:
        return [("Fewer workers can win", "no simulated run reached the target", "–")]
    best = int(ok.idxmin())
    cpp_best, cpp_times = cpp_fastest()
    text = ("sim, time to target by m: " + ", ".join(f"{m}: {_fmt(v)} s" for m, v in t.items())
            + f"; fastest m = {best} (largest tried {int(t.index.max())}); C++ reference to loss "
            f"0.6: {cpp_times}")
    largest = int(t.index.max())
    gain = float(t.loc[largest] / t.loc[best]) if math.isfinite(t.loc[largest]) else math.inf
    verdict = (f"yes: m = {best} reached it {gain:.2f}× sooner than m = {largest}; times from "
               f"m = {int(ok.index.min())} to {largest} span {ok.min():.3g}–{ok.max():.3g} s"
               if best < largest else "no: the most workers were fastest here")
    return [("Fewer workers can win: the C++ runs reached loss 0.6 fastest with 33 threads, "
             "not 60", text, verdict)]


def section(name: str, folder: Path, docs: Path) -> tuple[list[str], list[tuple[str, str, str]]]:
    analysis = analyse([folder], run_fits=False, families=("geometric", "poisson"))
    machine = analysis.loaded.folders[0].machine
    lines = [f"## {name}", "",
             f"Folder `{folder.name}`; command: `STALESGD_DATA=../shared/data stalesgd run "
             f"bench/experiments/{EXPERIMENTS[name]}{'_small' if 'small' in folder.name else ''}"
             f".toml`; machine: {machine.get('cpu_model')}, "
             f"{machine.get('usable_cores')} usable cores.", ""]
    lines += [f"- {h}" for h in headline(analysis).lines] + [""]
    cols = ["engine", "algorithm", "workers", "stepsize", "runs", "updates_per_s", "reached",
            "time_to_target", "nonconv_rate"]
    table = analysis.speedup[[c for c in cols if c in analysis.speedup]].copy()
    lines += [markdown_table(table.round(4)), ""]
    figs = docs / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    for fig in FIGURES:
        src = folder / "figures" / fig
        if src.exists():
            dst = figs / f"{name}-{fig}"
            shutil.copyfile(src, dst)
            lines += [f"![{name}: {fig}](figures/{dst.name})", ""]
    claims = {"leashed-vs-lock-hogwild": claims_leashed, "tail-vs-baselines": claims_tail,
              "less-is-more": claims_less}[name](analysis)
    return lines, claims


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="*", type=Path)
    ap.add_argument("--results", type=Path, default=Path("results"))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    args = ap.parse_args(argv)
    chosen: dict[str, Path] = {}
    for f in args.folders:
        for name in EXPERIMENTS:
            if f.name.startswith(name):
                chosen[name] = f
    for name in EXPERIMENTS:
        if name not in chosen and (hit := newest(args.results, name)) is not None:
            chosen[name] = hit
    if not chosen:
        print(f"no results folders of {', '.join(EXPERIMENTS)} under {args.results}")
        return 1
    docs = args.out.parent
    body: list[str] = []
    claims: list[tuple[str, str, str]] = []
    for name in EXPERIMENTS:
        if name in chosen:
            lines, cl = section(name, chosen[name], docs)
            body += lines
            claims += cl
    head = ["# Results: the papers' claims, re-measured", "",
            "Generated by `python bench/results_page.py` from the results folders named in each "
            "section; every number comes from those folders or from the C++ measurements in "
            "`../shared/reference`. Simulated runs at more workers than this machine's 2 cores "
            "are predictions of the simulator calibrated from the real runs of the same "
            "folder. Fashion-MNIST and an MLP stand in for CIFAR-10 and LeNet (not available / "
            "too slow to replay here).", "",
            "| claim | measured here | reproduced? |", "|---|---|---|"]
    head += [f"| {c} | {m} | {r} |" for c, m, r in claims] + [""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(head + body) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({len(claims)} claims, {len(chosen)} experiments)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
