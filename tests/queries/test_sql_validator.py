"""The validator: hostile queries are refused with the rule that names why; accepted ones are described."""

import pickle

import pytest

from queries.sql import OutputColumn, QueryRejected, referenced_datasets, validate_and_rewrite

SCHEMA = {
    "patients": {"person_id": "text", "region": "text", "sex": "text", "birth_date": "date",
                 "weight": "float", "smoker": "boolean"},
    "events": {"person_id": "text", "region": "text", "code": "text", "event_date": "date",
               "value": "float", "cost": "integer"},
}

JOIN = "FROM patients p JOIN events e ON p.person_id = e.person_id"

HOSTILE = [
    # row-level output
    ("SELECT region FROM patients", "row_level_output"),
    ("SELECT region, weight, count(*) FROM patients GROUP BY region", "row_level_output"),
    ("SELECT 'x' AS label, count(*) FROM patients", "row_level_output"),
    ("SELECT weight + 0 AS w, count(*) FROM patients GROUP BY weight", "row_level_output"),
    ("SELECT * FROM patients", "star"),
    ("SELECT p.* FROM patients p", "star"),
    ("SELECT *, count(*) FROM patients GROUP BY region", "star"),
    ("TABLE patients", "star"),
    ("SELECT region FROM patients GROUP BY region", "no_aggregate"),
    ("SELECT count(*) FROM patients GROUP BY region", "group_by_not_selected"),
    # person_id anywhere but count(DISTINCT person_id) and join conditions
    ("SELECT person_id, count(*) FROM patients GROUP BY person_id", "person_id_use"),
    ("SELECT count(*) FROM patients GROUP BY person_id", "person_id_use"),
    ("SELECT count(*) FROM patients WHERE person_id = 'a1b2c3'", "person_id_use"),
    ("SELECT count(*) FROM patients WHERE PERSON_ID IN ('x', 'y')", "person_id_use"),
    ("SELECT count(person_id) FROM patients", "person_id_use"),
    ("SELECT count(DISTINCT lower(person_id)) FROM patients", "person_id_use"),
    ("SELECT sum(length(person_id)) FROM patients", "person_id_use"),
    ("SELECT left(person_id, 3) AS prefix, count(*) FROM patients GROUP BY 1", "person_id_use"),
    ("SELECT CASE WHEN person_id LIKE 'a%' THEN 1 ELSE 0 END AS x, count(*) FROM patients GROUP BY 1",
     "person_id_use"),
    ("SELECT region, count(*) FROM patients GROUP BY region HAVING sum(length(person_id)) > 1", "person_id_use"),
    (f"SELECT count(*) {JOIN} WHERE e.person_id IS NOT NULL", "person_id_use"),
    ("SELECT region, count(*) FROM patients GROUP BY region ORDER BY person_id", "person_id_use"),
    # min / max, windows
    ("SELECT min(weight) FROM patients", "min_max"),
    ("SELECT region, MAX(birth_date) FROM patients GROUP BY region", "min_max"),
    ("SELECT count(*) FROM patients HAVING max(weight) > 100", "min_max"),
    ("SELECT count(*) OVER () FROM patients", "window"),
    ("SELECT region, sum(count(*)) OVER (PARTITION BY region) FROM patients GROUP BY region", "window"),
    ("SELECT region, count(*) FROM patients GROUP BY region WINDOW w AS (PARTITION BY region)", "window"),
    # LIMIT and friends, INTO, locks, DISTINCT
    ("SELECT region, count(*) FROM patients GROUP BY region LIMIT 1", "limit"),
    ("SELECT region, count(*) FROM patients GROUP BY region OFFSET 1", "limit"),
    ("SELECT region, count(*) FROM patients GROUP BY region FETCH FIRST 1 ROWS ONLY", "limit"),
    ("SELECT count(*) INTO leaked FROM patients", "into"),
    ("SELECT region, count(*) FROM patients GROUP BY region FOR UPDATE", "lock"),
    ("SELECT DISTINCT region FROM patients", "select_distinct"),
    ("SELECT DISTINCT ON (region) region, count(*) FROM patients GROUP BY region", "select_distinct"),
    # several statements, also hidden behind comments
    ("SELECT count(*) FROM patients; SELECT count(*) FROM events", "multiple_statements"),
    ("SELECT count(*) FROM patients; DROP TABLE patients", "multiple_statements"),
    ("SELECT count(*) FROM patients; -- just a comment\nDROP TABLE patients", "multiple_statements"),
    ("SELECT count(*) FROM patients /* ; */; /* DROP TABLE patients */", "multiple_statements"),
    ("SELECT count(*) FROM patients;;", "multiple_statements"),
    # DDL, DML and engine commands
    ("DROP TABLE patients", "not_select"),
    ("INSERT INTO patients (region) VALUES ('x')", "not_select"),
    ("UPDATE patients SET region = 'x'", "not_select"),
    ("DELETE FROM patients", "not_select"),
    ("CREATE TABLE copy AS SELECT count(*) FROM patients", "not_select"),
    ("COPY patients TO '/tmp/out.csv'", "not_select"),
    ("COPY (SELECT count(*) FROM patients) TO '/tmp/out.csv'", "not_select"),
    ("ATTACH '/tmp/other.db' AS other", "parse_error"),
    ("PRAGMA database_list", "not_select"),
    ("SET memory_limit = '100GB'", "not_select"),
    ("INSTALL httpfs", "not_select"),
    ("LOAD httpfs", "not_select"),
    ("EXPLAIN SELECT count(*) FROM patients", "not_select"),
    ("CALL pragma_version()", "not_select"),
    ("VALUES (1)", "not_select"),
    ("BEGIN", "not_select"),
    # file, catalog and other functions outside the allow-list
    ("SELECT count(*) FROM read_csv('/etc/passwd')", "table_function"),
    ("SELECT count(*) FROM read_parquet('/data/x.parquet')", "table_function"),
    ("SELECT count(*) FROM duckdb_tables()", "table_function"),
    ("SELECT count(*) FROM duckdb_settings()", "table_function"),
    ("SELECT count(*) FROM generate_series(1, 10)", "table_function"),
    ("SELECT count(*) FROM information_schema.tables", "schema_qualified"),
    ("SELECT count(*) FROM pg_catalog.pg_tables", "schema_qualified"),
    ("SELECT count(*) FROM main.patients", "schema_qualified"),
    ("SELECT count(*) FROM patients WHERE main.patients.region = 'x'", "schema_qualified"),
    ("SELECT count(*), current_setting('home_directory') AS h FROM patients", "function_not_allowed"),
    ("SELECT sum(length(read_text('/etc/passwd'))) FROM patients", "function_not_allowed"),
    ("SELECT count(*) FROM patients WHERE region = getenv('HOME')", "function_not_allowed"),
    ("SELECT count(*) FROM patients WHERE version() = 'x'", "function_not_allowed"),
    ("SELECT count(*) FROM patients WHERE md5(region) = 'x'", "function_not_allowed"),
    ("SELECT count(*) FROM patients WHERE region ~ '^n'", "function_not_allowed"),
    ("SELECT random() AS r, count(*) FROM patients GROUP BY 1", "function_not_allowed"),
    ("SELECT count(*) FROM patients WHERE now() > birth_date", "function_not_allowed"),
    ("SELECT string_agg(region, ',') FROM patients", "function_not_allowed"),
    ("SELECT array_agg(region) FROM patients", "function_not_allowed"),
    ("SELECT sum(weight, 2) FROM patients", "parse_error"),
    ("SELECT count(*) FILTER (WHERE sex = 'F') FROM patients", "construct_not_allowed"),
    ("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY weight) FROM patients", "construct_not_allowed"),
    ("SELECT count(*) FROM patients WHERE region = $1", "construct_not_allowed"),
    ("SELECT count(*) FROM patients TABLESAMPLE SYSTEM (10)", "construct_not_allowed"),
    ("SELECT count(*) FROM patients WHERE region::regclass IS NULL", "type_not_allowed"),
    ("SELECT count(*) FROM patients WHERE CAST(region AS BLOB) IS NULL", "type_not_allowed"),
    ("SELECT count(*) FROM patients WHERE region::varchar(3) = 'x'", "type_not_allowed"),
    # datasets
    ("SELECT count(*) FROM secret_dataset", "unknown_dataset"),
    ("SELECT count(*) FROM tre_optouts", "unknown_dataset"),
    ("SELECT count(*) FROM sqlite_master", "unknown_dataset"),
    ("SELECT count(*) FROM patients p JOIN secret s ON p.person_id = s.person_id", "unknown_dataset"),
    ("SELECT count(*)", "no_dataset"),
    ("SELECT count(*) FROM patients AS _tre_main", "reserved_name"),
    ("SELECT count(*) FROM patients a JOIN events a ON a.person_id = a.person_id", "duplicate_alias"),
    # look-alikes, NUL bytes, size
    ("SELECT count(*) FROM p\u0430tients", "non_ascii"),
    ("S\u0415LECT count(*) FROM patients", "non_ascii"),
    ("SELECT count(*) FROM patients WHERE region = 'Z\u00fcrich'", "non_ascii"),
    ("SELECT count(*) FROM patients\u200b", "non_ascii"),
    ("SELECT count(*) FROM patients\x00; DROP TABLE patients", "nul_byte"),
    ("SELECT count(*) FROM patients WHERE region = '\x1b[2Jnorth'", "control_character"),
    ("SELECT count(*) FROM patients WHERE region IN (" + ", ".join(["'north'"] * 15_000) + ")", "too_large"),
    # subqueries, CTEs, set operations
    ("SELECT count(*) FROM (SELECT * FROM patients) p", "subquery"),
    ("SELECT count(*) FROM patients WHERE region IN (SELECT region FROM events)", "subquery"),
    ("SELECT count(*) FROM patients WHERE EXISTS (SELECT 1 FROM events)", "subquery"),
    ("SELECT (SELECT count(*) FROM events) AS n, count(*) FROM patients", "subquery"),
    ("(SELECT count(*) FROM patients)", "subquery"),
    ("SELECT count(*) FROM patients p JOIN LATERAL (SELECT 1) x ON true", "subquery"),
    ("WITH x AS (SELECT * FROM patients) SELECT count(*) FROM x", "cte"),
    ("SELECT count(*) FROM patients UNION SELECT count(*) FROM events", "set_operation"),
    ("SELECT count(*) FROM patients INTERSECT SELECT count(*) FROM events", "set_operation"),
    ("SELECT count(*) FROM patients EXCEPT SELECT count(*) FROM events", "set_operation"),
    # joins
    ("SELECT count(*) FROM patients NATURAL JOIN events", "join"),
    ("SELECT count(*) FROM patients CROSS JOIN events", "join"),
    ("SELECT count(*) FROM patients, events", "join"),
    ("SELECT count(*) FROM patients p JOIN events e ON p.region = e.region", "join"),
    ("SELECT count(*) FROM patients p JOIN events e ON p.person_id = e.person_id AND e.value > 3", "join"),
    ("SELECT count(*) FROM patients p JOIN events e ON p.person_id <> e.person_id", "join"),
    ("SELECT count(*) FROM patients p JOIN events e ON p.person_id = p.person_id", "join"),
    ("SELECT count(*) FROM patients p JOIN events e ON person_id = person_id", "join"),
    ("SELECT count(*) FROM patients p JOIN events e ON true", "join"),
    ("SELECT count(*) FROM patients JOIN events USING (person_id, region)", "join"),
    ("SELECT count(*) FROM patients p RIGHT JOIN events e ON p.person_id = e.person_id", "join"),
    ("SELECT count(*) FROM patients p FULL JOIN events e ON p.person_id = e.person_id", "join"),
    # columns
    ("SELECT nhs_number, count(*) FROM patients GROUP BY 1", "unknown_column"),
    ("SELECT count(*) FROM patients WHERE salary > 3", "unknown_column"),
    ("SELECT count(*) FROM patients p JOIN events e USING (person_id) WHERE x.code = 'a'", "unknown_column"),
    ("SELECT p.code, count(*) " + JOIN + " GROUP BY 1", "unknown_column"),
    ("SELECT region, count(*) " + JOIN + " GROUP BY region", "ambiguous_column"),
    # output shape
    ("SELECT sum(weight) + 1 FROM patients", "aggregate_arithmetic"),
    ("SELECT sum(weight) / count(*) AS mean FROM patients", "aggregate_arithmetic"),
    ("SELECT round(avg(weight), 1) FROM patients", "aggregate_arithmetic"),
    ("SELECT CAST(count(*) AS float) FROM patients", "aggregate_arithmetic"),
    ("SELECT sum(DISTINCT weight) FROM patients", "distinct_aggregate"),
    ("SELECT count(DISTINCT region, sex) FROM patients", "distinct_aggregate"),
    ("SELECT sum(count(*)) FROM patients", "nested_aggregate"),
    ("SELECT sum(region) FROM patients", "argument_type"),
    ("SELECT region, count(*) FROM patients WHERE count(*) > 1 GROUP BY region", "aggregate_in_where"),
    ("SELECT region, count(*) FROM patients GROUP BY ROLLUP (region)", "group_by"),
    ("SELECT region, count(*) FROM patients GROUP BY ALL", "group_by"),
    ("SELECT region, count(*) FROM patients GROUP BY 5", "group_by"),
    ("SELECT region, count(*) FROM patients GROUP BY 2", "group_by"),
    ("SELECT region, count(*) AS n_persons FROM patients GROUP BY region", "reserved_name"),
    ("SELECT region AS person_id, count(*) FROM patients GROUP BY 1", "reserved_name"),
    ("SELECT region AS x, count(*) AS x FROM patients GROUP BY region", "duplicate_name"),
    ("SELECT region, count(*) FROM patients GROUP BY region ORDER BY sex", "order_by"),
    ("SELECT region, count(*) FROM patients GROUP BY region HAVING sex = 'F'", "having"),
    # not SQL at all
    ("", "empty"),
    ("-- only a comment", "empty"),
    ("SELECT count(* FROM patients", "parse_error"),
    ("SELECT 'unterminated FROM patients", "parse_error"),
]


