"""The outcome of a call, decided in one place: delivered, retry later, dead, or rejected by the target.

`_record` writes the attempt row, updates the circuit breaker, the cross-reference and the ordering watermark,
and decides retry / dead / rejected from the retry policy; exception items are opened only through the
exception queue's service (`_open_item`, which the stages use too). Settling (`_message_settle`,
`messages_settle_many`, `_settled_state`) is the one way to derive a message's status from its deliveries.
The per-record sender and the batch sender (sync.delivering) both end here.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from connectors.models import ConnectedSystem
from exception_queue.choices import ExceptionCategory
from exception_queue.services import exception_item_open
from sync import circuit
from sync.bulk import rows_update
from sync.choices import (
    DELIVERY_DONE_STATUSES,
    EVENT_MESSAGE_DELIVERED,
    EVENT_MESSAGE_FAILED,
    AttemptOutcome,
    DeliveryStatus,
    MessageStatus,
)
from sync.follow_ups import follow_up_emit, follow_up_emit_many
from sync.models import CrossReference, Delivery, DeliveryAttempt, Message
from sync.ordering import _watermark_advance
from sync.policy import RetryPolicy
from sync.transport import CallOutcome

logger = logging.getLogger(__name__)


def _open_item(message: Message, category: str, reason: str, **fields: Any) -> None:
    exception_item_open(
        category=category,
        reason=reason,
        message=message,
        legal_entity=message.legal_entity,
        system=fields.pop("system", message.system),
        **fields,
    )


def attempt_summary(delivery: Delivery, system: ConnectedSystem, result: CallOutcome, *, probe: bool) -> dict[str, Any]:
    """What an attempt row says about its request (never the payload itself: its size)."""
    return {
        "target": system.slug,
        "operation": result.operation,
        "entity": delivery.message.entity,
        "idempotency_key": delivery.idempotency_key,
        "payload_bytes": len(json.dumps(delivery.outbound_payload or {}, default=str)),
        "probe": probe,
    }


@dataclass(frozen=True)
class FailureDecision:
    """What a failed call leads to: the delivery's next status, when it is tried again, and the exception
    item (category, reason, what to do next) a person gets, if any."""

    status: str
    next_attempt_at: datetime.datetime | None = None
    category: str = ""
    reason: str = ""
    suggested_action: str = ""


def failure_decide(
    *, entity: str, system_slug: str, result: CallOutcome, attempts: int, policy: RetryPolicy, now: datetime.datetime
) -> FailureDecision:
    """The one decision for a failed call, per record and in batches alike: a terminal answer is rejected (an
    item at once), a retryable one is retried on the policy's backoff until its attempts are spent, then dead."""
    if result.outcome == AttemptOutcome.TERMINAL_ERROR:
        category, reason, suggested = terminal_item_text(entity, system_slug, result)
        return FailureDecision(DeliveryStatus.FAILED, None, category, reason, suggested)
    if attempts >= policy.max_attempts:
        return FailureDecision(
            DeliveryStatus.DEAD,
            None,
            ExceptionCategory.DEAD_LETTER,
            f"{attempts} attempts to {system_slug} failed; last: {result.error}",
            "Check the target system, then replay; the replay looks the record up first.",
        )
    delay = policy.delay(attempts, result.retry_after)
    return FailureDecision(DeliveryStatus.RETRYING, now + datetime.timedelta(seconds=delay))


