"""Safe derivation of undeclared domains, bounds and ranges (DESIGN.md §4)."""

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from environment.declaration import declare
from environment.derivation import (
    ERROR,
    RECODE_NULL,
    RECODE_OTHER,
    ColumnStats,
    derive,
    out_of_domain,
    round_outward,
)


@pytest.mark.parametrize(("x", "up", "expected"), [
    (37.4, False, 37.0), (37.4, True, 38.0), (1234, True, 1300.0), (1234, False, 1200.0), (-0.0123, False, -0.013),
    (-0.0123, True, -0.012), (0.000123456, True, 0.00013), (99.5, True, 100.0), (0, True, 0.0), (12, True, 12.0),
])
def test_round_outward_to_two_significant_figures(x, up, expected):
    assert round_outward(x, up=up) == expected


@given(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False))
def test_rounding_is_outward(x):
    assert round_outward(x, up=False) <= x <= round_outward(x, up=True)


def _dictionary():
    d, errors = declare({"name": "a", "identifier_column": "nhs", "columns": [
        {"name": "nhs", "type": "text"},
        {"name": "region", "type": "text"},
        {"name": "code", "type": "integer", "role": "category"},
        {"name": "sex", "type": "text", "values": ["F", "M"]},
        {"name": "age", "type": "integer"},
        {"name": "cost", "type": "float", "min": 0},
        {"name": "seen", "type": "date"},
        {"name": "smoker", "type": "boolean"},
    ]})
    assert not errors
    return d


def test_derive_keeps_only_values_held_by_threshold_persons():
    stats = {
        "region": ColumnStats(persons_by_value={"north": 40, "south": 10, "east": 9, "other": 12}),
        "code": ColumnStats(persons_by_value={7: 10, 3: 50, 9: 2}),
        "age": ColumnStats(p01=17.3, p99=93.2),
        "cost": ColumnStats(p01=3.0, p99=1234.5),
        "seen": ColumnStats(min=dt.date(2019, 3, 4), max=dt.date(2023, 11, 30)),
    }
    d = derive(_dictionary(), stats, threshold=10)
    assert d.complete
    assert d.column("region").values == ("north", "south", "other") and d.column("region").derived == ("values",)
    assert d.column("code").values == (3, 7)
    assert d.column("sex").values == ("F", "M") and d.column("sex").derived == ()
    assert (d.column("age").min, d.column("age").max) == (17, 94) and d.column("age").derived == ("min", "max")
    assert (d.column("cost").min, d.column("cost").max) == (0, 1300.0) and d.column("cost").derived == ("max",)
    assert (d.column("seen").min, d.column("seen").max) == (dt.date(2019, 1, 1), dt.date(2023, 12, 31))
    assert d.column("smoker").values == (False, True)
    assert out_of_domain(d.column("region")) == RECODE_OTHER
    assert out_of_domain(d.column("code")) == RECODE_NULL
    assert out_of_domain(d.column("sex")) == ERROR
    assert out_of_domain(d.column("age")) is None


def test_a_stricter_threshold_keeps_fewer_values_and_empty_columns_still_complete():
    stats = {"region": ColumnStats(persons_by_value={"north": 40, "south": 10})}
    d = derive(_dictionary(), stats, threshold=20, today=dt.date(2026, 5, 1))
    assert d.column("region").values == ("north", "other")
    assert d.column("code").values == ()
    assert (d.column("age").min, d.column("age").max) == (0, 0)
    assert (d.column("seen").min, d.column("seen").max) == (dt.date(2026, 1, 1), dt.date(2026, 12, 31))
    assert d.complete
