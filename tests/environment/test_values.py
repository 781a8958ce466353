"""The value rules of strict ingestion: Python (``parse_value``) and SQL (``sql_ok``) agree, and
nothing is accepted that the declared type does not allow."""

import datetime as dt
import math

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from environment.dictionary import ColumnType
from environment.values import BadValue, parse_value, preview, sql_ok, sql_typed

TYPES = [t for t in ColumnType if t != ColumnType.TEXT]

# Text that looks like values of every type, and noise around them.
_near = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.dates().map(dt.date.isoformat),
    st.sampled_from(["true", "FALSE", "True", "t", "f", "1", "0", "yes", "no", "NaN", "nan", "inf", "-inf",
                     "Infinity", "40.5", "4e1", "1_000", " 42", "42 ", "+5", "-0", "007", ".5", "5.", "1e400",
                     "0x1A", "2024-2-3", "2023-02-30", "0000-01-01", "2024-02-29", "20240101", "03/02/2024",
                     "１２", "٣", "1.5e-3", "-.5e+2", ""]),
    st.text(max_size=12),
)
_text = st.one_of(_near, st.tuples(_near, _near).map("".join))


def _sql(con, type_, text):
    ok, value = con.execute(f"SELECT {sql_ok(type_, '$v')}, CASE WHEN {sql_ok(type_, '$v')} THEN "
                            f"{sql_typed(type_, '$v')} END", {"v": text}).fetchone()
    return ok, value


@pytest.fixture(scope="module")
def con():
    c = duckdb.connect()
    yield c
    c.close()


@settings(max_examples=400, deadline=None)
@given(type_=st.sampled_from(TYPES), text=_text)
def test_python_and_sql_agree_and_accept_only_the_type(con, type_, text):
    try:
        value = parse_value(type_, text)
        accepted = True
    except BadValue:
        accepted = False
    ok, sql_value = _sql(con, type_, text)
    assert ok is accepted, (type_, text)
    if not accepted:
        return
    assert sql_value == value
    if value is None:
        assert text == ""
    elif type_ == ColumnType.INTEGER:
        assert isinstance(value, int) and -(2**63) <= value < 2**63 and str(int(text)) == str(value)
        assert "." not in text and "e" not in text.lower()
    elif type_ == ColumnType.FLOAT:
        assert isinstance(value, float) and math.isfinite(value)
    elif type_ == ColumnType.BOOLEAN:
        assert text.lower() in ("true", "false")
    elif type_ == ColumnType.DATE:
        assert value.isoformat() == text


@pytest.mark.parametrize(("type_", "text"), [
    ("integer", "40.5"), ("integer", "4e1"), ("integer", " 42"), ("integer", "1_000"), ("integer", "9223372036854775808"),
    ("float", "NaN"), ("float", "inf"), ("float", "-inf"), ("float", "Infinity"), ("float", "1e400"), ("float", "0x1A"),
    ("boolean", "t"), ("boolean", "1"), ("boolean", "yes"),
    ("date", "2024-2-3"), ("date", "2023-02-30"), ("date", "0000-01-01"), ("date", "03/02/2024"), ("date", "20240101"),
])
def test_refused(con, type_, text):
    with pytest.raises(BadValue):
        parse_value(type_, text)
    assert _sql(con, type_, text)[0] is False


@pytest.mark.parametrize(("type_", "text", "value"), [
    ("integer", "42", 42), ("integer", "-7", -7), ("integer", "+5", 5), ("integer", "007", 7),
    ("float", "3.14", 3.14), ("float", "2.5e-3", 0.0025), ("float", ".5", 0.5), ("float", "40", 40.0),
    ("boolean", "TRUE", True), ("boolean", "false", False), ("boolean", "False", False),
    ("date", "2024-02-29", dt.date(2024, 2, 29)), ("text", " any text ", " any text "), ("integer", "", None),
])
def test_accepted(con, type_, text, value):
    assert parse_value(type_, text) == value
    assert _sql(con, type_, text) == (True, value)


def test_preview_is_short_and_masks_numbers_that_may_be_nhs_numbers():
    assert preview("40.5") == "40.5"
    assert preview("x" * 50) == "x" * 40 + "…"
    assert preview("id 943 476 5919 here") == "id ############ here"
    assert preview("a\x00b") == "a?b"
    assert preview(None) is None
