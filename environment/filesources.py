"""The uploaded file as the loader sees it: encodings, progress reports, and how each declared
column reads as SQL from a CSV or Parquet source (the checks of the strict loader)."""

from __future__ import annotations

import bisect
import codecs
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from . import derivation
from .dictionary import ColumnType, Dictionary, Role
from .engine import quote_ident as _q
from .engine import quote_literal as _lit
from .readers import _csv_reader, check_header, read_csv_header
from .values import DUCKDB_TYPES, sql_literal, sql_ok, sql_typed

log = logging.getLogger(__name__)


MAX_ERRORS = 1000
HASH_BATCH = 100_000
PROGRESS_INTERVAL = 1.0  # seconds between progress reports
TRANSCODE_CHUNK = 1 << 20
ROW_CONVENTION = "rows count data rows from 1: the first line after the header is row 1"
# Encodings a custodian may declare on an upload (ASCII-compatible, so lines stay lines).
ENCODINGS = ("utf-8", "cp1252", "iso8859-1", "iso8859-15", "cp1250", "cp1251", "ascii")

MISSING_IDENTIFIER = "the identifier (NHS number) is missing"
INVALID_IDENTIFIER = "not a valid NHS number (10 digits with a modulus-11 check digit)"
NOT_UTF8 = "not valid UTF-8 (declare the file's encoding on the upload, e.g. encoding=cp1252)"

_REJECT_REASONS = {
    "MISSING COLUMNS": "too few fields in this row",
    "TOO MANY COLUMNS": "too many fields in this row",
    "UNQUOTED VALUE": "badly quoted value",
    "LINE SIZE OVER MAXIMUM": "line too long",
    "INVALID UNICODE": NOT_UTF8,
    "INVALID ENCODING": NOT_UTF8,
    "INVALID STATE": "malformed CSV",
}


class Phase:
    VALIDATING = "validating"
    LOADING = "loading"
    PUBLISHING = "publishing"


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
    dictionary: Dictionary | None = None  # the completed dictionary, when this load derived something
    dictionary_version: int | None = None  # the dictionary version the file was checked against (set by the caller)


def _error(row, column, reason, value_preview=None) -> dict:
    return {"row": row, "column": column, "value_preview": value_preview, "reason": reason}


def _failed(errors: list, count: int | None = None, rows_total=None) -> LoadResult:
    errors = sorted(errors, key=lambda e: (e["row"] is not None, e["row"] or 0, e["column"] or ""))
    return LoadResult(ok=False, errors=errors[:MAX_ERRORS], error_count=max(count or 0, len(errors)), rows_total=rows_total)


def load_failed(reason: str) -> LoadResult:
    """A failed load with one file-level error (the upload is missing, the load crashed, …)."""
    return _failed([_error(None, None, reason)])


# --- encodings --------------------------------------------------------------------------------

def normalise_encoding(name: str | None) -> str | None:
    """The codec name of a declared encoding (``None``/``utf-8`` → ``utf-8``); None if not accepted."""
    if not name:
        return "utf-8"
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        return None
    codec = {"latin-1": "iso8859-1", "utf-8-sig": "utf-8", "windows-1252": "cp1252"}.get(codec, codec)
    return codec if codec in ENCODINGS else None


def transcode(source: Path, target: Path, encoding: str) -> tuple[list[dict], int]:
    """Write ``source`` (in ``encoding``) as UTF-8 to ``target``. Returns the first ``MAX_ERRORS``
    lines holding bytes the encoding does not define (written with U+FFFD) and their count."""
    errors: list[dict] = []
    count = 0
    with open(source, "rb") as src, open(target, "w", encoding="utf-8", newline="") as out:
        for line_number, raw in enumerate(src, start=1):
            try:
                out.write(raw.decode(encoding))
            except UnicodeDecodeError:
                count += 1
                if len(errors) < MAX_ERRORS:
                    row = line_number - 1
                    errors.append(_error(row if row >= 1 else None, None,
                                         f"bytes that are not valid {encoding} (line {line_number} of the file)"))
                out.write(raw.decode(encoding, errors="replace"))
    return errors, count


