"""Hostile queries, one per idea: each is refused with the named rule (the first problem reported)."""

import pytest

from queries.language import HINTS, LanguageError, Problem, validate
from tests.queries.language_fixtures import DICTIONARIES, PATIENTS

P, E = "patients", "events"
HOSTILE = [
    # a CASE or expression inside an aggregate that isolates one person
    ("sum(CASE WHEN p.weight = 71.5 THEN 1000 ELSE 0 END)", "SELECT sum(CASE WHEN weight = 71.5 THEN 1000 ELSE 0 END) FROM patients", "aggregate_case"),
    ("avg(CASE …) nested in arithmetic", "SELECT avg(weight + CASE WHEN children = 7 THEN 100 ELSE 0 END) FROM patients", "aggregate_case"),
    ("variance over IF", "SELECT variance(IF(children = 7, weight, 0)) FROM patients", "aggregate_case"),
    ("count(CASE …)", "SELECT count(CASE WHEN weight > 199 THEN 1 END) FROM patients", "count_column"),
    ("count(DISTINCT CASE)", "SELECT count(DISTINCT CASE WHEN weight > 199 THEN person_id END) FROM patients", "count_column"),
    ("sum(1000) constant", "SELECT sum(1000) FROM patients", "aggregate_constant"),
    ("avg of a literal expression", "SELECT avg(1 + 2) FROM patients", "aggregate_constant"),
    ("a constant that names a column", "SELECT sum(weight * 0 + 1) FROM patients", "aggregate_constant"),
    ("multiplied by zero", "SELECT sum(0 * weight) FROM patients", "aggregate_constant"),
    ("cancels to zero", "SELECT sum(weight - weight) FROM patients", "aggregate_constant"),
    ("products cancel", "SELECT sum(weight * income - income * weight) FROM patients", "aggregate_constant"),
    ("scaled then zeroed", "SELECT sum(weight / 1e308 * 0) FROM patients", "aggregate_constant"),
    ("an offset: a second count", "SELECT sum(weight + 1000) FROM patients", "measure_offset"),
    ("an offset of zero", "SELECT sum(weight + 0) FROM patients", "measure_offset"),
    ("a negative offset", "SELECT avg(weight - -3) FROM patients", "measure_offset"),
    ("an offset inside a product", "SELECT sum((weight + 1) * income) FROM patients", "measure_offset"),
    ("literal arithmetic as a factor", "SELECT sum(weight * (1 - 1)) FROM patients", "measure_offset"),
    ("scaled to vanish", "SELECT sum(weight / 1e308) FROM patients", "measure_scale"),
    ("sum of a category", "SELECT sum(stage) FROM patients", "aggregate_column"),
    ("sum of a date", "SELECT sum(birth_date) FROM patients", "aggregate_column"),
    ("sum with a boolean", "SELECT sum(weight * smoker) FROM patients", "aggregate_column"),
    ("sum(DISTINCT x)", "SELECT sum(DISTINCT weight) FROM patients", "aggregate_distinct"),
    ("count(x) of a column", "SELECT count(weight) FROM patients", "count_column"),
    ("count(DISTINCT region)", "SELECT count(DISTINCT region) FROM patients", "count_column"),
    ("sum(sum())", "SELECT sum(sum(weight)) FROM patients", "nested_aggregate"),
    ("aggregate arithmetic", "SELECT sum(weight) / count(*) FROM patients", "aggregate_arithmetic"),
    ("FILTER clause", "SELECT count(*) FILTER (WHERE weight > 199) FROM patients", "aggregate_filter"),
    # aggregates that output or reveal one value
    ("median", "SELECT median(weight) FROM patients", "aggregate_not_allowed"),
    ("min", "SELECT min(weight) FROM patients", "aggregate_not_allowed"),
    ("max", "SELECT region, max(weight) FROM patients GROUP BY region", "aggregate_not_allowed"),
    ("quantile_cont", "SELECT quantile_cont(weight, 0.99) FROM patients", "aggregate_not_allowed"),
    ("percentile_cont", "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY weight) FROM patients", "aggregate_not_allowed"),
    ("mode", "SELECT mode(weight) FROM patients", "aggregate_not_allowed"),
    ("string_agg", "SELECT string_agg(region, ',') FROM patients", "aggregate_not_allowed"),
    ("list", "SELECT list(weight) FROM patients", "aggregate_not_allowed"),
    ("array_agg", "SELECT array_agg(weight) FROM patients", "aggregate_not_allowed"),
    ("any_value", "SELECT any_value(weight) FROM patients", "aggregate_not_allowed"),
    ("first", "SELECT first(weight) FROM patients", "aggregate_not_allowed"),
    ("arg_max", "SELECT arg_max(region, weight) FROM patients", "aggregate_not_allowed"),
    ("histogram", "SELECT histogram(children) FROM patients", "aggregate_not_allowed"),
    ("bit_and", "SELECT bit_and(children) FROM patients", "aggregate_not_allowed"),
    ("bool_or", "SELECT bool_or(smoker) FROM patients", "aggregate_not_allowed"),
    ("approx_count_distinct", "SELECT approx_count_distinct(weight) FROM patients", "aggregate_not_allowed"),
    ("approx_quantile", "SELECT approx_quantile(weight, 0.5) FROM patients", "aggregate_not_allowed"),
    ("stddev_pop", "SELECT stddev_pop(weight) FROM patients", "aggregate_not_allowed"),
    ("product", "SELECT product(children) FROM patients", "aggregate_not_allowed"),
    # clauses that select or order cells by their values
    ("HAVING", "SELECT region, count(*) FROM patients GROUP BY region HAVING count(*) = 1", "having"),
    ("ORDER BY a value", "SELECT region, avg(weight) FROM patients GROUP BY region ORDER BY 2 DESC", "order_by"),
    ("LIMIT", "SELECT region, count(*) FROM patients GROUP BY region LIMIT 1", "limit"),
    ("OFFSET", "SELECT region, count(*) FROM patients GROUP BY region OFFSET 2", "limit"),
    ("SELECT DISTINCT", "SELECT DISTINCT region FROM patients", "distinct"),
    ("no aggregate", "SELECT region FROM patients GROUP BY region", "no_statistic"),
    ("SELECT *", "SELECT * FROM patients", "star"),
    # subqueries in every position, CTEs, set operations, windows
    ("subquery in FROM", "SELECT count(*) FROM (SELECT * FROM patients) s", "subquery"),
    ("subquery in WHERE", "SELECT count(*) FROM patients WHERE weight > (SELECT avg(weight) FROM patients)", "subquery"),
    ("IN subquery", "SELECT count(*) FROM patients WHERE region IN (SELECT code FROM events)", "subquery"),
    ("EXISTS", "SELECT count(*) FROM patients p WHERE EXISTS (SELECT 1 FROM events e WHERE e.cost > 99999)", "subquery"),
    ("scalar subquery in SELECT", "SELECT (SELECT count(*) FROM events), count(*) FROM patients", "subquery"),
    ("subquery in an aggregate", "SELECT sum((SELECT 1)) FROM patients", "subquery"),
    ("subquery in JOIN", "SELECT count(*) FROM patients p JOIN (SELECT * FROM events) e ON p.person_id = e.person_id", "subquery"),
    ("subquery in GROUP BY", "SELECT count(*) FROM patients GROUP BY (SELECT 1)", "subquery"),
    ("parenthesised query", "(SELECT count(*) FROM patients)", "subquery"),
    ("CTE", "WITH t AS (SELECT * FROM patients) SELECT count(*) FROM t", "cte"),
    ("UNION", "SELECT count(*) FROM patients UNION SELECT count(*) FROM events", "set_operation"),
    ("INTERSECT", "SELECT count(*) FROM patients INTERSECT SELECT count(*) FROM events", "set_operation"),
    ("EXCEPT", "SELECT count(*) FROM patients EXCEPT SELECT count(*) FROM events", "set_operation"),
    ("window", "SELECT region, sum(weight) OVER (PARTITION BY region) FROM patients", "window"),
    ("row_number", "SELECT row_number() OVER (), count(*) FROM patients", "window"),
    # casts and functions outside the allow-list (error oracles)
    ("CAST of text", "SELECT count(*) FROM patients WHERE CAST(region AS INT) = 1", "cast"),
    ("::cast in aggregate", "SELECT sum(weight::int) FROM patients", "cast"),
    ("try_cast", "SELECT count(*) FROM patients WHERE TRY_CAST(region AS INT) IS NULL", "cast"),
    ("unknown function", "SELECT count(*) FROM patients WHERE md5(region) = 'x'", "function_not_allowed"),
    ("error() oracle", "SELECT count(*) FROM patients WHERE error('x') IS NULL", "function_not_allowed"),
    ("read_csv table function", "SELECT count(*) FROM read_csv('/etc/passwd')", "table_function"),
    ("coalesce", "SELECT sum(coalesce(weight, 0)) FROM patients", "function_not_allowed"),
    ("abs in aggregate", "SELECT sum(abs(weight - 71.5)) FROM patients", "function_not_allowed"),
    ("power", "SELECT sum(power(weight, 2)) FROM patients", "function_not_allowed"),
    ("division by zero", "SELECT sum(weight / 0) FROM patients", "division_by_zero"),
    ("division by 0.0", "SELECT avg(weight / 0.0) FROM patients", "division_by_zero"),
    ("division by a column", "SELECT sum(weight / children) FROM patients", "division_by_column"),
    ("division in WHERE", "SELECT count(*) FROM patients WHERE 1 / (children - 3) > 0", "division_by_column"),
    ("modulo", "SELECT sum(children % 2) FROM patients", "aggregate_column"),
    # person_id anywhere else
    ("person_id as key", "SELECT person_id, count(*) FROM patients GROUP BY person_id", "person_id"),
    ("person_id in WHERE", "SELECT count(*) FROM patients WHERE person_id = 'abc'", "person_id"),
    ("person_id LIKE", "SELECT count(*) FROM patients WHERE person_id LIKE 'a%'", "person_id"),
    ("sum(person_id)", "SELECT sum(person_id) FROM patients", "person_id"),
    ("nhs_number (identifier)", "SELECT count(*) FROM patients WHERE nhs_number = '9434765919'", "unknown_column"),
    ("dropped column", "SELECT notes, count(*) FROM patients GROUP BY notes", "unknown_column"),
    # joins
    ("self-join", "SELECT count(*) FROM patients a JOIN patients b ON a.person_id = b.person_id", "self_join"),
    ("join on another column", "SELECT count(*) FROM patients p JOIN events e ON p.region = e.code", "join_condition"),
    ("join on person_id and more", "SELECT count(*) FROM patients p JOIN events e ON p.person_id = e.person_id AND e.cost > 1", "join_condition"),
    ("join with inequality", "SELECT count(*) FROM patients p JOIN events e ON p.person_id < e.person_id", "join_condition"),
    ("USING other column", "SELECT count(*) FROM patients p JOIN labs l USING (nhs_number)", "join_condition"),
    ("comma join", "SELECT count(*) FROM patients, events", "cross_join"),
    ("CROSS JOIN", "SELECT count(*) FROM patients CROSS JOIN events", "cross_join"),
    ("NATURAL JOIN", "SELECT count(*) FROM patients NATURAL JOIN events", "natural_join"),
    ("RIGHT JOIN", "SELECT count(*) FROM patients p RIGHT JOIN events e ON p.person_id = e.person_id", "join_kind"),
    ("FULL JOIN", "SELECT count(*) FROM patients p FULL JOIN events e ON p.person_id = e.person_id", "join_kind"),
    ("unknown dataset", "SELECT count(*) FROM secret_table", "unknown_dataset"),
    ("schema-qualified", "SELECT count(*) FROM main.patients", "construct_not_allowed"),
    # dates finer than their granularity
    ("date_trunc day on month granularity", "SELECT date_trunc('day', birth_date), count(*) FROM patients GROUP BY 1", "date_too_fine"),
    ("extract day on month granularity", "SELECT extract(day FROM birth_date), count(*) FROM patients GROUP BY 1", "date_too_fine"),
    ("date_trunc month on year granularity", "SELECT date_trunc('month', lab_year), count(*) FROM labs GROUP BY 1", "date_too_fine"),
    ("date_trunc week on month granularity", "SELECT date_trunc('week', birth_date), count(*) FROM patients GROUP BY 1", "date_too_fine"),
    ("date literal finer than granularity", "SELECT count(*) FROM patients WHERE birth_date = '1990-03-17'", "date_literal_too_fine"),
    ("DATE literal finer than granularity", "SELECT count(*) FROM labs WHERE lab_year >= DATE '2010-06-01'", "date_literal_too_fine"),
    ("date window in BETWEEN", "SELECT count(*) FROM patients WHERE birth_date BETWEEN '1990-03-01' AND '1990-03-02'", "date_literal_too_fine"),
    ("date_diff in days on month granularity", "SELECT avg(date_diff('day', birth_date, birth_date)) FROM patients", "date_too_fine"),
    ("bad date literal", "SELECT count(*) FROM events WHERE event_date > '2020-13-45'", "date_literal"),
    ("bare date key", "SELECT event_date, count(*) FROM events GROUP BY event_date", "key_date_bare"),
    ("date_diff in weeks", "SELECT sum(date_diff('week', event_date, visit_date)) FROM events", "date_diff"),
    ("date_diff of a measure", "SELECT sum(date_diff('day', cost, event_date)) FROM events", "date_diff"),
    # keys that single persons out
    ("integer key with a wide range", "SELECT cost, count(*) FROM events GROUP BY cost", "key_range_too_wide"),
    ("float key", "SELECT weight, count(*) FROM patients GROUP BY weight", "key_float"),
    ("expression key", "SELECT children * 2, count(*) FROM patients GROUP BY 1", "key_not_allowed"),
    ("constant key", "SELECT 'x' AS k, count(*) FROM patients GROUP BY 1", "key_constant"),
    ("GROUP BY a constant", "SELECT count(*) FROM patients GROUP BY 'x'", "key_constant"),
    ("band labelled by a column", "SELECT CASE WHEN weight > 100 THEN region END, count(*) FROM patients GROUP BY 1", "band"),
    ("band of a non-literal comparison", "SELECT CASE WHEN weight > children THEN 'a' END, count(*) FROM patients GROUP BY 1", "predicate"),
    ("simple CASE key", "SELECT CASE region WHEN 'north' THEN 'n' END, count(*) FROM patients GROUP BY 1", "band"),
    ("key not in GROUP BY", "SELECT region, count(*) FROM patients", "group_by_mismatch"),
    ("GROUP BY a hidden key", "SELECT count(*) FROM patients GROUP BY region", "group_by_mismatch"),
    ("ROLLUP", "SELECT region, count(*) FROM patients GROUP BY ROLLUP (region)", "group_by"),
    ("grid too large", "SELECT e.code, date_trunc('day', e.event_date), p.region, count(*) FROM patients p JOIN events e USING (person_id) GROUP BY 1, 2, 3", "grid_too_large"),
    # predicates outside the language
    ("column compared with column", "SELECT count(*) FROM patients WHERE weight > children", "predicate"),
    ("LIKE with a middle wildcard", "SELECT count(*) FROM events WHERE code LIKE 'C_0%'", "like"),
    ("LIKE suffix", "SELECT count(*) FROM events WHERE code LIKE '%0'", "like"),
    ("ILIKE", "SELECT count(*) FROM events WHERE code ILIKE 'c%'", "like"),
    ("LIKE on a measure", "SELECT count(*) FROM events WHERE cost LIKE '1%'", "like"),
    ("= NULL", "SELECT count(*) FROM patients WHERE region = NULL", "null_comparison"),
    ("text vs number", "SELECT count(*) FROM patients WHERE region = 1", "literal_type"),
    ("number vs text", "SELECT count(*) FROM patients WHERE weight > 'heavy'", "literal_type"),
    ("unknown category value", "SELECT count(*) FROM patients WHERE region = 'atlantis'", "unknown_value"),
    ("aggregate in WHERE", "SELECT count(*) FROM patients WHERE count(*) > 1", "aggregate_in_where"),
    ("constant condition", "SELECT count(*) FROM patients WHERE 1 = 1", "predicate"),
    ("CASE in WHERE", "SELECT count(*) FROM patients WHERE CASE WHEN weight > 100 THEN 1 ELSE 0 END = 1", "predicate"),
    ("regexp", "SELECT count(*) FROM events WHERE regexp_matches(code, 'C.*')", "function_not_allowed"),
    ("IS DISTINCT FROM", "SELECT count(*) FROM patients WHERE region IS DISTINCT FROM 'north'", "predicate"),
    # the text itself
    ("multiple statements", "SELECT count(*) FROM patients; SELECT count(*) FROM events", "multiple_statements"),
    ("comment hiding a second statement", "SELECT count(*) FROM patients -- x\n; DROP TABLE patients", "multiple_statements"),
    ("unterminated comment", "SELECT count(*) FROM patients /* SELECT", "parse_error"),
    ("non-ASCII identifier", "SELECT count(*) FROM patients WHERE r\u00e9gion = 'north'", "non_ascii"),
    ("non-ASCII quoted identifier", 'SELECT count(*) FROM patients WHERE "r\u00e9gion" = \'north\'', "non_ascii"),
    ("homoglyph in a keyword", "SELECT count(*) FR\u041eM patients", "non_ascii"),
    ("non-ASCII in a comment", "SELECT count(*) FROM patients -- \u00e9", "non_ascii"),
    ("NUL byte", "SELECT count(*) FROM patients\x00", "nul_byte"),
    ("control character", "SELECT count(*)\x1b FROM patients", "control_character"),
    ("unparseable", "SELECT count(* FROM patients", "parse_error"),
    ("not a SELECT", "DELETE FROM patients", "not_select"),
    ("COPY", "COPY patients TO '/tmp/x.csv'", "not_select"),
    ("empty", "   ", "empty"),
    ("no FROM", "SELECT count(*)", "no_dataset"),
    ("too large", "SELECT count(*) FROM patients WHERE " + " OR ".join(["region = 'north'"] * 8000), "too_large"),
    ("literal overflow", "SELECT sum(weight * 1e400) FROM patients", "literal_range"),
    ("duplicate names", "SELECT count(*) AS n, avg(weight) AS n FROM patients", "duplicate_name"),
]


