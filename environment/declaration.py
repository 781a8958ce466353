"""A custodian's declaration (the body of ``POST datasets/``) → a ``Dictionary``.

A pure module: ``declare(body, limits=…)`` returns the dictionary and a DRF-style error object that
names **every** bad field at once, e.g. ``{"columns": {"2": {"values": ["…"]}}, "protection":
{"threshold": ["…"]}}`` (empty when the declaration is good; then the dictionary is not None).

Version-1 declarations keep working (DESIGN.md §4): the ``identifier_column`` is the identifier;
``drop: true`` means role ``drop``; text and boolean columns are categories, integer and float
columns measures, date columns dates with granularity ``day``. A boolean category's domain is
``[false, true]``; other undeclared domains, bounds and ranges stay ``None`` until the first load
derives them (``derivation.py``).

Checks: exactly one identifier; roles compatible with types (a category is text, integer or
boolean; a measure integer or float; a date a date; the identifier text or integer); ``values``
only on categories, typed as the column (no duplicates); ``min``/``max`` only on measures and dates,
typed as the column, ``min ≤ max``; ``granularity`` only on dates; ``protection`` never looser than
the settings (``threshold ≥ TRE_SDC_THRESHOLD``, ``ckm_d ≥ TRE_CKM_D``, ``ckm_v ≥ TRE_CKM_V``;
``mode: dp`` needs ``rho > 0``).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from .dictionary import Column, ColumnType, Dictionary, Granularity, Role, RowsPerPerson
from .naming import PERSON_ID, column_name_problems, table_name_problems
from .values import INT64_MAX, INT64_MIN, BadValue, parse_value

MAX_COLUMNS = 1000
MAX_VALUES = 10_000  # a domain larger than the largest grid (TRE_MAX_RESULT_CELLS) is of no use
MAX_VALUE_CHARS = 200
MAX_DESCRIPTION_CHARS = 2000

COMPATIBLE = {
    Role.IDENTIFIER: (ColumnType.TEXT, ColumnType.INTEGER),
    Role.CATEGORY: (ColumnType.TEXT, ColumnType.INTEGER, ColumnType.BOOLEAN),
    Role.MEASURE: (ColumnType.INTEGER, ColumnType.FLOAT),
    Role.DATE: (ColumnType.DATE,),
    Role.DROP: tuple(ColumnType),
}
DEFAULT_ROLE = {ColumnType.TEXT: Role.CATEGORY, ColumnType.BOOLEAN: Role.CATEGORY, ColumnType.INTEGER: Role.MEASURE,
                ColumnType.FLOAT: Role.MEASURE, ColumnType.DATE: Role.DATE}
COLUMN_FIELDS = {"name", "type", "role", "values", "min", "max", "granularity", "drop", "description"}
PROTECTION_FIELDS = {"mode", "threshold", "ckm_d", "ckm_v", "rho", "review", "max_rows_per_person"}
DP_FIELDS = {"rho", "review", "max_rows_per_person"}


@dataclass(frozen=True)
class Limits:
    """The settings a dataset's ``protection`` may only make stricter."""

    threshold: int = 10
    ckm_d: int = 3
    ckm_v: float = 2.0


def _words(items) -> str:
    return ", ".join(str(i) for i in items)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (_is_int(value) or isinstance(value, float)) and not (isinstance(value, float) and not math.isfinite(value))


def typed_domain_value(type_: ColumnType, value):
    """A declared ``values`` entry or bound as the column's Python type; ``BadValue`` if it is not one."""
    if type_ == ColumnType.TEXT:
        if not isinstance(value, str) or not value:
            raise BadValue("must be a non-empty string")
        if len(value) > MAX_VALUE_CHARS:
            raise BadValue(f"must be at most {MAX_VALUE_CHARS} characters")
        return value
    if type_ == ColumnType.INTEGER:
        if not _is_int(value) or not INT64_MIN <= value <= INT64_MAX:
            raise BadValue("must be an integer (a JSON number without a fraction)")
        return value
    if type_ == ColumnType.FLOAT:
        if not _is_number(value):
            raise BadValue("must be a finite number")
        return float(value)
    if type_ == ColumnType.BOOLEAN:
        if not isinstance(value, bool):
            raise BadValue("must be true or false")
        return value
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str):
        raise BadValue("must be a date written YYYY-MM-DD")
    try:
        return parse_value(ColumnType.DATE, value)
    except BadValue:
        raise BadValue("must be a date written YYYY-MM-DD") from None


