"""API views of the exception_queue app: read the queue; approve, reject, replay, fix and bulk replay.

Each action parses its body, calls one service (which checks the permission again, records the Decision
and starts the engine) and renders the item.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from connectors.models import ConnectedSystem
from exception_queue import actions, selectors, services
from exception_queue.api.filters import ExceptionItemFilterSet
from exception_queue.api.serializers import (
    BulkReplayRequestSerializer,
    BulkReplayResultSerializer,
    DecisionRequestSerializer,
    ExceptionItemDetailSerializer,
    ExceptionItemSerializer,
    FixRequestSerializer,
    ItemActionSerializer,
    ItemActRequestSerializer,
    ReplayRequestSerializer,
)
from exception_queue.choices import ReplayMapping
from exception_queue.models import ExceptionItem
from governance.models import LegalEntity
from integrationhub.api.permissions import ActionPermissionMixin
from integrationhub.errors import HubValidationError
from integrationhub.scoping import OperationalScopeViewSetMixin, request_entity_scope

SCOPE_DECIDE = "exceptions:decide"
# `act` runs whichever action is asked for: the view permission lets the call in, the action's own
# permission (checked against the registry below) decides.
PERM_VIEW_ITEM = "exception_queue.view_exceptionitem"


def _mapping(data: dict[str, Any]) -> str:
    return ReplayMapping.CURRENT if data.get("use_current_mapping") else ReplayMapping.ORIGINAL


class ExceptionItemViewSet(OperationalScopeViewSetMixin, ActionPermissionMixin, viewsets.ReadOnlyModelViewSet):
    """The exception queue: items with filters; each decision is a POST with a reason. Only the caller's legal
    entities' items: another entity's answers 404 to a read and to every action."""

    scope_family = "exceptions"
    required_scope: str | None = None  # set per action through @action
    filterset_class = ExceptionItemFilterSet
    search_fields = ["reason", "=message__correlation_id", "=message__canonical_id"]
    ordering_fields = ["created_at", "id", "amount", "category", "state"]

    def get_queryset(self) -> Any:
        items = selectors.exception_item_list()
        if self.action == "retrieve":
            items = items.prefetch_related("decisions__user")
        return items

    def get_serializer_class(self) -> Any:
        return ExceptionItemDetailSerializer if self.action == "retrieve" else ExceptionItemSerializer

    def _answer(self, item: ExceptionItem) -> Response:
        fresh = selectors.exception_item_list().prefetch_related("decisions__user").get(pk=item.pk)
        return Response(ExceptionItemDetailSerializer(fresh).data)

    @staticmethod
    def _body(serializer_class: type, request: Request) -> dict[str, Any]:
        form = serializer_class(data=request.data)
        form.is_valid(raise_exception=True)
        return dict(form.validated_data)

    @extend_schema(request=DecisionRequestSerializer, responses={200: ExceptionItemDetailSerializer})
    @action(detail=True, methods=["post"], action_permission=services.PERM_DECIDE, required_scope=SCOPE_DECIDE)
    def approve(self, request: Request, pk: str | None = None) -> Response:
        """Approve a held item (a second, different approver completes it above the second threshold)."""
        data = self._body(DecisionRequestSerializer, request)
        item = services.exception_item_approve(item=self.get_object(), user=request.user, reason=data["reason"])
        return self._answer(item)

    @extend_schema(request=DecisionRequestSerializer, responses={200: ExceptionItemDetailSerializer})
    @action(detail=True, methods=["post"], action_permission=services.PERM_DECIDE, required_scope=SCOPE_DECIDE)
    def reject(self, request: Request, pk: str | None = None) -> Response:
        """Reject an item with a reason: its message stops."""
        data = self._body(DecisionRequestSerializer, request)
        item = services.exception_item_reject(item=self.get_object(), user=request.user, reason=data["reason"])
        return self._answer(item)

    @extend_schema(request=ReplayRequestSerializer, responses={200: ExceptionItemDetailSerializer})
    @action(detail=True, methods=["post"], action_permission=services.PERM_FIX, required_scope=SCOPE_DECIDE)
    def replay(self, request: Request, pk: str | None = None) -> Response:
        """Replay the item's message unchanged, with the original or the current mapping."""
        data = self._body(ReplayRequestSerializer, request)
        item = services.exception_item_replay(
            item=self.get_object(), user=request.user, reason=data["reason"], mapping=_mapping(data)
        )
        return self._answer(item)

    @extend_schema(request=FixRequestSerializer, responses={200: ExceptionItemDetailSerializer})
    @action(detail=True, methods=["post"], action_permission=services.PERM_FIX, required_scope=SCOPE_DECIDE)
    def fix(self, request: Request, pk: str | None = None) -> Response:
        """Replace the payload with a corrected one (the diff is recorded) and replay it."""
        data = self._body(FixRequestSerializer, request)
        item = services.exception_item_fix_and_replay(
            item=self.get_object(), user=request.user, reason=data["reason"], payload=data["payload"]
        )
        return self._answer(item)

    @extend_schema(responses={200: ItemActionSerializer(many=True)})
    @action(detail=True, methods=["get"], url_path="actions", pagination_class=None, filter_backends=[])
    def available_actions(self, request: Request, pk: str | None = None) -> Response:
        """What you may do with this item now (none once it is closed), including the workflows' actions."""
        item = self.get_object()
        available = actions.item_actions_available(item=item, user=request.user)
        return Response(
            ItemActionSerializer(
                [
                    {
                        "action": str(a.action),
                        "label": a.label,
                        "inputs": list(a.inputs),
                        "choices": {
                            name: [{"value": value, "label": label} for value, label in options]
                            for name, options in a.choices_for(item).items()
                        },
                        "help_text": a.help_text,
                        "dangerous": a.dangerous,
                    }
                    for a in available
                ],
                many=True,
            ).data
        )

    @extend_schema(request=ItemActRequestSerializer, responses={200: ExceptionItemDetailSerializer})
    @action(detail=True, methods=["post"], action_permission=PERM_VIEW_ITEM, required_scope=SCOPE_DECIDE)
    def act(self, request: Request, pk: str | None = None) -> Response:
        """Run any action of the item's `actions/` (retry a workflow step, compensate, link a duplicate…) with
        a reason; the decision is recorded like every other."""
        data = self._body(ItemActRequestSerializer, request)
        item = self.get_object()
        for candidate in actions.item_actions_for_category(item.category):
            # Checked here as well as in the action: a registered handler that forgot its check stays closed.
            if str(candidate.action) == data["action"] and not request.user.has_perm(candidate.permission):
                raise PermissionDenied(f"Your role may not {data['action']} this item.")
        item = actions.item_action_perform(
            item=item, action=data["action"], user=request.user, reason=data["reason"], **data["inputs"]
        )
        return self._answer(item)

    @extend_schema(request=BulkReplayRequestSerializer, responses={202: BulkReplayResultSerializer})
    @action(
        detail=False,
        methods=["post"],
        url_path="bulk-replay",
        action_permission=services.PERM_FIX,
        required_scope=SCOPE_DECIDE,
    )
    def bulk_replay(self, request: Request) -> Response:
        """Replay every open item matching the filter (approval items excluded), one Decision each."""
        data = self._body(BulkReplayRequestSerializer, request)
        system_id = legal_entity_id = None
        if data.get("system"):
            system_id = ConnectedSystem.objects.filter(slug=data["system"]).values_list("pk", flat=True).first()
            if system_id is None:
                raise HubValidationError("Unknown system.", errors=[{"field": "system", "message": "No such slug."}])
        if data.get("legal_entity"):
            legal_entity_id = LegalEntity.objects.filter(code=data["legal_entity"]).values_list("pk", flat=True).first()
            if legal_entity_id is None:
                raise HubValidationError(
                    "Unknown legal entity.", errors=[{"field": "legal_entity", "message": "No such code."}]
                )
        count = services.exception_items_bulk_replay(
            user=request.user,
            reason=data["reason"],
            category=data.get("category"),
            system_id=system_id,
            legal_entity_id=legal_entity_id,
            created_after=data.get("created_after"),
            created_before=data.get("created_before"),
            limit=data["limit"],
            mapping=_mapping(data),
            scope=request_entity_scope(request),
        )
        return Response({"replayed": count}, status=status.HTTP_202_ACCEPTED)
