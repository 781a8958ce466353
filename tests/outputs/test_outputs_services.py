"""outputs.services: creation (SDC, differencing, parameters), the lifecycle, the audit trail, and
stale marking after opt-outs. Outputs are made without the worker: a completed Query row and its
raw result written to the store (tests.factories.CompletedQueryFactory)."""

import datetime as dt

import pytest
from django.utils import timezone

from audit import transitions
from audit.models import AuditEvent
from outputs import services
from outputs.models import Output, OutputReview, ReleasedPersonSets
from queries.models import Query
from tests.factories import (
    CompletedQueryFactory,
    DatasetFactory,
    OutputFactory,
    ProjectFactory,
    UserFactory,
    count_cell,
    count_plan,
)
from tre.errors import Forbidden, Invalid, WrongState

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def events(action, output=None):
    qs = AuditEvent.objects.filter(action=action)
    if output is not None:
        qs = qs.filter(target_type="output", target_id=str(output.pk))
    return list(qs.order_by("seq"))


def persons(start, count):
    return list(range(start, start + count))


@pytest.fixture
def project():
    return ProjectFactory(status="approved", members=[UserFactory()])


@pytest.fixture
def checkers():
    return [UserFactory(role="output_checker") for _ in range(3)]


# --- creation ------------------------------------------------------------------------------------

def test_create_applies_disclosure_control_and_keeps_values_out_of_the_audit(project):
    output = OutputFactory(project=project)

    assert output.status == "pending" and output.sdc_status == "suppressed" and output.round == 0
    assert output.project_id == project.pk
    assert output.columns == ["region", "n"] and output.column_kinds == ["key", "count_persons"]
    # the full grid sorted by key; east (4 persons) is withheld on its perturbed count; the others perturbed
    assert [row[0] for row in output.safe] == ["east", "north", "south"]
    assert output.safe[0] == ["east", None] and all(row[1] is not None for row in output.safe[1:])
    assert output.raw == [["east", 4, 4], ["north", 23, 23], ["south", 12, 12]]  # exact, with contributors
    assert all(abs(safe[1] - raw[1]) <= 3 for safe, raw in zip(output.safe[1:], output.raw[1:], strict=False))  # D = 3
    assert output.flags == [{"n": ["threshold"]}, {}, {}]
    assert output.sdc_summary == {"threshold": 1, "nk_dominance": 0, "p_percent": 0, "differencing": 0}
    assert output.sdc_params["threshold"] == 10 and output.sdc_params["ckm_d"] == 3 and output.sdc_params["ckm_v"] == 2
    [event] = events("output.created", output)
    assert event.actor == "" and event.project == project.pk
    assert event.data == {"query": output.query_id, "sdc_status": "suppressed", "summary": output.sdc_summary,
                          "cells": 3}
    assert "north" not in str(event.data)


def test_create_is_idempotent_and_deterministic(project):
    cells = [count_cell(["north"], 41), count_cell(["south"], 32), count_cell(["east"], 25)]
    query = CompletedQueryFactory(project=project, cells=cells)
    first = services.output_create_for_query(query=query)
    again = services.output_create_for_query(query=query)
    assert again.pk == first.pk and Output.objects.filter(query=query).count() == 1
    assert first.sdc_status == "pass" and len(events("output.created", first)) == 1
    # the same contributors in another query: the same released values
    other = OutputFactory(project=project, cells=cells)
    assert other.safe == first.safe


