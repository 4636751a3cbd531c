"""API routes of the mappings app, mounted under /api/v1/."""

from rest_framework.routers import DefaultRouter

from mappings.api import views

router = DefaultRouter()
router.register("canonical-entities", views.CanonicalEntityViewSet, basename="canonical-entity")
router.register("canonical-schemas", views.CanonicalSchemaViewSet, basename="canonical-schema")
router.register("mapping-sets", views.MappingSetViewSet, basename="mapping-set")
router.register("field-rules", views.FieldRuleViewSet, basename="field-rule")
router.register("value-maps", views.ValueMapViewSet, basename="value-map")

urlpatterns = router.urls