@pytest.mark.parametrize("sql,rule", [(sql, rule) for _, sql, rule in HOSTILE], ids=[i for i, _, _ in HOSTILE])
def test_hostile_query_refused_with_rule(sql, rule):
    with pytest.raises(LanguageError) as error:
        validate(sql, DICTIONARIES, max_cells=10_000)
    problems = error.value.problems
    assert problems and all(isinstance(p, Problem) for p in problems)
    assert problems[0].rule == rule, [str(p) for p in problems]
    for p in problems:
        assert p.rule in HINTS and p.hint and p.message and p.line >= 1 and p.column >= 1


def test_corpus_size():
    assert len(HOSTILE) >= 60
    assert len({sql for _, sql, _ in HOSTILE}) == len(HOSTILE)


def test_all_problems_are_reported_with_positions():
    sql = "SELECT region,\n  median(weight)\nFROM patients\nWHERE person_id = 'x'\nGROUP BY region\nHAVING count(*) > 1\nORDER BY 1"
    with pytest.raises(LanguageError) as error:
        validate(sql, DICTIONARIES, max_cells=100)
    rules = {p.rule: p for p in error.value.problems}
    assert {"having", "order_by", "aggregate_not_allowed"} <= set(rules)
    assert (rules["aggregate_not_allowed"].line, rules["aggregate_not_allowed"].column) == (2, 3)
    assert rules["having"].line == 6 and rules["order_by"].line == 7


