"""The access decision, rule by rule (table-driven), plus the rules' order and inputs."""

import datetime as dt
from types import SimpleNamespace

import pytest
from django.utils import timezone

from access.decision import RULES, Decision, check_access, require_access
from access.models import Agreement
from projects.models import Project
from tests.factories import AgreementFactory, DatasetFactory, OrganisationFactory, ProjectFactory, UserFactory
from tre.errors import Forbidden

TODAY = timezone.localdate()
DAY = dt.timedelta(days=1)


@pytest.fixture
def w(db):
    org = OrganisationFactory(name="Alpha University")
    lead = UserFactory(organisation=org)
    member = UserFactory(organisation=org)
    ds, other_ds = DatasetFactory(name="hospital_episodes"), DatasetFactory(name="prescriptions")
    project = ProjectFactory(lead=lead, members=[member], datasets=[ds], status="approved",
                             purpose_categories=["health_research"])
    agreement = AgreementFactory(organisation=org, datasets=[ds], prohibited_uses=["marketing", "insurance"])
    return SimpleNamespace(org=org, lead=lead, member=member, outsider=UserFactory(), ds=ds, other_ds=other_ds,
                           project=project, agreement=agreement, user=member, datasets=[ds], today=TODAY)


def _set(obj, **fields):
    type(obj).objects.filter(pk=obj.pk).update(**fields)
    obj.refresh_from_db()


def _status(status):
    def change(w):
        _set(w.project, status=status, approved_at=timezone.now(), closed_at=timezone.now(),
             rejected_at=timezone.now())
    return change


CASES = [
    ("allowed: member", lambda w: None, None),
    ("allowed: lead", lambda w: setattr(w, "user", w.lead), None),
    ("allowed: dataset by name, any case", lambda w: setattr(w, "datasets", ["HOSPITAL_EPISODES"]), None),
    ("allowed: dataset by id", lambda w: setattr(w, "datasets", [w.ds.pk]), None),
    ("allowed: no datasets", lambda w: setattr(w, "datasets", []), None),
    ("allowed: first and last day", lambda w: _set(w.project, start_date=TODAY, end_date=TODAY), None),
    ("allowed: commercial with commercial agreement", lambda w: (
        _set(w.project, commercial=True), _set(w.agreement, commercial_use_allowed=True)), None),
    ("allowed: open-ended agreement", lambda w: _set(w.agreement, valid_until=None), None),
    ("not_member: outsider", lambda w: setattr(w, "user", w.outsider), "not_member"),
    ("not_member: anonymous", lambda w: setattr(w, "user", SimpleNamespace(is_authenticated=False, pk=None)),
     "not_member"),
    ("project_not_approved: draft", _status("draft"), "project_not_approved"),
    ("project_not_approved: submitted", _status("submitted"), "project_not_approved"),
    ("project_not_approved: returned", _status("returned"), "project_not_approved"),
    ("project_not_approved: rejected", _status("rejected"), "project_not_approved"),
    ("project_not_approved: suspended", _status("suspended"), "project_not_approved"),
    ("project_not_approved: closed", _status("closed"), "project_not_approved"),
    ("project_not_started", lambda w: _set(w.project, start_date=TODAY + DAY, end_date=TODAY + 9 * DAY),
     "project_not_started"),
    ("project_ended (reads as expired)", lambda w: _set(w.project, start_date=TODAY - 9 * DAY, end_date=TODAY - DAY),
     "project_ended"),
    ("dataset_not_approved: another dataset", lambda w: setattr(w, "datasets", [w.ds, w.other_ds]),
     "dataset_not_approved"),
    ("dataset_not_approved: unknown name", lambda w: setattr(w, "datasets", ["no_such_table"]),
     "dataset_not_approved"),
    ("no_active_agreement: none at all", lambda w: w.agreement.delete(), "no_active_agreement"),
    ("no_active_agreement: draft", lambda w: _set(w.agreement, status="draft", activated_at=None),
     "no_active_agreement"),
    ("no_active_agreement: revoked", lambda w: _set(w.agreement, status="revoked", revoked_at=timezone.now()),
     "no_active_agreement"),
    ("no_active_agreement: past valid_until", lambda w: _set(w.agreement, valid_until=TODAY - DAY),
     "no_active_agreement"),
    ("no_active_agreement: before valid_from", lambda w: _set(w.agreement, valid_from=TODAY + DAY),
     "no_active_agreement"),
    ("no_active_agreement: another organisation's", lambda w: _set(w.agreement, organisation=OrganisationFactory()),
     "no_active_agreement"),
    ("no_active_agreement: covers another dataset", lambda w: w.agreement.datasets.set([w.other_ds]),
     "no_active_agreement"),
    ("no_active_agreement: project without organisation", lambda w: _set(w.project, organisation=None),
     "no_active_agreement"),
    ("commercial_use_not_allowed", lambda w: _set(w.project, commercial=True), "commercial_use_not_allowed"),
    ("commercial_use_not_allowed: one of two agreements refuses", lambda w: (
        _set(w.project, commercial=True), _set(w.agreement, commercial_use_allowed=True),
        AgreementFactory(organisation=w.org, datasets=[w.ds], commercial_use_allowed=False)),
     "commercial_use_not_allowed"),
    ("prohibited_use", lambda w: _set(w.project, purpose_categories=["health_research", "marketing"]),
     "prohibited_use"),
    # order: the first failing rule names the refusal
    ("order: not_member before project_not_approved", lambda w: (setattr(w, "user", w.outsider),
                                                                 _status("suspended")(w)), "not_member"),
    ("order: status before dates", lambda w: (_status("suspended")(w), _set(w.project, end_date=TODAY - DAY)),
     "project_not_approved"),
    ("order: dataset before agreement", lambda w: (w.agreement.delete(), setattr(w, "datasets", [w.other_ds])),
     "dataset_not_approved"),
    ("order: agreement before commercial", lambda w: (_set(w.project, commercial=True),
                                                      setattr(w, "datasets", [w.ds]), w.agreement.delete()),
     "no_active_agreement"),
    ("order: commercial before prohibited", lambda w: _set(w.project, commercial=True,
                                                           purpose_categories=["marketing"]),
     "commercial_use_not_allowed"),
]


