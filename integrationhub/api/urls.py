"""API routes of the project app, mounted under /api/v1/."""

from rest_framework.routers import DefaultRouter

from integrationhub.api import views

router = DefaultRouter()
router.register("api-keys", views.ApiKeyViewSet, basename="api-key")
router.register("audit-events", views.AuditEventViewSet, basename="audit-event")

urlpatterns = router.urls
