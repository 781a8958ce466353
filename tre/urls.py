from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from organisations import api as organisations_api
from projects import api as projects_api

from . import api

api_v1 = [
    path("", api.ApiRootApi.as_view(), name="api-root"),
    path("auth/token/", organisations_api.TokenApi.as_view(), name="auth-token"),
    path("me/", projects_api.MeApi.as_view(), name="me"),
    path("me/notifications/", projects_api.MyNotificationsApi.as_view(), name="me-notifications"),
    path("", include("organisations.urls")),
    path("", include("access.urls")),
    path("", include("environment.urls")),
    path("", include("projects.urls")),
    path("", include("queries.urls")),
    path("", include("outputs.urls")),
    path("", include("audit.urls")),
    re_path(r"^.*$", api.not_found),  # any other /api/v1/ path: a JSON 404, never an HTML page
]

urlpatterns = [
    path("healthz", api.HealthzApi.as_view(), name="healthz"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("admin/", admin.site.urls),
]

handler400 = "tre.api.bad_request_handler"
handler403 = "tre.api.permission_denied_handler"
handler404 = "tre.api.not_found_handler"
handler500 = "tre.api.server_error_handler"
