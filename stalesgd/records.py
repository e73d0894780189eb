"""Run records: what every engine hands back, and the results folder that stores them.

An engine returns a :class:`RunRecord` (``summary`` dict, ``updates`` and ``evals`` column
arrays).  A :class:`ResultsFolder` (``results/<experiment>-<timestamp>/``) holds the resolved
``config.toml``, ``machine.json`` and the Parquet tables ``runs.parquet``, ``updates.parquet``
and ``evals.parquet`` with the column names and pyarrow types of :data:`RUNS_SCHEMA`,
:data:`UPDATES_SCHEMA` and :data:`EVALS_SCHEMA` (DESIGN §3; other tools read them), and
``control.parquet`` (:data:`CONTROL_SCHEMA`, the m(t) trace of elastic runs).

Durability: each finished run is written at once as part files under ``parts/`` (each file
written to a temporary name, synced, then renamed; the run's ``runs`` part last, as its commit
mark), and the parts are merged into the three tables on :meth:`ResultsFolder.close`.  An
interruption at any point therefore keeps every finished run, and :func:`load_results` reads a
folder whether or not it was merged.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stalesgd import arrow

if TYPE_CHECKING:  # pandas is only needed to read results back; keep it out of runs
    import pandas as pd
    import pyarrow as pa

    from stalesgd.experiment import RunSpec

# pyarrow (~27 MB) is imported on first use, not with this module: engines import it for
# RunRecord, and a real run's peak memory (compiling its kernels) comes before anything is
# written.  The schemas below are module attributes all the same (``records.RUNS_SCHEMA``).

TABLES = ("runs", "updates", "evals", "control")
_SCHEMA_NAMES = {"UPDATES_SCHEMA": "updates", "EVALS_SCHEMA": "evals",
                 "CONTROL_SCHEMA": "control", "RUNS_SCHEMA": "runs"}


@lru_cache(maxsize=1)
def _schemas() -> dict[str, pa.Schema]:
    """The table schemas by kind (``SCHEMAS``); builds them, importing pyarrow, on first use."""
    import pyarrow as pa

    # UPDATES_SCHEMA: one row per update (dropped gradients included, with ``dropped = True``).
    UPDATES_SCHEMA = pa.schema([
        ("run_id", pa.string()),
        ("k", pa.int64()),          # global update index; -1 for dropped gradients
        ("worker", pa.int32()),
        ("t_read", pa.float64()),   # seconds since the start of the run
        ("t_apply", pa.float64()),
        ("tau", pa.int64()),
        ("eta", pa.float64()),
        ("attempts", pa.int32()),   # publish tries; 1 where there are none
        ("dropped", pa.bool_()),
    ])
    # EVALS_SCHEMA: one row per evaluation on a consistent snapshot.
    EVALS_SCHEMA = pa.schema([
        ("run_id", pa.string()),
        ("t", pa.float64()),
        ("k", pa.int64()),
        ("loss", pa.float64()),
        ("accuracy", pa.float64()),  # NaN where meaningless (regression)
        ("active_workers", pa.int32()),
    ])
    # CONTROL_SCHEMA: the m(t) trace of elastic parallelism control (issue 8), one row per
    # controller decision.  Folders written before it existed read back with an empty
    # ``control`` table.
    CONTROL_SCHEMA = pa.schema([
        ("run_id", pa.string()),
        ("t", pa.float64()),         # from this time on (seconds since the start) ...
        ("k", pa.int64()),           # ... and this update on,
        ("m", pa.int32()),           # m workers are active
        ("probing", pa.bool_()),     # the phase probes a level (elastic controllers)
        ("rate", pa.float64()),      # progress rate of the phase that ended here; NaN if none
        ("loss", pa.float64()),      # the loss the controller saw; NaN if none
    ])
    # RUNS_SCHEMA: one row per run; engines and the runner may add free extra columns after
    # these.
    RUNS_SCHEMA = pa.schema([
        ("run_id", pa.string()),
        ("engine", pa.string()),
        ("algorithm", pa.string()),
        ("problem", pa.string()),
        ("workers", pa.int64()),
        ("stepsize", pa.string()),
        ("lr", pa.float64()),
        ("batch", pa.int64()),
        ("seed", pa.int64()),
        ("updates", pa.int64()),
        ("seconds", pa.float64()),
        ("updates_per_s", pa.float64()),
        ("target_loss", pa.float64()),        # NaN without a target
        ("time_to_target", pa.float64()),     # NaN if not reached
        ("updates_to_target", pa.int64()),    # null if not reached
        ("peak_param_bytes", pa.int64()),     # null if not measured
        ("peak_rss_bytes", pa.int64()),       # null if not measured
        ("converged", pa.bool_()),
        ("diverged", pa.bool_()),
        ("interrupted", pa.bool_()),
    ])
    return {"runs": RUNS_SCHEMA, "updates": UPDATES_SCHEMA, "evals": EVALS_SCHEMA,
            "control": CONTROL_SCHEMA}


def __getattr__(name: str) -> Any:
    """``SCHEMAS`` and the ``*_SCHEMA`` constants, built on first access (see :func:`_schemas`)."""
    if name == "SCHEMAS":
        return _schemas()
    if name in _SCHEMA_NAMES:
        return _schemas()[_SCHEMA_NAMES[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_DEFAULTS = {"updates": {"attempts": 1, "dropped": False}, "evals": {"accuracy": math.nan},
             "control": {"probing": False, "rate": math.nan, "loss": math.nan}}


class RecordError(ValueError):
    """A run record that does not fit the schema; the message names the column and the rule."""


@dataclass
class RunRecord:
    """What an engine returns for one run.

    ``summary``: per-run values (the :data:`RUNS_SCHEMA` columns the engine knows, plus extras);
    ``updates``/``evals``: column name -> 1-D array, the columns of :data:`UPDATES_SCHEMA` /
    :data:`EVALS_SCHEMA` without ``run_id`` (``attempts``, ``dropped`` and ``accuracy`` may be
    left out and default to 1, False and NaN; an empty dict means no rows).  Derived summary
    values left out are filled in by :func:`summarize`.
    """

    summary: dict[str, Any] = field(default_factory=dict)
    updates: dict[str, np.ndarray] = field(default_factory=dict)
    evals: dict[str, np.ndarray] = field(default_factory=dict)
    control: dict[str, np.ndarray] = field(default_factory=dict)
    """The m(t) trace, columns of :data:`CONTROL_SCHEMA` without ``run_id`` (may be empty)."""


# ---------------------------------------------------------------------------------------------
# Records -> Arrow tables
# ---------------------------------------------------------------------------------------------


def _column_table(kind: str, run_id: str, columns: dict[str, Any]) -> pa.Table:
    import pyarrow as pa

    schema = _schemas()[kind]
    if not columns:  # no log at all (e.g. a run that failed before its first update)
        return arrow.empty_table(schema)
    lengths = {name: len(np.atleast_1d(np.asarray(col))) for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        raise RecordError(f"{kind} columns of run {run_id!r} differ in length: {lengths}; "
                          "allowed: equal lengths")
    n = next(iter(lengths.values()), 0)
    arrays, names = [], []
    for fld in schema:
        if fld.name == "run_id":
            arrays.append(arrow.strings([run_id] * n))
        elif fld.name in columns:
            try:
                arrays.append(arrow.from_numpy(np.asarray(columns[fld.name]), fld.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError) as exc:
                raise RecordError(f"{kind} column {fld.name!r} of run {run_id!r} cannot be "
                                  f"stored as {fld.type}: {exc}") from None
        elif fld.name in _DEFAULTS.get(kind, {}):
            arrays.append(arrow.from_values([_DEFAULTS[kind][fld.name]] * n, fld.type))
        else:
            required = [f.name for f in schema if f.name != "run_id"]
            raise RecordError(f"{kind} column {fld.name!r} is missing from run {run_id!r}; "
                              f"required: {', '.join(required)}")
        names.append(fld.name)
    for name, col in columns.items():  # free extra columns, after the contract's
        if name not in schema.names:
            arrays.append(arrow.from_numpy(np.asarray(col)))
            names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def updates_table(run_id: str, updates: dict[str, Any]) -> pa.Table:
    """The per-update columns of one run as an Arrow table of :data:`UPDATES_SCHEMA`."""
    return _column_table("updates", run_id, updates)


def evals_table(run_id: str, evals: dict[str, Any]) -> pa.Table:
    """The per-evaluation columns of one run as an Arrow table of :data:`EVALS_SCHEMA`."""
    return _column_table("evals", run_id, evals)


def _scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str)
    return value


def runs_table(summaries: list[dict[str, Any]]) -> pa.Table:
    """Run summaries (one dict per run) as an Arrow table: :data:`RUNS_SCHEMA`, then extras.

    Missing contract columns become null; NaN in an integer column becomes null; dicts and
    lists in extra columns are stored as JSON text.
    """
    import pyarrow as pa

    runs_schema = _schemas()["runs"]
    arrays, names = [], []
    for fld in runs_schema:
        values = []
        for s in summaries:
            v = _scalar(s.get(fld.name))
            if pa.types.is_integer(fld.type) and isinstance(v, float) and math.isnan(v):
                v = None
            if pa.types.is_floating(fld.type) and v is None and fld.name == "target_loss":
                v = math.nan
            values.append(v)
        try:
            arrays.append(arrow.from_values(values, fld.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
            raise RecordError(f"runs column {fld.name!r} = {values!r} cannot be stored as "
                              f"{fld.type}: {exc}") from None
        names.append(fld.name)
    extras: list[str] = []
    for s in summaries:
        extras += [k for k in s if k not in runs_schema.names and k not in extras]
    for name in extras:
        values = [_scalar(s.get(name)) for s in summaries]
        try:
            arrays.append(arrow.from_values(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays.append(arrow.from_values([None if v is None else str(v) for v in values]))
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


# ---------------------------------------------------------------------------------------------
# Derived summary values
# ---------------------------------------------------------------------------------------------


def summarize(record: RunRecord, target_loss: float | None = None) -> dict[str, Any]:
    """The record's summary with derived values filled in where the engine left them out.

    ``updates`` (applied, i.e. not dropped), ``seconds`` (last apply or evaluation time),
    ``updates_per_s``, ``target_loss``, ``time_to_target`` / ``updates_to_target`` (first
    evaluation with loss <= target; NaN / None if never), ``final_loss`` (last evaluation),
    ``diverged`` (an evaluated loss that is not finite), ``converged`` (target reached, or
    without a target: not diverged), ``interrupted`` (False).  Engine values win.
    """
    s = dict(record.summary)
    up, ev = record.updates, record.evals
    dropped = np.asarray(up.get("dropped", np.zeros(len(up.get("k", [])), bool)), bool)
    n_applied = int(len(dropped) - dropped.sum())
    t_ends = [float(np.max(up["t_apply"])) if len(up.get("t_apply", [])) else 0.0,
              float(np.max(ev["t"])) if len(ev.get("t", [])) else 0.0]
    s.setdefault("updates", n_applied)
    s.setdefault("seconds", max(t_ends))
    if "updates_per_s" not in s:
        s["updates_per_s"] = s["updates"] / s["seconds"] if s["seconds"] > 0 else math.nan
    target = s.get("target_loss", target_loss)
    s["target_loss"] = math.nan if target is None else float(target)
    losses = np.asarray(ev.get("loss", []), dtype=np.float64)
    times = np.asarray(ev.get("t", []), dtype=np.float64)
    ks = np.asarray(ev.get("k", []), dtype=np.int64)
    order = np.argsort(times, kind="stable")
    losses, times, ks = losses[order], times[order], ks[order]
    reached = np.flatnonzero(losses <= s["target_loss"]) if not math.isnan(s["target_loss"]) \
        else np.array([], dtype=np.int64)
    s.setdefault("time_to_target", float(times[reached[0]]) if len(reached) else math.nan)
    s.setdefault("updates_to_target", int(ks[reached[0]]) if len(reached) else None)
    s.setdefault("final_loss", float(losses[-1]) if len(losses) else math.nan)
    s.setdefault("diverged", bool(len(losses) and not np.all(np.isfinite(losses))))
    if "converged" not in s:
        if math.isnan(s["target_loss"]):
            s["converged"] = bool(len(losses)) and not s["diverged"]
        else:
            s["converged"] = bool(len(reached)) and not s["diverged"]
    s.setdefault("interrupted", False)
    s.setdefault("peak_param_bytes", None)
    s.setdefault("peak_rss_bytes", None)
    return s


# ---------------------------------------------------------------------------------------------
# The results folder
# ---------------------------------------------------------------------------------------------


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_table(path: Path, table: pa.Table) -> None:
    import pyarrow.parquet as pq

    _write_atomic(path, lambda fh: pq.write_table(table, fh))


def _empty(kind: str) -> pa.Table:
    return arrow.empty_table(_schemas()[kind])


def _concat(tables: list[pa.Table], kind: str) -> pa.Table:
    import pyarrow as pa

    tables = [t for t in tables if t is not None]
    if not tables:
        return _empty(kind)
    return pa.concat_tables(tables, promote_options="permissive")


class ResultsFolder:
    """A results folder being written: config, machine info and one part per finished run.

    Use :meth:`create` for a new ``<root>/<experiment>-<timestamp>/`` folder; as a context
    manager it merges the parts on exit, also when an exception (Ctrl-C) ends the block.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.parts = self.path / "parts"

    @classmethod
    def create(cls, name: str, root: str | Path = "results", config_toml: str | None = None,
               machine: dict[str, Any] | None = None) -> ResultsFolder:
        """Make a fresh folder ``<root>/<name>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``… if taken)
        and write ``config.toml`` and ``machine.json`` into it."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for i in range(1, 1000):
            path = root / (f"{name}-{stamp}" + ("" if i == 1 else f"-{i}"))
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(f"no free results folder name for {name!r} under {root}")
        folder = cls(path)
        folder.parts.mkdir()
        if config_toml is not None:
            _write_atomic(path / "config.toml", lambda fh: fh.write(config_toml.encode()))
        if machine is not None:
            text = json.dumps(machine, indent=2, default=str) + "\n"
            _write_atomic(path / "machine.json", lambda fh: fh.write(text.encode()))
        return folder

    def write_run(self, summary: dict[str, Any], record: RunRecord) -> None:
        """Store one finished run durably: ``summary`` (complete, with ``run_id``) and the
        record's update and evaluation logs, as part files; the runs part is written last."""
        run_id = summary.get("run_id")
        if not isinstance(run_id, str) or not run_id or "/" in run_id:
            raise RecordError(f"summary run_id {run_id!r} is not allowed; expected a non-empty "
                              "string without '/'")
        tables = {"updates": updates_table(run_id, record.updates),
                  "evals": evals_table(run_id, record.evals),
                  "control": _column_table("control", run_id, record.control),
                  "runs": runs_table([summary])}
        self.parts.mkdir(exist_ok=True)
        for kind in TABLES[1:] + TABLES[:1]:  # updates, evals, then runs (the commit mark)
            _write_table(self.parts / f"{run_id}.{kind}.parquet", tables[kind])

    def close(self) -> None:
        """Merge the part files into ``runs/updates/evals.parquet`` and remove them.

        Safe to call again and after an interruption: merged tables are replaced atomically
        and the parts are removed only once all three are written.
        """
        for kind in TABLES:
            merged = self.path / f"{kind}.parquet"
            only = _only_part(self.path, kind)
            if only is not None:  # the merge of one part is that part: copy its bytes
                with open(only, "rb") as src:
                    _write_atomic(merged, lambda fh, src=src: shutil.copyfileobj(src, fh))
            else:
                _write_table(merged, _read_kind(self.path, kind, use_threads=False))
        if self.parts.exists():
            for p in self.parts.iterdir():
                p.unlink()
            self.parts.rmdir()

    def __enter__(self) -> ResultsFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _complete_part_ids(path: Path) -> list[str]:
    parts = path / "parts"
    if not parts.exists():
        return []
    return sorted(p.name[: -len(".runs.parquet")] for p in parts.glob("*.runs.parquet"))


