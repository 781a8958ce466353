from django.urls import path

from . import api

urlpatterns = [
    path("outputs/", api.OutputListApi.as_view(), name="outputs"),
    path("outputs/<int:pk>/", api.OutputDetailApi.as_view(), name="output-detail"),
    path("outputs/<int:pk>/request-release/", api.OutputRequestReleaseApi.as_view(), name="output-request-release"),
    path("outputs/<int:pk>/withdraw/", api.OutputWithdrawApi.as_view(), name="output-withdraw"),
    path("outputs/<int:pk>/reviews/", api.OutputReviewsApi.as_view(), name="output-reviews"),
    path("outputs/<int:pk>/download/", api.OutputDownloadApi.as_view(), name="output-download"),
]