def test_dominance_on_sums_flags_but_withholds_nothing(project):
    plan = count_plan()
    plan["statistics"] = [{"name": "n", "kind": "count_persons", "measure": None},
                          {"name": "cost", "kind": "sum", "measure": 1}]
    plan["one_row_per_person"] = True

    def cell(key, n, total, top1, top2):
        return {**count_cell([key], n), "m1_n": n, "m1_persons": n, "m1_ckey": 5, "m1_ckey2": 99, "m1_sum": total,
                "m1_sumsq": total * total, "m1_top1": top1, "m1_top2": top2, "m1_sqtop1": top1 * top1}
    cells = [cell("north", 50, 1000.0, 950.0, 20.0),   # top 2 = 97% of the sum -> nk + p%
             cell("south", 40, 400.0, 30.0, 20.0), cell("east", 30, 300.0, 20.0, 20.0)]
    output = OutputFactory(project=project, plan=plan, cells=cells)

    assert output.sdc_status == "review"
    assert output.flags[1] == {"cost": ["nk_dominance", "p_percent"]}  # north: flagged for checkers
    assert all(value is not None for row in output.safe for value in row)  # nothing withheld
    assert output.raw[1][2] == 1000.0 and output.safe[1][2] != 1000.0  # the sum is perturbed


def test_the_rules_in_force_come_from_settings_and_datasets(project, settings):
    settings.TRE_SDC_THRESHOLD = 5
    query = CompletedQueryFactory(project=project, cells=[count_cell(["north"], 23), count_cell(["south"], 12),
                                                          count_cell(["east"], 7)])
    output = services.output_create_for_query(query=query)
    assert output.sdc_params["threshold"] == 5
    dataset = DatasetFactory(protection={"threshold": 20})
    query = CompletedQueryFactory(project=project, datasets=[dataset.name])
    assert services.output_create_for_query(query=query).sdc_params["threshold"] == 20  # stricter, never looser
    dataset.protection = {"threshold": 2}
    dataset.save()
    query = CompletedQueryFactory(project=project, datasets=[dataset.name])
    assert services.output_create_for_query(query=query).sdc_params["threshold"] == 5


# --- differencing --------------------------------------------------------------------------------

def test_differencing_against_released_outputs_of_the_project(project, checkers):
    cells = [count_cell(["north"], 40), count_cell(["south"], 30)]
    sets = {("north",): persons(0, 40), ("south",): persons(1000, 30)}
    released = OutputFactory(project=project, cells=cells, person_sets=sets, status="released")
    stored = ReleasedPersonSets.objects.get(output=released)
    assert stored.project_id == project.pk and stored.groups == 2

    # the same cells, but "north" now lacks 2 persons: differencing would reveal them
    new_sets = {("north",): persons(0, 38), ("south",): persons(1000, 30)}
    new_cells = [count_cell(["north"], 38), count_cell(["south"], 30)]
    output = OutputFactory(project=project, cells=new_cells, person_sets=new_sets)

    assert output.sdc_status == "review"
    assert output.differencing == [{"group": ["north"], "row": 1, "released_output": released.pk,
                                    "released_group": ["north"], "difference": 2}]
    assert output.flags[1] == {"n": ["differencing"]} and output.flags[2] == {}
    assert output.sdc_summary["differencing"] == 1
    # another project's released outputs are not compared (yet: a later issue widens it)
    other = OutputFactory(project=ProjectFactory(status="approved"), cells=new_cells, person_sets=new_sets)
    assert other.differencing == [] and other.sdc_summary["differencing"] == 0


def test_differencing_matches_date_keys(project):
    plan = count_plan(key="month", domain=("2024-01-01", "2024-02-01"))
    OutputFactory(project=project, plan=plan, cells=[count_cell(["2024-01-01"], 40)],
                  person_sets={("2024-01-01",): persons(0, 40)}, status="released")
    output = OutputFactory(project=project, plan=plan, cells=[count_cell(["2024-01-01"], 41)],
                           person_sets={("2024-01-01",): persons(0, 41)})
    assert output.sdc_status == "review" and output.differencing[0]["row"] == 0
    assert output.differencing[0]["group"] == ["2024-01-01"]


# --- the lifecycle -------------------------------------------------------------------------------

def test_request_release_starts_a_round_and_is_audited(project):
    output = OutputFactory(project=project)
    member = project.lead
    output = services.output_request_release(output=output, actor=member, comment="for the paper")

    assert output.status == "submitted" and output.round == 1 and output.requested_at is not None
    [event] = events("output.release_requested", output)
    assert event.actor == member.username and event.data == {"round": 1, "comment": "for the paper"}
    with pytest.raises(WrongState):
        services.output_request_release(output=output, actor=member)


