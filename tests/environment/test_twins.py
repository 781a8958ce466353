"""Dummy twins: generated from the dictionary alone, every value inside its domain, no real person."""

import duckdb

from environment.declaration import declare
from environment.derivation import ColumnStats, derive
from environment.dictionary import PERSON_ID, Role
from environment.recordkeys import record_keys
from environment.twins import IncompleteDictionary, generate_twin, twin_seed, write_twin_file


def _dictionary(rows_per_person="many"):
    d, errors = declare({"name": "gp", "identifier_column": "nhs", "rows_per_person": rows_per_person, "columns": [
        {"name": "nhs", "type": "text"},
        {"name": "region", "type": "text", "values": ["north", "south", "east"]},
        {"name": "code", "type": "integer", "role": "category", "values": [1, 5, 9]},
        {"name": "age", "type": "integer", "min": 18, "max": 90},
        {"name": "cost", "type": "float", "min": 0.5, "max": 250},
        {"name": "seen", "type": "date", "min": "2020-01-01", "max": "2021-12-31", "granularity": "month"},
        {"name": "smoker", "type": "boolean"},
        {"name": "notes", "type": "text", "drop": True},
    ]})
    assert not errors
    return d


def test_every_value_is_inside_the_dictionary_and_no_real_person(settings):
    d = _dictionary()
    table = generate_twin(d, rows=10_000)
    assert table.num_rows == 10_000
    assert table.column_names == [PERSON_ID, "region", "code", "age", "cost", "seen", "smoker", "_rk", "_rk2"]
    rows = table.to_pylist()
    for column in d.stored_columns:
        values = [r[column.name] for r in rows if r[column.name] is not None]
        assert values, column.name
        if column.role == Role.CATEGORY:
            assert set(values) <= set(column.values)
        else:
            assert all(column.min <= v <= column.max for v in values), column.name
    assert all(r["seen"] is None or r["seen"].day == 1 for r in rows)  # no finer than the granularity
    assert all(len(r[PERSON_ID]) == 12 and r[PERSON_ID].startswith("dummy") for r in rows)
    pid = rows[0][PERSON_ID]
    assert (rows[0]["_rk"], rows[0]["_rk2"]) == record_keys(pid, secret=settings.TRE_CELLKEY_SECRET)
    persons = {r[PERSON_ID] for r in rows}
    assert 10_000 / 5 <= len(persons) < 10_000  # many rows per person


def test_one_row_per_person_and_seeded():
    d = _dictionary("one")
    a, b = generate_twin(d, rows=500), generate_twin(d, rows=500)
    assert a.equals(b)
    assert len(set(a.column(PERSON_ID).to_pylist())) == 500
    assert twin_seed(d) != twin_seed(d.__class__(**{**d.__dict__, "version": 2}))


def test_a_twin_needs_a_complete_dictionary():
    d, _ = declare({"name": "a", "identifier_column": "nhs", "columns": [{"name": "nhs", "type": "text"},
                                                                       {"name": "region", "type": "text"}]})
    try:
        generate_twin(d, rows=10)
    except IncompleteDictionary as exc:
        assert "region" in str(exc)
    else:
        raise AssertionError("an incomplete dictionary made a twin")
    complete = derive(d, {"region": ColumnStats(persons_by_value={"x": 3})}, threshold=10)
    assert set(generate_twin(complete, rows=50).column("region").to_pylist()) <= {"other", None}


def test_the_twin_file_is_marked_dummy(tmp_path):
    d = _dictionary()
    table = generate_twin(d, rows=10_000)
    write_twin_file(table, d, tmp_path / "twin.duckdb", seed=twin_seed(d))
    con = duckdb.connect(str(tmp_path / "twin.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT kind, dataset, dictionary_version, rows FROM tre_twin").fetchall() == [("dummy", "gp", 1, 10_000)]
        assert con.execute("SELECT count(*), min(_rk) >= 0, max(_rk) <= 255 FROM data").fetchone() == (10_000, True, True)
    finally:
        con.close()
