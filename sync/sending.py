"""Delivering one record to one target (`delivery_send`) and the entry point of a delivery batch.

`delivery_send` checks the target (paused, circuit breaker), takes the record's ordering lock, spends the rate
budget, claims the row, skips a stale update, and calls the target through the transport (`_call`: update
through the cross-reference, look up a possibly lost answer, else create once); `_record` (sync.outcome)
decides what the answer means. `deliveries_send` hands a batch to sync.delivering, which falls back to
`delivery_send` for every unusual case.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from connectors.choices import SystemState
from connectors.models import ConnectedSystem
from sync import circuit, transport
from sync.choices import DeliveryStatus
from sync.models import Delivery
from sync.ordering import _is_stale, _ordering_lock_key, ordering_lock_seconds
from sync.outcome import _message_settle, _record
from sync.policy import RetryPolicy, _batch_scope, policy_for_message
from sync.ratelimit import rate_budget_wait
from sync.selectors import record_external_ids, record_unanswered_keys
from sync.transport import CallOutcome, policy_timeout


def _call(delivery: Delivery, system: ConnectedSystem, lookup_first: bool, sync_policy: Any) -> CallOutcome:
    """Deliver the record through the transport: updated where the target holds it (cross-reference), found
    by key where an answer may have been lost, else created once; under the flow's timeout, with the message's
    correlation id."""
    message = delivery.message
    external_id = ""
    earlier: tuple[str, ...] = ()
    if message.canonical_id:
        external_id = record_external_ids(
            system_id=system.pk, entity=message.entity, canonical_ids=[message.canonical_id]
        ).get(message.canonical_id, "")
        if not external_id:
            earlier = record_unanswered_keys(
                system_id=system.pk,
                entity=message.entity,
                canonical_ids=[message.canonical_id],
                exclude_delivery_ids=[delivery.pk],
            ).get(message.canonical_id, ())
    call = transport.RecordCall(
        payload=dict(delivery.outbound_payload or {}),
        key=delivery.idempotency_key,
        external_id=external_id,
        may_exist=lookup_first,
        earlier_keys=earlier,
    )
    return transport.record_deliver(
        system,
        message.entity,
        call,
        correlation_id=message.correlation_id,
        timeout_seconds=policy_timeout(sync_policy),
    )


def _wait(delivery_id: int, *, status: str, until: datetime.datetime | None) -> None:
    # Waiting (paused target, open circuit, spent rate budget, busy record) costs no attempt.
    Delivery.objects.filter(pk=delivery_id).update(
        status=status, next_attempt_at=until, dispatched_at=None, updated_at=timezone.now()
    )


def delivery_send(*, delivery_id: int, task_id: str = "") -> str | None:
    """Deliver one message to one target: idempotent upsert, attempt row, cross-reference, retry or exception."""
    delivery = Delivery.objects.select_related("message", "target_system", "route").filter(pk=delivery_id).first()
    claimable = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING, DeliveryStatus.HELD)
    if delivery is None or delivery.status not in claimable:
        return None
    system = delivery.target_system
    now = timezone.now()
    if system.state == SystemState.PAUSED:
        _wait(delivery.pk, status=DeliveryStatus.HELD, until=None)
        return DeliveryStatus.HELD
    gate = circuit.circuit_gate(system=system)
    if not gate.allowed:
        until = datetime.datetime.fromtimestamp(gate.retry_at or time.time() + 1, tz=datetime.UTC)
        _wait(delivery.pk, status=DeliveryStatus.HELD, until=until)
        return DeliveryStatus.HELD
    lock_key = _ordering_lock_key(delivery)
    # A lock held by this same delivery was left by a dead worker (the row claim is exclusive): taken over.
    lock_seconds = ordering_lock_seconds(system)
    token = f"{delivery.pk}:{task_id}"
    if lock_key and not cache.add(lock_key, token, timeout=lock_seconds):
        holder = str(cache.get(lock_key) or "")
        if holder.split(":", 1)[0] != str(delivery.pk):
            _wait(delivery.pk, status=delivery.status, until=now + datetime.timedelta(seconds=1))
            return None
        cache.set(lock_key, token, timeout=lock_seconds)
    try:
        return _send_locked(delivery, system, task_id=task_id, probe=gate.probe)
    finally:
        if lock_key:
            cache.delete(lock_key)


def _send_locked(delivery: Delivery, system: ConnectedSystem, *, task_id: str, probe: bool) -> str | None:
    sync_policy = policy_for_message(delivery.message, [delivery.route]) if delivery.route else None
    policy = RetryPolicy.of(sync_policy)
    # A flow may ask for less than the system's budget; the budget itself is per system, shared by all flows.
    rate_per_second = system.rate_limit_per_second
    if sync_policy is not None and sync_policy.rate_limit_per_second:
        rate_per_second = min(rate_per_second, sync_policy.rate_limit_per_second)
    budget = rate_budget_wait(system_key=f"{system.slug}:{system.pk}", rate_per_second=rate_per_second)
    if not budget.allowed:
        _wait(
            delivery.pk,
            status=delivery.status,
            until=timezone.now() + datetime.timedelta(seconds=budget.wait_seconds),
        )
        return None
    with transaction.atomic():
        # The locked row, read with its message, is the current state (one query instead of a reload of each).
        locked = (
            Delivery.objects.select_for_update(of=("self",)).select_related("message").filter(pk=delivery.pk).first()
        )
        if locked is None or locked.status not in (
            DeliveryStatus.PENDING,
            DeliveryStatus.RETRYING,
            DeliveryStatus.HELD,
        ):
            return None
        locked.target_system = system
        delivery = locked
        if _is_stale(delivery):
            delivery.status = DeliveryStatus.SKIPPED_STALE
            delivery.last_error = "A newer update of this record was already applied at the target."
            delivery.save()
            _message_settle(delivery.message_id)
            return DeliveryStatus.SKIPPED_STALE
        # Committed before the call: if the worker dies mid-call, the attempt count says "maybe sent",
        # so the next try looks the record up by idempotency key instead of creating it again.
        delivery.status = DeliveryStatus.DELIVERING
        delivery.attempts += 1
        delivery.save(update_fields=["status", "attempts", "updated_at"])
    lookup_first = delivery.lookup_first or delivery.attempts > 1
    started = time.perf_counter()
    result = _call(delivery, system, lookup_first, sync_policy)
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    return _record(delivery, system, result, policy, duration_ms=duration_ms, task_id=task_id, probe=probe)


def deliveries_send(*, delivery_ids: Iterable[int], task_id: str = "") -> dict[str, int]:
    """Send a batch of deliveries: claimed, called and recorded together (sync.delivering); anything unusual
    (paused, circuit, busy ordering key, spent budget, failed call) one by one through delivery_send."""
    # sync.delivering builds on this module (delivery_send, the per-record fallback): imported when called,
    # since a module-level import would be circular.
    from sync import delivering

    with _batch_scope():
        return delivering.deliveries_send(delivery_ids=delivery_ids, task_id=task_id)
