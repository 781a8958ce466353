"""Registering datasets: the declaration's rules, the answers, the roles."""

import pytest

from audit.models import AuditEvent
from environment.models import Dataset

from .conftest import COLUMNS


def body(**overrides):
    return {"name": "admissions", "title": "Hospital admissions", "description": "HES-like",
            "identifier_column": "nhs_number", "columns": COLUMNS, **overrides}


def test_create_and_read(as_custodian, researcher, client_for):
    response = as_custodian.post("/api/v1/datasets/", body(), format="json")
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["current_version"] is None and created["row_count"] is None and isinstance(created["id"], int)
    assert created["name"] == "admissions" and created["title"] == "Hospital admissions"
    assert created["identifier_column"] == "nhs_number" and created["description"] == "HES-like"
    assert created["columns"][0] == {"name": "nhs_number", "type": "text", "role": "identifier", "drop": False,
                                     "description": "the direct identifier"}
    assert created["columns"][1]["role"] == "category" and created["columns"][2]["role"] == "measure"
    assert created["columns"][-1] == {"name": "postcode", "type": "text", "role": "drop", "drop": True, "description": ""}
    assert created["rows_per_person"] == "many" and created["protection"] == {} and created["dictionary_version"] == 1
    event = AuditEvent.objects.get(action="dataset.created")
    assert event.target_type == "dataset" and event.target_id == str(created["id"]) and event.actor == "custodian1"

    reader = client_for(researcher)
    listing = reader.get("/api/v1/datasets/").json()
    assert listing["count"] == 1 and listing["results"][0] == created
    assert reader.get(f"/api/v1/datasets/{created['id']}/").json() == created


def test_url_names():
    from django.urls import reverse

    assert reverse("datasets") == "/api/v1/datasets/"
    assert reverse("dataset-detail", args=[3]) == "/api/v1/datasets/3/"
    assert reverse("opt-outs") == "/api/v1/opt-outs/"


@pytest.mark.parametrize("name", ["Admissions", "1data", "_data", "data-set", "data set", "dätä", "a" * 64, "", "select",
                                  "order", "user", "table", "from", "where", "group", "join", "tre_optouts", "tre_x",
                                  "person_id", "values", "d1234567890"])
def test_bad_names(as_custodian, name):
    response = as_custodian.post("/api/v1/datasets/", body(name=name), format="json")
    assert response.status_code == 400 and "name" in response.json(), (name, response.json())
    assert Dataset.objects.count() == 0


@pytest.mark.parametrize("name", ["admissions", "a", "gp_events_2024", "data", "region", "a" * 63])
def test_good_names(as_custodian, name):
    assert as_custodian.post("/api/v1/datasets/", body(name=name), format="json").status_code == 201


def test_unique_name(as_custodian):
    assert as_custodian.post("/api/v1/datasets/", body(), format="json").status_code == 201
    response = as_custodian.post("/api/v1/datasets/", body(), format="json")
    assert response.status_code == 400 and "already exists" in response.json()["name"][0]


def test_column_rules_name_each_bad_field(as_custodian):
    columns = [
        {"name": "nhs_number", "type": "text"},
        {"name": "age", "type": "integer"},
        {"name": "age", "type": "integer"},  # duplicate
        {"name": "person_id", "type": "text"},  # reserved
        {"name": "Bad Name", "type": "text"},  # not an identifier
        {"name": "select", "type": "text"},  # keyword
    ]
    response = as_custodian.post("/api/v1/datasets/", body(columns=columns), format="json")
    assert response.status_code == 400
    errors = response.json()["columns"]
    assert set(errors) == {"2", "3", "4", "5"}
    assert "duplicate" in errors["2"]["name"][0] and "person_id" in errors["3"]["name"][0]


def test_bad_type_and_missing_identifier(as_custodian):
    columns = [{"name": "nhs_number", "type": "text"}, {"name": "age", "type": "int"}]
    response = as_custodian.post("/api/v1/datasets/", body(columns=columns), format="json")
    assert response.status_code == 400 and "type" in response.json()["columns"]["1"]
    response = as_custodian.post("/api/v1/datasets/", body(identifier_column="nhs"), format="json")
    assert response.status_code == 400 and "not among the columns" in response.json()["identifier_column"][0]
    response = as_custodian.post("/api/v1/datasets/", body(columns=[]), format="json")
    assert response.status_code == 400 and "columns" in response.json()
    response = as_custodian.post("/api/v1/datasets/", {"name": "x"}, format="json")
    assert response.status_code == 400 and {"title", "identifier_column", "columns"} <= set(response.json())


def test_roles(anon, researcher, client_for, make_user):
    assert anon.post("/api/v1/datasets/", body(), format="json").status_code == 401
    assert anon.get("/api/v1/datasets/").status_code == 401
    assert anon.get("/api/v1/datasets/1/").status_code == 401
    response = client_for(researcher).post("/api/v1/datasets/", body(), format="json")
    assert response.status_code == 403
    assert response.json()["rule"] == "role_custodians" and "custodian" in response.json()["detail"]
    assert client_for(make_user("aud", role="auditor")).post("/api/v1/datasets/", body(), format="json").status_code == 403
    assert client_for(researcher).get("/api/v1/datasets/999999/").status_code == 404
    assert Dataset.objects.count() == 0


def test_list_costs_constant_queries(as_custodian, django_assert_max_num_queries):
    for i in range(15):
        assert as_custodian.post("/api/v1/datasets/", body(name=f"ds_{i}"), format="json").status_code == 201
    with django_assert_max_num_queries(4):
        assert as_custodian.get("/api/v1/datasets/").json()["count"] == 15


def test_schema_declares_status_codes(anon):
    import yaml  # noqa: F401  (PyYAML comes with drf-spectacular)

    schema = yaml.safe_load(anon.get("/api/schema/").content)
    paths = schema["paths"]
    # (tre's schema class may add the answers its shared machinery gives everywhere, e.g. 503)
    assert {"201", "400", "401", "403"} <= set(paths["/api/v1/datasets/"]["post"]["responses"])
    assert {"200", "401"} <= set(paths["/api/v1/datasets/"]["get"]["responses"])
    assert {"200", "401", "404"} <= set(paths["/api/v1/datasets/{id}/"]["get"]["responses"])
    upload = paths["/api/v1/datasets/{id}/versions/"]["post"]
    assert {"202", "400", "401", "403", "404", "413", "415"} <= set(upload["responses"])
    assert "201" not in upload["responses"] and "200" not in upload["responses"]
    assert {"200", "401", "403", "404"} <= set(paths["/api/v1/datasets/{id}/versions/"]["get"]["responses"])
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert {"202", "400", "401", "403"} <= set(paths["/api/v1/opt-outs/"]["post"]["responses"])
    assert "201" not in paths["/api/v1/opt-outs/"]["post"]["responses"]
    assert {"200", "401", "403"} <= set(paths["/api/v1/opt-outs/status/"]["get"]["responses"])
