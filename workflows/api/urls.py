"""API routes of the workflows app, mounted under /api/v1/."""

from rest_framework.routers import DefaultRouter

from workflows.api import views

router = DefaultRouter()
router.register("resources", views.ResourceLinkViewSet, basename="resource")

urlpatterns = router.urls
