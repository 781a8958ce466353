from tre.errors import NotFound

from .models import Query


def _base():
    return Query.objects.select_related("submitted_by", "project", "output")


def query_list_for(*, user, project):
    """The project's queries, for its members (the caller has checked membership)."""
    return _base().filter(project=project).order_by("-submitted_at", "-id")


def query_get_for(*, user, pk) -> Query:
    """A query its project's members may see; anyone else gets 404."""
    query = _base().filter(pk=pk, project__memberships__user_id=getattr(user, "pk", None)).first()
    if query is None:
        raise NotFound("no such query")
    return query
