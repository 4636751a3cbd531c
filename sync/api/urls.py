"""API routes of the sync app, mounted under /api/v1/."""

from rest_framework.routers import DefaultRouter

from sync.api import views

router = DefaultRouter()
router.register("messages", views.MessageViewSet, basename="message")
router.register("traces", views.TraceViewSet, basename="trace")
router.register("delivery-attempts", views.DeliveryAttemptViewSet, basename="delivery-attempt")
router.register("file-drops", views.FileDropViewSet, basename="file-drop")

# The inbound webhook route (api/v1/inbound/<system>/<event>/) is the first of integrationhub.urls' api_v1.
urlpatterns = [*router.urls]
