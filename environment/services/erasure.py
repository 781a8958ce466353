"""Erasure: what follows an opt-out registration, and the rewrite of the files that hold them.

``optouts_apply`` (the registration's task) finds the datasets whose current version holds the
new opt-outs, sends ``signals.optouts_registered`` for them (upper apps mark their unreleased
outputs stale) and runs the erasure. ``erase_opted_out`` writes, for each dataset whose current
version may hold persons who opted out after its watermark, a new version without them and makes
it current; each erasure is audited with counts. Idempotent throughout.
"""

import logging
import time

import duckdb
import pyarrow as pa
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from audit.actions import AuditAction
from audit.services import audit_record
from tre.errors import NotFound

from .. import engine, store
from ..ingest import DUCKDB_TYPES
from ..models import Dataset, DatasetVersion, ErasureRun, OptOut
from ..naming import PERSON_ID
from ..recordkeys import RK, RK2, record_keys_many
from ..signals import optouts_registered
from .datasets import next_version_number
from .leases import DatasetNotLoaded, delete_superseded_files, lease_current_versions, release_leases
from .optouts import BROKER_ERRORS, optout_person_ids, optout_watermark_now

log = logging.getLogger(__name__)

RECORD_KEYS = pa.schema([(PERSON_ID, pa.string()), (RK, pa.int16()), (RK2, pa.int64())])


class StoreError(Exception):
    """The store could not be read or written (the message never quotes data)."""


def optouts_apply(*, first_id: int, last_id: int, erase: bool = True) -> dict:
    """After the registration of the opt-outs ``first_id``..``last_id`` (one batch, see
    ``optouts``): announce the datasets that hold any of them, then erase. Idempotent: a
    redelivery announces the same datasets again (staleness is decided by time, so nothing
    changes twice) and finds nothing left to erase. ``erase=False``: announce only (the task erases
    under its heartbeat, so a worker killed mid-erasure is recovered)."""
    registered_at = OptOut.objects.filter(id__gte=first_id, id__lte=last_id).aggregate(m=Max("registered_at"))["m"]
    if registered_at is None:
        return {"datasets": 0}
    try:
        dataset_ids = datasets_containing(optout_person_ids(after=first_id - 1, upto=last_id))
    except Exception as exc:  # be safe: every loaded dataset may hold them
        log.warning("could not check which datasets hold newly opted-out persons (%s)", type(exc).__name__)
        dataset_ids = list(Dataset.objects.filter(current_version__isnull=False).values_list("pk", flat=True))
    if dataset_ids:
        optouts_registered.send(sender=OptOut, dataset_ids=dataset_ids, registered_at=registered_at)
    return {"datasets": len(dataset_ids), **(erase_opted_out() if erase else {})}


def datasets_containing(person_ids) -> list[int]:
    """Ids of the datasets whose current version holds any of ``person_ids``."""
    person_ids = list(person_ids)
    loaded = list(Dataset.objects.filter(current_version__status=DatasetVersion.Status.READY).values_list("pk", flat=True))
    found = []
    for dataset_id in loaded:
        try:
            pairs, leases = lease_current_versions([dataset_id])
        except (DatasetNotLoaded, NotFound):
            continue
        try:
            _, version = pairs[0]
            con = engine.connect_for_ingest()
            try:
                engine.attach_read_only(con, store.abspath(version.file_path), "src")
                engine.load_person_ids(con, person_ids)
                (hit,) = con.execute("SELECT EXISTS (SELECT 1 FROM src.data WHERE person_id IN (SELECT person_id FROM tre_opt))").fetchall()[0]
            finally:
                con.close()
            if hit:
                found.append(dataset_id)
        finally:
            release_leases(leases)
    return found


