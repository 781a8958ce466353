"""The validator: one pass over the parsed statement collecting every problem."""

from __future__ import annotations

import math
from collections.abc import Mapping

from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, SqlglotError, TokenError
from sqlglot.tokens import TokenType

from environment.dictionary import PERSON_ID, Column, Dictionary, Role, RowsPerPerson

from .helpers import (
    _Dialect,
    _func_name,
    _is_date_literal,
    _Stop,
    _unique,
)
from .model import (
    HINTS,
    REFUSED_AGGREGATES,
    Key,
    LanguageError,
    Plan,
    Problem,
    Source,
    Statistic,
)
from .predicates import _Predicates
from .terms import _Terms


class _Validator(_Terms, _Predicates):
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


