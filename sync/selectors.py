"""Reads of the sync engine: the trace of a correlation id, and message lookups."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db.models import Q, QuerySet

from integrationhub.scoping import EntityScope, records_in_scope
from sync.models import CrossReference, Delivery, DeliveryAttempt, Message


def _scoped(queryset: QuerySet, scope: EntityScope | None) -> QuerySet:
    """`queryset` within `scope` (a user's or key's legal entities); None for the engine's own reads."""
    return queryset if scope is None else records_in_scope(queryset, scope=scope)


# The stage timestamps of a message, in pipeline order.
MESSAGE_STAGES = (
    ("received", "received_at"),
    ("mapped", "mapped_at"),
    ("validated", "validated_at"),
    ("held", "held_at"),
    ("queued", "queued_at"),
    ("delivered", "delivered_at"),
    ("failed", "failed_at"),
)


@dataclass(frozen=True)
class TraceStep:
    """One thing that happened to the work of a correlation id."""

    at: datetime.datetime
    stage: str
    message_id: int
    system: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at": self.at.isoformat()}


def message_trace(*, correlation_id: str, scope: EntityScope | None = None) -> list[TraceStep]:
    """Every stage of a correlation id across systems, in time order: message stages, each delivery attempt,
    exception items and the decisions people took on them; only the rows within `scope`, if given."""
    from exception_queue.models import Decision, ExceptionItem

    steps: list[TraceStep] = []
    messages = list(
        _scoped(Message.objects.select_related("system"), scope).filter(correlation_id=correlation_id).order_by("id")
    )
    for message in messages:
        for stage, attribute in MESSAGE_STAGES:
            at = getattr(message, attribute)
            if at is not None:
                steps.append(TraceStep(at, stage, message.pk, message.system.slug, {"event_type": message.event_type}))
    ids = [message.pk for message in messages]
    # A delivery's attempts, and the calls the correlation id's workflow steps made (they have no delivery).
    attempts = _scoped(DeliveryAttempt.objects.select_related("delivery", "system"), scope).filter(
        Q(delivery__message_id__in=ids) | Q(delivery__isnull=True, correlation_id=correlation_id)
    )
    for attempt in attempts:
        summary = attempt.request_summary or {}
        detail = {
            "number": attempt.number,
            "status_code": attempt.status_code,
            "duration_ms": attempt.duration_ms,
            "error": attempt.error,
        }
        if attempt.delivery is None:
            detail |= {key: summary[key] for key in ("operation", "flow", "step", "workflow_run") if key in summary}
        steps.append(
            TraceStep(
                attempt.created_at,
                f"attempt:{attempt.outcome}",
                attempt.delivery.message_id if attempt.delivery else int(summary.get("message_id") or 0),
                attempt.system.slug if attempt.system else "",
                detail,
            )
        )
    for item in _scoped(ExceptionItem.objects.select_related("system"), scope).filter(message_id__in=ids):
        steps.append(
            TraceStep(
                item.created_at,
                f"exception:{item.category}",
                item.message_id or 0,
                item.system.slug if item.system else "",
                {"item_id": item.pk, "reason": item.reason, "state": item.state},
            )
        )
    for decision in _scoped(Decision.objects.all(), scope).filter(message_id__in=ids):
        steps.append(
            TraceStep(
                decision.created_at,
                f"decision:{decision.action}",
                decision.message_id or 0,
                "",
                {"user_id": decision.user_id, "reason": decision.reason, "item_id": decision.item_id},
            )
        )
    # Within one instant, pipeline order decides (received before mapped, and so on).
    order = {stage: index for index, (stage, _) in enumerate(MESSAGE_STAGES)}
    return sorted(steps, key=lambda step: (step.at, order.get(step.stage, len(order)), step.message_id))


def message_list(
    *, status: str | None = None, system_id: int | None = None, scope: EntityScope | None = None
) -> QuerySet[Message]:
    """Messages, newest first, within `scope` if given, optionally by status and source system."""
    messages = _scoped(Message.objects.select_related("system", "legal_entity"), scope)
    if status:
        messages = messages.filter(status=status)
    if system_id:
        messages = messages.filter(system_id=system_id)
    return messages