@transaction.atomic
def _record(
    delivery: Delivery,
    system: ConnectedSystem,
    result: CallOutcome,
    policy: RetryPolicy,
    *,
    duration_ms: float,
    task_id: str,
    probe: bool,
    count_in_circuit: bool = True,
) -> str:
    now = timezone.now()
    message = delivery.message
    # Numbered over the delivery's whole life: a replay starts a new retry budget, not a new numbering.
    previous = DeliveryAttempt.objects.filter(delivery=delivery).aggregate(last=Max("number"))["last"] or 0
    DeliveryAttempt.objects.create(
        delivery=delivery,
        system=system,
        number=previous + 1,
        request_summary=attempt_summary(delivery, system, result, probe=probe),
        status_code=result.status_code,
        duration_ms=duration_ms,
        outcome=result.outcome,
        error=result.error[:2000],
        task_id=task_id[:100],
        correlation_id=message.correlation_id,
    )
    delivery.next_attempt_at = None
    delivery.dispatched_at = None
    if result.outcome in (AttemptOutcome.DELIVERED, AttemptOutcome.ALREADY_APPLIED):
        circuit.circuit_record_success(system=system)
        delivery.status = DeliveryStatus.DELIVERED
        delivery.external_id = result.external_id or delivery.external_id
        delivery.delivered_at = now
        delivery.last_error = ""
        delivery.lookup_first = False
        delivery.save()
        if message.canonical_id and delivery.external_id:
            _xref_upsert(system, message.entity, message.canonical_id, delivery.external_id)
        _watermark_advance(delivery)
    else:
        if result.outcome == AttemptOutcome.TERMINAL_ERROR:
            # The system answered (a 4xx): it is up, so the circuit counts it as a success.
            if result.status_code is not None:
                circuit.circuit_record_success(system=system)
        elif count_in_circuit:
            circuit.circuit_record_failure(system=system)
        decision = failure_decide(
            entity=message.entity,
            system_slug=system.slug,
            result=result,
            attempts=delivery.attempts,
            policy=policy,
            now=now,
        )
        delivery.status, delivery.next_attempt_at = decision.status, decision.next_attempt_at
        delivery.last_error = result.error
        delivery.save()
        if decision.category:
            _open_item(
                message,
                decision.category,
                decision.reason,
                delivery=delivery,
                system=system,
                payload_snapshot=delivery.outbound_payload,
                suggested_action=decision.suggested_action,
            )
    _message_settle(message.pk)
    return delivery.status


def terminal_item_text(entity: str, system_slug: str, result: CallOutcome) -> tuple[str, str, str]:
    """The exception item a terminal outcome opens: its category, reason and what to do next."""
    if result.gone:
        return (
            ExceptionCategory.TARGET_RECORD_GONE,
            f"{system_slug} no longer has the {entity} {result.external_id} this update was for: {result.error}",
            "Re-create it at the target (the hub creates it anew and links it), or skip this update if it was "
            "deleted on purpose.",
        )
    if result.cannot_update:
        return (
            ExceptionCategory.TARGET_REJECTED,
            result.error,
            f"Correct the {entity} in {system_slug} by hand (or reverse it there and replay), then resolve this item.",
        )
    return (
        ExceptionCategory.TARGET_REJECTED,
        f"{system_slug} rejected the {entity}: {result.error}",
        "Correct the payload (or the target's data) and replay; it will not be retried alone.",
    )


def _xref_upsert(system: ConnectedSystem, entity: str, canonical_id: str, external_id: str) -> None:
    updated = CrossReference.objects.filter(system=system, entity=entity, canonical_id=canonical_id).update(
        external_id=external_id, updated_at=timezone.now()
    )
    if not updated:
        try:
            with transaction.atomic():
                CrossReference.objects.create(
                    system=system, entity=entity, canonical_id=canonical_id, external_id=external_id
                )
        except IntegrityError:
            logger.warning(
                "cross-reference conflict",
                extra={"system": system.slug, "entity": entity, "canonical_id": canonical_id},
            )


