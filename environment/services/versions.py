"""Versions: an upload recorded as a version, its load (the ingest task's body), the sweeper.

Every write audits itself in the same transaction; side effects (Celery, deleting files) go out on
commit. Nothing here logs or stores a raw NHS number or a DuckDB error message (those quote data).
"""

import logging
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit.actions import AuditAction
from audit.services import audit_record
from notifications.models import Kind
from notifications.services import notify

from .. import store
from ..ingest import build_version_file, load_failed
from ..models import Dataset, DatasetVersion, DictionaryVersion
from ..readers import sniff_format
from . import dictionaries
from .datasets import next_version_number
from .erasure import enqueue_erasure, erasure_pending
from .leases import delete_superseded_files
from .optouts import BROKER_ERRORS, optout_person_ids, optout_watermark_now

log = logging.getLogger(__name__)


def version_upload(*, dataset, actor, incoming_path: Path, size: int, sha256: str, filename: str = "", encoding: str = "",
                   request=None) -> DatasetVersion:
    """Record an uploaded file (already streamed into ``incoming/``) as a version in ``loading``;
    the load is enqueued on commit. If this fails the incoming file is deleted."""
    try:
        fmt = sniff_format(incoming_path, filename)
        with transaction.atomic():
            locked = Dataset.objects.select_for_update().get(pk=dataset.pk)
            number = next_version_number(locked)
            version = DatasetVersion.objects.create(
                dataset=locked, number=number, upload_number=number, origin=DatasetVersion.Origin.UPLOAD,
                status=DatasetVersion.Status.LOADING,
                source_format=fmt if fmt in DatasetVersion.Format.values else "",
                source_bytes=size, source_sha256=sha256, incoming_path=store.relpath(incoming_path), created_by=actor,
                encoding=encoding or "", phase=DatasetVersion.Phase.VALIDATING,
            )
            audit_record(actor=actor, action=AuditAction.DATASET_VERSION_UPLOADED, target=locked, request=request,
                   data={"version": number, "version_id": version.pk, "bytes": size, "format": fmt})
            transaction.on_commit(lambda: enqueue_ingest(version.pk))
    except BaseException:
        store.remove_quietly(incoming_path)
        raise
    return version


def enqueue_ingest(version_id: int) -> bool:
    """Hand the load to the broker; if it is down the version stays ``loading`` and the sweeper
    (``sweep_stuck_loads``, on the beat schedule) sends it again."""
    from ..tasks import ingest_version  # noqa: PLC0415 — tasks import services: the allowed services ↔ tasks pair

    try:
        ingest_version.apply_async(args=[version_id], retry=False)
        return True
    except BROKER_ERRORS as exc:
        log.warning("version %s kept loading: the broker did not take its load (%s)", version_id, type(exc).__name__)
        return False


class _ProgressWriter:
    """Called from the load's progress thread every second: writes ``{phase, rows_done,
    rows_total}`` on its own DB connection."""

    def __init__(self, version_id):
        self.version_id = version_id

    def __call__(self, phase: str, rows_done: int, rows_total: int | None = None):
        try:
            DatasetVersion.objects.filter(pk=self.version_id, status=DatasetVersion.Status.LOADING).update(
                phase=phase, rows_loaded=rows_done, rows_total=rows_total)
        except Exception:  # progress is best effort
            pass

    def close(self):
        connection.close()


def version_ingest(*, version_id: int, now=None) -> DatasetVersion | None:
    """Load one uploaded version into the store. Idempotent: a finished version is left alone; a
    redelivered load of an unfinished one starts again from the upload (still in ``incoming/``)."""
    version = DatasetVersion.objects.select_related("dataset").filter(pk=version_id).first()
    if version is None or version.is_finished or version.origin != DatasetVersion.Origin.UPLOAD:
        return version
    DatasetVersion.objects.filter(pk=version.pk).update(started_at=now or timezone.now(), attempts=version.attempts + 1)
    dataset = version.dataset
    started = time.monotonic()
    watermark = optout_watermark_now()
    tmp = store.temp_file(dataset.pk, f"v{version.number}")
    scratch = store.scratch_dir()
    source = store.abspath(version.incoming_path) if version.incoming_path else None
    try:
        dictionary = dataset.dictionary_object()
        if source is None or not source.exists():
            result = load_failed("the uploaded file is missing from the store")
        else:
            result = build_version_file(
                source=source, fmt=version.source_format or sniff_format(source), dictionary=dictionary,
                encoding=version.encoding or None, threshold=dictionaries.threshold_in_force(dictionary),
                optout_person_ids=optout_person_ids(upto=watermark), out_path=tmp, temp_dir=scratch,
                memory_limit=settings.TRE_INGEST_MEMORY_LIMIT, threads=settings.TRE_INGEST_THREADS, progress=_ProgressWriter(version.pk),
            )
        result.dictionary_version = dictionary.version
    except Exception as exc:  # a bug or the machine (memory, disk): never the message, it may quote data
        log.error("load of version %s failed: %s", version.pk, type(exc).__name__)
        reason = store.failure_reason(exc) or (f"internal error during the load ({type(exc).__name__}); "
                                               "the operators have the details")
        result = load_failed(reason)
        store.remove_quietly(tmp)
    finally:
        store.remove_quietly(scratch)
    seconds = round(time.monotonic() - started, 3)
    return _finish_ingest(version_id=version.pk, result=result, tmp=tmp, seconds=seconds, watermark=watermark, now=now)


