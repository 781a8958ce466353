"""Writes for queries: submit, cancel, run (inside the environment), re-run, sweep, dummy runs.

Flow (DESIGN §5): the API checks the access decision, validates the SQL against the datasets'
dictionaries (``queries.language``) and creates the query with its plan and its two statements
(one transaction, audited). A real query is enqueued on commit; ``run_query_task`` re-checks the
access decision, runs the contributions statement in the sandbox, writes the cells and the
contributors' person sets to the store and hands the query to ``outputs`` (``query_completed``).
No value ever comes back to the researcher before release. A dummy query runs at once, in the
request, over the datasets' dummy twins, and its exact answer is kept on the query.
"""

import logging
import threading
import time
from datetime import timedelta

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
from environment.sandbox import OPTOUTS, open_sandbox, open_twin_sandbox
from environment.services import reap_dead_sandboxes
from tre.errors import Invalid, WrongState

from . import plans, results
from .language import LanguageError, contributions_sql, datasets_named, persons_sql, validate
from .models import TRANSITIONS, Query
from .personsets import serialize_uint64_sets
from .signals import query_completed

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # a query whose worker died twice is failed, not retried forever
HEARTBEAT_SECONDS = 1.0
HEARTBEAT_STALE = timedelta(seconds=settings.TRE_HEARTBEAT_STALE_SECONDS)  # a running attempt silent this long is dead
ENQUEUE_GRACE = timedelta(seconds=10)  # a queued query the broker never took is re-sent after this

# What the researcher is told of a failed real query: a closed set (DESIGN §5). Every internal
# code maps to one of these; the internal code and the engine's text go to logs and checkers.
GENERIC_ERRORS = {
    "time_limit": "the query ran past its time limit",
    "system_error": "the environment could not finish the query; the operators have been told",
}
# Internal failure codes (``Query.failure``), each shown to the researcher as one of the above.
FAILURES = {
    "time_limit": "time_limit",
    "engine_error": "system_error",
    "access_refused": "system_error",
    "worker_lost": "system_error",
    "no_data": "system_error",
    "store_error": "system_error",
    "system_error": "system_error",
}


# --- submission --------------------------------------------------------------------------------

def problem_text(problem) -> str:
    return f"{problem.rule} at line {problem.line}, column {problem.column}: {problem.message} — {problem.hint}"


def _language_error(exc: LanguageError) -> Invalid:
    """400 in DRF style: ``{"sql": ["<rule> at line L, column C: <message> — <hint>", …]}``, every problem."""
    return Invalid(fields={"sql": [problem_text(p) for p in exc.problems]})


def _plan(sql: str, datasets) -> tuple:
    dictionaries = {d.name.lower(): d.dictionary_object() for d in datasets}
    try:
        plan = validate(sql, dictionaries, max_cells=settings.TRE_MAX_RESULT_CELLS,
                        max_bytes=settings.TRE_MAX_QUERY_BYTES)
    except LanguageError as exc:
        raise _language_error(exc) from None
    tables = {name: name for name in plan.datasets}  # the sandbox names each dataset's view by its name
    return (plan, contributions_sql(plan, dialect="duckdb", tables=tables, optouts=OPTOUTS),
            persons_sql(plan, dialect="duckdb", tables=tables, optouts=OPTOUTS))


