"""Emitting a valid plan as one SQL statement per engine (DuckDB, Spark SQL) through sqlglot."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Literal

from sqlglot import exp
from sqlglot.errors import ErrorLevel, SqlglotError

from environment.dictionary import PERSON_ID, ColumnType, Role

from .helpers import (
    _Dialect,
    _is_date_literal,
    _is_literal,
)
from .model import (
    RK,
    RK2,
    Key,
    Plan,
)
from .validator import _Validator

# --- contributions -------------------------------------------------------------------------------


def _read(plan: Plan, alias_map: Mapping[str, str], node: exp.Column, mode: str | None = None) -> exp.Expression:
    """The clean read of a column: measures clamped, dates outside their range NULL, categories as stored."""
    column = plan.column(node.table, node.name)
    ref = exp.column(column.name, table=alias_map[node.table], quoted=True)
    if column.role == Role.MEASURE:
        lo, hi = exp.convert(column.min), exp.convert(column.max)
        if mode == "double":
            ref, lo, hi = (exp.cast(x, "DOUBLE") for x in (ref, lo, hi))
        elif mode == "bigint" or column.type == ColumnType.INTEGER:
            ref, lo, hi = (exp.cast(x, "BIGINT") for x in (ref, lo, hi))
        else:
            ref, lo, hi = (exp.cast(x, "DOUBLE") for x in (ref, lo, hi))
        return exp.Case(ifs=[exp.If(this=exp.LT(this=ref.copy(), expression=lo.copy()), true=lo),
                             exp.If(this=exp.GT(this=ref.copy(), expression=hi.copy()), true=hi)], default=ref)
    if column.role == Role.DATE:
        between = exp.Between(this=ref.copy(), low=_date(column.min), high=_date(column.max))
        return exp.Case(ifs=[exp.If(this=between, true=ref)])
    return ref


def _date(value: dt.date) -> exp.Expression:
    return exp.cast(exp.Literal.string(value.isoformat()), "DATE")


def _is_arithmetic(n: exp.Expression) -> bool:
    if isinstance(n, exp.Neg):
        return not isinstance(n.this, exp.Literal)
    return isinstance(n, (exp.Add, exp.Sub, exp.Mul, exp.Div)) or (
        isinstance(n, exp.Anonymous) and n.name.upper() == "DATE_DIFF")


def _rewrite(plan: Plan, alias_map: Mapping[str, str], node: exp.Expression, mode: str | None = None) -> exp.Expression:
    """A qualified expression of the plan as the engine reads it. ``mode`` is the arithmetic of a measure
    expression (``bigint`` or ``double``); without it, each arithmetic operand gets its own safe mode."""

    def fix(n):
        if isinstance(n, exp.Column):
            return _read(plan, alias_map, n, mode)
        if mode is None and _is_arithmetic(n):
            return exp.Paren(this=_rewrite(plan, alias_map, n, "bigint" if _exact(plan, n) else "double"))
        if isinstance(n, exp.Literal) and not n.is_string and mode is not None:
            return exp.cast(n.copy(), "DOUBLE" if mode == "double" else "BIGINT")
        if isinstance(n, exp.Anonymous) and n.name.upper() == "DATE_DIFF":
            unit, start, end = n.expressions
            return exp.cast(_date_diff_sql(unit.name.lower(), _rewrite(plan, alias_map, start),
                                           _rewrite(plan, alias_map, end)), "DOUBLE" if mode == "double" else "BIGINT")
        if isinstance(n, (exp.TimestampTrunc, exp.DateTrunc)):
            trunc = exp.TimestampTrunc(this=_rewrite(plan, alias_map, n.this), unit=exp.var(n.args["unit"].name.upper()))
            return exp.cast(trunc, "DATE")
        if isinstance(n, exp.Extract):
            return exp.Extract(this=exp.var(n.this.name.upper()), expression=_rewrite(plan, alias_map, n.expression))
        return n

    tree = node.copy()
    # a string literal compared with a date operand becomes a DATE literal
    for cmp in list(tree.find_all(exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.In, exp.Between)):
        operand = cmp.this.unnest() if isinstance(cmp.this, exp.Paren) else cmp.this
        if _is_literal(operand) and not isinstance(cmp, (exp.In, exp.Between)):
            operand = cmp.expression.unnest() if isinstance(cmp.expression, exp.Paren) else cmp.expression
        is_date = isinstance(operand, (exp.TimestampTrunc, exp.DateTrunc)) or (
            isinstance(operand, exp.Column) and plan.column(operand.table, operand.name).role == Role.DATE)
        if not is_date:
            continue
        for lit in list(cmp.find_all(exp.Literal)):
            if lit.is_string and not _is_date_literal(lit.parent):
                lit.replace(_date(dt.date.fromisoformat(lit.name)))
    return tree.transform(fix)


def _date_diff_sql(unit: str, start: exp.Expression, end: exp.Expression) -> exp.Expression:
    """date_diff with DuckDB's meaning (unit boundaries crossed), written so that DuckDB and Spark agree:
    days as DATEDIFF, months and years from EXTRACT."""
    if unit == "day":
        return exp.DateDiff(this=end, expression=start)

    def part(name, d):
        return exp.Extract(this=exp.var(name), expression=d.copy())

    if unit == "year":
        return exp.Sub(this=part("YEAR", end), expression=part("YEAR", start))
    twelve = exp.Literal.number(12)
    months = [exp.Add(this=exp.Mul(this=part("YEAR", d), expression=twelve.copy()), expression=part("MONTH", d))
              for d in (end, start)]
    return exp.Sub(this=exp.Paren(this=months[0]), expression=exp.Paren(this=months[1]))


def _exact(plan: Plan, node: exp.Expression) -> bool:
    """Whether a (validated) measure expression can be computed exactly in BIGINT."""
    v = _Validator("", {}, 0, 0)
    v.used = dict(plan.columns)
    num = v.measure(node, "aggregate")
    return bool(num and num.exact)


def _source(plan: Plan, dialect: str, tables: Mapping[str, str], optouts: str | None):
    """The ``src`` select of both statements: one row per joined, filtered row with ``pid``, ``rk``, the
    row's magnitude key ``rk2``, the keys ``k0…`` and the measure values ``v0…``."""
    if dialect not in ("duckdb", "spark"):
        raise ValueError(f"unknown dialect {dialect!r}")
    alias_map = {s.alias: f"t{i}" for i, s in enumerate(plan.sources)}
    first = plan.sources[0]
    t0 = alias_map[first.alias]
    person = exp.column(PERSON_ID, table=t0, quoted=True)

    src = exp.select(exp.alias_(person.copy(), "pid", quoted=True),
                     exp.alias_(exp.column(RK, table=t0, quoted=True), "rk", quoted=True),
                     exp.alias_(_row_key_sql(plan, alias_map, t0, dialect), "rk2", quoted=True))
    src = src.from_(exp.alias_(exp.to_table(tables[first.dataset]), t0, table=True, quoted=True), copy=False)
    for source in plan.sources[1:]:
        alias = alias_map[source.alias]
        on = exp.EQ(this=exp.column(PERSON_ID, table=alias_map[source.on], quoted=True),
                    expression=exp.column(PERSON_ID, table=alias, quoted=True))
        src = src.join(exp.alias_(exp.to_table(tables[source.dataset]), alias, table=True, quoted=True), on=on,
                       join_type="LEFT" if source.join == "left" else "INNER", copy=False)
    key_names = [f"k{i}" for i in range(len(plan.keys))]
    for name, key in zip(key_names, plan.keys, strict=False):
        src = src.select(exp.alias_(_key_sql(plan, alias_map, key), name, quoted=True), copy=False)
    measures: dict[str, str] = {}  # measure SQL -> value column
    exact_values: set[str] = set()
    stat_value: dict[int, str] = {}
    for i, stat in enumerate(plan.statistics):
        if stat.measure is None:
            continue
        expression = _rewrite(plan, alias_map, stat.measure, "bigint" if stat.exact else "double")
        text = expression.sql("duckdb")
        if text not in measures:
            measures[text] = f"v{len(measures)}"
            src = src.select(exp.alias_(expression, measures[text], quoted=True), copy=False)
            if stat.exact:
                exact_values.add(measures[text])
        stat_value[i] = measures[text]
    conditions = []
    if plan.where is not None:
        conditions.append(_rewrite(plan, alias_map, plan.where))
    if optouts is not None:
        sub = exp.select("1").from_(exp.alias_(exp.to_table(optouts), "o", table=True, quoted=True)).where(
            exp.EQ(this=exp.column(PERSON_ID, table="o", quoted=True), expression=person.copy()))
        conditions.append(exp.Not(this=exp.Exists(this=sub)))
    if conditions:
        src = src.where(exp.and_(*conditions), copy=False)

    return src, key_names, measures, exact_values, stat_value


