"""Root URLs: admin, health, and the versioned API."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from integrationhub import health
from integrationhub.api.views import ApiDocsView
from integrationhub.views import change_history_view, hub_login
from sync.views import trace_view

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
    # Hub pages inside the admin (its sign-in, header and permissions), before the admin's own catch-all.
    path("admin/login/", hub_login, name="hub-login"),
    path("admin/trace/", admin.site.admin_view(trace_view), name="hub-trace"),
    path("admin/history/", admin.site.admin_view(change_history_view), name="hub-change-history"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", ApiDocsView.as_view(), name="api-docs"),
    path("sandbox/", include("sandbox.urls")),
]
