"""Load one or more results folders into one set of tables, keyed by configuration.

The analysis layer reads results folders only (DESIGN §2, §3): :func:`load_folders` reads each
folder with :func:`stalesgd.records.load_results` (merged or not) and stacks the ``runs``,
``updates`` and ``evals`` tables.  Run ids are only unique within a folder, so every row gets a
``uid`` (``<source>/<run_id>``) and a ``source`` (the folder name).  Every run also gets a
``config_key``: the configuration it ran, independent of engine and seed (problem, algorithm,
workers, step-size rule, lr, batch, dtype, persistence and any swept problem/algorithm/step-size
option), so that a simulated and a real run of the same configuration share a key and every
sim-vs-real comparison is a join on it.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stalesgd.records import EVALS_SCHEMA, RUNS_SCHEMA, UPDATES_SCHEMA, Results, load_results

__all__ = [
    "IDENTITY_COLUMNS",
    "AnalysisError",
    "Loaded",
    "config_key",
    "config_slug",
    "fill_targets",
    "load_folders",
]

IDENTITY_COLUMNS: tuple[str, ...] = ("problem", "algorithm", "workers", "stepsize", "lr", "batch",
                                     "dtype", "persistence")
"""Runs-table columns that identify a configuration (engine and seed deliberately excluded)."""

_OPTION_PREFIXES = ("problem.", "algorithm.", "stepsize.")
"""Swept keys stored as extra runs columns with these prefixes are part of the configuration;
``sim.*``, ``eval.*`` and ``stop.*`` keys are not (they describe how, not what, was run)."""


class AnalysisError(ValueError):
    """Input the analysis cannot use (a missing or foreign folder); the message names it."""


@dataclass
class Loaded:
    """Several results folders as one set of tables.

    ``runs`` has one row per run with the contract columns plus ``source``, ``uid``,
    ``config_key``, ``evaluated`` (has at least one evaluation) and ``reached`` (target
    reached); ``updates`` and ``evals`` carry ``source`` and ``uid`` too.  ``folders`` keeps
    each folder as read (config and machine info).
    """

    runs: pd.DataFrame
    updates: pd.DataFrame
    evals: pd.DataFrame
    folders: list[Results] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    control: pd.DataFrame | None = None
    """Elastic runs' m(t) traces (``source``, ``uid`` and the control columns), or None."""

    @property
    def engines(self) -> list[str]:
        """The engines present, sorted ('real' first when present)."""
        names = sorted(set(self.runs["engine"].dropna().astype(str))) if len(self.runs) else []
        return sorted(names, key=lambda e: (e != "real", e))


def _fmt_number(value: Any) -> str:
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isinf(v):
            return "inf"
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return f"{v:g}"
    return str(value)


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    try:
        return bool(isinstance(value, float | np.floating) and math.isnan(value))
    except TypeError:
        return False


def config_key(row: dict[str, Any] | pd.Series) -> str:
    """The configuration of a run as readable text, the same for every engine and seed.

    ``problem algorithm m=W rule lr=X b=B dtype`` then ``persistence=P`` when finite, then any
    swept ``problem.*``/``algorithm.*``/``stepsize.*`` option as ``key=value``.  Columns that
    are missing (older or foreign folders) are left out rather than guessed.
    """
    get = row.get
    parts: list[str] = []
    for name, label in (("problem", ""), ("algorithm", ""), ("workers", "m="),
                        ("stepsize", ""), ("lr", "lr="), ("batch", "b="), ("dtype", "")):
        value = get(name)
        if not _missing(value):
            parts.append(f"{label}{_fmt_number(value)}")
    pers = get("persistence")
    if not _missing(pers):
        try:
            finite = math.isfinite(float(pers))
        except (TypeError, ValueError):
            finite = True
        if finite:
            parts.append(f"persistence={_fmt_number(pers)}")
    keys = row.index if isinstance(row, pd.Series) else list(row)
    for name in sorted(k for k in keys if isinstance(k, str) and k.startswith(_OPTION_PREFIXES)):
        value = get(name)
        if not _missing(value):
            parts.append(f"{name}={_fmt_number(value)}")
    return " ".join(parts)