def contributions_sql(plan: Plan, *, dialect: Literal["duckdb", "spark"], tables: Mapping[str, str],
                      optouts: str | None) -> str:
    """ONE statement computing the populated cells of the plan's grid from per-person contributions.

    Columns: ``k0..k{n-1}`` (key labels), ``n_persons``, ``ckey`` (Σ _rk mod 256 over contributors),
    ``ckey2`` (Σ of the rows' keys mod 2^32, see ``_row_key_sql``), ``n_rows``, ``rows_max``, and for each statistic i (its index in
    ``plan.statistics``) with a measure: ``m{i}_n`` (non-null rows), ``m{i}_persons``, ``m{i}_ckey``,
    ``m{i}_ckey2`` (the measure's own contributors — persons with a non-null value — and their cell keys,
    DESIGN §6), ``m{i}_sum``, ``m{i}_sumsq``, ``m{i}_top1``, ``m{i}_top2`` (largest |per-person sum|),
    ``m{i}_sqtop1`` (largest per-person sum of squares). Sums are 0 (not NULL) when no value is present.
    """
    src, key_names, measures, exact_values, stat_value = _source(plan, dialect, tables, optouts)
    q = lambda name: exp.column(name, quoted=True)  # noqa: E731
    two32 = exp.Literal.number(2**32)
    pp = exp.select(*(q(k) for k in key_names), q("pid"),
                    exp.alias_(exp.Min(this=q("rk")), "rk", quoted=True),
                    exp.alias_(exp.Mod(this=exp.Sum(this=q("rk2")), expression=two32.copy()), "rk2", quoted=True),
                    exp.alias_(exp.Count(this=exp.Star()), "r", quoted=True))
    def wide(node, value):
        # Spark sums BIGINT into BIGINT (and overflows); DuckDB sums it into HUGEINT. An exact measure's
        # values and squares fit in BIGINT (|v| <= 2^31 - 1); their sums are made DECIMAL(38, 0) in Spark.
        if dialect == "spark" and value in exact_values:
            return exp.cast(node, exp.DataType.build("DECIMAL(38, 0)"))
        return node

    for value in measures.values():
        square = exp.Mul(this=q(value), expression=q(value))
        pp = pp.select(exp.alias_(exp.Count(this=q(value)), f"{value}_n", quoted=True),
                       exp.alias_(exp.Sum(this=wide(q(value), value)), f"{value}_s", quoted=True),
                       exp.alias_(exp.Sum(this=wide(square, value)), f"{value}_q", quoted=True),
                       exp.alias_(exp.Mod(this=exp.Sum(this=exp.Case(ifs=[exp.If(
                           this=exp.Not(this=exp.Is(this=q(value), expression=exp.Null())), true=q("rk2"))])),
                           expression=two32.copy()), f"{value}_k2", quoted=True), copy=False)
    pp = pp.from_("src", copy=False)
    if key_names:
        pp = pp.where(exp.and_(*(exp.Not(this=exp.Is(this=q(k), expression=exp.Null())) for k in key_names)), copy=False)
    pp = pp.group_by(*(q(k) for k in key_names), q("pid"), copy=False)

    def bigint(node):
        return exp.cast(node, "BIGINT")

    out = exp.select(*(q(k) for k in key_names),
                     exp.alias_(bigint(exp.Count(this=exp.Star())), "n_persons", quoted=True),
                     exp.alias_(bigint(exp.Mod(this=exp.Sum(this=q("rk")), expression=exp.Literal.number(256))),
                                "ckey", quoted=True),
                     exp.alias_(bigint(exp.Mod(this=exp.Sum(this=q("rk2")), expression=exp.Literal.number(2**32))),
                                "ckey2", quoted=True),
                     exp.alias_(bigint(exp.Sum(this=q("r"))), "n_rows", quoted=True),
                     exp.alias_(bigint(exp.Max(this=q("r"))), "rows_max", quoted=True))
    for i, value in stat_value.items():
        zero = exp.Literal.number(0)
        abs_s = exp.Abs(this=q(f"{value}_s"))

        def when_measured(column, value=value):  # the record key of a person with a non-null measure value
            return exp.Case(ifs=[exp.If(this=exp.GT(this=q(f"{value}_n"), expression=exp.Literal.number(0)),
                                        true=q(column))])
        if dialect == "duckdb":
            top = exp.Anonymous(this="max", expressions=[abs_s, exp.Literal.number(2)])
            top1 = exp.Anonymous(this="list_extract", expressions=[top.copy(), exp.Literal.number(1)])
            top2 = exp.Anonymous(this="list_extract", expressions=[top, exp.Literal.number(2)])
        else:
            top = exp.Anonymous(this="sort_array", expressions=[exp.Anonymous(this="collect_list", expressions=[abs_s]),
                                                                 exp.false()])
            top1 = exp.Max(this=abs_s.copy())
            top2 = exp.Anonymous(this="try_element_at", expressions=[top, exp.Literal.number(2)])
        out = out.select(
            exp.alias_(bigint(exp.Sum(this=q(f"{value}_n"))), f"m{i}_n", quoted=True),
            exp.alias_(bigint(exp.Count(this=q(f"{value}_s"))), f"m{i}_persons", quoted=True),
            exp.alias_(bigint(exp.Coalesce(this=exp.Mod(this=exp.Sum(this=when_measured("rk")),
                                                        expression=exp.Literal.number(256)),
                                           expressions=[zero.copy()])), f"m{i}_ckey", quoted=True),
            exp.alias_(bigint(exp.Coalesce(this=exp.Mod(this=exp.Sum(this=q(f"{value}_k2")),
                                                        expression=exp.Literal.number(2**32)),
                                           expressions=[zero.copy()])), f"m{i}_ckey2", quoted=True),
            exp.alias_(exp.Coalesce(this=exp.Sum(this=q(f"{value}_s")), expressions=[zero.copy()]), f"m{i}_sum",
                       quoted=True),
            exp.alias_(exp.Coalesce(this=exp.Sum(this=q(f"{value}_q")), expressions=[zero.copy()]), f"m{i}_sumsq",
                       quoted=True),
            exp.alias_(exp.Coalesce(this=top1, expressions=[zero.copy()]), f"m{i}_top1", quoted=True),
            exp.alias_(exp.Coalesce(this=top2, expressions=[zero.copy()]), f"m{i}_top2", quoted=True),
            exp.alias_(exp.Coalesce(this=exp.Max(this=q(f"{value}_q")), expressions=[zero.copy()]), f"m{i}_sqtop1",
                       quoted=True), copy=False)
    out = out.from_("pp", copy=False)
    if key_names:
        out = out.group_by(*(q(k) for k in key_names), copy=False)
    else:  # the single cell of a query without keys is populated only if someone contributes
        out = out.having(exp.GT(this=exp.Count(this=exp.Star()), expression=exp.Literal.number(0)), copy=False)
    out = out.with_("src", as_=src, copy=False).with_("pp", as_=pp, copy=False)
    return out.sql(dialect=dialect, identify=True, comments=False, unsupported_level=ErrorLevel.RAISE)


