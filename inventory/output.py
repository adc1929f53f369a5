"""Query results as text: an aligned table, CSV, JSON or JSON lines.

Both databases print alike: JSON columns (known by name from the tables) as
JSON, timestamps as ISO 8601 UTC, NULL as `NULL` in tables.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import simplejson
from sqlalchemy import JSON, Boolean, Float, Integer
from tabulate import tabulate

from inventory.tables import Base, UTCDateTime

FORMATS = ("table", "csv", "json", "jsonl")


def column_kinds() -> dict[str, str]:
    """Each store column's name and kind, from the tables' own types."""
    kinds: dict[str, str] = {}
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            kinds.setdefault(column.name, _kind(column.type))
    return kinds


def _kind(column_type: Any) -> str:
    kinds = (
        (UTCDateTime, "timestamp"),
        (JSON, "json"),
        (Boolean, "boolean"),
        (Integer, "integer"),
        (Float, "float"),
    )
    return next((kind for cls, kind in kinds if isinstance(column_type, cls)), "text")


COLUMN_KINDS = column_kinds()


# Values.


def normalize(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    kinds: Sequence[str | None] | None = None,
) -> list[list[Any]]:
    """Rows as JSON-ready values: JSON columns parsed, timestamps ISO 8601 UTC.

    `kinds` says what each column holds; without it, a column's name does.
    """
    if kinds is None or len(kinds) != len(columns):
        kinds = [COLUMN_KINDS.get(column.lower()) for column in columns]
    return [
        [_value(cell, kind) for cell, kind in zip(row, kinds, strict=True)]
        for row in rows
    ]


def _value(cell: Any, kind: str | None) -> Any:
    if cell is None:
        return None
    if kind == "json":
        return _json_value(cell)
    if kind == "boolean" and isinstance(cell, int):
        return bool(cell)
    if kind == "timestamp" and isinstance(cell, str):
        return _iso(cell)
    return _plain(cell, kind)


def _plain(cell: Any, kind: str | None) -> Any:
    if isinstance(cell, date) and (endless := _infinity(cell)):
        return endless
    if isinstance(cell, datetime):
        if cell.tzinfo is None and kind == "timestamp":
            cell = cell.replace(tzinfo=UTC)
        return cell.astimezone(UTC).isoformat() if cell.tzinfo else cell.isoformat()
    if isinstance(cell, date | time):
        return cell.isoformat()
    if isinstance(cell, Decimal | float):
        return _number(cell)
    if _is_range(cell):
        return _range(cell)
    if isinstance(cell, bytes | memoryview):
        return bytes(cell).hex()
    if isinstance(cell, list | tuple):  # an array: of dates, ranges, ...
        return [None if item is None else _plain(item, None) for item in cell]
    if isinstance(cell, bool | int | str | dict):
        return cell
    return str(cell)


def _infinity(cell: date) -> str | None:
    """PostgreSQL's `infinity` and `-infinity`, which asyncpg gives as the
    farthest date or time Python has (9999-12-31, 0001-01-01)."""
    if isinstance(cell, datetime):
        naive = cell.replace(tzinfo=None)
        if naive == datetime.max:
            return "infinity"
        return "-infinity" if naive == datetime.min else None
    if cell == date.max:
        return "infinity"
    return "-infinity" if cell == date.min else None


def _number(cell: Decimal | float) -> Any:
    """Exact decimals (PostgreSQL's numeric holds more digits than a float);
    no NaN nor Infinity, which JSON lacks, but PostgreSQL's spelling of them."""
    if isinstance(cell, Decimal):  # with its scale: 2.000 stays 2.000
        return cell if cell.is_finite() else str(cell)  # 'NaN', 'Infinity'
    if not math.isfinite(cell):
        return "NaN" if math.isnan(cell) else ("Infinity" if cell > 0 else "-Infinity")
    return cell


def _is_range(cell: Any) -> bool:
    """A PostgreSQL range, as asyncpg gives it (asyncpg.Range)."""
    return type(cell).__name__ == "Range" and hasattr(cell, "lower_inc")


def _range(cell: Any) -> str:
    """A range as PostgreSQL writes it: `[1,5)`, `(,3]`, `empty`."""
    if cell.isempty:
        return "empty"
    lower = "" if cell.lower is None else _plain(cell.lower, None)
    upper = "" if cell.upper is None else _plain(cell.upper, None)
    return (
        f"{'[' if cell.lower_inc else '('}{lower},{upper}"
        f"{']' if cell.upper_inc else ')'}"
    )


def _json_value(cell: Any) -> Any:
    """A JSON column's value, keys sorted so both databases print alike."""
    text = cell if isinstance(cell, str) else _json(cell)
    try:
        return json.loads(
            text,
            parse_float=Decimal,  # 2.50 and 30 digits print as stored
            object_pairs_hook=lambda pairs: dict(sorted(pairs)),
        )
    except ValueError:
        return cell


def _iso(cell: str) -> str:
    """SQLite's naive UTC text as ISO 8601 with its offset."""
    try:
        moment = datetime.fromisoformat(cell)
    except ValueError:
        return cell
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    return moment.astimezone(UTC).isoformat()


# Output.


def render(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], output_format: str
) -> str:
    """The rows in one of FORMATS, ending with a newline."""
    printer = Printer(columns, output_format)
    return printer.rows(rows) + printer.end()