def config_slug(key: str) -> str:
    """A file-name-safe, collision-free short name for a configuration key (for figures)."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "_", key).strip("_")[:80]
    digest = hashlib.sha1(key.encode()).hexdigest()[:6]
    return f"{slug}-{digest}"


def _empty(schema) -> pd.DataFrame:
    return schema.empty_table().to_pandas()


def _first_reached(ev: pd.DataFrame, target: float) -> tuple[float, float]:
    """Time and update index of the first evaluation with loss <= target (NaN if none)."""
    ev = ev.sort_values("t", kind="stable")
    hit = ev[ev["loss"] <= target]
    if hit.empty:
        return math.nan, math.nan
    return float(hit["t"].iloc[0]), float(hit["k"].iloc[0])


def fill_targets(runs: pd.DataFrame, evals: pd.DataFrame, target: float | None = None,
                 config_targets: dict[str, float] | None = None) -> pd.DataFrame:
    """Time and updates to target per run, computed from the evaluations where needed.

    With ``target`` given, every run's ``target_loss``, ``time_to_target`` and
    ``updates_to_target`` are recomputed from its evaluations (first loss <= target).
    Otherwise the runs table's values are kept; a run without a target gets the target of its
    folder's config (``config_targets[source]``, from ``stop.target_loss``), and a run with a
    target but no time to target gets values computed from its evaluations.  Adds
    ``evaluated`` (the run has evaluations) and ``reached`` (a finite time to target).
    Returns a new frame.
    """
    runs = runs.copy()
    for col in ("target_loss", "time_to_target", "updates_to_target"):
        if col not in runs:
            runs[col] = math.nan
        runs[col] = pd.to_numeric(runs[col], errors="coerce").astype("float64")
    by_uid = {uid: ev for uid, ev in evals.groupby("uid", sort=False)} if len(evals) else {}
    config_targets = config_targets or {}
    for i, row in runs.iterrows():
        ev = by_uid.get(row["uid"])
        tgt = row["target_loss"]
        recompute = target is not None
        if target is not None:
            tgt = float(target)
        elif math.isnan(tgt) and row["source"] in config_targets:
            tgt = float(config_targets[row["source"]])
            recompute = True
        elif not math.isnan(tgt) and math.isnan(row["time_to_target"]) and ev is not None:
            recompute = True  # a table written without the derived columns
        runs.at[i, "target_loss"] = tgt
        if recompute:
            t, k = _first_reached(ev, tgt) if ev is not None and not math.isnan(tgt) \
                else (math.nan, math.nan)
            runs.at[i, "time_to_target"] = t
            runs.at[i, "updates_to_target"] = k
    runs["evaluated"] = runs["uid"].isin(set(by_uid))
    runs["reached"] = np.isfinite(runs["time_to_target"].to_numpy(dtype=np.float64))
    return runs


def _source_names(paths: list[Path]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base = p.resolve().name or str(p)
        name, i = base, 2
        while name in names:
            name, i = f"{base}#{i}", i + 1
        names.append(name)
    return names


def _check_folder(path: Path) -> None:
    if not path.exists():
        raise AnalysisError(f"results folder {path} does not exist")
    if not path.is_dir():
        raise AnalysisError(f"results folder {path} is not a directory")
    markers = ("runs.parquet", "parts", "config.toml")
    if not any((path / m).exists() for m in markers):
        raise AnalysisError(f"{path} is not a results folder (it has none of "
                            f"{', '.join(markers)})")


def load_folders(dirs: str | Path | Iterable[str | Path],
                 target: float | None = None) -> Loaded:
    """Read results folders (merged, or unmerged after an interruption) into one :class:`Loaded`.

    ``target``: a target loss that overrides the runs' own (see :func:`fill_targets`).
    Raises :class:`AnalysisError` naming the path of a folder that is missing or is not a
    results folder.
    """
    if isinstance(dirs, str | Path):
        dirs = [dirs]
    paths = [Path(d) for d in dirs]
    if not paths:
        raise AnalysisError("no results folder given; need at least one")
    for p in paths:
        _check_folder(p)
    folders = [load_results(p) for p in paths]
    sources = _source_names(paths)
    runs_l, upd_l, ev_l = [], [], []
    config_targets: dict[str, float] = {}
    for src, res in zip(sources, folders, strict=True):
        stop_target = (res.config.get("stop") or {}).get("target_loss")
        if isinstance(stop_target, int | float):
            config_targets[src] = float(stop_target)
        for frame, out in ((res.runs, runs_l), (res.updates, upd_l), (res.evals, ev_l)):
            f = frame.copy()
            f.insert(0, "source", src)
            f.insert(1, "uid", src + "/" + f["run_id"].astype(str) if len(f) else pd.Series(
                [], dtype=object))
            out.append(f)
    runs = pd.concat(runs_l, ignore_index=True) if runs_l else _empty(RUNS_SCHEMA)
    updates = pd.concat(upd_l, ignore_index=True)
    evals = pd.concat(ev_l, ignore_index=True)
    for frame, schema in ((updates, UPDATES_SCHEMA), (evals, EVALS_SCHEMA)):
        for name in schema.names:
            if name not in frame:
                frame[name] = pd.Series(dtype=schema.field(name).type.to_pandas_dtype())
    if len(runs):
        runs["config_key"] = [config_key(row) for _, row in runs.iterrows()]
    else:
        runs["config_key"] = pd.Series([], dtype=object)
    runs = fill_targets(runs, evals, target, config_targets)
    ctl_l = []
    for src, res in zip(sources, folders, strict=True):
        ctl = getattr(res, "control", None)  # folders written before elastic runs have none
        if ctl is not None and len(ctl):
            f = ctl.copy()
            f.insert(0, "source", src)
            f.insert(1, "uid", src + "/" + f["run_id"].astype(str))
            ctl_l.append(f)
    control = pd.concat(ctl_l, ignore_index=True) if ctl_l else None
    return Loaded(runs=runs, updates=updates, evals=evals, folders=folders, sources=sources,
                  control=control)