def test_request_release_needs_a_member_with_view_output(project, checkers):
    output = OutputFactory(project=project)
    with pytest.raises(Forbidden) as refused:
        services.output_request_release(output=output, actor=checkers[0])
    assert refused.value.extra["rule"] == "project_member_only"


def test_two_distinct_approvals_release(project, checkers):
    output = OutputFactory(project=project, status="submitted")
    output = services.output_review(output=output, actor=checkers[0], decision="approve", comment="fine")
    assert output.status == "submitted" and not events("output.released", output)

    output = services.output_review(output=output, actor=checkers[1], decision="approve", comment="also fine")
    assert output.status == "released" and output.released_at is not None
    [event] = events("output.released", output)
    assert event.actor == checkers[1].username
    assert event.data["approvers"] == [checkers[0].username, checkers[1].username] and event.data["round"] == 1
    assert [e.data["decision"] for e in events("output.reviewed", output)] == ["approve", "approve"]


def test_one_approval_releases_when_configured(project, checkers, settings):
    settings.TRE_OUTPUT_APPROVALS = 1
    output = OutputFactory(project=project, status="submitted")
    output = services.output_review(output=output, actor=checkers[0], decision="approve", comment="fine")
    assert output.status == "released"


def test_a_repeated_vote_is_409_and_changes_nothing(project, checkers):
    output = OutputFactory(project=project, status="submitted")
    services.output_review(output=output, actor=checkers[0], decision="approve", comment="fine")
    before = AuditEvent.objects.count()
    with pytest.raises(WrongState):
        services.output_review(output=output, actor=checkers[0], decision="reject", comment="changed my mind")
    output.refresh_from_db()
    assert output.status == "submitted" and AuditEvent.objects.count() == before
    assert list(OutputReview.objects.filter(output=output).values_list("decision", flat=True)) == ["approve"]


def test_reject_is_final(project, checkers):
    output = OutputFactory(project=project, status="submitted")
    output = services.output_review(output=output, actor=checkers[0], decision="reject", comment="disclosive")
    assert output.status == "rejected"
    [event] = events("output.rejected", output)
    assert event.actor == checkers[0].username and event.data == {"round": 1, "comment": "disclosive"}
    for action in (lambda: services.output_request_release(output=output, actor=project.lead),
                   lambda: services.output_withdraw(output=output, actor=project.lead),
                   lambda: services.output_review(output=output, actor=checkers[1], decision="approve", comment="x")):
        with pytest.raises(WrongState):
            action()


def test_return_then_a_new_round_or_withdrawal(project, checkers):
    output = OutputFactory(project=project, status="submitted")
    services.output_review(output=output, actor=checkers[0], decision="approve", comment="fine")
    output = services.output_review(output=output, actor=checkers[1], decision="return", comment="explain the rows")
    assert output.status == "returned" and output.round == 1
    assert events("output.returned", output)[0].data == {"round": 1, "comment": "explain the rows"}

    output = services.output_request_release(output=output, actor=project.lead, comment="explained")
    assert output.status == "submitted" and output.round == 2
    # round 1's approval does not count in round 2; the same checker may vote again
    output = services.output_review(output=output, actor=checkers[0], decision="approve", comment="still fine")
    assert output.status == "submitted"
    output = services.output_review(output=output, actor=checkers[2], decision="approve", comment="fine")
    assert output.status == "released"

    returned = OutputFactory(project=project, status="returned")
    returned = services.output_withdraw(output=returned, actor=project.lead, comment="not needed")
    assert returned.status == "withdrawn" and returned.withdrawn_at is not None
    assert events("output.withdrawn", returned)[0].data == {"round": 1, "comment": "not needed"}