def test_several_semantic_problems_at_once():
    sql = "SELECT cost, weight, sum(CASE WHEN cost > 1 THEN 1 END), count(region) FROM patients p JOIN events e USING (person_id) GROUP BY 1, 2"
    with pytest.raises(LanguageError) as error:
        validate(sql, DICTIONARIES, max_cells=100)
    assert error.value.rules == ["key_range_too_wide", "key_float", "aggregate_case", "count_column"]


def test_unknown_names_list_the_known_ones():
    with pytest.raises(LanguageError) as error:
        validate("SELECT count(*) FROM patient", DICTIONARIES, max_cells=100)
    assert "events, labs, patients" in error.value.problems[0].message
    with pytest.raises(LanguageError) as error:
        validate("SELECT regio, count(*) FROM patients GROUP BY 1", DICTIONARIES, max_cells=100)
    message = error.value.problems[0].message
    assert "region" in message and "weight" in message and "nhs_number" not in message and "notes" not in message


def test_grid_too_large_names_size_and_keys():
    with pytest.raises(LanguageError) as error:
        validate("SELECT region, children, count(*) FROM patients GROUP BY 1, 2", DICTIONARIES, max_cells=64)
    (problem,) = error.value.problems
    assert problem.rule == "grid_too_large" and "65" in problem.message and "region (5)" in problem.message
    assert validate("SELECT region, children, count(*) FROM patients GROUP BY 1, 2", DICTIONARIES,
                    max_cells=65).grid_size == 65


