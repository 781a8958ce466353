"""Writes of data dictionaries and dummy twins.

- ``dictionary_record``: a new ``DictionaryVersion`` (declared at creation, derived at the first
  load), made the dataset's current dictionary and audited (``dataset.dictionary_changed``) in the
  caller's transaction; the dummy twin is regenerated on commit.
- ``twin_refresh``: the twin of the dataset's current dictionary, generated if it is missing
  (idempotent; also run by the store's housekeeping, so a twin lost to a crash comes back).

The pure parts live in ``declaration.py`` (declaration → dictionary), ``derivation.py`` and
``twins.py``.
"""

import logging
from dataclasses import replace

from django.conf import settings
from django.db import transaction
from django.db.models import Max

from audit.actions import AuditAction
from audit.services import audit_record

from .. import store
from ..declaration import Limits, legacy_columns, threshold_for
from ..dictionary import Dictionary
from ..models import Dataset, DictionaryVersion, DummyTwin
from ..twins import IncompleteDictionary, generate_twin, twin_seed, write_twin_file

log = logging.getLogger(__name__)


def limits() -> Limits:
    """The disclosure-control settings a dataset's ``protection`` may only make stricter."""
    return Limits(threshold=int(settings.TRE_SDC_THRESHOLD), ckm_d=int(getattr(settings, "TRE_CKM_D", 3)),
                  ckm_v=float(getattr(settings, "TRE_CKM_V", 2.0)))


def threshold_in_force(dictionary: Dictionary) -> int:
    return threshold_for(dictionary, limits())


def dictionary_record(*, dataset: Dataset, dictionary: Dictionary, reason: str, actor=None, request=None) -> DictionaryVersion:
    """Make ``dictionary`` the dataset's next dictionary version. Call inside a transaction that
    holds the dataset (``select_for_update``) or has just created it."""
    number = (DictionaryVersion.objects.filter(dataset=dataset).aggregate(m=Max("number"))["m"] or 0) + 1
    dictionary = replace(dictionary, version=number, dataset=dataset.name)
    body = dictionary.to_json()
    dataset.dictionary = body
    dataset.columns = legacy_columns(dictionary)
    dataset.rows_per_person = dictionary.rows_per_person.value
    dataset.protection = dict(dictionary.protection)
    dataset.save(update_fields=["dictionary", "columns", "rows_per_person", "protection"])
    version = DictionaryVersion.objects.create(dataset=dataset, number=number, body=body, reason=reason,
                                               created_by=actor if getattr(actor, "pk", None) else None)
    derived = {c.name: list(c.derived) for c in dictionary.columns if c.derived}
    audit_record(actor=actor, action=AuditAction.DATASET_DICTIONARY_CHANGED, target=dataset, request=request,
                 data={"dictionary_version": number, "reason": reason, "complete": dictionary.complete,
                       "rows_per_person": dictionary.rows_per_person.value, "protection": dict(dictionary.protection),
                       "derived": derived})
    dataset_id = dataset.pk
    transaction.on_commit(lambda: twin_refresh_quietly(dataset_id))
    return version


def twin_refresh_quietly(dataset_id: int) -> None:
    """``twin_refresh`` after a commit: a failure is logged, and the housekeeping tries again."""
    try:
        twin_refresh(dataset_id=dataset_id)
    except Exception as exc:  # the dictionary change stands; the twin follows later
        log.warning("dummy twin of dataset %s not generated (%s)", dataset_id, type(exc).__name__)


def twin_refresh(*, dataset_id: int) -> DummyTwin | None:
    """The twin of the dataset's current dictionary; generated (and made current) if missing.
    None while the dictionary is incomplete (before the first load)."""
    dataset = Dataset.objects.filter(pk=dataset_id).first()
    if dataset is None or not dataset.dictionary:
        return None
    dictionary = dataset.dictionary_object()
    existing = DummyTwin.objects.filter(dataset=dataset, dictionary_version=dictionary.version).first()
    if existing is not None:
        if dataset.current_twin_id != existing.pk:
            Dataset.objects.filter(pk=dataset.pk).update(current_twin=existing)
        return existing
    if not dictionary.complete:
        return None
    seed = twin_seed(dictionary)
    try:
        table = generate_twin(dictionary, rows=int(settings.TRE_DUMMY_ROWS), seed=seed)
    except IncompleteDictionary:
        return None
    tmp = store.temp_file(dataset.pk, f"twin-d{dictionary.version}")
    final = store.dataset_dir(dataset.pk) / f"twin-d{dictionary.version}.duckdb"
    published = False
    try:
        write_twin_file(table, dictionary, tmp, seed=seed)
        with transaction.atomic():
            locked = Dataset.objects.select_for_update().get(pk=dataset.pk)
            if (locked.dictionary or {}).get("version") != dictionary.version:
                return None  # the dictionary moved on meanwhile: its own refresh makes its twin
            if DummyTwin.objects.filter(dataset=locked, dictionary_version=dictionary.version).exists():
                return DummyTwin.objects.get(dataset=locked, dictionary_version=dictionary.version)
            store.publish(tmp, final)
            published = True
            twin = DummyTwin.objects.create(dataset=locked, dictionary_version=dictionary.version,
                                            file_path=store.relpath(final), row_count=table.num_rows, seed=seed)
            old = DummyTwin.objects.filter(pk=locked.current_twin_id).first()
            locked.current_twin = twin
            locked.save(update_fields=["current_twin"])
            audit_record(actor=None, action=AuditAction.DATASET_TWIN_GENERATED, target=locked,
                         data={"dictionary_version": dictionary.version, "rows": table.num_rows, "twin_id": twin.pk})
            if old is not None:
                DummyTwin.objects.filter(pk=old.pk).update(file_deleted_at=twin.created_at)
                old_path = store.abspath(old.file_path)
                transaction.on_commit(lambda: store.remove_quietly(old_path))
        return twin
    except BaseException:
        if published:
            store.remove_quietly(final)
        raise
    finally:
        store.remove_quietly(tmp)


def twins_missing() -> list[int]:
    """Datasets whose current, complete dictionary has no twin yet (for the housekeeping)."""
    out = []
    for pk, body, twin_version in Dataset.objects.values_list("pk", "dictionary", "current_twin__dictionary_version"):
        if body and body.get("version") != twin_version and Dictionary.from_json(body).complete:
            out.append(pk)
    return out
