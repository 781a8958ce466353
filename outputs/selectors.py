"""Reads of outputs, scoped by who is asking. Every list costs a constant number of queries.

Who sees an output (``output_list_for`` / ``output_get_for``):
- the members of its project (lead and members, or whoever holds guardian ``view_output`` on the
  project), in every state; they get the *member view*;
- output checkers, once release has been requested (``requested_at`` set: submitted, and what
  became of it: released, rejected, returned, and withdrawn or stale after a request); they get
  the *checker view*, except on outputs of projects they belong to, which they see as members;
- nobody else (404): not DAC members, custodians, auditors or other researchers.
"""

from django.db.models import Q
from guardian.shortcuts import get_objects_for_user

from projects.models import Project, ProjectMembership
from tre.errors import Invalid, NotFound
from tre.roles import Role, has_role

from .models import Output, OutputReview


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