def test_withdraw_only_from_pending_or_returned(project):
    pending = OutputFactory(project=project)
    assert services.output_withdraw(output=pending, actor=project.lead).status == "withdrawn"
    submitted = OutputFactory(project=project, status="submitted")
    with pytest.raises(WrongState):
        services.output_withdraw(output=submitted, actor=project.lead)


def test_review_rules(project, checkers):
    output = OutputFactory(project=project, status="submitted")
    conflicted = UserFactory(role="output_checker")
    from projects import services as project_services
    project_services.project_member_add(project=project, actor=project.lead, username=conflicted.username)

    with pytest.raises(Forbidden) as refused:
        services.output_review(output=output, actor=conflicted, decision="approve", comment="mine")
    assert refused.value.extra["rule"] == "checker_project_member"
    with pytest.raises(Forbidden) as refused:
        services.output_review(output=output, actor=UserFactory(role="dac"), decision="approve", comment="x")
    assert refused.value.extra["rule"] == "role_output_checkers"
    with pytest.raises(Invalid):
        services.output_review(output=output, actor=checkers[0], decision="approve", comment="  ")
    assert not OutputReview.objects.filter(output=output).exists()

    pending = OutputFactory(project=project)
    with pytest.raises(WrongState):
        services.output_review(output=pending, actor=checkers[0], decision="approve", comment="too early")


def test_a_refused_audit_event_rolls_the_vote_back(project, checkers):
    output = OutputFactory(project=project, status="submitted")
    with pytest.raises(Invalid):  # a 10-digit number looks like an NHS number: never audited
        services.output_review(output=output, actor=checkers[0], decision="reject", comment="row 9434765919 is odd")
    output.refresh_from_db()
    assert output.status == "submitted" and not OutputReview.objects.filter(output=output).exists()


def test_released_person_sets_roll_back_with_a_failed_release(project, checkers, monkeypatch):
    output = OutputFactory(project=project, status="submitted", person_sets={("north",): persons(0, 23)})
    services.output_review(output=output, actor=checkers[0], decision="approve", comment="fine")

    def broken(**kwargs):
        if kwargs.get("action") == "output.released":
            raise RuntimeError("audit down")
        return original(**kwargs)

    original = transitions.audit_record
    monkeypatch.setattr(transitions, "audit_record", broken)
    with pytest.raises(RuntimeError):
        services.output_review(output=output, actor=checkers[1], decision="approve", comment="fine")
    output.refresh_from_db()
    assert output.status == "submitted" and not ReleasedPersonSets.objects.exists()
    assert OutputReview.objects.filter(output=output).count() == 1


def test_raw_view_and_download_are_audited(project, checkers):
    output = OutputFactory(project=project, status="submitted")
    services.output_raw_viewed(output=output, actor=checkers[0])
    assert events("output.raw_viewed", output)[0].actor == checkers[0].username

    with pytest.raises(WrongState):
        services.output_downloaded(output=output, actor=project.lead, file_format="csv")
    assert not events("output.downloaded")


# --- stale after opt-outs ------------------------------------------------------------------------

@pytest.fixture
def recorded_reruns(monkeypatch):
    """Records calls of queries.services.query_rerun (as outputs calls it), and still makes a real
    re-run Query row."""
    calls = []

    def rerun(*, query, actor=None, reason="stale"):
        calls.append((query.pk, actor, reason))
        return Query.objects.create(project=query.project, submitted_by=query.submitted_by, sql=query.sql,
                                    plan=query.plan, contributions_sql=query.contributions_sql,
                                    contributors_sql=query.contributors_sql, dataset_names=query.dataset_names,
                                    rerun_of=query)

    monkeypatch.setattr(services, "query_rerun", rerun)
    return calls