def utf8_errors(path: Path) -> tuple[list[dict], int]:
    """The lines of ``path`` that are not valid UTF-8 (the first ``MAX_ERRORS``, and their count).

    DuckDB's reader lets some invalid sequences through, so the file is checked here, a few MiB at
    a time cut at line ends (a multi-byte character never holds a newline byte)."""
    errors: list[dict] = []
    count = lines_before = 0
    rest = b""
    with open(path, "rb") as fh:
        while True:
            block = fh.read(4 * TRANSCODE_CHUNK)
            data = rest + block
            cut = len(data) if not block else data.rfind(b"\n") + 1
            chunk, rest = data[:cut], data[cut:]
            start = 0
            while start < len(chunk):
                try:
                    chunk[start:].decode("utf-8")
                    break
                except UnicodeDecodeError as exc:
                    at = start + exc.start
                    line = lines_before + chunk.count(b"\n", 0, at) + 1
                    count += 1
                    if len(errors) < MAX_ERRORS:
                        errors.append(_error(line - 1 if line > 1 else None, None, NOT_UTF8 if line > 1 else
                                             "the file is not valid UTF-8 (in the header line)"))
                    nxt = chunk.find(b"\n", at)
                    start = len(chunk) if nxt < 0 else nxt + 1
            lines_before += chunk.count(b"\n")
            if not block:
                return errors, count


# --- progress ---------------------------------------------------------------------------------

class _Progress:
    """Reports ``(phase, rows_done, rows_total)`` every second from a side thread, from the start
    of the load to its end; ``rows_done`` follows DuckDB's ``query_progress`` of the running scan."""

    def __init__(self, con, callback):
        self.con, self.callback = con, callback
        self.phase, self.rows_total, self.rows_estimate = Phase.VALIDATING, None, None
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

    def set(self, phase: str, *, rows_total: int | None = None, rows_estimate: int | None = None):
        self.phase = phase
        if rows_total is not None:
            self.rows_total = rows_total
        if rows_estimate is not None:
            self.rows_estimate = rows_estimate

    def _report(self, rows_done: int):
        self.callback(self.phase, rows_done, self.rows_total)

    def _run(self):
        try:
            self._report(0)
            last_phase, last_done = self.phase, 0
            while not self.stop.wait(PROGRESS_INTERVAL):
                base = self.rows_total or self.rows_estimate or 0
                try:
                    pct = self.con.query_progress()
                except Exception:
                    pct = None
                phase = self.phase
                done = int(base * min(pct, 100.0) / 100.0) if pct is not None and pct >= 0 else 0
                if phase == Phase.PUBLISHING:
                    done = self.rows_total or 0
                if phase == last_phase:
                    done = max(done, last_done)
                last_phase, last_done = phase, done
                self._report(done)
        finally:
            close = getattr(self.callback, "close", None)
            if close:
                close()


# --- sources: what a column is in the file, as SQL --------------------------------------------

@dataclass
class _Check:
    """One stored column: SQL over the reader's row for its text, its checks and its typed value."""

    name: str
    type: ColumnType
    text: str  # VARCHAR, for the preview
    ok: str  # the value is of the declared type (or missing)
    in_domain: str | None  # the value is in the declared domain (or missing / not typed): None if no check
    typed: str  # the value with the declared type
    stored: str = ""  # the typed value over the typed reader (the write's scan); ``typed`` if empty


def _domain_sql(column, typed_try: str) -> str:
    literals = ", ".join(sql_literal(column.type, v) for v in column.values)
    return f"({typed_try} IN ({literals}))" if literals else "false"


class _CsvSource:
    rownum = "row_number() OVER ()"

    def __init__(self, path: Path, dictionary: Dictionary):
        self.path, self.dictionary = path, dictionary
        self.rejected_rows: list[int] = []

    def header_errors(self) -> list[dict]:
        names, errors = read_csv_header(self.path)
        if errors:
            return [_error(e["row"], e["column"], e["reason"]) for e in errors]
        declared = {c.name: c for c in self.dictionary.columns}
        errors = check_header(names, columns=[{"name": n} for n in declared])
        if errors:
            return [_error(e["row"], e["column"], e["reason"]) for e in errors]
        self.order = [declared[n.lower()].name for n in names]
        return []

    def estimate_rows(self) -> int | None:
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as fh:
                sample = fh.read(1 << 20)
        except OSError:
            return None
        lines = sample.count(b"\n")
        return int(size / (len(sample) / lines)) - 1 if lines > 1 else None

    def reader(self, rejects: str | None = None, *, typed: bool = False) -> str:
        """The file, every field as text — or, for the write of a validated file, with the declared
        types (DuckDB parses every value the validation accepted to the same typed value)."""
        types = {c.name: ("VARCHAR" if c.role in (Role.IDENTIFIER, Role.DROP) or not typed else DUCKDB_TYPES[c.type])
                 for c in self.dictionary.columns}
        return _csv_reader(self.path, [(name, types[name]) for name in self.order], rejects=rejects)

    def identifier(self) -> str:
        return _q(self.dictionary.identifier.name)

    def check(self, column) -> _Check:
        v = _q(column.name)
        in_domain = None
        if derivation.out_of_domain(column) == derivation.ERROR:
            try_typed = {ColumnType.TEXT: v, ColumnType.INTEGER: f"TRY_CAST({v} AS BIGINT)",
                         ColumnType.BOOLEAN: f"(lower({v}) = 'true')"}[column.type]
            in_domain = f"coalesce({v} IS NULL OR {v} = '' OR {_domain_sql(column, try_typed)}, true)"
        return _Check(column.name, column.type, v, sql_ok(column.type, v), in_domain, sql_typed(column.type, v), stored=v)

    def row_of(self, rn: int) -> int:
        """The data row of the ``rn``-th row DuckDB accepted (rows it rejected are not numbered)."""
        skipped, r = self.rejected_rows, rn
        while True:
            nxt = rn + bisect.bisect_right(skipped, r)
            if nxt == r:
                return r
            r = nxt


_INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                  "UBIGINT", "UHUGEINT"}
_FLOAT_TYPES = {"FLOAT", "DOUBLE"}


class _ParquetSource:
    rownum = "(file_row_number + 1)"
    rejected_rows: list[int] = []

    def __init__(self, path: Path, dictionary: Dictionary, con):
        self.path, self.dictionary, self.con = path, dictionary, con

    def header_errors(self) -> list[dict]:
        try:
            described = self.con.execute(f"DESCRIBE SELECT * FROM read_parquet({_lit(str(self.path))})").fetchall()
        except duckdb.Error:
            return [_error(None, None, "the file cannot be read as Parquet")]
        names = [r[0] for r in described]
        errors = check_header(names, columns=[{"name": c.name} for c in self.dictionary.columns])
        if errors:
            return [_error(e["row"], e["column"], e["reason"]) for e in errors]
        self.source_names = {n.lower(): n for n in names}
        self.source_types = {n.lower(): t.upper() for n, t, *_ in described}
        return []

    def estimate_rows(self) -> int | None:
        try:
            (n,) = self.con.execute(f"SELECT count(*) FROM read_parquet({_lit(str(self.path))})").fetchall()[0]
            return int(n)
        except duckdb.Error:
            return None

    def reader(self, rejects: str | None = None, *, typed: bool = False) -> str:
        return f"read_parquet({_lit(str(self.path))}, file_row_number=true)"

    def _src(self, name: str) -> str:
        return _q(self.source_names[name.lower()])

    def identifier(self) -> str:
        return f"CAST({self._src(self.dictionary.identifier.name)} AS VARCHAR)"

    def check(self, column) -> _Check:
        src = self._src(column.name)
        srctype = self.source_types[column.name.lower()]
        text = f"CAST({src} AS VARCHAR)"
        if srctype == "VARCHAR":
            ok, typed = sql_ok(column.type, src), sql_typed(column.type, src)
        else:
            missing = f"({src} IS NULL)"
            numeric = srctype in _INTEGER_TYPES or srctype in _FLOAT_TYPES or srctype.startswith("DECIMAL")
            as_double = f"CAST({src} AS DOUBLE)"
            ok, typed = missing, f"CAST(NULL AS {DUCKDB_TYPES[column.type]})"
            if column.type == ColumnType.TEXT:
                ok, typed = "true", text
            elif column.type == ColumnType.INTEGER and srctype in _INTEGER_TYPES:
                ok, typed = f"({missing} OR TRY_CAST({src} AS BIGINT) IS NOT NULL)", f"TRY_CAST({src} AS BIGINT)"
            elif column.type == ColumnType.INTEGER and numeric:
                ok = (f"({missing} OR (isfinite({as_double}) AND {as_double} = trunc({as_double}) "
                      f"AND TRY_CAST({src} AS BIGINT) IS NOT NULL))")
                typed = f"TRY_CAST({src} AS BIGINT)"
            elif column.type == ColumnType.FLOAT and numeric:
                ok, typed = f"({missing} OR isfinite({as_double}))", as_double
            elif column.type == ColumnType.BOOLEAN and srctype == "BOOLEAN":
                ok, typed = "true", src
            elif column.type == ColumnType.DATE and srctype == "DATE":
                ok, typed = "true", src
            elif column.type == ColumnType.DATE and srctype.startswith("TIMESTAMP") and "TIME ZONE" not in srctype:
                ok, typed = f"({missing} OR CAST({src} AS DATE) = {src})", f"CAST({src} AS DATE)"
        in_domain = None
        if derivation.out_of_domain(column) == derivation.ERROR:
            try_typed = typed if srctype != "VARCHAR" else {
                ColumnType.TEXT: src, ColumnType.INTEGER: f"TRY_CAST({src} AS BIGINT)",
                ColumnType.BOOLEAN: f"(lower({src}) = 'true')"}[column.type]
            in_domain = f"coalesce(NOT ({ok}) OR {src} IS NULL OR {_domain_sql(column, try_typed)}, true)"
        return _Check(column.name, column.type, text, ok, in_domain, typed)

    def row_of(self, rn: int) -> int:
        return rn
