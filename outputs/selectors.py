"""Reads of outputs, scoped by who is asking. Every list costs a constant number of queries.

Who sees an output (``output_list_for`` / ``output_get_for``):
- the members of its project (lead and members, or whoever holds guardian ``view_output`` on the
  project), in every state; they get the *member view*;
- output checkers, once release has been requested (``requested_at`` set: submitted, and what
  became of it: released, rejected, returned, and withdrawn or stale after a request); they get
  the *checker view*, except on outputs of projects they belong to, which they see as members;
- nobody else (404): not DAC members, custodians, auditors or other researchers.
"""

import math

from django.db.models import Q
from guardian.shortcuts import get_objects_for_user

from projects.models import Project, ProjectMembership
from queries.results import read_result
from tre.errors import Invalid, NotFound, Unavailable
from tre.roles import Role, has_role

from .models import Output, OutputReview
from .sdc import N_PERSONS


def visible_outputs(user):
    """The outputs ``user`` may see, as an (unevaluated) queryset without relations."""
    if not getattr(user, "is_authenticated", False):
        return Output.objects.none()
    member_of = ProjectMembership.objects.filter(user_id=user.pk).values("project_id")
    permitted = get_objects_for_user(user, "projects.view_output", klass=Project, accept_global_perms=False,
                                     with_superuser=False).values("pk")
    visible = Q(project_id__in=member_of) | Q(project_id__in=permitted)
    if has_role(user, Role.OUTPUT_CHECKER):
        visible |= Q(requested_at__isnull=False)
    return Output.objects.filter(visible)


def member_project_ids(user) -> set[int]:
    if not getattr(user, "is_authenticated", False):
        return set()
    return set(ProjectMembership.objects.filter(user_id=user.pk).values_list("project_id", flat=True))


def output_list_for(*, user, status: str | None = None):
    """Visible outputs, newest first; ``status="submitted"`` is the checkers' queue, oldest request
    first. An unknown status is a 400."""
    qs = visible_outputs(user).select_related("query", "project")
    if status:
        if status not in Output.Status.values:
            raise Invalid(fields={"status": [f"unknown status {status!r}; one of {', '.join(Output.Status.values)}"]})
        qs = qs.filter(status=status)
    if status == Output.Status.SUBMITTED:
        return qs.order_by("requested_at", "id")
    return qs.order_by("-created_at", "-id")


def output_get_for(*, user, pk) -> Output:
    """The output ``pk`` if ``user`` may see it; else ``NotFound`` (404)."""
    output = visible_outputs(user).select_related("query", "project").filter(pk=pk).first()
    if output is None:
        raise NotFound("no such output")
    return output


def reviews_visible_to(*, user, output, checker_view: bool) -> list[OutputReview]:
    """The votes ``user`` may see, oldest first.

    Checkers see every vote of a finished round; in the round being voted on they see the others'
    votes only once they have voted themselves. Members see the votes of finished rounds only
    (without who cast them: the presenter leaves the name out)."""
    reviews = list(OutputReview.objects.filter(output=output).select_related("checker").order_by("created_at", "id"))
    if not output.round_open:
        return reviews
    current = [r for r in reviews if r.round == output.round]
    if checker_view and any(r.checker_id == user.pk for r in current):
        return reviews
    return [r for r in reviews if r.round != output.round]


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def pick_columns(result_columns: list[str], rows: list[list], names: list[str]) -> list[list]:
    """``rows`` reduced to ``names`` (in that order); non-finite floats read as null."""
    at = {name: i for i, name in enumerate(result_columns)}
    missing = [name for name in names if name not in at]
    if missing:
        raise ValueError(f"the result lacks columns {missing}")
    index = [at[name] for name in names]
    return [[_finite(row[i]) for i in index] for row in rows]


def raw_table(output) -> tuple[list[str], list[list]]:
    """The raw table of ``output`` from the store: the user columns then ``n_persons``. For the
    checker view only (the caller audits the view)."""
    try:
        result_columns, rows = read_result(output.query_id)
    except FileNotFoundError:
        raise Unavailable("the raw result of this output is not in the store", dependency="store") from None
    names = [*output.columns, N_PERSONS]
    return names, pick_columns(result_columns, rows, names)