class Printer:
    """Rows as text in one of FORMATS, batch by batch as they come: CSV and
    JSON print each batch at once, so a result bigger than memory streams
    through; a table waits for the last row, as its widths depend on all."""

    def __init__(self, columns: Sequence[str], output_format: str) -> None:
        self.columns = list(columns)
        self.format = output_format
        self._keys = _unique(self.columns)
        self._held: list[Sequence[Any]] = []  # a table's rows
        self._printed = 0
        self._started = False

    def _start(self) -> str:
        """The head, with the first rows or the end: a query that fails
        before its first rows prints nothing."""
        if self._started:
            return ""
        self._started = True
        if self.format == "csv":
            return _csv_lines([self.columns])
        return "[" if self.format == "json" else ""

    def rows(self, rows: Sequence[Sequence[Any]]) -> str:
        return self._start() + self._rows(rows)

    def end(self) -> str:
        return self._start() + self._end()

    def _rows(self, rows: Sequence[Sequence[Any]]) -> str:
        if self.format == "csv":
            return _csv_lines(
                [["" if v is None else _cell(v) for v in row] for row in rows]
            )
        if self.format == "table":
            self._held.extend(rows)
            return ""
        objects = [dict(zip(self._keys, row, strict=True)) for row in rows]
        if self.format == "jsonl":
            return "".join(_json(o) + "\n" for o in objects)
        text = "".join(
            ("\n" if self._printed + i == 0 else ",\n")
            + "  "
            + _json(o, indent=2).replace("\n", "\n  ")  # no raw newline within
            for i, o in enumerate(objects)
        )
        self._printed += len(objects)
        return text

    def _end(self) -> str:
        if self.format == "json":
            return "\n]\n" if self._printed else "]\n"
        if self.format == "table":
            return _table(self.columns, self._held)
        return ""


def _json(
    value: Any, indent: int | None = None, separators: tuple[str, str] | None = None
) -> str:
    """JSON with exact decimals: the standard library's has no Decimal."""
    return simplejson.dumps(
        value,
        indent=indent,
        separators=separators,
        ensure_ascii=False,
        use_decimal=True,
        allow_nan=False,
        default=str,  # a type no one foresaw prints as its text, not a crash
    )


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """psql-like: numbers right-aligned, NULL written out, a row count below."""
    kinds = [_column_kind([row[i] for row in rows]) for i in range(len(columns))]
    exact = {i for i, kind in enumerate(kinds) if kind == "exact"}
    text = tabulate(
        [
            [
                str(v) if i in exact and v is not None else _cell(v)
                for i, v in enumerate(row)
            ]
            for row in rows
        ],
        headers=list(columns),
        missingval="NULL",
        floatfmt="",
        # Otherwise tabulate would print the text '1e5' as 100000.
        disable_numparse=[i for i, k in enumerate(kinds) if k not in NUMBERS]
        if rows
        else True,
        colalign=[ALIGN[kind] for kind in kinds] if exact else None,
    )
    count = f"({len(rows)} row{'' if len(rows) == 1 else 's'})"
    return f"{text}\n{count}\n"


# How the table prints a column, by what it holds: tabulate reads numbers in
# "number" columns (and in those of NULLs alone), and would print a decimal
# through a float: "exact" ones go as text, aligned right by hand.
NUMBERS = ("number", "empty")
ALIGN = {"exact": "right", "number": "decimal", "empty": "left", "text": "left"}


def _column_kind(cells: Sequence[Any]) -> str:
    present = [cell for cell in cells if cell is not None]
    if any(isinstance(cell, Decimal) for cell in present):
        return "exact"
    if not present:
        return "empty"
    return "number" if all(map(_is_number, present)) else "text"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _csv_lines(rows: Sequence[Sequence[Any]]) -> str:
    """RFC 4180 with `\\n` line ends; NULL is an empty field."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    """A value as text for a table or CSV; numbers stay numbers for alignment."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return _json(value, separators=(",", ":"))
    return value


def _unique(columns: Sequence[str]) -> list[str]:
    """Column names as object keys: a repeated name gets `_2`, `_3`, ..."""
    keys: list[str] = []
    for column in columns:
        key, number = column, 1
        while key in keys:
            number += 1
            key = f"{column}_{number}"
        keys.append(key)
    return keys
