"""Turn an uploaded CSV or Parquet file into one immutable DuckDB store file.

``build_version_file`` is the whole load, without the database: it reads the upload with DuckDB,
validates every row, replaces the identifier (NHS number) by ``person_id`` and writes the table
``data`` (``person_id`` + the stored columns, cast to their declared types) into ``out_path``. The
caller (``services.version_ingest``) records the outcome.

How (5M rows in seconds, memory bounded by DuckDB's ``memory_limit``):

1. The header is read in Python (first line only, ``readers``): empty file, not UTF-8, duplicate, missing and
   unexpected columns are reported before any row is read.
2. Pass 1: DuckDB reads the file with the declared types (``read_csv`` with explicit columns,
   ``store_rejects``: rows that do not parse, have the wrong number of fields, are not UTF-8 or do
   not cast are recorded with their line number) and groups it by normalised NHS number. Validity
   (ten digits, modulus-11 check digit) is decided in SQL on the distinct numbers only.
3. If anything is wrong the file is refused as a whole: the first ``MAX_ERRORS`` problems are
   reported as ``{row, column, reason}`` (rows count data rows from 1: the first line after the
   header is row 1). Values are never echoed: they may be patient data.
4. Otherwise the distinct numbers are hashed in batches (HMAC-SHA256 with the pseudonym key, in
   Python), opted-out persons are removed from that map, and pass 2 joins the file to the map and
   writes ``data``.

Nothing here logs a value or a DuckDB error message (those quote the offending line).
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from . import engine
from .engine import quote_ident as _q
from .engine import quote_literal as _lit
from .naming import PERSON_ID
from .pseudonym import person_ids_for
from .readers import REJECTS_LIMIT, _csv_reader, _error, _macros, check_header, read_csv_header, sniff_format

__all__ = ["DUCKDB_TYPES", "LoadResult", "build_version_file", "load_failed", "sniff_format"]

log = logging.getLogger(__name__)

DUCKDB_TYPES = {"integer": "BIGINT", "float": "DOUBLE", "text": "VARCHAR", "date": "DATE", "boolean": "BOOLEAN"}
TYPE_WORDS = {"integer": "an integer", "float": "a number", "text": "text", "date": "a date (YYYY-MM-DD)", "boolean": "a boolean (true/false)"}
MAX_ERRORS = 100
HASH_BATCH = 100_000
PROGRESS_INTERVAL = 2.0  # seconds between progress reports while writing
ROW_CONVENTION = "rows count data rows from 1: the first line after the header is row 1"

_REJECT_REASONS = {
    "CAST": None,  # filled per column type
    "MISSING COLUMNS": "too few fields in this row",
    "TOO MANY COLUMNS": "too many fields in this row",
    "UNQUOTED VALUE": "badly quoted value",
    "LINE SIZE OVER MAXIMUM": "line too long",
    "INVALID UNICODE": "not valid UTF-8",
    "INVALID ENCODING": "not valid UTF-8",
    "INVALID STATE": "malformed CSV",
}


@dataclass
class LoadResult:
    ok: bool
    errors: list = field(default_factory=list)
    error_count: int = 0
    rows_total: int | None = None
    row_count: int = 0
    person_count: int = 0
    rows_removed: int = 0
    persons_removed: int = 0
    timings: dict = field(default_factory=dict)  # seconds per phase (for the bench)


def _failed(errors: list, count: int | None = None, rows_total=None) -> LoadResult:
    errors = sorted(errors, key=lambda e: (e["row"] is not None, e["row"] or 0, e["column"] or ""))
    return LoadResult(ok=False, errors=errors[:MAX_ERRORS], error_count=max(count or 0, len(errors)), rows_total=rows_total)


def load_failed(reason: str) -> LoadResult:
    """A failed load with one file-level error (the upload is missing, the load crashed, …)."""
    return _failed([_error(None, None, reason)])


class _Progress:
    """Polls ``query_progress`` of a running statement from a side thread."""

    def __init__(self, con, callback, rows_total):
        self.con, self.callback, self.rows_total, self.interval = con, callback, rows_total, PROGRESS_INTERVAL
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True) if callback else None

    def __enter__(self):
        if self.thread:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.thread:
            self.stop.set()
            self.thread.join()

    def _run(self):
        try:
            while not self.stop.wait(self.interval):
                try:
                    pct = self.con.query_progress()
                except Exception:
                    continue
                if pct is not None and pct >= 0:
                    self.callback(int(self.rows_total * min(pct, 100.0) / 100.0), self.rows_total)
        finally:
            close = getattr(self.callback, "close", None)
            if close:
                close()


# --- the load -----------------------------------------------------------------------------------

def build_version_file(
    *,
    source: Path,
    fmt: str,
    columns: list[dict],
    identifier_column: str,
    optout_person_ids: Iterable[str] = (),
    out_path: Path,
    temp_dir: Path,
    memory_limit: str = "512MB",
    threads: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> LoadResult:
    """Validate ``source`` and, if it is good, write ``out_path`` (a new DuckDB file with ``data``).

    ``optout_person_ids``: persons left out of the file (the caller's opt-out snapshot).
    ``progress(rows_loaded, rows_total)``: called from a side thread every few seconds while writing.
    On failure nothing is left at ``out_path``.
    """
    if fmt == "compressed":
        return _failed([_error(None, None, "compressed files are not accepted: upload a plain CSV or a Parquet file")])
    if fmt not in ("csv", "parquet"):
        return _failed([_error(None, None, f"unsupported format {fmt!r}")])
    try:
        if source.stat().st_size == 0:
            return _failed([_error(None, None, "the file is empty")])
    except FileNotFoundError:
        return _failed([_error(None, None, "the uploaded file is missing from the store")])

    con = engine.connect(
        out_path, memory_limit=memory_limit, threads=threads, temp_directory=str(temp_dir),
        preserve_insertion_order=True,  # row_number() OVER () must follow the file's order
    )
    ok = False
    try:
        if progress:
            con.execute("SET enable_progress_bar = true")
            con.execute("SET enable_progress_bar_print = false")
        _macros(con)
        loader = _CsvLoad if fmt == "csv" else _ParquetLoad
        result = loader(con, source, columns, identifier_column).run(optout_person_ids, progress)
        ok = result.ok
        return result
    finally:
        con.close()
        if not ok:
            Path(out_path).unlink(missing_ok=True)
            Path(str(out_path) + ".wal").unlink(missing_ok=True)


class _Load:
    def __init__(self, con, source: Path, columns: list[dict], identifier_column: str):
        self.con, self.source, self.columns, self.identifier = con, source, columns, identifier_column
        self.types = {c["name"]: c["type"] for c in columns}
        self.stored = [c for c in columns if c["name"] != identifier_column and not c.get("drop", False)]

    # subclasses: header_errors(), pass1() -> (type errors, count), typed_source(), locate_identifier_errors()

    def run(self, optouts, progress) -> LoadResult:
        self.timings = {}
        self.mark = time.monotonic()
        errors = self.header_errors()
        if errors:
            return _failed(errors)
        type_errors, type_error_count = self.pass1()
        self._tick("validate")
        stats = self.con.execute(
            "SELECT coalesce(sum(n), 0), coalesce(sum(n) FILTER (WHERE nhs IS NULL OR nhs = ''), 0), "
            "coalesce(sum(n) FILTER (WHERE nhs <> '' AND NOT tre_nhs_valid(nhs)), 0) FROM tre_ids"
        ).fetchall()[0]
        rows_ok, missing, invalid = (int(x) for x in stats)
        rows_total = rows_ok + self.rejected_rows
        if rows_total == 0:
            return _failed([_error(None, None, "the file has a header but no data rows")], rows_total=0)
        if type_errors or missing or invalid:
            errors = list(type_errors)
            if missing or invalid:
                errors += self.locate_identifier_errors(limit=MAX_ERRORS)
            return _failed(errors, type_error_count + missing + invalid, rows_total=rows_total)
        result = self.write(optouts, progress, rows_total)
        result.timings = self.timings
        return result

    def _tick(self, phase):
        now = time.monotonic()
        self.timings[phase] = round(now - self.mark, 3)
        self.mark = now

    def write(self, optouts, progress, rows_total) -> LoadResult:
        con = self.con
        # 1. the pseudonym map: distinct numbers hashed in batches (memory bounded), keyed by the
        #    number as an integer (every number here is ten validated digits) for a fast join
        con.execute("CREATE TEMP TABLE tre_map (nhs BIGINT NOT NULL, person_id VARCHAR NOT NULL)")
        (distinct,) = con.execute("SELECT count(*) FROM tre_ids").fetchall()[0]
        for start in range(0, distinct, HASH_BATCH):
            numbers = con.sql(
                "SELECT nhs FROM tre_ids WHERE rowid >= $lo AND rowid < $hi", params={"lo": start, "hi": start + HASH_BATCH}
            ).to_arrow_table().column(0)
            hashed = pa.array(person_ids_for(numbers.to_pylist()), pa.string())
            con.register("tre_batch", pa.table({"nhs": numbers, "person_id": hashed}))
            con.execute("INSERT INTO tre_map SELECT CAST(nhs AS BIGINT), person_id FROM tre_batch")
            con.unregister("tre_batch")
            del numbers, hashed
        self._tick("pseudonymise")
        # 2. opted-out persons never enter the file
        engine.load_person_ids(con, optouts, "tre_opt", batch=HASH_BATCH)
        persons_removed, rows_removed = con.execute(
            "SELECT count(*), coalesce(sum(i.n), 0) FROM tre_map m JOIN tre_ids i ON m.nhs = CAST(i.nhs AS BIGINT) "
            "WHERE m.person_id IN (SELECT person_id FROM tre_opt)"
        ).fetchall()[0]
        if persons_removed:
            con.execute("DELETE FROM tre_map WHERE person_id IN (SELECT person_id FROM tre_opt)")
        self._tick("optouts")
        # 3. the table
        schema = ", ".join([f"{PERSON_ID} VARCHAR NOT NULL"] + [f"{_q(c['name'])} {DUCKDB_TYPES[c['type']]}" for c in self.stored])
        con.execute(f"CREATE TABLE data ({schema})")
        select = ", ".join(["m.person_id"] + [f"r.{_q(c['name'])}" for c in self.stored])
        con.execute("SET preserve_insertion_order = false")
        with _Progress(con, progress, rows_total):
            con.execute(
                f"INSERT INTO data SELECT {select} FROM {self.typed_source()} AS r "
                f"JOIN tre_map AS m ON m.nhs = CAST(tre_norm(r.{_q(self.identifier)}) AS BIGINT)"
            )
        self._tick("write")
        (row_count,) = con.execute("SELECT count(*) FROM data").fetchall()[0]
        (person_count,) = con.execute("SELECT count(*) FROM tre_map").fetchall()[0]
        for table in ("tre_map", "tre_opt", "tre_ids"):
            con.execute(f"DROP TABLE IF EXISTS {table}")
        con.execute("CHECKPOINT")
        self._tick("checkpoint")
        return LoadResult(ok=True, rows_total=rows_total, row_count=int(row_count), person_count=int(person_count),
                          rows_removed=int(rows_removed), persons_removed=int(persons_removed))

    def _identifier_reason(self, nhs) -> str:
        if nhs is None or nhs == "":
            return "the identifier (NHS number) is missing"
        return "not a valid NHS number (10 digits with a modulus-11 check digit)"


class _CsvLoad(_Load):
    rejected_rows = 0

    def header_errors(self) -> list[dict]:
        names, errors = read_csv_header(self.source)
        if errors:
            return errors
        errors = check_header(names, columns=self.columns)
        if errors:
            return errors
        by_lower = {c["name"]: c for c in self.columns}
        # the file's order, with the declared names and types; the identifier is read as text
        self.order = []
        for n in names:
            name = by_lower[n.lower()]["name"]
            sqltype = "VARCHAR" if name == self.identifier else DUCKDB_TYPES[self.types[name]]
            self.order.append((name, sqltype))
        return []

    def pass1(self):
        con = self.con
        touch = ", ".join(f"count({_q(name)}) AS tre_c{i}" for i, (name, _) in enumerate(self.order))
        try:
            con.execute(
                f"CREATE TEMP TABLE tre_ids AS SELECT tre_norm({_q(self.identifier)}) AS nhs, count(*) AS n, {touch} "
                f"FROM {_csv_reader(self.source, self.order, rejects='tre_rejects')} GROUP BY ALL"
            )
        except duckdb.Error as exc:
            # Never log or keep the message: DuckDB quotes the offending line.
            log.info("csv pass 1 refused the file (%s)", type(exc).__name__)
            con.execute("CREATE OR REPLACE TEMP TABLE tre_ids (nhs VARCHAR, n BIGINT)")
            return [_error(None, None, "the file cannot be read as CSV (comma-separated, UTF-8, double quotes)")], 1
        rejects = con.execute(
            "SELECT line, column_name, error_type FROM tre_rejects ORDER BY line, column_idx"
        ).fetchall()
        self.rejected_lines = sorted({int(line) for line, _, _ in rejects})
        self.rejected_rows = len(self.rejected_lines)
        errors, seen = [], set()
        for line, column, kind in rejects:
            if kind == "CAST":
                declared = self.types.get(column, "text")
                reason = f"not {TYPE_WORDS[declared]}"
            else:
                reason = _REJECT_REASONS.get(kind) or "malformed row"
                column = column if kind in ("INVALID UNICODE", "INVALID ENCODING", "UNQUOTED VALUE") else None
            key = (int(line) - 1, column, reason)  # DuckDB reports a short row once per missing field
            if key not in seen:
                seen.add(key)
                errors.append(_error(*key))
        count = len(errors)
        if len(rejects) >= REJECTS_LIMIT:
            count += 1  # "at least"
        return errors, count

    def typed_source(self) -> str:
        return _csv_reader(self.source, self.order, rejects=None)

    def locate_identifier_errors(self, *, limit: int) -> list[dict]:
        """Rows whose identifier is missing or invalid. A second, ordered read numbers the rows;
        rows that scan rejects (and so does not number) are added back from its own rejects."""
        if self.rejected_rows >= REJECTS_LIMIT:
            return []  # too broken to number rows reliably; the other errors say enough
        order = [(name, "VARCHAR") for name, _ in self.order]
        ident = _q(self.identifier)
        self.con.execute("SET preserve_insertion_order = true")
        found = self.con.execute(
            f"SELECT rn, nhs FROM (SELECT row_number() OVER () AS rn, tre_norm({ident}) AS nhs "
            f"FROM {_csv_reader(self.source, order, rejects='tre_rejects2')}) "
            f"WHERE nhs IS NULL OR nhs = '' OR NOT tre_nhs_valid(nhs) ORDER BY rn LIMIT {int(limit)}"
        ).fetchall()
        skipped = sorted({int(line) - 1 for (line,) in self.con.execute("SELECT line FROM tre_rejects2").fetchall()})
        errors, k = [], 0
        for rn, nhs in found:
            while k < len(skipped) and skipped[k] <= rn + k:
                k += 1
            errors.append(_error(int(rn) + k, self.identifier, self._identifier_reason(nhs)))
        return errors


class _ParquetLoad(_Load):
    rejected_rows = 0

    def _reader(self, *, row_numbers=False) -> str:
        extra = ", file_row_number=true" if row_numbers else ""
        return f"read_parquet({_lit(str(self.source))}{extra})"

    def header_errors(self) -> list[dict]:
        try:
            names = pq.ParquetFile(self.source).schema_arrow.names
        except Exception:
            return [_error(None, None, "the file cannot be read as Parquet")]
        errors = check_header(names, columns=self.columns)
        if errors:
            return errors
        self.file_names = {n.lower(): n for n in names}
        return []

    def _src(self, name: str) -> str:
        return _q(self.file_names[name.lower()])

    def _cast(self, name: str, *, strict: bool) -> str:
        fn = "CAST" if strict else "TRY_CAST"
        if name == self.identifier:
            return f"{fn}({self._src(name)} AS VARCHAR)"
        return f"{fn}({self._src(name)} AS {DUCKDB_TYPES[self.types[name]]})"

    def pass1(self):
        con = self.con
        bad = [
            (c["name"], f"({self._src(c['name'])} IS NOT NULL AND {self._cast(c['name'], strict=False)} IS NULL)")
            for c in self.columns if c["name"] != self.identifier
        ]
        try:
            con.execute(
                f"CREATE TEMP TABLE tre_ids AS SELECT tre_norm({self._cast(self.identifier, strict=False)}) AS nhs, "
                f"count(*) AS n FROM {self._reader()} GROUP BY ALL"
            )
            errors, count = [], 0
            if bad:
                flags = ", ".join(f"{expr} AS b{i}" for i, (_, expr) in enumerate(bad))
                any_bad = " OR ".join(f"b{i}" for i in range(len(bad)))
                inner = f"SELECT file_row_number, {flags} FROM {self._reader(row_numbers=True)}"
                (count,) = con.execute(f"SELECT count(*) FROM ({inner}) WHERE {any_bad}").fetchall()[0]
                if count:
                    rows = con.execute(f"SELECT * FROM ({inner}) WHERE {any_bad} ORDER BY file_row_number LIMIT {MAX_ERRORS}").fetchall()
                    for row in rows:
                        for i, (name, _) in enumerate(bad):
                            if row[1 + i]:
                                errors.append(_error(int(row[0]) + 1, name, f"not {TYPE_WORDS[self.types[name]]}"))
        except duckdb.Error as exc:
            log.info("parquet pass 1 refused the file (%s)", type(exc).__name__)
            con.execute("CREATE OR REPLACE TEMP TABLE tre_ids (nhs VARCHAR, n BIGINT)")
            return [_error(None, None, "the file cannot be read as Parquet")], 1
        return errors, int(count)

    def typed_source(self) -> str:
        cols = [f"{self._cast(c['name'], strict=True)} AS {_q(c['name'])}" for c in self.stored]
        cols.append(f"{self._cast(self.identifier, strict=True)} AS {_q(self.identifier)}")
        return f"(SELECT {', '.join(cols)} FROM {self._reader()})"

    def locate_identifier_errors(self, *, limit: int) -> list[dict]:
        found = self.con.execute(
            f"SELECT file_row_number, nhs FROM (SELECT file_row_number, tre_norm({self._cast(self.identifier, strict=False)}) AS nhs "
            f"FROM {self._reader(row_numbers=True)}) WHERE nhs IS NULL OR nhs = '' OR NOT tre_nhs_valid(nhs) "
            f"ORDER BY file_row_number LIMIT {int(limit)}"
        ).fetchall()
        return [_error(int(rn) + 1, self.identifier, self._identifier_reason(nhs)) for rn, nhs in found]
