"""API routes of the reconciliation, mounted under /api/v1/."""

from rest_framework.routers import DefaultRouter

from reconciliation.api import views

router = DefaultRouter()
router.register("reconciliation/runs", views.ReconciliationRunViewSet, basename="reconciliation-run")
router.register("reconciliation/rows", views.ReconciliationRowViewSet, basename="reconciliation-row")

urlpatterns = router.urls
