"""Reads of projects, scoped by who is asking. Every list costs a constant number of queries.

Who sees a project (``project_list_for`` / ``project_get_for``):
- its members (lead and members), through their guardian ``view_project`` permission, which they
  keep after suspension, closure and expiry and lose when they leave the project;
- DAC members: every project that is not a draft (submitted, returned, approved, suspended,
  closed, rejected, expired), including those they may not vote on (they get a 403 naming the
  conflict when they try);
- nobody else (404).
"""

from django.apps import apps
from django.db.models import Count, Exists, IntegerField, OuterRef, Prefetch, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from guardian.shortcuts import get_objects_for_user

from environment.models import Dataset
from tre.errors import Invalid, NotFound
from tre.roles import Role, has_role

from .models import Project, ProjectMembership, ProjectReview

REGISTER_STATUSES = (Project.Status.APPROVED, Project.Status.SUSPENDED, Project.Status.CLOSED)  # + read-time expired



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


def project_list_for(*, user):
    return _with_relations(visible_projects(user)).order_by("-created_at", "-id")


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

def _output_model():
    try:
        return apps.get_model("outputs", "Output")
    except LookupError:
        return None


def released_output_count(project=None):
    """How many of a project's outputs were released.

    With ``project``: the number for that project. Without: an expression to annotate a project
    queryset with (one query for the whole list). Both are 0 while the outputs app has no
    ``Output`` model (it needs a ``project`` foreign key and a ``status`` field, ``"released"``).
    """
    output = _output_model()
    if project is not None:
        if output is None:
            return 0
        return output.objects.filter(project_id=project.pk, status="released").count()
    if output is None:
        return Value(0, output_field=IntegerField())
    counted = (output.objects.filter(project_id=OuterRef("pk"), status="released").order_by()
               .values("project_id").annotate(n=Count("pk")).values("n"))
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


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


def register_list(*, organisation: str | None = None, dataset: str | None = None, commercial: str | None = None):
    """Approved, suspended, closed and expired projects for the public register, filtered."""
    qs = Project.objects.filter(status__in=REGISTER_STATUSES)
    if organisation:
        qs = qs.filter(_id_or_name(organisation, id_field="organisation_id", name_field="organisation__name"))
    if dataset:
        matching = Project.datasets.through.objects.filter(
            _id_or_name(dataset, id_field="dataset_id", name_field="dataset__name")).values("project_id")
        qs = qs.filter(pk__in=matching)
    if commercial not in (None, ""):
        qs = qs.filter(commercial=_boolean(commercial, "commercial"))
    return (qs.select_related("organisation")
            .prefetch_related(Prefetch("datasets", queryset=Dataset.objects.only("id", "name")))
            .annotate(outputs_released=released_output_count())
            .order_by("-approved_at", "-id"))


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
