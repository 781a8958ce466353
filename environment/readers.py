"""Reading an upload: its format, its header, and the SQL pieces that read it with DuckDB.

The parsing rules themselves (what a row must look like) live with the load in ``ingest``; this
module is what both formats need before a row is read. Values are never echoed back: they may be
patient data.
"""

import csv
import io
from pathlib import Path

from .engine import quote_literal as _lit
from .naming import _TEN_DIGITS, IDENTIFIER

HEADER_MAX_BYTES = 1024 * 1024
REJECTS_LIMIT = 10_000  # rejected rows DuckDB records per scan; beyond this the count is "at least"


def _error(row, column, reason) -> dict:
    return {"row": row, "column": column, "reason": reason}


# --- format sniffing --------------------------------------------------------------------------

PARQUET_MAGIC = b"PAR1"


def sniff_format(path: Path, filename: str = "") -> str:
    """``parquet`` (by magic number, or extension), ``csv`` otherwise; compressed archives refused."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == PARQUET_MAGIC:
        return "parquet"
    if head[:2] == b"\x1f\x8b" or head[:4] == b"PK\x03\x04":
        return "compressed"
    name = (filename or "").lower()
    if name.endswith((".parquet", ".pq")) and head:
        return "parquet"
    return "csv"


# --- the header -------------------------------------------------------------------------------

def read_csv_header(path: Path) -> tuple[list[str] | None, list[dict]]:
    """The header's field names, or file-level errors (empty file, not UTF-8, unreadable header)."""
    with open(path, "rb") as fh:
        head = fh.read(HEADER_MAX_BYTES)
    if not head.strip(b" \t\r\n\xef\xbb\xbf"):
        return None, [_error(None, None, "the file is empty")]
    end = head.find(b"\n")
    if end < 0 and len(head) == HEADER_MAX_BYTES:
        return None, [_error(None, None, "the header line is longer than 1 MiB")]
    line = head if end < 0 else head[:end]
    if line.startswith(b"\xef\xbb\xbf"):
        line = line[3:]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, [_error(None, None, "the file is not valid UTF-8 (in the header line)")]
    try:
        names = next(csv.reader(io.StringIO(text.rstrip("\r"))))
    except (csv.Error, StopIteration):
        return None, [_error(None, None, "the header line cannot be read as CSV")]
    return [n.strip() for n in names], []


def _shown(name: str) -> str | None:
    """A header name from the file, if it is safe to echo: an identifier without ten digits in a
    row (a header may really be a data line: its values are never repeated back)."""
    key = name.lower()
    return key if IDENTIFIER.fullmatch(key) and not _TEN_DIGITS.search(key) else None


def check_header(names: list[str], *, columns: list[dict]) -> list[dict]:
    """Missing, unexpected and duplicate column names (compared case-insensitively)."""
    errors = []
    declared = [c["name"] for c in columns]
    seen, duplicates = set(), []
    for n in names:
        key = n.lower()
        if key in seen and key not in duplicates:
            duplicates.append(key)
        seen.add(key)
    if not any(n.lower() in declared for n in names):
        # No declared column at all: most likely a data line (or another file). Nothing of it is
        # repeated back — it may be patient data.
        errors.append(_error(None, None, "the first line must be the header, naming the declared columns"))
        errors += [_error(None, d, "missing column: declared for this dataset but not in the file") for d in declared]
        return errors
    for d in duplicates:
        errors.append(_error(None, _shown(d), "duplicate column name in the header"))
    for position, n in enumerate(names, start=1):
        if not n:
            errors.append(_error(None, None, f"column {position} of the header has no name"))
        elif n.lower() not in declared:
            shown = _shown(n)
            errors.append(_error(None, shown, "unexpected column: not declared for this dataset" if shown else
                                 f"unexpected column {position} of the header (its name is not shown: not an identifier)"))
    for d in declared:
        if d not in seen:
            errors.append(_error(None, d, "missing column: declared for this dataset but not in the file"))
    return errors


# --- SQL pieces -------------------------------------------------------------------------------

def _macros(con) -> None:
    """``tre_norm`` (spaces, tabs and dashes removed) and ``tre_nhs_valid`` (modulus 11), the SQL
    twins of ``pseudonym.normalise_nhs_number`` and ``pseudonym.is_valid_nhs_number``."""
    con.execute("CREATE OR REPLACE TEMP MACRO tre_norm(s) AS replace(replace(replace(s, ' ', ''), chr(9), ''), '-', '')")
    weighted = " + ".join(f"(ord(substr(n, {i}, 1)) - 48) * {11 - i}" for i in range(1, 10))
    con.execute(
        "CREATE OR REPLACE TEMP MACRO tre_nhs_valid(n) AS CASE WHEN regexp_full_match(n, '[0-9]{10}') "
        f"THEN (11 - (({weighted}) % 11)) % 11 = ord(substr(n, 10, 1)) - 48 ELSE false END"
    )


def _csv_reader(path: Path, order: list[tuple[str, str]], *, rejects: str | None) -> str:
    cols = "{" + ", ".join(f"{_lit(name)}: {_lit(sqltype)}" for name, sqltype in order) + "}"
    options = [
        f"columns={cols}", "header=true", "auto_detect=false", "delim=','", "quote='\"'", "escape='\"'",
        "strict_mode=true", "null_padding=false", "compression='none'", "encoding='utf-8'",
    ]
    if rejects:
        options += ["store_rejects=true", f"rejects_table={_lit(rejects)}", f"rejects_scan={_lit(rejects + '_scan')}",
                    f"rejects_limit={REJECTS_LIMIT}"]
    return f"read_csv({_lit(str(path))}, {', '.join(options)})"
