"""API views of the sync app: the inbound webhook endpoint, messages, traces, delivery attempts, file drops.

The inbound webhook is a plain Django view rather than DRF on purpose: it is the hottest path of the hub,
it authenticates by signature instead of session, and it must read the raw body untouched to verify the
signature. The rest are thin DRF viewsets over sync.selectors and the services.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from integrationhub.api.permissions import ActionPermissionMixin
from integrationhub.errors import PROBLEM_CONTENT_TYPE, HubValidationError, problem
from integrationhub.logging import correlation_id_from_headers, new_correlation_id
from integrationhub.parsers import NulRefusingFormParser, NulRefusingMultiPartParser
from integrationhub.scoping import OperationalScopeViewSetMixin, request_entity_scope, systems_in_scope
from sync import selectors
from sync.api.filters import DeliveryAttemptFilterSet, FileDropFilterSet, MessageFilterSet
from sync.api.inbound import inbound_answer
from sync.api.serializers import (
    DeliveryAttemptSerializer,
    FileDropSerializer,
    FileDropUploadSerializer,
    MessageDetailSerializer,
    MessageReplayResultSerializer,
    MessageReplaySerializer,
    MessageSerializer,
    TraceStepSerializer,
)
from sync.choices import FileDropStatus
from sync.models import FileDrop, Message


def correlation_id_from(request: HttpRequest) -> str:
    """X-Correlation-ID if sent, else the trace id of a W3C traceparent, else the request's (or a new) id."""
    return (
        correlation_id_from_headers(request.headers) or getattr(request, "correlation_id", None) or new_correlation_id()
    )


@csrf_exempt
@require_POST
def inbound_webhook(request: HttpRequest, system_slug: str, event_type: str) -> JsonResponse:
    """POST /api/v1/inbound/<system-slug>/<event-type>/: 202 stored, 200 duplicate, 4xx problem+json.

    Behind gunicorn, InboundWebhookApplication answers these requests before Django; this view serves the
    same answer through Django's handler (the test client, runserver)."""
    answer = inbound_answer(
        system_slug=system_slug,
        event_type=event_type,
        headers={key.lower(): value for key, value in request.headers.items()},
        content_length=request.META.get("CONTENT_LENGTH"),
        read_body=lambda: request.body,
        correlation_id=correlation_id_from(request),
    )
    response = JsonResponse(answer.body, status=answer.status, content_type=answer.content_type)
    for name, value in answer.headers.items():
        response[name] = value
    return response


# --- messages, traces, attempts ------------------------------------------------------------------------

PERM_REPLAY_MESSAGE = "sync.change_message"
SCOPE_MESSAGES_REPLAY = "messages:replay"


def _trace_response(steps: list[selectors.TraceStep]) -> Response:
    return Response(TraceStepSerializer([step.as_dict() for step in steps], many=True).data)


class MessageViewSet(OperationalScopeViewSetMixin, ActionPermissionMixin, viewsets.ReadOnlyModelViewSet):
    """Messages (read-only), their trace, and a replay by an integration admin; only the caller's legal entities'
    messages (another entity's answers 404, to a read and to a replay alike)."""

    scope_family = "messages"
    required_scope: str | None = None  # set per action (replay) through @action
    serializer_class = MessageSerializer
    filterset_class = MessageFilterSet
    search_fields = ["=correlation_id", "=idempotency_key", "=canonical_id", "event_type"]
    ordering_fields = ["received_at", "id", "status", "delivered_at"]

    def get_queryset(self) -> Any:
        if self.action == "retrieve":
            return Message.objects.select_related("system", "legal_entity").prefetch_related(
                "deliveries__target_system"
            )
        return selectors.message_list()

    def get_serializer_class(self) -> Any:
        return MessageDetailSerializer if self.action == "retrieve" else MessageSerializer

    # Not paginated: the whole trace of one correlation id, as a list.
    @extend_schema(responses={200: TraceStepSerializer(many=True)})
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def trace(self, request: Request, pk: str | None = None) -> Response:
        """Every stage of this message's correlation id, across systems, in order."""
        message = self.get_object()
        scope = request_entity_scope(request)
        return _trace_response(selectors.message_trace(correlation_id=message.correlation_id, scope=scope))

    @extend_schema(request=MessageReplaySerializer, responses={202: MessageReplayResultSerializer})
    @action(
        detail=True,
        methods=["post"],
        action_permission=PERM_REPLAY_MESSAGE,
        required_scope=SCOPE_MESSAGES_REPLAY,
    )
    def replay(self, request: Request, pk: str | None = None) -> Response:
        """Run the message through the pipeline again; a delivered one is looked up at the target first."""
        from exception_queue.choices import ReplayMapping
        from exception_queue.services import message_replay_request

        message = self.get_object()
        form = MessageReplaySerializer(data=request.data)
        form.is_valid(raise_exception=True)
        mapping = ReplayMapping.CURRENT if form.validated_data["use_current_mapping"] else ReplayMapping.ORIGINAL
        decision = message_replay_request(
            message=message, user=request.user, reason=form.validated_data["reason"], mapping=mapping
        )
        message.refresh_from_db()
        return Response(
            {"decision_id": decision.pk, "message": MessageSerializer(message).data}, status=status.HTTP_202_ACCEPTED
        )


