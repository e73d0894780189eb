"""Run records: what every engine hands back, and the results folders that store them.

An engine returns a :class:`RunRecord`: its ``runs`` row (built with
:func:`engine_summary`), its update rows (an :class:`UpdateLog` the engine filled while the
run went on, counting every update's τ exactly whatever rows it keeps), its evaluations and
its m(t) trace.  A :class:`ResultsFolder` stores records durably and :func:`load_results`
reads them back.  Every column is declared once in :mod:`stalesgd.records.schema`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .evals import EvalLog
from .folder import Results, ResultsFolder, load_results, read_tables
from .schema import COLUMNS, TABLES, Column, RecordError, arrow_schema, declared
from .summary import RunRecord, engine_summary, summarize, update_stats
from .tables import column_table, runs_table
from .updates import (
    CHUNK_ROWS,
    ROWS_ALLOWED,
    RecordWriteError,
    RowSelection,
    UpdateLog,
    UpdateStats,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "CHUNK_ROWS",
    "COLUMNS",
    "CONTROL_SCHEMA",
    "EVALS_SCHEMA",
    "ROWS_ALLOWED",
    "RUNS_SCHEMA",
    "STALENESS_SCHEMA",
    "TABLES",
    "UPDATES_SCHEMA",
    "Column",
    "EvalLog",
    "RecordError",
    "RecordWriteError",
    "Results",
    "ResultsFolder",
    "RowSelection",
    "RunRecord",
    "UpdateLog",
    "UpdateStats",
    "arrow_schema",
    "column_table",
    "declared",
    "engine_summary",
    "evals_table",
    "load_results",
    "read_tables",
    "runs_table",
    "summarize",
    "update_stats",
    "updates_table",
]

_SCHEMAS = {"UPDATES_SCHEMA": "updates", "EVALS_SCHEMA": "evals", "CONTROL_SCHEMA": "control",
            "STALENESS_SCHEMA": "staleness"}


def __getattr__(name: str) -> Any:
    """The ``*_SCHEMA`` constants, built (importing pyarrow) on first access.
    ``RUNS_SCHEMA`` holds the contract columns every run has; the ``runs`` table may add
    other declared columns after them."""
    if name in _SCHEMAS:
        return arrow_schema(_SCHEMAS[name])
    if name == "RUNS_SCHEMA":
        import pyarrow as pa

        full = arrow_schema("runs")
        return pa.schema([f for f in full if declared("runs")[f.name].required])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def updates_table(run_id: str, updates: dict[str, Any]) -> pa.Table:
    """One run's update columns as an Arrow table of the ``updates`` schema."""
    return column_table("updates", run_id, updates)


def evals_table(run_id: str, evals: dict[str, Any]) -> pa.Table:
    """One run's evaluation columns as an Arrow table of the ``evals`` schema."""
    return column_table("evals", run_id, evals)
