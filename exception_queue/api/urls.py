"""API routes of the exception_queue app, mounted under /api/v1/."""

from rest_framework.routers import DefaultRouter

from exception_queue.api import views

router = DefaultRouter()
router.register("exception-items", views.ExceptionItemViewSet, basename="exception-item")

urlpatterns = router.urls
