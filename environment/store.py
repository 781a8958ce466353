"""The store's layout on disk, under ``settings.TRE_STORE_DIR``::

    incoming/<uuid>.<csv|parquet|upload>   uploads waiting for their load (deleted after it)
    datasets/<dataset id>/v<n>.duckdb        one immutable file per ready version (table ``data``)
    datasets/<dataset id>/.v<n>-<token>.tmp  a file being written (renamed when complete)
    sandboxes/<token>/sandbox.duckdb         a sandbox's catalog (views + opt-outs), removed at close
    tmp/<token>/                             DuckDB spill space of a running load
    results/q<id>.json, results/q<id>.persons  a query's raw result and person sets (``queries.results``)

Paths in the database are relative to the store, so the store can move.
"""

import errno
import os
import secrets
import shutil
import time
from pathlib import Path

from django.conf import settings

from tre.errors import Unavailable


def root() -> Path:
    return Path(settings.TRE_STORE_DIR)


def abspath(relative: str) -> Path:
    path = (root() / relative).resolve()
    base = root().resolve()
    if base not in path.parents:
        raise ValueError("a store path must lie inside TRE_STORE_DIR")
    return path


def relpath(path: Path) -> str:
    return str(Path(path).resolve().relative_to(root().resolve()))


def ensure_dir(relative: str) -> Path:
    path = root() / relative
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def incoming_dir() -> Path:
    return ensure_dir("incoming")


def dataset_dir(dataset_id: int) -> Path:
    return ensure_dir(f"datasets/{int(dataset_id)}")


def version_file(dataset_id: int, number: int) -> Path:
    return dataset_dir(dataset_id) / f"v{int(number)}.duckdb"


def temp_file(dataset_id: int, label: str) -> Path:
    return dataset_dir(dataset_id) / f".{label}-{secrets.token_hex(6)}.tmp"


def scratch_dir() -> Path:
    path = ensure_dir("tmp") / secrets.token_hex(8)
    path.mkdir(mode=0o700)
    return path


def sandbox_dir() -> Path:
    path = ensure_dir("sandboxes") / secrets.token_hex(12)
    path.mkdir(mode=0o700)
    return path


def result_file(query_id: int, suffix: str) -> Path:
    """``results/q<id>.<suffix>``: a query's raw result, kept inside the store."""
    return ensure_dir("results") / f"q{int(query_id)}.{suffix}"


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """Atomically move a fully written file to its final name."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all at once: a temporary file beside it, synced, then renamed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}-{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        publish(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise


def remove_quietly(path) -> None:
    if not path:
        return
    path = Path(path)
    try:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
            for suffix in (".wal",):
                Path(str(path) + suffix).unlink(missing_ok=True)
    except OSError:
        pass


def remove_stale(relative_dir: str, *, older_than_seconds: float) -> int:
    """Remove entries of a store directory untouched for a while (left by a crashed process)."""
    base = root() / relative_dir
    if not base.is_dir():
        return 0
    cutoff = time.time() - older_than_seconds
    removed = 0
    for entry in base.iterdir():
        try:
            if entry.stat().st_mtime < cutoff:
                remove_quietly(entry)
                removed += 1
        except FileNotFoundError:
            continue
    return removed


def failure_reason(exc: BaseException) -> str | None:
    """A clear, data-free sentence for a store failure (disk full, read-only, no permission), or None.

    DuckDB reports a full disk as its own exception whose text names the OS error, so both are read."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.ENOSPC or "No space left on device" in text:
        return "the store ran out of disk space; nothing was written (free space, then try again)"
    if code == errno.EROFS or "Read-only file system" in text:
        return "the store is read-only; nothing was written"
    if code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        return "the store is not writable (permission denied); nothing was written"
    return None


def unavailable(exc: OSError):
    """The 503 to answer when the store cannot take a write during a request."""
    return Unavailable(failure_reason(exc) or "the store cannot be written to right now", dependency="store")
