"""The one implementation of round-based voting (tre/rounds.py), shared by DAC and output reviews."""

import pytest

from tre.rounds import Ballot, Outcome, Rule, tally


def _b(*votes):
    return [Ballot(f"v{i}", d, eligible=not d.startswith("!")) if not d.startswith("!")
            else Ballot(f"v{i}", d[1:], eligible=False) for i, d in enumerate(votes)]


@pytest.mark.parametrize("votes, outcome", [
    ((), Outcome.OPEN),
    (("approve",), Outcome.OPEN),
    (("approve", "approve"), Outcome.APPROVED),
    (("approve", "!approve"), Outcome.OPEN),  # an ineligible approval does not count
    (("approve", "reject"), Outcome.REJECTED),
    (("return",), Outcome.RETURNED),
    (("approve", "return"), Outcome.RETURNED),
    (("!reject", "approve", "approve"), Outcome.APPROVED),  # an ineligible objection does not count either
])
def test_first_objection_decides_as_the_dac_does(votes, outcome):
    assert tally(_b(*votes), rule=Rule.FIRST_OBJECTION, required=2).outcome == outcome


@pytest.mark.parametrize("votes, outcome", [
    (("approve",), Outcome.OPEN),
    (("reject",), Outcome.OPEN),  # one checker's objection waits for the other's independent vote
    (("request_changes",), Outcome.OPEN),
    (("approve", "approve"), Outcome.APPROVED),
    (("reject", "reject"), Outcome.REJECTED),
    (("approve", "reject"), Outcome.RETURNED),
    (("approve", "request_changes"), Outcome.RETURNED),
    (("approve", "!approve"), Outcome.OPEN),
])
def test_independent_votes_decide_once_enough_have_voted(votes, outcome):
    assert tally(_b(*votes), rule=Rule.INDEPENDENT, required=2).outcome == outcome


def test_approvers_are_the_eligible_ones_in_voting_order():
    result = tally(_b("approve", "!approve", "approve"), rule=Rule.FIRST_OBJECTION, required=2)
    assert result.approvers == ("v0", "v2") and result.outcome == Outcome.APPROVED


def test_one_ballot_per_voter():
    with pytest.raises(ValueError, match="one ballot per voter"):
        tally([Ballot("a", "approve"), Ballot("a", "approve")], rule=Rule.INDEPENDENT, required=2)
