"""API routes of the sync app, mounted under /api/v1/."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from sync.api.views import inbound_webhook

router = DefaultRouter()

urlpatterns = [
    path("inbound/<slug:system_slug>/<str:event_type>/", inbound_webhook, name="sync-inbound-webhook"),
    *router.urls,
]
