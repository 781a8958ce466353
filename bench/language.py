"""Engine-level benchmark of the version-2 language: the statement contributions_sql() emits against a
hand-written DuckDB statement computing the same per-person contributions, on the issue's workload
(`region, code, count(*), avg(value)` on a 10 × 300 grid over 5,000,000 rows / 500,000 persons).

    .venv/bin/python bench/language.py [--rows 5000000] [--repeat 3] [--threads 2]

Target (issue 15): the emitted statement ≤ 1.5 × the raw one + 0.3 s.
"""

import argparse
import sys
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from environment.dictionary import Column, ColumnType, Dictionary, Role  # noqa: E402
from queries.language import contributions_sql, validate  # noqa: E402

REGIONS = tuple(f"r{i}" for i in range(10))
CODES = tuple(f"c{i:03d}" for i in range(300))
DICTIONARY = Dictionary("gp_events", (
    Column("nhs_number", ColumnType.TEXT, Role.IDENTIFIER),
    Column("region", ColumnType.TEXT, Role.CATEGORY, values=REGIONS),
    Column("code", ColumnType.TEXT, Role.CATEGORY, values=CODES),
    Column("value", ColumnType.FLOAT, Role.MEASURE, min=0.0, max=100.0),
))
QUERY = "SELECT region, code, count(*), avg(value) FROM gp_events GROUP BY region, code"
# The same per-person contributions, written by hand for DuckDB (no clamping, NOT IN for opt-outs).
RAW = """
SELECT region, code, count(*), sum(rk) % 256, sum(rk2) % 4294967296, sum(r), max(r), sum(n), sum(s), sum(q),
       max(abs(s), 2), max(q)
FROM (SELECT region, code, person_id, min(_rk) AS rk, min(_rk2) AS rk2, count(*) AS r, count(value) AS n,
             sum(value) AS s, sum(value * value) AS q
      FROM gp_events WHERE person_id NOT IN (SELECT person_id FROM optouts) GROUP BY ALL)
GROUP BY ALL
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    persons = max(args.rows // 10, 1)
    con = duckdb.connect(config={"threads": args.threads})
    con.execute(f"""CREATE TABLE gp_events AS SELECT
        md5((i % {persons})::VARCHAR) AS person_id, (hash(i % {persons}) % 256)::SMALLINT AS _rk,
        (hash((i % {persons}) + 1) % 4294967296)::BIGINT AS _rk2, 'r' || (hash(i % {persons}) % 10)::VARCHAR AS region,
        'c' || lpad((hash(i * 7 + 3) % 300)::VARCHAR, 3, '0') AS code, random() * 120 AS value
        FROM range({args.rows}) t(i)""")
    con.execute("CREATE TABLE optouts AS SELECT md5(i::VARCHAR) AS person_id FROM range(0, 1000) t(i)")
    plan = validate(QUERY, {"gp_events": DICTIONARY}, max_cells=10_000)
    ours = contributions_sql(plan, dialect="duckdb", tables={"gp_events": "gp_events"}, optouts="optouts")
    times = {"raw": [], "ours": []}
    for _ in range(args.repeat):
        for name, sql in (("raw", RAW), ("ours", ours)):
            start = time.perf_counter()
            rows = con.execute(sql).fetchall()
            times[name].append(time.perf_counter() - start)
            assert len(rows) == 3000, len(rows)
    raw, mine = min(times["raw"]), min(times["ours"])
    print(f"rows {args.rows:,}  persons {persons:,}  threads {args.threads}")
    print(f"raw DuckDB per-person contributions: {raw:.3f} s (best of {args.repeat})")
    print(f"contributions_sql():                 {mine:.3f} s  ratio {mine / raw:.2f}  "
          f"target <= {1.5 * raw + 0.3:.3f} s: {'met' if mine <= 1.5 * raw + 0.3 else 'NOT met'}")


if __name__ == "__main__":
    main()
