"""Safe derivation of undeclared domains, bounds and ranges from the first loaded version.

A pure module: statistics in (computed by the load, in DuckDB, over the stored rows), a complete
``Dictionary`` out. DESIGN.md §4:

- a **category**'s domain is the values held by at least ``threshold`` distinct persons (the
  setting ``TRE_SDC_THRESHOLD``, or the dataset's stricter ``protection``), in sorted order. A text
  category's derived domain ends with ``other``, always (whether or not a rare value was seen: its
  presence says nothing about the data), and rarer values are recoded to ``other`` in the stored
  data. An integer category has no ``other``: rarer values are stored as missing (NULL). A boolean
  category's domain is ``[false, true]`` from the declaration on.
- a **measure**'s bounds are its 1st and 99th percentiles rounded *outward* to two significant
  figures (``37.4 → 37``, ``1234 → 1300`` for a maximum, ``-0.0123 → -0.013`` for a minimum);
  values are not clamped in the store — a query reads them clamped to the bounds.
- a **date**'s range is its minimum and maximum rounded outward to whole years
  (``2019-03-04 … 2023-11-30`` → ``2019-01-01 … 2023-12-31``).

Derived fields are named in ``Column.derived``. Later versions keep the domain (it is frozen): a
new or rare value of a derived text category becomes ``other`` at ingestion (``OUT_OF_DOMAIN``).
A declared domain is strict: a value outside it is an error in the upload.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from .dictionary import OTHER, Column, ColumnType, Dictionary, Role, Value


@dataclass(frozen=True)
class ColumnStats:
    """What the load measured of one column (only what derivation needs)."""

    # category: {value: distinct persons holding it} — the load passes only values at or above
    # the threshold, so rarer values never leave the engine
    persons_by_value: dict = field(default_factory=dict)
    # measure: the 1st and 99th percentiles (None when the column has no value)
    p01: float | None = None
    p99: float | None = None
    # date: the smallest and largest date
    min: dt.date | None = None
    max: dt.date | None = None


def round_outward(x: float, *, up: bool, figures: int = 2) -> float:
    """``x`` rounded to ``figures`` significant figures, towards +∞ (``up``) or −∞."""
    if x == 0:
        return 0.0
    d = Decimal(repr(float(x)))
    quantum = Decimal(1).scaleb(d.adjusted() - (figures - 1))
    return float(d.quantize(quantum, rounding=ROUND_CEILING if up else ROUND_FLOOR))


def _bound(type_: ColumnType, x: float, *, up: bool) -> Value:
    r = round_outward(x, up=up)
    if type_ == ColumnType.INTEGER:
        return math.ceil(r) if up else math.floor(r)
    return r


def _category_domain(column: Column, stats: ColumnStats, threshold: int) -> tuple:
    frequent = sorted(v for v, n in stats.persons_by_value.items() if v is not None and n >= threshold)
    if column.type == ColumnType.TEXT:
        return tuple(v for v in frequent if v != OTHER) + (OTHER,)
    return tuple(frequent)


def derive_column(column: Column, stats: ColumnStats | None, *, threshold: int, today: dt.date) -> Column:
    """``column`` with its undeclared domain, bounds or range filled in (unchanged if complete)."""
    stats = stats or ColumnStats()
    derived = list(column.derived)
    if column.role == Role.CATEGORY and column.values is None:
        return replace(column, values=_category_domain(column, stats, threshold), derived=tuple(derived + ["values"]))
    if column.role == Role.MEASURE and (column.min is None or column.max is None):
        lo, hi = column.min, column.max
        if lo is None:
            lo = _bound(column.type, stats.p01, up=False) if stats.p01 is not None else (0 if column.type == ColumnType.INTEGER else 0.0)
            derived.append("min")
        if hi is None:
            hi = _bound(column.type, stats.p99, up=True) if stats.p99 is not None else lo
            derived.append("max")
        hi = max(hi, lo)
        return replace(column, min=lo, max=hi, derived=tuple(derived))
    if column.role == Role.DATE and (column.min is None or column.max is None):
        lo, hi = column.min, column.max
        if lo is None:
            lo = dt.date((stats.min or today).year, 1, 1)
            derived.append("min")
        if hi is None:
            hi = dt.date((stats.max or stats.min or today).year, 12, 31)
            derived.append("max")
        hi = max(hi, lo)
        return replace(column, min=lo, max=hi, derived=tuple(derived))
    return column


def derive(dictionary: Dictionary, stats: dict[str, ColumnStats], *, threshold: int,
           today: dt.date | None = None) -> Dictionary:
    """The complete dictionary: every undeclared domain, bound and range derived from ``stats``."""
    today = today or dt.date.today()
    columns = tuple(derive_column(c, stats.get(c.name), threshold=threshold, today=today) if c.stored else c
                    for c in dictionary.columns)
    return replace(dictionary, columns=columns)


def needs_stats(dictionary: Dictionary) -> list[Column]:
    """The stored columns whose domain, bounds or range the first load must derive."""
    return [c for c in dictionary.stored_columns if not c.complete]


# What a load does with a value outside a category's domain.
ERROR, RECODE_OTHER, RECODE_NULL = "error", "other", "null"


def out_of_domain(column: Column) -> str | None:
    """``error`` for a declared domain; ``other`` (text) or ``null`` (integer) for a derived one;
    None when there is nothing to check (not a category, or no domain yet)."""
    if column.role != Role.CATEGORY or column.values is None:
        return None
    if "values" not in column.derived:
        return ERROR
    return RECODE_OTHER if column.type == ColumnType.TEXT else RECODE_NULL
