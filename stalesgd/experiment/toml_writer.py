"""Writing an experiment back as TOML: :func:`to_toml` gives text that
:func:`~stalesgd.experiment.load.loads_experiment` reads back as an equal experiment (the
``config.toml`` of every results folder)."""

from __future__ import annotations

import math
import re
from typing import Any

from stalesgd.experiment.spec import Experiment

__all__ = ["dict_to_toml", "to_toml", "toml_value"]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_str(key)


def _toml_str(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    """One TOML value: string, boolean, integer, float (incl. inf/nan), array or inline table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()
                          if v is not None)
        return "{" + items + "}" if items else "{}"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) as TOML; allowed: str, "
                    "bool, int, float, list, dict")


def dict_to_toml(data: dict[str, Any], header: str = "") -> str:
    """A nested dict as TOML: scalars and arrays at the top, then one ``[table]`` per sub-dict
    (dicts inside tables become inline tables).  None values are left out."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and v is not None}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    for key, value in scalars.items():
        lines.append(f"{_toml_key(key)} = {toml_value(value)}")
    for name, table in tables.items():
        lines.append("")
        lines.append(f"[{_toml_key(name)}]")
        for key, value in table.items():
            if value is not None:
                lines.append(f"{_toml_key(key)} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def to_toml(exp: Experiment) -> str:
    """The resolved experiment as TOML text; :func:`loads_experiment` of it gives ``exp`` back."""
    data = exp.to_dict()
    order = ["name", "engine", "workers", "slowdown", "seeds", "exclude", "problem", "algorithm",
             "stepsize", "stop", "eval", "sim", "controller", "record", "dist", "sweep"]
    ordered = {k: data[k] for k in order if k in data and data[k] not in ({}, [])}
    return dict_to_toml(ordered, header=f"stalesgd experiment {exp.name!r} (resolved)")
