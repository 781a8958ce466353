"""The query language: validate a researcher's SQL and rewrite it for the store (DESIGN.md section 5).

Pure Python, no Django. Input is PostgreSQL-flavoured SQL, parsed with sqlglot; the output is
DuckDB SQL. Validation is an allow-list over sqlglot's syntax tree: a construct this module does not
name is rejected, so a new sqlglot feature cannot widen the language by accident. Every rejection is
a `QueryRejected` naming its rule (docs/query-language.md lists them).

The rewrite wraps every dataset in an anti-join against the opt-out table, adds `n_persons` per
group, and for each sum/avg the per-group top-1, top-2 and total of |per-person contribution|,
which the SDC rules in outputs/ need. Helper statistics come from one per-(group, person)
aggregation, joined back to the researcher's query on the group keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ErrorLevel, ParseError, SqlglotError, TokenError
from sqlglot.tokens import TokenType

READ, WRITE = "postgres", "duckdb"
PERSON = "person_id"
N_PERSONS = "n_persons"
# The last column of the rewritten result: each group's person keys (the first 16 hex digits of
# person_id as UBIGINT) for the differencing check. The runner strips it before storing the result.
PERSON_KEYS = "_tre_person_keys"
INTERNAL_PREFIX = "_tre_"

AGGREGATES: dict[type[exp.Expression], str] = {
    exp.Count: "count",
    exp.Sum: "sum",
    exp.Avg: "avg",
    exp.Stddev: "stddev",
    exp.StddevSamp: "stddev_samp",
    exp.StddevPop: "stddev_pop",
    exp.Variance: "variance",
    exp.VariancePop: "var_pop",
    exp.Median: "median",
}
NUMERIC_ONLY = (exp.Sum, exp.Avg, exp.Stddev, exp.StddevSamp, exp.StddevPop, exp.Variance, exp.VariancePop)

# Every node a scalar expression may contain. Aggregates, Star and Distinct are checked by position.
SCALAR_NODES: frozenset[type[exp.Expression]] = frozenset({
    exp.Column, exp.Identifier, exp.Literal, exp.Boolean, exp.Null, exp.Paren,
    exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.Neg,
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ,
    exp.And, exp.Or, exp.Not, exp.Is, exp.In, exp.Between, exp.Like, exp.ILike, exp.Escape,
    exp.Case, exp.If, exp.Cast, exp.DataType, exp.DataTypeParam, exp.Interval, exp.DPipe,
    exp.Coalesce, exp.Nullif, exp.Greatest, exp.Least,
    exp.Abs, exp.Round, exp.Floor, exp.Ceil, exp.Trunc, exp.Sign, exp.Sqrt, exp.Pow, exp.Ln, exp.Log, exp.Exp,
    exp.Lower, exp.Upper, exp.Left, exp.Right, exp.Substring, exp.StartsWith, exp.Length, exp.Trim,
    exp.Concat, exp.StrPosition,
    exp.TimestampTrunc, exp.DateTrunc, exp.Extract, exp.CurrentDate,
})
UNIT_PARENTS = (exp.Extract, exp.TimestampTrunc, exp.DateTrunc, exp.Interval)
T = exp.DataType.Type
CAST_TYPES = frozenset({
    T.SMALLINT, T.INT, T.BIGINT, T.FLOAT, T.DOUBLE, T.DECIMAL,
    T.TEXT, T.VARCHAR, T.CHAR, T.DATE, T.TIMESTAMP, T.BOOLEAN, T.INTERVAL,
})
JOIN_KINDS = frozenset({("", ""), ("", "INNER"), ("LEFT", ""), ("LEFT", "OUTER")})  # (side, kind)
SELECT_ARGS = frozenset({"expressions", "from_", "joins", "where", "group", "having", "order"})
SELECT_ARG_RULES = {
    "with_": ("cte", "WITH (common table expressions) is not allowed"),
    "distinct": ("select_distinct", "SELECT DISTINCT is not allowed; use GROUP BY with an aggregate"),
    "limit": ("limit", "LIMIT and FETCH are not allowed"),
    "offset": ("limit", "OFFSET is not allowed"),
    "into": ("into", "SELECT … INTO is not allowed"),
    "locks": ("lock", "FOR UPDATE/FOR SHARE is not allowed"),
    "windows": ("window", "window functions are not allowed"),
    "qualify": ("window", "QUALIFY is not allowed"),
}


class QueryRejected(Exception):
    """A query the language does not accept. `rule` is a short machine name."""

    def __init__(self, rule: str, detail: str, position: tuple[int, int] | None = None):
        self.rule = rule
        self.message = f"rule {rule}: {detail}"
        self.position = position
        super().__init__(rule, detail, position)  # the arguments again, so that pickling round-trips

    def __str__(self) -> str:
        if self.position is None:
            return self.message
        return f"{self.message} (line {self.position[0]}, column {self.position[1]})"


@dataclass(frozen=True)
class OutputColumn:
    name: str
    kind: str  # "key" | "count" | "sum" | "avg" | "stat"
    top1: str | None = None
    top2: str | None = None
    total: str | None = None


@dataclass(frozen=True)
class ValidatedQuery:
    sql: str
    datasets: tuple[str, ...]
    columns: tuple[OutputColumn, ...]
    rewritten_sql: str
    persons_sql: str


def referenced_datasets(sql: str, *, max_bytes: int = 100_000) -> list[str]:
    """The dataset names the query reads, lower-case and sorted; used before the access decision."""
    tree = _Query(sql, max_bytes).tree
    ctes = {cte.alias.lower() for cte in tree.find_all(exp.CTE)}
    names = {".".join(p.name.lower() for p in t.parts) for t in tree.find_all(exp.Table)
             if isinstance(t.this, exp.Identifier)}
    return sorted(names - ctes)


def validate_and_rewrite(sql: str, *, schema: Mapping[str, Mapping[str, str]], max_bytes: int = 100_000,
                         optout_table: str = "tre_optouts") -> ValidatedQuery:
    """Validate `sql` against `schema` (dataset -> column -> type) and rewrite it for DuckDB."""
    query = _Query(sql, max_bytes)
    try:
        return _Validator(query, schema, optout_table).run()
    except RecursionError:
        raise QueryRejected("too_complex", "the query is nested too deeply") from None


# --- parsing -------------------------------------------------------------------------------------


class _Query:
    """The text checks and the parse shared by both entry points."""

    def __init__(self, sql: str, max_bytes: int):
        if not isinstance(sql, str):
            raise QueryRejected("parse_error", "the query must be text")
        if len(sql) > max_bytes or len(sql.encode("utf-8", "surrogatepass")) > max_bytes:
            raise QueryRejected("too_large", f"the query is longer than {max_bytes} bytes")
        self.text = sql
        if "\x00" in sql:
            raise QueryRejected("nul_byte", "the query contains a NUL byte", self.position(sql.index("\x00")))
        control = next((i for i, ch in enumerate(sql) if ord(ch) < 32 and ch not in "\t\n\r"), None)
        if control is not None:
            raise QueryRejected("control_character", f"the query contains control character "
                                f"U+{ord(sql[control]):04X}", self.position(control))
        bad = next((i for i, ch in enumerate(sql) if ord(ch) > 127), None)
        if bad is not None:
            raise QueryRejected("non_ascii", f"only ASCII characters are accepted, found {sql[bad]!r} "
                                f"(U+{ord(sql[bad]):04X})", self.position(bad))
        self.tree = self._parse()

    def position(self, offset: int) -> tuple[int, int]:
        line_start = self.text.rfind("\n", 0, offset) + 1
        return self.text.count("\n", 0, offset) + 1, offset - line_start + 1

    def node_position(self, node: exp.Expression | None) -> tuple[int, int] | None:
        starts = [n.meta["start"] for n in node.walk() if "start" in n.meta] if node is not None else []
        return self.position(min(starts)) if starts else None

    def _parse(self) -> exp.Expression:
        dialect = Dialect.get_or_raise(READ)
        try:
            tokens = dialect.tokenize(self.text)
            semicolons = [t for t in tokens if t.token_type == TokenType.SEMICOLON]
            if semicolons and (len(semicolons) > 1 or tokens[-1] is not semicolons[0]
                               or self.text[semicolons[0].end + 1:].strip()):
                raise QueryRejected("multiple_statements", "only one statement is allowed "
                                    "(nothing may follow ';')", self.position(semicolons[0].start))
            statements = [s for s in dialect.parser(error_level=ErrorLevel.RAISE).parse(tokens, self.text)
                          if s is not None]
        except ParseError as error:
            first = error.errors[0] if error.errors else {}
            where = (first["line"], first["col"]) if first.get("line") else None
            raise QueryRejected("parse_error", first.get("description") or "the query could not be parsed",
                                where) from None
        except TokenError:
            raise QueryRejected("parse_error", "the query could not be read "
                                "(unterminated string or comment?)") from None
        except RecursionError:
            raise QueryRejected("too_complex", "the query is nested too deeply") from None
        if not statements:
            raise QueryRejected("empty", "the query is empty")
        tree = statements[0]
        if isinstance(tree, exp.SetOperation):
            raise QueryRejected("set_operation", "UNION, INTERSECT and EXCEPT are not allowed",
                                self.node_position(tree))
        if isinstance(tree, exp.Subquery):
            raise QueryRejected("subquery", "subqueries are not allowed", self.node_position(tree))
        if not isinstance(tree, exp.Select):
            raise QueryRejected("not_select", "only a single SELECT is allowed", self.node_position(tree))
        return tree


# --- validation ----------------------------------------------------------------------------------


@dataclass
class _Source:
    alias: str
    dataset: str
    columns: Mapping[str, str]


@dataclass
class _Item:
    name: str
    expression: exp.Expression  # without its alias
    kind: str
    argument: exp.Expression | None = None  # for sum/avg: the per-row contribution


class _Validator:
    def __init__(self, query: _Query, schema: Mapping[str, Mapping[str, str]], optout_table: str):
        self.query, self.tree = query, query.tree
        self.schema = {ds.lower(): {c.lower(): t.lower() for c, t in cols.items()} for ds, cols in schema.items()}
        self.optout_table = optout_table
        self.sources: dict[str, _Source] = {}

    def reject(self, rule: str, detail: str, node: exp.Expression | None = None):
        raise QueryRejected(rule, detail, self.query.node_position(node))

    def run(self) -> ValidatedQuery:
        select = self.tree
        self.check_shape()
        self.read_sources()
        for node in self.clauses():
            self.check_nodes(node)
        for ident in select.find_all(exp.Identifier):
            ident.set("this", ident.name.lower())
            ident.set("quoted", False)
        self.check_joins()

        aliases = {i.alias.lower(): i.this for i in select.expressions if isinstance(i, exp.Alias)}
        where = select.args["where"].this if select.args.get("where") else None
        if where is not None:
            where = self.qualify(where)
            self.check_persons(where, "WHERE")
            self.no_aggregate(where, "aggregate_in_where", "aggregates are not allowed in WHERE")
        outputs = [self.qualify(i.unalias().unnest()) for i in select.expressions]
        self.check_persons_output(outputs)
        groups = [self.qualify(self.group_key(g, aliases).unnest()) for g in self.group_expressions()]
        for g in groups:
            self.check_persons(g, "GROUP BY")
            self.no_aggregate(g, "group_by", "GROUP BY may not contain an aggregate")
        having = select.args["having"].this if select.args.get("having") else None
        if having is not None:
            having = self.qualify(self.expand_aliases(having, aliases))
            self.check_persons_output([having])
            self.check_having(having, groups)

        items = self.items(select.expressions, outputs, groups)
        order = self.order_by(items)
        columns = self.output_columns(items)
        return ValidatedQuery(
            sql=self.query.text.strip(),
            datasets=tuple(sorted({s.dataset for s in self.sources.values()})),
            columns=columns,
            **_Rewrite(sources=list(self.sources.values()), joins=self.tree.args.get("joins") or [], items=items,
                       columns=columns, groups=groups, where=where, having=having, order=order,
                       optout_table=self.optout_table).build(),
        )

    # shape, tables and joins

    def check_shape(self):
        for arg, value in self.tree.args.items():
            if not value or arg in SELECT_ARGS:
                continue
            default = ("construct_not_allowed", f"{arg.rstrip('_').upper()} is not allowed")
            rule, detail = SELECT_ARG_RULES.get(arg, default)
            self.reject(rule, detail, value[0] if isinstance(value, list) else value)
        if not self.tree.args.get("from_"):
            self.reject("no_dataset", "the query must read a dataset (FROM …)")
        group = self.tree.args.get("group")
        grouping_sets = (exp.Rollup, exp.Cube, exp.GroupingSets)
        if group and (any(v for k, v in group.args.items() if k != "expressions")
                      or any(isinstance(g, grouping_sets) for g in group.expressions)):
            self.reject("group_by", "only plain GROUP BY is allowed (no ALL, ROLLUP, CUBE or GROUPING SETS)", group)

    def read_sources(self):
        tables = [self.tree.args["from_"].this] + [j.this for j in self.tree.args.get("joins") or []]
        for table in tables:
            if isinstance(table, (exp.Subquery, exp.Select, exp.Lateral)):
                self.reject("subquery", "subqueries are not allowed", table)
            if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
                self.reject("table_function", "only dataset names may follow FROM and JOIN", table)
            if table.args.get("db") or table.args.get("catalog"):
                self.reject("schema_qualified", "dataset names may not be qualified with a schema", table)
            extra = [k for k, v in table.args.items() if v and k not in ("this", "alias")]
            if extra:
                self.reject("construct_not_allowed", f"{extra[0].upper()} is not allowed on a dataset", table)
            alias = table.args.get("alias")
            if alias is not None and (not isinstance(alias.this, exp.Identifier) or alias.columns):
                self.reject("construct_not_allowed", "a dataset alias must be a plain name", table)
            dataset, name = table.name.lower(), (table.alias or table.name).lower()
            if dataset not in self.schema:
                self.reject("unknown_dataset", f"there is no dataset named {dataset!r} available", table)
            if name.startswith(INTERNAL_PREFIX) or dataset.startswith(INTERNAL_PREFIX):
                self.reject("reserved_name", f"names starting with {INTERNAL_PREFIX!r} are reserved", table)
            if name in self.sources:
                self.reject("duplicate_alias", f"{name!r} is used twice; give each dataset its own alias", table)
            self.sources[name] = _Source(name, dataset, self.schema[dataset])

    def check_joins(self):
        seen = [next(iter(self.sources))]
        for join, alias in zip(self.tree.args.get("joins") or [], list(self.sources)[1:], strict=False):
            extra = [k for k, v in join.args.items() if v and k not in ("this", "on", "using", "side", "kind")]
            side_kind = ((join.side or "").upper(), (join.kind or "").upper())
            if extra or side_kind not in JOIN_KINDS:
                self.reject("join", "only JOIN (inner) and LEFT JOIN are allowed", join)
            on, using = join.args.get("on"), join.args.get("using")
            if using:
                if [u.name for u in using] != [PERSON]:
                    self.reject("join", "USING may only name person_id", join)
            elif on is None:
                self.reject("join", "datasets must be joined with ON a.person_id = b.person_id "
                            "or USING (person_id)", join)
            elif not _joins_persons(on.unnest(), alias, seen):
                self.reject("join", "a join condition must be a.person_id = b.person_id between the two datasets",
                            on)
            seen.append(alias)

    # node allow-list

    def clauses(self) -> Iterable[exp.Expression]:
        select = self.tree
        yield from select.expressions
        for arg in ("where", "having"):
            if select.args.get(arg):
                yield select.args[arg].this
        yield from self.group_expressions()
        if select.args.get("order"):
            yield from (o.this for o in select.args["order"].expressions)

    def group_expressions(self) -> list[exp.Expression]:
        group = self.tree.args.get("group")
        return list(group.expressions) if group else []

    def check_nodes(self, root: exp.Expression):
        for node in root.walk():
            parent = node.parent
            if node is root and isinstance(node, exp.Alias):
                continue
            if isinstance(node, (exp.Subquery, exp.Select, exp.Exists, exp.SetOperation)):
                self.reject("subquery", "subqueries are not allowed", node)
            if isinstance(node, exp.Window):
                self.reject("window", "window functions (OVER) are not allowed", node)
            if isinstance(node, (exp.Min, exp.Max)):
                self.reject("min_max", "min() and max() reveal individual values", node)
            if isinstance(node, exp.Star) or (isinstance(node, exp.Column) and isinstance(node.this, exp.Star)):
                if not (isinstance(parent, exp.Count) and node.arg_key == "this"):
                    self.reject("star", "* is only allowed inside count(*)", node)
            elif isinstance(node, exp.Distinct):
                if not (isinstance(parent, exp.Count) and len(node.expressions) == 1 and not node.args.get("on")):
                    self.reject("distinct_aggregate", "DISTINCT is only allowed as count(DISTINCT expression)", node)
            elif type(node) in AGGREGATES:
                self.check_aggregate(node)
            elif isinstance(node, exp.Var):
                if not (isinstance(parent, UNIT_PARENTS) and node.arg_key in ("this", "unit")):
                    self.reject("construct_not_allowed", f"{node.name!r} is not allowed here", node)
            elif isinstance(node, exp.DataType):
                if node.this not in CAST_TYPES or (node.expressions and node.this != T.DECIMAL):
                    self.reject("type_not_allowed", f"casting to {node.sql(WRITE)} is not allowed", node)
            elif isinstance(node, exp.Cast) and not isinstance(node.to, exp.DataType):
                self.reject("type_not_allowed", f"casting to {node.to.sql(WRITE)} is not allowed", node)
            elif type(node) not in SCALAR_NODES:
                if isinstance(node, exp.Func):
                    name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
                    self.reject("function_not_allowed", f"function {name.lower()}() is not allowed", node)
                self.reject("construct_not_allowed", f"{_describe(node)} is not allowed", node)

    def check_aggregate(self, node: exp.Expression):
        name = AGGREGATES[type(node)]
        extra = [k for k, v in node.args.items() if v and k not in ("this", "big_int")]
        if extra or node.expressions:
            self.reject("function_not_allowed", f"{name}() takes exactly one argument", node)
        arg = node.this
        if isinstance(arg, exp.Distinct) and not isinstance(node, exp.Count):
            self.reject("distinct_aggregate", f"{name}(DISTINCT …) is not allowed; only count(DISTINCT …)", node)
        inner = arg.expressions[0] if isinstance(arg, exp.Distinct) else arg
        if any(type(n) in AGGREGATES for n in inner.walk()):
            self.reject("nested_aggregate", "aggregates may not be nested", inner)
        if isinstance(node, NUMERIC_ONLY) and isinstance(inner, exp.Column):
            types = {s.columns.get(inner.name.lower()) for s in self.sources.values()
                     if not inner.table or s.alias == inner.table.lower()}
            if types & {"text", "date", "boolean"}:
                self.reject("argument_type", f"{name}() needs a number, {inner.name.lower()} is not one", inner)

    # columns

    def qualify(self, root: exp.Expression) -> exp.Expression:
        def resolve(node):
            if not isinstance(node, exp.Column) or isinstance(node.this, exp.Star):
                return node
            if node.args.get("db") or node.args.get("catalog"):
                self.reject("schema_qualified", f"{node.sql()} names a schema", node)
            name, table = node.name.lower(), node.table.lower()
            if table:
                source = self.sources.get(table)
                if source is None:
                    self.reject("unknown_column", f"there is no dataset or alias named {table!r} in FROM", node)
                if name not in source.columns:
                    self.reject("unknown_column", f"dataset {source.dataset!r} has no column {name!r}", node)
            else:
                owners = [s.alias for s in self.sources.values() if name in s.columns]
                if not owners:
                    self.reject("unknown_column", f"no dataset in FROM has a column {name!r}", node)
                if len(owners) > 1 and name != PERSON:
                    self.reject("ambiguous_column", f"{name!r} is in several datasets; qualify it (alias.{name})", node)
                table = owners[0]
            node.set("table", exp.to_identifier(table))
            return node
        return root.copy().transform(resolve, copy=False)

    def is_input_column(self, node: exp.Expression) -> bool:
        return isinstance(node, exp.Column) and not node.table and any(
            node.name in s.columns for s in self.sources.values())

    def expand_aliases(self, root: exp.Expression, aliases: Mapping[str, exp.Expression]) -> exp.Expression:
        """Replace unqualified names that are not dataset columns by the SELECT expression they alias."""
        def expand(node):
            if isinstance(node, exp.Column) and not node.table and not self.is_input_column(node) \
                    and node.name in aliases:
                return aliases[node.name].copy()
            return node
        return root.copy().transform(expand, copy=False)

    def group_key(self, node: exp.Expression, aliases: Mapping[str, exp.Expression]) -> exp.Expression:
        items = self.tree.expressions
        if isinstance(node, exp.Literal):
            if node.is_string or not node.this.isdigit() or not 1 <= int(node.this) <= len(items):
                self.reject("group_by", f"GROUP BY {node.sql()} is neither a column nor a SELECT position", node)
            return items[int(node.this) - 1].unalias().copy()
        return self.expand_aliases(node, aliases)

    def check_persons(self, root: exp.Expression, clause: str):
        for col in root.find_all(exp.Column):
            if col.name == PERSON:
                self.reject("person_id_use", f"person_id may not be used in {clause}; only count(DISTINCT person_id) "
                            "and join conditions may name it", col)

    def check_persons_output(self, roots: Iterable[exp.Expression]):
        for root in roots:
            for col in root.find_all(exp.Column):
                distinct = col.parent
                counted = isinstance(distinct, exp.Distinct) and isinstance(distinct.parent, exp.Count)
                if col.name == PERSON and not counted:
                    self.reject("person_id_use", "person_id may only be used as count(DISTINCT person_id)", col)

    def no_aggregate(self, root: exp.Expression, rule: str, detail: str):
        found = next((n for n in root.walk() if type(n) in AGGREGATES), None)
        if found is not None:
            self.reject(rule, detail, found)

    def check_having(self, having: exp.Expression, groups: list[exp.Expression]):
        stack = [having]
        while stack:
            node = stack.pop()
            if type(node) in AGGREGATES or any(node == g for g in groups):
                continue
            if isinstance(node, exp.Column):
                self.reject("having", f"{node.sql()} in HAVING must be a GROUP BY key or inside an aggregate", node)
            stack.extend(node.iter_expressions())

    # output

    def items(self, selected: list[exp.Expression], outputs: list[exp.Expression],
              groups: list[exp.Expression]) -> list[_Item]:
        items, taken = [], set()
        explicit = [s.alias.lower() if isinstance(s, exp.Alias) else None for s in selected]
        for alias, original in zip(explicit, selected, strict=False):
            if alias is not None:
                if alias in taken:
                    self.reject("duplicate_name", f"two output columns are named {alias!r}", original)
                if not alias or alias in (PERSON, N_PERSONS) or alias.startswith(INTERNAL_PREFIX):
                    self.reject("reserved_name", f"{alias!r} cannot name an output column", original)
                taken.add(alias)
        for position, (alias, original, expression) in enumerate(zip(explicit, selected, outputs, strict=False), start=1):
            if type(expression) in AGGREGATES:
                kind = {exp.Count: "count", exp.Sum: "sum", exp.Avg: "avg"}.get(type(expression), "stat")
                argument = expression.this if kind in ("sum", "avg") else None
            elif any(type(n) in AGGREGATES for n in expression.walk()):
                self.reject("aggregate_arithmetic", f"output column {position} computes with an aggregate; "
                            "each output column must be a GROUP BY key or exactly one aggregate", original)
            elif any(expression == g for g in groups):
                kind, argument = "key", None
            else:
                self.reject("row_level_output", f"output column {position} ({original.unalias().sql(READ)}) is "
                            "neither a GROUP BY key nor an aggregate", original)
            name = alias or _unique(_default_name(expression, position), taken)
            taken.add(name)
            items.append(_Item(name, expression, kind, argument))
        for g, original in zip(groups, self.group_expressions(), strict=False):
            if not any(i.kind == "key" and i.expression == g for i in items):
                self.reject("group_by_not_selected", f"GROUP BY {original.sql(READ)} must also be an output column",
                            original)
        if all(i.kind == "key" for i in items):
            self.reject("no_aggregate", "the query must output at least one aggregate "
                        "(a list of distinct values is row-level output)", self.tree)
        return items

    def order_by(self, items: list[_Item]) -> list[tuple[str, bool, bool]]:
        """ORDER BY items as (output name, descending, nulls first); defaults to the keys."""
        order = self.tree.args.get("order")
        if not order:
            return [(i.name, False, False) for i in items if i.kind == "key"]
        result = []
        for ordered in order.expressions:
            node, match = ordered.this, None
            self.check_persons_output([node])
            if isinstance(node, exp.Literal) and not node.is_string and node.this.isdigit() \
                    and 1 <= int(node.this) <= len(items):
                match = items[int(node.this) - 1]
            elif isinstance(node, exp.Column) and not node.table and any(i.name == node.name for i in items):
                match = next(i for i in items if i.name == node.name)
            elif not isinstance(node, exp.Literal):
                qualified = self.qualify(node)
                match = next((i for i in items if i.expression == qualified), None)
            if match is None:
                self.reject("order_by", f"ORDER BY {node.sql(READ)} must name an output column", node)
            desc = bool(ordered.args.get("desc"))
            nulls_first = ordered.args.get("nulls_first")
            result.append((match.name, desc, desc if nulls_first is None else bool(nulls_first)))
        return result

    def output_columns(self, items: list[_Item]) -> tuple[OutputColumn, ...]:
        taken = {i.name for i in items} | {N_PERSONS, PERSON}
        columns = []
        for item in items:
            if item.kind in ("sum", "avg"):
                top1, top2, total = (_unique(f"{item.name}_{s}", taken) for s in ("top1", "top2", "total"))
                taken |= {top1, top2, total}
                columns.append(OutputColumn(item.name, item.kind, top1, top2, total))
            else:
                columns.append(OutputColumn(item.name, item.kind))
        return tuple(columns)


def _joins_persons(on: exp.Expression, alias: str, seen: list[str]) -> bool:
    """Is `on` exactly `alias.person_id = other.person_id` for an earlier dataset `other`?"""
    columns = [on.left, on.right] if isinstance(on, exp.EQ) else []
    if not all(isinstance(c, exp.Column) and c.name == PERSON and not c.args.get("db") for c in columns):
        return False
    tables = {c.table for c in columns}
    return len(tables) == 2 and alias in tables and tables - {alias} <= set(seen)


def _default_name(expression: exp.Expression, position: int) -> str:
    if isinstance(expression, exp.Column):
        return expression.name
    if type(expression) not in AGGREGATES:
        return f"column_{position}"
    name, arg = AGGREGATES[type(expression)], expression.this
    if isinstance(arg, exp.Star):
        return name
    if isinstance(arg, exp.Distinct):
        name, arg = f"{name}_distinct", arg.expressions[0]
    return f"{name}_{arg.name}" if isinstance(arg, exp.Column) else name


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken or candidate in (PERSON, N_PERSONS):
        n += 1
        candidate = f"{name}_{n}"
    return candidate


def _describe(node: exp.Expression) -> str:
    names = {exp.Filter: "FILTER (WHERE …)", exp.Placeholder: "a parameter", exp.Parameter: "a parameter",
             exp.Tuple: "a row value", exp.Bracket: "subscripting", exp.Array: "an array", exp.Lateral: "LATERAL",
             exp.WithinGroup: "WITHIN GROUP"}
    return names.get(type(node), type(node).__name__)


# --- rewrite -------------------------------------------------------------------------------------


def _q(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(WRITE)


def _sql(node: exp.Expression) -> str:
    try:
        return node.sql(dialect=WRITE, identify=True, comments=False, unsupported_level=ErrorLevel.RAISE)
    except SqlglotError:
        raise QueryRejected("construct_not_allowed", f"{node.sql(READ)} cannot be run") from None


class _Rewrite:
    """Build the DuckDB statements. Only the researcher's input is restricted: these use CTEs freely.

    _tre_main is the researcher's query over the opt-out-filtered datasets; _tre_pp aggregates per
    (group keys, person); _tre_stats turns that into n_persons and the top-1/top-2/total helpers.
    """

    def __init__(self, *, sources: list[_Source], joins: list[exp.Join], items: list[_Item],
                 columns: tuple[OutputColumn, ...], groups, where, having, order, optout_table: str):
        optout = ".".join(_q(p) for p in optout_table.split("."))
        parts = [f"FROM {_filtered(sources[0], optout)}"]
        for join, source in zip(joins, sources[1:], strict=False):
            side = "LEFT JOIN" if (join.side or "").upper() == "LEFT" else "JOIN"
            on = join.args.get("on")
            parts.append(f"{side} {_filtered(source, optout)} "
                         + (f"ON {_sql(on)}" if on is not None else f"USING ({_q(PERSON)})"))
        if where is not None:
            parts.append(f"WHERE {_sql(where)}")
        self.from_sql = " ".join(parts)
        self.person = f"{_q(sources[0].alias)}.{_q(PERSON)}"
        self.items, self.columns, self.order = items, columns, order
        self.item_sql = [_sql(i.expression) for i in items]
        self.keys = [(_q(i.name), sql) for i, sql in zip(items, self.item_sql, strict=False) if i.kind == "key"]
        self.main = f"SELECT {', '.join(f'{sql} AS {_q(i.name)}' for i, sql in zip(items, self.item_sql, strict=False))} " \
                    f"{self.from_sql}"
        if groups:
            self.main += " GROUP BY " + ", ".join(_sql(g) for g in groups)
        self.having = having is not None
        if self.having:
            self.main += f" HAVING {_sql(having)}"
        self.arguments = [_sql(i.argument) if i.argument is not None else None for i in items]

    def build(self) -> dict[str, str]:
        return {"rewritten_sql": self.rewritten(), "persons_sql": self.persons()}

    def per_person(self, arguments: list[str]) -> str:
        select = [f"{sql} AS {name}" for name, sql in self.keys] + [f"{self.person} AS {_q(PERSON)}"]
        select += [f'sum({a}) AS "_tre_s{n}"' for n, a in enumerate(arguments)]
        group = [sql for _, sql in self.keys] + [self.person]
        return f"SELECT {', '.join(select)} {self.from_sql} GROUP BY {', '.join(group)}"

    def key_match(self, left: str, right: str) -> str:
        return " AND ".join(f'"{left}".{name} IS NOT DISTINCT FROM "{right}".{name}' for name, _ in self.keys) \
            or "TRUE"

    def rewritten(self) -> str:
        arguments = list(dict.fromkeys(a for a in self.arguments if a is not None))
        keys = [name for name, _ in self.keys]
        stats = keys + [f"count({_q(PERSON)}) AS {_q(N_PERSONS)}",
                        # person_id is hex (an HMAC); anything else has no key and is left out
                        f"list(TRY_CAST('0x' || left({_q(PERSON)}, 16) AS UBIGINT)) "
                        f"FILTER (WHERE TRY_CAST('0x' || left({_q(PERSON)}, 16) AS UBIGINT) IS NOT NULL) AS \"_tre_pk\""]
        for n in range(len(arguments)):
            stats += [f'max(abs("_tre_s{n}"), 2) AS "_tre_l{n}"', f'sum(abs("_tre_s{n}")) AS "_tre_t{n}"']
        stats_sql = f'SELECT {", ".join(stats)} FROM "_tre_pp"' + (f" GROUP BY {', '.join(keys)}" if keys else "")
        out = [f'"m".{_q(c.name)}' for c in self.columns] + [f'coalesce("s".{_q(N_PERSONS)}, 0) AS {_q(N_PERSONS)}']
        for argument, column in zip(self.arguments, self.columns, strict=False):
            if argument is not None:
                n = arguments.index(argument)
                out += [f'coalesce("s"."_tre_l{n}"[1], 0) AS {_q(column.top1)}',
                        f'coalesce("s"."_tre_l{n}"[2], 0) AS {_q(column.top2)}',
                        f'coalesce("s"."_tre_t{n}", 0) AS {_q(column.total)}']
        out.append(f'coalesce("s"."_tre_pk", []::UBIGINT[]) AS {_q(PERSON_KEYS)}')
        order = ", ".join(f'"m".{_q(name)} {"DESC" if desc else "ASC"} NULLS {"FIRST" if first else "LAST"}'
                          for name, desc, first in self.order)
        return (f'WITH "_tre_main" AS ({self.main}), "_tre_pp" AS ({self.per_person(arguments)}), '
                f'"_tre_stats" AS ({stats_sql}) '
                f'SELECT {", ".join(out)} FROM "_tre_main" AS "m" LEFT JOIN "_tre_stats" AS "s" '
                f"ON {self.key_match('m', 's')}" + (f" ORDER BY {order}" if order else ""))

    def persons(self) -> str:
        persons = self.per_person([])
        if not self.having:
            return persons
        return (f'WITH "_tre_main" AS ({self.main}), "_tre_pp" AS ({persons}) '
                f'SELECT "p".* FROM "_tre_pp" AS "p" '
                f'WHERE EXISTS (SELECT 1 FROM "_tre_main" AS "m" WHERE {self.key_match("m", "p")})')


def _filtered(source: _Source, optout: str) -> str:
    """The dataset without opted-out persons, under the alias the query uses."""
    table = _q(source.dataset)
    return (f'(SELECT {table}.* FROM {table} ANTI JOIN {optout} AS "_tre_o" '
            f'ON {table}.{_q(PERSON)} = "_tre_o".{_q(PERSON)}) AS {_q(source.alias)}')