def message_detail(*, message_id: int, scope: EntityScope | None = None) -> Message | None:
    """One message with its system, legal entity and deliveries; None if missing or outside `scope`."""
    return (
        _scoped(Message.objects.select_related("system", "legal_entity"), scope)
        .prefetch_related("deliveries__target_system")
        .filter(pk=message_id)
        .first()
    )


def correlation_ids_for_external_id(
    *, external_id: str, limit: int = 20, scope: EntityScope | None = None
) -> list[str]:
    """The correlation ids of the newest messages (within `scope`, if given) about a record, by its id at the
    source or at a target."""
    ids = (
        _scoped(Message.objects.all(), scope)
        .filter(Q(canonical_id=external_id) | Q(raw_payload__id=external_id) | Q(deliveries__external_id=external_id))
        .order_by("-id")
        .values_list("correlation_id", flat=True)
    )
    seen: list[str] = []
    for correlation_id in ids[: limit * 5]:
        if correlation_id not in seen:
            seen.append(correlation_id)
        if len(seen) >= limit:
            break
    return seen


def record_trace(*, external_id: str, scope: EntityScope | None = None) -> list[TraceStep]:
    """Every stage of every correlation id that touched a record (by external id), in time order."""
    steps: list[TraceStep] = []
    for correlation_id in correlation_ids_for_external_id(external_id=external_id, scope=scope):
        steps.extend(message_trace(correlation_id=correlation_id, scope=scope))
    order = {stage: index for index, (stage, _) in enumerate(MESSAGE_STAGES)}
    return sorted(steps, key=lambda step: (step.at, order.get(step.stage, len(order)), step.message_id))


def delivery_attempt_list(*, scope: EntityScope | None = None) -> QuerySet[DeliveryAttempt]:
    """Delivery attempts within `scope` if given, newest first, with their delivery and target system."""
    attempts = _scoped(DeliveryAttempt.objects.select_related("delivery", "system"), scope)
    return attempts.order_by("-created_at", "-id")


# Deliveries whose call may have reached the target although no answer said so: tried at least once and
# neither delivered nor refused by the target (a held one waits at an open circuit or a paused target after
# an attempt whose answer was lost).
MAYBE_LANDED_STATUSES = ("delivering", "retrying", "held", "dead")


def record_external_ids(*, system_id: int, entity: str, canonical_ids: Iterable[str]) -> dict[str, str]:
    """canonical id → the id the target gave the record (its cross-reference), for the records it holds."""
    wanted = sorted({canonical_id for canonical_id in canonical_ids if canonical_id})
    if not wanted:
        return {}
    return dict(
        CrossReference.objects.filter(system_id=system_id, entity=entity, canonical_id__in=wanted).values_list(
            "canonical_id", "external_id"
        )
    )


def record_unanswered_keys(
    *, system_id: int, entity: str, canonical_ids: Iterable[str], exclude_delivery_ids: Iterable[int] = ()
) -> dict[str, tuple[str, ...]]:
    """canonical id → the keys of the record's earlier deliveries to this target that were sent but never
    answered with success (a create may have landed there), newest first: looked up before a create."""
    wanted = sorted({canonical_id for canonical_id in canonical_ids if canonical_id})
    if not wanted:
        return {}
    rows = (
        Delivery.objects.filter(
            target_system_id=system_id,
            status__in=MAYBE_LANDED_STATUSES,
            attempts__gt=0,
            message__entity=entity,
            message__canonical_id__in=wanted,
        )
        .exclude(pk__in=list(exclude_delivery_ids))
        .order_by("-pk")
        .values_list("message__canonical_id", "idempotency_key")
    )
    keys: dict[str, list[str]] = {}
    for canonical_id, key in rows:
        keys.setdefault(canonical_id, []).append(key)
    return {canonical_id: tuple(found[:5]) for canonical_id, found in keys.items()}
