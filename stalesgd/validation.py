"""Checking option values where they enter: one set of helpers for every option table.

Experiment files and command-line flags (:mod:`stalesgd.experiment`), step-size rule options
(:mod:`stalesgd.stepsize`), elastic controller options (:mod:`stalesgd.elastic`) and problem
and data-set options (:mod:`stalesgd.problems`, :mod:`stalesgd.data`) are all checked with
these helpers, so that every refusal reads the same way and names the key, the value and what
is allowed::

    window = 0 is out of range; allowed: an integer >= 1

Each helper returns the value in its canonical Python type (``int``, ``float``, ``bool``,
``str``) or raises :class:`OptionError`.  Booleans are never taken for numbers, and NumPy
scalars are taken like their Python counterparts.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

__all__ = ["INT64_MAX", "OptionError", "a_type", "choice", "flag", "integer", "known_keys",
           "number", "short_repr", "table", "text", "type_name"]

#: longest ``repr`` of a value quoted in an error message (a path is shown whole)
MAX_REPR = 300


def short_repr(value: Any) -> str:
    """``repr(value)``, shortened to :data:`MAX_REPR` characters (a huge list or string
    must not turn an error message into a page); a boolean as TOML and JSON spell it
    (``true``, not ``True``)."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    text = repr(value)
    if len(text) <= MAX_REPR:
        return text
    return f"{text[:MAX_REPR - 15]}… ({len(text)} chars)"


class OptionError(ValueError):
    """A value that is not allowed: ``key`` (a dotted path), the offending ``value``, what is
    ``allowed``, and the ``problem`` with it (``is out of range``, ``is an unknown key``…)."""

    def __init__(self, key: str, value: Any, allowed: str,
                 problem: str = "is not allowed") -> None:
        self.key, self.value, self.allowed, self.problem = key, value, allowed, problem
        super().__init__(f"{key} = {short_repr(value)} {problem}; allowed: {allowed}")

    def under(self, prefix: str) -> OptionError:
        """The same error, its key inside ``prefix`` (``window`` -> ``stepsize.options.window``)."""
        return OptionError(f"{prefix}.{self.key}" if prefix else self.key, self.value,
                           self.allowed, self.problem)


def type_name(value: Any) -> str:
    """The TOML name of a value's type (``integer``, ``float``, ``string``, ``array``…)."""
    if isinstance(value, bool | np.bool_):
        return "boolean"
    if isinstance(value, int | np.integer):
        return "integer"
    if isinstance(value, float | np.floating):
        return "float"
    names = {str: "string", list: "array", tuple: "array", dict: "table"}
    return names.get(type(value), type(value).__name__)


def a_type(value: Any) -> str:
    """The TOML name of a value's type with its article (``an integer``, ``a string``…)."""
    name = type_name(value)
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


#: the largest signed 64-bit integer, written so in messages
INT64_MAX = 2**63 - 1


def _bound(value: float) -> str:
    return "2^63-1" if value == INT64_MAX else str(value)


def _range_text(kind: str, minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"{kind} in {_bound(minimum)}..{_bound(maximum)}"
    if minimum is not None:
        return f"{kind} >= {_bound(minimum)}"
    if maximum is not None:
        return f"{kind} <= {_bound(maximum)}"
    return kind


def integer(value: Any, key: str, minimum: int | None = None, maximum: int | None = None,
            allowed: str | None = None) -> int:
    """An integer (not a boolean, not a float such as 2.0) in ``minimum..maximum``."""
    allowed = allowed or _range_text("an integer", minimum, maximum)
    if not _is_int(value):
        raise OptionError(key, value, allowed, f"is {a_type(value)}, not an integer")
    v = int(value)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise OptionError(key, value, allowed, "is out of range")
    return v


def number(value: Any, key: str, minimum: float | None = None, maximum: float | None = None,
           *, positive: bool = False, allowed: str | None = None) -> float:
    """A finite number (integer or float, not a boolean): > 0 when ``positive``, and within
    ``minimum..maximum``."""
    if allowed is None:
        allowed = ("a finite number > 0" if positive and minimum is None and maximum is None
                   else _range_text("a finite number", minimum, maximum))
        if positive and (minimum is not None or maximum is not None):
            allowed += " and > 0"
    if isinstance(value, bool | np.bool_) or not isinstance(
            value, int | float | np.integer | np.floating):
        raise OptionError(key, value, allowed, f"is {a_type(value)}, not a number")
    v = float(value)
    if not math.isfinite(v) or (positive and not v > 0) \
            or (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise OptionError(key, value, allowed, "is out of range")
    return v


def flag(value: Any, key: str) -> bool:
    """``true`` or ``false`` (a boolean, not 0/1 or a string)."""
    if not isinstance(value, bool | np.bool_):
        raise OptionError(key, value, "true or false", f"is {a_type(value)}, not a "
                          "boolean")
    return bool(value)


def choice(value: Any, key: str, choices: Collection[str]) -> str:
    """One of the strings ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise OptionError(key, value, ", ".join(choices))
    return value


def text(value: Any, key: str, allowed: str) -> str:
    """A non-empty string."""
    if not isinstance(value, str):
        raise OptionError(key, value, allowed, f"is {a_type(value)}, not a string")
    if not value:
        raise OptionError(key, value, allowed, "is empty")
    return value


def known_keys(options: Mapping[str, Any], prefix: str, allowed: Collection[str],
               owner: str) -> None:
    """Refuse the first key of ``options`` that is not in ``allowed`` (``owner`` names what
    takes them, e.g. ``step-size rule 'tail'``; ``prefix`` is put before the key)."""
    for key, value in options.items():
        if key not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            raise OptionError(f"{prefix}.{key}" if prefix else str(key), value,
                              f"{owner}: {names}", "is an unknown option")


def table(value: Any, key: str, keys: Collection[str]) -> dict[str, Any]:
    """A table (dict) whose keys are all among ``keys``."""
    if not isinstance(value, dict):
        raise OptionError(key, value, f"a table with keys {', '.join(keys)}",
                          f"is {a_type(value)}, not a table")
    where = f"[{key}]" if key else "the top level"
    for name, item in value.items():
        if name not in keys:
            raise OptionError(f"{key}.{name}" if key else name, item,
                              f"keys in {where}: {', '.join(keys)}", "is an unknown key")
    return value
