"""Parsing and value helpers shared by the validator and the emitter."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres

from environment.dictionary import Column, Granularity

from .model import (
    Key,
)

# --- parsing -------------------------------------------------------------------------------------


def _date_diff(args):
    return exp.Anonymous(this="DATE_DIFF", expressions=args)


class _Dialect(Postgres):
    """PostgreSQL, with date_diff(unit, start, end) kept as written (checked by the validator)."""

    class Parser(Postgres.Parser):
        FUNCTIONS = {**Postgres.Parser.FUNCTIONS, "DATE_DIFF": _date_diff, "DATEDIFF": _date_diff}


class _Stop(Exception):
    """Stop validating: nothing sensible can be checked after this problem."""


@dataclass
class _Num:
    lo: float
    hi: float
    integer: bool
    safe: bool  # every intermediate within ±INT_SAFE and no division

    @property
    def exact(self) -> bool:
        return self.integer and self.safe




# --- helpers -------------------------------------------------------------------------------------


def _func_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    try:
        return node.sql_name().lower()
    except Exception:  # noqa: BLE001 - sqlglot raises plain errors for nameless nodes
        return type(node).__name__.lower()


def _drop_zeros(form: dict) -> dict:
    return {m: c for m, c in form.items() if c != 0}


def _is_date_literal(node: exp.Expression) -> bool:
    return isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) and node.this.is_string \
        and node.to.this == exp.DataType.Type.DATE


def _is_literal(node: exp.Expression | None) -> bool:
    if isinstance(node, exp.Neg):
        return isinstance(node.this, exp.Literal) and not node.this.is_string
    return isinstance(node, (exp.Literal, exp.Boolean, exp.Null)) or _is_date_literal(node)


def _number(node: exp.Expression) -> int | float | None:
    if isinstance(node, exp.Neg):
        value = _number(node.this)
        return None if value is None else -value
    if not isinstance(node, exp.Literal) or node.is_string:
        return None
    text = node.this
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return None


def _label(key: Key, lit: exp.Expression):
    if isinstance(lit, exp.Boolean):
        return lit.this
    if _is_date_literal(lit):
        return dt.date.fromisoformat(lit.this.name)
    if isinstance(lit, exp.Literal) and lit.is_string:
        if key.domain and isinstance(key.domain[0], dt.date):
            try:
                return dt.date.fromisoformat(lit.name)
            except ValueError:
                return lit.name
        return lit.name
    return _number(lit)


def _conjuncts(node: exp.Expression) -> list[exp.Expression]:
    node = node.unnest() if isinstance(node, exp.Paren) else node
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    return [node]


def _shown(values) -> str:
    values = list(values)
    if len(values) > 20:
        return ", ".join(repr(v) for v in values[:10]) + f", … ({len(values)} values) …, " + \
            ", ".join(repr(v) for v in values[-3:])
    return ", ".join(repr(v) for v in values)


def _sorted(values) -> tuple:
    return tuple(sorted(set(values), key=lambda v: (v is None, v)))


def _granularity(column: Column) -> Granularity:
    return column.granularity or Granularity.DAY


def _months(d: dt.date) -> int:
    return d.year * 12 + d.month - 1


def _diff(unit: str, start: dt.date, end: dt.date) -> int:
    """DuckDB's date_diff: the number of unit boundaries between start and end."""
    if unit == "day":
        return (end - start).days
    if unit == "month":
        return _months(end) - _months(start)
    return end.year - start.year


def _trunc(unit: str, d: dt.date) -> dt.date:
    if unit == "day":
        return d
    if unit == "week":
        return max(d - dt.timedelta(days=min(d.weekday(), d.toordinal() - 1)), dt.date.min)
    if unit == "month":
        return d.replace(day=1)
    if unit == "quarter":
        return dt.date(d.year, 3 * ((d.month - 1) // 3) + 1, 1)
    return dt.date(d.year, 1, 1)


def _next(unit: str, d: dt.date) -> dt.date:
    if unit == "day":
        return d + dt.timedelta(days=1)
    if unit == "week":
        return d + dt.timedelta(days=7)
    step = {"month": 1, "quarter": 3, "year": 12}[unit]
    m = _months(d) + step
    return dt.date(m // 12, m % 12 + 1, 1)


def _trunc_count(unit: str, lo: dt.date, hi: dt.date) -> int:
    """How many unit starts lie from lo to hi (without building them)."""
    a, b = _trunc(unit, lo), _trunc(unit, hi)
    if unit == "day":
        return (b - a).days + 1
    if unit == "week":
        return (b - a).days // 7 + 1
    return (_months(b) - _months(a)) // {"month": 1, "quarter": 3, "year": 12}[unit] + 1


def _trunc_domain(unit: str, lo: dt.date, hi: dt.date, limit: int) -> tuple:
    """The truncated dates from lo to hi; stops after ``limit`` values (the grid is refused anyway)."""
    out, d, end = [], _trunc(unit, lo), _trunc(unit, hi)
    while d <= end and len(out) < limit:
        out.append(d)
        try:
            d = _next(unit, d)
        except (ValueError, OverflowError):  # past year 9999
            break
    return tuple(out)


def _extract_domain(part: str, column: Column) -> tuple:
    if part == "year":
        return tuple(range(column.min.year, column.max.year + 1))
    return tuple(range(1, {"quarter": 4, "month": 12, "day": 31}[part] + 1))


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    return candidate