def _only_part(path: Path, kind: str) -> Path | None:
    """The part file of ``kind`` when it is all a merge would read (one finished run, no
    merged table yet), else None.  Copying it saves decoding and re-encoding the table at
    the end of a run, ~10 MB of the run's peak memory."""
    ids = _complete_part_ids(path)
    if len(ids) != 1 or (path / f"{kind}.parquet").exists():
        return None
    part = path / "parts" / f"{ids[0]}.{kind}.parquet"
    return part if part.exists() else None


def _read_kind(path: Path, kind: str, use_threads: bool = True) -> pa.Table:
    """Merged table plus the parts of every finished, unmerged run (parts win on run_id).

    ``use_threads=False`` decodes in the calling thread: the merge at the end of a run does,
    as Arrow's reader threads would add ~12 MB to the peak memory of the run's process."""
    import pyarrow.parquet as pq

    ids = _complete_part_ids(path)
    tables = []
    merged = path / f"{kind}.parquet"
    if merged.exists():
        t = pq.ParquetFile(merged).read(use_threads=use_threads)
        if ids and t.num_rows:
            import pyarrow.compute as pc  # ~13 MB: only when parts replace merged rows

            keep = pc.invert(pc.is_in(t["run_id"], value_set=arrow.strings(ids)))
            t = t.filter(keep)
        tables.append(t)
    for run_id in ids:
        part = path / "parts" / f"{run_id}.{kind}.parquet"
        if part.exists():
            tables.append(pq.ParquetFile(part).read(use_threads=use_threads))
    return _concat(tables, kind)