def test_unicode_string_literals_are_accepted():
    from environment.dictionary import Column, ColumnType, Dictionary, Role
    towns = Dictionary("towns", (Column("nhs_number", ColumnType.TEXT, Role.IDENTIFIER),
                                 Column("town", ColumnType.TEXT, Role.CATEGORY, values=("Z\u00fcrich", "Li\u00e8ge"))))
    plan = validate("SELECT town, count(*) FROM towns WHERE town IN ('Z\u00fcrich', 'Li\u00e8ge') GROUP BY town",
                    {"towns": towns}, max_cells=10)
    assert plan.keys[0].domain == ("Li\u00e8ge", "Z\u00fcrich")


def test_error_pickles():
    import pickle
    with pytest.raises(LanguageError) as error:
        validate("SELECT median(weight) FROM patients", DICTIONARIES, max_cells=10)
    again = pickle.loads(pickle.dumps(error.value))
    assert again.problems == error.value.problems


MORE_HOSTILE = [
    ("day 1 test on month granularity", "SELECT count(*) FROM patients WHERE birth_date = '1990-03-01'", "date_comparison"),
    ("> at a month start", "SELECT count(*) FROM patients WHERE birth_date > '1990-03-01'", "date_comparison"),
    ("<= at a month start", "SELECT count(*) FROM patients WHERE birth_date <= '1990-03-01'", "date_comparison"),
    ("IN of month starts", "SELECT count(*) FROM patients WHERE birth_date IN ('1990-03-01')", "date_comparison"),
    ("BETWEEN month starts", "SELECT count(*) FROM patients WHERE birth_date BETWEEN '1990-03-01' AND '1990-04-01'", "date_comparison"),
    ("trunc compared with a mid-unit date", "SELECT count(*) FROM patients WHERE date_trunc('year', birth_date) = '1990-02-01'", "date_literal_too_fine"),
    ("persons of a left-joined dataset", "SELECT count(DISTINCT e.person_id) FROM patients p LEFT JOIN events e USING (person_id)", "count_column"),
]