class TraceViewSet(viewsets.GenericViewSet):
    """GET /traces/?correlation_id= (or ?external_id=): every stage of the work, across systems, in order."""

    scope_family = "messages"
    # For the model permission (view_message) only: a trace is built by the selectors.
    queryset = Message.objects.none()
    serializer_class = TraceStepSerializer
    filter_backends: list[Any] = []
    pagination_class = None

    @extend_schema(
        parameters=[
            OpenApiParameter("correlation_id", str, description="The correlation id to trace."),
            OpenApiParameter("external_id", str, description="Or a record's id at its source or a target."),
        ],
        responses={200: TraceStepSerializer(many=True)},
    )
    def list(self, request: Request) -> Response:
        correlation_id = request.query_params.get("correlation_id", "").strip()
        external_id = request.query_params.get("external_id", "").strip()
        # Another entity's work reads as no work at all: an empty trace, the same as an unknown id.
        scope = request_entity_scope(request)
        if correlation_id:
            return _trace_response(selectors.message_trace(correlation_id=correlation_id, scope=scope))
        if external_id:
            return _trace_response(selectors.record_trace(external_id=external_id, scope=scope))
        raise HubValidationError(
            "Give correlation_id or external_id.",
            errors=[{"field": "correlation_id", "message": "correlation_id or external_id is required."}],
        )


class DeliveryAttemptViewSet(OperationalScopeViewSetMixin, viewsets.ReadOnlyModelViewSet):
    """Every call to a target system (append-only): outcome, status code, duration, error; the caller's legal
    entities' calls only."""

    scope_family = "messages"
    serializer_class = DeliveryAttemptSerializer
    filterset_class = DeliveryAttemptFilterSet
    search_fields = ["=correlation_id", "error"]
    ordering_fields = ["created_at", "id", "duration_ms", "status_code"]

    def get_queryset(self) -> Any:
        return selectors.delivery_attempt_list()


# --- file drops ----------------------------------------------------------------------------------------


class FileDropViewSet(OperationalScopeViewSetMixin, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """POST a CSV file (multipart: system, entity, file): every row becomes a message, all or nothing.
    Past uploads are listed with their row errors (those of systems serving only the caller's legal entities)."""

    # Uploading is sending events; reading past uploads is reading messages.
    scope_family = "events"
    queryset = FileDrop.objects.select_related("system", "uploaded_by")
    serializer_class = FileDropSerializer
    filterset_class = FileDropFilterSet
    parser_classes = [NulRefusingMultiPartParser, NulRefusingFormParser]
    search_fields = ["file_name", "=sha256", "=correlation_id"]
    ordering_fields = ["created_at", "id"]

    @property
    def required_scope(self) -> str | None:
        return None if self.request.method == "POST" else "messages:read"

    @extend_schema(request={"multipart/form-data": FileDropUploadSerializer}, responses={201: FileDropSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        from connectors.models import ConnectedSystem
        from sync.services import file_drop_ingest

        form = FileDropUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        # Another entity's system reads as an unknown one: uploading into it would store that entity's messages.
        systems = systems_in_scope(ConnectedSystem.objects.all(), request_entity_scope(request))
        system = systems.filter(slug=form.validated_data["system"]).first()
        if system is None:
            raise HubValidationError(
                "No connected system has that slug.", errors=[{"field": "system", "message": "Unknown system."}]
            )
        upload = form.validated_data["file"]
        drop = file_drop_ingest(
            system=system,
            entity=form.validated_data["entity"],
            file_name=upload.name or "upload.csv",
            content=upload.read(),
            user=request.user,
        )
        body = FileDropSerializer(drop).data
        if drop.status == FileDropStatus.REJECTED:
            # All or nothing: a problem+json answer that still carries the whole report.
            problem_body = problem(
                status=422,
                title="Some rows of the file are not valid",
                detail=f"{len(drop.errors)} error(s); nothing of the file was stored.",
                code="file_drop_rejected",
                errors=drop.errors,
                hint="Correct the rows listed in `errors` (row 1 is the header) and upload the file again.",
            )
            return Response({**problem_body, "file_drop": body}, status=422, content_type=PROBLEM_CONTENT_TYPE)
        return Response(body, status=status.HTTP_201_CREATED)
