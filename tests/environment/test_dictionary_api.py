"""The data dictionary through the API: declaring it (every bad field at once), its versions and
audit, derivation at the first load, who may read it, and the dummy twin that follows it."""

import duckdb

from audit.models import AuditEvent
from environment import store
from environment.models import Dataset, DictionaryVersion, DummyTwin
from environment.pseudonym import make_nhs_number
from tests.factories import ProjectFactory

from .conftest import COLUMNS, csv_bytes, row, store_rows

DECLARED = [
    {"name": "nhs_number", "type": "text", "description": "NHS number"},
    {"name": "sex", "type": "text", "role": "category", "values": ["F", "M"], "description": "sex at registration"},
    {"name": "age", "type": "integer", "role": "measure", "min": 0, "max": 110},
    {"name": "weight", "type": "float", "min": 0, "max": 300},
    {"name": "admitted", "type": "date", "granularity": "month", "min": "2020-01-01", "max": "2024-12-31"},
    {"name": "smoker", "type": "boolean"},
    {"name": "postcode", "type": "text", "drop": True},
]


def _body(**overrides):
    return {"name": "admissions", "title": "Admissions", "identifier_column": "nhs_number", "columns": DECLARED,
            **overrides}


def test_a_complete_declaration_is_dictionary_version_1_with_its_twin(as_custodian, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = as_custodian.post("/api/v1/datasets/", _body(rows_per_person="one", protection={"threshold": 20}),
                                     format="json")
    assert response.status_code == 201, response.json()
    ds = response.json()
    assert ds["rows_per_person"] == "one" and ds["protection"] == {"threshold": 20} and ds["dictionary_version"] == 1
    dictionary = as_custodian.get(f"/api/v1/datasets/{ds['id']}/dictionary/").json()
    assert dictionary["version"] == 1 and dictionary["complete"] is True and dictionary["rows_per_person"] == "one"
    assert dictionary["columns"][1] == {"name": "sex", "type": "text", "role": "category", "description": "sex at registration",
                                        "values": ["F", "M"]}
    assert dictionary["columns"][4] == {"name": "admitted", "type": "date", "role": "date", "description": "",
                                        "min": "2020-01-01", "max": "2024-12-31", "granularity": "month"}
    assert [c["role"] for c in dictionary["columns"]][-1] == "drop"  # custodians see dropped columns
    version = DictionaryVersion.objects.get(dataset_id=ds["id"])
    assert (version.number, version.reason, version.body) == (1, "declared", Dataset.objects.get(pk=ds["id"]).dictionary)
    event = AuditEvent.objects.get(action="dataset.dictionary_changed")
    assert event.data["dictionary_version"] == 1 and event.data["reason"] == "declared" and event.data["complete"] is True
    twin = DummyTwin.objects.get(dataset_id=ds["id"])
    assert Dataset.objects.get(pk=ds["id"]).current_twin_id == twin.pk and twin.row_count == 10_000
    con = duckdb.connect(str(store.abspath(twin.file_path)), read_only=True)
    try:
        assert con.execute("SELECT kind FROM tre_twin").fetchone() == ("dummy",)
        assert con.execute("SELECT count(DISTINCT person_id), count(*) FROM data").fetchone() == (10_000, 10_000)
        assert con.execute("SELECT count(*) FROM data WHERE sex NOT IN ('F', 'M') OR age NOT BETWEEN 0 AND 110 "
                           "OR admitted NOT BETWEEN DATE '2020-01-01' AND DATE '2024-12-31'").fetchone() == (0,)
    finally:
        con.close()


def test_every_bad_field_is_named_in_one_answer(as_custodian):
    columns = [
        {"name": "nhs_number", "type": "text"},
        {"name": "sex", "type": "text", "values": ["F", 1]},
        {"name": "age", "type": "integer", "min": 9, "max": 1},
        {"name": "seen", "type": "text", "granularity": "month"},
        {"name": "cost", "type": "float", "role": "category"},
    ]
    response = as_custodian.post("/api/v1/datasets/", {"name": "select", "identifier_column": "nhs_number",
                                                       "rows_per_person": "few", "columns": columns,
                                                       "protection": {"threshold": 3, "mode": "dp"}}, format="json")
    assert response.status_code == 400
    errors = response.json()
    assert set(errors) == {"name", "title", "rows_per_person", "columns", "protection"}
    assert set(errors["columns"]) == {"1", "2", "3", "4"}
    assert errors["columns"]["1"] == {"values": ["value 1: must be a non-empty string (the column's type is text)"]}
    assert errors["columns"]["2"] == {"min": ["min must not be greater than max"]}
    assert set(errors["protection"]) == {"threshold", "rho"}
    assert Dataset.objects.count() == 0 and not AuditEvent.objects.filter(action__startswith="dataset.").exists()


def test_the_first_load_derives_the_domains_safely_and_later_loads_keep_them(create_dataset, load, as_custodian, settings):
    settings.TRE_SDC_THRESHOLD = 10
    ds = create_dataset()  # the version-1 COLUMNS: nothing declared but types
    assert as_custodian.get(f"/api/v1/datasets/{ds['id']}/dictionary/").json()["complete"] is False
    assert not DummyTwin.objects.exists()  # no twin before the domains are known
    rows = [row(i, sex="F") for i in range(12)] + [row(100 + i, sex="X") for i in range(3)]  # X: 3 persons < 10
    version = load(ds["id"], csv_bytes(rows))
    assert version.status == "ready", version.errors
    d = as_custodian.get(f"/api/v1/datasets/{ds['id']}/dictionary/").json()
    assert d["version"] == 2 and d["complete"] is True
    sex = next(c for c in d["columns"] if c["name"] == "sex")
    assert sex["values"] == ["F", "other"] and sex["derived"] == ["values"]  # X is held by too few persons
    age = next(c for c in d["columns"] if c["name"] == "age")
    # ages 20…31, 60, 61, 62: percentiles 20.14 and 61.86, rounded outward to two significant figures
    assert (age["min"], age["max"], age["derived"]) == (20, 62, ["min", "max"])
    admitted = next(c for c in d["columns"] if c["name"] == "admitted")
    assert admitted["min"] == "2024-01-01" and admitted["max"] == "2024-12-31"
    assert store_rows(version, "SELECT sex, count(*) FROM data GROUP BY ALL ORDER BY ALL")[1] == [("F", 12), ("other", 3)]
    versions = list(DictionaryVersion.objects.filter(dataset_id=ds["id"]).order_by("number").values_list("number", "reason"))
    assert versions == [(1, "declared"), (2, "derived")]
    assert DummyTwin.objects.get(dataset_id=ds["id"]).dictionary_version == 2
    # a later version: the domain is frozen; a new value is recoded, not an error; no new dictionary version
    later = load(ds["id"], csv_bytes([row(i, sex="M") for i in range(12)]))
    assert later.status == "ready", later.errors
    assert store_rows(later, "SELECT DISTINCT sex FROM data")[1] == [("other",)]
    assert DictionaryVersion.objects.filter(dataset_id=ds["id"]).count() == 2


def test_a_declared_domain_is_strict_at_ingestion(as_custodian, load):
    ds = as_custodian.post("/api/v1/datasets/", _body(), format="json").json()
    version = load(ds["id"], csv_bytes([row(1), row(2, sex="X")]))
    assert version.status == "failed"
    assert version.errors == [{"row": 2, "column": "sex", "value_preview": "X",
                               "reason": "not one of the declared values of this column"}]


def test_an_encoding_declared_on_the_upload(create_dataset, as_custodian, django_capture_on_commit_callbacks):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from environment.models import DatasetVersion

    ds = create_dataset()
    content = csv_bytes([row(1, sex="Señora"), row(2)]).decode().encode("cp1252")

    def send(**form):
        with django_capture_on_commit_callbacks(execute=True):
            return as_custodian.post(f"/api/v1/datasets/{ds['id']}/versions/",
                                     {"file": SimpleUploadedFile("d.csv", content, content_type="text/csv"), **form},
                                     format="multipart")

    response = send(encoding="klingon")
    assert response.status_code == 400 and "encoding" in response.json()
    undeclared = DatasetVersion.objects.get(pk=send().json()["version"])
    assert undeclared.status == "failed" and undeclared.errors[0]["row"] == 1 and "UTF-8" in undeclared.errors[0]["reason"]
    declared = DatasetVersion.objects.get(pk=send(encoding="cp1252").json()["version"])
    assert declared.status == "ready", declared.errors
    assert declared.encoding == "cp1252"
    listing = as_custodian.get(f"/api/v1/datasets/{ds['id']}/versions/{declared.pk}/").json()
    assert listing["encoding"] == "cp1252" and listing["progress"] is None


def test_who_may_read_a_dictionary(create_dataset, anon, client_for, make_user, researcher):
    ds = create_dataset()
    other = create_dataset("other")
    from environment.models import Dataset as DatasetModel

    dataset = DatasetModel.objects.get(pk=ds["id"])
    member, outsider, pending = make_user("member1"), make_user("outsider1"), make_user("pending1")
    ProjectFactory(lead=researcher, members=[member], datasets=[dataset], status="approved")
    ProjectFactory(lead=pending, datasets=[dataset], status="submitted")
    url = f"/api/v1/datasets/{ds['id']}/dictionary/"
    assert anon.get(url).status_code == 401
    for user in (member, researcher):
        response = client_for(user).get(url)
        assert response.status_code == 200, response.json()
        assert [c["name"] for c in response.json()["columns"]] == [c["name"] for c in COLUMNS if not c.get("drop")]
    assert client_for(outsider).get(url).status_code == 404
    assert client_for(pending).get(url).status_code == 404  # a project not (yet) approved
    assert client_for(member).get(f"/api/v1/datasets/{other['id']}/dictionary/").status_code == 404
    assert client_for(member).get("/api/v1/datasets/999999/dictionary/").status_code == 404
    assert client_for(make_user("aud1", role="auditor")).get(url).status_code == 404


def test_a_member_of_a_suspended_project_loses_the_dictionary(create_dataset, client_for, make_user, researcher):
    ds = create_dataset()
    dataset = Dataset.objects.get(pk=ds["id"])
    ProjectFactory(lead=researcher, datasets=[dataset], status="suspended")
    assert client_for(researcher).get(f"/api/v1/datasets/{ds['id']}/dictionary/").status_code == 404


def test_the_schema_documents_the_dictionary(anon):
    import yaml

    schema = yaml.safe_load(anon.get("/api/schema/").content)
    op = schema["paths"]["/api/v1/datasets/{id}/dictionary/"]["get"]
    assert {"200", "401", "404"} <= set(op["responses"])
    column = schema["components"]["schemas"]["ColumnInRequest"]["properties"]
    assert {"role", "values", "min", "max", "granularity"} <= set(column)
    assert "make_nhs_number" not in str(schema) and make_nhs_number(1) not in str(schema)
