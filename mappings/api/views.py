"""API views of the mappings app: parse, call one service, render."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from integrationhub.parsers import LimitedJSONParser
from integrationhub.scoping import EntityScopedViewSetMixin
from mappings import editor, selectors, services
from mappings.api.serializers import (
    CanonicalEntitySerializer,
    CanonicalSchemaSerializer,
    FieldRuleSerializer,
    MappingPreviewResultSerializer,
    MappingPreviewSerializer,
    MappingPublishReportSerializer,
    MappingPublishSerializer,
    MappingSampleSavedSerializer,
    MappingSampleSerializer,
    MappingSetExportSerializer,
    MappingSetSerializer,
    PayloadValidationResultSerializer,
    PayloadValidationSerializer,
    ValueMapSerializer,
)
from mappings.models import CanonicalSchema, FieldRule, MappingSet, ValueMap


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

    @extend_schema(request=PayloadValidationSerializer, responses={200: PayloadValidationResultSerializer})
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

    @extend_schema(request=None, responses={200: CanonicalSchemaSerializer})
    @action(detail=True, methods=["post"])
    def publish(self, request: Request, pk: str | None = None) -> Response:
        """Check the version is a valid JSON Schema, retire the published one and publish this one."""
        schema = services.canonical_schema_publish(schema=self.get_object(), user=request.user)
        return Response(self.get_serializer(schema).data)


# --- mapping sets, field rules and value maps: every write goes through a service --------------------------


class ActionModelPermission(permissions.BasePermission):
    """The model permissions an extra action needs (view's `action_permissions`), e.g. "change" to publish.

    The default RoleModelPermissions reads every POST as "add"; previewing writes nothing (view is enough)
    and publishing or retiring changes an existing version (change).
    """

    def has_permission(self, request: Request, view: Any) -> bool:
        needed = view.action_permissions[view.action]
        opts = view.queryset.model._meta
        return bool(
            request.user
            and request.user.is_authenticated
            and all(request.user.has_perm(f"{opts.app_label}.{perm}_{opts.model_name}") for perm in needed)
        )


class ActionPermissionsMixin:
    action_permissions: dict[str, tuple[str, ...]] = {}

    def get_permissions(self) -> Any:
        if getattr(self, "action", None) in self.action_permissions:
            return [ActionModelPermission()]
        return super().get_permissions()  # type: ignore[misc]


class MappingSetViewSet(EntityScopedViewSetMixin, ActionPermissionsMixin, viewsets.ModelViewSet):
    """Mapping set versions with their rules; `preview`, `publish` (the regression gate), `export`, `import`,
    `create-draft`, `retire` and `samples`. Only drafts change; published versions are changed by a new draft."""

    queryset = MappingSet.objects.select_related(
        "system", "entity", "legal_entity", "created_by", "published_by"
    ).prefetch_related(Prefetch("rules", queryset=FieldRule.objects.order_by("position", "id")))
    serializer_class = MappingSetSerializer
    filterset_fields = ["status", "direction", "system__slug", "entity__name", "legal_entity__code", "lineage"]
    search_fields = ["name", "notes", "system__name", "entity__name"]
    ordering_fields = ["name", "version", "created_at", "published_at"]
    action_permissions = {
        "preview": ("view",),
        "export": ("view",),
        "publish": ("change",),
        "retire": ("change",),
        "create_draft": ("add", "change"),
        "import_export": ("add",),
        "samples": ("change",),
    }

    def perform_create(self, serializer: Any) -> None:
        data = serializer.validated_data
        serializer.instance = services.mapping_set_create(
            name=data["name"],
            system=data["system"],
            entity=data["entity"],
            direction=data["direction"],
            legal_entity=data.get("legal_entity"),
            parent=data.get("parent"),
            notes=data.get("notes", ""),
            user=self.request.user,
        )

    def perform_update(self, serializer: Any) -> None:
        serializer.instance = services.mapping_set_update(
            mapping_set=serializer.instance, data=serializer.validated_data, user=self.request.user, reason="API"
        )

    def perform_destroy(self, instance: MappingSet) -> None:
        services.mapping_set_delete(mapping_set=instance, user=self.request.user)

    def _fresh(self, mapping_set: MappingSet) -> dict[str, Any]:
        return self.get_serializer(self.get_queryset().get(pk=mapping_set.pk)).data

    @extend_schema(request=MappingPreviewSerializer, responses={200: MappingPreviewResultSerializer})
    @action(detail=True, methods=["post"], serializer_class=MappingPreviewSerializer)
    def preview(self, request: Request, pk: str | None = None) -> Response:
        """Map {"payload": {...}}; answers {"output", "errors"}. With "rules", tries those unsaved rules instead."""
        mapping_set = self.get_object()
        serializer = MappingPreviewSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if "rules" in data:
            result = editor.mapping_preview_rules(mapping_set=mapping_set, rules=data["rules"], payload=data["payload"])
        else:
            result = services.mapping_preview(mapping_set=mapping_set, payload=data["payload"])
        return Response(result)

    @extend_schema(request=MappingPublishSerializer, responses={200: MappingPublishReportSerializer})
    @action(detail=True, methods=["post"], serializer_class=MappingPublishSerializer)
    def publish(self, request: Request, pk: str | None = None) -> Response:
        """{"confirm": false} → the regression report (per sample the output diff); {"confirm": true} publishes.

        A draft that breaks a saved sample is refused with 422, listing each sample and field.
        """
        serializer = MappingPublishSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        report = services.mapping_set_publish(
            mapping_set=self.get_object(),
            user=request.user,
            confirm=serializer.validated_data["confirm"],
            no_sample_reason=serializer.validated_data.get("no_sample_reason", ""),
        )
        return Response(editor.publish_report_as_dict(report))

    @extend_schema(responses={200: MappingSetExportSerializer})
    @action(detail=True, methods=["get"])
    def export(self, request: Request, pk: str | None = None) -> Response:
        """The version as JSON with its rules, the value maps they use and the lineage's samples."""
        return Response(services.mapping_set_export(mapping_set=self.get_object()))

    @extend_schema(request=MappingSetExportSerializer, responses={201: MappingSetSerializer})
    # An export nests lists of objects, which only JSON carries.
    @action(detail=False, methods=["post"], url_path="import", url_name="import", parser_classes=[LimitedJSONParser])
    def import_export(self, request: Request) -> Response:
        """POST an export: it becomes a new draft of the matching lineage here (all or nothing)."""
        export = MappingSetExportSerializer(data=request.data)
        export.is_valid(raise_exception=True)
        draft = services.mapping_set_import(data=export.validated_data, user=request.user)
        return Response(self._fresh(draft), status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={201: MappingSetSerializer})
    @action(detail=True, methods=["post"], url_path="create-draft", url_name="create-draft")
    def create_draft(self, request: Request, pk: str | None = None) -> Response:
        """The next draft version copying this one's rules (or the lineage's open draft)."""
        draft = services.mapping_set_create_draft(mapping_set=self.get_object(), user=request.user)
        return Response(self._fresh(draft), status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: MappingSetSerializer})
    @action(detail=True, methods=["post"])
    def retire(self, request: Request, pk: str | None = None) -> Response:
        """Retire this version: it no longer maps anything."""
        mapping_set = services.mapping_set_retire(mapping_set=self.get_object(), user=request.user)
        return Response(self._fresh(mapping_set))

    @extend_schema(request=MappingSampleSerializer, responses={201: MappingSampleSavedSerializer})
    @action(detail=True, methods=["post"], serializer_class=MappingSampleSerializer)
    def samples(self, request: Request, pk: str | None = None) -> Response:
        """Save (or replace) a named sample payload of this mapping's lineage; the publish gate replays it."""
        serializer = MappingSampleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        sample = services.mapping_sample_save(
            mapping_set=self.get_object(), user=request.user, **serializer.validated_data
        )
        return Response({"id": sample.pk, "name": sample.name, "payload": sample.payload}, status=201)


