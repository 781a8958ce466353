"""Strict, complete ingestion: an uploaded CSV or Parquet file → one immutable DuckDB store file.

``build_version_file`` is the whole load, without the database: it reads the upload with DuckDB,
checks every value of every row against the dataset's dictionary, replaces the identifier (NHS
number) by ``person_id``, adds each person's record keys (``_rk``, ``_rk2``: ``recordkeys.py``) and
writes the table ``data`` into ``out_path``. At the first load it also derives the undeclared
domains, bounds and ranges (``derivation.py``) and returns the completed dictionary. The caller
(``services.version_ingest``) records the outcome.

How (5M rows in seconds, memory bounded by DuckDB's ``memory_limit``):

0. A file declared in another encoding (``encoding=cp1252`` …) is transcoded to UTF-8 first, line
   by line; a byte the encoding does not define is an error naming its line. Nothing is guessed:
   an undeclared file must be UTF-8 (a byte-order mark is fine).
1. The header (first line, in Python): empty file, not UTF-8, duplicate, missing and unexpected
   columns are reported before any row is read.
2. Validation, one scan: DuckDB reads every field as text (``values.sql_ok`` holds the rule per
   type, the same as ``values.parse_value``), counts the bad values per column, groups the rows by
   normalised NHS number (validity — ten digits, modulus-11 check digit — is decided in SQL on the
   distinct numbers only) and records structural problems (wrong number of fields, bad quoting,
   bytes that are not UTF-8) with their line.
3. If anything is wrong the file is refused as a whole. Only then a second scan numbers the rows
   and collects the first ``MAX_ERRORS`` problems ``{row, column, value_preview, reason}`` (rows
   count data rows from 1: the first line after the header is row 1; the preview of an identifier
   is never shown); ``error_count`` is the exact total.
4. Otherwise the distinct numbers are hashed in batches (HMAC-SHA256 with the pseudonym key, then
   the record keys), opted-out persons are removed from that map, and a last scan joins the file
   to the map and writes ``data`` with the declared types. Values outside a frozen, derived
   category domain are recoded (``other``; NULL for integer categories); measures are never
   clamped here.

Progress ``(phase, rows_done, rows_total)`` is reported from the first second (``validating``,
``loading``, ``publishing``). Nothing here logs a value or a DuckDB error message (those quote the
offending line).
"""

from __future__ import annotations

import datetime as dt
import hmac
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import duckdb
import pyarrow as pa

from . import derivation, engine
from .dictionary import PERSON_ID, Dictionary, Role
from .engine import quote_ident as _q
from .filesources import (
    _REJECT_REASONS,
    ENCODINGS,
    HASH_BATCH,
    INVALID_IDENTIFIER,
    MAX_ERRORS,
    MISSING_IDENTIFIER,
    NOT_UTF8,
    ROW_CONVENTION,
    LoadResult,
    Phase,
    _Check,
    _CsvSource,
    _error,
    _failed,
    _ParquetSource,
    _Progress,
    load_failed,
    log,
    normalise_encoding,
    transcode,
    utf8_errors,
)
from .pseudonym import _key as pseudonym_key
from .pseudonym import is_valid_nhs_number
from .readers import REJECTS_LIMIT, _macros
from .recordkeys import RK, RK2
from .recordkeys import _secret as cellkey_secret
from .values import DUCKDB_TYPES, NOT_IN_DOMAIN, REASONS, preview, sql_literal

# What other modules import from here (some of it is defined in .filesources).
__all__ = ["DUCKDB_TYPES", "ENCODINGS", "MAX_ERRORS", "ROW_CONVENTION", "LoadResult", "build_version_file", "load_failed",
           "normalise_encoding"]


# --- the load ---------------------------------------------------------------------------------

