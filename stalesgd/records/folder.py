"""Results folders: ``results/<experiment>-<timestamp>/`` written durably, read back whole.

A folder holds the resolved ``config.toml``, ``machine.json`` and one Parquet file per table
of :mod:`stalesgd.records.schema` (``runs``, ``updates``, ``evals``, ``control``,
``staleness``).  While an experiment runs, each run is written as part files under
``parts/``: its update rows as numbered chunks while it runs (:class:`UpdateLog`), then its
other tables, and its ``runs`` part last, as the mark that the run is complete.  Every part
is written to a temporary name, synced and renamed, so an interruption at any point keeps
every complete run; :meth:`ResultsFolder.close` merges the parts into the tables (the update
rows streamed chunk by chunk, so memory does not grow with the runs' length), and
:func:`load_results` reads a folder whether or not it was merged.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stalesgd import arrow

from .schema import TABLES, RecordError, arrow_schema
from .summary import RunRecord, update_stats
from .tables import column_table, empty_table, runs_table
from .updates import RecordWriteError, RowSelection, UpdateLog, chunk_files, write_parquet

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = ["Results", "ResultsFolder", "load_results", "read_tables"]

_SMALL = ("runs", "evals", "control", "staleness")


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RecordWriteError(path, exc) from None


def _check_run_id(run_id: Any) -> str:
    if not isinstance(run_id, str) or not run_id or "/" in run_id or run_id.startswith("."):
        raise RecordError(f"summary run_id {run_id!r} is not allowed; expected a non-empty "
                          "string without '/'")
    return run_id


class ResultsFolder:
    """A results folder being written: config, machine info and one set of parts per run.

    :meth:`create` makes a new folder, :meth:`open` continues an existing one (resuming a
    sweep).  As a context manager it merges the parts on exit, also when an exception
    (Ctrl-C) ends the block.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.parts = self.path / "parts"
        self.discarded: set[str] = set()
        """Runs forgotten (:meth:`discard`): their merged rows go at the next merge."""

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
            _write_text(path / "config.toml", config_toml)
        if machine is not None:
            _write_text(path / "machine.json", json.dumps(machine, indent=2, default=str) + "\n")
        return folder

    @classmethod
    def open(cls, path: str | Path) -> ResultsFolder:
        """An existing results folder, to add runs to (its parts folder made if needed)."""
        folder = cls(path)
        if not (folder.path / "config.toml").is_file():
            raise FileNotFoundError(f"{folder.path} is not a results folder (it has no "
                                    "config.toml)")
        folder.parts.mkdir(exist_ok=True)
        return folder

    def update_log(self, run_id: str, rows: RowSelection | str = "all") -> UpdateLog:
        """The update log of run ``run_id``, writing its chunks into this folder's parts (a
        run started again replaces what an earlier attempt left)."""
        self.parts.mkdir(exist_ok=True)
        return UpdateLog(rows, folder=self.parts, run_id=_check_run_id(run_id))

    def write_run(self, summary: dict[str, Any], record: RunRecord) -> None:
        """Store one finished (or interrupted) run durably: ``summary`` (complete, with
        ``run_id``) and the record's tables as part files; the runs part is written last."""
        run_id = _check_run_id(summary.get("run_id"))
        self.parts.mkdir(exist_ok=True)
        updates = record.updates
        if isinstance(updates, UpdateLog) and updates.folder == self.parts \
                and updates.run_id == run_id:
            stats = updates.close()
        else:  # rows held in memory (the kept ones, for a log): written as one chunk
            stats = update_stats(updates)
            log = self.update_log(run_id)
            if len(updates["k"]) if "k" in updates else 0:
                log.add({k: np.asarray(v) for k, v in updates.items()})
            log.close()
        tables = {"evals": column_table("evals", run_id, record.evals),
                  "control": column_table("control", run_id, record.control),
                  "staleness": column_table("staleness", run_id, stats.staleness_columns()),
                  "runs": runs_table([summary])}
        for kind in _SMALL[1:] + _SMALL[:1]:  # runs last: the commit mark
            write_parquet(self.parts / f"{run_id}.{kind}.parquet", tables[kind])

    def completed(self) -> dict[str, dict[str, Any]]:
        """The runs stored so far (merged or in parts), by run id: their ``runs`` rows."""
        t = _read_kind(self.path, "runs")
        return {row["run_id"]: row for row in t.to_pylist()}

    def discard(self, run_id: str) -> None:
        """Forget run ``run_id``: its parts, and its rows at the next merge."""
        for p in self.parts.glob(f"{_check_run_id(run_id)}.*"):
            p.unlink()
        self.discarded.add(run_id)

    def close(self) -> None:
        """Merge the parts into the tables and remove them.

        Safe to call again and after an interruption: merged tables are replaced atomically
        and the parts are removed only once every table is written.  A part left by a run
        that never completed (no ``runs`` part) is removed.
        """
        drop = self.discarded
        for kind in _SMALL:
            only = None if drop else _only_part(self.path, kind)
            if only is not None:  # the merge of one part is that part: copy its bytes
                _copy_file(only, self.path / f"{kind}.parquet")
            else:
                write_parquet(self.path / f"{kind}.parquet",
                              _read_kind(self.path, kind, use_threads=False, drop=drop))
        _merge_updates(self.path, drop)
        if self.parts.exists():
            shutil.rmtree(self.parts)

    def __enter__(self) -> ResultsFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically (a temporary name, synced, renamed)."""
    tmp = target.with_name(target.name + ".tmp")
    try:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
            dst.flush()
            os.fsync(dst.fileno())
        tmp.replace(target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RecordWriteError(target, exc) from None


def _only_part(path: Path, kind: str) -> Path | None:
    """The part file of ``kind`` when it is all a merge would read (one complete run, no
    merged table yet): copying its bytes saves decoding and encoding the table at the end
    of a run (~10 MB of the run's peak memory)."""
    ids = _complete_part_ids(path)
    if len(ids) != 1 or (path / f"{kind}.parquet").exists():
        return None
    part = path / "parts" / f"{ids[0]}.{kind}.parquet"
    return part if part.exists() else None


def _complete_part_ids(path: Path) -> list[str]:
    parts = path / "parts"
    if not parts.exists():
        return []
    return sorted(p.name[: -len(".runs.parquet")] for p in parts.glob("*.runs.parquet"))


def _read_file(path: Path, use_threads: bool = True) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).read(use_threads=use_threads)
    except (pa.ArrowInvalid, OSError) as exc:
        raise RecordError(f"{path} cannot be read ({exc}); it is truncated or not a Parquet "
                          "file of a results folder") from None


