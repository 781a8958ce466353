"""Every write of an output, its reviews and its released person sets.

Each service runs in one transaction, locks the output row, checks the state (409), writes, and
records its audit event in the same transaction: if anything fails, nothing changed. Who may act
(403) is checked by the API through ``outputs.policies`` before the service runs, and again here
where it guards the data (review eligibility).

Lifecycle (DESIGN.md §3): ``pending → submitted → released | rejected | returned``;
``pending/returned → submitted`` (a new round) or ``→ withdrawn``; an unreleased output whose inputs
an opt-out changed becomes ``stale`` and its query is re-run.
"""

import dataclasses
import logging
from datetime import date, datetime, time
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from audit import transitions
from audit.actions import AuditAction
from audit.services import audit_record
from environment.models import Dataset, OptOut
from queries.personsets import deserialize_sets
from queries.results import read_person_sets, read_result
from queries.services import query_rerun
from tre import rounds
from tre.errors import Invalid, WrongState

from . import policies
from .models import TRANSITIONS, Output, OutputReview, ReleasedPersonSets
from .sdc import SdcParams, apply_sdc, find_differencing
from .selectors import pick_columns, raw_table

log = logging.getLogger(__name__)

S = Output.Status
Vote = OutputReview.Decision


# --- SDC at creation ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Column:
    """What ``apply_sdc`` reads of a query's output column (``Query.column_plan`` holds dicts)."""

    name: str
    kind: str
    top1: str | None = None
    top2: str | None = None
    total: str | None = None




def sdc_params_for() -> SdcParams:
    """The SDC rules in force, from settings (``TRE_SDC_*``)."""
    return SdcParams(threshold=settings.TRE_SDC_THRESHOLD, rounding_base=settings.TRE_SDC_ROUNDING_BASE,
                     nk_n=settings.TRE_SDC_NK_N, nk_k=settings.TRE_SDC_NK_K, p_percent=settings.TRE_SDC_P_PERCENT,
                     zeros_disclosive=settings.TRE_SDC_ZEROS_DISCLOSIVE)


def as_result_key(value):
    """A key value as the result file stores it (``queries.results``): what a person-set key and a
    raw row's key are compared as."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, tuple):
        return [as_result_key(v) for v in value]
    return value


def _released_sets(project_id: int):
    for row in ReleasedPersonSets.objects.filter(project_id=project_id).order_by("output_id").iterator():
        yield row.output_id, deserialize_sets(bytes(row.blob))


def _differencing(query, params: SdcParams) -> list[dict]:
    if not ReleasedPersonSets.objects.filter(project_id=query.project_id).exists():
        return []  # nothing released yet: nothing to difference against
    blob = read_person_sets(query.pk)
    if not blob:
        log.warning("query %s: no person sets in the store; differencing not checked", query.pk)
        return []
    new_sets = deserialize_sets(blob)
    return find_differencing(new_sets, _released_sets(query.project_id), params.threshold)


def _key_index(columns: list[_Column], raw: list[list]) -> dict[tuple, int]:
    keys = [i for i, c in enumerate(columns) if c.kind == "key"]
    return {_hashable(as_result_key(tuple(row[k] for k in keys))): r for r, row in enumerate(raw)}


def _hashable(value):
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


@transaction.atomic
def output_create_for_query(*, query) -> Output:
    """The output of a completed query: disclosure control of its raw result (which stays in the
    store), differencing against the project's released outputs, status ``pending``. Called by the
    query task inside the transaction that marks the query completed. Idempotent: a query's
    output is made once."""
    existing = Output.objects.filter(query_id=query.pk).first()
    if existing is not None:
        return existing
    columns = [_Column(name=c["name"], kind=c["kind"], top1=c.get("top1"), top2=c.get("top2"), total=c.get("total"))
               for c in query.column_plan]
    result_columns, rows = read_result(query.pk)
    # Non-finite floats (NaN from an engine) read as null statistics; JSON columns cannot hold them.
    rows = pick_columns(result_columns, rows, list(result_columns))
    params = sdc_params_for()

    findings = _differencing(query, params)
    names = [c.name for c in columns]
    row_of = _key_index(columns, pick_columns(result_columns, rows, names)) if findings else {}
    stored, matched, unmatched = [], [], 0
    for finding in findings:
        group = as_result_key(tuple(finding["group"]))
        row = row_of.get(_hashable(group))
        if row is None:
            unmatched += 1
        else:
            matched.append({"row": row})
        stored.append({"group": group, "row": row, "released_output": finding["released_output"],
                       "released_group": as_result_key(tuple(finding["released_group"])),
                       "difference": finding["difference"]})
    if unmatched:
        log.error("query %s: %d differencing finding(s) name groups not in the result", query.pk, unmatched)

    result = apply_sdc(columns, result_columns, rows, params, matched)
    status = Output.SdcStatus.REVIEW if stored else result.status
    output = Output.objects.create(
        query=query, project_id=query.project_id, status=S.PENDING, sdc_status=status, sdc_summary=result.summary,
        sdc_params=dataclasses.asdict(params), columns=names, column_kinds=[c.kind for c in columns],
        safe=result.safe, flags=result.flags, differencing=stored,
    )
    audit_record(actor=None, action=AuditAction.OUTPUT_CREATED, target=output,
           data={"query": query.pk, "sdc_status": output.sdc_status, "summary": output.sdc_summary,
                 "groups": len(rows)})
    missed = _optouts_after_run(query)
    if missed is not None:
        # Opt-outs registered while the query ran were not excluded by its sandbox, and the signal
        # for them came before this output existed: it is stale from the start.
        _mark_stale(output, datasets=sorted({str(n).lower() for n in query.dataset_names or []}), registered_at=missed,
                    actor=None)
        output.refresh_from_db()
    return output


def _optouts_after_run(query):
    """When the newest opt-out the query's sandbox did not exclude was registered (None if there is
    none). Conservative: any such opt-out counts, whatever dataset its person is in (rare: only
    while a query runs), at the price of a re-run."""
    if query.optout_watermark is None:
        return None
    return (OptOut.objects.filter(pk__gt=query.optout_watermark).order_by("-pk")
            .values_list("registered_at", flat=True).first())


# --- the researcher's transitions --------------------------------------------------------------

def _lock(output) -> Output:
    # of=("self",): lock the output row only, never the joined project/query rows (lock order vs the audit lock)
    return Output.objects.select_for_update(of=("self",)).select_related("project", "query").get(pk=output.pk)


@transaction.atomic
def output_request_release(*, output, actor, comment: str = "", request=None, now=None) -> Output:
    """``pending``/``returned`` → ``submitted``: the output enters the checkers' queue; a new round."""
    output = _lock(output)
    policies.require_member(actor, output, "request its release")
    next_round = output.round + 1
    return transitions.apply(TRANSITIONS, output, "request_release", actor=actor, request=request,
                             fields={"round": next_round, "requested_at": now or timezone.now(),
                                     "request_comment": comment or ""},
                             data={"round": next_round, "comment": comment or ""})


