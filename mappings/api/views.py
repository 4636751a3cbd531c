"""API views of the mappings app: parse, call one service, render."""

from __future__ import annotations

from typing import Any

from rest_framework import mixins, permissions, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from mappings import selectors, services
from mappings.api.serializers import (
    CanonicalEntitySerializer,
    CanonicalSchemaSerializer,
    PayloadValidationSerializer,
)
from mappings.models import CanonicalSchema


class CanChangeCanonicalSchema(permissions.BasePermission):
    """Publishing changes which version is in force: it needs the change permission, not just add."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.has_perm("mappings.change_canonicalschema"))


class CanonicalEntityViewSet(viewsets.ReadOnlyModelViewSet):
    """The canonical entities, each with its schema versions; `validate` checks a payload against it."""

    queryset = selectors.canonical_entity_list()
    serializer_class = CanonicalEntitySerializer
    lookup_field = "name"
    search_fields = ["name", "description"]
    ordering_fields = ["name"]

    def get_permissions(self) -> Any:
        if self.action == "validate":
            # Validating writes nothing; anyone who can read the entity may check a payload.
            return [permissions.IsAuthenticated(), _CanViewEntity()]
        return super().get_permissions()

    @action(detail=True, methods=["post"], serializer_class=PayloadValidationSerializer)
    def validate(self, request: Request, name: str | None = None) -> Response:
        """Validate {"payload": {...}} against the published schema; answers {"valid": bool, "errors": [...]}."""
        entity = self.get_object()
        serializer = PayloadValidationSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        errors = selectors.canonical_payload_validate(
            entity_name=entity.name, payload=serializer.validated_data["payload"]
        )
        return Response({"valid": not errors, "errors": errors})


class _CanViewEntity(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.has_perm("mappings.view_canonicalentity"))


class CanonicalSchemaViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Schema versions. POST makes a new draft version of an entity; `publish` puts one in force."""

    queryset = CanonicalSchema.objects.select_related("entity", "created_by")
    serializer_class = CanonicalSchemaSerializer
    filterset_fields = ["entity__name", "status", "version"]
    ordering_fields = ["entity__name", "version", "created_at"]

    def get_permissions(self) -> Any:
        if self.action == "publish":
            return [permissions.IsAuthenticated(), CanChangeCanonicalSchema()]
        return super().get_permissions()

    def perform_create(self, serializer: Any) -> None:
        data = serializer.validated_data
        serializer.instance = services.canonical_schema_edit(
            entity=data["entity"], json_schema=data["json_schema"], user=self.request.user, notes=data.get("notes", "")
        )

    @action(detail=True, methods=["post"])
    def publish(self, request: Request, pk: str | None = None) -> Response:
        """Check the version is a valid JSON Schema, retire the published one and publish this one."""
        schema = services.canonical_schema_publish(schema=self.get_object(), user=request.user)
        return Response(self.get_serializer(schema).data)