def _settled_state(message: Message, rows: list[tuple[Any, ...]], now: datetime.datetime) -> None:
    """Set the message's status, attempts, due time and last error from its deliveries' rows
    (status, attempts, next_attempt_at, last_error), in delivery order."""
    statuses = {row[0] for row in rows}
    message.attempts = sum(row[1] for row in rows)
    open_rows = [
        row for row in rows if row[0] not in (*DELIVERY_DONE_STATUSES, DeliveryStatus.FAILED, DeliveryStatus.DEAD)
    ]
    errors = [row[3] for row in rows if row[3]]
    message.last_error = errors[-1][:2000] if errors else ""
    if open_rows:
        message.status = MessageStatus.DELIVERING
        due = [row[2] for row in open_rows if row[2] is not None]
        message.next_attempt_at = min(due) if due else None
    elif DeliveryStatus.DEAD in statuses:
        message.status, message.failed_at, message.next_attempt_at = MessageStatus.DEAD, now, None
    elif DeliveryStatus.FAILED in statuses:
        message.status, message.failed_at, message.next_attempt_at = MessageStatus.FAILED, now, None
    elif statuses == {DeliveryStatus.SKIPPED_STALE}:
        message.status, message.next_attempt_at = MessageStatus.SKIPPED_STALE, None
    else:
        message.status, message.delivered_at, message.next_attempt_at = MessageStatus.DELIVERED, now, None


SETTLED_FIELDS = ["status", "attempts", "next_attempt_at", "last_error", "failed_at", "delivered_at", "updated_at"]


SETTLE_ROW_FIELDS = ("status", "attempts", "next_attempt_at", "last_error")


def _message_settle(message_id: int) -> str:
    """Derive the message's status from its deliveries (run after every delivery outcome)."""
    message = Message.objects.select_for_update().get(pk=message_id)
    _settled_state(message, list(message.deliveries.values_list(*SETTLE_ROW_FIELDS)), timezone.now())
    message.save(update_fields=SETTLED_FIELDS)
    if message.status == MessageStatus.DELIVERED:
        follow_up_emit(EVENT_MESSAGE_DELIVERED, message.pk, routed=True)
    elif message.status in (MessageStatus.FAILED, MessageStatus.DEAD):
        follow_up_emit(EVENT_MESSAGE_FAILED, message.pk, routed=True)
    return message.status


def messages_settle_from_rows(rows_by_message: dict[int, list[tuple[Any, ...]]], now: datetime.datetime) -> None:
    """Settle messages whose deliveries' new rows (SETTLE_ROW_FIELDS) the caller holds, having just written them
    (the batch path): the same rule as every settle (`_settled_state`), without reading the deliveries back, in
    one statement."""
    messages = [Message(pk=message_id) for message_id in sorted(rows_by_message)]
    for message in messages:
        _settled_state(message, rows_by_message[message.pk], now)
        message.updated_at = now
    rows_update(Message, messages, SETTLED_FIELDS)


def messages_settle_many(message_ids: Iterable[int]) -> None:
    """`_message_settle` for a batch: the messages locked, their deliveries read and the messages written in
    one statement each, the follow-up events stored together."""
    ids = sorted(set(message_ids))
    if not ids:
        return
    # Locked in id order, as every batch locks them, so two batches never wait on each other in a cycle.
    # Only what the settled state needs: the payloads would be decoded for nothing.
    messages = list(
        Message.objects.select_for_update()
        .filter(pk__in=ids)
        .only("pk", "replay_count", *SETTLED_FIELDS)
        .order_by("pk")
    )
    rows: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for message_id, *row in Delivery.objects.filter(message_id__in=ids).values_list("message_id", *SETTLE_ROW_FIELDS):
        rows[message_id].append(tuple(row))
    now = timezone.now()
    for message in messages:
        _settled_state(message, rows[message.pk], now)
        message.updated_at = now
    rows_update(Message, messages, SETTLED_FIELDS)
    sequences = {m.pk: m.replay_count for m in messages}
    delivered = [m.pk for m in messages if m.status == MessageStatus.DELIVERED]
    follow_up_emit_many(EVENT_MESSAGE_DELIVERED, delivered, sequences, routed=True)
    failed = [m.pk for m in messages if m.status in (MessageStatus.FAILED, MessageStatus.DEAD)]
    follow_up_emit_many(EVENT_MESSAGE_FAILED, failed, sequences, routed=True)
