"""Root URLs: admin, health, and the versioned API."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from integrationhub import health
from integrationhub.api.views import ApiDocsView

api_v1 = [
    path("", include("governance.api.urls")),
    path("", include("connectors.api.urls")),
    path("", include("mappings.api.urls")),
    path("", include("sync.api.urls")),
    path("", include("workflows.api.urls")),
    path("", include("exception_queue.api.urls")),
    path("", include("insights.api.urls")),
    path("", include("integrationhub.api.urls")),
]

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("", include("insights.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", ApiDocsView.as_view(), name="api-docs"),
    path("sandbox/", include("sandbox.urls")),
]
