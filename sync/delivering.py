"""Sending a batch of deliveries with the bookkeeping done once per batch instead of once per delivery.

`sync.sending.delivery_send` handles one delivery end to end: about twenty statements and a few cache calls
around its one HTTP call. A delivery task carries a batch (HUB_DELIVERY_BATCH_SIZE), so this module claims the
batch in one transaction, makes the calls, and records every successful outcome together: one INSERT of the
attempts, one UPDATE of the deliveries per state, one upsert of the cross-references and of the ordering
watermarks, and one settle of the messages. The semantics are delivery_send's, and so is every unusual case:
a paused target, an open or half-open circuit, a busy ordering key, a spent rate budget, a stale update or a
failed call goes through delivery_send (or its `_record`) one by one.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone

from connectors.choices import SystemState
from connectors.models import ConnectedSystem
from integrationhub.throttling import cache_add_many
from sync import circuit, transport
from sync.bulk import related_attach, rows_insert, rows_update
from sync.choices import AttemptOutcome, DeliveryStatus
from sync.models import CrossReference, Delivery, DeliveryAttempt, OrderingWatermark
from sync.ordering import _ordering_lock_key, _position, ordering_lock_seconds
from sync.outcome import _record, _xref_upsert, attempt_summary, messages_settle_many
from sync.policy import RetryPolicy, policy_for_message
from sync.ratelimit import rate_budget_take_many
from sync.selectors import record_external_ids, record_unanswered_keys
from sync.sending import delivery_send
from sync.transport import policy_timeout

# Deliveries claimed (marked in flight, attempt counted) at a time within a delivery task's batch.
CLAIM_SLICE = 100
CLAIMABLE = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING, DeliveryStatus.HELD)
SUCCESS = (AttemptOutcome.DELIVERED, AttemptOutcome.ALREADY_APPLIED)
BATCH = "upsert_batch"
# What a claim re-reads of each delivery: everything a call and its record use that may have changed.
CLAIM_FIELDS = ("status", "attempts", "lookup_first", "idempotency_key", "outbound_payload", "external_id")

logger = logging.getLogger(__name__)


@dataclass
class _Planned:
    """A delivery the batch sends, with what its call and its record need."""

    delivery: Delivery
    system: ConnectedSystem
    policy: RetryPolicy
    lock_key: str | None
    timeout_seconds: float | None = None
    result: transport.CallOutcome | None = None
    duration_ms: float = 0.0


@dataclass
class _Plan:
    batch: list[_Planned] = field(default_factory=list)
    one_by_one: list[int] = field(default_factory=list)
    locks: dict[str, str] = field(default_factory=dict)


def deliveries_send(*, delivery_ids: Iterable[int], task_id: str = "") -> dict[str, int]:
    """Send a batch of deliveries: the common case in bulk, anything unusual through delivery_send."""
    counts: dict[str, int] = defaultdict(int)
    plan = _plan(list(delivery_ids), task_id)
    try:
        if plan.batch:
            for status, number in _send_planned(plan.batch, task_id).items():
                counts[status] += number
    except Exception:  # logged; the sweeper re-sends deliveries left in flight
        logger.exception("delivery batch failed unexpectedly", extra={"delivery_ids": ids_of(plan.batch)})
        counts["error"] += len(plan.batch)
    finally:
        if plan.locks:
            cache.delete_many(list(plan.locks))
    for delivery_id in plan.one_by_one:
        try:
            outcome = delivery_send(delivery_id=delivery_id, task_id=task_id)
        except Exception:  # logged; one bad delivery never stops the rest of the batch
            logger.exception("delivery failed unexpectedly", extra={"delivery_id": delivery_id})
            outcome = "error"
        counts[outcome or "skipped"] += 1
    return dict(counts)


def ids_of(batch: list[_Planned]) -> list[int]:
    return [planned.delivery.pk for planned in batch]


def _rate_per_second(system: ConnectedSystem, delivery: Delivery) -> tuple[float, Any]:
    sync_policy = policy_for_message(delivery.message, [delivery.route]) if delivery.route else None
    rate = float(system.rate_limit_per_second)
    if sync_policy is not None and sync_policy.rate_limit_per_second:
        rate = min(rate, float(sync_policy.rate_limit_per_second))
    return rate, sync_policy


def _plan(ids: list[int], task_id: str) -> _Plan:
    """Which deliveries go in the batch (ordering locks taken, rate budget granted) and which one by one."""
    plan = _Plan()
    # The message's payloads are not needed to send (the delivery holds its outbound payload, read at claim).
    deliveries = list(
        Delivery.objects.select_related("message")
        .defer("outbound_payload", "message__raw_payload", "message__canonical_payload", "message__notes")
        .filter(pk__in=ids, status__in=CLAIMABLE)
        .order_by("pk")
    )
    # One instance per system and route for the batch, so a circuit opened by one call is seen by the
    # batch's next ones (and a system's credentials are decrypted once).
    for name in ("target_system", "route"):
        related_attach(deliveries, name)
    by_budget: dict[tuple[int, float], list[_Planned]] = defaultdict(list)
    systems: dict[int, ConnectedSystem] = {}
    wanted: dict[str, tuple[str, int]] = {}
    candidates: list[Delivery] = []
    for delivery in deliveries:
        system = systems.setdefault(delivery.target_system_id, delivery.target_system)
        lock_key = _ordering_lock_key(delivery)
        # A paused target, an open circuit (whose gate hands out the single probe: delivery_send asks for it)
        # and a second update of the same record in this batch are delivery_send's to handle.
        if system.state != SystemState.ACTIVE or (lock_key and lock_key in wanted):
            plan.one_by_one.append(delivery.pk)
            continue
        if lock_key:
            wanted[lock_key] = (f"{delivery.pk}:{task_id}", ordering_lock_seconds(system))
        candidates.append(delivery)
    # Every ordering lock of the batch in one round trip; a busy one (or one left by a dead worker) is
    # delivery_send's to decide.
    taken = cache_add_many([(key, token, timeout) for key, (token, timeout) in wanted.items()])
    plan.locks = {key: wanted[key][0] for key in taken}
    for delivery in candidates:
        lock_key = _ordering_lock_key(delivery)
        if lock_key and lock_key not in taken:
            plan.one_by_one.append(delivery.pk)
            continue
        system = systems[delivery.target_system_id]
        rate, sync_policy = _rate_per_second(system, delivery)
        planned = _Planned(delivery, system, RetryPolicy.of(sync_policy), lock_key, policy_timeout(sync_policy))
        by_budget[(system.pk, rate)].append(planned)
    for (_, rate), group in by_budget.items():
        system = group[0].system
        granted = rate_budget_take_many(system_key=f"{system.slug}:{system.pk}", rate_per_second=rate, count=len(group))
        plan.batch.extend(group[:granted])
        for planned in group[granted:]:  # over the budget: delivery_send waits for the next window
            if planned.lock_key:
                cache.delete(planned.lock_key)
                plan.locks.pop(planned.lock_key, None)
            plan.one_by_one.append(planned.delivery.pk)
    plan.batch.sort(key=lambda planned: planned.delivery.pk)
    return plan


def _stale_ids(batch: list[_Planned]) -> set[int]:
    """Deliveries whose message is not newer than what the target already has (one query for the batch)."""
    keyed = {
        (p.delivery.target_system_id, p.delivery.message.entity, p.delivery.message.ordering_key): p
        for p in batch
        if p.delivery.message.ordering_key
        and (p.delivery.message.source_timestamp is not None or p.delivery.message.source_sequence is not None)
    }
    if not keyed:
        return set()
    stale = set()
    for mark in _marks_of(keyed):
        planned = keyed.get((mark.target_system_id, mark.entity, mark.ordering_key))
        if planned is None or mark.message_id == planned.delivery.message_id:
            continue
        message = planned.delivery.message
        if _position(message.source_timestamp, message.source_sequence) <= _position(
            mark.source_timestamp, mark.source_sequence
        ):
            stale.add(planned.delivery.pk)
    return stale


def _marks_of(keys: Iterable[tuple[int, str, str]], *, lock: bool = False) -> list[OrderingWatermark]:
    """The watermarks of (target system, entity, ordering key) keys, in one query (an IN per column; rows of
    other combinations are dropped here, cheaper than an OR of a hundred conditions)."""
    wanted = set(keys)
    marks = OrderingWatermark.objects.filter(
        target_system_id__in={key[0] for key in wanted},
        entity__in={key[1] for key in wanted},
        ordering_key__in={key[2] for key in wanted},
    ).order_by("pk")
    if lock:
        marks = marks.select_for_update()
    return [mark for mark in marks if (mark.target_system_id, mark.entity, mark.ordering_key) in wanted]


def _claim(batch: list[_Planned]) -> list[_Planned]:
    """Lock the batch's rows, skip stale updates, and mark the rest in flight with their attempt counted
    before the call (a worker killed mid-call leaves "maybe sent": the retry looks the record up first)."""
    with transaction.atomic():
        # The locked rows' current state (a replay may have changed a pending delivery since it was planned).
        locked = {
            row["pk"]: row
            for row in Delivery.objects.select_for_update(of=("self",))
            .filter(pk__in=[p.delivery.pk for p in batch], status__in=CLAIMABLE)
            .order_by("pk")
            .values("pk", *CLAIM_FIELDS)
        }
        claimed = []
        for planned in batch:
            current = locked.get(planned.delivery.pk)
            if current is None:
                continue  # another worker took it meanwhile
            for name in CLAIM_FIELDS:
                setattr(planned.delivery, name, current[name])
            claimed.append(planned)
        stale = _stale_ids(claimed)
        for planned in claimed:
            if planned.delivery.pk in stale:
                delivery = planned.delivery
                delivery.status = DeliveryStatus.SKIPPED_STALE
                delivery.last_error = "A newer update of this record was already applied at the target."
                delivery.save()
        messages_settle_many(p.delivery.message_id for p in claimed if p.delivery.pk in stale)
        sending = [p for p in claimed if p.delivery.pk not in stale]
        Delivery.objects.filter(pk__in=[p.delivery.pk for p in sending]).update(
            status=DeliveryStatus.DELIVERING, attempts=F("attempts") + 1, updated_at=timezone.now()
        )
    for planned in sending:
        planned.delivery.status = DeliveryStatus.DELIVERING
        planned.delivery.attempts += 1
    return sending


def _send_planned(batch: list[_Planned], task_id: str) -> dict[str, int]:
    """Send the planned deliveries slice by slice: each slice is claimed just before its calls and recorded
    right after them, so a worker killed mid-batch leaves at most one slice in flight (for the sweeper's
    stuck-delivery check) and the rest unclaimed, which the dispatcher hands out again within its period."""
    counts: dict[str, int] = defaultdict(int)
    for start in range(0, len(batch), CLAIM_SLICE):
        for status, number in _send_slice(batch[start : start + CLAIM_SLICE], task_id).items():
            counts[status] += number
    return dict(counts)


def _send_slice(batch: list[_Planned], task_id: str) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    claimed = _claim(batch)
    succeeded: list[_Planned] = []
    not_called: list[_Planned] = []
    groups: dict[tuple[int, str], list[_Planned]] = defaultdict(list)
    for planned in claimed:
        groups[(planned.system.pk, planned.delivery.message.entity)].append(planned)
    for (system_id, entity), group in groups.items():
        calls = _record_calls(system_id, entity, group)
        if len(group) > 1 and _batches(group[0].system, entity):
            _call_together(group, entity, calls)
            failed_together = [p for p in group if p.result is not None and not p.result.succeeded]
            succeeded.extend(p for p in group if p.result is not None and p.result.succeeded)
            for position, planned in enumerate(failed_together):
                # One failed call counts once in the circuit, however many records it carried.
                counts[_record_failure(planned, task_id, count_in_circuit=position == 0)] += 1
            continue
        for planned, call in zip(group, calls, strict=True):
            if planned.system.state != SystemState.ACTIVE:
                not_called.append(planned)  # this batch's failures opened the target's circuit
                continue
            started = time.perf_counter()
            planned.result = result = _call_one(planned, entity, call)
            planned.duration_ms = round((time.perf_counter() - started) * 1000, 1)
            if result.succeeded:
                succeeded.append(planned)
            else:
                # Recorded at once, so that the circuit counts it before the next call goes out.
                counts[_record_failure(planned, task_id)] += 1
    if not_called:
        _unclaim(not_called)
        counts[DeliveryStatus.HELD] += len(not_called)
    if succeeded:
        _record_successes(succeeded, task_id)
        counts[DeliveryStatus.DELIVERED] += len(succeeded)
    stale = len(batch) - len(claimed)
    if stale:
        counts[DeliveryStatus.SKIPPED_STALE] += stale
    return {status: number for status, number in counts.items() if number}


def _record_calls(system_id: int, entity: str, group: list[_Planned]) -> list[transport.RecordCall]:
    """What each delivery of the group sends: the record's id at the target where it holds it (one query for
    the group), the keys of earlier unanswered deliveries of the other records (one more)."""
    canonical_ids = [p.delivery.message.canonical_id for p in group]
    known = record_external_ids(system_id=system_id, entity=entity, canonical_ids=canonical_ids)
    unanswered = record_unanswered_keys(
        system_id=system_id,
        entity=entity,
        canonical_ids=[cid for cid in canonical_ids if cid and cid not in known],
        exclude_delivery_ids=[p.delivery.pk for p in group],
    )
    calls = []
    for planned in group:
        delivery, canonical_id = planned.delivery, planned.delivery.message.canonical_id
        calls.append(
            transport.RecordCall(
                payload=dict(delivery.outbound_payload or {}),
                key=delivery.idempotency_key,
                external_id=known.get(canonical_id, "") if canonical_id else "",
                # Attempts are counted at claim: above one (or a replay), the record may be there already.
                may_exist=delivery.lookup_first or delivery.attempts > 1,
                earlier_keys=unanswered.get(canonical_id, ()) if canonical_id else (),
            )
        )
    return calls


def _call_one(planned: _Planned, entity: str, call: transport.RecordCall) -> transport.CallOutcome:
    return transport.record_deliver(
        planned.system,
        entity,
        call,
        correlation_id=planned.delivery.message.correlation_id,
        timeout_seconds=planned.timeout_seconds,
    )


def _batches(system: ConnectedSystem, entity: str) -> bool:
    return transport.batches(system, entity)


def _call_together(group: list[_Planned], entity: str, calls: list[transport.RecordCall]) -> None:
    """The group through the transport's batch: records the target holds updated, new ones in one
    upsert_batch call; each planned delivery gets its own outcome."""
    system = group[0].system
    started = time.perf_counter()
    results = transport.records_deliver_batch(
        system,
        entity,
        calls,
        correlation_id=group[0].delivery.message.correlation_id,
        timeout_seconds=group[0].timeout_seconds,
    )
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    for planned, result in zip(group, results, strict=True):
        planned.duration_ms = duration_ms
        planned.result = result


def _record_failure(planned: _Planned, task_id: str, *, count_in_circuit: bool = True) -> str:
    """A failed call's retry, dead letter or exception item, exactly as delivery_send records it."""
    assert planned.result is not None
    return _record(
        planned.delivery,
        planned.system,
        planned.result,
        planned.policy,
        duration_ms=planned.duration_ms,
        task_id=task_id,
        probe=False,
        count_in_circuit=count_in_circuit,
    )