def enqueue_erasure() -> bool:
    from ..tasks import erase_opted_out as erase_task  # noqa: PLC0415 — tasks import services: the allowed services ↔ tasks pair

    try:
        erase_task.apply_async(queue="ingest", retry=False)
        return True
    except BROKER_ERRORS as exc:
        log.warning("erasure not enqueued (%s); the beat schedule runs it later", type(exc).__name__)
        return False


def erasure_pending(watermark: int | None = None) -> bool:
    watermark = optout_watermark_now() if watermark is None else watermark
    return Dataset.objects.filter(current_version__status=DatasetVersion.Status.READY,
                                  current_version__optout_watermark__lt=watermark).exists()


def erase_opted_out(*, now=None) -> dict:
    """For each dataset whose current version may hold persons who opted out after its
    watermark: write a new version without them and make it current (or, if none are in it, just
    move its watermark). Then delete superseded files no lease holds. Idempotent."""
    started = timezone.now()
    watermark = optout_watermark_now()
    summary = {"optout_watermark": watermark, "datasets_checked": 0, "datasets_rewritten": 0,
               "rows_removed": 0, "persons_removed": 0}
    if watermark:
        todo = list(Dataset.objects.filter(current_version__status=DatasetVersion.Status.READY,
                                           current_version__optout_watermark__lt=watermark).values_list("pk", flat=True))
        for dataset_id in todo:
            outcome = erase_dataset(dataset_id=dataset_id, watermark=watermark, now=now)
            if outcome is None:
                continue
            summary["datasets_checked"] += 1
            summary["rows_removed"] += outcome["rows_removed"]
            summary["persons_removed"] += outcome["persons_removed"]
            summary["datasets_rewritten"] += 1 if outcome["rewritten"] else 0
        if summary["datasets_checked"]:
            ErasureRun.objects.create(started_at=started, finished_at=now or timezone.now(), optout_watermark=watermark,
                                      datasets_checked=summary["datasets_checked"],
                                      datasets_rewritten=summary["datasets_rewritten"],
                                      rows_removed=summary["rows_removed"], persons_removed=summary["persons_removed"])
    summary["files_deleted"] = delete_superseded_files(now=now)
    return summary