@pytest.mark.parametrize("change, rule", [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_access_decision(w, change, rule):
    change(w)
    decision = check_access(user=w.user, project=w.project, datasets=w.datasets, today=w.today)
    assert isinstance(decision, Decision)
    assert decision.rule == rule, decision.message
    assert decision.allowed is (rule is None) and bool(decision) is (rule is None)
    assert decision.message


def test_every_rule_is_exercised():
    assert {c[2] for c in CASES} - {None} == set(RULES)


def test_refusal_names_the_dataset(w):
    decision = check_access(user=w.member, project=w.project, datasets=["prescriptions"], today=TODAY)
    assert decision.dataset == "prescriptions" and "prescriptions" in decision.message


def test_today_defaults_to_the_local_date(w):
    _set(w.project, end_date=TODAY - DAY)
    assert check_access(user=w.member, project=w.project, datasets=[w.ds]).rule == "project_ended"


def test_require_access_raises_forbidden_with_the_rule(w):
    assert require_access(user=w.member, project=w.project, datasets=[w.ds]).allowed
    with pytest.raises(Forbidden) as info:
        require_access(user=w.outsider, project=w.project, datasets=[w.ds])
    assert info.value.status_code == 403
    assert info.value.body() == {"detail": "you are not a member of this project", "rule": "not_member"}


def test_decision_costs_a_constant_number_of_queries(w, django_assert_max_num_queries):
    project = Project.objects.get(pk=w.project.pk)
    with django_assert_max_num_queries(3):
        assert check_access(user=w.member, project=project, datasets=[w.ds], today=TODAY).allowed


def test_removed_member_is_refused(w):
    from projects.services import project_member_remove

    project_member_remove(project=w.project, actor=w.lead, username=w.member.username)
    assert check_access(user=w.member, project=w.project, datasets=[w.ds]).rule == "not_member"


def test_agreement_revocation_takes_effect_at_once(w):
    from access.services import agreement_revoke

    agreement_revoke(agreement=w.agreement, actor=UserFactory(role="custodian"), reason="breach")
    assert Agreement.objects.get(pk=w.agreement.pk).status == "revoked"
    assert check_access(user=w.member, project=w.project, datasets=[w.ds]).rule == "no_active_agreement"