def _unclaim(batch: list[_Planned]) -> None:
    """Deliveries claimed but not called (their target's circuit opened meanwhile): back to held, the attempt
    not counted, due when the circuit lets a probe through, as delivery_send leaves them at a closed gate."""
    retry_at = max(circuit.circuit_open_until(system=planned.system) for planned in batch)
    Delivery.objects.filter(pk__in=ids_of(batch), status=DeliveryStatus.DELIVERING).update(
        status=DeliveryStatus.HELD,
        attempts=F("attempts") - 1,
        next_attempt_at=datetime.datetime.fromtimestamp(retry_at, tz=datetime.UTC),
        dispatched_at=None,
        updated_at=timezone.now(),
    )


@transaction.atomic
def _record_successes(batch: list[_Planned], task_id: str) -> None:
    """Attempts, deliveries, cross-references, watermarks and messages of the batch's successful calls."""
    now = timezone.now()
    ids = [p.delivery.pk for p in batch]
    previous = dict(
        DeliveryAttempt.objects.filter(delivery_id__in=ids)
        .values("delivery_id")
        .annotate(last=Max("number"))
        .values_list("delivery_id", "last")
    )
    attempts = []
    for planned in batch:
        delivery, result = planned.delivery, planned.result
        assert result is not None
        attempts.append(
            DeliveryAttempt(
                delivery=delivery,
                system=planned.system,
                number=(previous.get(delivery.pk) or 0) + 1,
                request_summary=attempt_summary(delivery, planned.system, result, probe=False),
                status_code=result.status_code,
                duration_ms=planned.duration_ms,
                outcome=result.outcome,
                error=result.error[:2000],
                task_id=task_id[:100],
                correlation_id=delivery.message.correlation_id,
                created_at=now,
            )
        )
        delivery.status = DeliveryStatus.DELIVERED
        delivery.external_id = result.external_id or delivery.external_id
        delivery.delivered_at = now
        delivery.last_error = ""
        delivery.lookup_first = False
        delivery.next_attempt_at = None
        delivery.dispatched_at = None
        delivery.updated_at = now
    rows_insert(DeliveryAttempt, attempts)
    rows_update(
        Delivery,
        [p.delivery for p in batch],
        [
            "status",
            "external_id",
            "delivered_at",
            "last_error",
            "lookup_first",
            "next_attempt_at",
            "dispatched_at",
            "updated_at",
        ],
    )
    for system in {p.system.pk: p.system for p in batch}.values():
        circuit.circuit_record_success(system=system)
    _xrefs_upsert(batch)
    _watermarks_advance(batch)
    messages_settle_many(p.delivery.message_id for p in batch)