class FieldRuleViewSet(EntityScopedViewSetMixin, viewsets.ModelViewSet):
    entity_scope_field = "mapping_set__legal_entity"
    """Field rules of mapping sets; a write to a published set, an unknown transform or a bad parameter is 400."""

    queryset = FieldRule.objects.select_related("mapping_set").order_by("mapping_set", "position", "id")
    serializer_class = FieldRuleSerializer
    filterset_fields = ["mapping_set", "mapping_set__status", "target_path"]
    search_fields = ["target_path", "notes"]

    def perform_create(self, serializer: Any) -> None:
        rule = FieldRule(**serializer.validated_data)
        serializer.instance = services.field_rule_save(rule=rule, user=self.request.user, reason="rule added (API)")

    def perform_update(self, serializer: Any) -> None:
        rule = serializer.instance
        for name, value in serializer.validated_data.items():
            setattr(rule, name, value)
        serializer.instance = services.field_rule_save(rule=rule, user=self.request.user, reason="rule changed (API)")

    def perform_destroy(self, instance: FieldRule) -> None:
        services.field_rule_delete(rule=instance, user=self.request.user, reason="rule deleted (API)")


class ValueMapViewSet(EntityScopedViewSetMixin, viewsets.ModelViewSet):
    """Value maps with their entries ({"source": canonical}); a map still used by a mapping cannot be deleted."""

    queryset = ValueMap.objects.select_related("legal_entity").prefetch_related("entries")
    serializer_class = ValueMapSerializer
    filterset_fields = ["unmapped", "legal_entity__code", "name"]
    search_fields = ["name", "description"]

    def perform_create(self, serializer: Any) -> None:
        data = dict(serializer.validated_data)
        entries = data.pop("entries", None)
        serializer.instance = services.value_map_save(
            value_map=ValueMap(**data), entries=entries or {}, user=self.request.user, reason="created (API)"
        )

    def perform_update(self, serializer: Any) -> None:
        data = dict(serializer.validated_data)
        entries = data.pop("entries", None)
        value_map = serializer.instance
        for name, value in data.items():
            setattr(value_map, name, value)
        serializer.instance = services.value_map_save(
            value_map=value_map, entries=entries, user=self.request.user, reason="changed (API)"
        )

    def perform_destroy(self, instance: ValueMap) -> None:
        services.value_map_delete(value_map=instance, user=self.request.user)