def build_version_file(
    *,
    source: Path,
    fmt: str,
    dictionary: Dictionary,
    optout_person_ids: Iterable[str] = (),
    out_path: Path,
    temp_dir: Path,
    memory_limit: str = "512MB",
    threads: int = 2,
    progress: Callable[[str, int, int | None], None] | None = None,
    encoding: str | None = None,
    threshold: int = 10,
    today: dt.date | None = None,
) -> LoadResult:
    """Validate ``source`` against ``dictionary`` and, if it is good, write ``out_path`` (a new
    DuckDB file with ``data``). On failure nothing is left at ``out_path``.

    ``optout_person_ids``: persons left out of the file (the caller's opt-out snapshot).
    ``threshold``: the persons a derived category value needs (the dataset's threshold in force).
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
    codec = normalise_encoding(encoding)
    if codec is None:
        return _failed([_error(None, None, f"encoding {encoding!r} is not accepted; use one of {', '.join(ENCODINGS)}")])

    con = engine.connect(out_path, memory_limit=memory_limit, threads=threads, temp_directory=str(temp_dir),
                         preserve_insertion_order=True)  # row_number() OVER () must follow the file's order
    ok = False
    transcoded = None
    try:
        if progress:
            con.execute("SET enable_progress_bar = true")
            con.execute("SET enable_progress_bar_print = false")
        _macros(con)
        with _Progress(con, progress) as reporter:
            encoding_errors: list[dict] = []
            encoding_error_count = 0
            if fmt == "csv" and codec != "utf-8":
                transcoded = Path(temp_dir) / "transcoded.csv"
                encoding_errors, encoding_error_count = transcode(source, transcoded, codec)
                source = transcoded
            src = _CsvSource(source, dictionary) if fmt == "csv" else _ParquetSource(source, dictionary, con)
            load = _Load(con, src, dictionary, reporter, threshold=threshold, today=today)
            result = load.run(optout_person_ids, encoding_errors, encoding_error_count,
                              check_utf8=fmt == "csv" and codec == "utf-8")
        ok = result.ok
        return result
    finally:
        con.close()
        if transcoded is not None:
            transcoded.unlink(missing_ok=True)
        if not ok:
            Path(out_path).unlink(missing_ok=True)
            Path(str(out_path) + ".wal").unlink(missing_ok=True)


class _Load:
    def __init__(self, con, src, dictionary: Dictionary, reporter: _Progress, *, threshold: int, today):
        self.con, self.src, self.dictionary, self.reporter = con, src, dictionary, reporter
        self.threshold, self.today = threshold, today
        self.stored = list(dictionary.stored_columns)
        self.ident_name = dictionary.identifier.name
        self.timings: dict[str, float] = {}
        self.structural: list[dict] = []
        self.repeated = 0

    def _tick(self, phase):
        now = time.monotonic()
        self.timings[phase] = round(now - self.mark, 3)
        self.mark = now

    def run(self, optouts, encoding_errors: list[dict], encoding_error_count: int = 0, *, check_utf8=False) -> LoadResult:
        self.mark = time.monotonic()
        errors = self.src.header_errors()
        if errors:
            return _failed(encoding_errors + errors, encoding_error_count + len(errors))
        self.checks = [self.src.check(c) for c in self.stored]
        self.reporter.set(Phase.VALIDATING, rows_estimate=self.src.estimate_rows())
        utf8 = {}
        checker = threading.Thread(target=lambda: utf8.update(found=utf8_errors(self.src.path))) if check_utf8 else None
        if checker:
            checker.start()  # alongside DuckDB's scan (which releases the GIL)
        try:
            counts = self.validate()
        finally:
            if checker:
                checker.join()
        if checker:
            found, found_count = utf8.get("found", ([], 0))
            encoding_errors, encoding_error_count = encoding_errors + found, encoding_error_count + found_count
            if found_count:  # DuckDB's own reports of the same lines are left out
                kept = [e for e in self.structural if e["reason"] != NOT_UTF8]
                counts["total"] -= len(self.structural) - len(kept)
                self.structural = kept
        self._tick("validate")
        rows_total = counts["rows"]
        if rows_total == 0 and not counts["structural"]:
            return _failed(encoding_errors + [_error(None, None, "the file has a header but no data rows")], rows_total=0)
        total_errors = counts["total"] + encoding_error_count
        if total_errors:
            errors = encoding_errors + self.locate(counts)
            self._tick("locate")
            refused = _failed(errors, total_errors, rows_total=rows_total)
            refused.timings = self.timings
            return refused
        self.reporter.set(Phase.LOADING, rows_total=rows_total)
        result = self.write(optouts, rows_total)
        result.timings = self.timings
        return result

    # -- validation ---------------------------------------------------------------------------
    def _row_sql(self, *, rownum: bool, previews: bool) -> str:
        parts = [f"tre_norm({self.src.identifier()}) AS _nhs"]
        if rownum:
            parts.insert(0, f"{self.src.rownum} AS _rn")
        for i, c in enumerate(self.checks):
            parts.append(f"{c.ok} AS _t{i}")
            if c.in_domain:
                parts.append(f"{c.in_domain} AS _d{i}")
            if previews:
                parts.append(f"{c.text} AS _p{i}")
        return ", ".join(parts)

    def validate(self) -> dict:
        con = self.con
        con.execute("SET preserve_insertion_order = false")
        # one integer per row: how many of its values are bad (a single aggregate keeps the groups small)
        flags = [f"(NOT ({c.ok}))::INTEGER" for c in self.checks]
        flags += [f"(NOT ({c.in_domain}))::INTEGER" for c in self.checks if c.in_domain]
        bad_values = " + ".join(flags) or "0"
        rejects = "tre_rejects" if isinstance(self.src, _CsvSource) else None
        try:
            con.execute(f"CREATE TEMP TABLE tre_ids AS SELECT _nhs AS nhs, count(*) AS n, sum(_e) AS e FROM "
                        f"(SELECT tre_norm({self.src.identifier()}) AS _nhs, {bad_values} AS _e "
                        f"FROM {self.src.reader(rejects)}) GROUP BY _nhs")
        except duckdb.Error as exc:
            # Never log or keep the message: DuckDB quotes the offending line.
            log.info("validation scan refused the file (%s)", type(exc).__name__)
            what = "CSV (comma-separated, UTF-8, double quotes)" if rejects else "Parquet"
            self.unreadable = _error(None, None, f"the file cannot be read as {what}")
            con.execute("CREATE OR REPLACE TEMP TABLE tre_ids (nhs VARCHAR, n BIGINT)")
            return {"rows": 0, "total": 1, "structural": 1, "unreadable": True}
        self.unreadable = None
        sums = ["coalesce(sum(n), 0)", "coalesce(sum(n) FILTER (WHERE nhs IS NULL OR nhs = ''), 0)",
                "coalesce(sum(n) FILTER (WHERE nhs <> '' AND NOT tre_nhs_valid(nhs)), 0)",
                "coalesce(sum(n - 1) FILTER (WHERE n > 1 AND nhs <> '' AND tre_nhs_valid(nhs)), 0)",
                "coalesce(sum(e), 0)"]
        values = [int(x) for x in con.execute(f"SELECT {', '.join(sums)} FROM tre_ids").fetchall()[0]]
        rows, missing, invalid, repeated = values[:4]
        value_errors = sum(values[4:])
        if self.dictionary.rows_per_person.value != "one":
            repeated = 0
        structural = []
        if rejects:
            found = con.execute("SELECT line, column_name, error_type FROM tre_rejects ORDER BY line, column_idx").fetchall()
            self.src.rejected_rows = sorted({int(line) - 1 for line, _, _ in found})
            seen = set()
            for line, column, kind in found:
                reason = _REJECT_REASONS.get(kind) or "malformed row"
                column = column if kind in ("INVALID UNICODE", "INVALID ENCODING", "UNQUOTED VALUE") else None
                key = (int(line) - 1, column, reason)  # DuckDB reports a short row once per missing field
                if key not in seen:
                    seen.add(key)
                    structural.append(_error(*key))
            self.structural_capped = len(found) >= REJECTS_LIMIT
        self.structural = structural
        self.repeated = repeated
        total = missing + invalid + repeated + value_errors + len(structural) + (1 if rejects and self.structural_capped else 0)
        return {"rows": rows + len(self.src.rejected_rows), "total": total, "structural": len(structural),
                "identifiers": missing + invalid, "values": value_errors}

    def locate(self, counts) -> list[dict]:
        """The first ``MAX_ERRORS`` problems, by row (a second, numbered scan)."""
        if self.unreadable:
            return [self.unreadable]
        con = self.con
        errors = list(self.structural)
        if counts["identifiers"] or counts["values"]:
            con.execute("SET preserve_insertion_order = true")
            bad = ["_nhs IS NULL OR _nhs = ''", "NOT tre_nhs_valid(_nhs)"]
            for i, c in enumerate(self.checks):
                bad.append(f"NOT _t{i}")
                if c.in_domain:
                    bad.append(f"NOT _d{i}")
            rejects = "tre_rejects2" if isinstance(self.src, _CsvSource) else None
            cursor = con.execute(
                f"SELECT * FROM (SELECT {self._row_sql(rownum=True, previews=True)} FROM {self.src.reader(rejects)}) "
                f"WHERE {' OR '.join(bad)} LIMIT {MAX_ERRORS}")  # in file order: the scan stops at the 1,000th
            names = [d[0] for d in cursor.description]
            for values in cursor.fetchall():
                r = dict(zip(names, values, strict=True))
                row = self.src.row_of(int(r["_rn"]))
                nhs = r["_nhs"]
                if nhs is None or nhs == "":
                    errors.append(_error(row, self.ident_name, MISSING_IDENTIFIER))
                elif not _nhs_valid(nhs):
                    errors.append(_error(row, self.ident_name, INVALID_IDENTIFIER))
                for i, c in enumerate(self.checks):
                    if not r[f"_t{i}"]:
                        errors.append(_error(row, c.name, REASONS[c.type], preview(r[f"_p{i}"])))
                    elif c.in_domain and not r[f"_d{i}"]:
                        errors.append(_error(row, c.name, NOT_IN_DOMAIN, preview(r[f"_p{i}"])))
        if self.repeated:
            con.execute("SET preserve_insertion_order = true")
            rejects = "tre_rejects3" if isinstance(self.src, _CsvSource) else None
            found = con.execute(
                f"SELECT _rn, _first FROM (SELECT _rn, min(_rn) OVER (PARTITION BY _nhs) AS _first FROM "
                f"(SELECT {self.src.rownum} AS _rn, tre_norm({self.src.identifier()}) AS _nhs FROM {self.src.reader(rejects)}) "
                f"WHERE _nhs IN (SELECT nhs FROM tre_ids WHERE n > 1 AND nhs <> '' AND tre_nhs_valid(nhs))) "
                f"WHERE _rn > _first ORDER BY _rn LIMIT {MAX_ERRORS}").fetchall()  # (a window: ordered explicitly)
            for rn, first in found:
                errors.append(_error(self.src.row_of(int(rn)), self.ident_name,
                                     f"the same person as row {self.src.row_of(int(first))} (rows_per_person is one)"))
        return errors

    # -- the write ----------------------------------------------------------------------------
    def write(self, optouts, rows_total) -> LoadResult:
        con = self.con
        # 1. the pseudonym map: distinct numbers hashed in batches (memory bounded), keyed by the
        #    number as an integer (every number here is ten validated digits) for a fast join
        con.execute(f"CREATE TEMP TABLE tre_map (nhs BIGINT NOT NULL, {PERSON_ID} VARCHAR NOT NULL, "
                    f"{RK} SMALLINT NOT NULL, {RK2} BIGINT NOT NULL)")
        (distinct,) = con.execute("SELECT count(*) FROM tre_ids").fetchall()[0]
        for start in range(0, distinct, HASH_BATCH):
            numbers = con.sql(
                "SELECT nhs FROM tre_ids WHERE rowid >= $lo AND rowid < $hi", params={"lo": start, "hi": start + HASH_BATCH}
            ).to_arrow_table().column(0)
            person_ids, rk, rk2 = _pseudonymise(numbers.to_pylist())
            con.register("tre_batch", pa.table({"nhs": numbers, "person_id": pa.array(person_ids, pa.string()),
                                                "rk": pa.array(rk, pa.int16()), "rk2": pa.array(rk2, pa.int64())}))
            con.execute("INSERT INTO tre_map SELECT CAST(nhs AS BIGINT), person_id, rk, rk2 FROM tre_batch")
            con.unregister("tre_batch")
            del numbers, person_ids, rk, rk2
        self._tick("pseudonymise")
        # 2. opted-out persons never enter the file
        con.execute("CREATE TEMP TABLE tre_opt (person_id VARCHAR NOT NULL)")
        batch = []
        for pid in optouts:
            batch.append(pid)
            if len(batch) >= HASH_BATCH:
                self._append_optouts(batch)
                batch = []
        if batch:
            self._append_optouts(batch)
        persons_removed, rows_removed = con.execute(
            "SELECT count(*), coalesce(sum(i.n), 0) FROM tre_map m JOIN tre_ids i ON m.nhs = CAST(i.nhs AS BIGINT) "
            "WHERE m.person_id IN (SELECT person_id FROM tre_opt)"
        ).fetchall()[0]
        if persons_removed:
            con.execute("DELETE FROM tre_map WHERE person_id IN (SELECT person_id FROM tre_opt)")
        self._tick("optouts")
        # 3. the table
        schema = ", ".join([f"{PERSON_ID} VARCHAR NOT NULL"]
                           + [f"{_q(c.name)} {DUCKDB_TYPES[c.type]}" for c in self.stored]
                           + [f"{RK} SMALLINT NOT NULL", f"{RK2} BIGINT NOT NULL"])
        con.execute(f"CREATE TABLE data ({schema})")
        inner = ", ".join([f"{self._stored_value(c, check)} AS _v{i}"
                           for i, (c, check) in enumerate(zip(self.stored, self.checks, strict=True))]
                          + [f"tre_norm({self.src.identifier()}) AS _nhs"])
        select = ", ".join(["m.person_id"] + [f"r._v{i}" for i in range(len(self.stored))] + [f"m.{RK}", f"m.{RK2}"])
        con.execute("SET preserve_insertion_order = false")
        con.execute(f"INSERT INTO data SELECT {select} FROM (SELECT {inner} FROM {self.src.reader(typed=True)}) AS r "
                    f"JOIN tre_map AS m ON m.nhs = CAST(r._nhs AS BIGINT)")
        self._tick("write")
        # 4. the first load completes the dictionary (derived safely) and recodes rare values
        self.reporter.set(Phase.PUBLISHING)
        completed = self.derive()
        (row_count,) = con.execute("SELECT count(*) FROM data").fetchall()[0]
        (person_count,) = con.execute("SELECT count(*) FROM tre_map").fetchall()[0]
        for table in ("tre_map", "tre_opt", "tre_ids"):
            con.execute(f"DROP TABLE IF EXISTS {table}")
        con.execute("CHECKPOINT")
        self._tick("checkpoint")
        return LoadResult(ok=True, rows_total=rows_total, row_count=int(row_count), person_count=int(person_count),
                          rows_removed=int(rows_removed), persons_removed=int(persons_removed), dictionary=completed)

    def _stored_value(self, column, check: _Check) -> str:
        """The typed value, recoded when outside a frozen, derived domain."""
        typed = check.stored or check.typed
        rule = derivation.out_of_domain(column)
        if rule in (derivation.RECODE_OTHER, derivation.RECODE_NULL):
            literals = ", ".join(sql_literal(column.type, v) for v in column.values)
            other = "'other'" if rule == derivation.RECODE_OTHER else "NULL"
            inside = f"{typed} IN ({literals})" if literals else "false"
            return f"CASE WHEN {typed} IS NULL THEN NULL WHEN {inside} THEN {typed} ELSE {other} END"
        return typed

    def derive(self) -> Dictionary | None:
        todo = derivation.needs_stats(self.dictionary)
        if not todo:
            return None
        con, stats = self.con, {}
        for c in todo:
            q = _q(c.name)
            if c.role == Role.CATEGORY:
                found = con.execute(f"SELECT {q}, count(DISTINCT {PERSON_ID}) FROM data WHERE {q} IS NOT NULL "
                                    f"GROUP BY {q} HAVING count(DISTINCT {PERSON_ID}) >= {int(self.threshold)}").fetchall()
                stats[c.name] = derivation.ColumnStats(persons_by_value=dict(found))
            elif c.role == Role.MEASURE:
                p01, p99 = con.execute(f"SELECT quantile_cont({q}, 0.01), quantile_cont({q}, 0.99) FROM data").fetchall()[0]
                stats[c.name] = derivation.ColumnStats(p01=p01, p99=p99)
            elif c.role == Role.DATE:
                lo, hi = con.execute(f"SELECT min({q}), max({q}) FROM data").fetchall()[0]
                stats[c.name] = derivation.ColumnStats(min=lo, max=hi)
        completed = derivation.derive(self.dictionary, stats, threshold=self.threshold, today=self.today)
        for c in todo:
            column = completed.column(c.name)
            rule = derivation.out_of_domain(column)
            if rule in (derivation.RECODE_OTHER, derivation.RECODE_NULL):
                q = _q(c.name)
                literals = ", ".join(sql_literal(column.type, v) for v in column.values)
                other = "'other'" if rule == derivation.RECODE_OTHER else "NULL"
                where = f"{q} IS NOT NULL" + (f" AND {q} NOT IN ({literals})" if literals else "")
                con.execute(f"UPDATE data SET {q} = {other} WHERE {where}")
        return completed

    def _append_optouts(self, batch):
        self.con.register("tre_opt_batch", pa.table({"person_id": pa.array(batch, pa.string())}))
        self.con.execute("INSERT INTO tre_opt SELECT person_id FROM tre_opt_batch")
        self.con.unregister("tre_opt_batch")


def _pseudonymise(numbers: list[str]) -> tuple[list[str], list[int], list[int]]:
    """``person_id`` (``pseudonym.person_id_for``) and the record keys (``recordkeys.record_keys``)
    of many normalised, validated NHS numbers: the same functions, one-shot HMACs for speed."""
    pkey, ckey = pseudonym_key(), cellkey_secret()
    digest = hmac.digest
    person_ids, rk, rk2 = [], [], []
    for n in numbers:
        pid = digest(pkey, n.encode("ascii"), "sha256").hex()
        d = digest(ckey, pid.encode("ascii"), "sha256")
        person_ids.append(pid)
        rk.append(d[0])
        rk2.append(int.from_bytes(d[1:5], "big"))
    return person_ids, rk, rk2


def _nhs_valid(n: str) -> bool:
    return is_valid_nhs_number(n)
