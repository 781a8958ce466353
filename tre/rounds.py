"""Round-based voting, one implementation for DAC reviews of projects and checkers' reviews of
outputs (a pure core: ballots in, outcome out).

A *round* is one submission of the thing under review; votes of earlier rounds stay in the history
but no longer count. Each ballot carries whether its voter is eligible **now** (the caller applies
its app's one eligibility rule when counting, so a voter who since joined the project or left the
role does not count).

Two ways to decide a round:

- ``FIRST_OBJECTION`` (the DAC, DESIGN §3): any eligible ``reject`` rejects; any eligible
  ``return`` returns at once; ``required`` eligible approvals approve.
- ``INDEPENDENT`` (output checking as OpenSAFELY's Airlock does it): nothing is decided until
  ``required`` distinct eligible voters have voted; then all ``approve`` approves, all ``reject``
  rejects, anything else returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Rule(StrEnum):
    FIRST_OBJECTION = "first_objection"
    INDEPENDENT = "independent"


class Outcome(StrEnum):
    OPEN = "open"  # the round goes on
    APPROVED = "approved"
    REJECTED = "rejected"
    RETURNED = "returned"


APPROVE, REJECT = "approve", "reject"
RETURNING = frozenset({"return", "request_changes"})  # the two apps' words for "back to the author"


@dataclass(frozen=True)
class Ballot:
    voter: str  # username
    decision: str  # approve | reject | return | request_changes
    eligible: bool = True


@dataclass(frozen=True)
class Tally:
    outcome: Outcome
    approvers: tuple[str, ...]  # eligible approvers, in voting order
    voters: tuple[str, ...]  # eligible voters, in voting order


def tally(ballots: Iterable[Ballot], *, rule: Rule, required: int) -> Tally:
    """The outcome of one round's ballots (in voting order; one ballot per voter)."""
    counted = [b for b in ballots if b.eligible]
    approvers = tuple(b.voter for b in counted if b.decision == APPROVE)
    voters = tuple(b.voter for b in counted)
    if len(set(voters)) != len(voters):
        raise ValueError("one ballot per voter and round")
    if rule == Rule.FIRST_OBJECTION:
        if any(b.decision == REJECT for b in counted):
            return Tally(Outcome.REJECTED, approvers, voters)
        if any(b.decision in RETURNING for b in counted):
            return Tally(Outcome.RETURNED, approvers, voters)
        return Tally(Outcome.APPROVED if len(approvers) >= required else Outcome.OPEN, approvers, voters)
    if len(voters) < required:
        return Tally(Outcome.OPEN, approvers, voters)
    decisions = {b.decision for b in counted}
    if decisions == {APPROVE}:
        return Tally(Outcome.APPROVED, approvers, voters)
    if decisions == {REJECT}:
        return Tally(Outcome.REJECTED, approvers, voters)
    return Tally(Outcome.RETURNED, approvers, voters)
