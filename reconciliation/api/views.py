"""API views of the reconciliation: list runs and their rows (in the caller's legal-entity scope), start a run.

Reads need the exceptions:read scope and the view permission of runs; starting a run exceptions:decide and the
add permission (finance), like the page's "run now". A run is queued: the answer is 202 with the run to poll.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from integrationhub.models import ApiKey
from reconciliation.api.filters import ReconciliationRowFilterSet, ReconciliationRunFilterSet
from reconciliation.api.serializers import (
    ReconciliationRowSerializer,
    ReconciliationRunSerializer,
    ReconciliationRunStartSerializer,
)
from reconciliation.choices import RunTrigger
from reconciliation.models import ReconciliationRow, ReconciliationRun
from reconciliation.selectors import in_scope, scope_of
from reconciliation.services import reconciliation_run_start


class ScopedQuerysetMixin:
    """Lists and details see only the caller's legal entities; another entity's record answers 404."""

    def get_queryset(self) -> Any:
        request = self.request  # type: ignore[attr-defined]
        api_key = request.auth if isinstance(request.auth, ApiKey) else None
        return in_scope(super().get_queryset(), scope_of(request.user, api_key))  # type: ignore[misc]


class ReconciliationRunViewSet(ScopedQuerysetMixin, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Reconciliation runs, newest first: when, who or what started them, scope, status, figures; POST starts one."""

    scope_family = "exceptions"
    queryset = ReconciliationRun.objects.select_related("legal_entity", "started_by", "failed_system")
    serializer_class = ReconciliationRunSerializer
    filterset_class = ReconciliationRunFilterSet
    ordering_fields = ["created_at", "finished_at", "id", "unexplained_amount", "differences"]
    ordering = ["-created_at", "-id"]
    search_fields = ["=correlation_id", "error"]

    @extend_schema(request=ReconciliationRunStartSerializer, responses={202: ReconciliationRunSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Queue a run of a legal entity's period (a run of the same entity and period already queued or running
        is answered instead); audited."""
        form = ReconciliationRunStartSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        api_key = request.auth if isinstance(request.auth, ApiKey) else None
        run = reconciliation_run_start(
            legal_entity=form.validated_data["legal_entity"],
            period=form.validated_data["period"],
            trigger=RunTrigger.API,
            user=request.user,
            api_key=api_key,
            request=request,
        )
        return Response(ReconciliationRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class ReconciliationRowViewSet(ScopedQuerysetMixin, viewsets.ReadOnlyModelViewSet):
    """The rows of runs: per kind, project and person, approved, posted, queued, withdrawn and unexplained, with
    the entries behind each; filter by `run` for one run's rows."""

    scope_family = "exceptions"
    queryset = ReconciliationRow.objects.select_related("legal_entity")
    serializer_class = ReconciliationRowSerializer
    filterset_class = ReconciliationRowFilterSet
    ordering_fields = ["id", "unexplained_amount", "approved_amount", "period"]
    ordering = ["run", "kind", "project", "person", "id"]
    search_fields = ["project_name", "person_name", "=project", "=person"]