def query_submit(*, project, actor, sql, title: str = "", target: str = "real", request=None) -> Query:
    """Validate ``sql`` for ``project`` and create the query.

    Order: the dataset names are read from the text; the access decision (403 naming the rule);
    then every rule of the language against the datasets' dictionaries (400 ``{"sql": [...]}``,
    every problem; a grid over ``TRE_MAX_RESULT_CELLS`` is one of them). A real query is enqueued
    on commit; a dummy query runs at once over the dummy twins (``dummy_run``)."""
    if not isinstance(sql, str) or not sql.strip():
        raise Invalid(fields={"sql": ["a query is required"]})
    if target not in Query.Target.values:
        raise Invalid(fields={"target": [f"one of {', '.join(Query.Target.values)}"]})
    names = datasets_named(sql, max_bytes=settings.TRE_MAX_QUERY_BYTES)
    require_access(user=actor, project=project, datasets=names)
    datasets = list(Dataset.objects.filter(name__in=names).select_related("current_version"))
    plan, statement, contributors = _plan(sql, datasets)
    used = [d for d in datasets if d.name in plan.datasets]
    if target == Query.Target.REAL:
        empty = sorted(d.name for d in used if d.current_version_id is None)
        if empty:
            raise WrongState(f"dataset {', '.join(empty)} has no data loaded yet", rule="no_data")
    else:
        missing = sorted(d.name for d in used if d.current_twin_id is None)
        if missing:
            raise WrongState(f"dataset {', '.join(missing)} has no dummy twin yet", rule="no_twin")
    with transaction.atomic():
        query = Query.objects.create(
            project=project, submitted_by=actor, title=(title or "")[:200], sql=sql, target=target,
            plan=plans.plan_json(plan), contributions_sql=statement, contributors_sql=contributors,
            dataset_names=list(plan.datasets),
        )
        audit_record(actor=actor, action=AuditAction.QUERY_SUBMITTED, target=query, project=project.pk, request=request,
                     data={"datasets": query.dataset_names, "title": query.title, "target": target,
                           "grid_size": plan.grid_size})
        if target == Query.Target.REAL:
            transaction.on_commit(lambda: enqueue(query.pk))
    if target == Query.Target.DUMMY:
        query = dummy_run(query=query, actor=actor, request=request)
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
            target=query.target, plan=query.plan, contributions_sql=query.contributions_sql,
            contributors_sql=query.contributors_sql, dataset_names=query.dataset_names, rerun_of=query,
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
        shown = FAILURES.get(code, "system_error")
        query.failure, query.error_code, query.error = code, shown, GENERIC_ERRORS[shown]
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
            _finish(query, Query.Status.FAILED, code="access_refused", detail=f"{decision.message} (rule {decision.rule})", now=now)
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


def _person_sets(conn, query: Query) -> bytes:
    """Each populated cell's contributors as packed 64-bit person keys (``queries.personsets``),
    straight from an Arrow list buffer: no Python int per person."""
    n_keys = len(query.plan["keys"])
    keys = ", ".join(f'"k{i}"' for i in range(n_keys))
    select = f"{keys}, " if keys else ""
    group = f" GROUP BY {keys}" if keys else ""
    table = conn.sql(
        f"SELECT {select}list(DISTINCT CAST('0x' || substr(\"pid\", 1, 16) AS UBIGINT)) AS tre_person_keys "
        f"FROM ({query.contributors_sql}) AS c{group}").to_arrow_table()
    key_columns = [[plans.label(v) for v in table.column(i).to_pylist()] for i in range(n_keys)]
    persons = table.column("tre_person_keys").combine_chunks()
    if not isinstance(persons, pa.ListArray) or len(persons) == 0:
        return serialize_uint64_sets([])
    offsets = persons.offsets.to_pylist()
    flat = persons.values
    data = flat.buffers()[1]
    base = flat.offset * 8
    return serialize_uint64_sets(
        (tuple(column[i] for column in key_columns), data[base + offsets[i] * 8: base + offsets[i + 1] * 8].to_pybytes())
        for i in range(len(persons)))


def _contributions(conn, query: Query) -> list[dict]:
    cursor = conn.execute(query.contributions_sql)
    names = [d[0] for d in cursor.description]
    return plans.cells_from_rows(names, cursor.fetchall(), len(query.plan["keys"]))


def _execute(query: Query, sandbox) -> tuple[list[dict], bytes]:
    """Run the contributions statement, then the contributors' statement (for the differencing
    ledger); timings for checkers."""
    started = time.monotonic()
    cells = _contributions(sandbox.conn, query)
    engine_ms = (time.monotonic() - started) * 1000
    sets = _person_sets(sandbox.conn, query)
    query.timings = {**query.timings, "engine_ms": round(engine_ms),
                     "person_sets_ms": round((time.monotonic() - started) * 1000 - engine_ms)}
    return cells, sets


