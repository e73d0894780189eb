"""Arrow arrays from NumPy arrays and Python values, without importing pandas.

``pyarrow.array`` imports pandas on every call (to check whether its argument is a pandas
object), whatever it is given: ~40 MB that a run writing its record does not need, and that
would land on top of everything the run holds when it writes (its compiled kernels).  The
builders here make the common columns from their buffers instead -- numbers, booleans and
strings, with ``None`` as null -- and hand anything else to ``pyarrow.array`` (same result,
same errors, pandas imported).  pyarrow itself is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

_INT64 = (-(2**63), 2**63 - 1)


def _bitmap(valid: np.ndarray) -> Any:
    """An Arrow validity (or boolean data) bitmap of the bool array ``valid``."""
    import pyarrow as pa

    return pa.py_buffer(np.packbits(valid, bitorder="little"))


def from_numpy(a: np.ndarray) -> pa.Array:
    """``pyarrow.array(a)`` for a 1-D NumPy array; booleans, integers and floats are built
    from the array's buffer."""
    import pyarrow as pa

    a = np.asarray(a)
    if a.ndim != 1 or a.dtype.kind not in "biuf" or a.dtype.byteorder == ">":
        return pa.array(a)
    n = a.shape[0]
    if a.dtype.kind == "b":
        return pa.Array.from_buffers(pa.bool_(), n, [None, _bitmap(a.astype(bool))])
    data = np.ascontiguousarray(a)
    return pa.Array.from_buffers(pa.from_numpy_dtype(a.dtype), n, [None, pa.py_buffer(data)])


def strings(values: list[str | None]) -> pa.Array:
    """A string array of ``values`` (``None`` is null)."""
    import pyarrow as pa

    encoded = [b"" if v is None else v.encode("utf-8") for v in values]
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    if offsets[-1] >= 2**31:
        return pa.array(values, type=pa.string())
    valid = np.array([v is not None for v in values], dtype=bool)
    validity = None if valid.all() else _bitmap(valid)
    return pa.Array.from_buffers(pa.string(), len(values), [
        validity, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(encoded))])


def _kind(v: Any) -> str | None:
    """'bool', 'int', 'float' or 'str' for a value this module builds itself, else None."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int" if _INT64[0] <= v <= _INT64[1] else None
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    return None


def _numeric(values: list[Any], dtype: type, type_: pa.DataType) -> pa.Array:
    """Numbers (``None`` null) as a ``dtype`` buffer, then cast to ``type_`` (checked)."""
    import pyarrow as pa

    valid = np.array([v is not None for v in values], dtype=bool)
    data = np.array([0 if v is None else v for v in values], dtype=dtype)
    if dtype is bool:
        buffers = [None, _bitmap(data)]
        base = pa.bool_()
    else:
        buffers = [None, pa.py_buffer(data)]
        base = pa.from_numpy_dtype(np.dtype(dtype))
    if not valid.all():
        buffers[0] = _bitmap(valid)
    arr = pa.Array.from_buffers(base, len(values), buffers)
    return arr if arr.type == type_ else arr.cast(type_)


def from_values(values: list[Any], arrow_type: pa.DataType | None = None) -> pa.Array:
    """``pyarrow.array(values, type=arrow_type)`` for a list of Python values.

    Built directly when every value is ``None`` or of one kind the type takes: bools for a
    boolean type, ints (within int64) for an integer type, ints and floats for a floating
    type, strings for ``string``; without ``arrow_type``, when the values are all bools, all ints,
    ints and floats (float64) or all strings, or all ``None`` (null type).  NaN stays a value,
    as in ``pyarrow.array``.  Anything else goes to ``pyarrow.array``.
    """
    import pyarrow as pa

    kinds = {_kind(v) for v in values if v is not None}
    if arrow_type is None:
        if not kinds:
            return pa.nulls(len(values))
        inferred = {frozenset({"bool"}): pa.bool_(), frozenset({"int"}): pa.int64(),
                    frozenset({"float"}): pa.float64(), frozenset({"int", "float"}): pa.float64(),
                    frozenset({"str"}): pa.string()}.get(frozenset(kinds))
        if inferred is None:
            return pa.array(values)
        arrow_type = inferred
    if None in kinds:
        return pa.array(values, type=arrow_type)
    if pa.types.is_string(arrow_type) and kinds <= {"str"}:
        return strings(values)
    if pa.types.is_boolean(arrow_type) and kinds <= {"bool"}:
        return _numeric(values, bool, arrow_type)
    if pa.types.is_integer(arrow_type) and kinds <= {"int"}:
        return _numeric(values, np.int64, arrow_type)
    if pa.types.is_floating(arrow_type) and kinds <= {"int", "float"}:
        return _numeric(values, np.float64, arrow_type)
    return pa.array(values, type=arrow_type)


def empty_table(schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` with no rows (``schema.empty_table()`` imports pandas)."""
    import pyarrow as pa

    return pa.Table.from_arrays([pa.nulls(0, f.type) for f in schema], schema=schema)
