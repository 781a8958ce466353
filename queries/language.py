"""The version-2 query language: declared variables, a fixed grid, per-person contributions (DESIGN.md §5).

A pure module (no Django, no I/O). ``validate`` parses a researcher's SQL (PostgreSQL flavour, with
sqlglot) and checks it against the data dictionaries (``environment.dictionary``); it accepts exactly
one ``SELECT`` of keys and aggregates::

    SELECT <key>, …, <aggregate>, …
    FROM <dataset> [AS a] [ [LEFT] JOIN <dataset> [AS b] ON a.person_id = b.person_id | USING (person_id) ]…
    [WHERE <predicate>]
    [GROUP BY <key>, …]

and answers a ``Plan``: the datasets, the keys with their domains (known before the query runs), the
statistics with the per-row bounds of their measure, the filter and the grid. Anything else raises
``LanguageError`` with one ``Problem`` per construct found (rule, message, hint, line, column). The
language is an allow-list over sqlglot's syntax tree: a construct this module does not name is refused,
so a new sqlglot feature cannot widen it by accident.

``contributions_sql`` turns a plan into ONE statement for the engine (DuckDB or Spark SQL, emitted from
one sqlglot tree) whose rows are the populated cells of the grid with everything disclosure control
needs: contributor count, cell keys, row counts, sums, sums of squares and the largest per-person
contributions (``outputs/`` turns them into released, perturbed values).

Decisions (documented in docs/query-language.md):

* **Reading a column** ("clean read"): a measure is clamped to its bounds (``CASE WHEN x < lo THEN lo
  WHEN x > hi THEN hi ELSE x END`` — not ``least/greatest``, which skip NULL); a date outside its
  declared range reads as NULL; a category is read as stored (values outside the domain cannot occur:
  ingestion recodes them to ``other``). The same clean read is used in keys, filters and measures.
* **Keys that are NULL form no cell**: rows whose key is NULL (a NULL category, a NULL or out-of-range
  date, a row matching no band without ``ELSE``) are excluded from the contributions. An integer key is
  clamped like every measure, so it always lies in its domain.
* **Arithmetic** of a measure expression is exact in BIGINT when every leaf is an integer, there is no
  division and every intermediate value lies within ±(2³¹−1) (so a square fits in BIGINT); otherwise every
  leaf is read as DOUBLE. ``/`` is therefore always true division. Nothing can overflow or divide by zero.
* **Opt-outs**: one anti-join (``NOT EXISTS``) on the first dataset's ``person_id``: every joined row
  belongs to the person of a row of the first dataset (joins are inner or left, on ``person_id`` only).
* **Dates of month/year granularity** are compared only with ``>=`` and ``<`` at the first day of a month
  (year): ``=``, ``>``, ``<=``, ``IN`` and ``BETWEEN`` at a month start would tell the 1st from other days.
* **date_diff** has DuckDB's meaning (unit boundaries crossed) and is emitted so that both engines agree:
  ``DATEDIFF`` for days, ``EXTRACT`` arithmetic for months and years (week/quarter are refused).
* **Key labels**: a category's declared value (str, int or bool), ``datetime.date`` for ``date_trunc``,
  ``int`` for ``extract`` and integer keys, ``str`` for bands; the names are lower-case.

Every rule name is a key of ``HINTS`` (what to write instead).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ErrorLevel, ParseError, SqlglotError, TokenError
from sqlglot.tokens import TokenType

from environment.dictionary import PERSON_ID, Column, ColumnType, Dictionary, Granularity, Role, RowsPerPerson

RK, RK2 = "_rk", "_rk2"
INT_SAFE = 2**31 - 1  # every intermediate of an exact (BIGINT) measure expression stays within this
MAX_MAGNITUDE = 1e100  # bound of any measure expression (so sums of squares stay finite)
MAX_INTEGER_KEY = 1000
MAX_DOMAIN = 1_000_000  # a date key with more values is refused before its domain is built  # an integer measure is a key only if its range spans at most this many integers

UNIT_RANK = {"day": 0, "week": 0.5, "month": 1, "quarter": 1.5, "year": 2}
TRUNC_UNITS = ("day", "week", "month", "quarter", "year")
EXTRACT_PARTS = {"year": 2, "quarter": 1.5, "month": 1, "day": 0}  # part -> rank of the finest unit it needs
DIFF_UNITS = ("day", "month", "year")  # week/quarter differ between engines

KeyKind = Literal["category", "date", "integer", "band"]
StatKind = Literal["count_rows", "count_persons", "sum", "avg", "stddev", "variance"]

# Aggregate functions that are refused by name (sqlglot parses many of them as Anonymous functions).
REFUSED_AGGREGATES = frozenset({
    "median", "min", "max", "mode", "quantile", "quantile_cont", "quantile_disc", "percentile_cont",
    "percentile_disc", "approx_quantile", "approx_percentile", "approx_count_distinct", "approx_distinct",
    "approx_top_k", "reservoir_quantile", "list", "array_agg", "string_agg", "group_concat", "listagg",
    "any_value", "first", "last", "first_value", "last_value", "arbitrary", "arg_min", "arg_max", "argmin",
    "argmax", "min_by", "max_by", "arg_min_null", "arg_max_null", "histogram", "bit_and", "bit_or", "bit_xor",
    "bitstring_agg", "bool_and", "bool_or", "every", "count_if", "countif", "product", "entropy", "kurtosis",
    "kurtosis_pop", "skewness", "corr", "covar_pop", "covar_samp", "regr_slope", "regr_intercept", "mad",
    "geomean", "geometric_mean", "fsum", "kahan_sum", "sumkahan", "favg", "sum_no_overflow", "collect_list",
    "collect_set", "stddev_pop", "var_pop", "bitwise_and_agg", "bitwise_or_agg", "bitwise_xor_agg",
    "json_group_array", "json_group_object", "array_agg_distinct", "hll", "approx_median",
})

HINTS = {
    "too_large": "shorten the query",
    "nul_byte": "remove the NUL byte",
    "control_character": "remove control characters (tab and newline are fine)",
    "non_ascii": "use ASCII outside string literals (name columns as the dictionary spells them)",
    "parse_error": "write one SELECT in the PostgreSQL flavour (see docs/query-language.md)",
    "empty": "write one SELECT",
    "multiple_statements": "send one SELECT; nothing may follow ';'",
    "not_select": "write one SELECT … FROM <dataset> … GROUP BY …",
    "set_operation": "send each SELECT as its own query",
    "cte": "write the query without WITH: filter in WHERE, group with keys",
    "distinct": "use GROUP BY keys with an aggregate, e.g. SELECT region, count(*) … GROUP BY region",
    "limit": "remove LIMIT/OFFSET: the whole grid is always released",
    "having": "remove HAVING: every cell of the grid is released (small cells are withheld by the rules)",
    "order_by": "remove ORDER BY: released rows are sorted by key",
    "window": "remove OVER (…): use GROUP BY keys instead",
    "construct_not_allowed": "use only keys, aggregates, WHERE and GROUP BY (see docs/query-language.md)",
    "no_dataset": "add FROM <dataset>",
    "subquery": "write one flat SELECT: filter in WHERE, join datasets on person_id",
    "table_function": "read datasets by name: FROM <dataset>",
    "unknown_dataset": "use one of the datasets named in the message",
    "dataset_not_ready": "wait until the dataset's first version is loaded",
    "date_comparison": "compare a date of month or year granularity with >= and < at the first day of a month "
                       "(or year), or compare date_trunc('month', d) with a date",
    "self_join": "read each dataset once; per-person comparisons across a person's rows are not allowed",
    "duplicate_alias": "give each dataset its own alias",
    "cross_join": "join on the person: JOIN b ON a.person_id = b.person_id (or USING (person_id))",
    "natural_join": "join on the person: JOIN b ON a.person_id = b.person_id (or USING (person_id))",
    "join_kind": "use JOIN (inner) or LEFT JOIN",
    "join_condition": "join only ON a.person_id = b.person_id or USING (person_id)",
    "unknown_column": "use one of the columns named in the message",
    "ambiguous_column": "qualify the column with its dataset's alias (a.column)",
    "person_id": "use person_id only in count(DISTINCT person_id) and in join conditions",
    "star": "use count(*) or name the keys",
    "cast": "remove the cast: columns already have their declared types; write dates as DATE 'YYYY-MM-DD'",
    "function_not_allowed": "use the allowed functions: date_trunc, extract, date_diff and the aggregates",
    "aggregate_not_allowed": "use count(*), count(DISTINCT person_id), sum, avg, stddev or variance",
    "aggregate_case": "move the condition to WHERE, or make it a key (GROUP BY a CASE band) instead of CASE inside the aggregate",
    "aggregate_distinct": "remove DISTINCT: only count(DISTINCT person_id) is allowed",
    "aggregate_constant": "aggregate a measure column (count(*) counts rows)",
    "aggregate_column": "aggregate a measure column; group by category and date columns instead",
    "aggregate_filter": "move the condition to WHERE or make it a key",
    "nested_aggregate": "use one aggregate per output column",
    "count_column": "use count(*) for rows or count(DISTINCT person_id) for persons",
    "division_by_zero": "divide only by a non-zero number",
    "division_by_column": "divide by a non-zero number only; ask for both sums and divide afterwards",
    "date_diff": "write date_diff('day'|'month'|'year', start_date_column, end_date_column)",
    "date_too_fine": "use a unit no finer than the column's granularity",
    "date_literal": "write dates as 'YYYY-MM-DD' or DATE 'YYYY-MM-DD'",
    "date_literal_too_fine": "use the first day of the month (or year) for a column of month (or year) granularity",
    "literal_type": "compare with a literal of the column's type",
    "literal_range": "use a finite number",
    "unknown_value": "use one of the values declared in the dictionary",
    "null_comparison": "use IS NULL or IS NOT NULL",
    "like": "use LIKE 'prefix%' on a text category (no other wildcards)",
    "predicate": "compare a declared column with literals (=, <>, <, >, IN, BETWEEN, LIKE 'prefix%', IS NULL), "
                 "combined with AND, OR and NOT",
    "aggregate_in_where": "filter rows in WHERE with column conditions; aggregates go in the SELECT list",
    "aggregate_arithmetic": "output each aggregate on its own and compute with the released values afterwards",
    "key_not_allowed": "group by a category column, date_trunc/extract of a date, a small-range integer measure, "
                       "or a CASE band of literal comparisons",
    "key_constant": "remove the constant key",
    "key_float": "band the measure: CASE WHEN x < 10 THEN 'low' ELSE 'high' END",
    "key_range_too_wide": "band the measure: CASE WHEN x < 10 THEN 'low' ELSE 'high' END",
    "key_date_bare": "group by date_trunc('month', d) or extract(year FROM d)",
    "band": "write CASE WHEN <predicate> THEN 'label' … [ELSE 'label'] END with text labels",
    "group_by": "use a plain GROUP BY of the keys (no ROLLUP, CUBE, GROUPING SETS or ALL)",
    "group_by_mismatch": "list every key of the SELECT list in GROUP BY (by expression, alias or position), "
                         "and nothing else",
    "no_statistic": "add an aggregate, e.g. count(*)",
    "duplicate_name": "give each output column its own name",
    "grid_too_large": "use fewer keys, coarser date units or bands, or narrow a key with WHERE key IN (…)",
}


# --- the public data -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One rejection: a stable rule name, what is wrong, what to write instead, and where."""

    rule: str
    message: str
    hint: str
    line: int = 1
    column: int = 1

    def __str__(self) -> str:
        return f"rule {self.rule}: {self.message} (line {self.line}, column {self.column}); {self.hint}"


