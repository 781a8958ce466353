"""Reads of projects, scoped by who is asking. Every list costs a constant number of queries.

Who sees a project (``project_list_for`` / ``project_get_for``):
- its members (lead and members), through their guardian ``view_project`` permission, which they
  keep after suspension, closure and expiry and lose when they leave the project;
- DAC members: every project that is not a draft (submitted, returned, approved, suspended,
  closed, rejected, expired), including those they may not vote on (they get a 403 naming the
  conflict when they try);
- nobody else (404).
"""

from django.db.models import Count, Exists, F, OuterRef, Prefetch, Q
from django.utils import timezone
from guardian.shortcuts import get_objects_for_user

from environment.models import Dataset
from organisations.models import UserProfile
from tre.errors import Invalid, NotFound
from tre.roles import Role, has_role

from .models import Project, ProjectMembership, ProjectReview

REGISTER_STATUSES = (Project.Status.APPROVED, Project.Status.SUSPENDED, Project.Status.CLOSED)  # + read-time expired
PROJECT_STATUSES = (*Project.Status.values, Project.EXPIRED)
REGISTER_STATUS_CHOICES = ("approved", "suspended", "closed", "expired")


def _with_relations(queryset):
    return (queryset.select_related("organisation", "lead")
            .prefetch_related(Prefetch("datasets", queryset=Dataset.objects.only("id", "name")),
                              Prefetch("memberships", queryset=ProjectMembership.objects.select_related("user")
                                       .order_by("role", "added_at", "id"))))


def visible_projects(user):
    """The projects ``user`` may see, as an (unevaluated) queryset without extra relations."""
    if not getattr(user, "is_authenticated", False):
        return Project.objects.none()
    visible = get_objects_for_user(user, "projects.view_project", klass=Project, accept_global_perms=False,
                                   with_superuser=False)
    if has_role(user, Role.DAC):
        return Project.objects.filter(Q(pk__in=visible.values("pk")) | ~Q(status=Project.Status.DRAFT))
    return visible


def _effective_status_q(status: str, today) -> Q:
    """The projects whose *effective* status (``Project.effective_status``) is ``status``."""
    ended = Q(end_date__isnull=False, end_date__lt=today)
    if status == Project.EXPIRED:
        return Q(status__in=[Project.Status.APPROVED, Project.Status.SUSPENDED]) & ended
    if status in (Project.Status.APPROVED, Project.Status.SUSPENDED):
        return Q(status=status) & ~ended
    return Q(status=status)


def _statuses(value: str | None, choices, field: str = "status") -> list[str]:
    """``?status=a,b`` → ``[a, b]``; an unknown status is a 400 naming the choices."""
    wanted = [v.strip() for v in (value or "").split(",") if v.strip()]
    unknown = [v for v in wanted if v not in choices]
    if unknown:
        raise Invalid(fields={field: [f"unknown status {v!r}: one of {', '.join(choices)}" for v in unknown]})
    return wanted


def _filter_statuses(qs, statuses, today=None):
    if not statuses:
        return qs
    today = today or timezone.localdate()
    q = Q()
    for status in statuses:
        q |= _effective_status_q(status, today)
    return qs.filter(q)


def awaiting_vote_of(user):
    """Submitted projects on which ``user`` may vote (DAC, no conflict of interest: not a member,
    not of their organisation) and has not voted in the current round. Empty for anyone else."""
    if not has_role(user, Role.DAC) or not user.is_active:
        return Project.objects.none()
    voted = ProjectReview.objects.filter(project=OuterRef("pk"), reviewer_id=user.pk, round=OuterRef("review_round"))
    qs = (Project.objects.filter(status=Project.Status.SUBMITTED).exclude(memberships__user_id=user.pk)
          .exclude(Exists(voted)))
    org_id = UserProfile.objects.filter(user_id=user.pk).values_list("organisation_id", flat=True).first()
    if org_id is not None:
        qs = qs.exclude(organisation_id=org_id)
    return qs


def project_list_for(*, user, status: str | None = None, awaiting_my_vote: str | None = None):
    """The projects ``user`` may see, newest first; ``status`` (comma-separated effective statuses,
    400 naming the choices when unknown) and ``awaiting_my_vote`` (``true``: only those awaiting
    the user's DAC vote) narrow it."""
    qs = visible_projects(user)
    qs = _filter_statuses(qs, _statuses(status, PROJECT_STATUSES))
    if awaiting_my_vote not in (None, "") and _boolean(awaiting_my_vote, "awaiting_my_vote"):
        qs = qs.filter(pk__in=awaiting_vote_of(user).values("pk"))
    return _with_relations(qs).order_by("-created_at", "-id")


def project_get_for(*, user, pk) -> Project:
    """The project ``pk`` with its relations if ``user`` may see it; else ``NotFound`` (404)."""
    project = _with_relations(visible_projects(user)).filter(pk=pk).first()
    if project is None:
        raise NotFound("no such project")
    return project


