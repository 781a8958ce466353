"""Writes for queries: submit, cancel, run (inside the environment), re-run, sweep.

Flow: the API validates and creates the query (one transaction, audited) and enqueues
``run_query_task`` on commit. The worker re-checks the access decision, runs the rewritten SQL in
the sandbox, writes the result to the store and hands it to ``outputs``. No row ever comes back.
"""

import logging
import threading
import time
from dataclasses import asdict
from datetime import timedelta
from decimal import Decimal

import duckdb
import pyarrow as pa
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from access.decision import check_access, require_access
from audit import transitions
from audit.actions import AuditAction
from audit.services import audit_record
from environment.models import Dataset
from environment.sandbox import dataset_schema, open_sandbox
from environment.services import reap_dead_sandboxes
from tre.errors import Invalid, WrongState

from . import results
from .models import TRANSITIONS, Query
from .personsets import serialize_uint64_sets
from .signals import query_completed
from .sql import PERSON_KEYS, QueryRejected, referenced_datasets, validate_and_rewrite

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # a query whose worker died twice is failed, not retried forever
HEARTBEAT_SECONDS = 1.0
HEARTBEAT_STALE = timedelta(seconds=settings.TRE_HEARTBEAT_STALE_SECONDS)  # a running attempt silent this long is dead
ENQUEUE_GRACE = timedelta(seconds=10)  # a queued query the broker never took is re-sent after this

# What the researcher is told; the engine's own text goes to logs and checkers only.
GENERIC_ERRORS = {
    "engine_error": "the query could not be run by the engine",
    "time_limit": "the query ran past its time limit",
    "too_many_groups": "the result has more groups than allowed",
    "access_refused": "access was refused when the query started",
    "worker_lost": "the worker running the query stopped; it was not finished",
    "no_data": "a dataset the query reads has no data loaded",
    "store_error": "the result could not be stored",
    "system_error": "the environment could not finish the query; the operators have been told",
}


# --- submission --------------------------------------------------------------------------------

def _sql_error(exc: QueryRejected) -> Invalid:
    return Invalid(fields={"sql": [str(exc)]})  # DRF style: the message names the rule and position


def query_submit(*, project, actor, sql, title: str = "", request=None) -> Query:
    """Validate ``sql`` for ``project`` and create a queued query; the run is enqueued on commit.

    Order: the SQL is parsed just enough to list its datasets; the access decision (403 naming the
    rule); then every rule of the query language (400 ``{"sql": [...]}``).
    """
    if not isinstance(sql, str) or not sql.strip():
        raise Invalid(fields={"sql": ["a query is required"]})
    max_bytes = settings.TRE_MAX_QUERY_BYTES
    try:
        names = referenced_datasets(sql, max_bytes=max_bytes)
    except QueryRejected as exc:
        raise _sql_error(exc) from None
    require_access(user=actor, project=project, datasets=names)
    datasets = list(Dataset.objects.filter(name__in=names).select_related("current_version"))
    try:
        validated = validate_and_rewrite(sql, schema=dataset_schema(datasets), max_bytes=max_bytes)
    except QueryRejected as exc:
        raise _sql_error(exc) from None
    empty = sorted(d.name for d in datasets if d.current_version_id is None)
    if empty:
        raise WrongState(f"dataset {', '.join(empty)} has no data loaded yet", rule="no_data")
    with transaction.atomic():
        query = Query.objects.create(
            project=project, submitted_by=actor, title=(title or "")[:200], sql=validated.sql,
            rewritten_sql=validated.rewritten_sql, persons_sql=validated.persons_sql,
            column_plan=[asdict(c) for c in validated.columns], dataset_names=list(validated.datasets),
        )
        audit_record(actor=actor, action=AuditAction.QUERY_SUBMITTED, target=query, project=project.pk, request=request,
                     data={"datasets": query.dataset_names, "title": query.title})
        transaction.on_commit(lambda: enqueue(query.pk))
    return query


def enqueue(query_id: int) -> bool:
    """Hand the query to the broker. If the broker is down the query stays queued (never lost):
    the sweeper sends it again once the broker is back."""
    from .tasks import run_query_task  # noqa: PLC0415 — services ↔ tasks of one app (the task calls run_query)

    try:
        run_query_task.apply_async(args=[query_id], retry=False)
    except (BrokerError, ConnectionError, OSError) as exc:  # the broker is down: kept, swept later
        log.warning("query %s kept queued: the broker did not take it (%s)", query_id, exc)
        return False
    Query.objects.filter(pk=query_id, status=Query.Status.QUEUED).update(enqueued_at=timezone.now())
    return True


# --- cancel and re-run -------------------------------------------------------------------------

