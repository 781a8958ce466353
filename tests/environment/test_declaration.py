"""A declaration (the body of POST datasets/) → a Dictionary, with every bad field named at once."""

import datetime as dt

import pytest

from environment.declaration import Limits, declare, legacy_columns
from environment.dictionary import Column, ColumnType, Granularity, Role, RowsPerPerson

V1 = {
    "name": "admissions", "identifier_column": "nhs_number",
    "columns": [
        {"name": "nhs_number", "type": "text"},
        {"name": "sex", "type": "text"},
        {"name": "age", "type": "integer"},
        {"name": "weight", "type": "float"},
        {"name": "admitted", "type": "date"},
        {"name": "smoker", "type": "boolean"},
        {"name": "postcode", "type": "text", "drop": True, "description": "never stored"},
    ],
}


def test_version_1_declarations_get_the_default_roles():
    d, errors = declare(V1)
    assert errors == {}
    assert [(c.name, c.role) for c in d.columns] == [
        ("nhs_number", Role.IDENTIFIER), ("sex", Role.CATEGORY), ("age", Role.MEASURE), ("weight", Role.MEASURE),
        ("admitted", Role.DATE), ("smoker", Role.CATEGORY), ("postcode", Role.DROP)]
    assert d.rows_per_person == RowsPerPerson.MANY and d.protection == {} and d.version == 1
    assert d.column("admitted").granularity == Granularity.DAY
    assert d.column("smoker").values == (False, True)  # a boolean's domain is known
    assert d.column("sex").values is None and d.column("age").min is None  # derived at the first load
    assert not d.complete
    assert legacy_columns(d)[6] == {"name": "postcode", "type": "text", "role": "drop", "drop": True,
                                    "description": "never stored"}


def test_a_full_declaration():
    body = {"name": "gp", "identifier_column": "nhs", "rows_per_person": "one",
            "protection": {"threshold": 20, "ckm_d": 4, "ckm_v": 3},
            "columns": [
                {"name": "nhs", "type": "text", "role": "identifier"},
                {"name": "region", "type": "text", "role": "category", "values": ["north", "south"], "description": "NHS region"},
                {"name": "code", "type": "integer", "role": "category", "values": [1, 2, 3]},
                {"name": "age", "type": "integer", "role": "measure", "min": 0, "max": 110},
                {"name": "cost", "type": "float", "min": 0, "max": 1e4},
                {"name": "seen", "type": "date", "granularity": "month", "min": "2015-01-01", "max": "2024-12-31"},
            ]}
    d, errors = declare(body)
    assert errors == {}
    assert d.complete and d.rows_per_person == RowsPerPerson.ONE
    assert d.protection == {"threshold": 20, "ckm_d": 4, "ckm_v": 3.0}
    assert d.column("region") == Column("region", ColumnType.TEXT, Role.CATEGORY, "NHS region", values=("north", "south"))
    assert d.column("cost").min == 0.0 and isinstance(d.column("cost").min, float)
    assert d.column("seen").min == dt.date(2015, 1, 1) and d.column("seen").granularity == Granularity.MONTH


