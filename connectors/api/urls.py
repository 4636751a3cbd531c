"""API routes of the connectors app, mounted under /api/v1/."""

from rest_framework.routers import DefaultRouter

from connectors.api import views

router = DefaultRouter()
router.register("systems", views.ConnectedSystemViewSet, basename="connected-system")
router.register("connector-types", views.ConnectorTypeViewSet, basename="connector-type")

urlpatterns = router.urls
