"""The sandboxed engine: a locked DuckDB connection that can read the datasets and nothing else.

``open_sandbox(datasets)`` builds a small catalog file for this sandbox alone, holding

- ``tre_optouts(person_id VARCHAR NOT NULL)``: every registered opt-out (up to the sandbox's
  ``optout_watermark``) — the query rewriter anti-joins every dataset against it;
- ``tre_optout_pending(person_id, seq)``: the opt-outs newer than the oldest version watermark;
- one view per dataset, named exactly as the dataset, ``person_id`` + its stored columns + the record keys ``_rk``, ``_rk2``, over the
  current version's file **minus the persons who opted out after that file's watermark** (so a
  registration takes effect at once, before erasure rewrites the file).

The catalog is opened READ ONLY; each version file is attached READ ONLY (under an unguessable
alias); then ``enable_external_access=false``, the local file system is disabled (DuckDB keeps the
attached files readable through the handles it already holds, but nothing new can be opened:
no read_csv/read_parquet/read_blob, no COPY … TO, no ATTACH, no INSTALL/LOAD), no spill directory
(nothing is ever written to disk), memory and thread limits from settings, and finally
``lock_configuration=true`` (no SET/PRAGMA/RESET). Writes fail: every database is read-only.
TEMP tables/views/macros can still be created (DuckDB always allows the temp catalog); they live
in memory under the memory limit and, like everything else, cannot read or write files.

The attached files are *leased* (``SandboxLease``) while the sandbox is open, so erasure does not
delete them under it. ``sandbox.conn.interrupt()`` stops a running statement.
"""

import secrets
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
from django.conf import settings

from tre.errors import NotFound

from . import engine, store
from .engine import quote_ident as _q
from .models import Dataset, DummyTwin
from .naming import PERSON_ID
from .services import (
    DatasetNotLoaded,
    holder_id,
    lease_current_versions,
    optout_rows,
    optout_watermark_now,
    release_leases,
)

__all__ = ["OPTOUTS", "DatasetNotLoaded", "Sandbox", "dataset_schema", "open_sandbox", "open_twin_sandbox"]

OPTOUTS = "tre_optouts"
PENDING = "tre_optout_pending"
_BATCH = 50_000


@dataclass
class Sandbox:
    conn: duckdb.DuckDBPyConnection
    versions: dict = field(default_factory=dict)  # {dataset name: DatasetVersion id}
    optout_watermark: int = 0  # the highest OptOut.id excluded by this sandbox
    schema: dict = field(default_factory=dict)  # as dataset_schema()


def _resolve(datasets) -> list[Dataset]:
    if isinstance(datasets, (Dataset, str, int)):
        datasets = [datasets]
    out, names, ids = [], [], []
    for d in datasets:
        if isinstance(d, Dataset):
            out.append(d)
        elif isinstance(d, int):
            ids.append(d)
        elif isinstance(d, str):
            names.append(d.lower())
        else:
            raise TypeError(f"a dataset, id or name, not {type(d).__name__}")
    if ids:
        found = {d.pk: d for d in Dataset.objects.filter(pk__in=ids)}
        for i in ids:
            if i not in found:
                raise NotFound(f"no dataset with id {i}")
            out.append(found[i])
    if names:
        found = {d.name: d for d in Dataset.objects.filter(name__in=names)}
        for n in names:
            if n not in found:
                raise NotFound(f"no dataset named {n!r}")
            out.append(found[n])
    unique = {}
    for d in out:
        unique.setdefault(d.pk, d)
    return list(unique.values())


def dataset_schema(datasets: Iterable) -> dict[str, dict[str, str]]:
    """``{dataset name: {column: type}}`` as a query sees it: ``person_id`` ("text") and the
    stored columns (not the identifier, not dropped) with their declared types."""
    schema = {}
    for d in _resolve(datasets):
        columns = {PERSON_ID: "text"}
        for c in d.stored_columns():
            columns[c["name"]] = c["type"]
        schema[d.name] = columns
    return schema


_OPTOUT_ROWS = pa.schema([("seq", pa.int64()), ("person_id", pa.string())])


def _insert_optouts(con, watermark: int, pending_after: int) -> None:
    engine.append_through_arrow(con, optout_rows(upto=watermark), _OPTOUT_ROWS, [
        f"INSERT INTO {OPTOUTS} SELECT person_id FROM {engine.BATCH_VIEW}",
        f"INSERT INTO {PENDING} SELECT person_id, seq FROM {engine.BATCH_VIEW} WHERE seq > {int(pending_after)}",
    ], batch=_BATCH)


