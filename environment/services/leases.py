"""Leases on version files, and the store's garbage collection.

A reader (a sandbox, an erasure, a scan) takes a lease on the current version of each dataset it
reads, so the file is not deleted under it; superseded files are deleted once no live lease holds
them (after every switch and by the beat job). Leftovers of crashed processes (sandbox catalogs,
spill space, partial files, uploads whose request died) are swept here too.
"""

import os
import socket
import time
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from tre.errors import NotFound, Unavailable, WrongState

from .. import store
from ..models import Dataset, DatasetVersion, SandboxLease
from . import dictionaries


class DatasetNotLoaded(WrongState, LookupError):
    """A dataset without a ready current version (409; a LookupError for the query runner)."""


def lease_seconds() -> int:
    return int(settings.TRE_SANDBOX_LEASE_SECONDS)


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
