"""Every write of an output, its reviews and its released person sets.

Each service runs in one transaction, locks the output row, checks the state (409), writes, and
records its audit event in the same transaction: if anything fails, nothing changed. Who may act
(403) is checked by the API through ``outputs.policies`` before the service runs, and again here
where it guards the data (review eligibility).

Lifecycle (DESIGN.md §3): ``pending → submitted → released | rejected | returned``;
``pending/returned → submitted`` (a new round) or ``→ withdrawn``; an unreleased output whose inputs
an opt-out changed becomes ``stale`` and its query is re-run.
"""

import logging
import math
from itertools import product

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
from .differencing import find_differencing
from .disclosure import MEASURE_KINDS, DisclosureParams, Grid, Statistic, apply_disclosure
from .models import TRANSITIONS, Output, OutputReview, ReleasedPersonSets

log = logging.getLogger(__name__)

S = Output.Status
Vote = OutputReview.Decision


# --- disclosure control at creation ------------------------------------------------------------

# A dataset's ``protection`` may name these (its own names or the parameters'); only stricter values apply.
_PROTECTION = {"threshold": "threshold", "ckm_d": "ckm_d", "ckm_v": "ckm_v", "magnitude_a": "magnitude_a",
               "magnitude_b": "magnitude_b", "nk_n": "nk_n", "nk_k": "nk_k", "p_percent": "p_percent",
               "d": "ckm_d", "v": "ckm_v"}


def disclosure_params_for(dataset_names) -> DisclosureParams:
    """The parameters in force for a query over ``dataset_names``: the settings (``TRE_SDC_*``,
    ``TRE_CKM_*``), made stricter — never looser — by each dataset's ``protection``."""
    params = DisclosureParams.from_settings(settings)
    for protection in Dataset.objects.filter(name__in=list(dataset_names)).values_list("protection", flat=True):
        overrides = {_PROTECTION[k]: v for k, v in (protection or {}).items()
                     if k in _PROTECTION and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if overrides:
            params = params.stricter(**overrides)
    return params


def grid_of(plan: dict) -> Grid:
    """The disclosure grid of a stored plan (``queries.plans.plan_json``)."""
    return Grid(keys=tuple(k["name"] for k in plan["keys"]),
                domains=tuple(tuple(k["domain"]) for k in plan["keys"]),
                statistics=tuple(Statistic(s["name"], s["kind"], s["measure"] if s["kind"] in MEASURE_KINDS else None)
                                 for s in plan["statistics"]),
                one_row_per_person=bool(plan["one_row_per_person"]))


def _released_sets(project_id: int):
    for row in ReleasedPersonSets.objects.filter(project_id=project_id).order_by("output_id").iterator():
        yield row.output_id, deserialize_sets(bytes(row.blob))


def _differencing(query, params: DisclosureParams) -> list[dict]:
    if not ReleasedPersonSets.objects.filter(project_id=query.project_id).exists():
        return []  # nothing released yet: nothing to difference against
    blob = read_person_sets(query.pk)
    if not blob:
        log.warning("query %s: no person sets in the store; differencing not checked", query.pk)
        return []
    return find_differencing(deserialize_sets(blob), _released_sets(query.project_id), params.threshold,
                             min_size=params.threshold - params.ckm_d)


RELEASED_DIGITS = 10  # significant digits of a released float (it carries noise far larger than this)


def _released(value):
    """A released float to ``RELEASED_DIGITS`` significant digits: sums of doubles depend on the
    engine's order of summation in the last bits, and a re-run must release the same table."""
    if isinstance(value, float) and math.isfinite(value) and value != 0:
        return round(value, RELEASED_DIGITS - 1 - math.floor(math.log10(abs(value))))
    return value


def _json_rows(rows, *, released: bool = False) -> list[list]:
    if released:
        return [[_released(v) for v in row] for row in rows]
    return [list(row) for row in rows]


@transaction.atomic
def output_create_for_query(*, query) -> Output:
    """The output of a completed real query: disclosure control (``outputs.disclosure``) of its
    cells (read from the store), with the differencing findings against the project's released
    outputs; status ``pending``. Called inside the transaction that marks the query completed.
    Idempotent: a query's output is made once."""
    existing = Output.objects.filter(query_id=query.pk).first()
    if existing is not None:
        return existing
    _, cells = read_result(query.pk)
    grid = grid_of(query.plan)
    params = disclosure_params_for(query.dataset_names)
    findings = _differencing(query, params)
    keys = {tuple(c["key"]) for c in cells}
    found = []
    for finding in findings:
        group = list(finding["group"])
        finding["group"] = group
        finding["released_group"] = list(finding["released_group"])
        if tuple(group) in keys:
            found.append(tuple(group))
    result = apply_disclosure(grid, [{**c, "key": tuple(c["key"])} for c in cells], params, findings=found)
    order = {key: r for r, key in enumerate(_grid_keys(grid))}
    stored = [{**f, "row": order.get(tuple(f["group"]))} for f in findings]
    output = Output.objects.create(
        query=query, project_id=query.project_id, status=S.PENDING, sdc_status=result.sdc["status"],
        sdc_summary=result.sdc["summary"], sdc_params=result.sdc["settings"], columns=list(result.columns),
        column_kinds=["key"] * len(grid.keys) + [st.kind for st in grid.statistics],
        raw=_json_rows(result.raw), safe=_json_rows(result.safe, released=True),
        flags=[{name: list(rules) for name, rules in row.items()} for row in result.flags], differencing=stored,
    )
    audit_record(actor=None, action=AuditAction.OUTPUT_CREATED, target=output,
                 data={"query": query.pk, "sdc_status": output.sdc_status, "summary": output.sdc_summary,
                       "cells": grid.size})
    missed = _optouts_after_run(query)
    if missed is not None:
        # Opt-outs registered while the query ran were not excluded by its sandbox, and the signal
        # for them came before this output existed: it is stale from the start.
        _mark_stale(output, datasets=sorted({str(n).lower() for n in query.dataset_names or []}), registered_at=missed,
                    actor=None)
        output.refresh_from_db()
    return output


def _grid_keys(grid: Grid):
    return product(*grid.domains) if grid.keys else [()]


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
def output_raw_viewed(*, output, actor, request=None) -> None:
    """The ``output.raw_viewed`` event that every checker view of an output (its exact ``raw``
    table) leaves. The caller has checked that ``actor`` sees the checker view."""
    audit_record(actor=actor, action=AuditAction.OUTPUT_RAW_VIEWED, target=output, request=request,
                 data={"status": output.status, "round": output.round})


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
