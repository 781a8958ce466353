from environment.pseudonym import make_nhs_number
from environment.sandbox import open_sandbox
from tests.factories import DatasetFactory, load_dataset_rows


def test_load_dataset_rows(db):
    dataset = DatasetFactory(name="events")
    version = load_dataset_rows(dataset, [{"nhs_number": make_nhs_number(i), "region": "north", "age": i, "value": 1.5}
                                          for i in range(12)])
    assert version.status == "ready" and version.row_count == 12
    with open_sandbox([dataset]) as sandbox:
        assert sandbox.conn.execute("SELECT count(DISTINCT person_id), sum(age) FROM events").fetchall() == [(12, 66)]
    bad = load_dataset_rows(dataset, [{"nhs_number": "123", "region": "x", "age": 1, "value": 1}])
    assert bad.status == "failed" and bad.errors[0]["row"] == 1
