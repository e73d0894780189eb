"""What a report shows, computed: the :class:`Analysis` of one or more results folders.

:func:`analyse` loads folders (:mod:`.load`) and computes the staleness tables
(:mod:`.staleness_report`), the throughput and speedup table (:mod:`.speedup`), the theory
checks of least-squares runs (:mod:`.theory_report`) and notes about the input (what could
not be computed and why).  It writes nothing: :mod:`.report` formats and writes, and
:mod:`.figures` draws.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from stalesgd.staleness import FAMILIES

from .load import Loaded, load_folders
from .plotting import FigureFile
from .speedup import speedup_table
from .staleness_report import StalenessTables, staleness_tables
from .theory_report import TheoryChecks, theory_checks

__all__ = ["Analysis", "analyse", "has_target", "with_prediction_errors"]


@dataclass
class Analysis:
    """Everything a report shows: the loaded tables, staleness and speedup tables, notes about
    the input (what could not be computed and why), and the figures once drawn."""

    loaded: Loaded
    stale: StalenessTables
    speedup: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    figures: list[FigureFile] = field(default_factory=list)
    #: least-squares runs against the exact recursion and the Hogwild! envelope (or None)
    theory: TheoryChecks | None = None


def has_target(runs: pd.DataFrame) -> bool:
    """Whether any of ``runs`` (rows with a ``target_loss`` column) had a target loss."""
    if "target_loss" not in runs:
        return False
    return bool(np.isfinite(pd.to_numeric(runs["target_loss"], errors="coerce")).any())


def _notes(loaded: Loaded) -> list[str]:
    notes: list[str] = []
    runs = loaded.runs
    for src, res in zip(loaded.sources, loaded.folders, strict=True):
        if (res.path / "parts").exists():
            notes.append(f"{src}: not merged (interrupted while writing); finished runs were "
                         "read from its part files.")
        mine = runs[runs["source"] == src]
        if mine.empty:
            notes.append(f"{src}: no finished run.")
            continue
        if not mine["evaluated"].any():
            notes.append(f"{src}: no evaluations (e.g. a timing-only simulation): no loss "
                         "curves, no time to target, no convergence judgement.")
        if not has_target(mine):
            notes.append(f"{src}: no target loss: time/updates to target and speedups are "
                         "not defined (pass --target LOSS to set one).")
        n_int = int(mine.get("interrupted", pd.Series(False)).fillna(False).astype(bool).sum())
        if n_int:
            notes.append(f"{src}: {n_int} interrupted run(s), kept in the tables; left out of "
                         "the non-convergence rate unless they diverged or reached the target.")
    notes += unpaired_notes(runs)
    engines = sorted(set(runs["engine"].dropna().astype(str))) if len(runs) else []
    if len(engines) == 1 and engines[0].startswith("sim["):
        notes.append(f"Only {engines[0]} runs (out-of-sample predictions) and no measured "
                     "run: give the real results folder too to compare them.")
    return notes


def unpaired_notes(runs: pd.DataFrame, shown: int = 4) -> list[str]:
    """Where engines were given but a configuration ran on only one of them (so no distance
    or prediction error can be computed for it): which, per engine, and why."""
    if runs.empty or runs["engine"].nunique() < 2:
        return []
    engines_of = runs.groupby("config_key")["engine"].agg(lambda e: sorted(set(e)))
    alone = engines_of[engines_of.map(len) == 1]
    if alone.empty:
        return []
    notes = []
    everything = sorted(set(runs["engine"]))
    for engine, keys in alone.groupby(alone.map(lambda e: e[0])):
        names = sorted(keys.index)
        more = f" and {len(names) - shown} more" if len(names) > shown else ""
        others = ", ".join(e for e in everything if e != engine)
        notes.append(f"{len(names)} configuration(s) ran only on {engine}, not on {others}: "
                     f"{'; '.join(names[:shown])}{more} — no distance or error for them "
                     "(configurations pair when problem, algorithm, workers, rule, lr, batch, "
                     "dtype and swept options are equal).")
    return notes


def with_prediction_errors(distances: pd.DataFrame, speedup: pd.DataFrame) -> pd.DataFrame:
    """``distances`` (one row per configuration and engine pair) with how far the other
    engine's updates/s and time to target are from the reference's: ``updates_per_s_ratio``
    and ``time_to_target_ratio`` (other ÷ reference; NaN where either is missing).  Updates/s
    are compared from first read to last apply (``updates_per_s_span``) where both runs kept
    every update row, else as the runs table gives them.  A prediction's speedup over the
    measured one-worker run is off by its updates/s ratio."""
    out = distances.copy()
    if out.empty:
        out["updates_per_s_ratio"] = pd.Series(dtype=float)
        out["time_to_target_ratio"] = pd.Series(dtype=float)
        return out
    by = speedup.set_index(["config_key", "engine"]) if len(speedup) else None

    def value(key: str, engine: str, col: str) -> float:
        try:
            return float(by.loc[(key, engine), col])
        except (KeyError, AttributeError, TypeError):
            return float("nan")

    ups, ttt = [], []
    for row in out.itertuples():
        a, b = (value(row.config_key, e, "updates_per_s_span") for e in (row.engine_a,
                                                                         row.engine_b))
        if not (np.isfinite(a) and np.isfinite(b)):
            a, b = (value(row.config_key, e, "updates_per_s") for e in (row.engine_a,
                                                                        row.engine_b))
        ups.append(b / a if np.isfinite(a) and np.isfinite(b) and a > 0 else np.nan)
        a, b = (value(row.config_key, e, "time_to_target") for e in (row.engine_a,
                                                                     row.engine_b))
        ttt.append(b / a if np.isfinite(a) and np.isfinite(b) and a > 0 else np.nan)
    out["updates_per_s_ratio"] = ups
    out["time_to_target_ratio"] = ttt
    return out


def analyse(dirs: str | Path | Iterable[str | Path], target: float | None = None,
            run_fits: bool = True, families: Iterable[str] = FAMILIES,
            theory: bool = True) -> Analysis:
    """Load results folders and compute the staleness and speedup tables (no files written).

    ``target``: target loss overriding the runs' own; ``run_fits``: also fit a law to every
    run's τ histogram (not only to each configuration's pooled one); ``families``: the laws
    tried (default all of :data:`stalesgd.staleness.FAMILIES`); ``theory``: check
    least-squares runs against the exact recursion (:mod:`.theory_report`).
    """
    loaded = load_folders(dirs, target=target)
    stale = staleness_tables(loaded, run_fits=run_fits, families=families)
    checks = theory_checks(loaded) if theory else None
    notes = _notes(loaded) + ([f"Theory check skipped: {n}." for n in checks.notes]
                              if checks is not None else [])
    speedup = speedup_table(loaded)
    stale.distances = with_prediction_errors(stale.distances, speedup)
    return Analysis(loaded=loaded, stale=stale, speedup=speedup, notes=notes, theory=checks)