@pytest.mark.parametrize("sql,rule", [(sql, rule) for _, sql, rule in MORE_HOSTILE], ids=[i for i, _, _ in MORE_HOSTILE])
def test_more_hostile_queries(sql, rule):
    with pytest.raises(LanguageError) as error:
        validate(sql, DICTIONARIES, max_cells=10_000)
    assert error.value.rules[0] == rule, [str(p) for p in error.value.problems]


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM patients WHERE birth_date >= '1990-03-01' AND birth_date < '1991-01-01'",
    "SELECT count(*) FROM patients WHERE '1990-03-01' <= birth_date AND '1991-01-01' > birth_date",
    "SELECT count(*) FROM patients WHERE date_trunc('month', birth_date) IN ('1990-03-01', '1990-04-01')",
    "SELECT count(*) FROM events WHERE event_date = '2020-03-17'",
    "SELECT count(DISTINCT p.person_id), count(DISTINCT e.person_id) FROM patients p JOIN events e USING (person_id)",
])
def test_aligned_date_comparisons_and_person_counts_are_accepted(sql):
    validate(sql, DICTIONARIES, max_cells=10)


def test_incomplete_dictionary_is_not_queryable():
    from dataclasses import replace
    incomplete = PATIENTS.with_column(replace(PATIENTS.column("weight"), min=None, max=None))
    with pytest.raises(LanguageError) as error:
        validate("SELECT count(*) FROM patients", {"patients": incomplete}, max_cells=10)
    assert error.value.rules == ["dataset_not_ready"]


