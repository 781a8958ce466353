"""The rewrite, run on DuckDB: results, opt-out exclusion, n_persons, top contributions and persons_sql,
each checked against a plain-Python computation over the same generated rows."""

import math
import random
import statistics
from collections import defaultdict
from datetime import date, datetime, timedelta
from operator import itemgetter

import duckdb
import pytest
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st

from queries.sql import PERSON_KEYS, validate_and_rewrite

SCHEMA = {
    "patients": {"person_id": "text", "region": "text", "sex": "text", "birth_date": "date",
                 "weight": "float", "smoker": "boolean"},
    "events": {"person_id": "text", "region": "text", "code": "text", "event_date": "date",
               "value": "float", "cost": "integer"},
}
REGIONS = ["east", "north", "south", "west"]
CODES = ["A10", "A2", "B20", "C3", "C45"]
DUCKDB_TYPES = {"text": "VARCHAR", "date": "DATE", "float": "DOUBLE", "boolean": "BOOLEAN", "integer": "INTEGER"}

# The generated rows. Opted-out persons get extreme values, so a leak shows in every statistic.
_rng = random.Random(20240611)
PERSONS = [f"p{i:03d}" for i in range(150)]
OPTED_OUT = frozenset(PERSONS[::9])
PATIENTS = [
    {"person_id": p, "region": _rng.choice(REGIONS + [None]), "sex": _rng.choice("FM"),
     "birth_date": date(1940, 1, 1) + timedelta(days=_rng.randrange(65 * 365)),
     "weight": None if _rng.random() < 0.1 else round(_rng.uniform(40, 110), 1),
     "smoker": _rng.random() < 0.3}
    for p in PERSONS[:130]  # the last 20 persons have events but no patient row
]
EVENTS = [
    {"person_id": p, "region": _rng.choice(REGIONS), "code": _rng.choice(CODES),
     "event_date": date(2018, 1, 1) + timedelta(days=_rng.randrange(6 * 365)),
     "value": 1e6 if p in OPTED_OUT else (None if _rng.random() < 0.05 else round(_rng.uniform(-20, 200), 2)),
     "cost": 10**6 if p in OPTED_OUT else _rng.randrange(0, 1000)}
    for p in PERSONS[5:] for _ in range(_rng.randrange(0, 12))  # p000-p004 have no events
]
P = [r for r in PATIENTS if r["person_id"] not in OPTED_OUT]
E = [r for r in EVENTS if r["person_id"] not in OPTED_OUT]
INNER = [{**p, **{f"e_{k}": v for k, v in e.items()}} for p in P for e in E if e["person_id"] == p["person_id"]]
LEFT = INNER + [{**p, **{f"e_{k}": None for k in SCHEMA["events"]}} for p in P
                if not any(e["person_id"] == p["person_id"] for e in E)]


def connect(optouts=OPTED_OUT, *, optout_table="tre_optouts", naive=False) -> duckdb.DuckDBPyConnection:
    """Both datasets and the opt-out table; `naive`: the datasets without the opted-out rows instead."""
    con = duckdb.connect()
    for name, rows in (("patients", PATIENTS), ("events", EVENTS)):
        columns = SCHEMA[name]
        con.execute(f"CREATE TABLE {name} ({', '.join(f'{c} {DUCKDB_TYPES[t]}' for c, t in columns.items())})")
        kept = [[r[c] for c in columns] for r in rows if not (naive and r["person_id"] in optouts)]
        con.executemany(f"INSERT INTO {name} VALUES ({', '.join('?' * len(columns))})", kept)
    if not naive:
        con.execute(f"CREATE TABLE {optout_table} (person_id VARCHAR NOT NULL)")
        if optouts:
            con.executemany(f"INSERT INTO {optout_table} VALUES (?)", [[p] for p in sorted(optouts)])
    return con


@pytest.fixture(scope="module")
def con():
    connection = connect()
    yield connection
    connection.close()


def run(con, sql, **kwargs):
    """The rewritten query's rows as dicts (without the person-key column), and the validated query."""
    query = validate_and_rewrite(sql, schema=SCHEMA, **kwargs)
    cursor = con.execute(query.rewritten_sql)
    names = [d[0] for d in cursor.description]
    assert names[-1] == PERSON_KEYS
    return [dict(zip(names[:-1], row[:-1], strict=False)) for row in cursor.fetchall()], query


