"""The dispatcher and the sweeper: how stored work reaches the workers.

Ingest only stores; the dispatcher (beat, every second: `sync_tick`) claims received messages, due deliveries
and pending follow-up events and enqueues them in batches once the transaction commits. The sweeper
(`sync_sweep`) re-dispatches what a lost task left behind: messages idle before delivery, deliveries stuck
mid-call, and batch pulls whose cursor stopped moving (`batch_pulls_resume`).
"""

from __future__ import annotations

import datetime
import logging
from collections import defaultdict

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from connectors.choices import SystemState
from connectors.models import ConnectedSystem
from integrationhub.dispatch import enqueue_on_commit
from sync.batch import BATCH_QUEUE
from sync.bulk import _chunks, _locked
from sync.choices import DeliveryStatus, MessageStatus, PollOutcome
from sync.follow_ups import follow_up_events_dispatch
from sync.models import Delivery, Message, PollCursor, Route
from sync.policy import DELIVERY_BATCH_SIZE, DISPATCH_BATCH_SIZE, _setting, stuck_delivery_seconds, sweep_after_seconds

logger = logging.getLogger(__name__)


def messages_enqueue(*, message_ids: list[int], queue: str = "inbound") -> None:
    """Hand messages to the pipeline workers once the current transaction commits."""
    # Imported when called: sync.tasks imports the engine, so a module-level import would be circular.
    from sync.tasks import messages_process_task

    for chunk in _chunks(message_ids, int(_setting("HUB_DISPATCH_BATCH_SIZE", DISPATCH_BATCH_SIZE))):
        enqueue_on_commit(messages_process_task, chunk, queue=queue)


def deliveries_enqueue(*, delivery_ids: list[int]) -> None:
    """Hand deliveries to the delivery workers once the current transaction commits."""
    # Imported when called: sync.tasks imports the engine, so a module-level import would be circular.
    from sync.tasks import deliveries_send_task

    for chunk in _chunks(delivery_ids, int(_setting("HUB_DELIVERY_BATCH_SIZE", DELIVERY_BATCH_SIZE))):
        enqueue_on_commit(deliveries_send_task, chunk, queue="delivery")


@transaction.atomic
def messages_dispatch(*, limit: int = 1000, now: datetime.datetime | None = None) -> int:
    """Claim received messages no worker has yet and enqueue them in batches; returns how many."""
    current = now or timezone.now()
    ids = list(
        _locked(Message.objects.filter(status=MessageStatus.RECEIVED, dispatched_at__isnull=True))
        .order_by("id")
        .values_list("id", flat=True)[:limit]
    )
    if ids:
        Message.objects.filter(pk__in=ids).update(dispatched_at=current)
        messages_enqueue(message_ids=ids)
    return len(ids)


@transaction.atomic
def deliveries_dispatch(*, limit: int = 1000, now: datetime.datetime | None = None) -> int:
    """Enqueue deliveries that are due (new, retry time reached, or released by resume / a closing circuit)."""
    current = now or timezone.now()
    stale = current - datetime.timedelta(seconds=sweep_after_seconds())
    due = (
        Delivery.objects.filter(
            status__in=[DeliveryStatus.PENDING, DeliveryStatus.RETRYING, DeliveryStatus.HELD],
            target_system__state__in=[SystemState.ACTIVE, SystemState.CIRCUIT_OPEN],
        )
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=current))
        .filter(Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=stale))
    )
    rows = list(_locked(due).order_by("next_attempt_at", "id").values_list("id", "target_system_id")[:limit])
    if not rows:
        return 0
    by_target: dict[int, list[int]] = defaultdict(list)
    for delivery_id, target_id in rows:
        by_target[target_id].append(delivery_id)
    open_circuits = set(
        ConnectedSystem.objects.filter(pk__in=by_target, state=SystemState.CIRCUIT_OPEN).values_list("pk", flat=True)
    )
    chosen: list[int] = []
    for target_id, ids in by_target.items():
        # A half-open circuit gets a single probe; the rest wait until it has closed.
        chosen.extend(ids[:1] if target_id in open_circuits else ids)
    Delivery.objects.filter(pk__in=chosen).update(dispatched_at=current)
    deliveries_enqueue(delivery_ids=chosen)
    return len(chosen)


def sync_tick() -> dict[str, int]:
    """One beat of the dispatcher: new messages to the pipeline, due deliveries to the delivery workers."""
    return {
        "messages": messages_dispatch(),
        "deliveries": deliveries_dispatch(),
        "follow_ups": follow_up_events_dispatch(),
    }


@transaction.atomic
def sync_sweep(*, now: datetime.datetime | None = None) -> dict[str, int]:
    """Re-dispatch work a lost task left behind: messages idle before delivery, deliveries stuck mid-call."""
    current = now or timezone.now()
    stale = current - datetime.timedelta(seconds=sweep_after_seconds())
    waiting = [MessageStatus.RECEIVED, MessageStatus.MAPPED, MessageStatus.VALIDATED]
    message_ids = list(
        _locked(
            Message.objects.filter(status__in=waiting).filter(
                Q(dispatched_at__lt=stale) | Q(dispatched_at__isnull=True, received_at__lt=stale)
            )
        )
        .order_by("id")
        .values_list("id", flat=True)[:1000]
    )
    if message_ids:
        Message.objects.filter(pk__in=message_ids).update(dispatched_at=current)
        messages_enqueue(message_ids=message_ids)
        logger.warning("sweeper re-dispatched messages", extra={"count": len(message_ids)})
    # A delivery left "delivering" (worker killed mid-call) may have reached the target: the retry looks
    # it up by idempotency key before sending again (attempts > 0 makes it do so). It is due at once (no retry
    # time): `now` only says what counts as stuck, and a due time taken from it would hold the delivery back
    # for as long as `now` runs ahead of the dispatcher's clock.
    stuck_after = current - datetime.timedelta(seconds=stuck_delivery_seconds())
    stuck = Delivery.objects.filter(status=DeliveryStatus.DELIVERING, updated_at__lt=stuck_after)
    stuck_count = stuck.update(status=DeliveryStatus.RETRYING, next_attempt_at=None, dispatched_at=None)
    return {"messages": len(message_ids), "deliveries": stuck_count, "pulls": batch_pulls_resume(stale=stale)}


def batch_pulls_resume(*, stale: datetime.datetime) -> int:
    """Start again the batch pulls whose run died mid-way: its cursor says running but has not moved since
    `stale` (its lease, renewed each page, has expired by then). The run continues from the stored cursor."""
    # Imported when called: sync.tasks imports the engine, so a module-level import would be circular.
    from sync.tasks import time_entries_batch_pull_task

    stalled = list(
        PollCursor.objects.filter(last_outcome=PollOutcome.RUNNING, updated_at__lt=stale).values_list(
            "system_id", "entity"
        )
    )
    resumed = 0
    for system_id, entity in stalled:
        routes = Route.objects.filter(source_system_id=system_id, entity=entity, active=True).values_list(
            "pk", flat=True
        )
        for route_id in routes:
            enqueue_on_commit(time_entries_batch_pull_task, route_id, queue=BATCH_QUEUE)
            resumed += 1
        # Marked as handed over, so the next sweep does not start it a second time while it runs.
        PollCursor.objects.filter(system_id=system_id, entity=entity, last_outcome=PollOutcome.RUNNING).update(
            last_outcome=PollOutcome.ERROR,
            last_error="The run stopped without finishing (worker lost); the sweeper started it again.",
            updated_at=timezone.now(),
        )
    if resumed:
        logger.warning("sweeper resumed stalled batch pulls", extra={"count": resumed})
    return resumed