@transaction.atomic
def query_cancel(*, query, actor, request=None, now=None) -> Query:
    query = Query.objects.select_for_update().get(pk=query.pk)
    transitions.check(TRANSITIONS, query, "cancel")
    if query.status == Query.Status.QUEUED:
        _finish(query, Query.Status.CANCELLED, now=now)
        audit_record(actor=actor, action=AuditAction.QUERY_CANCELLED, target=query, request=request, data={"while": "queued"})
    elif not query.cancel_requested:
        query.cancel_requested = True
        query.save(update_fields=["cancel_requested"])
        audit_record(actor=actor, action=AuditAction.QUERY_CANCEL_REQUESTED, target=query, request=request)
    return query


def query_rerun(*, query, actor=None, reason: str = "stale") -> Query:
    """Run the same SQL again as a new query (e.g. after an opt-out made its output stale)."""
    with transaction.atomic():
        new = Query.objects.create(
            project=query.project, submitted_by=query.submitted_by, title=query.title, sql=query.sql,
            rewritten_sql=query.rewritten_sql, persons_sql=query.persons_sql, column_plan=query.column_plan,
            dataset_names=query.dataset_names, rerun_of=query,
        )
        audit_record(actor=actor, action=AuditAction.QUERY_RERUN, target=new, project=query.project_id,
                     data={"rerun_of": query.pk, "reason": reason})
        transaction.on_commit(lambda: enqueue(new.pk))
    return new


# --- the run, inside the environment ------------------------------------------------------------

_FINISHING = {Query.Status.COMPLETED: "complete", Query.Status.FAILED: "fail", Query.Status.CANCELLED: "cancel"}


def _finish(query, status, *, code: str = "", detail: str = "", now=None) -> None:
    """End ``query`` in ``status`` (checked against the transition table); the caller audits."""
    transitions.check(TRANSITIONS, query, _FINISHING[status])
    query.status = status
    query.finished_at = now or timezone.now()
    if code:
        query.error_code, query.error = code, GENERIC_ERRORS[code]
        query.error_detail = detail[:20_000]
    query.save()


class _Watchdog(threading.Thread):
    """Beside a running query: beats the heartbeat, interrupts the engine on cancel or time limit."""

    def __init__(self, query_id: int, conn, limit: float):
        super().__init__(daemon=True, name=f"query-{query_id}-watchdog")
        self.query_id, self.conn, self.limit = query_id, conn, limit
        self.reason: str | None = None
        self._halt = threading.Event()

    def run(self):
        started = last_beat = time.monotonic()
        try:
            while not self._halt.wait(0.2):
                if time.monotonic() - started > self.limit:
                    self.reason = "time_limit"
                elif self._cancel_requested():
                    self.reason = "cancelled"
                if self.reason:
                    self.conn.interrupt()
                    return
                if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                    self._beat()
                    last_beat = time.monotonic()
        finally:
            connection.close()

    def _beat(self):
        try:
            Query.objects.filter(pk=self.query_id).update(heartbeat_at=timezone.now())
        except DatabaseError as exc:  # the database is restarting: keep the engine going, beat later
            log.warning("query %s: heartbeat not recorded (%s)", self.query_id, exc)
            connection.close()

    def _cancel_requested(self) -> bool:
        try:
            return Query.objects.filter(pk=self.query_id, cancel_requested=True).exists()
        except DatabaseError:
            connection.close()
            return False

    def stop(self):
        self._halt.set()
        self.join(timeout=5)


def _claim(query_id: int, now, task_id: str = "") -> Query | None:
    """Lock the query and decide whether this delivery should run it. Returns it marked running."""
    with transaction.atomic():
        query = (Query.objects.select_for_update(of=("self",)).select_related("project", "submitted_by")
                 .filter(pk=query_id).first())  # the query row only: never the project's (deadlocks with inserts)
        if query is None or query.is_finished:
            return None  # idempotent: a redelivery of a finished query does nothing
        if query.cancel_requested:
            _finish(query, Query.Status.CANCELLED, now=now)
            audit_record(actor=None, action=AuditAction.QUERY_CANCELLED, target=query, data={"while": "queued"})
            return None
        resuming = bool(task_id) and query.task_id == task_id  # a retry or redelivery of the same task
        if (query.status == Query.Status.RUNNING and not resuming and query.heartbeat_at
                and now - query.heartbeat_at < HEARTBEAT_STALE):
            return None  # another worker is running it right now
        if query.attempts >= MAX_ATTEMPTS:
            _finish(query, Query.Status.FAILED, code="worker_lost", detail=f"{query.attempts} attempts did not finish", now=now)
            audit_record(actor=None, action=AuditAction.QUERY_FAILED, target=query, data={"code": "worker_lost"})
            return None
        decision = check_access(user=query.submitted_by, project=query.project, datasets=query.dataset_names)
        if not decision.allowed:
            _finish(query, Query.Status.FAILED, code="access_refused", detail=decision.message, now=now)
            query.error = f"{GENERIC_ERRORS['access_refused']}: {decision.message} (rule {decision.rule})"
            query.save(update_fields=["error"])
            audit_record(actor=None, action=AuditAction.QUERY_FAILED, target=query, data={"code": "access_refused", "rule": decision.rule})
            return None
        transitions.check(TRANSITIONS, query, "start")
        query.status, query.started_at, query.heartbeat_at = Query.Status.RUNNING, now, now
        query.task_id = task_id
        query.attempts += 1
        query.timings = {**query.timings, "queue_wait_ms": round((now - query.submitted_at).total_seconds() * 1000)}
        query.save()
        audit_record(actor=None, action=AuditAction.QUERY_STARTED, target=query, data={"attempt": query.attempts})
        return query


