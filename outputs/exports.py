"""The files a released output is downloaded as (docs/outputs.md). Pure functions over a released
``Output``: they serve the released table only (the full grid sorted by key, withheld cells null,
no contributors column).

- ``csv``: plain CSV: the header row, then the rows; a withheld cell is empty. No metadata (it is
  in the JSON and ACRO exports).
- ``json``: ``{"metadata": {...}, "columns": [...], "rows": [...]}``; a suppressed cell is null.
- ``acro``: ACRO's ``results.json`` layout (``Records.finalise_json``), for SACRO-Viewer.
- ``acro_zip``: the directory SACRO-Viewer opens: ``results.json``, the table as CSV, and
  ``checksums/<file>.txt`` (SHA-256), as ACRO's ``finalise`` writes them.
"""

import csv
import dataclasses
import hashlib
import io
import json
import zipfile

from django.core.serializers.json import DjangoJSONEncoder

from .disclosure import CONTRIBUTORS, RULES, DisclosureParams

FORMATS = ("csv", "json", "acro", "acro_zip")
PARAMS = [f.name for f in dataclasses.fields(DisclosureParams)]

# ACRO's version whose results.json layout this mirrors (SACRO-Viewer accepts 0.4.x and later).
ACRO_VERSION = "0.4.0"
# Our rule names -> ACRO's names for the same checks (ours that ACRO lacks keep their own name).
ACRO_RULES = {"threshold": "threshold", "nk_dominance": "nk-rule", "p_percent": "p-ratio",
              "differencing": "differencing"}
ACRO_STATUS = {"pass": "pass", "suppressed": "fail", "review": "review"}


def released_table(output) -> tuple[list[str], list[list]]:
    """The released table: the safe grid (it holds no contributors column)."""
    return list(output.columns), [list(row) for row in output.safe]


def metadata(output) -> dict:
    project = output.project
    return {
        "output_id": output.pk,
        "project_id": project.pk,
        "project_title": project.title,
        "query_id": output.query_id,
        "released_at": output.released_at.isoformat() if output.released_at else None,
        "sdc_status": output.sdc_status,
        "sdc_rules": _ordered(output.sdc_params, PARAMS),
        "sdc_summary": _ordered(output.sdc_summary, RULES),
    }


def _ordered(values: dict, order) -> dict:
    """``values`` in a stable order (JSON columns do not keep the order keys were written in)."""
    return {**{k: values[k] for k in order if k in values}, **{k: v for k, v in values.items() if k not in order}}


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value):
    """A CSV cell: empty for suppressed; text that a spreadsheet would run as a formula is quoted
    with a leading apostrophe (OWASP's CSV-injection advice). Numbers are left as numbers."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def as_csv(output) -> str:
    """Plain CSV: the header row, then the rows."""
    return _plain_csv(output)


def as_json(output) -> dict:
    columns, rows = released_table(output)
    return {"metadata": metadata(output), "columns": columns, "rows": rows}


def _plain_csv(output) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns, rows = released_table(output)
    writer.writerow(columns)
    writer.writerows([[_cell(v) for v in row] for row in rows])
    return buffer.getvalue()


def acro_file_name(output) -> str:
    return f"output_{output.pk}.csv"


def acro_results(output, *, comments=()) -> dict:
    """ACRO's ``results.json`` for one released output (uid ``output_<id>``).

    ``files[0].sdc`` is ACRO's ``{summary: {suppressed, <check>: cells}, cells: {<check>: [[row,
    column], …]}}`` over the released table (columns counted from 0 including the key columns);
    ``outcome`` is ACRO's per-cell table ``{column: {row: "ok" | "<check>; …"}}``."""
    columns, rows = released_table(output)
    position = {name: i for i, name in enumerate(columns)}
    cells = {acro: [] for acro in ACRO_RULES.values()}
    outcome = {name: {str(r): "ok" for r in range(len(rows))} for name in columns}
    for r, flagged in enumerate(output.flags):
        for name, rules in flagged.items():
            if name == CONTRIBUTORS or name not in position:
                continue
            for rule in rules:
                cells.setdefault(ACRO_RULES.get(rule, rule), []).append([r, position[name]])
            outcome[name][str(r)] = "".join(f"{ACRO_RULES.get(rule, rule)}; " for rule in rules)
    counts = dict(output.sdc_summary)
    summary_counts = {ACRO_RULES[rule]: counts.get(rule, 0) for rule in RULES}
    suppressed = output.sdc_status != "pass"
    status = ACRO_STATUS.get(output.sdc_status, "review")
    # as ACRO's get_summary words it: "fail; threshold: 2 cells suppressed; p-ratio: 1 cells suppressed; "
    fired = "".join(f"{name}: {n} cells {'suppressed' if suppressed else 'may need suppressing'}; "
                    for name, n in summary_counts.items() if n)
    uid = f"output_{output.pk}"
    record = {
        "uid": uid,
        "status": status,
        "type": "table",
        "properties": {"method": "sql", "tre_output_id": output.pk, "tre_query_id": output.query_id,
                       "tre_project_id": output.project_id, "sdc_rules": _ordered(output.sdc_params, PARAMS),
                       "released_at": output.released_at.isoformat() if output.released_at else None},
        "files": [{"name": acro_file_name(output),
                   "sdc": {"summary": {"suppressed": suppressed, "negative": 0, "missing": 0, **summary_counts},
                           "cells": {"negative": [], "missing": [], **cells}}}],
        "outcome": outcome,
        "command": output.query.sql,
        "summary": f"{status}; {fired}" if fired else status,
        "timestamp": output.released_at.isoformat() if output.released_at else output.created_at.isoformat(),
        "comments": list(comments),
        "exception": output.request_comment or "",
    }
    return {"version": ACRO_VERSION, "results": {uid: record}}


def acro_zip(output, *, comments=()) -> bytes:
    results = json.dumps(acro_results(output, comments=comments), indent=4, cls=DjangoJSONEncoder).encode()
    table = _plain_csv(output).encode()
    name = acro_file_name(output)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("results.json", results)
        archive.writestr(name, table)
        archive.writestr(f"checksums/{name}.txt", hashlib.sha256(table).hexdigest())
        archive.writestr("checksums/results.json.txt", hashlib.sha256(results).hexdigest())
    return buffer.getvalue()