def test_person_keys_are_the_groups_hex_persons():
    """The last rewritten column holds each group's person keys (first 16 hex digits of person_id)."""
    hexed = duckdb.connect()
    hexed.execute("CREATE TABLE events AS SELECT printf('%016x', (i % 7) * 1000003) || repeat('a', 48) AS person_id, "
                  "CASE WHEN i % 2 = 0 THEN 'A' ELSE 'B' END AS code, i AS cost FROM range(40) t(i)")
    hexed.execute("CREATE TABLE tre_optouts (person_id VARCHAR NOT NULL)")
    hexed.execute("INSERT INTO tre_optouts VALUES (printf('%016x', 3 * 1000003) || repeat('a', 48))")
    query = validate_and_rewrite("SELECT code, sum(cost) FROM events GROUP BY code",
                                 schema={"events": {"person_id": "text", "code": "text", "cost": "integer"}})
    got = {row[0]: sorted(row[-1]) for row in hexed.execute(query.rewritten_sql).fetchall()}
    expected = {code: sorted({(i % 7) * 1000003 for i in range(40) if (i % 2 == 0) == (code == "A") and i % 7 != 3})
                for code in "AB"}
    assert got == expected


# Plain-Python statistics over rows; a field is a name or a function of the row.

def _get(field):
    return field if callable(field) else itemgetter(field)


def _values(rows, field):
    return [v for v in map(_get(field), rows) if v is not None]


def count(rows):
    return len(rows)


def count_of(field):
    return lambda rows: len(_values(rows, field))


def distinct(field):
    return lambda rows: len(set(_values(rows, field)))


def total(field):
    return lambda rows: sum(_values(rows, field)) if _values(rows, field) else None


def mean(field):
    return lambda rows: statistics.fmean(_values(rows, field)) if _values(rows, field) else None


def median(field):
    return lambda rows: statistics.median(_values(rows, field)) if _values(rows, field) else None


def spread(field, fn, minimum):
    return lambda rows: fn(_values(rows, field)) if len(_values(rows, field)) >= minimum else None


def _sort_key(keys):
    return tuple((v is None, v if v is not None else 0) for v in keys)


def expected(rows, key, *stats, having=None):
    """One tuple per group, (keys..., stats...), sorted by the keys with NULLs last; key=None: one group."""
    groups = defaultdict(list)
    for row in rows:
        groups[key(row) if key else ()].append(row)
    if key is None and not groups:
        groups[()] = []
    result = [k + tuple(s(g) for s in stats) for k, g in groups.items() if having is None or having(g)]
    return sorted(result, key=lambda row: _sort_key(row[:len(next(iter(groups)))]))


def assert_rows(actual, wanted):
    assert len(actual) == len(wanted), (actual, wanted)
    for got, want in zip(actual, wanted, strict=False):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=False):
            if isinstance(w, float) or isinstance(g, float):
                assert g == pytest.approx(w, rel=1e-9, abs=1e-9), (got, want)
            else:
                assert g == w, (got, want)


def user_rows(rows, query):
    return [tuple(r[c.name] for c in query.columns) for r in rows]


def decade(row):
    return row["birth_date"].year - row["birth_date"].year % 10


def band(row):
    w = row["weight"]
    return "unknown" if w is None else "light" if w < 60 else "medium" if w < 80 else "heavy"