def erase_dataset(*, dataset_id: int, watermark: int, now=None) -> dict | None:
    """Apply the opt-outs up to ``watermark`` to one dataset's current version. None when there
    was nothing to do (or the dataset moved on meanwhile)."""
    try:
        pairs, leases = lease_current_versions([dataset_id])
    except (DatasetNotLoaded, NotFound):
        return None
    dataset, version = pairs[0]
    if version.optout_watermark >= watermark:
        release_leases(leases)
        return None
    started = time.monotonic()
    tmp = store.temp_file(dataset.pk, "erasure")
    try:
        con = engine.connect_for_ingest(tmp, preserve_insertion_order=False)
        try:
            engine.attach_read_only(con, store.abspath(version.file_path), "src")
            engine.load_person_ids(con, optout_person_ids(after=version.optout_watermark, upto=watermark))
            rows_removed, persons_removed = con.execute(
                "SELECT count(*), count(DISTINCT person_id) FROM src.data WHERE person_id IN (SELECT person_id FROM tre_opt)"
            ).fetchall()[0]
            if rows_removed:
                schema = ", ".join([f"{PERSON_ID} VARCHAR NOT NULL"] +
                                   [f'{engine.quote_ident(c["name"])} {DUCKDB_TYPES[c["type"]]}' for c in dataset.stored_columns()] +
                                   [f"{RK} SMALLINT NOT NULL", f"{RK2} BIGINT NOT NULL"])  # record keys are copied
                con.execute(f"CREATE TABLE data ({schema})")
                stored = [engine.quote_ident(c["name"]) for c in dataset.stored_columns()]
                has_keys = con.execute("SELECT count(*) FROM duckdb_columns() WHERE database_name = 'src' "
                                       f"AND table_name = 'data' AND column_name = '{RK}'").fetchone()[0]
                if not has_keys:  # a file written before record keys existed: they are made now
                    _load_record_keys(con)
                source = ("src.data" if has_keys else
                          f"(SELECT d.{PERSON_ID}, {', '.join('d.' + c for c in stored)}, k.{RK}, k.{RK2} "
                          f"FROM src.data d JOIN tre_keys k USING ({PERSON_ID}))")
                con.execute(f"INSERT INTO data SELECT * FROM {source} WHERE {PERSON_ID} NOT IN (SELECT person_id FROM tre_opt)")
                row_count, person_count = con.execute("SELECT count(*), count(DISTINCT person_id) FROM data").fetchall()[0]
                con.execute("DROP TABLE tre_opt")
                con.execute("DETACH src")
                con.execute("CHECKPOINT")
        finally:
            con.close()
    except duckdb.Error as exc:
        store.remove_quietly(tmp)
        release_leases(leases)
        # never the engine's message (it can quote data): the type is enough for operators
        raise StoreError(f"erasure of dataset {dataset.pk} failed in the engine ({type(exc).__name__})") from None
    except BaseException:
        store.remove_quietly(tmp)
        release_leases(leases)
        raise
    release_leases(leases)
    now = now or timezone.now()
    if not rows_removed:
        store.remove_quietly(tmp)
        with transaction.atomic():
            locked = Dataset.objects.select_for_update().get(pk=dataset.pk)
            if locked.current_version_id != version.pk:
                return None
            DatasetVersion.objects.filter(pk=version.pk, optout_watermark__lt=watermark).update(optout_watermark=watermark)
        return {"rewritten": False, "rows_removed": 0, "persons_removed": 0}
    published = None
    try:
        with transaction.atomic():
            locked = Dataset.objects.select_for_update().get(pk=dataset.pk)
            if locked.current_version_id != version.pk:  # a new upload (or another erasure) won
                store.remove_quietly(tmp)
                return None
            number = next_version_number(locked)
            final = store.version_file(locked.pk, number)
            store.publish(tmp, final)
            published = final
            new = DatasetVersion.objects.create(
                dataset=locked, number=number, upload_number=version.upload_number, origin=DatasetVersion.Origin.ERASURE,
                derived_from=version, status=DatasetVersion.Status.READY, file_path=store.relpath(final),
                row_count=row_count, person_count=person_count, rows_loaded=row_count, rows_total=version.row_count,
                rows_removed=rows_removed, persons_removed=persons_removed, optout_watermark=watermark,
                build_seconds=round(time.monotonic() - started, 3), started_at=now, finished_at=now,
            )
            DatasetVersion.objects.filter(pk=version.pk).update(superseded_at=now)
            locked.current_version = new
            locked.save(update_fields=["current_version"])
            audit_record(actor=None, action=AuditAction.DATASET_ERASED, target=locked,
                   data={"rows_removed": int(rows_removed), "persons_removed": int(persons_removed),
                         "from_version": version.number, "to_version": number, "optout_watermark": watermark})
    except BaseException:
        if published is not None:
            store.remove_quietly(published)
        store.remove_quietly(tmp)
        raise
    return {"rewritten": True, "rows_removed": int(rows_removed), "persons_removed": int(persons_removed)}


def _load_record_keys(con) -> None:
    """``tre_keys(person_id, _rk, _rk2)`` for every person of ``src.data`` (``recordkeys.py``)."""
    con.execute(f"CREATE TEMP TABLE tre_keys ({PERSON_ID} VARCHAR NOT NULL, {RK} SMALLINT NOT NULL, {RK2} BIGINT NOT NULL)")
    person_ids = [r[0] for r in con.execute(f"SELECT DISTINCT {PERSON_ID} FROM src.data").fetchall()]
    rk, rk2 = record_keys_many(person_ids)
    engine.append_through_arrow(con, zip(person_ids, rk, rk2, strict=True), RECORD_KEYS,
                                [f"INSERT INTO tre_keys SELECT * FROM {engine.BATCH_VIEW}"])
