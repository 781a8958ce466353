"""What a value in an uploaded file may look like, per declared type — in Python and in SQL.

Ingestion is strict (DESIGN.md §4): nothing is rounded, guessed or coerced. One rule per type,
written twice: ``parse_value`` (Python, for tests, the declaration and small inputs) and
``sql_ok``/``sql_typed`` (the same rule as DuckDB expressions over the file read as text, which is
how a load checks millions of rows). A property test holds the two to the same answers.

| type      | accepted text                                        | refused (examples)                        |
|-----------|------------------------------------------------------|-------------------------------------------|
| integer   | ``[+-]?[0-9]+`` within 64 bits                        | ``40.5``, ``4e1``, `` 42``, ``1_000``       |
| float     | decimal or scientific notation, finite               | ``NaN``, ``inf``, ``-inf``, ``1e400``, ``0x1`` |
| boolean   | ``true`` / ``false``, any case                        | ``t``, ``1``, ``yes``                       |
| date      | ``YYYY-MM-DD``, a real day, year 0001–9999            | ``2024-2-3``, ``2023-02-30``, ``03/02/2024`` |
| text      | anything                                             | —                                          |

An empty field is a missing value (NULL) for every type; spaces are never trimmed (`` 42`` is not an
integer). The identifier column has its own rule (an NHS number, ``pseudonym.py``).
"""

from __future__ import annotations

import datetime as dt
import math
import re

from .dictionary import ColumnType, Value

INTEGER_PATTERN = r"[+-]?[0-9]+"
FLOAT_PATTERN = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?"
DATE_PATTERN = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_INTEGER = re.compile(INTEGER_PATTERN)
_FLOAT = re.compile(FLOAT_PATTERN)
_DATE = re.compile(DATE_PATTERN)
_NUMBER_LIKE = re.compile(r"[0-9](?:[ \t-]?[0-9]){9,}")  # ten digits, maybe spaced: an NHS number?

# The reason a value of each type is refused: the custodian's error messages (docs/environment.md).
REASONS = {
    ColumnType.INTEGER: "not an integer",
    ColumnType.FLOAT: "not a finite number",
    ColumnType.BOOLEAN: "not a boolean (true/false)",
    ColumnType.DATE: "not a date (YYYY-MM-DD)",
    ColumnType.TEXT: "not text",  # never raised: any text is text
}
NOT_IN_DOMAIN = "not one of the declared values of this column"


class BadValue(ValueError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def parse_value(type_: ColumnType | str, text: str | None) -> Value | None:
    """The typed value of ``text`` for a column of ``type_``; None for a missing value (empty);
    ``BadValue`` naming the reason when the text is not such a value."""
    type_ = ColumnType(type_)
    if text is None or text == "":
        return None
    if type_ == ColumnType.TEXT:
        return text
    if type_ == ColumnType.INTEGER:
        if _INTEGER.fullmatch(text):
            value = int(text)
            if INT64_MIN <= value <= INT64_MAX:
                return value
    elif type_ == ColumnType.FLOAT:
        if _FLOAT.fullmatch(text):
            value = float(text)
            if math.isfinite(value):
                return value
    elif type_ == ColumnType.BOOLEAN:
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
    elif type_ == ColumnType.DATE:
        if _DATE.fullmatch(text) and text[:4] != "0000":
            try:
                return dt.date.fromisoformat(text)
            except ValueError:
                pass
    raise BadValue(REASONS[type_])


# --- the same rules in SQL (DuckDB), over a VARCHAR expression ----------------------------------

def _lit(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


def sql_ok(type_: ColumnType | str, expr: str) -> str:
    """A DuckDB boolean expression: true when the text ``expr`` is acceptable for ``type_`` (a
    missing value is acceptable). Never NULL."""
    type_ = ColumnType(type_)
    missing = f"({expr} IS NULL OR {expr} = '')"
    if type_ == ColumnType.TEXT:
        return "true"
    if type_ == ColumnType.INTEGER:
        good = f"(regexp_full_match({expr}, {_lit(INTEGER_PATTERN)}) AND TRY_CAST({expr} AS BIGINT) IS NOT NULL)"
    elif type_ == ColumnType.FLOAT:
        good = (f"(regexp_full_match({expr}, {_lit(FLOAT_PATTERN)}) "
                f"AND coalesce(isfinite(TRY_CAST({expr} AS DOUBLE)), false))")
    elif type_ == ColumnType.BOOLEAN:
        good = f"(lower({expr}) IN ('true', 'false'))"
    else:  # date
        good = (f"(regexp_full_match({expr}, {_lit(DATE_PATTERN)}) AND substr({expr}, 1, 4) <> '0000' "
                f"AND TRY_CAST({expr} AS DATE) IS NOT NULL)")
    return f"({missing} OR {good})"


def sql_typed(type_: ColumnType | str, expr: str) -> str:
    """The typed value of an acceptable text ``expr`` (NULL when missing)."""
    type_ = ColumnType(type_)
    text = f"nullif({expr}, '')"
    if type_ == ColumnType.TEXT:
        return text
    if type_ == ColumnType.INTEGER:
        return f"CAST({text} AS BIGINT)"
    if type_ == ColumnType.FLOAT:
        return f"CAST({text} AS DOUBLE)"
    if type_ == ColumnType.BOOLEAN:
        return f"(lower({text}) = 'true')"
    return f"CAST({text} AS DATE)"


def sql_literal(type_: ColumnType | str, value: Value) -> str:
    """A typed SQL literal of a domain value."""
    type_ = ColumnType(type_)
    if type_ == ColumnType.BOOLEAN:
        return "true" if value else "false"
    if type_ == ColumnType.INTEGER:
        return str(int(value))
    if type_ == ColumnType.FLOAT:
        return repr(float(value))
    if type_ == ColumnType.DATE:
        return f"DATE {_lit(value.isoformat() if isinstance(value, dt.date) else value)}"
    return _lit(value)


DUCKDB_TYPES = {ColumnType.INTEGER: "BIGINT", ColumnType.FLOAT: "DOUBLE", ColumnType.TEXT: "VARCHAR",
                ColumnType.DATE: "DATE", ColumnType.BOOLEAN: "BOOLEAN"}


def preview(text: str | None, *, limit: int = 40) -> str | None:
    """A short, safe echo of a refused value for the custodian: at most ``limit`` characters, control
    characters shown as ``?``, and any run of ten digits masked (it may be an NHS number that
    slipped into another column)."""
    if text is None:
        return None
    shown = "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
    shown = _NUMBER_LIKE.sub(lambda m: "#" * len(m.group(0)), shown)
    return shown + ("…" if len(text) > limit else "")