def _without(table: pa.Table, run_ids: set[str]) -> pa.Table:
    if not run_ids or not table.num_rows:
        return table
    import pyarrow.compute as pc  # ~13 MB: only when parts replace merged rows

    keep = pc.invert(pc.is_in(table["run_id"], value_set=arrow.strings(sorted(run_ids))))
    return table.filter(keep)


def _read_kind(path: Path, kind: str, use_threads: bool = True,
               drop: set[str] | frozenset[str] = frozenset()) -> pa.Table:
    """Merged table plus the parts of every complete, unmerged run (parts win on run_id)."""
    import pyarrow as pa

    ids = _complete_part_ids(path)
    tables = []
    merged = path / f"{kind}.parquet"
    if merged.exists():
        tables.append(_without(_read_file(merged, use_threads), set(ids) | set(drop)))
    for run_id in ids:
        if kind == "updates":
            files = chunk_files(path / "parts", run_id)
        else:
            part = path / "parts" / f"{run_id}.{kind}.parquet"
            files = [part] if part.exists() else []
        tables += [_read_file(f, use_threads) for f in files]
    tables = [t for t in tables if t is not None]
    if not tables:
        return empty_table(kind)
    return pa.concat_tables(tables, promote_options="permissive")


def _merge_updates(path: Path, drop: set[str]) -> None:
    """Write ``updates.parquet``: the merged rows of runs no part replaces, then each
    complete run's chunks, one row group at a time (never the whole table in memory)."""
    import pyarrow.parquet as pq

    ids = _complete_part_ids(path)
    merged = path / "updates.parquet"
    sources: list[tuple[Path, set[str]]] = []
    if merged.exists():
        sources.append((merged, set(ids) | drop))
    for run_id in ids:
        sources += [(f, set()) for f in chunk_files(path / "parts", run_id)]
    if len(sources) == 1 and sources[0][0] == merged and not sources[0][1]:
        return  # nothing to add or remove
    if not merged.exists() and len(sources) == 1:  # one chunk of one run: copy its bytes
        _copy_file(sources[0][0], merged)
        return
    if not sources:
        write_parquet(merged, empty_table("updates"))
        return
    target = path / "updates.parquet.merge"
    schema = arrow_schema("updates")
    try:
        with pq.ParquetWriter(target, schema) as writer:
            for source, without in sources:
                pf = pq.ParquetFile(source)
                for i in range(pf.num_row_groups):
                    group = _without(pf.read_row_group(i, use_threads=False), without)
                    if group.num_rows:
                        writer.write_table(group)
        target.replace(merged)
    except OSError as exc:
        target.unlink(missing_ok=True)
        raise RecordWriteError(merged, exc) from None


@dataclass
class Results:
    """A results folder read back: its tables as DataFrames, the config and machine."""

    path: Path
    runs: pd.DataFrame
    updates: pd.DataFrame
    evals: pd.DataFrame
    config: dict[str, Any]
    machine: dict[str, Any]
    control: pd.DataFrame | None = None  # the m(t) trace; empty for folders without one
    staleness: pd.DataFrame | None = None  # exact τ counts per run


def read_tables(path: str | Path) -> dict[str, pa.Table]:
    """Every table of a folder, merged or not, as Arrow tables.  A folder written before the
    ``staleness`` table existed gets it counted from its update rows."""
    path = Path(path)
    tables = {kind: _read_kind(path, kind) for kind in TABLES}
    if tables["staleness"].num_rows == 0 and tables["updates"].num_rows:
        tables["staleness"] = _count_staleness(tables["updates"])
    return tables


def _count_staleness(updates: pa.Table) -> pa.Table:
    import pyarrow as pa

    run_ids = updates["run_id"].to_numpy(zero_copy_only=False)
    tau = updates["tau"].to_numpy()
    applied = ~updates["dropped"].to_numpy(zero_copy_only=False).astype(bool)
    parts = []
    for run_id in dict.fromkeys(run_ids.tolist()):
        sel = applied & (run_ids == run_id)
        counts = np.bincount(tau[sel]) if sel.any() else np.zeros(0, np.int64)
        taus = np.flatnonzero(counts)
        parts.append(column_table("staleness", run_id,
                                  {"tau": taus, "count": counts[taus].astype(np.int64)}))
    return pa.concat_tables(parts) if parts else empty_table("staleness")


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
