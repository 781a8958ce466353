from django.urls import path

from . import api

urlpatterns = [
    path("audit/events/", api.AuditEventListApi.as_view(), name="audit-events"),
    path("audit/events/export/", api.AuditEventExportApi.as_view(), name="audit-events-export"),
    path("audit/verify/", api.AuditVerifyApi.as_view(), name="audit-verify"),
]
