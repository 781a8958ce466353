from django.urls import path

from . import api

urlpatterns = [
    path("organisations/", api.OrganisationListApi.as_view(), name="organisations"),
    path("organisations/<int:pk>/", api.OrganisationDetailApi.as_view(), name="organisation-detail"),
]
