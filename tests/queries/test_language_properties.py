"""Properties of the version-2 language (hypothesis).

- Generated valid queries over generated data at the edges of every domain (bounds, beyond the bounds,
  NULLs, empty tables, every category value) never make DuckDB raise, and match the Python reference.
- Near-miss hostile mutations of valid queries are refused, with the rule of the mutation.
- No text makes validate() raise anything but LanguageError.
"""

import re

import duckdb
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from queries.language import LanguageError, contributions_sql, validate
from tests.queries.language_fixtures import (
    AGGREGATES,
    DICTIONARIES,
    FROMS,
    KEYS,
    TABLES,
    assert_same,
    build,
    load,
    make_data,
    reference,
    run,
    usable,
)


@st.composite
def queries(draw):
    from_ = draw(st.sampled_from(sorted(FROMS)))
    keys, aggregates, wheres = usable(from_)
    chosen_keys = draw(st.lists(st.sampled_from(keys), max_size=3, unique=True))
    chosen_aggs = draw(st.lists(st.sampled_from(aggregates), min_size=1, max_size=3, unique=True))
    chosen_where = draw(st.lists(st.sampled_from(wheres), max_size=2, unique=True))
    positions = draw(st.booleans())
    return build(from_, chosen_keys, chosen_aggs, chosen_where, positions=positions)


@st.composite
def datasets(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    persons = draw(st.sampled_from([0, 1, 2, 5, 40]))
    edge = draw(st.sampled_from([0.0, 0.5, 1.0]))
    return make_data(seed=seed, persons=persons, edge=edge)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=queries(), data=datasets(), optout=st.booleans())
def test_valid_queries_never_fail_in_the_engine_and_match_python(query, data, optout):
    sql, ref = query
    plan = validate(sql, DICTIONARIES, max_cells=10**12)
    optouts = sorted(data.persons)[:1] if optout else []
    con = load(data, duckdb.connect(), optouts=optouts)
    actual = run(con, contributions_sql(plan, dialect="duckdb", tables=TABLES, optouts="optouts"))
    assert_same(actual, reference(data, optouts=set(optouts), **ref))
    for labels in actual:
        assert all(label in key.domain for label, key in zip(labels, plan.keys, strict=False))


def test_every_edge_value_at_once():
    """All keys and aggregates over a data set made only of edge values and NULLs."""
    data = make_data(seed=11, persons=60, edge=1.0)
    con = load(data)
    for from_ in FROMS:
        keys, aggregates, _ = usable(from_)
        for chunk in range(0, len(keys), 3):
            sql, ref = build(from_, keys[chunk:chunk + 3], aggregates)
            plan = validate(sql, DICTIONARIES, max_cells=10**12)
            actual = run(con, contributions_sql(plan, dialect="duckdb", tables=TABLES, optouts=None))
            assert_same(actual, reference(data, **ref))


# (applies when, mutate, expected rule)
MUTATIONS = [
    ("sum(p.weight)", lambda s: s.replace("sum(p.weight)", "sum(CASE WHEN p.children = 3 THEN p.weight ELSE 0 END)"),
     "aggregate_case"),
    ("avg(", lambda s: s.replace("avg(", "median(", 1), "aggregate_not_allowed"),
    ("sum(", lambda s: s.replace("sum(", "max(", 1), "aggregate_not_allowed"),
    ("count(*)", lambda s: s.replace("count(*)", "count(p.weight)" if "p." in s else "count(e.value)", 1),
     "count_column"),
    ("count(DISTINCT person_id)", lambda s: s.replace("count(DISTINCT person_id)", "count(DISTINCT p.region)"
                                                       if "p." in s else "count(DISTINCT e.code)", 1), "count_column"),
    ("SELECT ", lambda s: s.replace("SELECT ", "SELECT DISTINCT ", 1), "distinct"),
    ("", lambda s: s + " HAVING count(*) > 1", "having"),
    ("", lambda s: s + " ORDER BY 1", "order_by"),
    ("", lambda s: s + " LIMIT 10", "limit"),
    ("", lambda s: s + "; SELECT 1", "multiple_statements"),
    ("", lambda s: "WITH x AS (SELECT 1) " + s, "cte"),
    ("", lambda s: s + " UNION SELECT count(*) FROM patients", "set_operation"),
    ("/ 4", lambda s: s.replace("/ 4", "/ 0"), "division_by_zero"),
    ("/ 4", lambda s: s.replace("/ 4", "/ e.cost"), "division_by_column"),
    ("'year', p.birth_date", lambda s: s.replace("'year', p.birth_date", "'day', p.birth_date"), "date_too_fine"),
    ("'1990-01-01'", lambda s: s.replace("'1990-01-01'", "'1990-01-02'"), "date_literal_too_fine"),
    ("p.region = 'north'", lambda s: s.replace("p.region = 'north'", "p.region = 'nowhere'"), "unknown_value"),
    ("p.region = 'north'", lambda s: s.replace("p.region = 'north'", "p.person_id = 'north'"), "person_id"),
    (" AS region", lambda s: s.replace("p.region AS region", "p.person_id AS region"), "person_id"),
    ("p.person_id = e.person_id", lambda s: s.replace("p.person_id = e.person_id", "p.region = e.code"),
     "join_condition"),
    ("p JOIN events e ON p.person_id = e.person_id",
     lambda s: s.replace("p JOIN events e ON p.person_id = e.person_id", "p NATURAL JOIN events e"), "natural_join"),
    ("patients p", lambda s: s.replace("patients p", "patients p, patients", 1), "self_join"),
    ("p.children AS", lambda s: s.replace("p.children AS", "p.income AS"), "key_range_too_wide"),
    ("p.weight < 60", lambda s: s.replace("p.weight < 60", "p.weight < p.children"), "predicate"),
    ("e.code LIKE 'C%'", lambda s: s.replace("e.code LIKE 'C%'", "e.code LIKE '%1'"), "like"),
    ("sum(p.weight)", lambda s: s.replace("sum(p.weight)", "sum(p.weight::int)"), "cast"),
    ("sum(p.weight)", lambda s: s.replace("sum(p.weight)", "sum(p.weight) OVER ()"), "window"),
    (" FROM ", lambda s: re.sub(r" FROM (patients|events)", r" FROM (SELECT * FROM \1) z JOIN \1", s, count=1),
     "subquery"),
    ("", lambda s: s.replace("count", "c\u043eunt", 1) if "count" in s else s.replace("sum", "s\u00fcm", 1),
     "non_ascii"),
]


