"""Attacks of the classes "HAVING / ORDER BY / LIMIT tricks" and "error, limit and timing oracles".

Version 1 leaked through a query's shape (HAVING count(*) = 1, ORDER BY a raw value, LIMIT 1, the
keys of suppressed groups) and through whether a query failed (a cast or a division that fails only if
a condition on the target holds, overflow, the result-cell limit). Version 2 refuses the shapes, and a
query the language accepts cannot fail because of the data: its grid and its validity are decided from
the query text and the dictionaries alone, before anything runs."""

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queries.language import LanguageError, contributions_sql, validate
from tests.attacks.harness import (
    DICTIONARIES,
    MAX_CELLS,
    PATIENTS,
    REGIONS,
    TABLES,
    TARGET_SQL,
    Environment,
    Population,
    refused,
)

T = TARGET_SQL


# --- HAVING, ORDER BY, LIMIT and friends ---------------------------------------------------------


def test_having_keeps_only_one_person_groups():
    """HAVING count(*) = 1 keeps exactly the groups of one person (and says which exist). Refused: every
    cell of the grid is released, small ones withheld by the rules."""
    refused("SELECT diagnosis, count(*) FROM patients GROUP BY diagnosis HAVING count(*) = 1", "having")


def test_order_by_a_value_with_limit_one():
    """ORDER BY sum(income) DESC LIMIT 1 names the group with the largest value (a ranking of raw values
    is released even when the values are not). Refused: rows are released sorted by key."""
    rules = refused("SELECT region, sum(income) FROM patients GROUP BY region ORDER BY 2 DESC LIMIT 1",
                    "order_by")
    assert "limit" in rules


def test_offset_pages_through_groups():
    """LIMIT 1 OFFSET k walks through the groups one at a time (which exist, in which order). Refused."""
    refused("SELECT region, count(*) FROM patients GROUP BY region LIMIT 1 OFFSET 3", "limit")


def test_window_function_ranks_persons():
    """row_number() OVER (ORDER BY weight) or a running sum isolates single rows. Refused (and QUALIFY)."""
    refused("SELECT region, row_number() OVER (ORDER BY weight) FROM patients", "window")
    refused("SELECT region, count(*) FROM patients GROUP BY region QUALIFY count(*) > 1", "window")


def test_distinct_lists_values():
    """SELECT DISTINCT diagnosis WHERE <target> lists the target's value. Refused."""
    refused(f"SELECT DISTINCT diagnosis FROM patients WHERE {T}", "distinct")


def test_subquery_selects_the_extreme_person():
    """WHERE weight = (SELECT max(weight) …) or person_id IN (SELECT …) picks one person with a value
    computed from the data. Refused: no subqueries anywhere."""
    refused("SELECT diagnosis, count(*) FROM patients WHERE weight = (SELECT max(weight) FROM patients) "
            "GROUP BY diagnosis", "subquery")
    refused("SELECT count(*) FROM patients WHERE income IN (SELECT cost FROM gp_events)", "subquery")


def test_cte_and_set_operations():
    """WITH t AS (… WHERE <target>) or a UNION of two aggregates release rows or unperturbed arithmetic.
    Refused."""
    refused(f"WITH t AS (SELECT * FROM patients WHERE {T}) SELECT count(*) FROM t", "cte")
    refused("SELECT count(*) FROM patients UNION SELECT count(*) FROM gp_events", "set_operation")


def test_self_join_compares_a_person_with_others():
    """patients a JOIN patients b (or a join on a value) pairs the target's row with others' rows and counts
    those below the target's value — a rank. Refused: each dataset once, joined on person_id only."""
    refused("SELECT count(*) FROM patients a JOIN patients b ON a.person_id = b.person_id", "self_join")
    refused("SELECT count(*) FROM patients a JOIN gp_events b ON a.income = b.cost", "join_condition")
    refused("SELECT count(*) FROM patients a, gp_events b", "cross_join")


def test_released_rows_are_sorted_by_key_not_by_value(env):
    """Without ORDER BY, could the order of the released rows still follow the data (e.g. largest group
    first)? No: the released grid is the product of the declared domains in sorted order, whatever the
    data, populated or not."""
    out = env.release("SELECT region, sex, sum(income) AS s FROM patients GROUP BY region, sex")
    assert list(out.safe) == [(r, s) for r in sorted(REGIONS) for s in ("F", "M")]


