"""The follow-up event bus: what happens after a message is delivered or failed, outside its transaction.

Subscribers (the workflows, registered at import time) are told of `EVENT_MESSAGE_DELIVERED` and
`EVENT_MESSAGE_FAILED` through an outbox: an event row stored in the transaction that settles the message,
handed out by the dispatcher and run in a worker, each in the transaction that marks it handled. Its own
module because the stages, the outcome and the pipeline all emit events, and the bus needs none of them.
"""

from __future__ import annotations

import datetime
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from integrationhub.dispatch import enqueue_on_commit
from sync.bulk import _chunks, _locked
from sync.choices import FollowUpStatus
from sync.models import FollowUpEvent, Message
from sync.policy import sweep_after_seconds

logger = logging.getLogger(__name__)


FOLLOW_UP_BATCH_SIZE = 100


FOLLOW_UP_MAX_ATTEMPTS = 10


_subscribers: dict[str, list[Callable[[int], None]]] = defaultdict(list)


# Handlers that only act on messages the engine did not route (the workflows act on those themselves).
_unrouted_only: set[Callable[[int], None]] = set()


def follow_up_subscribe(event: str, handler: Callable[[int], None], *, unrouted_only: bool = False) -> None:
    """Register `handler(message_id)` for `event`. Handlers run in a worker, inside the transaction that marks
    the event handled, so the database writes of a handler happen exactly once; a handler that raises is
    retried with backoff. Register at import time (an app's ready()), so web and worker processes agree.

    With `unrouted_only`, the handler is told only of messages that had no route: a routed message stores no
    event for it (a plain sync of thousands of records then pays nothing for a subscriber that ignores them)."""
    if handler not in _subscribers[event]:
        _subscribers[event].append(handler)
    if unrouted_only:
        _unrouted_only.add(handler)


def subscribe(event: str, *, unrouted_only: bool = False) -> Callable[[Callable[[int], None]], Callable[[int], None]]:
    """Decorator form of follow_up_subscribe: `@subscribe(EVENT_MESSAGE_DELIVERED)`."""

    def register(handler: Callable[[int], None]) -> Callable[[int], None]:
        follow_up_subscribe(event, handler, unrouted_only=unrouted_only)
        return handler

    return register


def follow_up_unsubscribe(event: str, handler: Callable[[int], None]) -> None:
    """Remove a handler (tests, reloading a plugin)."""
    if handler in _subscribers.get(event, []):
        _subscribers[event].remove(handler)
    _unrouted_only.discard(handler)


def _listened(event: str, routed: bool) -> bool:
    """Whether any subscriber wants `event` for a message that was (or was not) routed to targets."""
    return any(not routed or handler not in _unrouted_only for handler in _subscribers.get(event, ()))


def follow_up_emit(event: str, message_id: int, *, routed: bool = False) -> None:
    """Store the event in the caller's transaction (an outbox row) when anyone subscribes to it; the
    dispatcher hands it to the subscribers after commit. Emitting twice in one run of a message is one event.
    `routed`: the message went to targets through routes (subscribers with unrouted_only are not told)."""
    if not _listened(event, routed):
        return  # nobody listens: no row, so the hot path pays nothing for an unused event
    sequence = Message.objects.filter(pk=message_id).values_list("replay_count", flat=True).first() or 0
    FollowUpEvent.objects.bulk_create(
        [FollowUpEvent(name=event, message_id=message_id, sequence=sequence)], ignore_conflicts=True
    )


def follow_up_emit_many(
    event: str, message_ids: list[int], sequences: Mapping[int, int] | None = None, *, routed: bool = False
) -> None:
    """`follow_up_emit` for many messages in one statement (the batch path); their replay counts are read
    in one query unless the caller has them (`sequences`)."""
    if not message_ids or not _listened(event, routed):
        return
    if sequences is None:
        sequences = dict(Message.objects.filter(pk__in=message_ids).values_list("pk", "replay_count"))
    FollowUpEvent.objects.bulk_create(
        [FollowUpEvent(name=event, message_id=pk, sequence=sequences.get(pk, 0)) for pk in message_ids],
        batch_size=1000,
        ignore_conflicts=True,
    )


@transaction.atomic
def follow_up_events_dispatch(*, limit: int = 1000, now: datetime.datetime | None = None) -> int:
    """Claim due pending follow-up events and enqueue them in batches; returns how many."""
    # Imported when called: sync.tasks imports the engine, so a module-level import would be circular.
    from sync.tasks import follow_up_events_process_task

    current = now or timezone.now()
    stale = current - datetime.timedelta(seconds=sweep_after_seconds())
    due = (
        FollowUpEvent.objects.filter(status=FollowUpStatus.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=current))
        .filter(Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=stale))
    )
    ids = list(_locked(due).order_by("id").values_list("id", flat=True)[:limit])
    if ids:
        FollowUpEvent.objects.filter(pk__in=ids).update(dispatched_at=current)
        for chunk in _chunks(ids, FOLLOW_UP_BATCH_SIZE):
            enqueue_on_commit(follow_up_events_process_task, chunk, queue="inbound")
    return len(ids)


def follow_up_event_process(*, event_id: int) -> str | None:
    """Run every subscriber of one event; the event is marked handled in the same transaction."""
    try:
        with transaction.atomic():
            event = _locked(FollowUpEvent.objects.filter(pk=event_id, status=FollowUpStatus.PENDING)).first()
            if event is None:
                return None  # handled already (a task run twice) or held by another worker
            for handler in list(_subscribers.get(event.name, ())):
                handler(event.message_id)
            event.status = FollowUpStatus.DONE
            event.attempts += 1
            event.processed_at = timezone.now()
            event.last_error = ""
            event.save()
            return event.status
    except Exception as exc:
        logger.exception("follow-up handler failed", extra={"event_id": event_id})
        event = FollowUpEvent.objects.get(pk=event_id)
        event.attempts += 1
        event.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        event.dispatched_at = None
        if event.attempts >= FOLLOW_UP_MAX_ATTEMPTS:
            event.status = FollowUpStatus.FAILED
        else:
            delay = min(3600, 2**event.attempts)
            event.next_attempt_at = timezone.now() + datetime.timedelta(seconds=delay)
        event.save()
        return event.status


def follow_up_events_process(*, event_ids: Iterable[int]) -> dict[str, int]:
    """Process a batch of follow-up events, each in its own transaction."""
    counts: dict[str, int] = defaultdict(int)
    for event_id in event_ids:
        counts[follow_up_event_process(event_id=event_id) or "skipped"] += 1
    return dict(counts)