@pytest.mark.parametrize("sql, rule", HOSTILE)
def test_hostile_queries_are_rejected_with_their_rule(sql, rule):
    with pytest.raises(QueryRejected) as caught:
        validate_and_rewrite(sql, schema=SCHEMA)
    assert caught.value.rule == rule, str(caught.value)
    assert caught.value.message.startswith(f"rule {rule}: ")


def test_the_corpus_is_large_and_covers_many_rules():
    assert len(HOSTILE) >= 60
    assert len({rule for _, rule in HOSTILE}) >= 30


def test_rejection_carries_the_position_of_the_offending_text():
    with pytest.raises(QueryRejected) as caught:
        validate_and_rewrite("SELECT region,\n       min(weight)\nFROM patients GROUP BY region", schema=SCHEMA)
    assert caught.value.position == (2, 8)
    assert str(caught.value) == "rule min_max: min() and max() reveal individual values (line 2, column 8)"


def test_rejection_survives_pickling():
    error = pickle.loads(pickle.dumps(QueryRejected("limit", "LIMIT is not allowed", (1, 5))))
    assert (error.rule, error.message, error.position) == ("limit", "rule limit: LIMIT is not allowed", (1, 5))
    assert str(error) == "rule limit: LIMIT is not allowed (line 1, column 5)"


