"""Strict, complete ingestion (``environment.loader``), file in, store file or every error out."""

import csv
import io
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from environment import filesources
from environment.declaration import declare
from environment.ingest import MAX_ERRORS, build_version_file
from environment.pseudonym import make_nhs_number, person_id_for
from environment.recordkeys import record_keys
from tests.factories import make_invalid_nhs_number

DECLARATION = {
    "name": "adm", "identifier_column": "nhs_number",
    "columns": [
        {"name": "nhs_number", "type": "text"},
        {"name": "sex", "type": "text", "values": ["F", "M"]},
        {"name": "region", "type": "text"},
        {"name": "age", "type": "integer"},
        {"name": "weight", "type": "float"},
        {"name": "admitted", "type": "date"},
        {"name": "smoker", "type": "boolean"},
        {"name": "postcode", "type": "text", "drop": True},
    ],
}
HEADER = [c["name"] for c in DECLARATION["columns"]]


def good(i, **overrides):
    r = {"nhs_number": make_nhs_number(i), "sex": "FM"[i % 2], "region": "north" if i % 3 else "south",
         "age": str(20 + i % 60), "weight": f"{60 + i % 30}.5", "admitted": f"2024-0{1 + i % 9}-1{i % 10}",
         "smoker": "TRUE" if i % 3 == 0 else "false", "postcode": "AB1 2CD"}
    r.update(overrides)
    return r


def csv_bytes(rows, header=HEADER) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([r.get(h, "") for h in header])
    return out.getvalue().encode("utf-8")


def dictionary(**changes):
    d, errors = declare({**DECLARATION, **changes})
    assert not errors
    return d


def run(tmp_path, content: bytes, *, d=None, fmt="csv", name="in.csv", **kw):
    src = tmp_path / name
    src.write_bytes(content)
    out = tmp_path / "out.duckdb"
    out.unlink(missing_ok=True)
    result = build_version_file(source=src, fmt=fmt, dictionary=d or dictionary(), out_path=out,
                                temp_dir=tmp_path, threshold=kw.pop("threshold", 2), **kw)
    assert result.ok == out.exists()
    return result, out


def rows_of(out, sql="SELECT * FROM data ORDER BY ALL"):
    con = duckdb.connect(str(out), read_only=True)
    try:
        cur = con.execute(sql)
        return [d[0] for d in cur.description], cur.fetchall()
    finally:
        con.close()


def test_a_good_file_is_stored_typed_with_record_keys_and_a_completed_dictionary(tmp_path):
    result, out = run(tmp_path, csv_bytes([good(i) for i in range(12)]))
    assert (result.ok, result.row_count, result.person_count) == (True, 12, 12)
    names, rows = rows_of(out, "SELECT * FROM data ORDER BY age")
    assert names == ["person_id", "sex", "region", "age", "weight", "admitted", "smoker", "_rk", "_rk2"]
    pid = person_id_for(make_nhs_number(0))
    first = rows[0]
    assert first[0] == pid and first[3] == 20 and first[6] is True
    assert (first[7], first[8]) == record_keys(pid)
    d = result.dictionary
    assert d.complete
    assert d.column("region").values == ("north", "south", "other")
    assert (d.column("age").min, d.column("age").max) == (20, 31)  # p99 30.89 rounded up
    assert d.column("admitted").min.isoformat() == "2024-01-01"


def test_rare_values_are_recoded_at_the_first_load_and_later_loads_keep_the_domain(tmp_path):
    rows = [good(i, region="north") for i in range(10)] + [good(10, region="isle of wight")]
    result, out = run(tmp_path, csv_bytes(rows), threshold=10)
    assert result.dictionary.column("region").values == ("north", "other")
    assert rows_of(out, "SELECT region, count(*) FROM data GROUP BY ALL ORDER BY ALL")[1] == [("north", 10), ("other", 1)]
    # the second version: the frozen domain; new values become other, no error; no new derivation
    later = [good(i, region="south") for i in range(3)] + [good(3, region="north", age="999")]
    result2, out2 = run(tmp_path, csv_bytes(later), d=result.dictionary, threshold=10)
    assert result2.ok and result2.dictionary is None
    assert rows_of(out2, "SELECT region, count(*) FROM data GROUP BY ALL ORDER BY ALL")[1] == [("north", 1), ("other", 3)]
    assert rows_of(out2, "SELECT max(age) FROM data")[1] == [(999,)]  # measures are not clamped in the store