def _from_arrow(value):
    """Arrow hands HUGEINT sums over as Decimal with no fraction: give them back as ints."""
    if isinstance(value, Decimal) and value == value.to_integral_value() and value.as_tuple().exponent >= 0:
        return int(value)
    return value


def _execute(query: Query, sandbox, max_groups: int) -> tuple[list[str], list, bytes]:
    """Run the rewritten SQL once; split off each group's person keys (zero-copy from Arrow) for
    the differencing check and return the aggregate table, its columns and the packed person sets."""
    started = time.monotonic()
    reader = sandbox.conn.sql(query.rewritten_sql).to_arrow_reader(batch_size=max(1024, max_groups + 1))
    batches, groups = [], 0
    for batch in reader:
        groups += batch.num_rows
        if groups > max_groups:
            raise _TooManyGroups(f"more than {max_groups} groups")
        batches.append(batch)
    table = pa.Table.from_batches(batches, schema=reader.schema)
    engine_ms = (time.monotonic() - started) * 1000
    columns = [name for name in table.column_names if name != PERSON_KEYS]
    values = [[_from_arrow(v) for v in table.column(name).to_pylist()] for name in columns]
    rows = [list(r) for r in zip(*values, strict=False)] if values else []
    n_keys = sum(1 for c in query.column_plan if c["kind"] == "key")
    persons = table.column(PERSON_KEYS).combine_chunks()
    offsets = persons.offsets.to_pylist()
    flat = persons.values
    data = flat.buffers()[1]
    base = flat.offset * 8
    sets = serialize_uint64_sets(
        (tuple(row[:n_keys]), data[base + offsets[i] * 8: base + offsets[i + 1] * 8].to_pybytes())
        for i, row in enumerate(rows))
    query.timings = {**query.timings, "engine_ms": round(engine_ms),
                     "person_sets_ms": round((time.monotonic() - started) * 1000 - engine_ms)}
    return columns, rows, sets


class _TooManyGroups(Exception):
    pass


def run_query(*, query_id: int, now=None, task_id: str = "") -> Query | None:
    """Run one query inside the environment (the Celery task's body). Idempotent."""
    query = _claim(query_id, now or timezone.now(), task_id)
    if query is None:
        return None
    t0 = time.monotonic()
    code, detail, columns, rows, person_sets = "", "", [], [], b""
    watchdog = None
    try:
        datasets = list(Dataset.objects.filter(name__in=query.dataset_names))
        with open_sandbox(datasets) as sandbox:
            query.dataset_versions = dict(sandbox.versions)
            query.optout_watermark = sandbox.optout_watermark
            watchdog = _Watchdog(query.pk, sandbox.conn, settings.TRE_QUERY_SOFT_TIME_LIMIT)
            watchdog.start()
            try:
                columns, rows, person_sets = _execute(query, sandbox, settings.TRE_MAX_RESULT_CELLS)
            finally:
                watchdog.stop()
                _drop_dead_connection()  # before the sandbox releases its leases
    except _TooManyGroups as exc:
        code, detail = "too_many_groups", f"{exc}; TRE_MAX_RESULT_CELLS={settings.TRE_MAX_RESULT_CELLS}"
    except duckdb.InterruptException as exc:
        code, detail = ("cancelled" if watchdog and watchdog.reason == "cancelled" else "time_limit"), str(exc)
    except duckdb.Error as exc:
        code, detail = "engine_error", f"{type(exc).__name__}: {exc}"
        log.warning("query %s failed in the engine: %s", query.pk, detail)
    except LookupError as exc:  # no current version of a dataset
        code, detail = "no_data", str(exc)
    if not code:
        try:
            results.write_result(query.pk, columns, rows)
            results.write_person_sets(query.pk, person_sets)
        except OSError as exc:
            code, detail = "store_error", str(exc)
            log.error("query %s: result not stored: %s", query.pk, exc)
    close_old_connections()
    _drop_dead_connection()
    return _complete(query, code=code, detail=detail, groups=len(rows), total_ms=(time.monotonic() - t0) * 1000)


