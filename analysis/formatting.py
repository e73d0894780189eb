"""Tables as text: cells formatted for reading, and the same table as Markdown, HTML or
plain text (the report's tables, the terminal's comparison, the results page)."""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["MISSING", "cell_text", "display", "html_table", "markdown_table", "text_table"]

MISSING = "–"
"""The text of a missing or undefined value."""


def cell_text(value: Any, spec: str = "") -> str:
    """``value`` as text: missing values as :data:`MISSING`, booleans as ``yes``/empty, numbers
    by ``spec`` (a format spec, ``%``, ``,`` for thousands or ``int``; default ``.4g``)."""
    if value is None or value is pd.NA:
        return MISSING
    if isinstance(value, bool | np.bool_):
        return "yes" if value else ""
    if isinstance(value, int | np.integer):
        return f"{int(value):,}" if spec == "," else str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return MISSING
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if spec == "%":
            return f"{v:.0%}"
        if spec == ",":
            return f"{v:,.0f}"
        if spec == "int":
            return str(int(round(v)))
        return format(v, spec or ".4g")
    return str(value)


def display(df: pd.DataFrame, columns: list[tuple[str, str, str]]) -> pd.DataFrame:
    """Pick ``(column, header, format)`` from ``df`` and render every cell as text."""
    out = {}
    for col, header, spec in columns:
        if col in df:
            out[header] = [cell_text(v, spec) for v in df[col].tolist()]
    return pd.DataFrame(out, index=range(len(df)))


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a frame of text cells (``|`` escaped)."""
    if df.empty:
        return "_(none)_\n"

    def esc(s: Any) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(esc(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(esc(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows]) + "\n"


def html_table(df: pd.DataFrame) -> str:
    """An HTML ``<table>`` of a frame of text cells (every cell escaped)."""
    if df.empty:
        return "<p><em>(none)</em></p>\n"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>"
                     for r in df.itertuples(index=False))
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n"


def text_table(df: pd.DataFrame) -> str:
    """A plain-text table (columns padded) for the terminal."""
    if df.empty:
        return "(none)\n"
    cols = [str(c) for c in df.columns]
    cells = [[str(v) for v in r] for r in df.itertuples(index=False)]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
              for r in cells]
    return "\n".join(lines) + "\n"
