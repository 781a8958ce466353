"""Query results live in the store, inside the environment, never in an API response.

``results/q<id>.json`` holds the populated cells of the grid (``queries.plans.cells_from_rows``); ``results/q<id>.persons`` holds the
per-group person sets (roaring bitmaps) for the differencing check. Written atomically, through
the store (``environment.store`` owns the layout).
"""

import json
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from environment import store


def _default(value):
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in a result")


def result_path(query_id: int) -> Path:
    return store.result_file(query_id, "json")


def persons_path(query_id: int) -> Path:
    return store.result_file(query_id, "persons")


def write_result(query_id: int, columns: list[str], cells: list[dict]) -> Path:
    """The result's column names and its populated cells (``{"key": [...], part: value, …}``)."""
    path = result_path(query_id)
    store.write_atomic(path, json.dumps({"columns": columns, "cells": cells}, default=_default).encode())
    return path


def read_result(query_id: int) -> tuple[list[str], list[dict]]:
    data = json.loads(result_path(query_id).read_bytes())
    return data["columns"], data["cells"]


def write_person_sets(query_id: int, blob: bytes) -> Path:
    path = persons_path(query_id)
    store.write_atomic(path, blob)
    return path


def read_person_sets(query_id: int) -> bytes | None:
    path = persons_path(query_id)
    return path.read_bytes() if path.exists() else None


def delete_result(query_id: int) -> None:
    for path in (result_path(query_id), persons_path(query_id)):
        path.unlink(missing_ok=True)