def _column(i: int, raw, *, identifier_column, seen: dict) -> tuple[Column | None, dict]:
    errors: dict[str, list[str]] = {}

    def bad(field, message):
        errors.setdefault(field, []).append(message)

    if not isinstance(raw, dict):
        return None, {"non_field_errors": ["each column must be an object {name, type, …}"]}
    unknown = sorted(set(raw) - COLUMN_FIELDS)
    for key in unknown:
        bad(key, f"unknown field; a column has {_words(sorted(COLUMN_FIELDS))}")
    name = raw.get("name")
    problems = column_name_problems(name)
    if problems:
        for p in problems:
            bad("name", p)
    elif name in seen:
        bad("name", f"duplicate column name '{name}' (also column {seen[name]})")
    else:
        seen[name] = i
    try:
        type_ = ColumnType(raw.get("type"))
    except (ValueError, TypeError):
        type_ = None
        bad("type", f"type must be one of {_words(t.value for t in ColumnType)}")
    drop = raw.get("drop", False)
    if not isinstance(drop, bool):
        bad("drop", "must be true or false")
        drop = False
    description = raw.get("description") or ""
    if not isinstance(description, str):
        bad("description", "must be text")
        description = ""
    elif len(description) > MAX_DESCRIPTION_CHARS:
        bad("description", f"at most {MAX_DESCRIPTION_CHARS} characters")

    # the role: declared, or the version-1 default
    role = None
    if raw.get("role") is not None:
        try:
            role = Role(raw["role"])
        except (ValueError, TypeError):
            bad("role", f"role must be one of {_words(r.value for r in Role)}")
    is_identifier = isinstance(name, str) and name == identifier_column
    if is_identifier:
        if role not in (None, Role.IDENTIFIER):
            bad("role", f"'{name}' is the identifier_column: its role is identifier")
        if drop:
            bad("drop", "the identifier column cannot be dropped (it becomes person_id)")
        role = Role.IDENTIFIER
    elif role == Role.IDENTIFIER:
        bad("role", f"exactly one identifier: the identifier_column is '{identifier_column}'")
    if drop and role not in (None, Role.DROP, Role.IDENTIFIER):
        bad("drop", f"drop: true contradicts role {role.value}")
    if role is None and "role" not in errors:
        role = Role.DROP if drop else (DEFAULT_ROLE.get(type_) if type_ else None)
    if role is not None and type_ is not None and type_ not in COMPATIBLE[role]:
        bad("role", f"a {role.value} column must be of type {' or '.join(t.value for t in COMPATIBLE[role])}, not {type_.value}")
        role = None

    # the domain fields
    values = raw.get("values")
    typed_values = None
    if values is not None:
        if role not in (Role.CATEGORY, None):
            bad("values", f"values are declared for category columns only (this column's role is {role.value})")
        elif not isinstance(values, list) or not values:
            bad("values", "a non-empty list of the category's values")
        elif len(values) > MAX_VALUES:
            bad("values", f"at most {MAX_VALUES} values")
        elif type_ is not None and role is not None:
            typed_values, dupes = [], set()
            for j, v in enumerate(values):
                try:
                    tv = typed_domain_value(type_, v)
                except BadValue as exc:
                    bad("values", f"value {j}: {exc.reason} (the column's type is {type_.value})")
                    continue
                if tv in dupes:
                    bad("values", f"value {j}: repeated")
                dupes.add(tv)
                typed_values.append(tv)
    elif role == Role.CATEGORY and type_ == ColumnType.BOOLEAN:
        typed_values = [False, True]

    bounds: dict[str, Any] = {}
    for key in ("min", "max"):
        if raw.get(key) is None:
            continue
        if role not in (Role.MEASURE, Role.DATE, None):
            bad(key, f"{key} is declared for measure and date columns only (this column's role is {role.value})")
        elif type_ is not None and role is not None:
            try:
                bounds[key] = typed_domain_value(type_, raw[key])
            except BadValue as exc:
                bad(key, f"{exc.reason} (the column's type is {type_.value})")
    if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
        bad("min", "min must not be greater than max")

    granularity = None
    if raw.get("granularity") is not None:
        if role not in (Role.DATE, None):
            bad("granularity", "granularity is declared for date columns only")
        else:
            try:
                granularity = Granularity(raw["granularity"])
            except (ValueError, TypeError):
                bad("granularity", f"granularity must be one of {_words(g.value for g in Granularity)}")
    if role == Role.DATE and granularity is None:
        granularity = Granularity.DAY

    if errors or role is None or type_ is None:
        return None, errors
    if role == Role.CATEGORY and typed_values is not None:
        values_out = tuple(typed_values)
    else:
        values_out = None
    return Column(name=name, type=type_, role=role, description=description, values=values_out,
                  min=bounds.get("min"), max=bounds.get("max"), granularity=granularity), {}