def persons_sql(plan: Plan, *, dialect: Literal["duckdb", "spark"], tables: Mapping[str, str],
                optouts: str | None) -> str:
    """The contributors of each populated cell: one row per (cell, person), columns ``k0…`` and ``pid``
    (the ``person_id``), for the differencing ledger. Same rows, filter and opt-outs as
    ``contributions_sql``."""
    src, key_names, *_ = _source(plan, dialect, tables, optouts)
    q = lambda name: exp.column(name, quoted=True)  # noqa: E731
    out = exp.select(*(q(k) for k in key_names), q("pid")).distinct().from_("src")
    if key_names:
        out = out.where(exp.and_(*(exp.Not(this=exp.Is(this=q(k), expression=exp.Null())) for k in key_names)))
    out = out.with_("src", as_=src)
    return out.sql(dialect=dialect, identify=True, comments=False, unsupported_level=ErrorLevel.RAISE)


def _row_key_sql(plan: Plan, alias_map, t0: str, dialect: str) -> exp.Expression:
    """The row's magnitude key: ``(_rk2 + h) mod 2^32``, ``h`` the first 32 bits of the MD5 of the row's
    stored values as text (every source's, in declared order, ``|``-separated, NULL as the empty text).

    A cell's ``ckey2`` is the sum of its rows' keys, so two cells with the same persons but one row more,
    less or different get unrelated magnitude noise (a sum of per-person keys would give them the same
    noise, and the difference of the two released sums would reveal that row's value). ``_rk2`` is
    secret, so the key cannot be predicted from the row's values. The text of a value is the engine's
    cast to text; for DOUBLE values DuckDB and Spark may write some numbers differently (e.g. ``1e+16``
    and ``1.0E16``), so magnitude noise over float columns may differ between the engines.
    """
    parts = []
    for source in plan.sources:
        alias = alias_map[source.alias]
        for name, _type in source.stored:
            text = exp.cast(exp.column(name, table=alias, quoted=True), "VARCHAR")
            parts.append(exp.Coalesce(this=text, expressions=[exp.Literal.string("")]))
    digest = exp.Substring(this=exp.MD5(this=exp.ConcatWs(expressions=[exp.Literal.string("|"), *parts])
                                        if parts else exp.Literal.string("")),
                           start=exp.Literal.number(1), length=exp.Literal.number(8))
    if dialect == "duckdb":
        h = exp.cast(exp.DPipe(this=exp.Literal.string("0x"), expression=digest), "BIGINT")
    else:
        h = exp.cast(exp.Anonymous(this="conv", expressions=[digest, exp.Literal.number(16), exp.Literal.number(10)]),
                     "BIGINT")
    total = exp.Add(this=exp.cast(exp.column(RK2, table=t0, quoted=True), "BIGINT"), expression=h)
    return exp.Mod(this=exp.Paren(this=total), expression=exp.Literal.number(2**32))


