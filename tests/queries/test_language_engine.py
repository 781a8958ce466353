"""Valid research queries run on DuckDB: contributions_sql compared cell by cell with plain Python."""

import datetime as dt
import hashlib

import duckdb
import pytest
import sqlglot

from queries.language import contributions_sql, validate
from tests.queries.language_fixtures import DICTIONARIES, TABLES, assert_same, build, load, make_data, reference, run

# (FROM, keys, aggregates, filters): each a research question over the building blocks
VALID = [
    ("p", ["region"], ["rows"], None),
    ("p", ["region", "sex"], ["persons", "avg_weight"], None),
    ("p", ["smoker"], ["sum_weight"], ["north_south"]),
    ("p", ["stage"], ["rows", "sum_children"], ["weight_known"]),
    ("p", ["birth_year"], ["persons"], ["born"]),
    ("p", ["birth_month"], ["rows"], ["north"]),
    ("p", ["birth_x_year", "sex"], ["avg_weight"], None),
    ("p", ["birth_x_month"], ["var_income2"], None),
    ("p", ["children"], ["rows", "avg_weight"], ["not_f"]),
    ("p", ["weight_band", "region"], ["persons"], None),
    ("p", [], ["rows", "persons", "sum_weight"], None),
    ("p", ["region"], ["rows"], ["logic"]),
    ("p", ["sex"], ["sum_children"], ["non_smoker"]),
    ("p", ["region"], ["rows"], ["smoker", "heavy"]),
    ("p", ["region"], ["avg_weight"], ["weight_between", "stage13"]),
    ("p", ["sex"], ["rows"], ["month_1990"]),
    ("p", ["stage"], ["rows"], ["neg_lit"]),
    ("e", ["code"], ["rows", "persons", "sd_value"], None),
    ("e", ["event_quarter"], ["sum_cost2"], ["recent"]),
    ("e", ["event_week"], ["rows"], ["early"]),
    ("e", ["event_x_day", "code"], ["var_cost"], None),
    ("e", ["cardio"], ["persons", "sum_value4"], None),
    ("e", ["costly"], ["neg_cost", "days"], ["code_c"]),
    ("e", ["code"], ["rows"], ["value_null"]),
    ("e", ["code"], ["sum_cost2"], ["cost_expr", "year_2020"]),
    ("e", ["code"], ["rows"], ["not_in"]),
    ("pe", ["region", "code"], ["rows", "persons", "avg_weight", "sd_value"], None),
    ("pe", ["sex"], ["months"], ["recent"]),
    ("pe", ["code"], ["years", "months", "days"], None),
    ("pe", ["weight_band", "cardio"], ["mixed"], None),
    ("pe_left", ["region", "code"], ["rows", "persons", "sum_cost2"], None),
    ("pe_left", ["smoker"], ["sum_weight", "sd_value"], ["born"]),
    ("pel", ["test", "region"], ["rows", "sum_result", "avg_weight"], None),
    ("pel", ["lab_year"], ["persons", "sum_result"], ["lab_recent", "north_south"]),
    ("pel", ["code", "test"], ["rows", "sum_cost2"], ["not_f"]),
]


@pytest.fixture(scope="module")
def data():
    return make_data(seed=7, persons=120)


@pytest.fixture(scope="module")
def con(data):
    return load(data, duckdb.connect(), optouts=["p0003", "p0010"])


@pytest.mark.parametrize("positions", [False, True])
@pytest.mark.parametrize("case", VALID, ids=[f"{i}-{'+'.join(c[1] + c[2])}" for i, c in enumerate(VALID)])
def test_contributions_match_python(case, positions, data, con):
    sql, ref = build(*case, positions=positions)
    plan = validate(sql, DICTIONARIES, max_cells=10_000)
    statement = contributions_sql(plan, dialect="duckdb", tables=TABLES, optouts="optouts")
    actual = run(con, statement)
    expected = reference(data, optouts={"p0003", "p0010"}, **ref)
    assert_same(actual, expected)
    grid = set(plan.grid())
    assert len(grid) == plan.grid_size
    assert set(actual) <= grid  # every populated cell is a cell of the grid


def test_without_optouts_counts_everyone(data, con):
    sql, ref = build("p", ["region"], ["rows"])
    plan = validate(sql, DICTIONARIES, max_cells=100)
    actual = run(con, contributions_sql(plan, dialect="duckdb", tables=TABLES, optouts=None))
    assert_same(actual, reference(data, **ref))
    with_optouts = run(con, contributions_sql(plan, dialect="duckdb", tables=TABLES, optouts="optouts"))
    assert sum(r["n_persons"] for r in actual.values()) == sum(r["n_persons"] for r in with_optouts.values()) + 2


