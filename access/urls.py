from django.urls import path

from . import api

urlpatterns = [
    path("agreements/", api.AgreementListApi.as_view(), name="agreements"),
    path("agreements/<int:pk>/", api.AgreementDetailApi.as_view(), name="agreement-detail"),
    path("agreements/<int:pk>/activate/", api.AgreementActivateApi.as_view(), name="agreement-activate"),
    path("agreements/<int:pk>/revoke/", api.AgreementRevokeApi.as_view(), name="agreement-revoke"),
]
