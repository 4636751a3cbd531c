"""What a person does to a message: replay it, release it after approval, reject it, or resume a target.

A replay runs the message through the pipeline again, optionally with an edited payload; deliveries keep
their idempotency keys unless the payload changed, so a replay of a delivered message is looked up at the
target first. These are the message operations the exception queue offers through its ports.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from connectors.models import ConnectedSystem
from integrationhub.errors import HubConflictError, HubError
from sync import circuit
from sync.choices import DeliveryStatus, MessageStatus
from sync.dispatching import messages_enqueue
from sync.models import Delivery, Message


@transaction.atomic
def message_replay(
    *,
    message: Message,
    use_original_mapping: bool = False,
    raw_payload: dict[str, Any] | None = None,
    canonical_payload: dict[str, Any] | None = None,
    queue: str = "replay",
) -> Message:
    """Run a message through the pipeline again (delivered, failed, dead or held), optionally with an edited
    payload. Deliveries keep their idempotency keys unless the payload changed, so a replay of a delivered
    message is looked up at the target first and never creates a duplicate."""
    message = Message.objects.select_for_update().get(pk=message.pk)
    now = timezone.now()
    if message.raw_payload is None and raw_payload is None and canonical_payload is None:
        raise HubConflictError(
            f"Message #{message.pk} has no payload left to replay: the retention period pruned it.",
            hint="Resend the record from its source system (or pull it again).",
        )
    if not use_original_mapping:
        message.mapping_set = None
        message.mapping_version = None
    if canonical_payload is not None:
        message.canonical_payload = canonical_payload
        message.status = MessageStatus.MAPPED
        message.approved_at = None
    else:
        if raw_payload is not None:
            message.raw_payload = raw_payload
            message.approved_at = None
        message.canonical_payload = None
        message.status = MessageStatus.RECEIVED
    message.replay_count += 1
    message.last_error = ""
    message.failed_at = None
    message.dispatched_at = now
    message.save()
    messages_enqueue(message_ids=[message.pk], queue=queue)
    return message


@transaction.atomic
def message_release(*, message: Message) -> Message:
    """Release an approved held message to routing and delivery."""
    message = Message.objects.select_for_update().get(pk=message.pk)
    if message.status != MessageStatus.HELD:
        raise HubError(f"Message #{message.pk} is {message.status}, not held; nothing to release.")
    message.approved_at = timezone.now()
    message.status = MessageStatus.VALIDATED
    message.dispatched_at = message.approved_at
    message.save()
    messages_enqueue(message_ids=[message.pk], queue="replay")
    return message


@transaction.atomic
def message_reject(*, message: Message, reason: str) -> Message:
    """Stop a message for good (a person rejected it)."""
    message = Message.objects.select_for_update().get(pk=message.pk)
    message.status = MessageStatus.FAILED
    message.failed_at = timezone.now()
    message.last_error = f"Rejected: {reason}"[:2000]
    message.save()
    return message


def deliveries_release(*, system: ConnectedSystem) -> int:
    """Resume: make the held deliveries of a system due now, and reset its breaker (resume is a person's call)."""
    circuit.circuit_reset(system=system)
    return Delivery.objects.filter(target_system=system, status=DeliveryStatus.HELD).update(
        next_attempt_at=None, dispatched_at=None
    )