def test_record_key_counted_once_per_person_not_per_row():
    con = duckdb.connect()
    con.execute("CREATE TABLE ev (person_id VARCHAR, _rk SMALLINT, _rk2 BIGINT, code VARCHAR, event_date DATE, "
                "visit_date DATE, value DOUBLE, cost BIGINT)")
    con.execute("INSERT INTO ev VALUES ('a', 200, 4000000000, 'C10', NULL, NULL, 1, 1), "
                "('a', 200, 4000000000, 'C10', NULL, NULL, 2, 2), ('a', 200, 4000000000, 'C10', NULL, NULL, 3, 3), "
                "('b', 100, 1000000000, 'C10', NULL, NULL, 10, 10)")
    plan = validate("SELECT code, count(*), sum(value) FROM events GROUP BY code", DICTIONARIES, max_cells=10)
    (row,) = run(con, contributions_sql(plan, dialect="duckdb", tables={"events": "ev"}, optouts=None)).values()
    assert row["n_persons"] == 2 and row["n_rows"] == 4 and row["rows_max"] == 3
    assert row["ckey"] == (200 + 100) % 256  # the frequency key: once per person

    def row_key(rk2, text):  # the magnitude key: one per row, from the person's secret key and the row
        return (rk2 + int(hashlib.md5(text.encode()).hexdigest()[:8], 16)) % 2**32
    rows = [(4000000000, "C10|||1.0|1"), (4000000000, "C10|||2.0|2"), (4000000000, "C10|||3.0|3"),
            (1000000000, "C10|||10.0|10")]
    assert row["ckey2"] == sum(row_key(*r) for r in rows) % 2**32
    assert row["m1_ckey2"] == row["ckey2"]  # every row has a value
    assert row["m1_persons"] == 2 and row["m1_ckey"] == 300 % 256
    assert row["m1_n"] == 4 and row["m1_sum"] == 16 and row["m1_sumsq"] == 1 + 4 + 9 + 100
    assert row["m1_top1"] == 10 and row["m1_top2"] == 6 and row["m1_sqtop1"] == 100
    assert "m0_n" not in row  # count(*) has no measure


def test_magnitude_key_differs_when_one_row_differs():
    """Same persons, one row fewer: the magnitude keys differ (a per-person key would give both cells
    the same noise, and the difference of the released sums would reveal that row's value)."""
    con = duckdb.connect()
    con.execute("CREATE TABLE ev (person_id VARCHAR, _rk SMALLINT, _rk2 BIGINT, code VARCHAR, event_date DATE, "
                "visit_date DATE, value DOUBLE, cost BIGINT)")
    con.execute("INSERT INTO ev VALUES ('a', 7, 123456789, 'C10', NULL, NULL, 1, 1), "
                "('a', 7, 123456789, 'C10', NULL, NULL, 2, 2), ('b', 9, 987654321, 'C10', NULL, NULL, 3, 3)")
    every = validate("SELECT code, sum(value) FROM events GROUP BY code", DICTIONARIES, max_cells=10)
    fewer = validate("SELECT code, sum(value) FROM events WHERE cost <> 2 GROUP BY code", DICTIONARIES, max_cells=10)
    (a,) = run(con, contributions_sql(every, dialect="duckdb", tables={"events": "ev"}, optouts=None)).values()
    (b,) = run(con, contributions_sql(fewer, dialect="duckdb", tables={"events": "ev"}, optouts=None)).values()
    assert a["n_persons"] == b["n_persons"] == 2 and a["ckey"] == b["ckey"]
    assert a["ckey2"] != b["ckey2"] and a["m0_ckey2"] != b["m0_ckey2"]


def test_output_columns_in_order():
    plan = validate("SELECT p.region, p.sex, count(*), avg(p.weight), count(DISTINCT person_id), sum(p.children) "
                    "FROM patients p GROUP BY 1, 2", DICTIONARIES, max_cells=100)
    con = load(make_data(seed=3, persons=10))
    cursor = con.execute(contributions_sql(plan, dialect="duckdb", tables=TABLES, optouts="optouts"))
    names = [d[0] for d in cursor.description]
    measure = ["n", "persons", "ckey", "ckey2", "sum", "sumsq", "top1", "top2", "sqtop1"]
    assert names == ["k0", "k1", "n_persons", "ckey", "ckey2", "n_rows", "rows_max"] + \
        [f"m1_{s}" for s in measure] + [f"m3_{s}" for s in measure]


def test_exact_integer_sums_and_big_products_in_double():
    plan = validate("SELECT sum(e.cost * 2), sum(p.income * p.income) FROM patients p JOIN events e USING (person_id)",
                    DICTIONARIES, max_cells=10)
    assert [s.exact for s in plan.statistics] == [True, False]
    assert plan.statistics[0].bounds == (0, 200_000)
    assert plan.statistics[1].bounds == (0, 25e12)