def test_every_bad_field_is_named_at_once():
    body = {"name": "select", "identifier_column": "nhs", "rows_per_person": "some",
            "protection": {"threshold": 5, "ckm_d": 1, "ckm_v": 1, "rho": 1, "colour": "red"},
            "columns": [
                {"name": "nhs", "type": "text", "role": "measure"},
                {"name": "region", "type": "text", "values": ["north", 3, "north"]},
                {"name": "age", "type": "integer", "role": "measure", "min": 10, "max": 5.5},
                {"name": "w", "type": "float", "role": "category"},
                {"name": "d", "type": "date", "min": "2024-13-01", "granularity": "week"},
                {"name": "x", "type": "text", "granularity": "day", "min": 1},
                {"name": "y", "type": "text", "role": "identifier"},
                {"name": "z", "type": "integer", "drop": True, "role": "measure"},
                {"name": "Bad Name", "type": "blob"},
            ]}
    _, errors = declare(body)
    assert set(errors) == {"name", "rows_per_person", "protection", "columns"}
    assert errors["rows_per_person"] == ["rows_per_person must be one or many"]
    assert set(errors["protection"]) == {"threshold", "ckm_d", "ckm_v", "rho", "colour"}
    assert errors["protection"]["threshold"] == [
        "must be at least 10 (TRE_SDC_THRESHOLD): a dataset's protection may only be stricter than the settings"]
    assert errors["protection"]["rho"] == ["rho belongs to mode dp"]
    cols = errors["columns"]
    assert set(cols) == {"0", "1", "2", "3", "4", "5", "6", "7", "8"}
    assert cols["0"] == {"role": ["'nhs' is the identifier_column: its role is identifier"]}
    assert cols["1"] == {"values": ["value 1: must be a non-empty string (the column's type is text)", "value 2: repeated"]}
    assert cols["2"] == {"max": ["must be an integer (a JSON number without a fraction) (the column's type is integer)"]}
    assert cols["3"] == {"role": ["a category column must be of type text or integer or boolean, not float"]}
    assert cols["4"] == {"min": ["must be a date written YYYY-MM-DD (the column's type is date)"],
                         "granularity": ["granularity must be one of day, month, year"]}
    assert cols["5"] == {"min": ["min is declared for measure and date columns only (this column's role is category)"],
                         "granularity": ["granularity is declared for date columns only"]}
    assert cols["6"] == {"role": ["exactly one identifier: the identifier_column is 'nhs'"]}
    assert cols["7"] == {"drop": ["drop: true contradicts role measure"]}
    assert set(cols["8"]) == {"name", "type"}


def test_min_greater_than_max_and_identifier_not_among_columns():
    _, errors = declare({"name": "a", "identifier_column": "nhs_number",
                         "columns": [{"name": "age", "type": "integer", "min": 9, "max": 1}]})
    assert errors == {"columns": {"0": {"min": ["min must not be greater than max"]}},
                      "identifier_column": ["'nhs_number' is not among the columns"]}


@pytest.mark.parametrize(("protection", "problem"), [
    ({"mode": "dp"}, {"rho": ["mode dp needs a privacy budget rho > 0 (zero-concentrated DP)"]}),
    ({"mode": "dp", "rho": 0}, {"rho": ["rho must be a finite number greater than 0"]}),
    ({"mode": "dp", "rho": 0.5, "review": "never"}, {"review": ["review must be required or optional"]}),
    ({"mode": "laplace"}, {"mode": ["mode must be ckm (the cell key method, the default) or dp (differential privacy)"]}),
    ({"threshold": True}, {"threshold": ["must be an integer"]}),
    ("strict", {"non_field_errors": ["protection must be an object, e.g. {\"threshold\": 20}"]}),
])
def test_protection_is_never_looser_than_the_settings(protection, problem):
    body = {**V1, "protection": protection}
    assert declare(body, limits=Limits(threshold=10, ckm_d=3, ckm_v=2))[1] == {"protection": problem}


def test_dp_protection_is_stored():
    d, errors = declare({**V1, "protection": {"mode": "dp", "rho": 0.5, "review": "optional", "max_rows_per_person": 3,
                                              "threshold": 15}})
    assert errors == {}
    assert d.protection == {"mode": "dp", "rho": 0.5, "review": "optional", "max_rows_per_person": 3, "threshold": 15}


def test_stricter_limits_come_from_the_settings():
    _, errors = declare({**V1, "protection": {"threshold": 15}}, limits=Limits(threshold=20))
    assert errors["protection"]["threshold"][0].startswith("must be at least 20")


def test_round_trip_through_json():
    d, _ = declare({**V1, "columns": [*V1["columns"][:1], {"name": "seen", "type": "date", "min": "2020-01-01"}]})
    from environment.dictionary import Dictionary

    assert Dictionary.from_json(d.to_json()) == d
