"""API views of the project app: API keys (session only) and the audit log (read and CSV export)."""

from __future__ import annotations

from typing import Any

import django_filters
from django.http import StreamingHttpResponse
from django.views.generic import TemplateView
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from integrationhub import apikeys, audit
from integrationhub.api import schema as _schema  # noqa: F401  (registers the API key scheme with drf-spectacular)
from integrationhub.api.filters import UtcDateTimeFilter
from integrationhub.api.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateSerializer,
    ApiKeySerializer,
    AuditEventSerializer,
)
from integrationhub.authentication import ApiKeyScopePermission
from integrationhub.models import ApiKey, AuditEvent
from integrationhub.permissions import RoleModelPermissions
from integrationhub.scoping import OperationalScopeViewSetMixin


class CanRevokeApiKey(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.has_perm("integrationhub.change_apikey"))


class ApiKeyFilterSet(django_filters.FilterSet):
    class Meta:
        model = ApiKey
        fields = {"name": ["exact", "icontains"], "prefix": ["exact"]}


class ApiKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet):
    """API keys: create one (the answer carries the key, once), list them, revoke one. Keys are immutable."""

    # A key must not mint or revoke keys: only a person in a browser session can.
    scope_family = None
    queryset = ApiKey.objects.select_related("owner", "created_by", "legal_entity")
    serializer_class = ApiKeySerializer
    filterset_class = ApiKeyFilterSet
    search_fields = ["name", "prefix", "owner__username"]
    ordering_fields = ["created_at", "name", "expires_at", "last_used_at"]

    def get_permissions(self) -> Any:
        if self.action == "revoke":
            return [permissions.IsAuthenticated(), ApiKeyScopePermission(), CanRevokeApiKey()]
        return super().get_permissions()

    @extend_schema(request=ApiKeyCreateSerializer, responses={201: ApiKeyCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Create a key acting as you, within the scopes given. The answer's `key` is the only copy."""
        serializer = ApiKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        created = apikeys.api_key_create(
            **serializer.validated_data, owner=request.user, created_by=request.user, request=request
        )
        body = ApiKeyCreatedSerializer(created.api_key).data
        body["key"] = created.key
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=ApiKeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        """Revoke the key now; further calls with it get 401."""
        api_key = apikeys.api_key_revoke(api_key=self.get_object(), user=request.user, request=request)
        return Response(ApiKeySerializer(api_key).data)


class AuditEventFilterSet(django_filters.FilterSet):
    actor = django_filters.CharFilter(field_name="actor_username", help_text="Username of the actor.")
    since = UtcDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    until = UtcDateTimeFilter(field_name="occurred_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["action", "object_type", "object_id", "correlation_id"]


class AuditEventViewSet(OperationalScopeViewSetMixin, viewsets.ReadOnlyModelViewSet):
    """The append-only audit log: who did what, when, from where. Filter, search, or export as CSV; a user or key
    scoped to some legal entities reads (and exports) only the events about their entities' records."""

    scope_family = "audit"
    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    permission_classes = [ApiKeyScopePermission, RoleModelPermissions]
    filterset_class = AuditEventFilterSet
    search_fields = ["summary", "actor_username", "object_id", "correlation_id"]
    ordering_fields = ["occurred_at", "action", "actor_username"]
    ordering = ["-occurred_at", "-id"]

    @extend_schema(responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV, one row each")})
    @action(detail=False, methods=["get"], url_path="export", pagination_class=None)
    def export(self, request: Request) -> StreamingHttpResponse:
        """The events matching the same filters as the list, as one CSV file (streamed, not paginated)."""
        events = self.filter_queryset(self.get_queryset()).iterator(chunk_size=2000)
        response = StreamingHttpResponse(audit.audit_event_csv_rows(events), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="audit-events.csv"'
        return response


class ApiDocsView(TemplateView):
    """Swagger UI for /api/schema/, served from static/ (drf-spectacular-sidecar): no CDN, no inline script."""

    template_name = "api_docs.html"
