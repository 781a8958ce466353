"""DuckDB's one home in the environment: connections, quoting, loading values through Arrow.

Every DuckDB connection the environment opens (a load, an erasure, a scan for opted-out persons,
a sandbox's catalog and the sandbox itself) is made by ``connect``: extensions are never installed
or loaded behind our back, and the memory and thread limits are always set. ``quote_ident`` and
``quote_literal`` are the only quoting of SQL text; ``append_through_arrow`` and
``load_person_ids`` the only way values are handed to DuckDB in bulk.

Nothing here logs a value or a DuckDB error message (those quote data).
"""

from collections.abc import Iterable
from pathlib import Path

import duckdb
import pyarrow as pa
from django.conf import settings

ARROW_BATCH = 50_000  # rows handed to DuckDB per Arrow batch (memory bounded)
BATCH_VIEW = "tre_batch"  # the name an Arrow batch is registered under while it is inserted

_ALWAYS = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def connect(path: str | Path = ":memory:", *, memory_limit: str, threads: int, read_only: bool = False,
            **config) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that installs and loads no extension, within the given limits;
    ``config`` adds DuckDB settings (``temp_directory``, ``preserve_insertion_order``, …)."""
    return duckdb.connect(str(path), read_only=read_only,
                          config={**_ALWAYS, "memory_limit": memory_limit, "threads": int(threads), **config})


def connect_for_ingest(path: str | Path = ":memory:", **config) -> duckdb.DuckDBPyConnection:
    """A connection for the store's writers (loads, erasure, scans), within the ingest limits."""
    return connect(path, memory_limit=settings.TRE_INGEST_MEMORY_LIMIT, threads=settings.TRE_INGEST_THREADS, **config)


def quote_ident(name: str) -> str:
    """A double-quoted SQL identifier (names are validated identifiers already; this is belt and braces)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text) -> str:
    """A single-quoted SQL string literal (a path, a name, an option value)."""
    return "'" + str(text).replace("'", "''") + "'"


def attach_read_only(con, path: str | Path, alias: str) -> None:
    """Attach a store file read-only under ``alias`` (an identifier the caller made)."""
    con.execute(f"ATTACH {quote_literal(path)} AS {alias} (READ_ONLY)")


def append_through_arrow(con, rows: Iterable[tuple], schema: pa.Schema, statements: list[str], *,
                         batch: int = ARROW_BATCH) -> None:
    """Hand ``rows`` (tuples in ``schema``'s order) to DuckDB in Arrow batches: each batch is
    registered as ``tre_batch`` while ``statements`` (which read ``tre_batch``) run."""
    buffer: list[tuple] = []

    def flush():
        columns = list(zip(*buffer, strict=True))
        table = pa.table([pa.array(values, f.type) for values, f in zip(columns, schema, strict=True)], schema=schema)
        con.register(BATCH_VIEW, table)
        try:
            for statement in statements:
                con.execute(statement)
        finally:
            con.unregister(BATCH_VIEW)

    for row in rows:
        buffer.append(row)
        if len(buffer) >= batch:
            flush()
            buffer = []
    if buffer:
        flush()


PERSON_IDS = pa.schema([("person_id", pa.string())])


def load_person_ids(con, person_ids: Iterable[str], table: str = "tre_opt", *, batch: int = ARROW_BATCH) -> None:
    """``table`` (a TEMP table, replaced) holding ``person_ids``, loaded through Arrow in batches."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} (person_id VARCHAR NOT NULL)")
    append_through_arrow(con, ((pid,) for pid in person_ids), PERSON_IDS,
                         [f"INSERT INTO {table} SELECT person_id FROM {BATCH_VIEW}"], batch=batch)
