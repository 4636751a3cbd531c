"""Retention: payloads and delivery attempts pruned past the retention settings, in bounded batches.

Message rows and their stage timestamps stay for the KPIs; messages with an open exception item keep
everything, and failed or dead messages keep their payloads for a replay.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from sync.choices import MessageStatus
from sync.models import Delivery, DeliveryAttempt, Message
from sync.policy import _setting

logger = logging.getLogger(__name__)


# Messages whose payloads may go: the work is done. Failed and dead messages keep theirs for a replay.
PRUNABLE_STATUSES = (MessageStatus.DELIVERED, MessageStatus.SKIPPED_STALE)


def retention_payload_days() -> float:
    return _setting("HUB_RETENTION_DAYS", 30)


def retention_attempt_days() -> float:
    return _setting("HUB_RETENTION_ATTEMPT_DAYS", max(90, retention_payload_days()))


@dataclass(frozen=True)
class RetentionResult:
    """What one retention run pruned, and whether work was left for the next run (the batches ran out)."""

    payloads_pruned: int
    attempts_deleted: int
    more: bool


def _open_item_message_ids() -> QuerySet:
    from exception_queue.choices import ExceptionState
    from exception_queue.models import ExceptionItem

    return ExceptionItem.objects.filter(state=ExceptionState.OPEN, message__isnull=False).values("message_id")


def retention_prune(
    *, now: datetime.datetime | None = None, batch_size: int = 1000, max_batches: int = 20
) -> RetentionResult:
    """Prune past the retention settings in bounded batches, each in its own short transaction: first blank
    the payloads (raw, canonical, outbound) of messages delivered more than HUB_RETENTION_DAYS ago, keeping
    the row and its stage timestamps for the KPIs; then delete delivery attempts older than
    HUB_RETENTION_ATTEMPT_DAYS. Messages with an open exception item keep everything; decisions, exception
    items and message rows are never deleted."""
    current = now or timezone.now()
    payload_cutoff = current - datetime.timedelta(days=retention_payload_days())
    attempt_cutoff = current - datetime.timedelta(days=retention_attempt_days())
    open_items = _open_item_message_ids()
    prunable = (
        Message.objects.filter(status__in=PRUNABLE_STATUSES)
        .filter(Q(delivered_at__lt=payload_cutoff) | Q(delivered_at__isnull=True, received_at__lt=payload_cutoff))
        .filter(Q(raw_payload__isnull=False) | Q(canonical_payload__isnull=False))
        .exclude(pk__in=open_items)
    )
    old_attempts = DeliveryAttempt.objects.filter(created_at__lt=attempt_cutoff).exclude(
        delivery__message_id__in=open_items
    )
    payloads = attempts = batches = 0
    more = False
    while True:
        if batches >= max_batches:
            more = True
            break
        with transaction.atomic():
            ids = list(prunable.order_by("id").values_list("id", flat=True)[:batch_size])
            if not ids:
                break
            # None is SQL NULL here (not JSON null), so a pruned row no longer matches `isnull=False`.
            Message.objects.filter(pk__in=ids).update(raw_payload=None, canonical_payload=None, updated_at=current)
            Delivery.objects.filter(message_id__in=ids).update(outbound_payload=None)
        payloads += len(ids)
        batches += 1
    while True:
        if batches >= max_batches:
            more = True
            break
        with transaction.atomic():
            ids = list(old_attempts.order_by("id").values_list("id", flat=True)[:batch_size])
            if not ids:
                break
            DeliveryAttempt.objects.filter(pk__in=ids).delete()
        attempts += len(ids)
        batches += 1
    if payloads or attempts:
        logger.info("retention pruned", extra={"payloads": payloads, "attempts": attempts, "more": more})
    return RetentionResult(payloads, attempts, more)
