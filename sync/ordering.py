"""The ordering guard: an older update of a record never overwrites a newer one at a target.

Each (target, entity, ordering key) has a watermark, the source position (timestamp, sequence) of the newest
update applied there; a delivery at or behind it is skipped as stale, a delivered one moves it forward. A
cache lock per key keeps two workers from calling the target for the same record at once. Both the sender
(before the call) and the outcome (after a success) use it, so it sits below them.
"""

from __future__ import annotations

import datetime

from django.db import IntegrityError, transaction

from connectors.models import ConnectedSystem
from sync.models import Delivery, OrderingWatermark


def _position(timestamp: datetime.datetime | None, sequence: int | None) -> tuple[float, int]:
    return (timestamp.timestamp() if timestamp else float("-inf"), sequence if sequence is not None else -1)


def _is_stale(delivery: Delivery) -> bool:
    message = delivery.message
    if not message.ordering_key or (message.source_timestamp is None and message.source_sequence is None):
        return False
    mark = OrderingWatermark.objects.filter(
        target_system_id=delivery.target_system_id, entity=message.entity, ordering_key=message.ordering_key
    ).first()
    if mark is None or mark.message_id == message.pk:
        return False
    return _position(message.source_timestamp, message.source_sequence) <= _position(
        mark.source_timestamp, mark.source_sequence
    )


def _watermark_advance(delivery: Delivery) -> None:
    message = delivery.message
    if not message.ordering_key:
        return
    key = {
        "target_system_id": delivery.target_system_id,
        "entity": message.entity,
        "ordering_key": message.ordering_key,
    }
    mark = OrderingWatermark.objects.select_for_update().filter(**key).first()
    if mark is None:
        # The first delivery of this key sets the mark as it creates it; a concurrent creator makes it compare.
        try:
            with transaction.atomic():
                OrderingWatermark.objects.create(
                    **key,
                    source_timestamp=message.source_timestamp,
                    source_sequence=message.source_sequence,
                    message=message,
                )
            return
        except IntegrityError:
            mark = OrderingWatermark.objects.select_for_update().get(**key)
    if mark.message_id is None or _position(message.source_timestamp, message.source_sequence) > _position(
        mark.source_timestamp, mark.source_sequence
    ):
        mark.source_timestamp = message.source_timestamp
        mark.source_sequence = message.source_sequence
        mark.message = message
        mark.save()


def _ordering_lock_key(delivery: Delivery) -> str | None:
    message = delivery.message
    if not message.ordering_key:
        return None
    system = delivery.target_system
    return f"hub:order:{system.slug}:{system.pk}:{message.entity}:{message.ordering_key}"[:240]


def ordering_lock_seconds(system: ConnectedSystem) -> int:
    """The ordering lock covers one call; a killed worker's lock expires after the call's timeout plus a margin."""
    return int(float((system.settings or {}).get("timeout_seconds") or 10) * 2 + 30)