def _protection(raw, limits: Limits) -> tuple[dict, dict]:
    if raw is None:
        return {}, {}
    if not isinstance(raw, dict):
        return {}, {"non_field_errors": ["protection must be an object, e.g. {\"threshold\": 20}"]}
    errors: dict[str, list[str]] = {}
    out: dict[str, Any] = {}
    for key in sorted(set(raw) - PROTECTION_FIELDS):
        errors[key] = [f"unknown field; protection has {_words(sorted(PROTECTION_FIELDS))}"]
    mode = raw.get("mode", "ckm")
    if not isinstance(mode, str) or mode not in ("ckm", "dp"):
        errors["mode"] = ["mode must be ckm (the cell key method, the default) or dp (differential privacy)"]
    elif mode == "dp":
        out["mode"] = "dp"
    # (field, setting name, the floor in force, is the value well-typed?, the stored value)
    stricter = (("threshold", "TRE_SDC_THRESHOLD", limits.threshold, _is_int, "an integer", int),
                ("ckm_d", "TRE_CKM_D", limits.ckm_d, _is_int, "an integer", int),
                ("ckm_v", "TRE_CKM_V", limits.ckm_v, _is_number, "a finite number", float))
    for field, setting, floor, well_typed, kind, cast in stricter:
        if field not in raw:
            continue
        value = raw[field]
        if not well_typed(value):
            errors[field] = [f"must be {kind}"]
        elif value < floor:
            errors[field] = [f"must be at least {floor:g} ({setting}): a dataset's protection may only be stricter "
                             "than the settings"]
        else:
            out[field] = cast(value)
    if mode == "dp":
        rho = raw.get("rho")
        if rho is None:
            errors["rho"] = ["mode dp needs a privacy budget rho > 0 (zero-concentrated DP)"]
        elif not _is_number(rho) or rho <= 0:
            errors["rho"] = ["rho must be a finite number greater than 0"]
        else:
            out["rho"] = float(rho)
        if "review" in raw:
            if not isinstance(raw["review"], str) or raw["review"] not in ("required", "optional"):
                errors["review"] = ["review must be required or optional"]
            else:
                out["review"] = raw["review"]
        if "max_rows_per_person" in raw:
            m = raw["max_rows_per_person"]
            if not _is_int(m) or m < 1:
                errors["max_rows_per_person"] = ["must be an integer of at least 1"]
            else:
                out["max_rows_per_person"] = m
    else:
        for key in sorted(DP_FIELDS & set(raw)):
            errors.setdefault(key, []).append(f"{key} belongs to mode dp")
    return out, errors


def declare(body: dict, *, limits: Limits = Limits(), check_name: bool = True) -> tuple[Dictionary | None, dict]:
    """The dictionary a declaration makes (version 1) and every problem with it."""
    if not isinstance(body, dict):
        return None, {"non_field_errors": ["the declaration must be a JSON object"]}
    errors: dict[str, Any] = {}
    name = body.get("name")
    if check_name:
        problems = table_name_problems(name)
        if problems:
            errors["name"] = problems
    identifier_column = body.get("identifier_column")
    if not isinstance(identifier_column, str) or not identifier_column:
        errors["identifier_column"] = ["the identifier column (e.g. nhs_number) is required"]
        identifier_column = None
    elif identifier_column == PERSON_ID:
        errors["identifier_column"] = [f"'{PERSON_ID}' is the pseudonym, not an identifier column"]

    raw_columns = body.get("columns")
    columns: list[Column] = []
    if not isinstance(raw_columns, list) or not raw_columns:
        errors["columns"] = ["at least one column (the identifier) is required"]
        raw_columns = []
    elif len(raw_columns) > MAX_COLUMNS:
        errors["columns"] = [f"at most {MAX_COLUMNS} columns"]
        raw_columns = []
    column_errors: dict[str, dict] = {}
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_columns):
        column, problems = _column(i, raw, identifier_column=identifier_column, seen=seen)
        if problems:
            column_errors[str(i)] = problems
        elif column is not None:
            columns.append(column)
    if column_errors:
        errors["columns"] = column_errors
    if identifier_column and "identifier_column" not in errors and identifier_column not in seen and raw_columns:
        errors["identifier_column"] = [f"'{identifier_column}' is not among the columns"]

    rows_per_person = body.get("rows_per_person") or RowsPerPerson.MANY.value
    try:
        rows_per_person = RowsPerPerson(rows_per_person)
    except (ValueError, TypeError):
        errors["rows_per_person"] = ["rows_per_person must be one or many"]

    protection, problems = _protection(body.get("protection"), limits)
    if problems:
        errors["protection"] = problems

    if errors:
        return None, errors
    return Dictionary(dataset=name, columns=tuple(columns), rows_per_person=rows_per_person, protection=protection,
                      version=1), {}


def threshold_for(dictionary: Dictionary, limits: Limits) -> int:
    """The threshold in force for a dataset: the settings', or its stricter ``protection``."""
    return max(limits.threshold, int(dictionary.protection.get("threshold") or 0))


def legacy_columns(dictionary: Dictionary) -> list[dict]:
    """``Dataset.columns`` in its version-1 shape (``{name, type, drop, description}``) plus ``role``,
    for the callers that read it (the sandbox schema, erasure)."""
    return [{"name": c.name, "type": c.type.value, "role": c.role.value, "drop": c.role == Role.DROP,
             "description": c.description} for c in dictionary.columns]
