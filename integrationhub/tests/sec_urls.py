"""A test URLconf: the hub's URLs plus probe endpoints of every scope family, a deprecated endpoint and a
view that fails, so the tests exercise the mechanisms without depending on the other apps' endpoints."""

from __future__ import annotations

import datetime

from django.urls import include, path
from rest_framework import permissions, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.views import APIView

from integrationhub.api.deprecation import deprecated
from integrationhub.authentication import ApiKeyScopePermission
from integrationhub.scopes import requires_scope
from integrationhub.urls import urlpatterns as hub_urlpatterns

# What probe writes did; a refused write must leave it unchanged.
WRITES: list[str] = []


class ProbeViewSet(viewsets.ViewSet):
    permission_classes = [ApiKeyScopePermission, permissions.IsAuthenticated]
    scope_family = "config"

    def list(self, request):
        return Response({"family": self.scope_family, "read": True})

    def create(self, request):
        WRITES.append(f"{self.scope_family}:create")
        return Response({"family": self.scope_family, "written": True}, status=201)


class MessagesProbeViewSet(ProbeViewSet):
    scope_family = "messages"

    @requires_scope("messages:replay")
    @action(detail=False, methods=["post"])
    def replay(self, request):
        WRITES.append("messages:replay")
        return Response({"replayed": True})


class ExceptionsProbeViewSet(ProbeViewSet):
    scope_family = "exceptions"

    @action(detail=False, methods=["post"])
    @requires_scope("exceptions:decide")
    def decide(self, request):
        WRITES.append("exceptions:decide")
        return Response({"decided": True})


class KpisProbeViewSet(ProbeViewSet):
    scope_family = "kpis"


class EventsProbeViewSet(ProbeViewSet):
    scope_family = "events"


class OverridingPermissionsProbeViewSet(ProbeViewSet):
    """A view that replaces its permission classes: the key's scope must still be enforced."""

    permission_classes = [permissions.IsAuthenticated]
    scope_family = "kpis"


class FailingView(APIView):
    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []

    def get(self, request):
        raise RuntimeError("database password is hunter2-SECRET and the token is tok_live_42")


class EchoView(APIView):
    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []

    def post(self, request):
        return Response({"received": type(request.data).__name__})


@deprecated(sunset=datetime.date(2027, 6, 30), link="https://hub.example/docs/api#rate-cards-v2")
class DeprecatedView(APIView):
    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []

    def get(self, request):
        return Response({"ok": True})


class PartlyDeprecatedViewSet(viewsets.ViewSet):
    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []

    def list(self, request):
        return Response([])

    @deprecated(sunset=datetime.date(2027, 1, 31), deprecated_on=datetime.date(2026, 7, 1))
    @action(detail=False, methods=["get"])
    def legacy(self, request):
        return Response({"legacy": True})


router = SimpleRouter()
router.register("probe-config", ProbeViewSet, basename="probe-config")
router.register("probe-messages", MessagesProbeViewSet, basename="probe-messages")
router.register("probe-exceptions", ExceptionsProbeViewSet, basename="probe-exceptions")
router.register("probe-kpis", KpisProbeViewSet, basename="probe-kpis")
router.register("probe-events", EventsProbeViewSet, basename="probe-events")
router.register("probe-overriding", OverridingPermissionsProbeViewSet, basename="probe-overriding")
router.register("probe-partly-deprecated", PartlyDeprecatedViewSet, basename="probe-partly-deprecated")

urlpatterns = [
    *hub_urlpatterns,
    path("api/test-api/", include(router.urls)),
    path("api/test-api/fail/", FailingView.as_view()),
    path("api/test-api/echo/", EchoView.as_view()),
    path("api/test-api/deprecated/", DeprecatedView.as_view()),
]


# --- legal-entity scoping applied to the governance rate-card viewset and admin (as the lead will wire it) ---
from django.contrib import admin as django_admin  # noqa: E402

from governance.admin import RateCardAdmin  # noqa: E402
from governance.api.views import RateCardViewSet  # noqa: E402
from governance.models import RateCard  # noqa: E402
from integrationhub.scoping import EntityScopedAdminMixin, EntityScopedViewSetMixin  # noqa: E402

# The rate card admin and viewset are entity-scoped themselves; the probe serves them on their own site.
assert issubclass(RateCardViewSet, EntityScopedViewSetMixin) and issubclass(RateCardAdmin, EntityScopedAdminMixin)
ScopedRateCardViewSet = RateCardViewSet
ScopedRateCardAdmin = RateCardAdmin


scoped_admin_site = django_admin.AdminSite(name="scoped_admin")
scoped_admin_site.register(RateCard, ScopedRateCardAdmin)
scoped_router = SimpleRouter()
scoped_router.register("scoped-rate-cards", ScopedRateCardViewSet, basename="scoped-rate-card")
urlpatterns += [
    path("api/test-api/", include(scoped_router.urls)),
    path("scoped-admin/", scoped_admin_site.urls),
]