def _build_catalog(path, pairs, aliases, watermark: int) -> None:
    con = engine.connect(path, memory_limit="256MB", threads=1)
    try:
        for _, version in pairs:
            engine.attach_read_only(con, store.abspath(version.file_path), aliases[version.pk])
        con.execute(f"CREATE TABLE {OPTOUTS} (person_id VARCHAR NOT NULL)")
        con.execute(f"CREATE TABLE {PENDING} (person_id VARCHAR NOT NULL, seq BIGINT NOT NULL)")
        oldest = min(v.optout_watermark for _, v in pairs)
        _insert_optouts(con, watermark, oldest)
        for dataset, version in pairs:
            con.execute(
                f"CREATE VIEW {_q(dataset.name)} AS SELECT d.* FROM {aliases[version.pk]}.data AS d "
                f"WHERE NOT EXISTS (SELECT 1 FROM {PENDING} AS o WHERE o.seq > {int(version.optout_watermark)} "
                f"AND o.person_id = d.{PERSON_ID})"
            )
        for _, version in pairs:
            con.execute(f"DETACH {aliases[version.pk]}")
        con.execute("CHECKPOINT")
    finally:
        con.close()


@contextmanager
def open_sandbox(datasets):
    """A locked, read-only DuckDB connection over the datasets' current versions (see the module
    docstring). Yields a ``Sandbox``: ``.conn``, ``.versions`` ({name: version id}),
    ``.optout_watermark``. ``DatasetNotLoaded`` (a LookupError, 409) if one has no data yet."""
    resolved = _resolve(datasets)
    if not resolved:
        raise NotFound("no datasets named")
    pairs, leases = lease_current_versions(resolved)
    directory = None
    conn = None
    try:
        watermark = optout_watermark_now()
        directory = store.sandbox_dir()
        (directory / "holder").write_text(holder_id())  # lets the sweeper reap it if this process dies
        catalog = directory / "sandbox.duckdb"
        aliases = {version.pk: f"tre_src_{version.pk}_{secrets.token_hex(8)}" for _, version in pairs}
        _build_catalog(catalog, pairs, aliases, watermark)
        conn = engine.connect(catalog, read_only=True, memory_limit=settings.TRE_SANDBOX_MEMORY_LIMIT,
                              threads=settings.TRE_SANDBOX_THREADS, temp_directory="",
                              allow_community_extensions=False, allow_unsigned_extensions=False)
        for _, version in pairs:
            engine.attach_read_only(conn, store.abspath(version.file_path), aliases[version.pk])
        conn.execute("SET enable_external_access = false")
        conn.execute("SET disabled_filesystems = 'LocalFileSystem'")
        conn.execute("SET lock_configuration = true")
        sandbox = Sandbox(
            conn=conn,
            versions={dataset.name: version.pk for dataset, version in pairs},
            optout_watermark=watermark,
            schema=dataset_schema([d for d, _ in pairs]),
        )
        yield sandbox
    finally:
        if conn is not None:
            try:
                conn.close()
            except duckdb.Error:
                pass
        if directory is not None:
            store.remove_quietly(directory)
        release_leases(leases)


@contextmanager
def open_twin_sandbox(datasets):
    """The same locked, read-only sandbox over the datasets' current **dummy twins** (each a view
    named as the dataset; ``tre_optouts`` exists and is empty: the twin holds no real person).
    ``DatasetNotLoaded`` (409) if a dataset has no twin yet. No lease: a twin is regenerated only
    when its dictionary changes, under a new file name."""
    resolved = _resolve(datasets)
    if not resolved:
        raise NotFound("no datasets named")
    twins = {t.dataset_id: t for t in DummyTwin.objects.filter(
        pk__in=[d.current_twin_id for d in resolved if d.current_twin_id], file_deleted_at__isnull=True)}
    missing = sorted(d.name for d in resolved if d.pk not in twins)
    if missing:
        raise DatasetNotLoaded(f"dataset {', '.join(missing)} has no dummy twin yet", rule="no_twin")
    conn = engine.connect(":memory:", memory_limit=settings.TRE_SANDBOX_MEMORY_LIMIT,
                          threads=settings.TRE_SANDBOX_THREADS, temp_directory="",
                          allow_community_extensions=False, allow_unsigned_extensions=False)
    try:
        for d in resolved:
            twin = twins[d.pk]
            alias = f"tre_twin_{twin.pk}_{secrets.token_hex(8)}"
            engine.attach_read_only(conn, store.abspath(twin.file_path), alias)
            conn.execute(f"CREATE TEMP VIEW {_q(d.name)} AS SELECT * FROM {alias}.data")
        conn.execute(f"CREATE TEMP TABLE {OPTOUTS} (person_id VARCHAR NOT NULL)")
        conn.execute("SET enable_external_access = false")
        conn.execute("SET disabled_filesystems = 'LocalFileSystem'")
        conn.execute("SET lock_configuration = true")
        yield Sandbox(conn=conn, versions={d.name: twins[d.pk].pk for d in resolved}, optout_watermark=0,
                      schema=dataset_schema(resolved))
    finally:
        try:
            conn.close()
        except duckdb.Error:
            pass
