"""Rows to text: an aligned table for people, CSV or JSON for programs.

Values keep their exactness: decimals are never floats (a table drops
trailing zeros, CSV keeps the column's scale, JSON writes them as strings),
times are ISO-8601 UTC with a `Z`.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TextIO

FORMATS = ("table", "csv", "json")


def text(value: Any, *, exact: bool = True) -> str:
    """One value as text; `exact=False` drops a decimal's trailing zeros (tables)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        if not exact and value == value.to_integral_value():
            return f"{value.quantize(Decimal(1)):f}"
        return f"{value if exact else value.normalize():f}"
    if isinstance(value, float):
        return f"{value:.10g}" if not exact else str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return f"{value.isoformat()}Z"
    if isinstance(value, dt.date):
        return str(value.isoformat())
    return str(value)


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value else None  # NaN is not JSON
    return text(value)


def write(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str, out: TextIO) -> None:
    if fmt == "json":
        json.dump([{c: _json_value(r.get(c)) for c in columns} for r in rows], out, indent=1)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([text(r.get(c)) for c in columns] for r in rows)
    elif fmt == "table":
        cells = [[text(r.get(c), exact=False) for c in columns] for r in rows]
        widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
        numeric = [
            all(isinstance(r.get(c), (int, float, Decimal)) for r in rows if r.get(c) is not None)
            and not all(isinstance(r.get(c), bool) for r in rows if r.get(c) is not None)
            for c in columns
        ]

        def line(values: Sequence[str]) -> str:
            return "  ".join(
                v.rjust(w) if num else v.ljust(w)
                for v, w, num in zip(values, widths, numeric, strict=True)
            ).rstrip()

        out.write(line([c.upper() for c in columns]) + "\n")
        for row in cells:
            out.write(line(row) + "\n")
        if not rows:
            out.write("(no rows)\n")
    else:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