RESEARCH_QUERIES = [
    ("SELECT count(*) FROM events",
     lambda: expected(E, None, count)),
    ("SELECT code, count(*), avg(value), sum(cost) FROM events GROUP BY code",
     lambda: expected(E, lambda r: (r["code"],), count, mean("value"), total("cost"))),
    ("SELECT code AS c, sum(cost) AS total_cost FROM events GROUP BY c",
     lambda: expected(E, lambda r: (r["code"],), total("cost"))),
    ("SELECT region, count(DISTINCT person_id) FROM patients GROUP BY 1",
     lambda: expected(P, lambda r: (r["region"],), distinct("person_id"))),
    ("SELECT p.region, e.code, count(*), sum(e.value) FROM patients p JOIN events e ON p.person_id = e.person_id "
     "GROUP BY p.region, e.code",
     lambda: expected(INNER, lambda r: (r["region"], r["e_code"]), count, total("e_value"))),
    ("SELECT sex, count(*), avg(value) FROM patients JOIN events USING (person_id) GROUP BY sex",
     lambda: expected(INNER, lambda r: (r["sex"],), count, mean("e_value"))),
    ("SELECT p.sex, count(*), count(e.code), count(DISTINCT e.person_id), count(DISTINCT person_id) "
     "FROM patients p LEFT JOIN events e ON e.person_id = p.person_id GROUP BY p.sex",
     lambda: expected(LEFT, lambda r: (r["sex"],), count, count_of("e_code"), distinct("e_person_id"),
                      distinct("person_id"))),
    ("SELECT CASE WHEN weight IS NULL THEN 'unknown' WHEN weight < 60 THEN 'light' WHEN weight < 80 THEN 'medium' "
     "ELSE 'heavy' END AS band, count(*), avg(weight) FROM patients GROUP BY band",
     lambda: expected(P, lambda r: (band(r),), count, mean("weight"))),
    ("SELECT date_trunc('year', event_date) AS year, count(*) FROM events GROUP BY 1",
     lambda: expected(E, lambda r: (datetime(r["event_date"].year, 1, 1),), count)),
    ("SELECT extract(year FROM event_date) AS y, sum(value), median(value) FROM events GROUP BY y",
     lambda: expected(E, lambda r: (r["event_date"].year,), total("value"), median("value"))),
    ("SELECT code, count(*) FROM events WHERE value BETWEEN 10 AND 150 AND code IN ('A10', 'B20') "
     "AND region LIKE 'n%' AND NOT cost < 100 GROUP BY code",
     lambda: expected([r for r in E if r["value"] is not None and 10 <= r["value"] <= 150 and r["cost"] >= 100
                       and r["code"] in ("A10", "B20") and r["region"].startswith("n")],
                      lambda r: (r["code"],), count)),
    ("SELECT code, region, count(*) AS n FROM events GROUP BY code, region HAVING count(*) > 32",
     lambda: expected(E, lambda r: (r["code"], r["region"]), count, having=lambda g: len(g) > 32)),
    ("SELECT region, count(DISTINCT person_id) AS people, avg(weight) FROM patients GROUP BY region "
     "HAVING people >= 25",
     lambda: expected(P, lambda r: (r["region"],), distinct("person_id"), mean("weight"),
                      having=lambda g: len(g) >= 25)),
    ("SELECT region, median(weight) FROM patients GROUP BY region",
     lambda: expected(P, lambda r: (r["region"],), median("weight"))),
    ("SELECT sex, stddev(weight), variance(weight), stddev_pop(weight), var_pop(weight), var_samp(weight), "
     "stddev_samp(weight) FROM patients GROUP BY sex",
     lambda: expected(P, lambda r: (r["sex"],), spread("weight", statistics.stdev, 2),
                      spread("weight", statistics.variance, 2), spread("weight", statistics.pstdev, 1),
                      spread("weight", statistics.pvariance, 1), spread("weight", statistics.variance, 2),
                      spread("weight", statistics.stdev, 2))),
    ("SELECT region, count(weight), count(DISTINCT sex) FROM patients GROUP BY region",
     lambda: expected(P, lambda r: (r["region"],), count_of("weight"), distinct("sex"))),
    ("SELECT left(code, 1) AS chapter, count(*) FROM events WHERE starts_with(code, 'A') OR length(code) > 2 "
     "GROUP BY chapter",
     lambda: expected([r for r in E if r["code"].startswith("A") or len(r["code"]) > 2],
                      lambda r: (r["code"][0],), count)),
    ("SELECT coalesce(region, 'unknown') AS r, count(*) FROM patients GROUP BY 1",
     lambda: expected(P, lambda r: (r["region"] or "unknown",), count)),
    ("SELECT floor(value / 50) AS bucket, sum(value) FROM events GROUP BY bucket",
     lambda: expected(E, lambda r: (None if r["value"] is None else math.floor(r["value"] / 50),), total("value"))),
    ("SELECT CAST(extract(year FROM birth_date) AS integer) - CAST(extract(year FROM birth_date) AS integer) % 10 "
     "AS decade, count(*) FROM patients GROUP BY decade",
     lambda: expected(P, lambda r: (decade(r),), count)),
    ("SELECT region IS NULL AS missing_region, count(*) FROM patients GROUP BY 1",
     lambda: expected(P, lambda r: (r["region"] is None,), count)),
    ("select CODE, COUNT(*) from EVENTS group by Code",
     lambda: expected(E, lambda r: (r["code"],), count)),
    ("SELECT sum(cost), avg(value), count(*) FROM events WHERE code = 'A10'",
     lambda: expected([r for r in E if r["code"] == "A10"], None, total("cost"), mean("value"), count)),
    ("SELECT count(*) FROM events WHERE event_date >= DATE '2021-01-01'",
     lambda: expected([r for r in E if r["event_date"] >= date(2021, 1, 1)], None, count)),
    ("SELECT smoker, avg(weight) FROM patients GROUP BY smoker",
     lambda: expected(P, lambda r: (r["smoker"],), mean("weight"))),
    ("SELECT upper(substring(region, 1, 1)) AS initial, count(*) FROM patients GROUP BY 1",
     lambda: expected(P, lambda r: (r["region"][0].upper() if r["region"] else None,), count)),
    ("SELECT ceil(abs(value) / 100) AS h, count(*) FROM events GROUP BY 1",
     lambda: expected(E, lambda r: (None if r["value"] is None else math.ceil(abs(r["value"]) / 100),), count)),
    ("SELECT count(*), sum(cost) FROM events WHERE code = 'none of them'",
     lambda: [(0, None)]),
    ("SELECT count(*) FROM events HAVING count(*) > 1000000",
     lambda: []),
]