@settings(max_examples=300, deadline=None)
@given(query=queries(), mutation=st.sampled_from(MUTATIONS))
def test_near_miss_mutations_are_refused(query, mutation):
    sql, _ = query
    applies, mutate, rule = mutation
    assume(applies in sql)
    mutated = mutate(sql)
    assume(mutated != sql)
    try:
        validate(mutated, DICTIONARIES, max_cells=10**12)
    except LanguageError as error:
        assert rule in error.rules, (mutated, error.rules)
    else:
        raise AssertionError(f"accepted: {mutated}")


SQL_WORDS = ["SELECT", "FROM", "WHERE", "GROUP BY", "JOIN", "ON", "AND", "OR", "NOT", "(", ")", ",", "count(*)",
             "sum(", "patients", "events", "p", "e", "p.person_id", "=", "'x'", "1", "0", "/", "*", "CASE", "WHEN",
             "THEN", "END", "IN", "BETWEEN", "LIKE", "IS NULL", "region", "weight", "date_trunc('month', birth_date)",
             ";", "--", "/*", "*/", "\u00e9", "\"", "AS", "DISTINCT", "person_id", "HAVING", "::int", "USING"]


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(st.sampled_from(SQL_WORDS), max_size=25).map(" ".join),
                 st.lists(st.sampled_from(SQL_WORDS), max_size=20).map(lambda w: "SELECT count(*) FROM patients "
                                                                                  + " ".join(w))))
def test_any_text_is_accepted_or_refused_cleanly(text):
    try:
        plan = validate(text, DICTIONARIES, max_cells=10**6)
    except LanguageError as error:
        assert error.problems
        return
    contributions_sql(plan, dialect="duckdb", tables=TABLES, optouts="optouts")
    contributions_sql(plan, dialect="spark", tables=TABLES, optouts="optouts")


def test_keys_of_generated_queries_have_their_declared_domains():
    for name, (sql, _, _) in KEYS.items():
        from_ = next(f for f in FROMS if name in usable(f)[0])
        plan = validate(f"SELECT {sql}, count(*) FROM {FROMS[from_][0]} GROUP BY 1", DICTIONARIES, max_cells=10**9)
        assert plan.keys[0].domain == tuple(sorted(plan.keys[0].domain))
        assert plan.grid_size == len(plan.keys[0].domain) > 0
    assert all(AGGREGATES[a][1] in ("count_rows", "count_persons", "sum", "avg", "stddev", "variance")
               for a in AGGREGATES)


TOKENS = ["(", ")", ",", "AND", "OR", "NOT", "=", "<", ">=", "<>", "'x'", "'north'", "'C10'", "1", "0", "2.5", "-1", "1e300",
          "-", "/", "*", "+", "%", "CASE", "WHEN", "THEN", "ELSE", "END", "IN", "BETWEEN", "LIKE", "'C%'", "IS", "NULL",
          "TRUE", "p.region", "p.weight", "e.cost", "p.children", "p.stage", "e.event_date", "p.birth_date",
          "'2020-01-01'", "'1990-01-01'", "DATE", "p.smoker", "e.code", "e.value", "l.result", "l.lab_year", "p.income",
          "date_trunc('month',", "extract(year FROM", "date_diff('day',", "date_diff('month',", "count(*)", "sum(", "avg(",
          "person_id", "DISTINCT", "'heavy'"]
_EDGE_CON = []


def _edge_connection():
    if not _EDGE_CON:
        _EDGE_CON.append(load(make_data(seed=3, persons=50, edge=0.7)))
    return _EDGE_CON[0]


@settings(max_examples=400, deadline=None)
@given(query=queries(), edits=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["replace", "insert", "delete"]),
                                                 st.sampled_from(TOKENS)), min_size=1, max_size=3))
def test_token_mutations_are_refused_or_run_without_error(query, edits):
    """Whatever a token-level edit of a valid query gives is refused, or runs on edge data without an error."""
    sql, _ = query
    tokens = re.findall(r"'[^']*'|\w+\.\w+|\w+\(|\w+|\S", sql)
    for position, op, token in edits:
        i = position % len(tokens)
        if op == "replace":
            tokens[i] = token
        elif op == "insert":
            tokens.insert(i, token)
        elif len(tokens) > 1:
            del tokens[i]
    mutated = " ".join(tokens)
    try:
        plan = validate(mutated, DICTIONARIES, max_cells=10**7)
    except LanguageError:
        return
    _edge_connection().execute(contributions_sql(plan, dialect="duckdb", tables=TABLES, optouts="optouts")).fetchall()
    contributions_sql(plan, dialect="spark", tables=TABLES, optouts=None)
