"""Writes of the secure data environment: datasets, versions (ingestion), opt-outs, erasure.

Every write audits itself in the same transaction; side effects (Celery, signals, deleting files)
go out on commit. Nothing here logs or stores a raw NHS number or a DuckDB error message (those
quote data).

Opt-out ordering: every registration holds an exclusive advisory lock until it commits; whoever
takes a *watermark* (the highest ``OptOut.id``) takes the same lock shared first. So when a
watermark W is read, every opt-out with an id ≤ W has committed: "all opt-outs ≤ W are absent from
this file" is then exact.
"""

import logging
import os
import socket
import time
import zlib
from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Max, Min
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from audit.actions import AuditAction
from audit.services import audit_record
from tre.errors import Invalid, NotFound, Unavailable, WrongState

from . import dictionaries, store
from .declaration import declare, legacy_columns
from .dictionary import Role
from .ingest import DUCKDB_TYPES, sniff_format
from .loader import LoadResult, _error, build_version_file
from .models import Dataset, DatasetVersion, DictionaryVersion, ErasureRun, OptOut, SandboxLease
from .naming import PERSON_ID
from .pseudonym import is_valid_nhs_number, normalise_nhs_number, person_id_for
from .recordkeys import RK, RK2

log = logging.getLogger(__name__)

OPTOUT_SERVICE_GROUP = "opt_out_service"
MAX_OPTOUTS_PER_REQUEST = 100_000
_OPTOUT_LOCK = zlib.crc32(b"tre.environment.optouts")
_BATCH = 50_000
BROKER_ERRORS = (KombuOperationalError, OSError)  # the broker is down: swept / retried by beat later


def _setting(name, default):
    return getattr(settings, name, default)


def ingest_memory_limit() -> str:
    return _setting("TRE_INGEST_MEMORY_LIMIT", "512MB")


def ingest_threads() -> int:
    return int(_setting("TRE_INGEST_THREADS", 2))


def lease_seconds() -> int:
    return int(_setting("TRE_SANDBOX_LEASE_SECONDS", max(3600, 2 * int(_setting("TRE_QUERY_TIME_LIMIT", 150)))))


class StoreError(Exception):
    """The store could not be read or written (the message never quotes data)."""


class DatasetNotLoaded(WrongState, LookupError):
    """A dataset without a ready current version (409; a LookupError for the query runner)."""




# --- datasets ----------------------------------------------------------------------------------

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


# --- versions: upload ---------------------------------------------------------------------------

def _next_number(dataset) -> int:
    return (DatasetVersion.objects.filter(dataset=dataset).aggregate(m=Max("number"))["m"] or 0) + 1


def version_upload(*, dataset, actor, incoming_path: Path, size: int, sha256: str, filename: str = "", encoding: str = "",
                   request=None) -> DatasetVersion:
    """Record an uploaded file (already streamed into ``incoming/``) as a version in ``loading``;
    the load is enqueued on commit. If this fails the incoming file is deleted."""
    try:
        fmt = sniff_format(incoming_path, filename)
        with transaction.atomic():
            locked = Dataset.objects.select_for_update().get(pk=dataset.pk)
            number = _next_number(locked)
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
    from .tasks import ingest_version

    try:
        ingest_version.apply_async(args=[version_id], retry=False)
        return True
    except BROKER_ERRORS as exc:
        log.warning("version %s kept loading: the broker did not take its load (%s)", version_id, type(exc).__name__)
        return False


# --- opt-out snapshots ----------------------------------------------------------------------------

def _lock_optouts_for_registration() -> None:
    """Held until the registration commits (see the module docstring)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_OPTOUT_LOCK])


def optout_watermark_now() -> int:
    """The highest committed ``OptOut.id`` such that every lower id has committed too.

    Takes the opt-out lock shared for the one read (session level, released at once, so a caller's
    long transaction does not hold registrations up)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock_shared(%s)", [_OPTOUT_LOCK])
            try:
                cursor.execute(f'SELECT coalesce(max(id), 0) FROM "{OptOut._meta.db_table}"')
                return int(cursor.fetchone()[0])
            finally:
                cursor.execute("SELECT pg_advisory_unlock_shared(%s)", [_OPTOUT_LOCK])
    return OptOut.objects.aggregate(m=Max("id"))["m"] or 0


def optout_person_ids(*, after: int = 0, upto: int):
    """``person_id`` of the opt-outs with ``after < id ≤ upto``, streamed."""
    if upto <= after:
        return
    last = after
    while True:
        chunk = list(OptOut.objects.filter(id__gt=last, id__lte=upto).order_by("id").values_list("id", "person_id")[:_BATCH])
        if not chunk:
            return
        for _, pid in chunk:
            yield pid
        last = chunk[-1][0]


# --- versions: the load (the task's body) -------------------------------------------------------

