import datetime as dt

from environment.dictionary import Column, ColumnType, Dictionary, Granularity, Role, RowsPerPerson


def _dictionary():
    return Dictionary(
        dataset="gp_events",
        rows_per_person=RowsPerPerson.MANY,
        columns=(
            Column("nhs_number", ColumnType.TEXT, Role.IDENTIFIER),
            Column("region", ColumnType.TEXT, Role.CATEGORY, values=("north", "south", "other")),
            Column("event_date", ColumnType.DATE, Role.DATE, min=dt.date(2015, 1, 1), max=dt.date(2024, 12, 31),
                   granularity=Granularity.MONTH),
            Column("value", ColumnType.FLOAT, Role.MEASURE, min=0.0, max=250.0, derived=("min", "max")),
            Column("notes", ColumnType.TEXT, Role.DROP),
        ),
    )


def test_json_round_trip_keeps_every_field():
    d = _dictionary()
    assert Dictionary.from_json(d.to_json()) == d


def test_public_form_hides_dropped_columns_and_keeps_domains():
    public = _dictionary().to_json(public=True)
    assert [c["name"] for c in public["columns"]] == ["nhs_number", "region", "event_date", "value"]
    assert public["columns"][2] == {"name": "event_date", "type": "date", "role": "date", "description": "",
                                    "min": "2015-01-01", "max": "2024-12-31", "granularity": "month"}


def test_stored_columns_and_completeness():
    d = _dictionary()
    assert [c.name for c in d.stored_columns] == ["region", "event_date", "value"]
    assert d.complete
    assert not d.with_column(Column("value", ColumnType.FLOAT, Role.MEASURE)).complete