@pytest.mark.parametrize("sql, want", RESEARCH_QUERIES)
def test_research_query_returns_the_right_numbers(con, sql, want):
    rows, query = run(con, sql)
    assert_rows(user_rows(rows, query), want())


def test_the_research_queries_are_many_and_their_having_filters_bite():
    assert len(RESEARCH_QUERIES) >= 20
    groups = expected(E, lambda r: (r["code"], r["region"]), count)
    assert 0 < len([g for g in groups if g[-1] > 32]) < len(groups)


def test_order_by_is_kept(con):
    rows, query = run(con, "SELECT code, count(*) AS n FROM events GROUP BY code ORDER BY n DESC, code")
    want = sorted(expected(E, lambda r: (r["code"],), count), key=lambda row: (-row[1], row[0]))
    assert user_rows(rows, query) == want


def top_contributions(rows, key, person, field):
    """Per group: (n_persons, top1, top2, total) of |per-person sum of field|, as the SDC rules want."""
    per_person = defaultdict(lambda: defaultdict(list))
    for row in rows:
        per_person[key(row)][person(row)].append(_get(field)(row))
    result = {}
    for group, persons in per_person.items():
        totals = sorted((abs(sum(v for v in vs if v is not None)) for vs in persons.values()
                         if any(v is not None for v in vs)), reverse=True) + [0, 0]
        result[group] = (len(persons), totals[0], totals[1], sum(totals))
    return result


def assert_helpers(rows, query, column, key_names, want):
    helpers = next(c for c in query.columns if c.name == column)
    got = {tuple(r[k] for k in key_names): (r["n_persons"], r[helpers.top1], r[helpers.top2], r[helpers.total])
           for r in rows}
    assert got.keys() == want.keys()
    for group, values in want.items():
        assert got[group] == pytest.approx(values, rel=1e-9), group


def test_n_persons_and_top_contributions_for_sum_and_avg(con):
    rows, query = run(con, "SELECT code, sum(value) AS s, avg(value) AS a, sum(cost) FROM events GROUP BY code")
    def by_code(row):
        return (row["code"],)

    by_person = itemgetter("person_id")
    assert_helpers(rows, query, "s", ["code"], top_contributions(E, by_code, by_person, "value"))
    assert_helpers(rows, query, "a", ["code"], top_contributions(E, by_code, by_person, "value"))
    assert_helpers(rows, query, "sum_cost", ["code"], top_contributions(E, by_code, by_person, "cost"))
    assert all(r["s_top1"] < 1e6 for r in rows)  # the opted-out persons' 1e6 values never count


def test_top2_is_zero_for_a_group_of_one_person(con):
    rows, query = run(con, "SELECT code, event_date, sum(cost) FROM events GROUP BY 1, 2")
    want = top_contributions(E, lambda r: (r["code"], r["event_date"]), itemgetter("person_id"), "cost")
    assert any(n == 1 for n, *_ in want.values())
    assert_helpers(rows, query, "sum_cost", ["code", "event_date"], want)


def test_helpers_in_a_join_count_the_first_datasets_persons(con):
    rows, query = run(con, "SELECT p.region, avg(e.cost) FROM patients p JOIN events e USING (person_id) "
                           "GROUP BY 1")
    want = top_contributions(INNER, lambda r: (r["region"],), itemgetter("person_id"), "e_cost")
    assert_helpers(rows, query, "avg_cost", ["region"], want)


