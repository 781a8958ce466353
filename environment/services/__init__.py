"""Writes of the secure data environment, one module per concern:

- ``datasets``: declaring a dataset (its dictionary, version 1);
- ``dictionaries``: dictionary versions (each audited) and the dummy twin that follows each;
- ``versions``: an upload recorded as a version, its load (ingestion), the sweeper of lost loads;
- ``leases``: leases on version files, and the store's garbage collection;
- ``optouts``: registration (O(numbers in the request)), the watermark, the opt-out status;
- ``erasure``: what follows a registration (which datasets, staleness signal) and the rewrite.

Every write audits itself in the same transaction; side effects (Celery, signals, deleting files)
go out on commit. The names below are the public ones: ``from environment.services import X``.
"""

from .datasets import dataset_create, dataset_declaration_problems, next_version_number
from .dictionaries import dictionary_record, limits, threshold_in_force, twin_refresh
from .erasure import (
    StoreError,
    datasets_containing,
    enqueue_erasure,
    erase_dataset,
    erase_opted_out,
    erasure_pending,
    optouts_apply,
)
from .leases import (
    DatasetNotLoaded,
    cleanup_store,
    delete_superseded_files,
    holder_id,
    lease_current_versions,
    lease_seconds,
    reap_dead_sandboxes,
    release_leases,
)
from .optouts import (
    BROKER_ERRORS,
    MAX_OPTOUTS_PER_REQUEST,
    OPTOUT_SERVICE_GROUP,
    enqueue_optouts_apply,
    optout_person_ids,
    optout_rows,
    optout_status,
    optout_watermark_now,
    optouts_register,
)
from .versions import enqueue_ingest, sweep_stuck_loads, version_ingest, version_upload

__all__ = [
    "dataset_declaration_problems",
    "dictionary_record",
    "limits",
    "threshold_in_force",
    "twin_refresh",
    "BROKER_ERRORS",
    "MAX_OPTOUTS_PER_REQUEST",
    "OPTOUT_SERVICE_GROUP",
    "DatasetNotLoaded",
    "StoreError",
    "cleanup_store",
    "dataset_create",
    "datasets_containing",
    "delete_superseded_files",
    "enqueue_erasure",
    "enqueue_ingest",
    "enqueue_optouts_apply",
    "erase_dataset",
    "erase_opted_out",
    "erasure_pending",
    "holder_id",
    "lease_current_versions",
    "lease_seconds",
    "next_version_number",
    "optout_person_ids",
    "optout_rows",
    "optout_status",
    "optout_watermark_now",
    "optouts_apply",
    "optouts_register",
    "reap_dead_sandboxes",
    "release_leases",
    "sweep_stuck_loads",
    "version_ingest",
    "version_upload",
]
