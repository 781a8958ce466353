from django.urls import path

from . import api

urlpatterns = [
    path("projects/<int:pk>/queries/", api.ProjectQueryListApi.as_view(), name="project-queries"),
    path("queries/<int:pk>/", api.QueryDetailApi.as_view(), name="query-detail"),
    path("queries/<int:pk>/cancel/", api.QueryCancelApi.as_view(), name="query-cancel"),
]
