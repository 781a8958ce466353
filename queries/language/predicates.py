"""The validator's predicates: WHERE and band conditions (a mixin of ``_Validator``)."""

from __future__ import annotations

import datetime as dt
import math

from sqlglot import exp

from environment.dictionary import Column, ColumnType, Role

from .helpers import (
    _conjuncts,
    _granularity,
    _is_date_literal,
    _is_literal,
    _label,
    _number,
    _shown,
    _trunc,
)
from .model import (
    Key,
)


class _Predicates:
    """Comparisons of declared columns with literals, and how they narrow key domains."""

    def predicate(self, node: exp.Expression) -> bool:
        """Check a predicate (WHERE or band condition); True when it is in the language."""
        if isinstance(node, exp.Paren):
            return self.predicate(node.this)
        if isinstance(node, (exp.And, exp.Or)):
            left, right = self.predicate(node.this), self.predicate(node.expression)
            return left and right
        if isinstance(node, exp.Not):
            return self.predicate(node.this)
        if isinstance(node, exp.Column):
            column = self.col(node)
            if column.type == ColumnType.BOOLEAN:
                return True
            self.problem("predicate", f"{node.sql()} is not a condition; compare it with a literal", node)
            return False
        if isinstance(node, (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)):
            left, right = node.this, node.expression
            if _is_literal(left) and not _is_literal(right):
                left, right = right, left
            if isinstance(right, exp.Null):
                self.problem("null_comparison", f"{node.sql('postgres')} is never true", node)
                return False
            if not _is_literal(right):
                self.problem("predicate", f"{node.sql('postgres')} does not compare a column with a literal", node)
                return False
            return self.operand_literals(left, [right], node)
        if isinstance(node, exp.In):
            if node.args.get("query") or node.args.get("unnest") or node.args.get("field"):
                self.problem("subquery", "IN (SELECT …) is not allowed", node)
                return False
            values = node.expressions
            if not values or not all(_is_literal(v) and not isinstance(v, exp.Null) for v in values):
                self.problem("predicate", f"{node.sql('postgres')}: IN takes a list of literals", node)
                return False
            return self.operand_literals(node.this, values, node)
        if isinstance(node, exp.Between):
            low, high = node.args.get("low"), node.args.get("high")
            if not (_is_literal(low) and _is_literal(high)) or isinstance(low, exp.Null) or isinstance(high, exp.Null):
                self.problem("predicate", f"{node.sql('postgres')}: BETWEEN takes two literals", node)
                return False
            return self.operand_literals(node.this, [low, high], node, domain=False)
        if isinstance(node, exp.Is):
            if not isinstance(node.expression, exp.Null):
                self.problem("predicate", f"{node.sql('postgres')}: only IS [NOT] NULL is allowed", node)
                return False
            return self.operand(node.this) is not None
        if isinstance(node, exp.Like):
            operand, pattern = node.this, node.expression
            if not (isinstance(operand, exp.Column) and self.col(operand).role == Role.CATEGORY
                    and self.col(operand).type == ColumnType.TEXT):
                self.problem("like", f"{node.sql('postgres')}: LIKE applies to text categories only", node)
                return False
            text = pattern.name if isinstance(pattern, exp.Literal) and pattern.is_string else None
            if text is None or not text.endswith("%") or any(c in text[:-1] for c in "%_\\"):
                self.problem("like", f"{node.sql('postgres')}: the pattern must be 'prefix%'", node)
                return False
            return True
        if isinstance(node, (exp.ILike, exp.Escape, exp.SimilarTo, exp.RegexpLike)):
            self.problem("like", f"{node.sql('postgres')}: only LIKE 'prefix%' is allowed", node)
            return False
        if isinstance(node, (exp.Boolean, exp.Literal, exp.Null)):
            self.problem("predicate", f"{node.sql('postgres')} is a constant condition", node)
            return False
        self.problem("predicate", f"{node.sql('postgres')} is not an allowed condition", node)
        return False

    def operand(self, node: exp.Expression):
        """The kind of a compared operand: a Column, ('extract', part), ('trunc', unit, Column) or _Num."""
        inner = node.unnest() if isinstance(node, exp.Paren) else node
        if isinstance(inner, exp.Column):
            return self.col(inner)
        if isinstance(inner, exp.Extract):
            return ("extract", self.extract_key(inner, inner, None))
        if isinstance(inner, (exp.TimestampTrunc, exp.DateTrunc)):
            return ("trunc", self.trunc_key(inner, inner, None))
        if isinstance(inner, exp.Case):
            self.problem("predicate", "CASE is not allowed in a condition", inner)
            return None
        return self.measure(inner, "predicate")

    def operand_literals(self, left: exp.Expression, literals: list, node: exp.Expression, domain: bool = True) -> bool:
        if not left.find(exp.Column):
            self.problem("predicate", f"{node.sql('postgres')} is a constant condition", node)
            return False
        kind = self.operand(left)
        if kind is None or (isinstance(kind, tuple) and kind[1] is None):
            return False
        ok = True
        for lit in literals:
            if isinstance(kind, Column):
                ok &= self.column_literal(kind, lit, domain and isinstance(node, (exp.EQ, exp.NEQ, exp.In)))
            elif isinstance(kind, tuple) and kind[0] == "extract":
                if _number(lit) is None or isinstance(lit, exp.Literal) and lit.is_string:
                    self.problem("literal_type", f"{lit.sql('postgres')} is not an integer", lit)
                    ok = False
            elif isinstance(kind, tuple):
                unit = kind[1].expression.args["unit"].name.lower()
                ok &= self.date_literal(None, lit, unit)
            elif not (isinstance(lit, exp.Literal) and not lit.is_string) and not isinstance(lit, exp.Neg):
                self.problem("literal_type", f"{lit.sql('postgres')} is not a number", lit)
                ok = False
            elif _number(lit) is None or not math.isfinite(_number(lit)):
                self.problem("literal_range", f"{lit.sql('postgres')} is not a finite number", lit)
                ok = False
        if ok and isinstance(kind, Column) and kind.role == Role.DATE and _granularity(kind).rank > 0:
            column_left = (node.this.unnest() if isinstance(node.this, exp.Paren) else node.this) is left
            if not isinstance(node, (exp.GTE, exp.LT) if column_left else (exp.LTE, exp.GT)):
                self.problem("date_comparison", f"{node.sql('postgres')} can tell days apart within a "
                             f"{_granularity(kind).value}, finer than {kind.name}'s granularity", node)
                return False
        return ok

    def column_literal(self, column: Column, lit: exp.Expression, check_domain: bool) -> bool:
        if column.role == Role.DATE:
            return self.date_literal(column, lit)
        if column.type == ColumnType.BOOLEAN:
            if not isinstance(lit, exp.Boolean):
                self.problem("literal_type", f"{column.name} is true/false, not {lit.sql('postgres')}", lit)
                return False
            value = lit.this
        elif column.type == ColumnType.TEXT:
            if not (isinstance(lit, exp.Literal) and lit.is_string):
                self.problem("literal_type", f"{column.name} is text; write {lit.sql('postgres')} as a quoted string",
                             lit)
                return False
            value = lit.name
        else:
            value = _number(lit)
            if value is None or isinstance(lit, exp.Boolean) or (isinstance(lit, exp.Literal) and lit.is_string):
                self.problem("literal_type", f"{column.name} is a number, not {lit.sql('postgres')}", lit)
                return False
            if not math.isfinite(value):
                self.problem("literal_range", f"{lit.sql('postgres')} is not a finite number", lit)
                return False
        if column.role == Role.CATEGORY and check_domain and value not in column.values:
            self.problem("unknown_value", f"{value!r} is not a value of {column.name}; values: "
                         f"{_shown(column.values)}", lit)
            return False
        return True

    def date_literal(self, column: Column | None, lit: exp.Expression, unit: str | None = None) -> bool:
        text = None
        if isinstance(lit, exp.Literal) and lit.is_string:
            text = lit.name
        elif _is_date_literal(lit):
            text = lit.this.name
        try:
            value = dt.date.fromisoformat(text) if text is not None and len(text) == 10 else None
        except ValueError:
            value = None
        if value is None:
            self.problem("date_literal", f"{lit.sql('postgres')} is not a date 'YYYY-MM-DD'", lit)
            return False
        if unit is not None and _trunc(unit, value) != value:
            self.problem("date_literal_too_fine", f"{text} is not the first day of a {unit}", lit)
            return False
        if column is not None:
            granularity = _granularity(column)
            if (granularity.rank >= 1 and value.day != 1) or (granularity.rank >= 2 and value.month != 1):
                self.problem("date_literal_too_fine", f"{text} is finer than {column.name}'s granularity "
                             f"({granularity.value})", lit)
                return False
        return True

    def narrow(self, key: Key, where: exp.Expression) -> Key:
        """A top-level `key = literal` or `key IN (…)` conjunct narrows the key's domain."""
        domain = list(key.domain)
        for conjunct in _conjuncts(where):
            if isinstance(conjunct, exp.EQ):
                left, right = conjunct.this, conjunct.expression
                if _is_literal(left):
                    left, right = right, left
                operand, literals = left, [right]
            elif isinstance(conjunct, exp.In) and not conjunct.args.get("query"):
                operand, literals = conjunct.this, conjunct.expressions
            else:
                continue
            operand = operand.unnest() if isinstance(operand, exp.Paren) else operand
            if operand != key.expression:
                continue
            values = {_label(key, lit) for lit in literals}
            domain = [v for v in domain if v in values]
            if not domain:
                self.problem("unknown_value", f"no value of the key {key.name} satisfies "
                             f"{conjunct.sql('postgres')}; its domain is {_shown(key.domain)}", conjunct)
                return key
        return Key(key.name, key.kind, tuple(domain), key.expression)