@transaction.atomic
def output_withdraw(*, output, actor, comment: str = "", request=None, now=None) -> Output:
    """``pending``/``returned`` → ``withdrawn`` (final)."""
    output = _lock(output)
    policies.require_member(actor, output, "withdraw it")
    return transitions.apply(TRANSITIONS, output, "withdraw", actor=actor, request=request,
                             fields={"withdrawn_at": now or timezone.now()},
                             data={"round": output.round, "comment": comment or ""})


# --- the checkers' votes -----------------------------------------------------------------------

def _ballots(output) -> list[rounds.Ballot]:
    """This round's votes, each with its checker's eligibility checked again now."""
    votes = (OutputReview.objects.filter(output=output, round=output.round)
             .select_related("checker").order_by("created_at", "id"))
    return [rounds.Ballot(voter=v.checker.get_username(), decision=v.decision,
                          eligible=policies.checker_eligible(v.checker, output)) for v in votes]


@transaction.atomic
def output_review(*, output, actor, decision: str, comment: str, request=None, now=None) -> Output:
    """One eligible checker's vote in the current round (only while ``submitted``; once per round).

    ``reject`` rejects (final); ``return`` returns it to the researcher (a new request starts a new
    round); ``TRE_OUTPUT_APPROVALS`` approvals by distinct checkers release it (tre/rounds.py)."""
    comment = (comment or "").strip()
    if not comment:
        raise Invalid(fields={"comment": ["a vote needs a comment"]})
    if decision not in Vote.values:
        raise Invalid(fields={"decision": [f"one of {', '.join(Vote.values)}"]})
    output = _lock(output)
    policies.require_eligible_checker(actor, output)
    policies.require_status(output, (S.SUBMITTED,), "be reviewed")
    if OutputReview.objects.filter(output=output, checker=actor, round=output.round).exists():
        raise WrongState(f"you have already voted in round {output.round} of this output", status=output.status)
    try:
        with transaction.atomic():
            OutputReview.objects.create(output=output, checker=actor, decision=decision, comment=comment,
                                        round=output.round)
    except IntegrityError:  # a concurrent duplicate that slipped past the check above
        raise WrongState(f"you have already voted in round {output.round} of this output", status=output.status) from None
    audit_record(actor=actor, action=AuditAction.OUTPUT_REVIEWED, target=output, request=request,
                 data={"decision": decision, "round": output.round, "comment": comment})
    now = now or timezone.now()
    result = rounds.tally(_ballots(output), rule=rounds.Rule.FIRST_OBJECTION, required=settings.TRE_OUTPUT_APPROVALS)
    if result.outcome == rounds.Outcome.REJECTED:
        transitions.apply(TRANSITIONS, output, "reject", actor=actor, request=request, fields={"decided_at": now},
                          data={"round": output.round, "comment": comment})
    elif result.outcome == rounds.Outcome.RETURNED:
        transitions.apply(TRANSITIONS, output, "return", actor=actor, request=request, fields={"decided_at": now},
                          data={"round": output.round, "comment": comment})
    elif result.outcome == rounds.Outcome.APPROVED:
        _release(output, actor=actor, approvers=list(result.approvers), comment=comment, request=request, now=now)
    return output