def _xrefs_upsert(batch: list[_Planned]) -> None:
    """canonical id → external id per target, one upsert for the batch (the last delivery of a record wins)."""
    latest: dict[tuple[int, str, str], str] = {}
    for planned in batch:
        message = planned.delivery.message
        if message.canonical_id and planned.delivery.external_id:
            latest[(planned.system.pk, message.entity, message.canonical_id)] = planned.delivery.external_id
    if not latest:
        return
    rows = [
        CrossReference(system_id=system_id, entity=entity, canonical_id=canonical_id, external_id=external_id)
        for (system_id, entity, canonical_id), external_id in latest.items()
    ]
    try:
        with transaction.atomic():
            rows_insert(
                CrossReference,
                rows,
                unique_fields=["system", "entity", "canonical_id"],
                update_fields=["external_id", "updated_at"],
            )
    except IntegrityError:
        # An external id already linked to another canonical id: each row on its own, the conflict logged.
        systems = {p.system.pk: p.system for p in batch}
        for (system_id, entity, canonical_id), external_id in latest.items():
            _xref_upsert(systems[system_id], entity, canonical_id, external_id)


def _watermarks_advance(batch: list[_Planned]) -> None:
    """Each ordering key's mark moves to the newest message delivered for it (created with the first)."""
    newest: dict[tuple[int, str, str], Any] = {}
    for planned in batch:
        message = planned.delivery.message
        if not message.ordering_key:
            continue
        key = (planned.delivery.target_system_id, message.entity, message.ordering_key)
        if key not in newest or _position(message.source_timestamp, message.source_sequence) > _position(
            newest[key].source_timestamp, newest[key].source_sequence
        ):
            newest[key] = message
    if not newest:
        return
    rows_insert(
        OrderingWatermark,
        [
            OrderingWatermark(
                target_system_id=target_system_id,
                entity=entity,
                ordering_key=ordering_key,
                source_timestamp=message.source_timestamp,
                source_sequence=message.source_sequence,
                message=message,
            )
            for (target_system_id, entity, ordering_key), message in newest.items()
        ],
        ignore_conflicts=True,
    )
    now = timezone.now()
    moved = []
    for mark in _marks_of(newest, lock=True):
        message = newest[(mark.target_system_id, mark.entity, mark.ordering_key)]
        if mark.message_id == message.pk:
            continue  # created by this batch
        if mark.message_id is None or _position(message.source_timestamp, message.source_sequence) > (
            _position(mark.source_timestamp, mark.source_sequence)
        ):
            mark.source_timestamp, mark.source_sequence, mark.message, mark.updated_at = (
                message.source_timestamp,
                message.source_sequence,
                message,
                now,
            )
            moved.append(mark)
    if moved:
        OrderingWatermark.objects.bulk_update(moved, ["source_timestamp", "source_sequence", "message", "updated_at"])