def test_default_names_are_unique_and_aliases_kept():
    plan = validate("SELECT region AS count, count(*), sum(weight), sum(weight) FROM patients GROUP BY 1",
                    DICTIONARIES, max_cells=10)
    assert [k.name for k in plan.keys] == ["count"]
    assert [s.name for s in plan.statistics] == ["count_2", "sum_weight", "sum_weight_2"]


def test_narrowing_a_key_to_nothing_is_refused():
    with pytest.raises(LanguageError) as error:
        validate("SELECT children, count(*) FROM patients WHERE children = 2.5 GROUP BY children", DICTIONARIES,
                 max_cells=100)
    assert error.value.rules == ["unknown_value"] and "0, 1, 2" in error.value.problems[0].message


def test_huge_date_domains_are_refused_before_they_are_built():
    import datetime as dt
    from dataclasses import replace

    from tests.queries.language_fixtures import EVENTS
    wide = EVENTS.with_column(replace(EVENTS.column("event_date"), min=dt.date(1, 1, 1), max=dt.date(9999, 12, 31)))
    with pytest.raises(LanguageError) as error:
        validate("SELECT date_trunc('day', event_date), count(*) FROM events GROUP BY 1", {"events": wide},
                 max_cells=10**9)
    assert error.value.rules == ["grid_too_large"]
    weeks = validate("SELECT date_trunc('week', event_date), count(*) FROM events GROUP BY 1", {"events": wide},
                     max_cells=10**9)
    assert weeks.grid_size == len(weeks.keys[0].domain) == 521_723
    plan = validate("SELECT date_trunc('month', event_date), count(*) FROM events GROUP BY 1", {"events": wide},
                    max_cells=10**9)
    assert plan.grid_size == 9999 * 12 and plan.keys[0].domain[-1] == dt.date(9999, 12, 1)
    plan = validate("SELECT date_trunc('week', event_date), count(*) FROM events GROUP BY 1", DICTIONARIES,
                    max_cells=10**9)
    assert plan.keys[0].domain[0] == dt.date(2014, 12, 29) and plan.grid_size == len(plan.keys[0].domain)


@pytest.mark.parametrize("sql", [
    "SELECT sum(weight * 2), sum(-weight), sum(weight / 4), sum((2 * 3) * weight) FROM patients",
    "SELECT sum(weight + income), sum(weight - children), variance(income * income), avg(-weight * 0.5) FROM patients",
    "SELECT sum(date_diff('day', event_date, visit_date)) FROM events",
])
def test_measures_scaled_by_literals_and_combined_from_columns_are_accepted(sql):
    validate(sql, DICTIONARIES, max_cells=10)


@pytest.mark.parametrize("measure", ["date_diff('day', event_date, event_date)",
                                     "date_diff('day', event_date, visit_date) + date_diff('day', visit_date, event_date)"])
def test_date_differences_that_cancel_are_constants(measure):
    with pytest.raises(LanguageError) as error:
        validate(f"SELECT sum({measure}) FROM events", DICTIONARIES, max_cells=10)
    assert error.value.rules == ["aggregate_constant"]