def test_mixed_errors_in_many_rows_and_columns_are_all_reported(tmp_path):
    rows = [good(i) for i in range(6)]
    rows[1].update(age="40.5", weight="NaN")
    rows[2].update(admitted="2024-2-3", smoker="yes", sex="X")
    rows[3].update(nhs_number=make_invalid_nhs_number(3), weight="-inf")
    rows[4].update(nhs_number="")
    result, out = run(tmp_path, csv_bytes(rows) + b"4000000004,F\n")
    assert not result.ok
    assert result.error_count == 9
    assert result.errors == [
        {"row": 2, "column": "age", "value_preview": "40.5", "reason": "not an integer"},
        {"row": 2, "column": "weight", "value_preview": "NaN", "reason": "not a finite number"},
        {"row": 3, "column": "admitted", "value_preview": "2024-2-3", "reason": "not a date (YYYY-MM-DD)"},
        {"row": 3, "column": "sex", "value_preview": "X", "reason": "not one of the declared values of this column"},
        {"row": 3, "column": "smoker", "value_preview": "yes", "reason": "not a boolean (true/false)"},
        {"row": 4, "column": "nhs_number", "value_preview": None,
         "reason": "not a valid NHS number (10 digits with a modulus-11 check digit)"},
        {"row": 4, "column": "weight", "value_preview": "-inf", "reason": "not a finite number"},
        {"row": 5, "column": "nhs_number", "value_preview": None, "reason": "the identifier (NHS number) is missing"},
        {"row": 7, "column": None, "value_preview": None, "reason": "too few fields in this row"},
    ]


def test_duplicates_under_rows_per_person_one_name_both_rows(tmp_path):
    rows = [good(i) for i in range(5)] + [good(1, age="50"), good(3)]
    result, _ = run(tmp_path, csv_bytes(rows), d=dictionary(rows_per_person="one"))
    assert result.error_count == 2
    assert [(e["row"], e["column"], e["reason"], e["value_preview"]) for e in result.errors] == [
        (6, "nhs_number", "the same person as row 2 (rows_per_person is one)", None),
        (7, "nhs_number", "the same person as row 4 (rows_per_person is one)", None)]
    ok, _ = run(tmp_path, csv_bytes(rows))  # many: fine
    assert ok.ok and ok.person_count == 5


def test_bom_is_accepted(tmp_path):
    result, _ = run(tmp_path, b"\xef\xbb\xbf" + csv_bytes([good(1), good(2)]))
    assert result.ok and result.row_count == 2


def test_cp1252_declared_is_read_and_undeclared_is_an_error_naming_the_line(tmp_path):
    content = csv_bytes([good(1), good(2, region="Ynys Môn")]).decode().encode("cp1252")
    refused, _ = run(tmp_path, content)
    assert refused.errors == [{"row": 2, "column": None, "value_preview": None,
                               "reason": "not valid UTF-8 (declare the file's encoding on the upload, e.g. encoding=cp1252)"}]
    result, out = run(tmp_path, content, encoding="cp1252", threshold=1)
    assert result.ok
    assert "Ynys Môn" in result.dictionary.column("region").values
    bad, _ = run(tmp_path, content.replace(b"north", b"n\x81rth"), encoding="cp1252")
    assert bad.errors == [{"row": 1, "column": None, "value_preview": None,
                           "reason": "bytes that are not valid cp1252 (line 2 of the file)"}]
    unknown, _ = run(tmp_path, content, encoding="ebcdic-37")
    assert unknown.errors[0]["reason"].startswith("encoding 'ebcdic-37' is not accepted")