# --- error, limit and timing oracles --------------------------------------------------------------


def test_cast_that_fails_only_if_the_target_has_the_diagnosis():
    """CAST(CASE WHEN <target> AND diagnosis = 'diabetes' THEN 'x' ELSE '1' END AS int): the query fails iff
    the condition holds — an answer without any release. Refused before running: no casts, no CASE in a
    condition."""
    refused(f"SELECT count(*) FROM patients WHERE CAST(CASE WHEN {T} AND diagnosis = 'diabetes' THEN 'x' "
            "ELSE '1' END AS int) = 1", "cast")
    refused("SELECT count(*) FROM patients WHERE TRY_CAST(region AS int) = 1", "cast")


def test_division_that_fails_only_for_the_target_value():
    """sum(income / (weight - 71.3)) divides by zero iff someone weighs 71.3 kg; income / 0 always fails.
    Refused: division only by a non-zero literal."""
    refused("SELECT sum(income / (weight - 71.3)) FROM patients", "division_by_column")
    refused("SELECT sum(income / 0) FROM patients", "division_by_zero")


def test_functions_that_raise_sleep_or_read_files():
    """error('…'), pg_sleep(…) behind a condition, regexp_matches with a catastrophic pattern, or
    read_csv('/etc/passwd'): error, timing and file oracles. Refused: an allow-list of functions; datasets
    by name only."""
    refused("SELECT count(*) FROM patients WHERE error('x') IS NULL", "function_not_allowed")
    refused("SELECT count(*) FROM patients WHERE pg_sleep(1) IS NULL", "function_not_allowed")
    refused("SELECT count(*) FROM patients WHERE regexp_matches(diagnosis, '(a*)*b')", "function_not_allowed")
    refused("SELECT count(*) FROM read_csv('/etc/passwd')", "table_function")


def test_overflow_of_a_product_of_measures(env):
    """sum(income * income * income * income * income * income) would overflow integer arithmetic (and fail)
    iff the incomes are large. Accepted — and cannot fail: an expression whose bounds leave ±(2³¹−1) is
    computed in DOUBLE, and one that could exceed 1e100 is refused (literal_range). It runs on the data."""
    env.release("SELECT region, sum(income * income * income * income * income * income) AS s FROM patients "
                "GROUP BY region")
    refused("SELECT sum(" + " * ".join(["income"] * 20) + ") FROM patients", "literal_range")


def test_grid_limit_is_decided_before_running():
    """The result-cell limit (version 1 failed a query whose *data* had too many groups: an oracle on the
    number of distinct values). The grid is the product of the declared domains, known from the text and
    the dictionaries: 25 replicas × 5 regions × 2 sexes × 4 diagnoses × 10 children = 10,000 cells is
    accepted, 26 replicas (10,400) refused — with no data anywhere in the call."""
    base = ("SELECT replica, region, sex, diagnosis, children, count(*) FROM patients "
            "WHERE replica IN ({}) AND children IN (0, 1, 2, 3, 4, 5, 6, 7, 8, 9) GROUP BY 1, 2, 3, 4, 5")
    plan = validate(base.format(", ".join(map(str, range(25)))), DICTIONARIES, max_cells=MAX_CELLS)
    assert plan.grid_size == MAX_CELLS
    refused(base.format(", ".join(map(str, range(26)))), "grid_too_large")


# A tiny population at the edges of every domain (and beyond: stored values outside the bounds, NULLs).
EDGE_PATIENTS = [
    {"person_id": f"e{i}", "replica": i % 3, "region": REGIONS[i % 5], "sex": "FM"[i % 2],
     "diagnosis": ("asthma", "copd", "diabetes", "none")[i % 4],
     "birth_date": [dt.date(1930, 1, 1), dt.date(2009, 12, 31), dt.date(1900, 1, 1), dt.date(2050, 6, 1),
                    None][i % 5],
     "weight": [30.0, 200.0, -1e300, 1e300, None, 0.0][i % 6],
     "income": [0, 200_000, -(2**62), 2**62, None][i % 5],
     "score": [0, 999, 2**62, None][i % 4], "children": [0, 12, -(2**62), None][i % 4]}
    for i in range(40)]
