"""API views of the connectors app: parse, call one service, render."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, permissions, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from connectors import selectors, services
from connectors.api.serializers import ConnectedSystemSerializer, ConnectorTypeSerializer, HealthResultSerializer
from connectors.models import ConnectedSystem

CHANGE_REASON_HEADER = "X-Change-Reason"
DEFAULT_CHANGE_REASON = "changed through the API"


def change_reason(request: Request) -> str:
    """The history change reason of an API write: the X-Change-Reason header, else a default."""
    return (request.headers.get(CHANGE_REASON_HEADER) or "").strip()[:100] or DEFAULT_CHANGE_REASON


class CanChangeConnectedSystem(permissions.BasePermission):
    """Actions that act on an existing system (test, pause, resume) need the change permission, not add."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.has_perm("connectors.change_connectedsystem"))


class ConnectedSystemViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Connected systems; secrets are write-only. Pause a system instead of deleting it."""

    queryset = ConnectedSystem.objects.prefetch_related("legal_entities")
    serializer_class = ConnectedSystemSerializer
    lookup_field = "slug"
    filterset_fields = ["role", "state", "connector_type"]
    search_fields = ["name", "slug", "base_url"]
    ordering_fields = ["name", "role", "state", "updated_at"]

    def get_permissions(self) -> Any:
        if self.action in ("test_connection", "pause", "resume"):
            return [permissions.IsAuthenticated(), CanChangeConnectedSystem()]
        return super().get_permissions()

    @staticmethod
    def _secrets(data: dict[str, Any]) -> dict[str, Any]:
        secrets: dict[str, Any] = {}
        if "credentials" in data:
            credentials = data.pop("credentials")
            if credentials:
                secrets["credentials"] = credentials
            else:
                secrets["clear_credentials"] = True
        if "webhook_secret" in data:
            secret = data.pop("webhook_secret")
            if secret:
                secrets["webhook_secret"] = secret
            else:
                secrets["clear_webhook_secret"] = True
        return secrets

    def perform_create(self, serializer: Any) -> None:
        data = dict(serializer.validated_data)
        secrets = self._secrets(data)
        serializer.instance = services.connected_system_create(
            **data,
            credentials=secrets.get("credentials"),
            webhook_secret=secrets.get("webhook_secret"),
            user=self.request.user,
            reason=change_reason(self.request),
        )

    def perform_update(self, serializer: Any) -> None:
        data = dict(serializer.validated_data)
        secrets = self._secrets(data)
        reason = change_reason(self.request)
        with transaction.atomic():
            system = services.connected_system_update(
                system=serializer.instance, data=data, user=self.request.user, reason=reason
            )
            if secrets:
                services.connected_system_set_secrets(system=system, user=self.request.user, reason=reason, **secrets)
        serializer.instance = system

    @action(detail=True, methods=["post"], url_path="test-connection")
    def test_connection(self, request: Request, slug: str | None = None) -> Response:
        """Call the system's health check now and return ok, status code, duration and message."""
        result = services.connected_system_test_connection(system=self.get_object())
        return Response(HealthResultSerializer(asdict(result)).data)

    @action(detail=True, methods=["post"])
    def pause(self, request: Request, slug: str | None = None) -> Response:
        system = services.connected_system_pause(
            system=self.get_object(), user=request.user, reason=change_reason(request)
        )
        return Response(self.get_serializer(system).data)

    @action(detail=True, methods=["post"])
    def resume(self, request: Request, slug: str | None = None) -> Response:
        system = services.connected_system_resume(
            system=self.get_object(), user=request.user, reason=change_reason(request)
        )
        return Response(self.get_serializer(system).data)


@extend_schema_view(
    retrieve=extend_schema(
        parameters=[
            OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH, description="Connector type name.")
        ]
    )
)
class ConnectorTypeViewSet(viewsets.ViewSet):
    """The registered connector types: parameter schema, secret parameters and capabilities."""

    permission_classes = [permissions.IsAuthenticated]
    lookup_field = "name"
    serializer_class = ConnectorTypeSerializer

    def list(self, request: Request) -> Response:
        specs = [spec.as_dict() for spec in selectors.connector_type_list()]
        return Response(ConnectorTypeSerializer(specs, many=True).data)

    def retrieve(self, request: Request, name: str | None = None) -> Response:
        spec = selectors.connector_type_get(name=name or "")
        return Response(ConnectorTypeSerializer(spec.as_dict()).data)