def test_the_first_thousand_errors_and_the_exact_total(tmp_path):
    rows = [good(i, age="x" if i % 2 else "1", weight="inf" if i % 4 == 0 else "1.0") for i in range(3000)]
    result, _ = run(tmp_path, csv_bytes(rows))
    assert result.error_count == 1500 + 750
    assert len(result.errors) == MAX_ERRORS
    assert result.errors[0] == {"row": 1, "column": "weight", "value_preview": "inf", "reason": "not a finite number"}


def test_progress_phases_from_the_first_second(tmp_path, monkeypatch):

    monkeypatch.setattr(filesources, "PROGRESS_INTERVAL", 0.01)
    seen = []
    result, _ = run(tmp_path, csv_bytes([good(i) for i in range(2000)]), progress=lambda *p: seen.append(p))
    assert result.ok
    assert seen[0] == ("validating", 0, None)
    phases = [p[0] for p in seen]
    assert phases == sorted(phases, key=["validating", "loading", "publishing"].index)
    assert all(total in (None, 2000) for _, _, total in seen)


def test_parquet_gets_the_same_checks(tmp_path):
    table = pa.table({
        "nhs_number": [make_nhs_number(i) for i in range(4)], "sex": ["F", "M", "Q", None],
        "region": ["north"] * 4, "age": pa.array([20.0, 40.5, 30.0, None]), "weight": [1.0, float("nan"), 2.0, 3.0],
        "admitted": ["2024-01-01", "2024-1-1", None, "2024-03-01"], "smoker": [True, False, None, True],
        "postcode": ["x"] * 4})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    result, _ = run(tmp_path, buf.getvalue(), fmt="parquet", name="in.parquet")
    assert [(e["row"], e["column"], e["reason"]) for e in result.errors] == [
        (2, "admitted", "not a date (YYYY-MM-DD)"), (2, "age", "not an integer"), (2, "weight", "not a finite number"),
        (3, "sex", "not one of the declared values of this column")]
    fixed = table.set_column(1, "sex", pa.array(["F", "M", "F", None])).set_column(
        3, "age", pa.array([20.0, 41.0, 30.0, None])).set_column(
        4, "weight", pa.array([1.0, 2.0, 2.0, 3.0])).set_column(5, "admitted", pa.array(["2024-01-01", None, None, None]))
    buf = io.BytesIO()
    pq.write_table(fixed, buf)
    ok, out = run(tmp_path, buf.getvalue(), fmt="parquet", name="in.parquet")
    assert ok.ok, ok.errors
    assert rows_of(out, "SELECT age FROM data ORDER BY age")[1] == [(20,), (30,), (41,), (None,)]


# --- property: every bad row of a generated file is reported -----------------------------------

_bad = {"age": ["40.5", "4e1", "x", " 7"], "weight": ["NaN", "inf", "-inf", "1,5"], "admitted": ["2024-2-3", "2023-02-30"],
        "smoker": ["yes", "1", "t"], "sex": ["Q", "f"]}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(st.one_of(st.none(), st.tuples(st.sampled_from(sorted(_bad)), st.integers(0, 3))),
                     min_size=1, max_size=60))
def test_every_bad_row_of_a_generated_file_is_reported(tmp_path, plan):
    rows, expected = [], set()
    for i, spoil in enumerate(plan):
        r = good(i)
        if spoil is not None:
            column, k = spoil
            r[column] = _bad[column][k % len(_bad[column])]
            expected.add((i + 1, column))
        rows.append(r)
    result, _ = run(tmp_path, csv_bytes(rows))
    assert {(e["row"], e["column"]) for e in result.errors} == expected
    assert result.error_count == len(expected)
    assert result.ok is (not expected)


def test_nothing_is_half_written(tmp_path):
    rows = [good(i) for i in range(50)] + [good(50, age="1.5")]
    result, out = run(tmp_path, csv_bytes(rows))
    assert not result.ok and not out.exists() and not Path(str(out) + ".wal").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "store") == ["in.csv"]


@pytest.mark.parametrize("bad", ["2024-13-01", "24-01-01"])
def test_an_out_of_range_or_short_date_is_refused(tmp_path, bad):
    result, _ = run(tmp_path, csv_bytes([good(1, admitted=bad)]))
    assert result.errors[0]["column"] == "admitted"
