"""API views of the insights app: the KPIs (read-only, API key scope `kpis:read`)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from insights import selectors
from insights.api.serializers import KpiDashboardSerializer, KpiQuerySerializer
from insights.choices import PERM_VIEW_KPIS
from integrationhub.authentication import ApiKeyScopePermission
from integrationhub.errors import HubValidationError
from integrationhub.scoping import request_entity_scope


class CanViewKpis(BasePermission):
    """The user (a session, or an API key's owner) holds insights.view_kpis (leader, auditor, admin)."""

    message = "Viewing KPIs needs the insights.view_kpis permission (the leader, auditor or integration admin role)."

    def has_permission(self, request: Any, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.has_perm(PERM_VIEW_KPIS))


class KpiView(generics.GenericAPIView):
    """Every KPI of the leaders' dashboard for a time range (see docs/leader.md for each figure's source rows)."""

    scope_family = "kpis"
    permission_classes = [ApiKeyScopePermission, CanViewKpis]
    serializer_class = KpiDashboardSerializer
    pagination_class = None
    filter_backends: list[Any] = []

    @extend_schema(parameters=[KpiQuerySerializer], responses={200: KpiDashboardSerializer})
    def get(self, request: Request) -> Response:
        query = KpiQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        try:
            window = selectors.kpi_window_resolve(key=data["range"], start=data.get("start"), end=data.get("end"))
        except selectors.KpiRangeError as error:
            raise HubValidationError(
                str(error),
                errors=[{"field": "range", "message": str(error)}],
                hint="Send range=24h|7d|30d|90d, or range=custom with start and end (ISO 8601).",
            ) from None
        return Response(
            KpiDashboardSerializer(
                selectors.kpi_dashboard_cached(window=window, scope=request_entity_scope(request))
            ).data
        )