EDGE_EVENTS = [{"person_id": f"e{i}", "code": ("C10", "E11", "J45", "other", None)[i % 5],
                "event_date": [dt.date(2015, 1, 1), dt.date(2024, 12, 31), dt.date(1999, 1, 1), None][i % 4],
                "value": [0.0, 500.0, 1e308, -1e308, None][i % 5], "cost": [0, 10_000, 2**62, None][i % 4]}
               for i in range(40) for _ in range(i % 3)]

MEASURES = ["weight", "income", "score", "children", "e.value", "e.cost"]
LITERALS = [0, 1, -1, 30, 200, 200_000, 999, 12, 2147483647, -2147483648, 0.5, 1e50]


@st.composite
def edge_queries(draw):
    """A query of the language with literals at the domain edges: keys, measure expressions, filters."""
    m1, m2 = draw(st.sampled_from(MEASURES)), draw(st.sampled_from(MEASURES))
    op = draw(st.sampled_from(["+", "-", "*"]))
    lit = draw(st.sampled_from(LITERALS))
    divisor = draw(st.sampled_from([1, -3, 0.001, 1e-9, 7]))
    expression = draw(st.sampled_from([f"{m1} {op} {m2}", f"({m1} {op} {lit}) / {divisor}", f"{m1} * {m1}",
                                       f"-{m1} + {lit}", "date_diff('month', p.birth_date, e.event_date)"]))
    aggregate = draw(st.sampled_from(["sum", "avg", "stddev", "variance"]))
    key = draw(st.sampled_from(["p.region", "date_trunc('year', p.birth_date)", "extract(month FROM e.event_date)",
                                "p.children", f"CASE WHEN {m1} < {lit} THEN 'lo' ELSE 'hi' END"]))
    where = draw(st.sampled_from([f"{m2} > {lit}", f"{m1} BETWEEN {lit} AND {lit}", "p.birth_date >= '2009-12-01'",
                                  "e.event_date < '2015-02-01'", f"{m1} * {m2} <= {lit}", "e.code IS NULL",
                                  "p.diagnosis IN ('asthma', 'none')"]))
    sql = (f"SELECT {key} AS k, {aggregate}({expression}) AS v, count(*) AS n FROM patients p "
           f"LEFT JOIN gp_events e ON p.person_id = e.person_id WHERE {where} GROUP BY 1")
    return sql.replace("(weight", "(p.weight").replace(" weight", " p.weight").replace("income", "p.income") \
        .replace("score", "p.score").replace("children", "p.children").replace("p.p.", "p.")


@given(sql=edge_queries())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_accepted_queries_never_raise_on_edge_data(sql):
    """A hypothesis sweep over literals at the domain edges and data beyond them (±2⁶², ±1e300, NULL,
    dates outside their range): every query the language accepts runs and is released without an error —
    there is no failure to observe. Queries the sweep builds that the language refuses are skipped."""
    try:
        plan = validate(sql, DICTIONARIES, max_cells=MAX_CELLS)
    except LanguageError:
        return
    statement = contributions_sql(plan, dialect="duckdb", tables=TABLES, optouts=None)
    _edge_env().con.execute(statement).fetchall()
    _edge_env().release(sql)


_EDGE: list[Environment] = []


def _edge_env() -> Environment:
    if not _EDGE:
        keys = {p["person_id"]: (i % 256, i * 7919) for i, p in enumerate(EDGE_PATIENTS)}
        _EDGE.append(Environment(Population(EDGE_PATIENTS, EDGE_EVENTS, keys)))
    return _EDGE[0]


@pytest.fixture(scope="module", autouse=True)
def _close_edge_env():
    yield
    while _EDGE:
        _EDGE.pop().con.close()


def test_edge_data_goes_beyond_the_declared_bounds():
    """(A guard for the sweep: its population really holds values outside the declared bounds.)"""
    for name in ("weight", "income", "children"):
        column = PATIENTS.column(name)
        assert any(p[name] is not None and not column.min <= p[name] <= column.max for p in EDGE_PATIENTS)