def run_query(*, query_id: int, now=None, task_id: str = "") -> Query | None:
    """Run one real query inside the environment (the Celery task's body). Idempotent."""
    query = _claim(query_id, now or timezone.now(), task_id)
    if query is None:
        return None
    t0 = time.monotonic()
    code, detail, cells, person_sets = "", "", [], b""
    watchdog = None
    try:
        datasets = list(Dataset.objects.filter(name__in=query.dataset_names))
        with open_sandbox(datasets) as sandbox:
            query.dataset_versions = dict(sandbox.versions)
            query.optout_watermark = sandbox.optout_watermark
            watchdog = _Watchdog(query.pk, sandbox.conn, settings.TRE_QUERY_SOFT_TIME_LIMIT)
            watchdog.start()
            try:
                cells, person_sets = _execute(query, sandbox)
            finally:
                watchdog.stop()
                _drop_dead_connection()  # before the sandbox releases its leases
    except duckdb.InterruptException as exc:
        code, detail = ("cancelled" if watchdog and watchdog.reason == "cancelled" else "time_limit"), str(exc)
    except duckdb.Error as exc:
        code, detail = "engine_error", f"{type(exc).__name__}: {exc}"
        log.warning("query %s failed in the engine: %s", query.pk, detail)
    except LookupError as exc:  # no current version of a dataset
        code, detail = "no_data", str(exc)
    if not code:
        try:
            results.write_result(query.pk, plans.columns(query.plan), cells)
            results.write_person_sets(query.pk, person_sets)
        except OSError as exc:
            code, detail = "store_error", str(exc)
            log.error("query %s: result not stored: %s", query.pk, exc)
    close_old_connections()
    _drop_dead_connection()
    return _complete(query, code=code, detail=detail, groups=len(cells), total_ms=(time.monotonic() - t0) * 1000)


# --- dummy runs ----------------------------------------------------------------------------------

def dummy_run(*, query: Query, actor, request=None) -> Query:
    """Run a dummy query at once over the datasets' dummy twins (small, made up): the exact answer
    over the whole grid, the engine's error if any and the timings are kept on the query and shown
    to the researcher. No output. Audited (``query.dummy_run``)."""
    started = timezone.now()
    t0 = time.monotonic()
    result, code, detail = None, "", ""
    try:
        datasets = list(Dataset.objects.filter(name__in=query.dataset_names).select_related("current_twin"))
        with open_twin_sandbox(datasets) as sandbox:
            cells = _contributions(sandbox.conn, query)
        columns, rows = plans.exact_table(query.plan, cells)
        result = {"columns": columns, "rows": rows}
    except duckdb.Error as exc:
        code, detail = "engine_error", f"{type(exc).__name__}: {exc}"
    except LookupError as exc:
        code, detail = "no_data", str(exc)
    total_ms = round((time.monotonic() - t0) * 1000)
    with transaction.atomic():
        locked = Query.objects.select_for_update().get(pk=query.pk)
        transitions.check(TRANSITIONS, locked, "start")
        locked.status, locked.started_at, locked.attempts = Query.Status.RUNNING, started, 1
        locked.timings = {"engine_ms": total_ms, "total_ms": total_ms}
        if code:
            _finish(locked, Query.Status.FAILED, code=code, detail=detail)
            locked.error = detail[:300]  # a dummy run's error is the engine's own: the twin holds no real value
            locked.save(update_fields=["error"])
        else:
            locked.result = result
            _finish(locked, Query.Status.COMPLETED)
        audit_record(actor=actor, action=AuditAction.QUERY_DUMMY_RUN, target=locked, project=locked.project_id,
                     request=request, data={"status": locked.status, "cells": len(result["rows"]) if result else 0,
                                            "total_ms": total_ms})
    return locked


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
            locked.result_groups = groups  # populated cells: checkers only
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
