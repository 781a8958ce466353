"""The data dictionary: what each column of a dataset is, and which values it can take.

A pure module (no Django, no I/O): the query language (``queries/``) validates against these
objects, disclosure control reads their bounds, the dummy twins are generated from them alone.

Every column has a type and a disclosure role (DESIGN.md §4):

| role         | what it is                                        | domain fields                 |
|--------------|---------------------------------------------------|-------------------------------|
| ``identifier`` | the direct identifier (exactly one); replaced by ``person_id`` | — |
| ``category`` | a variable with a domain                          | ``values``                    |
| ``date``     | a date                                            | ``min``, ``max``, ``granularity`` |
| ``measure``  | a number with bounds                              | ``min``, ``max``              |
| ``drop``     | never enters the store                            | —                             |

A ``Dictionary`` handed to the query language or to disclosure control is *complete*: every
category has its ``values``, every measure and date its bounds (declared or derived safely from the
first loaded version). Until a first version has been loaded, undeclared domains are ``None`` and
the dataset cannot be queried.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

PERSON_ID = "person_id"
OTHER = "other"  # the value rare or undeclared category values are recoded to


class ColumnType(StrEnum):
    INTEGER = "integer"
    FLOAT = "float"
    TEXT = "text"
    DATE = "date"
    BOOLEAN = "boolean"


class Role(StrEnum):
    IDENTIFIER = "identifier"
    CATEGORY = "category"
    DATE = "date"
    MEASURE = "measure"
    DROP = "drop"


class Granularity(StrEnum):
    """The finest date unit a query may use for a date column (coarsest last)."""

    DAY = "day"
    MONTH = "month"
    YEAR = "year"

    @property
    def rank(self) -> int:
        return {"day": 0, "month": 1, "year": 2}[self.value]


class RowsPerPerson(StrEnum):
    ONE = "one"
    MANY = "many"


Value = str | int | float | bool | dt.date


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    role: Role
    description: str = ""
    # category: the domain, in declared order (typed: str for text, int for integer, bool for boolean)
    values: tuple[Value, ...] | None = None
    # measure: numeric bounds; date: dt.date bounds
    min: Value | None = None
    max: Value | None = None
    granularity: Granularity | None = None  # date only
    # which of values/min/max were derived from the first loaded version rather than declared
    derived: tuple[str, ...] = ()

    @property
    def stored(self) -> bool:
        """Enters the store (the identifier becomes ``person_id``; dropped columns never do)."""
        return self.role not in (Role.IDENTIFIER, Role.DROP)

    @property
    def complete(self) -> bool:
        if self.role == Role.CATEGORY:
            return self.values is not None
        if self.role in (Role.MEASURE, Role.DATE):
            return self.min is not None and self.max is not None
        return True


@dataclass(frozen=True)
class Dictionary:
    """One dataset's dictionary at one dictionary version."""

    dataset: str  # the table name researchers query
    columns: tuple[Column, ...]
    rows_per_person: RowsPerPerson = RowsPerPerson.MANY
    # a stricter protection than the settings: {"threshold": int, "ckm_d": int, "ckm_v": float}
    # or {"mode": "dp", "rho": float, "review": "required"|"optional", "max_rows_per_person": int}
    protection: dict[str, Any] = field(default_factory=dict)
    version: int = 1

    def column(self, name: str) -> Column | None:
        for c in self.columns:
            if c.name == name:
                return c
        return None

    @property
    def identifier(self) -> Column:
        return next(c for c in self.columns if c.role == Role.IDENTIFIER)

    @property
    def stored_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.stored)

    @property
    def complete(self) -> bool:
        return all(c.complete for c in self.stored_columns)

    def with_column(self, column: Column) -> Dictionary:
        return replace(self, columns=tuple(column if c.name == column.name else c for c in self.columns))

    # --- JSON (the stored and served form) ------------------------------------------------
    def to_json(self, *, public: bool = False) -> dict:
        """The JSON form. ``public`` is what a project member may see (DESIGN.md §4): names,
        types, roles, domains, bounds, granularity, descriptions — no dropped columns."""
        cols = [c for c in self.columns if not (public and c.role == Role.DROP)]
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "version": self.version,
            "rows_per_person": self.rows_per_person.value,
            "columns": [_column_json(c) for c in cols],
        }
        if self.protection:
            out["protection"] = dict(self.protection)
        return out

    @classmethod
    def from_json(cls, data: dict) -> Dictionary:
        return cls(
            dataset=data["dataset"],
            version=int(data.get("version", 1)),
            rows_per_person=RowsPerPerson(data.get("rows_per_person", "many")),
            protection=dict(data.get("protection") or {}),
            columns=tuple(_column_from_json(c) for c in data["columns"]),
        )


def _value_json(value: Value | None):
    return value.isoformat() if isinstance(value, dt.date) else value


def _column_json(c: Column) -> dict:
    out: dict[str, Any] = {"name": c.name, "type": c.type.value, "role": c.role.value, "description": c.description}
    if c.role == Role.CATEGORY:
        out["values"] = None if c.values is None else [_value_json(v) for v in c.values]
    if c.role in (Role.MEASURE, Role.DATE):
        out["min"], out["max"] = _value_json(c.min), _value_json(c.max)
    if c.role == Role.DATE:
        out["granularity"] = (c.granularity or Granularity.DAY).value
    if c.derived:
        out["derived"] = list(c.derived)
    return out


def _typed(type_: ColumnType, value):
    if value is None:
        return None
    if type_ == ColumnType.DATE:
        return dt.date.fromisoformat(value) if isinstance(value, str) else value
    return value


def _column_from_json(d: dict) -> Column:
    type_ = ColumnType(d["type"])
    values = d.get("values")
    return Column(
        name=d["name"],
        type=type_,
        role=Role(d["role"]),
        description=d.get("description") or "",
        values=None if values is None else tuple(_typed(type_, v) for v in values),
        min=_typed(type_, d.get("min")),
        max=_typed(type_, d.get("max")),
        granularity=Granularity(d["granularity"]) if d.get("granularity") else None,
        derived=tuple(d.get("derived") or ()),
    )