def _release(output, *, actor, approvers, comment, request, now) -> None:
    blob = read_person_sets(output.query_id)
    groups = len(deserialize_sets(blob)) if blob else 0
    transitions.apply(TRANSITIONS, output, "release", actor=actor, request=request,
                      fields={"released_at": now, "decided_at": now},
                      data={"round": output.round, "approvers": approvers, "comment": comment,
                            "sdc_status": output.sdc_status, "summary": output.sdc_summary,
                            "differencing_groups_stored": groups})
    if blob:
        ReleasedPersonSets.objects.create(project_id=output.project_id, output=output, blob=blob, groups=groups)
    else:
        log.warning("output %s released without person sets: later outputs cannot be checked against it",
                    output.pk)


# --- what the API serves, audited --------------------------------------------------------------

@transaction.atomic
def output_raw_viewed(*, output, actor, request=None) -> tuple[list[str], list[list]]:
    """The raw table for a checker's view, with the ``output.raw_viewed`` event that every view of
    a raw output leaves. The caller has checked that ``actor`` sees the checker view."""
    columns, rows = raw_table(output)
    audit_record(actor=actor, action=AuditAction.OUTPUT_RAW_VIEWED, target=output, request=request,
           data={"status": output.status, "round": output.round})
    return columns, rows


@transaction.atomic
def output_downloaded(*, output, actor, file_format: str, request=None) -> None:
    """Audits a download (``output.downloaded``); 409 unless the output is released. The caller
    has checked that ``actor`` is a member holding ``view_output``."""
    output = Output.objects.select_for_update().get(pk=output.pk)
    policies.require_status(output, (S.RELEASED,), "be downloaded")
    audit_record(actor=actor, action=AuditAction.OUTPUT_DOWNLOADED, target=output, request=request,
           data={"file_format": file_format})


# --- opt-outs ----------------------------------------------------------------------------------

def mark_stale_for_datasets(*, dataset_ids, registered_at, actor=None) -> list[Output]:
    """Outputs not yet released (pending, submitted, returned) whose query read any of
    ``dataset_ids`` and started before ``registered_at`` become ``stale``, and their queries are
    re-run (``queries.services.query_rerun``). One transaction per output, so one failure does not
    keep the others from going stale. Returns the outputs marked."""
    names = {n.lower() for n in Dataset.objects.filter(pk__in=list(dataset_ids)).values_list("name", flat=True)}
    if not names:
        return []
    candidates = (Output.objects.filter(status__in=Output.UNRELEASED)
                  .filter(Q(query__started_at__lt=registered_at)
                          | Q(query__started_at__isnull=True, query__finished_at__lt=registered_at))
                  .select_related("query").order_by("id"))
    marked = []
    for candidate in candidates:
        read = {str(n).lower() for n in candidate.query.dataset_names or []}
        if not read & names:
            continue
        output = _mark_stale(candidate, datasets=sorted(read & names), registered_at=registered_at, actor=actor)
        if output is not None:
            marked.append(output)
    return marked


@transaction.atomic
def _mark_stale(output, *, datasets, registered_at, actor) -> Output | None:
    output = _lock(output)
    if output.status not in Output.UNRELEASED:  # released or withdrawn meanwhile
        return None
    previous = output.status
    rerun_id = query_rerun(query=output.query, actor=actor, reason="stale").pk
    return transitions.apply(TRANSITIONS, output, "mark_stale", actor=actor, fields={"stale_at": timezone.now()},
                             data={"previous_status": previous, "datasets": datasets,
                                   "optouts_registered_at": registered_at, "rerun_query": rerun_id,
                                   "comment": "an opt-out changed the data this output was computed from"})