def test_look_alike_character_is_located():
    with pytest.raises(QueryRejected) as caught:
        validate_and_rewrite("SELECT count(*)\nFROM p\u0430tients", schema=SCHEMA)
    assert caught.value.position == (2, 7)
    assert "U+0430" in str(caught.value)


def test_parse_error_has_a_position():
    with pytest.raises(QueryRejected) as caught:
        validate_and_rewrite("SELECT count(*) FROM patients WHERE (region = 'x'", schema=SCHEMA)
    assert caught.value.rule == "parse_error"
    assert caught.value.position is not None and caught.value.position[0] == 1


def test_size_is_measured_in_utf8_bytes_before_parsing():
    sql = "SELECT count(*) FROM patients"
    assert validate_and_rewrite(sql, schema=SCHEMA, max_bytes=len(sql)).datasets == ("patients",)
    with pytest.raises(QueryRejected) as caught:
        validate_and_rewrite(sql + " ", schema=SCHEMA, max_bytes=len(sql))
    assert caught.value.rule == "too_large"
    with pytest.raises(QueryRejected) as caught:  # 20 characters, 40 bytes: too large, not non_ascii
        validate_and_rewrite("\u0430" * 20, schema=SCHEMA, max_bytes=30)
    assert caught.value.rule == "too_large"


