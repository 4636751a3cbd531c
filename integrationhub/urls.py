"""Root URLs: admin, health, and the versioned API."""

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from insights.views import favicon_view, trace_view
from integrationhub import health, twofactor_views
from integrationhub.api.views import ApiDocsView
from integrationhub.views import change_history_csv_view, change_history_view
from sync.api import views as sync_api_views

api_v1: list[URLPattern | URLResolver] = [
    # First: the busiest route (every webhook) resolves without trying the routers' patterns.
    path("inbound/<slug:system_slug>/<str:event_type>/", sync_api_views.inbound_webhook, name="sync-inbound-webhook"),
    path("", include("governance.api.urls")),
    path("", include("connectors.api.urls")),
    path("", include("mappings.api.urls")),
    path("", include("sync.api.urls")),
    path("", include("workflows.api.urls")),
    path("", include("exception_queue.api.urls")),
    path("", include("insights.api.urls")),
    path("", include("reconciliation.api.urls")),
    path("", include("integrationhub.api.urls")),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("favicon.ico", favicon_view, name="favicon"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    # Before admin.site.urls: the admin's login (second factor, then each role's landing page), the two-factor
    # pages that follow it, and the hub's own pages inside the admin (its header and permissions).
    path("admin/login/", twofactor_views.HubLoginView.as_view(), name="hub-login"),
    path("admin/two-factor/", twofactor_views.two_factor_enrol_view, name="two-factor-enrol"),
    path("admin/two-factor/verify/", twofactor_views.two_factor_verify_view, name="two-factor-verify"),
    path("admin/trace/", admin.site.admin_view(trace_view), name="hub-trace"),
    path("admin/history/", admin.site.admin_view(change_history_view), name="hub-change-history"),
    path("admin/history/export.csv", admin.site.admin_view(change_history_csv_view), name="hub-change-history-csv"),
    path("admin/reconciliation/", include("reconciliation.urls")),
    path("", include("insights.urls")),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", ApiDocsView.as_view(), name="api-docs"),
    path("sandbox/", include("sandbox.urls")),
]

# Outside DRF views (no URL matched, a malformed request) /api/ still answers problem+json.
handler400 = "integrationhub.api.handlers.bad_request"
# Elsewhere the hub's own 403 page: what the page needs, and the way back to the user's start page.
handler403 = "insights.views.permission_denied_view"
handler404 = "integrationhub.api.handlers.page_not_found"
handler500 = "integrationhub.api.handlers.server_error"