@pytest.mark.parametrize("case", VALID)
def test_spark_sql_is_produced_and_parses_back(case):
    sql, _ = build(*case)
    plan = validate(sql, DICTIONARIES, max_cells=10_000)
    spark = contributions_sql(plan, dialect="spark", tables={n: f"store.{n}_v3" for n in TABLES},
                              optouts="store.optouts")
    tree = sqlglot.parse_one(spark, read="spark")
    assert "`store`.`patients_v3`" in spark or "`store`.`events_v3`" in spark
    names = [s.alias_or_name for s in tree.expressions]
    assert names[:len(plan.keys)] == [f"k{i}" for i in range(len(plan.keys))]
    assert "n_persons" in names and "ckey" in names and "ckey2" in names


def test_one_row_per_person_flag():
    assert validate("SELECT count(*) FROM patients", DICTIONARIES, max_cells=1).one_row_per_person
    assert not validate("SELECT count(*) FROM patients p JOIN events e USING (person_id)", DICTIONARIES,
                        max_cells=1).one_row_per_person


def test_where_narrows_key_domains():
    plan = validate("SELECT region, stage, count(*) FROM patients WHERE region IN ('south', 'north') AND stage = 2 "
                    "GROUP BY region, stage", DICTIONARIES, max_cells=10)
    assert [k.domain for k in plan.keys] == [("north", "south"), (2,)]
    assert plan.grid_size == 2 and list(plan.grid()) == [("north", 2), ("south", 2)]
    plan = validate("SELECT date_trunc('year', birth_date) y, count(*) FROM patients "
                    "WHERE date_trunc('year', birth_date) IN ('1990-01-01', '1991-01-01') GROUP BY y",
                    DICTIONARIES, max_cells=10)
    assert plan.keys[0].domain == (dt.date(1990, 1, 1), dt.date(1991, 1, 1))


def test_key_domains_and_names():
    plan = validate("SELECT sex, smoker, children, extract(month FROM birth_date), date_trunc('year', birth_date), "
                    "CASE WHEN weight < 50 THEN 'b' WHEN weight > 150 THEN 'a' END AS w, count(*) FROM patients "
                    "GROUP BY 1, 2, 3, 4, 5, 6", DICTIONARIES, max_cells=10**9)
    sex, smoker, children, month, year, band = plan.keys
    assert sex.domain == ("F", "M") and smoker.domain == (False, True) and children.domain == tuple(range(13))
    assert month.domain == tuple(range(1, 13)) and len(year.domain) == 81 and band.domain == ("a", "b")
    assert [k.kind for k in plan.keys] == ["category", "category", "integer", "date", "date", "band"]
    assert [k.name for k in plan.keys] == ["sex", "smoker", "children", "birth_date_month", "birth_date_year", "w"]
    assert plan.grid_size == 2 * 2 * 13 * 12 * 81 * 2


def test_names_are_case_insensitive_and_read_as_stored():
    from environment.dictionary import Column, ColumnType, Dictionary, Role
    d = Dictionary("Visits", (Column("NHS", ColumnType.TEXT, Role.IDENTIFIER),
                              Column("Ward", ColumnType.TEXT, Role.CATEGORY, values=("a", "b")),
                              Column("Stay", ColumnType.INTEGER, Role.MEASURE, min=0, max=30)))
    plan = validate("SELECT WARD, sum(stay) FROM visits GROUP BY ward", {"Visits": d}, max_cells=10)
    con = duckdb.connect()
    con.execute('CREATE TABLE v (person_id VARCHAR, _rk SMALLINT, _rk2 BIGINT, "Ward" VARCHAR, "Stay" BIGINT)')
    con.execute("INSERT INTO v VALUES ('x', 1, 2, 'a', 40), ('y', 3, 4, 'a', NULL), ('z', 5, 6, NULL, 1)")
    rows = run(con, contributions_sql(plan, dialect="duckdb", tables={"visits": "v"}, optouts=None))
    assert list(rows) == [("a",)] and rows[("a",)]["m0_sum"] == 30 and rows[("a",)]["n_persons"] == 2


def test_spark_sums_exact_measures_as_decimal():
    plan = validate("SELECT sum(e.cost * 2), avg(e.value) FROM events e", DICTIONARIES, max_cells=10)
    spark = contributions_sql(plan, dialect="spark", tables=TABLES, optouts=None)
    duck = contributions_sql(plan, dialect="duckdb", tables=TABLES, optouts=None)
    assert spark.count("DECIMAL(38, 0)") == 2 and "DECIMAL" not in duck
    sqlglot.parse_one(spark, read="spark")
