from django.urls import path

from . import api

urlpatterns = [
    path("datasets/", api.DatasetListApi.as_view(), name="datasets"),
    path("datasets/<int:pk>/", api.DatasetDetailApi.as_view(), name="dataset-detail"),
    path("datasets/<int:pk>/versions/", api.DatasetVersionListApi.as_view(), name="dataset-versions"),
    path("datasets/<int:pk>/versions/<int:version_id>/", api.DatasetVersionDetailApi.as_view(), name="dataset-version-detail"),
    path("opt-outs/", api.OptOutApi.as_view(), name="opt-outs"),
    path("opt-outs/status/", api.OptOutStatusApi.as_view(), name="opt-outs-status"),
]
