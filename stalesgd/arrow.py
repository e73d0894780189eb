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


def from_numpy(a: np.ndarray, arrow_type: pa.DataType | None = None) -> pa.Array:
    """``pyarrow.array(a).cast(arrow_type)`` for a 1-D NumPy array; booleans, integers and
    floats are built from the array's buffer, and cast only if their type differs (a cast
    imports ``pyarrow.compute``, ~13 MB)."""
    import pyarrow as pa

    a = np.asarray(a)
    if a.ndim != 1 or a.dtype.kind not in "biuf" or a.dtype.byteorder == ">":
        arr = pa.array(a)
    elif a.dtype.kind == "b":
        arr = pa.Array.from_buffers(pa.bool_(), a.shape[0], [None, _bitmap(a.astype(bool))])
    else:
        buf = pa.py_buffer(np.ascontiguousarray(a))
        arr = pa.Array.from_buffers(pa.from_numpy_dtype(a.dtype), a.shape[0], [None, buf])
    return arr if arrow_type is None or arr.type == arrow_type else arr.cast(arrow_type)


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


def repeated_string(value: str, n: int) -> pa.Array:
    """The string array of ``n`` copies of ``value`` (a run's id on each of its rows): the
    array :func:`strings` makes of ``[value] * n``, built without a Python list of ``n``
    strings (for a million update rows: 0.25 s of the monitor thread, during which the
    workers of a fast run could fill the update record and wait)."""
    import pyarrow as pa

    encoded = value.encode("utf-8")
    if len(encoded) * n >= 2**31:
        return strings([value] * n)
    offsets = (np.arange(n + 1, dtype=np.int64) * len(encoded)).astype(np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets),
                                                  pa.py_buffer(encoded * n)])


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


def _numeric(values: list[Any], arrow_type: pa.DataType) -> pa.Array | None:
    """Numbers or bools (``None`` null) of a boolean, integer or float32/64 ``arrow_type``,
    built in its own dtype (no cast); None if a value is out of range or the type is another
    one, for ``pyarrow.array`` to decide."""
    import pyarrow as pa

    if pa.types.is_boolean(arrow_type):
        dtype = np.dtype(bool)
    elif pa.types.is_integer(arrow_type):
        sign = "u" if pa.types.is_unsigned_integer(arrow_type) else ""
        dtype = np.dtype(f"{sign}int{arrow_type.bit_width}")
        info = np.iinfo(dtype)
        if any(v is not None and not info.min <= v <= info.max for v in values):
            return None
    elif pa.types.is_float32(arrow_type) or pa.types.is_float64(arrow_type):
        dtype = np.dtype(f"float{arrow_type.bit_width}")
        exact = 2**53 if arrow_type.bit_width == 64 else 2**24  # ints stored exactly, as pyarrow
        if any(isinstance(v, int) and not -exact <= v <= exact for v in values):
            return None
    else:
        return None
    valid = np.array([v is not None for v in values], dtype=bool)
    data = np.array([0 if v is None else v for v in values], dtype=dtype)
    buffers = [None if valid.all() else _bitmap(valid),
               _bitmap(data) if dtype.kind == "b" else pa.py_buffer(data)]
    return pa.Array.from_buffers(arrow_type, len(values), buffers)


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
    arr = None
    if (pa.types.is_boolean(arrow_type) and kinds <= {"bool"}
            or pa.types.is_integer(arrow_type) and kinds <= {"int"}
            or pa.types.is_floating(arrow_type) and kinds <= {"int", "float"}):
        arr = _numeric(values, arrow_type)
    return pa.array(values, type=arrow_type) if arr is None else arr


def empty_table(schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` with no rows (``schema.empty_table()`` imports pandas)."""
    import pyarrow as pa

    return pa.Table.from_arrays([pa.nulls(0, f.type) for f in schema], schema=schema)