class _ProgressWriter:
    """Called from the load's progress thread: writes ``rows_loaded`` on its own DB connection."""

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
            result = LoadResult(ok=False, errors=[_error(None, None, "the uploaded file is missing from the store")], error_count=1)
        else:
            result = build_version_file(
                source=source, fmt=version.source_format or sniff_format(source), dictionary=dictionary,
                encoding=version.encoding or None, threshold=dictionaries.threshold_in_force(dictionary),
                optout_person_ids=optout_person_ids(upto=watermark), out_path=tmp, temp_dir=scratch,
                memory_limit=ingest_memory_limit(), threads=ingest_threads(), progress=_ProgressWriter(version.pk),
            )
        result.dictionary_version = dictionary.version
    except Exception as exc:  # a bug or the machine (memory, disk): never the message, it may quote data
        log.error("load of version %s failed: %s", version.pk, type(exc).__name__)
        reason = store.failure_reason(exc) or (f"internal error during the load ({type(exc).__name__}); "
                                               "the operators have the details")
        result = LoadResult(ok=False, errors=[_error(None, None, reason)], error_count=1)
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
                result = LoadResult(ok=False, error_count=1, rows_total=result.rows_total, errors=[_error(
                    None, None, "the dictionary changed while this file was loading; upload the file again")])
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
    limit = stale_after or timedelta(seconds=int(_setting("TRE_INGEST_TIME_LIMIT", 3600)) + 300)
    resent = failed = 0
    for version in DatasetVersion.objects.filter(status=DatasetVersion.Status.LOADING, created_at__lt=now - limit):
        if version.started_at and version.started_at > now - limit:
            continue  # a load is running right now
        if version.attempts >= max_attempts:
            result = LoadResult(ok=False, errors=[_error(None, None, f"the load did not finish after {version.attempts} attempts")],
                                error_count=1)
            _finish_ingest(version_id=version.pk, result=result, tmp=Path("/nonexistent"), seconds=0.0, watermark=0, now=now)
            failed += 1
        elif enqueue_ingest(version.pk):
            resent += 1
    return {"resent": resent, "failed": failed}


# --- leases -------------------------------------------------------------------------------------

def holder_id() -> str:
    """Who holds a lease or sandbox: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


def _holder_alive(holder: str) -> bool | None:
    """False when ``holder`` is a process on this host that no longer exists; None when unknowable."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_sandboxes() -> dict:
    """Release the leases and delete the sandbox catalogs of processes that died (e.g. a worker
    killed with SIGKILL mid-query), without waiting for their leases to expire."""
    dead = [lease.pk for lease in SandboxLease.objects.only("pk", "holder") if _holder_alive(lease.holder) is False]
    SandboxLease.objects.filter(pk__in=dead).delete()
    removed = 0
    base = store.root() / "sandboxes"
    for directory in (base.iterdir() if base.is_dir() else []):
        try:
            holder = (directory / "holder").read_text()
        except OSError:
            continue
        if _holder_alive(holder) is False:
            store.remove_quietly(directory)
            removed += 1
    return {"leases_released": len(dead), "sandboxes_removed": removed}


def _lock_versions_shared(version_ids) -> dict:
    """The versions, share-locked (PostgreSQL) so the file deleter (FOR UPDATE SKIP LOCKED) passes them by."""
    ids = sorted(set(version_ids))
    if connection.vendor == "postgresql":
        table = DatasetVersion._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(f'SELECT id FROM "{table}" WHERE id = ANY(%s) ORDER BY id FOR SHARE', [ids])
    return {v.pk: v for v in DatasetVersion.objects.filter(pk__in=ids)}


def lease_current_versions(datasets) -> tuple[list[tuple[Dataset, DatasetVersion]], list[int]]:
    """The current version of each dataset, each with a lease (so its file is not deleted while
    the caller reads it). ``DatasetNotLoaded`` when a dataset has no ready version."""
    ids = [d.pk if isinstance(d, Dataset) else int(d) for d in datasets]
    expires = timezone.now() + timedelta(seconds=lease_seconds())
    for _attempt in range(5):
        with transaction.atomic():
            found = {d.pk: d for d in Dataset.objects.filter(pk__in=ids)}
            missing = [i for i in ids if i not in found]
            if missing:
                raise NotFound(f"no dataset with id {missing[0]}")
            empty = sorted(d.name for d in found.values() if d.current_version_id is None)
            if empty:
                raise DatasetNotLoaded(f"dataset {', '.join(empty)} has no data loaded yet")
            versions = _lock_versions_shared([d.current_version_id for d in found.values()])
            if any(v.file_deleted_at or v.status != DatasetVersion.Status.READY for v in versions.values()):
                continue  # switched and deleted between the two reads: read the current versions again
            leases = SandboxLease.objects.bulk_create(
                [SandboxLease(version_id=v.pk, holder=holder_id(), expires_at=expires) for v in versions.values()]
            )
            pairs = [(found[i], versions[found[i].current_version_id]) for i in dict.fromkeys(ids)]
            return pairs, [lease.pk for lease in leases]
    raise Unavailable("the store is busy switching versions; try again", dependency="store")


