"""Dataset counts as each role sees them (DESIGN.md §4 "Counts").

Custodians see a version's exact ``row_count``/``person_count``. Everyone else sees them perturbed
by the cell key method over the version's persons (the cell key: Σ ``_rk`` over its distinct
persons mod 256, computed once per version and kept on ``DatasetVersion.person_ckey``), then
rounded to two significant figures. The perturbation itself belongs to disclosure control
(``outputs``, a layer above): it registers it here when it starts (``register_perturbation``);
until then no count is shown to non-custodians at all (None), never an exact one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import duckdb

from . import engine, store
from .models import DatasetVersion
from .recordkeys import RK

log = logging.getLogger(__name__)

_perturb: Callable[[int, int], int] | None = None


def register_perturbation(function: Callable[[int, int], int]) -> None:
    """``function(count, ckey) -> released count`` (``outputs.disclosure.perturb_dataset_count``)."""
    global _perturb
    _perturb = function


def person_ckey(version: DatasetVersion) -> int | None:
    """The version's person cell key, computed from its file once and kept."""
    if version.person_ckey is not None:
        return version.person_ckey
    if not version.file_path or version.file_deleted_at is not None:
        return None
    try:
        con = engine.connect(store.abspath(version.file_path), read_only=True, memory_limit="256MB", threads=1)
        try:
            (key,) = con.execute(f"SELECT CAST(coalesce(sum(rk), 0) % 256 AS INTEGER) FROM "
                                 f"(SELECT DISTINCT person_id, {RK} AS rk FROM data)").fetchone()
        finally:
            con.close()
    except (duckdb.Error, OSError) as exc:
        log.warning("version %s: person cell key not computed (%s)", version.pk, type(exc).__name__)
        return None
    DatasetVersion.objects.filter(pk=version.pk).update(person_ckey=key)
    version.person_ckey = key
    return key


def shown_counts(version: DatasetVersion | None, *, exact: bool) -> tuple[int | None, int | None]:
    """``(row_count, person_count)`` of ``version`` for a custodian (``exact``) or anyone else."""
    if version is None or version.row_count is None:
        return None, None
    if exact:
        return version.row_count, version.person_count
    key = person_ckey(version)
    if key is None or _perturb is None:
        return None, None
    return _perturb(version.row_count, key), _perturb(version.person_count, key)
