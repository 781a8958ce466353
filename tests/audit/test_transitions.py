"""State machines as data: the one helper that applies a model's transition table."""

import pytest
from django.utils import timezone

from access.models import TRANSITIONS as AGREEMENT_TRANSITIONS
from audit import transitions
from audit.models import AuditEvent
from outputs.models import TRANSITIONS as OUTPUT_TRANSITIONS
from projects.models import TRANSITIONS as PROJECT_TRANSITIONS
from queries.models import TRANSITIONS as QUERY_TRANSITIONS
from tests.factories import AgreementFactory, UserFactory
from tre.errors import WrongState

pytestmark = pytest.mark.django_db


def test_a_refused_transition_names_the_state_and_what_is_allowed():
    agreement = AgreementFactory(status="revoked")
    with pytest.raises(WrongState) as info:
        transitions.check(AGREEMENT_TRANSITIONS, agreement, "activate")
    assert info.value.detail == "the agreement is revoked: it cannot activate; nothing can be done to it now"
    assert info.value.extra == {"status": "revoked"}
    draft = AgreementFactory(status="draft")
    with pytest.raises(WrongState) as info:
        transitions.check(AGREEMENT_TRANSITIONS, draft, "mark_stale")
    assert info.value.detail.endswith("allowed now: activate, revoke")


def test_apply_saves_the_new_state_and_audits_it_in_one_go():
    custodian = UserFactory(role="custodian")
    agreement = AgreementFactory(status="draft")
    transitions.apply(AGREEMENT_TRANSITIONS, agreement, "revoke", actor=custodian,
                      fields={"revoke_reason": "abandoned", "revoked_at": timezone.now()}, data={"comment": "abandoned"})
    agreement.refresh_from_db()
    assert (agreement.status, agreement.revoke_reason) == ("revoked", "abandoned")
    event = AuditEvent.objects.get(action="agreement.revoked")
    assert (event.actor, event.target_id, event.data) == (custodian.username, str(agreement.pk), {"comment": "abandoned"})


@pytest.mark.parametrize("table", [AGREEMENT_TRANSITIONS, PROJECT_TRANSITIONS, QUERY_TRANSITIONS, OUTPUT_TRANSITIONS])
def test_every_table_names_registered_audit_actions(table):
    from audit.actions import AuditAction

    assert all(step.audit is None or isinstance(step.audit, AuditAction) for step in table.values())
    assert all(isinstance(action, str) and action for (_, action) in table)