def release_leases(lease_ids) -> None:
    if lease_ids:
        SandboxLease.objects.filter(pk__in=list(lease_ids)).delete()


def delete_superseded_files(*, now=None) -> int:
    """Delete the files of versions that are no longer current, once no live lease holds them.
    Run after every switch and by the beat job (which retries those still leased)."""
    now = now or timezone.now()
    SandboxLease.objects.filter(expires_at__lt=now).delete()
    deleted = 0
    candidates = DatasetVersion.objects.filter(
        status=DatasetVersion.Status.READY, superseded_at__isnull=False, file_deleted_at__isnull=True,
    ).values_list("pk", flat=True)
    for pk in list(candidates):
        with transaction.atomic():
            version = DatasetVersion.objects.select_for_update(skip_locked=True).filter(pk=pk, file_deleted_at__isnull=True).first()
            if version is None:
                continue  # a sandbox is taking a lease on it right now, or done already
            if Dataset.objects.filter(current_version_id=version.pk).exists():
                continue
            if SandboxLease.objects.filter(version=version, expires_at__gte=now).exists():
                continue
            version.file_deleted_at = now
            version.save(update_fields=["file_deleted_at"])
            path = store.abspath(version.file_path)
            transaction.on_commit(lambda path=path: store.remove_quietly(path))
            deleted += 1
    return deleted


def cleanup_store(*, now=None) -> dict:
    """Stale leftovers of crashed processes: sandbox catalogs, spill space, partial files."""
    reaped = reap_dead_sandboxes()
    removed = store.remove_stale("sandboxes", older_than_seconds=lease_seconds() + 3600)
    removed += store.remove_stale("tmp", older_than_seconds=24 * 3600)
    base = store.root() / "datasets"
    if base.is_dir():
        cutoff = time.time() - 24 * 3600
        for tmp in base.glob("*/.*.tmp"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    store.remove_quietly(tmp)
                    removed += 1
            except FileNotFoundError:
                continue
    incoming = store.root() / "incoming"
    if incoming.is_dir():
        cutoff = time.time() - 24 * 3600
        waiting = set(DatasetVersion.objects.filter(status=DatasetVersion.Status.LOADING).values_list("incoming_path", flat=True))
        for upload in incoming.iterdir():
            try:
                if upload.stat().st_mtime < cutoff and store.relpath(upload) not in waiting:
                    store.remove_quietly(upload)  # an upload whose request died before its version was recorded
                    removed += 1
            except FileNotFoundError:
                continue
    twins = 0
    for dataset_id in dictionaries.twins_missing():  # a twin lost to a crash (or never made) comes back
        dictionaries.twin_refresh_quietly(dataset_id)
        twins += 1
    return {"files_deleted": delete_superseded_files(now=now), "stale_removed": removed, "twins_refreshed": twins, **reaped}


# --- opt-outs -------------------------------------------------------------------------------------

def optouts_register(*, actor, nhs_numbers, request=None, now=None) -> dict:
    """Register opt-outs. All numbers are validated first; one invalid number refuses the whole
    batch (400 naming the positions, never the numbers). Only the keyed hash is stored."""
    if not isinstance(nhs_numbers, list) or not nhs_numbers:
        raise Invalid(fields={"nhs_numbers": ["a non-empty list of NHS numbers is required"]})
    if len(nhs_numbers) > MAX_OPTOUTS_PER_REQUEST:
        raise Invalid(fields={"nhs_numbers": [f"at most {MAX_OPTOUTS_PER_REQUEST} numbers per request"]})
    bad = {str(i): ["not a valid NHS number (10 digits with a modulus-11 check digit)"]
           for i, n in enumerate(nhs_numbers) if not is_valid_nhs_number(n)}
    if bad:
        raise Invalid(fields={"nhs_numbers": bad})
    person_ids = list(dict.fromkeys(person_id_for(normalise_nhs_number(n)) for n in nhs_numbers))
    now = now or timezone.now()
    with transaction.atomic():
        _lock_optouts_for_registration()
        existing = set()
        for start in range(0, len(person_ids), _BATCH):
            chunk = person_ids[start:start + _BATCH]
            existing.update(OptOut.objects.filter(person_id__in=chunk).values_list("person_id", flat=True))
        new = [p for p in person_ids if p not in existing]
        OptOut.objects.bulk_create([OptOut(person_id=p, registered_at=now, registered_by=actor) for p in new], batch_size=5_000)
        counts = {"registered": len(new), "already_registered": len(person_ids) - len(new)}
        audit_record(actor=actor, action=AuditAction.OPTOUT_REGISTERED, request=request,
               data={**counts, "received": len(nhs_numbers)})
        if new:
            transaction.on_commit(lambda: _after_optouts(new, now))
    return counts


def _after_optouts(person_ids: list[str], registered_at) -> None:
    from .signals import optouts_registered

    try:
        dataset_ids = datasets_containing(person_ids)
    except Exception as exc:  # be safe: every loaded dataset may hold them
        log.warning("could not check which datasets hold newly opted-out persons (%s)", type(exc).__name__)
        dataset_ids = list(Dataset.objects.filter(current_version__isnull=False).values_list("pk", flat=True))
    if dataset_ids:
        optouts_registered.send(sender=OptOut, dataset_ids=dataset_ids, registered_at=registered_at)
    enqueue_erasure()


def _register_person_ids(con, person_ids, table="tre_opt") -> None:
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} (person_id VARCHAR NOT NULL)")
    batch = []

    def flush():
        con.register("tre_opt_batch", pa.table({"person_id": pa.array(batch, pa.string())}))
        con.execute(f"INSERT INTO {table} SELECT person_id FROM tre_opt_batch")
        con.unregister("tre_opt_batch")

    for pid in person_ids:
        batch.append(pid)
        if len(batch) >= _BATCH:
            flush()
            batch = []
    if batch:
        flush()


