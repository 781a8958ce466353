from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination


class Pagination(PageNumberPagination):
    """``{count, next, previous, results}``; ``?page=`` and ``?page_size=`` (at most 500)."""

    page_size_query_param = "page_size"
    max_page_size = 500


def paginated(serializer_class):
    """The schema of a paginated list of ``serializer_class`` (for views that paginate by hand)."""
    return type(f"Paginated{serializer_class.__name__}List", (serializers.Serializer,), {
        "count": serializers.IntegerField(),
        "next": serializers.URLField(allow_null=True),
        "previous": serializers.URLField(allow_null=True),
        "results": serializer_class(many=True),
    })