def test_helpers_follow_having(con):
    rows, query = run(con, "SELECT code, region, sum(cost) FROM events GROUP BY code, region HAVING count(*) > 32")
    want = top_contributions(E, lambda r: (r["code"], r["region"]), itemgetter("person_id"), "cost")
    kept = {k: v for k, v in want.items() if sum(r["code"] == k[0] and r["region"] == k[1] for r in E) > 32}
    assert 0 < len(kept) < len(want)
    assert_helpers(rows, query, "sum_cost", ["code", "region"], kept)


def test_one_group_without_group_by(con):
    rows, query = run(con, "SELECT avg(value) FROM events")
    assert len(rows) == 1
    assert rows[0]["n_persons"] == len({r["person_id"] for r in E})
    assert_helpers(rows, query, "avg_value", [], top_contributions(E, lambda r: (), itemgetter("person_id"), "value"))


def test_empty_group_has_zero_persons_and_zero_helpers(con):
    rows, query = run(con, "SELECT sum(cost) FROM events WHERE cost < 0")
    assert rows == [{"sum_cost": None, "n_persons": 0, "sum_cost_top1": 0, "sum_cost_top2": 0, "sum_cost_total": 0}]


def test_result_columns_are_user_columns_then_n_persons_then_helpers(con):
    rows, query = run(con, "SELECT code, avg(value) AS a, count(*), sum(cost) AS s FROM events GROUP BY code")
    assert list(rows[0]) == ["code", "a", "count", "s", "n_persons", "a_top1", "a_top2", "a_total",
                             "s_top1", "s_top2", "s_total"]


def test_opted_out_persons_are_excluded_from_every_dataset():
    sql = "SELECT p.sex, count(*), sum(e.cost) FROM patients p LEFT JOIN events e USING (person_id) GROUP BY 1"
    everyone_out = connect(optouts=frozenset(PERSONS))
    assert run(everyone_out, sql)[0] == []
    nobody_out = connect(optouts=frozenset())
    with_all = {r["sex"]: r for r in run(nobody_out, sql)[0]}
    filtered = {r["sex"]: r for r in run(connect(), sql)[0]}
    for sex, row in filtered.items():
        assert row["sum_cost"] < 10**6 <= with_all[sex]["sum_cost"]
        assert row["n_persons"] == len({p["person_id"] for p in P if p["sex"] == sex})


def test_opt_out_table_name_is_configurable():
    con = connect(optouts=frozenset(PERSONS), optout_table="store_optouts")
    rows, query = run(con, "SELECT count(*) FROM events", optout_table="store_optouts")
    assert rows[0]["count"] == 0
    assert '"store_optouts"' in query.rewritten_sql


def persons(con, sql):
    query = validate_and_rewrite(sql, schema=SCHEMA)
    cursor = con.execute(query.persons_sql)
    keys = [c.name for c in query.columns if c.kind == "key"]
    assert [d[0] for d in cursor.description] == keys + ["person_id"]
    return set(cursor.fetchall())


def test_persons_sql_lists_each_groups_persons(con):
    got = persons(con, "SELECT region AS r, code, count(*) FROM events GROUP BY region, code")
    assert got == {(r["region"], r["code"], r["person_id"]) for r in E}


def test_persons_sql_without_group_by_and_with_a_join(con):
    assert persons(con, "SELECT count(*) FROM events") == {(r["person_id"],) for r in E}
    got = persons(con, "SELECT e.code, sum(p.weight) FROM events e LEFT JOIN patients p USING (person_id) GROUP BY 1")
    assert got == {(r["code"], r["person_id"]) for r in E}


def test_persons_sql_follows_having(con):
    got = persons(con, "SELECT code, region, count(*) FROM events GROUP BY 1, 2 HAVING count(*) > 32")
    sizes = defaultdict(int)
    for r in E:
        sizes[r["code"], r["region"]] += 1
    assert got == {(r["code"], r["region"], r["person_id"]) for r in E if sizes[r["code"], r["region"]] > 32}


# Differential property: for generated valid queries, the rewrite returns what the same query returns
# when run directly (transpiled, no rewrite) on the datasets with the opted-out persons deleted.

KEYS = ["code", "region", "extract(year FROM event_date)", "CASE WHEN value > 100 THEN 'high' ELSE 'low' END",
        "left(code, 1)", "cost > 500", "floor(value / 50)"]
AGGREGATES = ["count(*)", "count(value)", "count(DISTINCT code)", "count(DISTINCT person_id)", "sum(cost)",
              "avg(value)", "sum(value)", "median(cost)", "stddev(value)", "var_pop(cost)"]
