"""Datasets: their declaration (name, identifier, columns, roles, domains) → a dictionary
(``environment/declaration.py`` holds the rules)."""

from django.db import IntegrityError, transaction
from django.db.models import Max

from audit.actions import AuditAction
from audit.services import audit_record
from tre.errors import Invalid

from ..declaration import declare, legacy_columns
from ..dictionary import Role
from ..models import Dataset, DatasetVersion, DictionaryVersion
from . import dictionaries


def dataset_declaration_problems(declaration: dict) -> dict:
    """Field → messages for everything wrong with a declaration (empty when it is good)."""
    _, errors = declare(declaration, limits=dictionaries.limits())
    name = declaration.get("name") if isinstance(declaration, dict) else None
    if "name" not in errors and isinstance(name, str) and Dataset.objects.filter(name=name).exists():
        errors["name"] = [f"a dataset named '{name}' already exists"]
    return errors


@transaction.atomic
def dataset_create(*, actor, title, description="", declaration: dict, request=None) -> Dataset:
    """Register a dataset and its dictionary (version 1, audited); the dummy twin follows on
    commit when the dictionary is complete."""
    dictionary, errors = declare(declaration, limits=dictionaries.limits())
    if errors:
        raise Invalid(fields=errors)
    try:
        with transaction.atomic():
            dataset = Dataset.objects.create(name=dictionary.dataset, title=title, description=description or "",
                                             identifier_column=dictionary.identifier.name,
                                             columns=legacy_columns(dictionary), created_by=actor)
    except IntegrityError:
        raise Invalid(fields={"name": [f"a dataset named '{dictionary.dataset}' already exists"]}) from None
    audit_record(actor=actor, action=AuditAction.DATASET_CREATED, target=dataset, request=request,
                 data={"name": dataset.name, "columns": len(dictionary.columns),
                       "stored_columns": len(dictionary.stored_columns),
                       "dropped_columns": sum(1 for c in dictionary.columns if c.role == Role.DROP)})
    dictionaries.dictionary_record(dataset=dataset, dictionary=dictionary, reason=DictionaryVersion.Reason.DECLARED,
                                   actor=actor, request=request)
    return dataset


def next_version_number(dataset) -> int:
    """The number the dataset's next version takes (call with the dataset row locked)."""
    return (DatasetVersion.objects.filter(dataset=dataset).aggregate(m=Max("number"))["m"] or 0) + 1