@dataclass
class Results:
    """A results folder read back: the three tables as DataFrames, the config and machine."""

    path: Path
    runs: pd.DataFrame
    updates: pd.DataFrame
    evals: pd.DataFrame
    config: dict[str, Any]
    machine: dict[str, Any]
    control: pd.DataFrame | None = None  # the m(t) trace; empty for folders without one


def read_tables(path: str | Path) -> dict[str, pa.Table]:
    """The ``runs``, ``updates`` and ``evals`` Arrow tables of a folder, merged or not."""
    path = Path(path)
    return {kind: _read_kind(path, kind) for kind in TABLES}


def load_results(path: str | Path) -> Results:
    """Read a results folder (merged, or unmerged after an interruption) into :class:`Results`."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"results folder {path} does not exist")
    tables = read_tables(path)
    config: dict[str, Any] = {}
    if (path / "config.toml").exists():
        config = tomllib.loads((path / "config.toml").read_text())
    machine: dict[str, Any] = {}
    if (path / "machine.json").exists():
        machine = json.loads((path / "machine.json").read_text())
    return Results(path=path, config=config, machine=machine,
                   **{kind: t.to_pandas() for kind, t in tables.items()})


def engine_summary(engine: str, spec: RunSpec, evals: dict[str, np.ndarray], n: int,
                   seconds: float, diverged: bool, interrupted: bool) -> dict[str, Any]:
    """The per-run row an engine hands back: the spec's identity, throughput, and time and
    updates to target (the first evaluation at or below ``stop.target_loss``; NaN / null
    when not reached), for ``n`` updates in ``seconds`` (wall or simulated)."""
    target = spec.stop.target_loss
    t_hit, k_hit = math.nan, None  # null when the target is not reached (RUNS_SCHEMA)
    if target is not None:
        hit = np.flatnonzero(evals["loss"] <= target)
        if hit.size:
            t_hit, k_hit = float(evals["t"][hit[0]]), int(evals["k"][hit[0]])
    final_loss = float(evals["loss"][-1]) if len(evals["loss"]) else math.nan
    return {
        "run_id": spec.run_id,
        "engine": engine,
        "algorithm": spec.algorithm.name,
        "problem": spec.problem.name,
        "workers": spec.workers,
        "stepsize": spec.stepsize.rule,
        "lr": float(spec.stepsize.lr),
        "batch": spec.problem.batch,
        "seed": spec.seed,
        "updates": int(n),
        "seconds": float(seconds),
        "updates_per_s": n / seconds if seconds > 0 else math.nan,
        "target_loss": math.nan if target is None else float(target),
        "time_to_target": t_hit,
        "updates_to_target": k_hit,
        "final_loss": final_loss,
        "converged": bool(target is not None and k_hit is not None and not diverged),
        "diverged": diverged,
        "interrupted": interrupted,
    }
