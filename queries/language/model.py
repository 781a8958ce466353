"""The query language's public data: constants, rule hints, and the Plan a valid query becomes."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from sqlglot import exp

from environment.dictionary import Column

RK, RK2 = "_rk", "_rk2"
INT_SAFE = 2**31 - 1  # every intermediate of an exact (BIGINT) measure expression stays within this
MAX_MAGNITUDE = 1e100  # bound of any measure expression (so sums of squares stay finite)
MIN_FACTOR = 1e-12  # a measure's terms, multiplied out, have coefficients within [1e-12, 1e12] in magnitude
MAX_TERMS = 64  # a measure expression multiplied out has at most this many terms
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
    "aggregate_constant": "aggregate a measure column (count(*) counts rows); an expression that is always the "
                          "same number (x * 0, x - x) is a constant",
    "measure_offset": "add or subtract only expressions of columns: write sum(x) and add c·count(*) yourself",
    "measure_scale": "scale a measure by a factor between 1e-12 and 1e12 (write sum(x) and scale the result "
                     "yourself)",
    "measure_complex": "write a shorter measure expression (at most 64 terms once multiplied out)",
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


