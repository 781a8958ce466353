"""The validator's keys, statistics and measure expressions (a mixin of ``_Validator``)."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

from sqlglot import exp

from environment.dictionary import PERSON_ID, Column, ColumnType, Role

from .helpers import (
    _diff,
    _drop_zeros,
    _extract_domain,
    _func_name,
    _granularity,
    _Num,
    _number,
    _sorted,
    _trunc_count,
    _trunc_domain,
)
from .model import (
    DIFF_UNITS,
    EXTRACT_PARTS,
    INT_SAFE,
    MAX_DOMAIN,
    MAX_INTEGER_KEY,
    MAX_MAGNITUDE,
    MAX_TERMS,
    MIN_FACTOR,
    TRUNC_UNITS,
    UNIT_RANK,
    Key,
    Statistic,
)


class _Terms:
    """Keys, statistics and measures: what may be grouped by and what may be aggregated."""

    def measure(self, node: exp.Expression, context: str) -> _Num | None:
        """Bounds of a measure expression (interval arithmetic), or None after a problem."""
        if isinstance(node, exp.Paren):
            return self.measure(node.this, context)
        if isinstance(node, exp.Column):
            column = self.col(node)
            if column.role != Role.MEASURE:
                rule = "aggregate_column" if context == "aggregate" else "predicate"
                self.problem(rule, f"{node.sql()} is a {column.role.value} column, not a measure", node)
                return None
            integer = column.type == ColumnType.INTEGER
            lo, hi = float(column.min), float(column.max)
            return _Num(lo, hi, integer, integer and max(abs(lo), abs(hi)) <= INT_SAFE)
        if isinstance(node, exp.Literal) and not node.is_string:
            value = _number(node)
            if value is None or not math.isfinite(value):
                self.problem("literal_range", f"{node.sql()} is not a finite number", node)
                return None
            integer = isinstance(value, int)
            return _Num(value, value, integer, integer and abs(value) <= INT_SAFE)
        if isinstance(node, exp.Neg):
            inner = self.measure(node.this, context)
            return None if inner is None else _Num(-inner.hi, -inner.lo, inner.integer, inner.safe)
        if isinstance(node, (exp.Add, exp.Sub, exp.Mul, exp.Div)):
            if isinstance(node, exp.Div):
                divisor = node.expression.unnest() if isinstance(node.expression, exp.Paren) else node.expression
                if isinstance(divisor, exp.Neg) and isinstance(divisor.this, exp.Literal):
                    divisor = divisor.this
                if not (isinstance(divisor, exp.Literal) and not divisor.is_string):
                    self.problem("division_by_column", f"{node.sql('postgres')} divides by an expression", node)
                    return None
                if _number(divisor) == 0:
                    self.problem("division_by_zero", f"{node.sql('postgres')} divides by zero", node)
                    return None
            left, right = self.measure(node.this, context), self.measure(node.expression, context)
            if left is None or right is None:
                return None
            if isinstance(node, exp.Add):
                lo, hi = left.lo + right.lo, left.hi + right.hi
            elif isinstance(node, exp.Sub):
                lo, hi = left.lo - right.hi, left.hi - right.lo
            else:
                if isinstance(node, exp.Div):
                    right = _Num(1 / right.lo, 1 / right.lo, False, False)
                products = [left.lo * right.lo, left.lo * right.hi, left.hi * right.lo, left.hi * right.hi]
                lo, hi = min(products), max(products)
            integer = left.integer and right.integer and not isinstance(node, exp.Div)
            safe = left.safe and right.safe and integer and max(abs(lo), abs(hi)) <= INT_SAFE
            if not all(math.isfinite(v) and abs(v) <= MAX_MAGNITUDE for v in (lo, hi)):
                self.problem("literal_range", f"{node.sql('postgres')} can exceed the range of numbers", node)
                return None
            return _Num(lo, hi, integer, safe)
        if isinstance(node, exp.Anonymous) and node.name.upper() == "DATE_DIFF":
            return self.date_diff(node)
        if isinstance(node, exp.Case):
            rule = "aggregate_case" if context == "aggregate" else "predicate"
            self.problem(rule, f"CASE inside {'an aggregate' if context == 'aggregate' else 'a comparison'} "
                         "is not allowed", node)
            return None
        if isinstance(node, exp.Literal) or isinstance(node, (exp.Null, exp.Boolean)):
            self.problem("literal_type", f"{node.sql('postgres')} is not a number", node)
            return None
        self.problem("aggregate_column" if context == "aggregate" else "predicate",
                     f"{node.sql('postgres')} is not a measure expression", node)
        return None

    def measure_form(self, node: exp.Expression, aggregate: exp.Expression) -> bool:
        """The shape rules of a measure expression inside an aggregate (after ``measure`` accepted its
        bounds): a literal may only multiply or divide (by a non-zero number), ``+``/``-`` only join
        sub-expressions that each read a column, and the expression multiplied out (a polynomial in the
        columns, date_diff read as the difference of its dates' unit numbers) must not reduce to a
        constant. A per-row constant in a sum is a second count of the cell with its own noise: sum(x + c)
        − sum(x) and sum(x * 0 + 1) halved the cost of averaging a one-person difference away."""
        before = len(self.problems)
        form = self.polynomial(node)
        if len(self.problems) > before:
            return False
        if form is None or not any(monomial for monomial in form):
            self.problem("aggregate_constant", f"{aggregate.sql('postgres')}: its measure is the same number on "
                         "every row", aggregate)
            return False
        small = [c for c in form.values() if abs(c) < MIN_FACTOR or abs(c) > 1 / MIN_FACTOR]
        if small:
            self.problem("measure_scale", f"{aggregate.sql('postgres')} scales a term by {float(small[0]):g}: in "
                         "floating point a term so scaled can vanish or swamp the others", aggregate)
            return False
        return True

    def polynomial(self, node: exp.Expression) -> dict[tuple, Fraction] | None:
        """``node`` multiplied out: monomial (sorted tuple of atoms) → exact coefficient; zero terms dropped.
        Atoms are qualified measure columns and (unit, date column) for date_diff. None after a problem."""
        if isinstance(node, exp.Paren):
            return self.polynomial(node.this)
        if isinstance(node, exp.Column):
            return {((node.table, node.name),): Fraction(1)}
        if isinstance(node, exp.Literal):
            return _drop_zeros({(): Fraction(_number(node))})
        if isinstance(node, exp.Neg):
            inner = self.polynomial(node.this)
            return None if inner is None else {m: -c for m, c in inner.items()}
        if isinstance(node, exp.Anonymous):                      # date_diff(unit, start, end) = end − start
            unit, start, end = node.expressions
            return _drop_zeros({((unit.name.lower(), end.table, end.name),): Fraction(1),
                                ((unit.name.lower(), start.table, start.name),): Fraction(-1)}
                               if (start.table, start.name) != (end.table, end.name) else {})
        left, right = self.polynomial(node.this), self.polynomial(node.expression)
        if left is None or right is None:
            return None
        if isinstance(node, (exp.Add, exp.Sub)):
            for side, form in ((node.this, left), (node.expression, right)):
                if all(not m for m in form):
                    self.problem("measure_offset", f"{node.sql('postgres')} adds or subtracts a constant "
                                 f"({side.sql('postgres')}): the sum of a constant is a count", side)
                    return None
            sign = 1 if isinstance(node, exp.Add) else -1
            out = dict(left)
            for m, c in right.items():
                out[m] = out.get(m, 0) + sign * c
            return _drop_zeros(out)
        if isinstance(node, exp.Div):                            # measure() allowed only a non-zero literal
            return {m: c / right[()] for m, c in left.items()}
        for side, form in ((node.this, left), (node.expression, right)):
            if not form:
                self.problem("aggregate_constant", f"{node.sql('postgres')} multiplies by {side.sql('postgres')}, "
                             "which is always 0", side)
                return None
        if len(left) * len(right) > MAX_TERMS ** 2:
            self.problem("measure_complex", f"{node.sql('postgres')} has too many terms", node)
            return None
        out = {}
        for (m1, c1), (m2, c2) in itertools.product(left.items(), right.items()):
            m = tuple(sorted(m1 + m2))
            out[m] = out.get(m, 0) + c1 * c2
        out = _drop_zeros(out)
        if len(out) > MAX_TERMS:
            self.problem("measure_complex", f"{node.sql('postgres')} has more than {MAX_TERMS} terms", node)
            return None
        return out

    def date_diff(self, node: exp.Anonymous) -> _Num | None:
        args = node.expressions
        if len(args) != 3 or not (isinstance(args[0], exp.Literal) and args[0].is_string) \
                or args[0].name.lower() not in DIFF_UNITS \
                or not all(isinstance(a, exp.Column) and self.col(a).role == Role.DATE for a in args[1:]):
            self.problem("date_diff", f"{node.sql('postgres')} is not date_diff(unit, date column, date column)", node)
            return None
        unit = args[0].name.lower()
        c1, c2 = self.col(args[1]), self.col(args[2])
        for c, a in ((c1, args[1]), (c2, args[2])):
            if UNIT_RANK[unit] < _granularity(c).rank:
                self.problem("date_too_fine", f"date_diff in {unit}s is finer than {c.name}'s granularity "
                             f"({_granularity(c).value})", a)
                return None
        lo = _diff(unit, c1.max, c2.min)
        hi = _diff(unit, c1.min, c2.max)
        return _Num(lo, hi, True, max(abs(lo), abs(hi)) <= INT_SAFE)

    # aggregates

    def statistic(self, node: exp.Expression, alias: str | None, position: int) -> Statistic | None:
        name = alias
        if isinstance(node, exp.Count):
            arg = node.this
            if isinstance(arg, exp.Star):
                return Statistic(name or "count", "count_rows")
            if isinstance(arg, exp.Distinct):
                inner = arg.expressions
                if len(inner) == 1 and isinstance(inner[0], exp.Column) and inner[0].name.lower() == PERSON_ID \
                        and (not inner[0].table or (inner[0].table.lower() in self.sources
                                                    and self.sources[inner[0].table.lower()].join != "left")):
                    return Statistic(name or "count_persons", "count_persons")
                self.problem("count_column", f"{node.sql('postgres')} counts distinct values of a column", node)
                return None
            self.problem("count_column", f"{node.sql('postgres')} counts a column", node)
            return None
        kinds = {exp.Sum: "sum", exp.Avg: "avg", exp.Stddev: "stddev", exp.StddevSamp: "stddev",
                 exp.Variance: "variance"}
        kind = kinds.get(type(node))
        if kind is None:
            self.problem("aggregate_not_allowed", f"{_func_name(node)}() is not allowed: it outputs or reveals "
                         "one person's value", node)
            return None
        extra = [k for k, v in node.args.items() if v and k != "this"]
        if extra or node.expressions:
            self.problem("aggregate_not_allowed", f"{kind}() takes exactly one argument", node)
            return None
        arg = node.this
        if isinstance(arg, exp.Distinct):
            self.problem("aggregate_distinct", f"{kind}(DISTINCT …) is not allowed", node)
            return None
        for inner in arg.walk():
            if self.is_aggregate(inner) or isinstance(inner, (exp.Count, exp.Sum, exp.Avg, exp.Stddev,
                                                              exp.StddevSamp, exp.Variance)):
                self.problem("nested_aggregate", "aggregates may not be nested", inner)
                return None
        case = arg.find(exp.Case, exp.If)
        if case is not None:
            self.problem("aggregate_case", f"CASE inside {kind}() is not allowed: it can isolate one person", case)
            return None
        if not arg.find(exp.Column):
            self.problem("aggregate_constant", f"{node.sql('postgres')} aggregates a constant", node)
            return None
        qualified = self.qualify(arg)
        if qualified is None:
            return None
        num = self.measure(qualified, "aggregate")
        if num is None or not self.measure_form(qualified, node):
            return None
        default = f"{kind}_{qualified.name}" if isinstance(qualified, exp.Column) else f"{kind}_{position}"
        return Statistic(name or default, kind, qualified, (num.lo, num.hi), num.exact)

    # keys

    def key(self, q: exp.Expression, original: exp.Expression, alias: str | None, position: int) -> Key | None:
        node = q.unnest() if isinstance(q, exp.Paren) else q
        if isinstance(node, exp.Column):
            column = self.col(node)
            if column.role == Role.CATEGORY:
                return Key(alias or column.name, "category", _sorted(column.values), node)
            if column.role == Role.DATE:
                return self.problem("key_date_bare", f"the date column {column.name} is not a key by itself", original)
            if column.type != ColumnType.INTEGER:
                return self.problem("key_float", f"{column.name} is a non-integer measure", original)
            span = int(column.max) - int(column.min) + 1
            if span > MAX_INTEGER_KEY:
                return self.problem("key_range_too_wide", f"{column.name} spans {span} integers, more than "
                                    f"{MAX_INTEGER_KEY}", original)
            return Key(alias or column.name, "integer", tuple(range(int(column.min), int(column.max) + 1)), node)
        if isinstance(node, (exp.TimestampTrunc, exp.DateTrunc)):
            return self.trunc_key(node, original, alias)
        if isinstance(node, exp.Extract):
            return self.extract_key(node, original, alias)
        if isinstance(node, exp.Case):
            return self.band(node, original, alias, position)
        if not node.find(exp.Column):
            return self.problem("key_constant", f"{original.sql('postgres')} is a constant, not a key", original)
        return self.problem("key_not_allowed", f"{original.sql('postgres')} is not an allowed key", original)

    def date_operand(self, node: exp.Expression, original: exp.Expression) -> Column | None:
        if not (isinstance(node, exp.Column) and self.col(node).role == Role.DATE):
            self.problem("key_not_allowed", f"{original.sql('postgres')} does not apply to a date column", original)
            return None
        return self.col(node)

    def trunc_key(self, node: exp.Expression, original: exp.Expression, alias: str | None) -> Key | None:
        unit = node.args.get("unit")
        unit = unit.name.lower() if unit is not None else ""
        if unit not in TRUNC_UNITS:
            return self.problem("key_not_allowed", f"date_trunc unit {unit!r} is not one of {', '.join(TRUNC_UNITS)}",
                                original)
        column = self.date_operand(node.this, original)
        if column is None:
            return None
        if UNIT_RANK[unit] < _granularity(column).rank:
            return self.problem("date_too_fine", f"date_trunc('{unit}', {column.name}) is finer than the column's "
                                f"granularity ({_granularity(column).value})", original)
        size = _trunc_count(unit, column.min, column.max)
        if size > MAX_DOMAIN:
            return self.problem("grid_too_large", f"date_trunc('{unit}', {column.name}) has {size} values, more than "
                                f"{MAX_DOMAIN}", original)
        domain = _trunc_domain(unit, column.min, column.max, MAX_DOMAIN)
        return Key(alias or f"{column.name}_{unit}", "date", domain, node)

    def extract_key(self, node: exp.Extract, original: exp.Expression, alias: str | None) -> Key | None:
        part = node.this.name.lower() if isinstance(node.this, (exp.Var, exp.Literal, exp.Identifier)) else ""
        if part not in EXTRACT_PARTS:
            return self.problem("key_not_allowed", f"extract({part or '?'} FROM …) is not one of "
                                f"{', '.join(EXTRACT_PARTS)}", original)
        column = self.date_operand(node.expression, original)
        if column is None:
            return None
        if EXTRACT_PARTS[part] < _granularity(column).rank:
            return self.problem("date_too_fine", f"extract({part} FROM {column.name}) is finer than the column's "
                                f"granularity ({_granularity(column).value})", original)
        return Key(alias or f"{column.name}_{part}", "date", _extract_domain(part, column), node)

    def band(self, node: exp.Case, original: exp.Expression, alias: str | None, position: int) -> Key | None:
        if node.this is not None:
            return self.problem("band", "CASE <expression> WHEN … is not a band; write CASE WHEN <predicate> …",
                                original)
        labels, ok = [], True
        branches = [(i.this, i.args.get("true")) for i in node.args.get("ifs") or []]
        default = node.args.get("default")
        for condition, label in branches:
            if not self.predicate(condition):
                ok = False
            if not (isinstance(label, exp.Literal) and label.is_string):
                self.problem("band", f"the band label {label.sql('postgres')} is not a text literal", label)
                ok = False
            else:
                labels.append(label.name)
        if default is not None:
            if not (isinstance(default, exp.Literal) and default.is_string):
                self.problem("band", f"the ELSE label {default.sql('postgres')} is not a text literal", default)
                ok = False
            else:
                labels.append(default.name)
        if not ok:
            return None
        return Key(alias or f"band_{position}", "band", tuple(sorted(set(labels))), node)

    def group_by(self, select: exp.Select, key_items: list, aliases: dict):
        """GROUP BY must list exactly the keys of the SELECT list (by expression, output alias or position)."""
        group = select.args.get("group")
        items = select.expressions
        keys = {position: expression for position, _, expression in key_items}
        matched = set()
        for g in list(group.expressions) if group else []:
            if isinstance(g, exp.Literal) and not g.is_string and g.this.isdigit():
                position = int(g.this)
                if not 1 <= position <= len(items):
                    self.problem("group_by_mismatch", f"GROUP BY {position}: there are {len(items)} output columns", g)
                    continue
            elif isinstance(g, exp.Column) and not g.table and g.name.lower() in aliases and \
                    not any(self.column_of(s, g.name.lower()) for s in self.sources.values()):
                position = next(p for p, i in enumerate(items, start=1)
                                if isinstance(i, exp.Alias) and i.alias.lower() == g.name.lower())
            elif not g.find(exp.Column):
                self.problem("key_constant", f"GROUP BY {g.sql('postgres')} is a constant", g)
                continue
            else:
                q = self.qualify(g)
                if q is None:
                    continue  # the problem is recorded
                position = next((p for p, e in keys.items() if e == q), None)
                if position is None:
                    self.problem("group_by_mismatch", f"GROUP BY {g.sql('postgres')} is not a key of the SELECT list",
                                 g)
                    continue
            if position not in keys:
                item = items[position - 1].unalias()
                if self.is_aggregate(item) or isinstance(item, (exp.Count, exp.Sum, exp.Avg, exp.Stddev,
                                                                 exp.StddevSamp, exp.Variance)):
                    self.problem("group_by", f"GROUP BY {g.sql('postgres')} names an aggregate", g)
                continue  # otherwise the item was refused as a key where it is selected
            matched.add(position)
        for position, _, expression in key_items:
            if position not in matched:
                self.problem("group_by_mismatch", f"the key {expression.sql('postgres')} (output column {position}) "
                             "is not in GROUP BY", items[position - 1])

    # predicates