def test_opt_out_makes_unreleased_outputs_of_its_datasets_stale(recorded_reruns):
    touched, untouched = DatasetFactory(name="gp_visits"), DatasetFactory(name="prescriptions")
    project = ProjectFactory(status="approved", datasets=[touched, untouched])
    before = timezone.now() - dt.timedelta(hours=1)
    registered_at = timezone.now()
    outputs = {status: OutputFactory(project=project, status=status, datasets=["gp_visits"], started_at=before)
               for status in ("pending", "submitted", "returned", "released", "withdrawn", "rejected")}
    other_dataset = OutputFactory(project=project, datasets=["prescriptions"], started_at=before)
    ran_after = OutputFactory(project=project, datasets=["gp_visits"],
                              started_at=registered_at + dt.timedelta(seconds=1))

    marked = services.mark_stale_for_datasets(dataset_ids=[touched.pk], registered_at=registered_at)

    assert sorted(o.pk for o in marked) == sorted(outputs[s].pk for s in ("pending", "submitted", "returned"))
    for status, output in outputs.items():
        output.refresh_from_db()
        assert output.status == ("stale" if status in ("pending", "submitted", "returned") else status)
    for output in (other_dataset, ran_after):
        output.refresh_from_db()
        assert output.status == "pending"
    assert sorted(q for q, _, _ in recorded_reruns) == sorted(outputs[s].query_id for s in ("pending", "submitted",
                                                                                          "returned"))
    assert all(reason == "stale" and actor is None for _, actor, reason in recorded_reruns)
    event = events("output.stale", outputs["submitted"])[0]
    assert event.data["previous_status"] == "submitted" and event.data["datasets"] == ["gp_visits"]
    assert event.data["rerun_query"] == Query.objects.get(rerun_of=outputs["submitted"].query).pk

    # a second signal for the same datasets changes nothing more
    assert services.mark_stale_for_datasets(dataset_ids=[touched.pk], registered_at=registered_at) == []


def test_the_real_rerun_makes_a_new_query(project):
    dataset = project.datasets.first()
    output = OutputFactory(project=project, started_at=timezone.now() - dt.timedelta(minutes=5))
    services.mark_stale_for_datasets(dataset_ids=[dataset.pk], registered_at=timezone.now())
    output.refresh_from_db()
    assert output.status == "stale"
    rerun = Query.objects.get(rerun_of=output.query)
    assert rerun.sql == output.query.sql and rerun.status == "queued"


def test_the_signal_handler_marks_stale_and_never_raises(project, recorded_reruns, monkeypatch):
    from outputs.apps import on_optouts_registered

    dataset = project.datasets.first()
    output = OutputFactory(project=project, started_at=timezone.now() - dt.timedelta(minutes=5))
    on_optouts_registered(sender=None, dataset_ids=[dataset.pk], registered_at=timezone.now())
    output.refresh_from_db()
    assert output.status == "stale"

    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(services, "mark_stale_for_datasets", broken)
    on_optouts_registered(sender=None, dataset_ids=[dataset.pk], registered_at=timezone.now())  # logged, not raised


def test_the_environment_signal_is_connected(project, recorded_reruns):
    from environment import signals
    dataset = project.datasets.first()
    output = OutputFactory(project=project, started_at=timezone.now() - dt.timedelta(minutes=5))
    signals.optouts_registered.send(sender=None, dataset_ids=[dataset.pk], registered_at=timezone.now())
    output.refresh_from_db()
    assert output.status == "stale"


def test_an_opt_out_registered_while_the_query_ran_makes_the_new_output_stale(project, recorded_reruns):
    from environment.models import OptOut

    optout = OptOut.objects.create(person_id="ab" * 32, registered_at=timezone.now())
    excluded = services.output_create_for_query(query=CompletedQueryFactory(project=project,
                                                                            optout_watermark=optout.pk))
    assert excluded.status == "pending" and not recorded_reruns

    missed = CompletedQueryFactory(project=project, optout_watermark=optout.pk - 1)
    output = services.output_create_for_query(query=missed)
    assert output.status == "stale" and recorded_reruns == [(missed.pk, None, "stale")]
    assert [e.action for e in AuditEvent.objects.filter(target_type="output", target_id=str(output.pk))
            .order_by("seq")] == ["output.created", "output.stale"]