def _open_version(version: DatasetVersion):
    """An in-memory DuckDB connection with the version's file attached read-only as ``src``."""
    con = duckdb.connect(":memory:", config={"memory_limit": ingest_memory_limit(), "threads": ingest_threads(),
                                             "autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute(f"ATTACH {_sql_path(store.abspath(version.file_path))} AS src (READ_ONLY)")
    return con


def _sql_path(path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


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
            con = _open_version(version)
            try:
                _register_person_ids(con, person_ids)
                (hit,) = con.execute("SELECT EXISTS (SELECT 1 FROM src.data WHERE person_id IN (SELECT person_id FROM tre_opt))").fetchall()[0]
            finally:
                con.close()
            if hit:
                found.append(dataset_id)
        finally:
            release_leases(leases)
    return found


def enqueue_erasure() -> bool:
    from .tasks import erase_opted_out

    try:
        erase_opted_out.apply_async(queue="ingest", retry=False)
        return True
    except BROKER_ERRORS as exc:
        log.warning("erasure not enqueued (%s); the beat schedule runs it later", type(exc).__name__)
        return False


def erasure_pending(watermark: int | None = None) -> bool:
    watermark = optout_watermark_now() if watermark is None else watermark
    return Dataset.objects.filter(current_version__status=DatasetVersion.Status.READY,
                                  current_version__optout_watermark__lt=watermark).exists()


def optout_status() -> dict:
    """``registered``: opt-outs held; ``pending_erasure``: of those, how many some loaded
    dataset's current file may still hold (newer than its watermark); ``last_erasure_at``."""
    lowest = (Dataset.objects.filter(current_version__status=DatasetVersion.Status.READY)
              .aggregate(m=Min("current_version__optout_watermark"))["m"])
    pending = OptOut.objects.filter(id__gt=lowest).count() if lowest is not None else 0
    last = ErasureRun.objects.order_by("-finished_at").values_list("finished_at", flat=True).first()
    return {"registered": OptOut.objects.count(), "pending_erasure": pending, "last_erasure_at": last}


# --- erasure --------------------------------------------------------------------------------------

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
        con = duckdb.connect(str(tmp), config={"memory_limit": ingest_memory_limit(), "threads": ingest_threads(),
                                               "autoinstall_known_extensions": False, "autoload_known_extensions": False,
                                               "preserve_insertion_order": False})
        try:
            con.execute(f"ATTACH {_sql_path(store.abspath(version.file_path))} AS src (READ_ONLY)")
            _register_person_ids(con, optout_person_ids(after=version.optout_watermark, upto=watermark))
            rows_removed, persons_removed = con.execute(
                "SELECT count(*), count(DISTINCT person_id) FROM src.data WHERE person_id IN (SELECT person_id FROM tre_opt)"
            ).fetchall()[0]
            if rows_removed:
                schema = ", ".join([f"{PERSON_ID} VARCHAR NOT NULL"] +
                                   [f'"{c["name"]}" {DUCKDB_TYPES[c["type"]]}' for c in dataset.stored_columns()] +
                                   [f"{RK} SMALLINT NOT NULL", f"{RK2} BIGINT NOT NULL"])  # record keys are copied
                con.execute(f"CREATE TABLE data ({schema})")
                con.execute("INSERT INTO data SELECT * FROM src.data WHERE person_id NOT IN (SELECT person_id FROM tre_opt)")
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
            number = _next_number(locked)
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