def _drop_dead_connection() -> None:
    """The engine may have run across a database restart. Check the connection before writing the
    outcome: Django's health check does not run inside ``atomic`` (a dead connection there fails
    the task, whose retry re-runs the engine); closed here, the next query simply reconnects."""
    try:
        if connection.connection is not None and not connection.is_usable():
            connection.close()
    except DatabaseError:
        connection.close()


def _complete(query: Query, *, code: str, detail: str, groups: int, total_ms: float) -> Query:
    with transaction.atomic():
        locked = Query.objects.select_for_update().get(pk=query.pk)
        timings = {**query.timings, "total_ms": round(total_ms)}
        locked.timings, locked.dataset_versions, locked.optout_watermark = timings, query.dataset_versions, query.optout_watermark
        if locked.cancel_requested or code == "cancelled":
            _finish(locked, Query.Status.CANCELLED)
            audit_record(actor=None, action=AuditAction.QUERY_CANCELLED, target=locked, data={"while": "running"})
            results.delete_result(locked.pk)
        elif code:
            _finish(locked, Query.Status.FAILED, code=code, detail=detail)
            audit_record(actor=None, action=AuditAction.QUERY_FAILED, target=locked, data={"code": code})
        else:
            locked.result_groups = groups
            _finish(locked, Query.Status.COMPLETED)
            audit_record(actor=None, action=AuditAction.QUERY_COMPLETED, target=locked,
                         data={"groups": groups, "total_ms": timings["total_ms"], "versions": locked.dataset_versions})
            _hand_over(locked)
        return locked


def _hand_over(query: Query) -> None:
    """Send ``query_completed`` (outputs runs disclosure control and creates the output) in the
    completion's transaction. If a receiver raises, its writes roll back to a savepoint and the
    query ends ``failed`` with ``system_error`` at once, instead of staying ``running`` until the
    sweeper gives up on it."""
    try:
        with transaction.atomic():
            query_completed.send(sender=Query, query=query)
    except Exception as exc:
        log.exception("query %s: the hand-over to outputs failed", query.pk)
        _finish(query, Query.Status.FAILED, code="system_error", detail=f"{type(exc).__name__}: {exc}")
        audit_record(actor=None, action=AuditAction.QUERY_FAILED, target=query, data={"code": "system_error"})
        results.delete_result(query.pk)


# --- the sweeper ---------------------------------------------------------------------------------

def sweep(*, now=None) -> dict:
    """Fail or re-run queries whose worker died; re-send queued queries the broker never took.

    Bound: a running query whose heartbeat is older than ``HEARTBEAT_STALE`` (or that has run past
    the hard time limit) is re-sent once more, then failed (``MAX_ATTEMPTS``).
    """
    now = now or timezone.now()
    resent, failed = [], []
    hard_limit = timedelta(seconds=settings.TRE_QUERY_TIME_LIMIT + 30)
    dead = Query.objects.filter(status=Query.Status.RUNNING, heartbeat_at__lt=now - HEARTBEAT_STALE) | \
        Query.objects.filter(status=Query.Status.RUNNING, started_at__lt=now - hard_limit)
    for query_id in dead.values_list("pk", flat=True).distinct():
        with transaction.atomic():
            q = Query.objects.select_for_update().get(pk=query_id)
            if q.status != Query.Status.RUNNING:
                continue
            if q.attempts >= MAX_ATTEMPTS or (q.started_at and q.started_at < now - hard_limit):
                _finish(q, Query.Status.FAILED, code="worker_lost" if q.attempts >= MAX_ATTEMPTS else "time_limit",
                        detail="the running attempt stopped reporting", now=now)
                audit_record(actor=None, action=AuditAction.QUERY_FAILED, target=q, data={"code": q.error_code, "by": "sweeper"})
                failed.append(q.pk)
            else:
                transitions.check(TRANSITIONS, q, "requeue")
                q.status, q.enqueued_at = Query.Status.QUEUED, None
                q.save(update_fields=["status", "enqueued_at"])
                audit_record(actor=None, action=AuditAction.QUERY_REQUEUED, target=q, data={"attempts": q.attempts, "by": "sweeper"})
                resent.append(q.pk)
    if failed or resent:
        reap_dead_sandboxes()  # the dead attempts' sandboxes and leases, at once
    stuck = Query.objects.filter(status=Query.Status.QUEUED, cancel_requested=False).filter(
        enqueued_at__isnull=True, submitted_at__lt=now - ENQUEUE_GRACE)
    for query_id in list(stuck.values_list("pk", flat=True)) + resent:
        if enqueue(query_id) and query_id not in resent:
            resent.append(query_id)
    return {"resent": resent, "failed": failed}