def member_projects(user) -> list[dict]:
    """``[{id, title, status, role}]`` of the projects ``user`` belongs to (``GET /me/``); one query."""
    if not getattr(user, "is_authenticated", False):
        return []
    rows = (ProjectMembership.objects.filter(user_id=user.pk).select_related("project")
            .order_by("-project__created_at", "-project_id"))
    return [{"id": m.project.pk, "title": m.project.title, "status": m.project.effective_status(), "role": m.role}
            for m in rows]


def project_dataset_names(project) -> set[str]:
    """The (lower-case) names of the datasets ``project`` requested, i.e. may use once approved."""
    return {name.lower() for name in project.datasets.values_list("name", flat=True)}


def review_list_for(*, user, project):
    """A visible project's reviews, all rounds, oldest first. The caller has checked visibility."""
    return ProjectReview.objects.filter(project=project).select_related("reviewer").order_by("created_at", "id")


# --- The public register ------------------------------------------------------------------
# ``outputs`` sits above ``projects`` in the layers, so released outputs are read through the
# reverse relation ``Project.outputs`` (the ``related_name`` of ``outputs.Output.project``) by
# field name, without importing the outputs app: an output has a ``status`` (``"released"``), a
# ``released_at`` and its query's ``title``.

RELEASED = "released"


def _id_or_name(value: str, *, id_field: str, name_field: str) -> Q:
    value = value.strip()
    q = Q(**{f"{name_field}__iexact": value})
    if value.isdigit() and len(value) <= 18:
        q |= Q(**{id_field: int(value)})
    return q


def _boolean(value: str, field: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise Invalid(fields={field: [f"must be true or false, not {value!r}"]})


def _register_projects():
    return Project.objects.filter(status__in=REGISTER_STATUSES)


def _register_relations(qs):
    return (qs.select_related("organisation")
            .prefetch_related(Prefetch("datasets", queryset=Dataset.objects.only("id", "name")))
            .annotate(outputs_released=Count("outputs", filter=Q(outputs__status=RELEASED), distinct=True)))


def register_list(*, status: str | None = None, search: str | None = None, organisation: str | None = None,
                  dataset: str | None = None, commercial: str | None = None):
    """Approved, suspended, closed and expired projects for the public register, filtered:
    ``status`` (effective statuses, comma-separated; 400 naming the choices), ``search`` (words,
    each found in the title, lay summary or organisation name, any case), ``organisation`` and
    ``dataset`` (id or exact name, any case), ``commercial`` (true/false)."""
    qs = _filter_statuses(_register_projects(), _statuses(status, REGISTER_STATUS_CHOICES))
    for word in (search or "").split()[:10]:
        qs = qs.filter(Q(title__icontains=word) | Q(lay_summary__icontains=word)
                       | Q(organisation__name__icontains=word))
    if organisation:
        qs = qs.filter(_id_or_name(organisation, id_field="organisation_id", name_field="organisation__name"))
    if dataset:
        matching = Project.datasets.through.objects.filter(
            _id_or_name(dataset, id_field="dataset_id", name_field="dataset__name")).values("project_id")
        qs = qs.filter(pk__in=matching)
    if commercial not in (None, ""):
        qs = qs.filter(commercial=_boolean(commercial, "commercial"))
    return _register_relations(qs).order_by("-approved_at", "-id")


def register_get(*, pk) -> Project:
    """One register entry with ``released_outputs`` (``[{id, title, released_at}]``, oldest
    first); 404 for a project that is not on the register."""
    project = _register_relations(_register_projects()).filter(pk=pk).first()
    if project is None:
        raise NotFound("no such project on the register")
    project.released_outputs = list(
        project.outputs.filter(status=RELEASED).order_by("released_at", "pk")
        .values("id", "released_at", title=F("query__title")))
    return project


def dataset_dictionary_for(*, user, pk) -> Dataset:
    """The dataset ``pk`` if ``user`` may read its data dictionary (DESIGN.md §4): custodians, and
    members of a project approved for it (approved now, not past its end date). Everyone else:
    ``NotFound`` (404), whether or not the dataset exists. One query for a member."""
    if not getattr(user, "is_authenticated", False):
        raise NotFound("no such dataset")
    datasets = Dataset.objects.filter(pk=pk)
    if not has_role(user, Role.CUSTODIAN):
        approved = Project.objects.filter(
            status=Project.Status.APPROVED, memberships__user_id=user.pk, datasets=OuterRef("pk"),
        ).filter(Q(end_date__isnull=True) | Q(end_date__gte=timezone.localdate()))
        datasets = datasets.filter(Exists(approved))
    dataset = datasets.first()
    if dataset is None:
        raise NotFound("no such dataset")
    return dataset