class LanguageError(Exception):
    """The query is not in the language; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))

    def __reduce__(self):
        return (type(self), (self.problems,))

    @property
    def rules(self) -> list[str]:
        return [p.rule for p in self.problems]


@dataclass(frozen=True)
class Key:
    """A grouping key: its output name, kind, domain (released labels, sorted) and qualified expression."""

    name: str
    kind: KeyKind
    domain: tuple
    expression: exp.Expression


@dataclass(frozen=True)
class Statistic:
    """An aggregate: ``measure`` is the qualified measure expression (None for counts); ``bounds`` the
    (lo, hi) of the measure per row after clamping (interval arithmetic); ``exact`` whether the measure
    is computed in BIGINT (all-integer, no division, small) rather than DOUBLE."""

    name: str
    kind: StatKind
    measure: exp.Expression | None = None
    bounds: tuple[float, float] | None = None
    exact: bool = False


@dataclass(frozen=True)
class Source:
    """A dataset read by the query: ``join`` is ``from`` for the first, else ``inner``/``left``; ``on`` is
    the alias of the earlier dataset whose person_id it is joined to."""

    alias: str
    dataset: str
    join: Literal["from", "inner", "left"] = "from"
    on: str | None = None
    # the dataset's stored columns (name, type) in declared order: the content of a row for its row key
    stored: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Plan:
    datasets: tuple[str, ...]
    aliases: tuple[str, ...]
    keys: tuple[Key, ...]
    statistics: tuple[Statistic, ...]
    where: exp.Expression | None
    grid_size: int
    one_row_per_person: bool
    sources: tuple[Source, ...] = ()
    # every column the query reads, as ((alias, column name), Column); used to read it cleanly
    columns: tuple[tuple[tuple[str, str], Column], ...] = ()

    def grid(self) -> Iterator[tuple]:
        """Every combination of the key domains, in key order, each domain in its sorted order."""
        return itertools.product(*(k.domain for k in self.keys))

    def column(self, alias: str, name: str) -> Column:
        return dict(self.columns)[(alias, name)]


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


class _Validator:
    def __init__(self, sql: str, dictionaries: Mapping[str, Dictionary], max_cells: int, max_bytes: int):
        self.text = sql
        self.dictionaries = {name.lower(): d for name, d in dictionaries.items()}
        self.max_cells, self.max_bytes = max_cells, max_bytes
        self.problems: list[Problem] = []
        self.sources: dict[str, Source] = {}
        self.used: dict[tuple[str, str], Column] = {}

    # problems

    def position(self, offset: int) -> tuple[int, int]:
        line_start = self.text.rfind("\n", 0, offset) + 1
        return self.text.count("\n", 0, offset) + 1, offset - line_start + 1

    def node_position(self, node: exp.Expression | None) -> tuple[int, int]:
        if node is None:
            return 1, 1
        starts = [n.meta["start"] for n in node.walk() if "start" in n.meta]
        return self.position(min(starts)) if starts else (1, 1)

    def problem(self, rule: str, message: str, node: exp.Expression | None = None, *, offset: int | None = None,
                hint: str | None = None, where: tuple[int, int] | None = None) -> None:
        line, column = where or (self.position(offset) if offset is not None else self.node_position(node))
        self.problems.append(Problem(rule, message, hint or HINTS[rule], line, column))

    def stop(self, *args, **kwargs):
        self.problem(*args, **kwargs)
        raise _Stop

    # text and parse

    def parse(self) -> exp.Select:
        sql = self.text
        if not isinstance(sql, str):
            self.stop("parse_error", "the query must be text")
        if len(sql.encode("utf-8", "surrogatepass")) > self.max_bytes:
            self.stop("too_large", f"the query is longer than {self.max_bytes} bytes")
        if "\x00" in sql:
            self.stop("nul_byte", "the query contains a NUL byte", offset=sql.index("\x00"))
        control = next((i for i, ch in enumerate(sql) if (ord(ch) < 32 and ch not in "\t\n\r") or 127 <= ord(ch) < 160),
                       None)
        if control is not None:
            self.stop("control_character", f"the query contains control character U+{ord(sql[control]):04X}",
                      offset=control)
        dialect = _Dialect()
        try:
            tokens = dialect.tokenize(sql)
        except (TokenError, SqlglotError, ValueError):
            self.stop("parse_error", "the query could not be read (an unterminated string or comment?)")
        literal_spans = [(t.start, t.end) for t in tokens if t.token_type == TokenType.STRING]
        bad = [i for i, ch in enumerate(sql) if ord(ch) > 127 and not any(a <= i <= b for a, b in literal_spans)]
        if bad:
            self.stop("non_ascii", f"only ASCII characters are accepted outside string literals, found "
                      f"{sql[bad[0]]!r} (U+{ord(sql[bad[0]]):04X})", offset=bad[0])
        semicolons = [t for t in tokens if t.token_type == TokenType.SEMICOLON]
        if semicolons and (len(semicolons) > 1 or tokens[-1] is not semicolons[0]
                           or sql[semicolons[0].end + 1:].strip()):
            self.stop("multiple_statements", "only one statement is allowed (nothing may follow ';')",
                      offset=semicolons[0].start)
        try:
            statements = [s for s in dialect.parser(error_level=ErrorLevel.RAISE).parse(tokens, sql) if s is not None]
        except ParseError as error:
            first = error.errors[0] if error.errors else {}
            where = (first["line"], first["col"]) if first.get("line") else None
            self.stop("parse_error", first.get("description") or "the query could not be parsed", where=where)
        except (SqlglotError, ValueError, RecursionError):
            self.stop("parse_error", "the query could not be parsed")
        if not statements:
            self.stop("empty", "the query is empty")
        tree = statements[0]
        if isinstance(tree, exp.SetOperation):
            self.stop("set_operation", "UNION, INTERSECT and EXCEPT are not allowed", tree)
        if isinstance(tree, exp.Subquery):
            self.stop("subquery", "a parenthesised query is a subquery; subqueries are not allowed", tree)
        if not isinstance(tree, exp.Select):
            self.stop("not_select", f"only a SELECT is allowed, not {tree.key.upper()}", tree)
        return tree

    # the whole query

    def run(self) -> Plan:
        select = self.parse()
        self.shape(select)
        self.read_sources(select)
        self.forbidden_nodes(select)
        if self.problems:
            raise _Stop
        items = list(select.expressions)
        aliases = {i.alias.lower(): i.this for i in items if isinstance(i, exp.Alias)}
        where = select.args["where"].this if select.args.get("where") else None
        qwhere = None
        if where is not None:
            self.no_aggregate(where)
            qwhere = self.qualify(where)
            if qwhere is not None:
                self.predicate(qwhere)
        keys, statistics, key_items = [], [], []
        names: set[str] = set()
        for position, item in enumerate(items, start=1):
            node = item.this if isinstance(item, exp.Alias) else item
            alias = item.alias.lower() if isinstance(item, exp.Alias) else None
            if alias is not None and alias in names:
                self.problem("duplicate_name", f"two output columns are named {alias!r}", item)
            if isinstance(node, exp.Star) or (isinstance(node, exp.Column) and isinstance(node.this, exp.Star)):
                self.problem("star", "SELECT * outputs rows, not a table", item)
                continue
            if self.is_aggregate(node):
                stat = self.statistic(node, alias, position)
                if stat is not None:
                    name = stat.name if alias is not None else _unique(stat.name, names)
                    statistics.append(Statistic(name, stat.kind, stat.measure, stat.bounds, stat.exact))
                    names.add(name)
                continue
            if any(self.is_aggregate(n) for n in node.walk()):
                self.problem("aggregate_arithmetic", f"output column {position} computes with an aggregate; each "
                             "output column must be a key or exactly one aggregate", item)
                continue
            qualified = self.qualify(node)
            if qualified is None:
                continue
            key = self.key(qualified, node, alias, position)
            if key is not None:
                name = key.name if alias is not None else _unique(key.name, names)
                names.add(name)
                keys.append(Key(name, key.kind, key.domain, key.expression))
                key_items.append((position, alias, qualified))
        self.group_by(select, key_items, aliases)
        if not statistics and not self.problems:
            self.problem("no_statistic", "the query outputs no aggregate (a list of values is row-level output)",
                         select)
        if qwhere is not None and keys:
            keys = [self.narrow(k, qwhere) for k in keys]
        grid = math.prod(len(k.domain) for k in keys)
        if grid > self.max_cells:
            described = ", ".join(f"{k.name} ({len(k.domain)})" for k in keys)
            self.problem("grid_too_large", f"the grid has {grid} cells, more than {self.max_cells}: keys {described}",
                         select.args.get("group") or select)
        if self.problems:
            raise _Stop
        srcs = tuple(self.sources.values())
        return Plan(
            datasets=tuple(s.dataset for s in srcs),
            aliases=tuple(s.alias for s in srcs),
            keys=tuple(keys),
            statistics=tuple(statistics),
            where=qwhere,
            grid_size=grid,
            one_row_per_person=all(self.dictionaries[s.dataset].rows_per_person == RowsPerPerson.ONE for s in srcs),
            sources=srcs,
            columns=tuple(sorted(self.used.items())),
        )

    def shape(self, select: exp.Select):
        rules = {"with_": ("cte", "WITH (common table expressions) is not allowed"),
                 "distinct": ("distinct", "SELECT DISTINCT is not allowed"),
                 "limit": ("limit", "LIMIT is not allowed"), "offset": ("limit", "OFFSET is not allowed"),
                 "having": ("having", "HAVING is not allowed"), "order": ("order_by", "ORDER BY is not allowed"),
                 "windows": ("window", "WINDOW is not allowed"), "qualify": ("window", "QUALIFY is not allowed")}
        for arg, value in select.args.items():
            if not value or arg in ("expressions", "from_", "joins", "where", "group", "kind"):
                continue
            rule, message = rules.get(arg, ("construct_not_allowed", f"{arg.rstrip('_').upper()} is not allowed"))
            self.problem(rule, message, value[0] if isinstance(value, list) else value)
        if not select.args.get("from_"):
            self.stop("no_dataset", "the query reads no dataset (FROM …)", select)
        group = select.args.get("group")
        if group and (any(v for k, v in group.args.items() if k != "expressions")
                      or any(isinstance(g, (exp.Rollup, exp.Cube, exp.GroupingSets)) for g in group.expressions)):
            self.problem("group_by", "only a plain GROUP BY of the keys is allowed", group)

    def read_sources(self, select: exp.Select):
        joins = select.args.get("joins") or []
        entries = [(select.args["from_"].this, None)] + [(j.this, j) for j in joins]
        first_alias = None
        for table, join in entries:
            if isinstance(table, (exp.Subquery, exp.Select)) or table.find(exp.Select):
                self.problem("subquery", "subqueries are not allowed in FROM or JOIN", table)
                continue
            if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
                self.problem("table_function", "only dataset names may follow FROM and JOIN", table)
                continue
            extra = [k for k, v in table.args.items() if v and k not in ("this", "alias")]
            if extra:
                self.problem("construct_not_allowed", f"{extra[0].upper()} is not allowed on a dataset", table)
                continue
            alias_node = table.args.get("alias")
            if alias_node is not None and alias_node.columns:
                self.problem("construct_not_allowed", "a dataset alias may not rename columns", table)
            dataset, alias = table.name.lower(), (table.alias or table.name).lower()
            if dataset not in self.dictionaries:
                known = ", ".join(sorted(self.dictionaries)) or "none"
                self.problem("unknown_dataset", f"there is no dataset named {dataset!r}; known: {known}", table)
                continue
            if not self.dictionaries[dataset].complete:
                self.problem("dataset_not_ready", f"dataset {dataset!r} has no complete dictionary yet "
                             "(domains are derived when its first version is loaded)", table)
                continue
            if any(s.dataset == dataset for s in self.sources.values()):
                self.problem("self_join", f"dataset {dataset!r} is read twice", table)
                continue
            if alias in self.sources:
                self.problem("duplicate_alias", f"{alias!r} names two datasets", table)
                continue
            stored = tuple((c.name, c.type.value) for c in self.dictionaries[dataset].stored_columns)
            if join is None:
                self.sources[alias] = Source(alias, dataset, stored=stored)
                first_alias = alias
                continue
            kind = self.join(join, alias, first_alias)
            if kind is not None:
                self.sources[alias] = Source(alias, dataset, kind[0], kind[1], stored=stored)

    def join(self, join: exp.Join, alias: str, first_alias: str | None):
        method, side, kind = (join.args.get(k) or "" for k in ("method", "side", "kind"))
        method, side, kind = method.upper(), side.upper(), kind.upper()
        on, using = join.args.get("on"), join.args.get("using")
        if method == "NATURAL":
            return self.problem("natural_join", "NATURAL JOIN is not allowed", join)
        if kind == "CROSS" or (on is None and not using):
            return self.problem("cross_join", "a join without ON person_id (a comma, CROSS or bare JOIN) pairs "
                                "rows of different persons", join)
        extra = [k for k, v in join.args.items() if v and k not in ("this", "on", "using", "side", "kind", "pivots")]
        if method or extra or side not in ("", "LEFT") or kind not in ("", "INNER", "OUTER") or \
                (kind == "OUTER" and side != "LEFT") or (side == "LEFT" and kind == "INNER"):
            return self.problem("join_kind", f"{' '.join(x for x in (method, side, kind) if x) or 'this'} JOIN is not "
                                "allowed", join)
        result = "left" if side == "LEFT" else "inner"
        if using:
            if [u.name.lower() for u in using] != [PERSON_ID]:
                return self.problem("join_condition", "USING may only name person_id", join)
            return result, first_alias
        cond = on.unnest() if isinstance(on, exp.Paren) else on
        cols = [cond.left, cond.right] if isinstance(cond, exp.EQ) else []
        ok = len(cols) == 2 and all(isinstance(c, exp.Column) and c.name.lower() == PERSON_ID and c.table
                                    and not c.args.get("db") for c in cols)
        tables = {c.table.lower() for c in cols} if ok else set()
        if not ok or len(tables) != 2 or alias not in tables or not (tables - {alias}) <= set(self.sources):
            return self.problem("join_condition", f"the join condition {on.sql('postgres')} is not "
                                "a.person_id = b.person_id between this dataset and an earlier one", on)
        return result, (tables - {alias}).pop()

    def forbidden_nodes(self, select: exp.Select):
        """Constructs refused wherever they appear (subqueries, windows, casts, unknown functions)."""
        roots = list(select.expressions)
        if select.args.get("where"):
            roots.append(select.args["where"].this)
        if select.args.get("group"):
            roots.extend(select.args["group"].expressions)
        for root in roots:
            for node in root.walk():
                if isinstance(node, (exp.Subquery, exp.Select, exp.Exists, exp.SetOperation)):
                    self.problem("subquery", "subqueries are not allowed", node)
                    break
                if isinstance(node, (exp.Window, exp.WindowSpec)):
                    self.problem("window", "window functions (OVER) are not allowed", node)
                    break
                if isinstance(node, exp.WithinGroup):
                    self.problem("aggregate_not_allowed", f"{node.this.sql('postgres')} WITHIN GROUP is not allowed: "
                                 "ordered-set aggregates output one person's value", node)
                    break
                if isinstance(node, exp.Filter):
                    self.problem("aggregate_filter", "FILTER (WHERE …) is not allowed", node)
                    break
                if isinstance(node, (exp.Cast, exp.TryCast)) and not _is_date_literal(node):
                    self.problem("cast", f"the cast {node.sql('postgres')} is not allowed", node)
                    break
                if isinstance(node, exp.Func) and not isinstance(node, exp.Connector) \
                        and not self.allowed_function(node):
                    name = _func_name(node)
                    if self.is_aggregate(node):
                        self.problem("aggregate_not_allowed", f"{name}() is not allowed: it outputs or reveals "
                                     "one person's value", node)
                    else:
                        self.problem("function_not_allowed", f"function {name}() is not allowed", node)
                    break

    def allowed_function(self, node: exp.Func) -> bool:
        if isinstance(node, (exp.Count, exp.Sum, exp.Avg, exp.Stddev, exp.StddevSamp, exp.Variance,
                             exp.TimestampTrunc, exp.DateTrunc, exp.Extract, exp.Case, exp.If, exp.Cast)):
            return True
        if isinstance(node, exp.Anonymous) and node.name.upper() == "DATE_DIFF":
            return True
        return False

    def is_aggregate(self, node: exp.Expression) -> bool:
        if isinstance(node, exp.Anonymous):
            return node.name.lower() in REFUSED_AGGREGATES
        return isinstance(node, (exp.AggFunc, exp.List, exp.WithinGroup))

    def no_aggregate(self, where: exp.Expression):
        for node in where.walk():
            if self.is_aggregate(node):
                self.problem("aggregate_in_where", "aggregates are not allowed in WHERE", node)
                return

    # columns

    def qualify(self, root: exp.Expression) -> exp.Expression | None:
        """A copy of ``root`` with every column qualified by its alias, lower-case; None after a problem."""
        failed = []

        def resolve(node):
            if not isinstance(node, exp.Column):
                return node
            name, table = node.name.lower(), node.table.lower()
            if node.args.get("db") or node.args.get("catalog") or isinstance(node.this, exp.Star):
                self.problem("unknown_column", f"{node.sql('postgres')} is not a column", node)
                failed.append(node)
                return node
            if name == PERSON_ID:
                failed.append(node)
                self.problem("person_id", "person_id may be used only in count(DISTINCT person_id) and joins", node)
                return node
            if table:
                source = self.sources.get(table)
                if source is None:
                    self.problem("unknown_column", f"there is no dataset or alias {table!r}; known: "
                                 f"{', '.join(self.sources)}", node)
                    failed.append(node)
                    return node
                owners = [source]
            else:
                owners = [s for s in self.sources.values() if self.column_of(s, name) is not None]
            if not owners or self.column_of(owners[0], name) is None:
                known = sorted({c.name for s in (owners or self.sources.values())
                                for c in self.dictionaries[s.dataset].stored_columns})
                self.problem("unknown_column", f"there is no column {name!r}; known: {', '.join(known)}", node)
                failed.append(node)
                return node
            if len(owners) > 1:
                self.problem("ambiguous_column", f"{name!r} is in {', '.join(s.alias for s in owners)}", node)
                failed.append(node)
                return node
            self.used[(owners[0].alias, name)] = self.column_of(owners[0], name)
            new = exp.column(name, table=owners[0].alias)
            new.meta.update(node.this.meta if isinstance(node.this, exp.Expression) else {})
            return new

        result = root.copy().transform(resolve, copy=False)
        return None if failed else result

    def column_of(self, source: Source, name: str) -> Column | None:
        """The queryable column ``name`` (case-insensitive) of a source, or None."""
        return next((c for c in self.dictionaries[source.dataset].stored_columns
                     if c.name.lower() == name and c.role != Role.IDENTIFIER), None)

    def col(self, node: exp.Column) -> Column:
        return self.used[(node.table, node.name)]

    # measure expressions

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
        if num is None:
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


# --- helpers -------------------------------------------------------------------------------------


def _func_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    try:
        return node.sql_name().lower()
    except Exception:  # noqa: BLE001 - sqlglot raises plain errors for nameless nodes
        return type(node).__name__.lower()


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


# --- the entry points ----------------------------------------------------------------------------


def validate(sql: str, dictionaries: Mapping[str, Dictionary], *, max_cells: int, max_bytes: int = 100_000) -> Plan:
    """Check ``sql`` against the dictionaries (name → Dictionary of the datasets the project may use).

    Returns the plan; raises LanguageError listing every problem found."""
    validator = _Validator(sql, dictionaries, max_cells, max_bytes)
    try:
        return validator.run()
    except _Stop:
        pass
    except RecursionError:
        validator.problems.append(Problem("parse_error", "the query is nested too deeply", HINTS["parse_error"]))
    problems = list(dict.fromkeys(validator.problems))
    raise LanguageError(problems or [Problem("parse_error", "the query was refused", HINTS["parse_error"])])


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
    for name, key in zip(key_names, plan.keys):
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
