"""API routes of the sync app, mounted under /api/v1/."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from sync.api import views

router = DefaultRouter()
router.register("messages", views.MessageViewSet, basename="message")
router.register("traces", views.TraceViewSet, basename="trace")
router.register("delivery-attempts", views.DeliveryAttemptViewSet, basename="delivery-attempt")
router.register("file-drops", views.FileDropViewSet, basename="file-drop")

urlpatterns = [
    path("inbound/<slug:system_slug>/<str:event_type>/", views.inbound_webhook, name="sync-inbound-webhook"),
    *router.urls,
]