def _key_sql(plan: Plan, alias_map, key: Key) -> exp.Expression:
    if key.kind == "integer":
        return _rewrite(plan, alias_map, key.expression, "bigint")
    if key.kind == "band":
        case = key.expression
        ifs = [exp.If(this=_rewrite(plan, alias_map, i.this), true=i.args["true"].copy())
               for i in case.args["ifs"]]
        default = case.args.get("default")
        return exp.Case(ifs=ifs, default=default.copy() if default is not None else None)
    return _rewrite(plan, alias_map, key.expression)


def datasets_named(sql: str, *, max_bytes: int = 100_000) -> list[str]:
    """The dataset names a query's FROM and JOIN clauses name (lower-case, sorted), for the access
    decision that comes before validation; [] when the text does not parse (``validate`` then names
    every problem)."""
    if not isinstance(sql, str) or len(sql.encode("utf-8", "replace")) > max_bytes:
        return []
    try:
        trees = sqlglot_parse(sql)
    except (SqlglotError, ValueError):
        return []
    return sorted({t.name.lower() for tree in trees if tree is not None for t in tree.find_all(exp.Table) if t.name})


def sqlglot_parse(sql: str):
    dialect = _Dialect()
    return dialect.parser(error_level=ErrorLevel.RAISE).parse(dialect.tokenize(sql), sql)