def _finish_ingest(*, version_id, result, tmp: Path, seconds: float, watermark: int, now=None) -> DatasetVersion | None:
    now = now or timezone.now()
    published = None
    try:
        with transaction.atomic():
            # lock order everywhere: the dataset, then its versions
            dataset_id = DatasetVersion.objects.filter(pk=version_id).values_list("dataset_id", flat=True).get()
            dataset = Dataset.objects.select_for_update(of=("self",)).select_related("current_version").get(pk=dataset_id)
            version = DatasetVersion.objects.select_for_update().get(pk=version_id)
            if version.is_finished:  # another delivery finished it meanwhile
                store.remove_quietly(tmp)
                return version
            incoming = version.incoming_path
            transaction.on_commit(lambda: _after_ingest(incoming))  # first: the upload goes before the twin is made
            version.build_seconds, version.finished_at = seconds, now
            if result.ok and result.dictionary is not None and (dataset.dictionary or {}).get("version") != result.dictionary_version:
                # another load completed the dictionary first: this file was checked against the old one
                store.remove_quietly(tmp)
                result = load_failed("the dictionary changed while this file was loading; upload the file again")
            version.rows_total = result.rows_total
            if result.ok:
                final = store.version_file(dataset.pk, version.number)
                store.publish(tmp, final)
                published = final
                version.status = DatasetVersion.Status.READY
                version.file_path = store.relpath(final)
                version.row_count, version.person_count = result.row_count, result.person_count
                version.rows_loaded = result.row_count
                version.rows_removed, version.persons_removed = result.rows_removed, result.persons_removed
                version.optout_watermark = watermark
                version.errors, version.error_count = [], 0
                current = dataset.current_version
                becomes_current = current is None or current.upload_number < version.upload_number
                if becomes_current:
                    if current is not None:
                        current.superseded_at = now
                        current.save(update_fields=["superseded_at"])
                    dataset.current_version = version
                    dataset.save(update_fields=["current_version"])
                else:  # a newer upload is current already: this one is ready but never used
                    version.superseded_at = now
                version.save()
                audit_record(actor=None, action=AuditAction.DATASET_VERSION_READY, target=dataset,
                       data={"version": version.number, "version_id": version.pk, "row_count": version.row_count,
                             "person_count": version.person_count, "rows_opted_out": version.rows_removed,
                             "build_seconds": seconds, "current": becomes_current})
                if result.dictionary is not None:  # the first load derived the undeclared domains
                    dictionaries.dictionary_record(dataset=dataset, dictionary=result.dictionary,
                                                   reason=DictionaryVersion.Reason.DERIVED)
            else:
                store.remove_quietly(tmp)
                version.status = DatasetVersion.Status.FAILED
                version.errors, version.error_count = result.errors, result.error_count
                version.file_path = ""
                version.save()
                audit_record(actor=None, action=AuditAction.DATASET_VERSION_FAILED, target=dataset,
                       data={"version": version.number, "version_id": version.pk, "error_count": version.error_count})
            ready = version.status == DatasetVersion.Status.READY  # the uploader hears of it (after commit)
            notify(users=[version.created_by], kind=Kind.VERSION_READY if ready else Kind.VERSION_FAILED, target=version,
                   text=f"Version {version.number} of {dataset.name} " + ("is loaded" if ready else
                        f"failed to load ({version.error_count} error(s))"), link=f"/api/v1/datasets/{dataset.pk}/versions/")
            return version
    except BaseException:
        if published is not None:
            store.remove_quietly(published)  # the transaction did not commit: no version owns it
        store.remove_quietly(tmp)
        raise


def _after_ingest(incoming: str) -> None:
    if incoming:
        store.remove_quietly(store.abspath(incoming))
    delete_superseded_files()
    if erasure_pending():
        enqueue_erasure()


def sweep_stuck_loads(*, now=None, stale_after: timedelta | None = None, max_attempts: int = 3) -> dict:
    """Versions still ``loading`` long after upload: sent again (the broker lost them, or a worker
    died), or failed after ``max_attempts``."""
    now = now or timezone.now()
    limit = stale_after or timedelta(seconds=settings.TRE_INGEST_TIME_LIMIT + 300)
    resent = failed = 0
    for version in DatasetVersion.objects.filter(status=DatasetVersion.Status.LOADING, created_at__lt=now - limit):
        if version.started_at and version.started_at > now - limit:
            continue  # a load is running right now
        if version.attempts >= max_attempts:
            result = load_failed(f"the load did not finish after {version.attempts} attempts")
            _finish_ingest(version_id=version.pk, result=result, tmp=Path("/nonexistent"), seconds=0.0, watermark=0, now=now)
            failed += 1
        elif enqueue_ingest(version.pk):
            resent += 1
    return {"resent": resent, "failed": failed}
