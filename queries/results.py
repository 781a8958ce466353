"""Query results live in the store, inside the environment, never in an API response.

``results/q<id>.json`` holds the raw aggregate table; ``results/q<id>.persons`` holds the
per-group person sets (roaring bitmaps) for the differencing check. Written atomically.
"""

import json
import os
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from django.conf import settings


def _dir() -> Path:
    path = Path(settings.TRE_STORE_DIR) / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _default(value):
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in a result")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def result_path(query_id: int) -> Path:
    return _dir() / f"q{query_id}.json"


def persons_path(query_id: int) -> Path:
    return _dir() / f"q{query_id}.persons"


def write_result(query_id: int, columns: list[str], rows: list) -> Path:
    path = result_path(query_id)
    _atomic_write(path, json.dumps({"columns": columns, "rows": [list(r) for r in rows]}, default=_default).encode())
    return path


def read_result(query_id: int) -> tuple[list[str], list[list]]:
    data = json.loads(result_path(query_id).read_bytes())
    return data["columns"], data["rows"]


def write_person_sets(query_id: int, blob: bytes) -> Path:
    path = persons_path(query_id)
    _atomic_write(path, blob)
    return path


def read_person_sets(query_id: int) -> bytes | None:
    path = persons_path(query_id)
    return path.read_bytes() if path.exists() else None


def delete_result(query_id: int) -> None:
    for path in (result_path(query_id), persons_path(query_id)):
        path.unlink(missing_ok=True)