def test_deeply_nested_query_is_refused_not_crashing():
    sql = "SELECT count(*) FROM patients WHERE " + "(" * 3000 + "weight > 1" + ")" * 3000
    with pytest.raises(QueryRejected) as caught:
        validate_and_rewrite(sql, schema=SCHEMA)
    assert caught.value.rule == "too_complex"


def test_comments_never_reach_the_rewritten_sql():
    sql = "SELECT count(*) -- */ DROP TABLE patients; /*\nFROM patients /* hidden */"
    query = validate_and_rewrite(sql, schema=SCHEMA)
    assert "DROP" not in query.rewritten_sql and "hidden" not in query.rewritten_sql
    assert "DROP" not in query.persons_sql


def test_a_single_trailing_semicolon_is_fine():
    assert validate_and_rewrite("SELECT count(*) FROM patients;  \n", schema=SCHEMA).sql == \
        "SELECT count(*) FROM patients;"


def test_accepted_query_is_described():
    query = validate_and_rewrite(
        "select P.Region AS Area, e.code, COUNT(*), count(DISTINCT p.person_id) AS people, sum(e.cost), "
        "avg(e.value) AS mean_value, median(e.value), stddev(e.value) "
        'FROM Patients p JOIN "EVENTS" e ON p.person_id = e.person_id GROUP BY 1, e.code', schema=SCHEMA)
    assert query.datasets == ("events", "patients")
    assert query.columns == (
        OutputColumn("area", "key"),
        OutputColumn("code", "key"),
        OutputColumn("count", "count"),
        OutputColumn("people", "count"),
        OutputColumn("sum_cost", "sum", "sum_cost_top1", "sum_cost_top2", "sum_cost_total"),
        OutputColumn("mean_value", "avg", "mean_value_top1", "mean_value_top2", "mean_value_total"),
        OutputColumn("median_value", "stat"),
        OutputColumn("stddev_value", "stat"),
    )


