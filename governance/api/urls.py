"""API routes of the governance app, mounted under /api/v1/."""

from rest_framework.routers import DefaultRouter

from governance.api import views

router = DefaultRouter()
router.register("legal-entities", views.LegalEntityViewSet, basename="legal-entity")
router.register("ownership-rules", views.OwnershipRuleViewSet, basename="ownership-rule")
router.register("rate-cards", views.RateCardViewSet, basename="rate-card")
router.register("sync-policies", views.SyncPolicyViewSet, basename="sync-policy")

urlpatterns = router.urls
