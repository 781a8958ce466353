"""Datasets: their declaration (name, identifier, columns) and its validation."""

from django.db import IntegrityError, transaction
from django.db.models import Max

from audit.actions import AuditAction
from audit.services import audit_record
from tre.errors import Invalid

from ..ingest import DUCKDB_TYPES
from ..models import Dataset, DatasetVersion
from ..naming import PERSON_ID, column_name_problems, table_name_problems


def validate_dataset_declaration(*, name, identifier_column, columns) -> dict:
    """Field → messages for everything wrong with a declaration (empty when it is good)."""
    errors: dict = {}
    problems = table_name_problems(name)
    if problems:
        errors["name"] = problems
    elif Dataset.objects.filter(name=name).exists():
        errors["name"] = [f"a dataset named '{name}' already exists"]
    column_errors: dict = {}
    seen: dict = {}
    if not isinstance(columns, list) or not columns:
        errors["columns"] = ["at least one column (the identifier) is required"]
        columns = []
    for i, col in enumerate(columns):
        problems = column_name_problems(col.get("name"))
        if problems:
            column_errors.setdefault(str(i), {})["name"] = problems
        elif col["name"] in seen:
            column_errors.setdefault(str(i), {})["name"] = [f"duplicate column name '{col['name']}' (also column {seen[col['name']]})"]
        else:
            seen[col["name"]] = i
        if col.get("type") not in DUCKDB_TYPES:
            column_errors.setdefault(str(i), {})["type"] = [f"type must be one of {', '.join(DUCKDB_TYPES)}"]
    if column_errors:
        errors["columns"] = column_errors
    if not isinstance(identifier_column, str) or not identifier_column:
        errors["identifier_column"] = ["the identifier column (e.g. nhs_number) is required"]
    elif identifier_column not in seen and "columns" not in errors:
        errors["identifier_column"] = [f"'{identifier_column}' is not among the columns"]
    elif identifier_column == PERSON_ID:
        errors["identifier_column"] = [f"'{PERSON_ID}' is the pseudonym, not an identifier column"]
    return errors


@transaction.atomic
def dataset_create(*, actor, name, title, description="", identifier_column, columns, request=None) -> Dataset:
    columns = [
        {"name": c.get("name"), "type": c.get("type"), "drop": bool(c.get("drop", False)), "description": c.get("description") or ""}
        for c in (columns or [])
    ]
    errors = validate_dataset_declaration(name=name, identifier_column=identifier_column, columns=columns)
    if errors:
        raise Invalid(fields=errors)
    try:
        with transaction.atomic():
            dataset = Dataset.objects.create(name=name, title=title, description=description or "",
                                             identifier_column=identifier_column, columns=columns, created_by=actor)
    except IntegrityError:
        raise Invalid(fields={"name": [f"a dataset named '{name}' already exists"]}) from None
    stored = dataset.stored_columns()
    audit_record(actor=actor, action=AuditAction.DATASET_CREATED, target=dataset, request=request,
           data={"name": dataset.name, "columns": len(columns), "stored_columns": len(stored),
                 "dropped_columns": sum(1 for c in columns if c["drop"] and c["name"] != identifier_column)})
    return dataset


def next_version_number(dataset) -> int:
    """The number the dataset's next version takes (call with the dataset row locked)."""
    return (DatasetVersion.objects.filter(dataset=dataset).aggregate(m=Max("number"))["m"] or 0) + 1
