"""API routes of the insights app, mounted under /api/v1/."""

from rest_framework.routers import DefaultRouter

router = DefaultRouter()

urlpatterns = router.urls
