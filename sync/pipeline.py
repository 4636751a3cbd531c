"""Running messages through the stages: one message (`message_process`) or a batch (`messages_process`).

A batch runs in one transaction inside the batch memo's scope: messages locked in one query, their routed
states and new deliveries written in one statement each; when it fails, each message runs in its own
transaction so one bad record never blocks the rest. The deliveries are handed to the delivery workers at the
end, and a full batch asks the dispatcher for the next one at once.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from integrationhub.logging import bind_correlation_id, current_correlation_id
from sync.bulk import related_attach, rows_insert, rows_update
from sync.choices import EVENT_MESSAGE_DELIVERED, MessageStatus
from sync.dispatching import deliveries_enqueue, messages_dispatch
from sync.follow_ups import follow_up_emit, follow_up_emit_many
from sync.models import Delivery, Message
from sync.policy import DISPATCH_BATCH_SIZE, _batch_scope, _routes_for, _setting, policy_for_message
from sync.stages import (
    PipelineStop,
    _flow_stages,
    _ProcessBatch,
    _stage_hold,
    _stage_map,
    _stage_ownership,
    _stage_route,
    _stage_validate,
)

logger = logging.getLogger(__name__)


def message_process(*, message_id: int) -> str | None:
    """Run one message through the stages it has not passed yet; returns its new status (None: nothing to do)."""
    return _message_process(message_id, None)


PROCESSABLE = (MessageStatus.RECEIVED, MessageStatus.MAPPED, MessageStatus.VALIDATED)


# Written by the batch's one UPDATE of its routed messages: every field the map, validate, ownership and
# route stages set (the flow stages and the stages that stop a message save it themselves).
PIPELINE_FIELDS = [
    "status",
    "flow",
    "mapping_set",
    "mapping_version",
    "canonical_payload",
    "canonical_id",
    "legal_entity",
    "ordering_key",
    "source_timestamp",
    "notes",
    "mapped_at",
    "validated_at",
    "queued_at",
    "delivered_at",
    "failed_at",
    "last_error",
    "updated_at",
]


def _message_process(message_id: int, delivery_ids_out: list[int] | None) -> str | None:
    # With delivery_ids_out, the new deliveries are collected for the caller to enqueue in batches.
    with transaction.atomic():
        message = (
            Message.objects.select_for_update(of=("self",))
            .select_related("system", "legal_entity", "mapping_set")
            .filter(pk=message_id)
            .first()
        )
        if message is None or message.status not in PROCESSABLE:
            return None  # already processed: running a task twice has one effect
        status, deliveries = _message_stages(message, None)
        delivery_ids = [delivery.pk for delivery in deliveries]
        if delivery_ids_out is None:
            deliveries_enqueue(delivery_ids=delivery_ids)
        else:
            delivery_ids_out.extend(delivery_ids)
        return status


def _message_stages(message: Message, batch: _ProcessBatch | None) -> tuple[str, list[Delivery]]:
    """Run a locked message through the stages it has not passed yet: (its new status, deliveries to send).
    With a batch, the routed message and its new deliveries are left for the batch to write."""
    previous = current_correlation_id()
    bind_correlation_id(message.correlation_id)
    now = timezone.now()
    try:
        if message.status == MessageStatus.RECEIVED:
            _stage_map(message, now)
        routes = _routes_for(message)
        # Stored on the message so KPIs, the queue and traces group by flow without joining routes.
        message.flow = message.flow or next((route.flow for route in routes if route.flow), "")
        policy = policy_for_message(message, routes)
        flow_stage = _flow_stages.get(message.flow)
        if flow_stage is not None and message.status in (MessageStatus.MAPPED, MessageStatus.VALIDATED):
            flow_stage(message=message, policy=policy, routes=routes, now=now)
            message.save()
            return message.status, []
        if message.status == MessageStatus.MAPPED:
            _stage_validate(message, policy, now)
            _stage_ownership(message, now)
        _stage_hold(message, policy, now)
        deliveries = _stage_route(message, routes, now, batch)
        if batch is None:
            message.save()
            if not routes:
                # Nothing to deliver is delivered too: flows that act on the message (workflows) still hear of it.
                follow_up_emit(EVENT_MESSAGE_DELIVERED, message.pk)
        else:
            message.updated_at = now
            batch.routed.append(message)
            batch.queued.extend(deliveries)
            if not routes:
                batch.unrouted.append(message.pk)
        return message.status, deliveries
    except PipelineStop:
        # A stage parked the message (an exception item, a hold or a stale update) and saved why.
        return message.status, []
    finally:
        bind_correlation_id(previous)


def _messages_process_batch(message_ids: list[int]) -> tuple[dict[str, int], list[int]]:
    """The batch in one transaction: messages locked in one query, their routed states and new deliveries
    written in one statement each (one commit instead of one per message). Raises on any unexpected error,
    having changed nothing."""
    counts: dict[str, int] = defaultdict(int)
    with transaction.atomic():
        messages = list(
            Message.objects.select_for_update(of=("self",))
            .filter(pk__in=message_ids, status__in=PROCESSABLE)
            .order_by("pk")
        )
        for name in ("system", "legal_entity", "mapping_set"):
            related_attach(messages, name)
        existing: dict[int, dict[int, Delivery]] = defaultdict(dict)
        for delivery in Delivery.objects.filter(message_id__in=[m.pk for m in messages]):
            existing[delivery.message_id][delivery.target_system_id] = delivery
        batch = _ProcessBatch(existing=existing)
        for message in messages:
            status, _ = _message_stages(message, batch)
            counts[status] += 1
        rows_insert(Delivery, batch.new_deliveries, returning_ids=True)
        rows_update(Message, batch.routed, PIPELINE_FIELDS)
        follow_up_emit_many(EVENT_MESSAGE_DELIVERED, batch.unrouted, {m.pk: m.replay_count for m in batch.routed})
    skipped = len(set(message_ids)) - len(messages)
    if skipped:
        counts["skipped"] += skipped
    return dict(counts), [delivery.pk for delivery in batch.queued]


def messages_process(*, message_ids: Iterable[int]) -> dict[str, int]:
    """Process a batch of messages in one transaction (see _messages_process_batch); when that fails, each
    message in its own transaction, so one bad record never blocks the rest.

    The batch's deliveries are handed to the delivery workers together at the end (DELIVERY_BATCH_SIZE per
    task) rather than one task per message; were the worker to die before that, they are committed as pending
    and the dispatcher hands them out once their dispatch is stale."""
    ids = list(message_ids)
    with _batch_scope():
        try:
            batch_counts, delivery_ids = _messages_process_batch(ids)
        except Exception:
            logger.warning("message batch failed; processing its messages one by one", exc_info=True)
        else:
            deliveries_enqueue(delivery_ids=delivery_ids)
            _dispatch_next_if_backlog(len(ids))
            return batch_counts
    counts: dict[str, int] = defaultdict(int)
    delivery_ids = []
    with _batch_scope():
        for message_id in ids:
            try:
                status = _message_process(message_id, delivery_ids)
            except Exception:
                # Left in its stage with dispatched_at set: the sweeper retries it; the error is logged once here.
                logger.exception("message processing failed", extra={"message_id": message_id})
                status = "error"
            counts[status or "skipped"] += 1
    deliveries_enqueue(delivery_ids=delivery_ids)
    return dict(counts)


def _dispatch_next_if_backlog(batch_length: int) -> None:
    """A full batch means messages are probably waiting: hand out the next batch now rather than at the
    dispatcher's next tick (up to a second later), so a backlog drains without pauses. Two dispatchers at once
    share the work (SKIP LOCKED)."""
    size = int(_setting("HUB_DISPATCH_BATCH_SIZE", DISPATCH_BATCH_SIZE))
    if batch_length >= size:
        messages_dispatch(limit=size)