def test_default_and_helper_names_stay_unique():
    query = validate_and_rewrite(
        "SELECT region, region, count(*), count(*), sum(weight) AS sum_weight_top1, sum(weight) FROM patients "
        "GROUP BY region", schema=SCHEMA)
    names = [c.name for c in query.columns]
    assert names == ["region", "region_2", "count", "count_2", "sum_weight_top1", "sum_weight"]
    helpers = [h for c in query.columns for h in (c.top1, c.top2, c.total) if h]
    assert len(set(names + helpers + ["n_persons"])) == len(names) + len(helpers) + 1
    assert query.columns[5].top1 == "sum_weight_top1_2"


@pytest.mark.parametrize("sql", [
    "SELECT region, count(*) FROM patients GROUP BY region",
    "SELECT region, count(*) FROM patients GROUP BY 1",
    "SELECT region AS r, count(*) FROM patients GROUP BY r",
    "SELECT lower(region) AS r, count(*) FROM patients GROUP BY lower(region)",
    "SELECT count(*) FROM patients JOIN events USING (person_id)",
    "SELECT count(DISTINCT person_id) FROM patients p LEFT JOIN events e ON e.person_id = p.person_id",
    "SELECT region, count(*) AS n FROM patients GROUP BY region HAVING count(DISTINCT person_id) >= 10",
    "SELECT region, count(*) AS n FROM patients GROUP BY region HAVING n > 3 ORDER BY n DESC, 1",
    "SELECT region, count(*) FROM patients GROUP BY region ORDER BY count(*) DESC",
    "SELECT count(*) FROM patients WHERE region IS NOT NULL AND sex IN ('F', 'M') AND weight BETWEEN 40 AND 90",
    "SELECT extract(year FROM birth_date) AS y, count(*) FROM patients GROUP BY y",
    "SELECT date_part('year', birth_date) AS y, count(*) FROM patients GROUP BY 1",
    "SELECT date_trunc('month', e.event_date) AS m, sum(e.cost) FROM events e GROUP BY 1",
    "SELECT count(*) FROM events WHERE event_date >= DATE '2020-01-01' + INTERVAL '1 day'",
    "SELECT CAST(weight AS integer) / 10 AS band, count(*) FROM patients GROUP BY band",
    "SELECT count(*) FROM patients WHERE starts_with(lower(region), 'n') OR substr(sex, 1, 1) = 'F'",
    "SELECT coalesce(nullif(region, ''), 'unknown') AS r, count(*) FROM patients GROUP BY 1",
    "SELECT count(*) FROM patients -- a comment is fine\n",
])
def test_research_queries_are_accepted(sql):
    assert validate_and_rewrite(sql, schema=SCHEMA).columns


def test_referenced_datasets_lists_tables_before_any_other_check():
    assert referenced_datasets("SELECT * FROM Patients p JOIN events e ON true") == ["events", "patients"]
    assert referenced_datasets("SELECT count(*) FROM secret") == ["secret"]
    assert referenced_datasets("SELECT count(*) FROM main.secret") == ["main.secret"]
    assert referenced_datasets("WITH x AS (SELECT * FROM a) SELECT * FROM x") == ["a"]
    assert referenced_datasets("SELECT count(*) FROM read_csv('/etc/passwd')") == []


@pytest.mark.parametrize("sql, rule", [
    ("SELECT 1; DROP TABLE patients", "multiple_statements"),
    ("DROP TABLE patients", "not_select"),
    ("SELECT 'x\x00'", "nul_byte"),
    ("SELECT count(*) FROM p\u0430tients", "non_ascii"),
    ("SELECT (", "parse_error"),
    ("SELECT " + "1, " * 40_000 + "1", "too_large"),
])
def test_referenced_datasets_refuses_what_cannot_be_read(sql, rule):
    with pytest.raises(QueryRejected) as caught:
        referenced_datasets(sql)
    assert caught.value.rule == rule