WHERES = ["", " WHERE cost > 100", " WHERE code IN ('A10', 'C3')", " WHERE event_date < DATE '2021-01-01'"]
HAVINGS = ["", " HAVING count(*) > 5", " HAVING avg(cost) < 500"]


@st.composite
def valid_queries(draw):
    """(sql, the same grouping with count(DISTINCT person_id) as its only aggregate)."""
    keys = draw(st.lists(st.sampled_from(KEYS), max_size=3, unique=True))
    aggregates = draw(st.lists(st.sampled_from(AGGREGATES), min_size=1, max_size=3))
    items = draw(st.permutations(keys + aggregates))
    by_position = draw(st.booleans())
    group = [str(items.index(k) + 1) if by_position else k for k in keys]
    where, having = draw(st.sampled_from(WHERES)), draw(st.sampled_from(HAVINGS))
    group_by = f" GROUP BY {', '.join(keys)}" if keys else ""
    selected_keys = [i for i in items if i in keys]
    persons = f"SELECT {', '.join(selected_keys + ['count(DISTINCT person_id)'])} FROM events{where}{group_by}{having}"
    group_by = f" GROUP BY {', '.join(group)}" if keys else ""
    return f"SELECT {', '.join(items)} FROM events{where}{group_by}{having}", persons


@pytest.fixture(scope="module")
def naive():
    connection = connect(naive=True)
    yield connection
    connection.close()


def run_directly(con, sql):
    return con.execute(sqlglot.transpile(sql, read="postgres", write="duckdb")[0]).fetchall()


def in_a_stable_order(rows):
    return sorted(rows, key=lambda row: repr(tuple(round(v, 6) if isinstance(v, float) else v for v in row)))


@settings(max_examples=150, deadline=None)
@given(queries=valid_queries())
def test_rewrite_matches_the_query_run_on_data_without_the_opted_out(con, naive, queries):
    sql, persons_sql = queries
    rows, query = run(con, sql)
    assert_rows(in_a_stable_order(user_rows(rows, query)), in_a_stable_order(run_directly(naive, sql)))
    keys = [c.name for c in query.columns if c.kind == "key"]
    n_persons = {tuple(r[k] for k in keys): r["n_persons"] for r in rows}
    assert n_persons == {tuple(key): n for *key, n in run_directly(naive, persons_sql)}
    pairs = defaultdict(set)
    for *key, person in con.execute(query.persons_sql).fetchall():
        pairs[tuple(key)].add(person)
    assert {k: n for k, n in n_persons.items() if n} == {k: len(v) for k, v in pairs.items()}


@pytest.mark.parametrize("expression", [
    "abs(value)", "round(value)", "round(value, 1)", "floor(value)", "ceil(value)", "ceiling(value)", "trunc(value)",
    "sign(value)", "sqrt(abs(value))", "power(cost, 2)", "ln(cost + 1)", "log(cost + 1)", "exp(cost / 1000.0)",
    "mod(cost, 7)", "cost % 7", "-cost", "cost / 3", "value IS DISTINCT FROM 1", "greatest(cost, 10)",
    "least(cost, 10)", "nullif(code, 'A2')", "coalesce(value, 0)", "code ILIKE 'a%'", "code LIKE 'A!%' ESCAPE '!'",
    "code NOT IN ('A2')", "value IS TRUE", "lower(code)", "upper(region)", "left(code, 1)", "right(code, 1)",
    "substr(code, 2)", "substring(code FROM 1 FOR 2)", "starts_with(code, 'A')", "length(code)",
    "char_length(code)", "trim(code)", "concat(code, region)", "code || region", "position('0' IN code)",
    "strpos(code, '0')", "date_trunc('month', event_date)", "extract(dow FROM event_date)",
    "date_part('quarter', event_date)", "event_date < current_date", "event_date + INTERVAL '1 day'",
    "event_date - INTERVAL '2 months'", "CAST(cost AS smallint)", "cost::bigint", "cost::real",
    "cost::double precision", "cost::numeric(10, 2)", "code::text", "'2020-01-01'::date",
    "'2020-01-01 10:00'::timestamp", "'t'::boolean", "'1 day'::interval", "CAST(value AS integer)",
])
def test_every_allow_listed_function_runs_on_duckdb(con, expression):
    rows, query = run(con, f"SELECT {expression} AS v, count(*) FROM events GROUP BY 1")
    assert sum(r["count"] for r in rows) == len(E)
