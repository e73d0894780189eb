"""Load one or more results folders into one set of tables, keyed by configuration.

The analysis layer reads results folders only (DESIGN §2, §3): :func:`load_folders` reads each
folder with :func:`read_folder` (merged or not; a missing, truncated or corrupt table is named)
and stacks the ``runs``, ``updates`` and ``evals`` tables.  Run ids are only unique within a
folder, so every row gets a ``uid`` (``<source>/<run_id>``) and a ``source`` (the folder
name).  Every run also gets a ``config_key``: the configuration it ran, independent of engine
and seed (problem, algorithm, workers, step-size rule, lr, batch, dtype, persistence and any
swept problem/algorithm/step-size option), so that a simulated and a real run of the same
configuration share a key and every sim-vs-real comparison is a join on it.

Simulations of parameter servers (``sim --topology ps``) appear as engine ``sim-ps`` and are
compared with engine ``ray``, which they model.  Simulations of more than N workers
calibrated only from runs of at most N workers
(``calibration_scope`` ``m<=N``, from ``stalesgd calibrate --max-workers N`` or ``[sim]
calibration_max_workers``) appear as engine ``sim[m<=N]``: out-of-sample predictions,
compared with the measured runs beside the in-sample ``sim`` of the same configuration rather
than pooled with it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyarrow import ArrowException

from stalesgd.experiment import DEFAULT_SHARDS
from stalesgd.records import EVALS_SCHEMA, RUNS_SCHEMA, UPDATES_SCHEMA, Results, load_results

from .steadiness import slow_shares

__all__ = [
    "IDENTITY_COLUMNS",
    "REQUIRED_COLUMNS",
    "AnalysisError",
    "Loaded",
    "check_target",
    "config_key",
    "config_slug",
    "fill_targets",
    "load_folders",
    "read_folder",
]

IDENTITY_COLUMNS: tuple[str, ...] = ("problem", "algorithm", "workers", "stepsize", "lr", "batch",
                                     "dtype", "persistence")
"""Runs-table columns that identify a configuration (engine and seed deliberately excluded)."""

_OPTION_PREFIXES = ("problem.", "algorithm.", "stepsize.")
"""Swept keys stored as extra runs columns with these prefixes are part of the configuration;
``sim.*``, ``eval.*`` and ``stop.*`` keys are not (they describe how, not what, was run)."""


#: tables a merged results folder must have besides runs.parquet
REQUIRED_TABLES = ("updates", "evals")
#: columns every table of a results folder has (the analysis reads them by name)
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "runs": ("run_id", "engine", "algorithm", "workers"),
    "updates": ("run_id", "k", "tau"),
    "evals": ("run_id", "t", "k", "loss"),
}


class AnalysisError(ValueError):
    """Input the analysis cannot use (a missing, foreign, incomplete or corrupt folder, a bad
    target); the message names the folder or file and the problem."""


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
    staleness: pd.DataFrame | None = None
    """Exact τ counts of every applied update per run (``source``, ``uid``, ``tau``,
    ``count``): PDF(τ) comes from here, also where a run kept only a sample of its rows."""

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

    ``problem algorithm m=W rule lr=X b=B dtype`` then ``persistence=P`` when finite,
    ``sampling=epochs`` when minibatches came from reshuffled epochs,
    ``slowdown=W=F,…`` when workers were slowed down on purpose, ``net_delay=DIST`` when
    messages were delayed (engine ``ray``, simulated servers), ``shards=K`` for Hogwild! on
    other than the default number of servers, then any
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
    sampling = get("sampling")  # minibatches from reshuffled epochs (not the default)
    if not _missing(sampling) and sampling != "replacement":
        parts.append(f"sampling={sampling}")
    for name in ("slowdown", "net_delay"):  # stragglers, network delays on purpose
        value = get(name)
        if not _missing(value) and value:
            parts.append(f"{name}={value}")
    shards = get("shards")  # Hogwild!'s servers, when not the default number
    if get("algorithm") == "hogwild" and not _missing(shards) and int(shards) != DEFAULT_SHARDS:
        parts.append(f"shards={int(shards)}")
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
        raise AnalysisError(f"{path} is a file, not a results folder (give the folder that "
                            "holds runs.parquet)")
    markers = ("runs.parquet", "parts", "config.toml")
    if not any((path / m).exists() for m in markers):
        raise AnalysisError(f"{path} is not a results folder (it has none of "
                            f"{', '.join(markers)})")
    if (path / "parts").exists():
        return  # interrupted while writing: the part files hold what the tables lack
    tables = [f"{kind}.parquet" for kind in ("runs", *REQUIRED_TABLES)]
    present = [t for t in tables if (path / t).exists()]
    if present:
        for name in tables:
            if name not in present:
                raise AnalysisError(
                    f"results folder {path}: {name} is missing (the folder has "
                    f"{', '.join(present)}); it cannot be analysed without it")


def _unreadable(path: Path, exc: Exception) -> str:
    """Which file of the folder ``path`` cannot be read, and why (``exc``: the error that
    reading the whole folder raised)."""
    import pyarrow.parquet as pq

    files = sorted(path.glob("*.parquet"))
    if (path / "parts").is_dir():
        files += sorted((path / "parts").glob("*.parquet"))
    for f in files:
        try:
            pq.ParquetFile(f).read()
        except (OSError, ValueError, ArrowException) as err:
            return (f"results folder {path}: {f.relative_to(path)} cannot be read; it is "
                    f"truncated or corrupt ({err})")
    for name, parse in (("config.toml", tomllib.loads), ("machine.json", json.loads)):
        f = path / name
        try:
            if f.exists():
                parse(f.read_text())
        except (OSError, ValueError) as err:
            return f"results folder {path}: {name} cannot be read ({err})"
    return f"results folder {path} cannot be read ({exc})"


def read_folder(path: str | Path) -> Results:
    """Read one results folder (merged, or unmerged after an interruption).

    Raises :class:`AnalysisError` naming the folder and the problem: it does not exist or is
    not a results folder, one of its tables is missing, truncated or corrupt (the file is
    named), or a table lacks the columns every results folder has.
    """
    path = Path(path)
    _check_folder(path)
    try:
        res = load_results(path)
    except (OSError, ValueError, ArrowException) as exc:
        raise AnalysisError(_unreadable(path, exc)) from None
    for kind, needed in REQUIRED_COLUMNS.items():
        frame = getattr(res, kind)
        lacking = [c for c in needed if c not in frame]
        if lacking:
            raise AnalysisError(f"results folder {path}: the {kind} table ({kind}.parquet) "
                                f"lacks the column(s) {', '.join(lacking)}; it is not a "
                                f"stalesgd {kind} table")
    return res


def check_target(target: Any) -> float:
    """``target`` as a float if it is a usable target loss (a finite number > 0), else
    :class:`AnalysisError`."""
    ok = (isinstance(target, int | float | np.integer | np.floating)
          and not isinstance(target, bool | np.bool_))
    if not ok or not math.isfinite(float(target)) or float(target) <= 0:
        raise AnalysisError(f"target loss {target!r} is not allowed; it must be a finite "
                            "number > 0")
    return float(target)


def _check_distinct(paths: list[Path]) -> None:
    seen: dict[Path, Path] = {}
    for p in paths:
        real = p.resolve()
        if real in seen:
            same = "twice" if seen[real] == p else f"twice (as {seen[real]} and {p})"
            raise AnalysisError(f"results folder {p} is given {same}; give each folder once "
                                "(a run compared with itself would count double)")
        seen[real] = p


def _label_out_of_sample(runs: pd.DataFrame) -> pd.DataFrame:
    """Engine ``sim-ps`` for simulations of parameter servers (``topology = "ps"``, the
    model of engine ``ray``), and ``sim[m<=N]`` (``sim-ps[m<=N]``) for the sim runs whose
    calibration saw only runs of at most N workers (see the module docstring)."""
    if not len(runs):
        return runs
    runs = runs.copy()
    sim = runs["engine"] == "sim"
    if "topology" in runs:
        runs.loc[sim & (runs["topology"] == "ps"), "engine"] = "sim-ps"
    if "calibration_scope" in runs:
        scope = runs["calibration_scope"]
        pick = scope.notna() & (scope.astype(str) != "") & sim
        runs.loc[pick, "engine"] = runs.loc[pick, "engine"] + "[" + scope[pick].astype(str) + "]"
    return runs


def span_rates(runs: pd.DataFrame, updates: pd.DataFrame) -> np.ndarray:
    """Per run, applied updates per second from its first read to its last apply, from its
    update rows: the rate every engine can be compared on (a real run's ``updates_per_s``
    divides by the whole run, start-up included; a simulation's has no start-up).  NaN for
    runs that kept only some rows (``log_rows`` other than ``all``) or fewer than two."""
    out = np.full(len(runs), np.nan)
    if not len(runs) or updates.empty:
        return out
    applied = updates[~updates["dropped"].fillna(False).astype(bool)]
    first = updates.groupby("uid")["t_read"].min()
    last = applied.groupby("uid")["t_apply"].max()
    count = applied.groupby("uid").size()
    rows = runs["log_rows"] if "log_rows" in runs else pd.Series(index=runs.index, dtype=object)
    for i, (uid, kept) in enumerate(zip(runs["uid"], rows, strict=True)):
        complete = kept is None or (isinstance(kept, float) and math.isnan(kept)) \
            or str(kept) == "all"
        if complete and uid in count.index and count[uid] >= 2:
            span = float(last[uid] - first[uid])
            if span > 0:
                out[i] = float(count[uid]) / span
    return out


def load_folders(dirs: str | Path | Iterable[str | Path],
                 target: float | None = None) -> Loaded:
    """Read results folders (merged, or unmerged after an interruption) into one :class:`Loaded`.

    ``target``: a target loss that overrides the runs' own (see :func:`fill_targets`); a
    finite number > 0.  Raises :class:`AnalysisError` naming the problem: a bad target, a
    folder given twice, or a folder :func:`read_folder` cannot read (naming the file).
    """
    if target is not None:
        target = check_target(target)
    if isinstance(dirs, str | Path):
        dirs = [dirs]
    paths = [Path(d) for d in dirs]
    if not paths:
        raise AnalysisError("no results folder given; need at least one")
    for p in paths:
        _check_folder(p)
    _check_distinct(paths)
    folders = [read_folder(p) for p in paths]
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
    runs = _label_out_of_sample(runs)
    if len(runs):
        runs["config_key"] = [config_key(row) for _, row in runs.iterrows()]
    else:
        runs["config_key"] = pd.Series([], dtype=object)
    runs = fill_targets(runs, evals, target, config_targets)
    runs["updates_per_s_span"] = span_rates(runs, updates)
    runs["slow_share"] = slow_shares(runs, updates)
    ctl_l = []
    for src, res in zip(sources, folders, strict=True):
        ctl = getattr(res, "control", None)  # folders written before elastic runs have none
        if ctl is not None and len(ctl):
            f = ctl.copy()
            f.insert(0, "source", src)
            f.insert(1, "uid", src + "/" + f["run_id"].astype(str))
            ctl_l.append(f)
    control = pd.concat(ctl_l, ignore_index=True) if ctl_l else None
    st_l = []
    for src, res in zip(sources, folders, strict=True):
        f = res.staleness.copy()
        f.insert(0, "source", src)
        f.insert(1, "uid", src + "/" + f["run_id"].astype(str) if len(f) else pd.Series(
            [], dtype=object))
        st_l.append(f)
    staleness = pd.concat(st_l, ignore_index=True)
    return Loaded(runs=runs, updates=updates, evals=evals, folders=folders, sources=sources,
                  control=control, staleness=staleness)
