"""Record parts as Arrow tables of the declared schemas (:mod:`stalesgd.records.schema`)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from stalesgd import arrow

from .schema import RecordError, arrow_schema, declared, is_swept_key

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["column_table", "empty_table", "runs_table"]


def empty_table(kind: str) -> pa.Table:
    """A table of ``kind`` with no rows."""
    return arrow.empty_table(arrow_schema(kind))


def column_table(kind: str, run_id: str, columns: Mapping[str, Any]) -> pa.Table:
    """One run's rows of ``kind`` (``updates``, ``evals``, ``control``, ``staleness``) as an
    Arrow table: ``columns`` maps column names (``run_id`` left out) to equal-length 1-D
    arrays; declared columns with a default may be left out, every other declared one is
    required, and no undeclared one is allowed."""
    import pyarrow as pa

    schema = arrow_schema(kind)
    if not columns:  # no rows at all (e.g. a run that failed before its first update)
        return empty_table(kind)
    cols = declared(kind)
    extra = sorted(set(columns) - set(cols))
    if extra:
        raise RecordError(f"{kind} column {extra[0]!r} of run {run_id!r} is not declared; "
                          f"allowed: {', '.join(c for c in cols if c != 'run_id')}")
    lengths = {name: len(np.atleast_1d(np.asarray(col))) for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        raise RecordError(f"{kind} columns of run {run_id!r} differ in length: {lengths}; "
                          "allowed: equal lengths")
    n = next(iter(lengths.values()), 0)
    arrays = []
    for fld in schema:
        col = cols[fld.name]
        if fld.name == "run_id":
            arrays.append(arrow.repeated_string(run_id, n))
        elif fld.name in columns:
            try:
                arrays.append(arrow.from_numpy(np.asarray(columns[fld.name]), fld.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError) as exc:
                raise RecordError(f"{kind} column {fld.name!r} of run {run_id!r} cannot be "
                                  f"stored as {fld.type}: {exc}") from None
        elif not col.required and col.default is None:
            arrays.append(pa.nulls(n, fld.type))
        elif not col.required:
            arrays.append(arrow.from_values([col.default] * n, fld.type))
        else:
            required = [c.name for c in cols.values() if c.required and c.name != "run_id"]
            raise RecordError(f"{kind} column {fld.name!r} is missing from run {run_id!r}; "
                              f"required: {', '.join(required)}")
    return pa.Table.from_arrays(arrays, schema=schema)


def _scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str)
    return value


def _cell(value: Any, fld: pa.Field) -> Any:
    import pyarrow as pa

    v = _scalar(value)
    if pa.types.is_integer(fld.type) and isinstance(v, float):
        if math.isnan(v):
            return None
        if not v.is_integer():  # (pyarrow would truncate it silently)
            raise RecordError(f"runs column {fld.name!r} = {v!r} cannot be stored as "
                              f"{fld.type}: not an integer")
        return int(v)
    if fld.name == "target_loss" and v is None:
        return math.nan
    return v


def runs_table(summaries: list[dict[str, Any]]) -> pa.Table:
    """Run summaries (one dict per run) as the ``runs`` table.

    Columns: every required one, then every other declared column some summary has, in
    declared order, then swept experiment keys (dotted names) in order of appearance.
    Missing values are null; NaN in an integer column is null; dicts and lists are stored as
    JSON text.  A name that is neither declared nor a swept key is a :class:`RecordError`.
    """
    import pyarrow as pa

    schema = arrow_schema("runs")
    cols = declared("runs")
    present = {k for s in summaries for k in s}
    unknown = sorted(k for k in present if k not in cols and not is_swept_key(k))
    if unknown:
        raise RecordError(f"runs column {unknown[0]!r} is not declared (stalesgd.records."
                          "schema); allowed: the declared columns and swept experiment keys "
                          "(dotted names)")
    arrays, names = [], []
    for fld in schema:
        if not (cols[fld.name].required or fld.name in present):
            continue
        values = [_cell(s.get(fld.name), fld) for s in summaries]
        try:
            arrays.append(arrow.from_values(values, fld.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            raise RecordError(f"runs column {fld.name!r} = {values!r} cannot be stored as "
                              f"{fld.type}: {exc}") from None
        names.append(fld.name)
    swept: list[str] = []
    for s in summaries:
        swept += [k for k in s if k not in cols and k not in swept]
    for name in swept:
        values = [_scalar(s.get(name)) for s in summaries]
        try:
            arrays.append(arrow.from_values(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            arrays.append(arrow.from_values([None if v is None else str(v) for v in values]))
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)
