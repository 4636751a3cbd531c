"""The sync engine: ingest once, map, validate, check ownership, hold, route, deliver idempotently, retry, replay.

Every stage is an explicit service called by a Celery task that takes ids (sync/tasks.py). Ingest writes
the message row and nothing else; the dispatcher (beat, every second) hands stored messages to workers in
batches, and the sweeper re-dispatches anything a lost task left behind. Each stage stamps the message.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import functools
import hashlib
import io
import json
import logging
import math
import random
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Max, Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from connectors.choices import SystemState
from connectors.http import ConnectorError
from connectors.models import ConnectedSystem
from connectors.registry import connector_for
from connectors.webhooks import (
    DEFAULT_TOLERANCE_SECONDS,
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    verify_standard_webhook,
)
from exception_queue.choices import ExceptionCategory
from exception_queue.services import exception_item_open
from governance.models import LegalEntity, OwnershipRule, SyncPolicy
from governance.rules import RuleContext, rule_get
from governance.selectors import owner_of, rate_for, sync_policy_for
from integrationhub.counters import INBOUND_BUDGET_FAIL_OPEN
from integrationhub.dispatch import enqueue_on_commit
from integrationhub.errors import HubConflictError, HubError, HubValidationError
from integrationhub.logging import bind_correlation_id, current_correlation_id
from integrationhub.parsers import NUL_REFUSED, contains_nul
from integrationhub.throttling import BudgetUnavailableError, budget_spend_leased
from mappings.choices import CanonicalEntityName, Direction
from mappings.compiler import CompiledMapping, MappingDefinitionError
from mappings.models import MappingSet
from mappings.runtime import compiled_mapping, published_mapping_set, xrefs_resolve
from mappings.selectors import canonical_payload_validate
from sync import circuit, progress, transport
from sync.bulk import insert_unless_conflict, related_attach, rows_insert, rows_update
from sync.choices import (
    DELIVERY_DONE_STATUSES,
    EVENT_MESSAGE_DELIVERED,
    EVENT_MESSAGE_FAILED,
    FILE_DROP_EVENT_ACTION,
    PULL_EVENT_ACTION,
    AttemptOutcome,
    BatchKind,
    BatchStatus,
    DeliveryStatus,
    FileDropStatus,
    FollowUpStatus,
    MessageStatus,
    PollOutcome,
)
from sync.errors import (
    InboundRateLimitedError,
    InvalidHeaderError,
    MalformedPayloadError,
    PayloadTooLargeError,
    SignatureError,
    StorageUnavailableError,
    SystemPausedError,
    UnknownEventTypeError,
    UnknownSystemError,
)
from sync.models import (
    CrossReference,
    Delivery,
    DeliveryAttempt,
    FileDrop,
    FollowUpEvent,
    Message,
    OrderingWatermark,
    PollCursor,
    PollSchedule,
    Route,
)
from sync.ratelimit import rate_budget_wait
from sync.selectors import record_external_ids, record_unanswered_keys
from sync.transport import CallOutcome, policy_timeout

logger = logging.getLogger(__name__)

MAX_JSON_DEPTH = 32
# Messages per pipeline task and deliveries per delivery task (HUB_DISPATCH_BATCH_SIZE, HUB_DELIVERY_BATCH_SIZE):
# a batch's fixed cost (its queries, a task, a call to a target with a batch API) is shared by more records
# the larger it is. Measured with `python -m bench events`: 100 → 500 raised delivered events/s by a quarter.
DISPATCH_BATCH_SIZE = 500
DELIVERY_BATCH_SIZE = 500
# Fields that identify a record rather than describe it: never subject to ownership rules.
IDENTITY_FIELDS = frozenset({"id", "updated_at", "source_system", "external_refs"})
LEGAL_ENTITY_FIELDS = ("legal_entity_code", "contracting_legal_entity_code")
# The money field an approval threshold applies to, first present wins (credit limits are approved too).
AMOUNT_FIELDS = ("amount", "total_amount", "credit_limit")
EVENT_TYPE = re.compile(r"^([a-z_]+)\.[a-z_]+(\.[a-z_]+)*$")
# Built once: Choices.values makes a new list on every read, and every webhook asks.
CANONICAL_ENTITIES = frozenset(CanonicalEntityName.values)


# Configuration read once per batch of messages or deliveries (routes, policies, mapping sets), instead of once
# per record: a change made while a batch runs applies from the next batch on.
_batch_memo: ContextVar[dict[tuple[Any, ...], Any] | None] = ContextVar("sync_batch_memo", default=None)


@contextmanager
def _batch_scope() -> Iterator[None]:
    token = _batch_memo.set({})
    try:
        yield
    finally:
        _batch_memo.reset(token)


def _memoized(key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
    memo = _batch_memo.get()
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def _compiled_for_batch(mapping_set_id: int) -> CompiledMapping:
    # The shared generation check (a cache read) once per batch, not once per record.
    compiled: CompiledMapping = _memoized(("compiled", mapping_set_id), lambda: compiled_mapping(mapping_set_id))
    return compiled


def _published_mapping_set(
    *, system_id: int, entity_name: str, direction: str, legal_entity_id: int | None
) -> MappingSet | None:
    return _memoized(
        ("mapping_set", system_id, entity_name, direction, legal_entity_id),
        lambda: published_mapping_set(
            system_id=system_id, entity_name=entity_name, direction=direction, legal_entity_id=legal_entity_id
        ),
    )


def _setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


def max_body_bytes() -> int:
    return int(_setting("HUB_INBOUND_MAX_BODY_BYTES", settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 1024 * 1024))


DEFAULT_INBOUND_RATE = "200/s"


def inbound_rate(system: ConnectedSystem) -> str:
    """The inbound budget of a system: its own rate, else HUB_INBOUND_RATE."""
    return system.inbound_rate or str(getattr(settings, "HUB_INBOUND_RATE", DEFAULT_INBOUND_RATE))


# The sending system of each inbound event, kept per process for HUB_INBOUND_SYSTEM_CACHE_SECONDS: the lookup
# (a query and the secret's decryption) would otherwise cost as much as storing the event. A change saved in
# this process clears it at once (sync.apps); other processes see a pause or a new secret within that time.
_inbound_systems: dict[str, tuple[float, ConnectedSystem]] = {}


def inbound_system(slug: str) -> ConnectedSystem | None:
    ttl = _setting("HUB_INBOUND_SYSTEM_CACHE_SECONDS", 1.0)
    now = time.monotonic()
    cached = _inbound_systems.get(slug)
    if cached is not None and now - cached[0] < ttl:
        return cached[1]
    system = ConnectedSystem.objects.filter(slug=slug).first()
    if system is not None and ttl > 0:
        _inbound_systems[slug] = (now, system)
    return system


def inbound_systems_forget(**_: Any) -> None:
    """Signal receiver: a connected system was saved or deleted."""
    _inbound_systems.clear()


# Fail-open warnings are logged at most this often per process; the counter on /metrics counts every event.
FAIL_OPEN_LOG_SECONDS = 60.0
_fail_open_log: dict[str, float] = {"at": -math.inf, "unlogged": 0}


def _inbound_budget_fail_open(*, system: ConnectedSystem, error: BudgetUnavailableError) -> None:
    INBOUND_BUDGET_FAIL_OPEN.inc()
    _fail_open_log["unlogged"] += 1
    now = time.monotonic()
    if now - _fail_open_log["at"] < FAIL_OPEN_LOG_SECONDS:
        return
    logger.warning(
        "inbound budget unavailable, %d event(s) admitted without it since the last warning (latest from %s): %s",
        int(_fail_open_log["unlogged"]),
        system.slug,
        error,
        extra={"system": system.slug, "fail_open_events": int(_fail_open_log["unlogged"])},
    )
    _fail_open_log.update(at=now, unlogged=0)


def inbound_budget_spend(*, system: ConnectedSystem, now: float | None = None) -> None:
    """Spend one unit of the system's inbound budget, shared by every web process through the cache; raises
    InboundRateLimitedError (429, with the seconds to wait) when this window's budget is used up.

    Fails open: when the cache cannot be reached the event is admitted (a warning, at most once a minute,
    and hub_inbound_budget_fail_open_total on /metrics). The budget protects the hub from a flood; refusing
    every event while Redis is away would lose the very events it exists to keep."""
    rate = inbound_rate(system)
    try:
        wait = budget_spend_leased(scope="inbound", ident=system.slug, rate=rate, now=now)
    except BudgetUnavailableError as error:
        _inbound_budget_fail_open(system=system, error=error)
        return
    if wait is not None:
        raise InboundRateLimitedError(
            f"System '{system.slug}' sent more than {rate} events; this one was not stored.",
            retry_after=math.ceil(wait),
            hint="Resend it after Retry-After seconds; an integration admin can raise the system's inbound rate.",
        )


def sweep_after_seconds() -> float:
    return _setting("HUB_SYNC_SWEEP_AFTER_SECONDS", 60)


def stuck_delivery_seconds() -> float:
    """How long a delivery may stay mid-call before the sweeper treats its worker as dead: past the task
    time limit, no live worker can still be in that call."""
    return _setting("HUB_SYNC_STUCK_DELIVERY_SECONDS", sweep_after_seconds() + float(settings.CELERY_TASK_TIME_LIMIT))


# --- policy defaults -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """The retry knobs of a flow's sync policy, or the hub's defaults when the flow has none."""

    max_attempts: int = 5
    backoff_base_seconds: float = 10
    backoff_cap_seconds: float = 3600
    jitter: bool = True

    @classmethod
    def of(cls, policy: SyncPolicy | None) -> RetryPolicy:
        if policy is None:
            return cls()
        return cls(
            # dead_letter_threshold says when a message is dead-lettered; it can only shorten max_attempts.
            max_attempts=max(1, min(policy.max_attempts, policy.dead_letter_threshold or policy.max_attempts)),
            backoff_base_seconds=policy.backoff_base_seconds,
            backoff_cap_seconds=policy.backoff_cap_seconds,
            jitter=policy.jitter,
        )

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Exponential backoff (base * 2^(attempt-1), capped), spread randomly when jitter is on; never less
        than the target's Retry-After."""
        computed = min(self.backoff_cap_seconds, self.backoff_base_seconds * (2 ** max(0, attempt - 1)))
        if self.jitter:
            computed = random.uniform(0, computed)  # noqa: S311 - spreading retries, not cryptography
        return max(computed, retry_after or 0.0)


# --- ingest ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestResult:
    """What the inbound endpoint answers: the stored (or original) message and its correlation id."""

    message_id: int
    correlation_id: str
    duplicate: bool


# What json.loads accepts and PostgreSQL's jsonb refuses, found by one walk of the parsed body.
TOO_DEEP = "too_deep"
NOT_FINITE = "not_finite"  # NaN, Infinity, -Infinity, or a number beyond a double's range such as 1e999
LONE_SURROGATE = "lone_surrogate"  # "\ud800" without its pair: not a character UTF-8 can hold
SURROGATE = re.compile("[\ud800-\udfff]")
BIGINT = (-(2**63), 2**63 - 1)
SOURCE_SEQUENCE = re.compile(r"-?[0-9]{1,19}")
# Retry-After of a 503 when the database does not answer: long enough for a restart or a failover.
STORAGE_RETRY_AFTER_SECONDS = 30


def _json_refusal(value: Any, limit: int, *, texts: bool) -> str | None:
    """The first reason the parsed body cannot be stored, or None. Strings are searched for lone surrogates
    only when `texts` (the raw body holds a \\uD… escape or a byte that could start one): most bodies have none."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > limit:
            return TOO_DEEP
        if isinstance(current, dict):
            if texts and any(SURROGATE.search(key) for key in current):
                return LONE_SURROGATE
            stack.extend((child, depth + 1) for child in current.values())
        elif isinstance(current, list):
            stack.extend((child, depth + 1) for child in current)
        elif isinstance(current, float):
            if not math.isfinite(current):
                return NOT_FINITE
        elif texts and isinstance(current, str) and SURROGATE.search(current):
            return LONE_SURROGATE
    return None


def _json_refused_fields(value: Any, reason: str, *, limit: int = 10) -> list[str]:
    """The paths ("body.lines[2].amount") of the first values refused for `reason`: the slow walk, run only
    once the fast one found something."""
    found: list[str] = []

    def printable(text: str) -> str:
        return SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)

    def walk(current: Any, path: str) -> None:
        if len(found) >= limit:
            return
        if isinstance(current, dict):
            for key, child in current.items():
                if reason == LONE_SURROGATE and SURROGATE.search(key):
                    found.append(f"{path}.{printable(key)}")
                walk(child, f"{path}.{printable(key)}")
        elif isinstance(current, list):
            for index, child in enumerate(current):
                walk(child, f"{path}[{index}]")
        elif _json_refusal(current, 1, texts=True) == reason:  # a leaf: refused for this reason?
            found.append(path)

    walk(value, "body")
    return found[:limit]


def _payload_check(payload: Any, body: bytes) -> None:
    """Raise MalformedPayloadError (400, naming the fields) for a body json.loads accepts but the hub cannot
    store: nested too deep, a number that is not finite, or a lone surrogate in a string."""
    texts = b"\\ud" in body or b"\\uD" in body or b"\xed" in body
    reason = _json_refusal(payload, MAX_JSON_DEPTH, texts=texts)
    if reason is None:
        return
    if reason == TOO_DEEP:
        raise MalformedPayloadError(
            f"The JSON is nested deeper than {MAX_JSON_DEPTH} levels.", hint="Flatten the payload."
        )
    fields = _json_refused_fields(payload, reason)
    if reason == NOT_FINITE:
        message = "Not a finite number: NaN, Infinity and numbers beyond ±1.8e308 cannot be stored."
        hint = "Send null instead of NaN or Infinity, and a number too large for a double as a string; then resend."
    else:
        message = "A lone UTF-16 surrogate (\\ud800 to \\udfff without its pair) is no character; it cannot be stored."
        hint = "Send the text as valid UTF-8 (a surrogate pair for characters beyond U+FFFF); then resend."
    raise MalformedPayloadError(
        f"{', '.join(fields)}: {message}",
        errors=[{"field": field, "message": message} for field in fields],
        hint=hint,
    )


def _source_sequence(headers: Mapping[str, str]) -> int | None:
    """X-Source-Sequence as a bigint, None when absent; InvalidHeaderError (400) for anything else."""
    text = headers.get("x-source-sequence", "").strip()
    if not text:
        return None
    value = int(text) if SOURCE_SEQUENCE.fullmatch(text) else None
    if value is None or not BIGINT[0] <= value <= BIGINT[1]:
        message = f"X-Source-Sequence must be a whole number from {BIGINT[0]} to {BIGINT[1]}; it is {text[:40]!r}."
        raise InvalidHeaderError(
            message,
            errors=[{"field": "X-Source-Sequence", "message": message}],
            hint="Send the source's sequence number as a plain integer, or leave the header out; then resend.",
        )
    return value


@contextmanager
def _storage_available() -> Iterator[None]:
    """The database did not answer (down, restarting, overloaded, locked): a 503 the sender retries, never a 500."""
    try:
        yield
    except (OperationalError, InterfaceError) as error:
        logger.warning("inbound event not stored, the database is unavailable: %s", error)
        raise StorageUnavailableError(
            "The hub's database did not answer, so the event was not stored.",
            retry_after=STORAGE_RETRY_AFTER_SECONDS,
            hint="Resend the same event (same webhook-id) after Retry-After seconds; it is stored once.",
        ) from None


def entity_for_event_type(event_type: str) -> str:
    """The canonical entity an event type is about: "client.updated" → "client"."""
    match = EVENT_TYPE.match(event_type or "")
    if not match or match.group(1) not in CANONICAL_ENTITIES:
        raise UnknownEventTypeError(
            f"Event type {event_type!r} does not name a canonical entity.",
            hint="Send <entity>.<action>, for example client.updated; entities: "
            + ", ".join(CanonicalEntityName.values)
            + ".",
        )
    return match.group(1)


def _verify_signature(system: ConnectedSystem, headers: Mapping[str, str], body: bytes, now: float) -> str:
    webhook_id = headers.get(HEADER_ID, "")
    timestamp = headers.get(HEADER_TIMESTAMP, "")
    signature = headers.get(HEADER_SIGNATURE, "")
    if not system.webhook_secret:
        raise SignatureError(
            f"System '{system.slug}' has no webhook secret, so no webhook from it can be verified.",
            hint="An integration admin sets the system's webhook secret; then configure the sender with it.",
        )
    if not (webhook_id and timestamp and signature):
        raise SignatureError(
            "The webhook-id, webhook-timestamp and webhook-signature headers are required.",
            hint="Sign the request with the Standard Webhooks scheme and the system's webhook secret.",
        )
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise SignatureError("webhook-timestamp is not a Unix timestamp in seconds.") from None
    if abs(now - sent_at) > DEFAULT_TOLERANCE_SECONDS:
        raise SignatureError(
            f"The webhook timestamp is {int(abs(now - sent_at))} s away from the hub's clock "
            f"(tolerance {DEFAULT_TOLERANCE_SECONDS} s).",
            hint="Check the sender's clock, then re-sign and resend the event with the current time.",
        )
    if not verify_standard_webhook(system.webhook_secret, webhook_id, sent_at, signature, body, now=now):
        raise SignatureError(
            "The webhook signature does not match the body.",
            hint="Sign id.timestamp.body with the system's current webhook secret and send the body unchanged.",
        )
    return webhook_id


def message_ingest(
    *,
    system_slug: str,
    event_type: str,
    headers: Mapping[str, str],
    body: bytes,
    correlation_id: str,
    now: float | None = None,
) -> IngestResult:
    """Verify and store one inbound event as exactly one Message; a repeated idempotency key stores nothing.

    `headers` must have lower-case names. Raises a HubError and stores nothing: 4xx when the system is
    unknown or paused, the body too large, the signature bad or stale, the JSON malformed, too deep or not
    storable (a NaN, a lone surrogate), or X-Source-Sequence no bigint; 503 when the database does not answer.
    """
    current = time.time() if now is None else now
    with _storage_available():
        system = inbound_system(system_slug)
    if system is None:
        raise UnknownSystemError(
            f"No connected system has the slug {system_slug!r}.",
            hint="Check the webhook URL: /api/v1/inbound/<system-slug>/<event-type>/.",
        )
    if system.state == SystemState.PAUSED:
        raise SystemPausedError(
            f"System '{system.slug}' is paused, so the hub does not accept its events now.",
            hint="Resend the event after an integration admin resumes the system.",
        )
    entity = entity_for_event_type(event_type)
    if len(body) > max_body_bytes():
        raise PayloadTooLargeError(
            f"The body has {len(body)} bytes; the limit is {max_body_bytes()}.",
            hint="Send large data sets as a file drop or page them into several events.",
        )
    webhook_id = _verify_signature(system, headers, body, current)
    # After the signature on purpose: only authentic events spend a system's budget, so a sender without
    # the secret cannot starve the real one. Before the INSERT, so a refused event stores nothing.
    inbound_budget_spend(system=system, now=current)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedPayloadError(
            f"The body is not valid JSON: {exc}"[:300], hint="Send a JSON object, UTF-8 encoded."
        ) from None
    if not isinstance(payload, dict):
        raise MalformedPayloadError("The body must be a JSON object.", hint="Wrap the record in an object.")
    # Everything PostgreSQL would refuse is refused here with a 400 naming the field, so a failing INSERT
    # can only mean the database itself is unwell (503 below).
    _payload_check(payload, body)
    if b"\\u0000" in body and contains_nul(payload):
        raise MalformedPayloadError(NUL_REFUSED, hint="Remove the NUL characters and resend the event.")
    sequence = _source_sequence(headers)
    idempotency_key = (webhook_id or headers.get("idempotency-key", "")).strip()[:200]
    # No full_clean() on purpose: this is the hot path and every field is set by code. The unique constraint
    # on (system, idempotency_key) is the duplicate check: one INSERT … ON CONFLICT DO NOTHING, no SELECT first.
    with _storage_available():
        message_id = insert_unless_conflict(
            Message,
            {
                "system_id": system.pk,
                "entity": entity,
                "event_type": event_type,
                "idempotency_key": idempotency_key,
                "correlation_id": correlation_id,
                "raw_payload": payload,
                "source_sequence": sequence,
            },
            conflict=("system", "idempotency_key"),
        )
        if message_id is not None:
            return IngestResult(message_id, correlation_id, duplicate=False)
        original = (
            Message.objects.filter(system=system, idempotency_key=idempotency_key)
            .values("id", "correlation_id")
            .first()
        )
    if original is None:  # deleted between the INSERT and this read: the event is no duplicate any more
        raise HubConflictError(
            "A message with this idempotency key was being removed while this one arrived.",
            hint="Send the event again.",
        )
    return IngestResult(original["id"], original["correlation_id"], duplicate=True)


# --- dispatcher and sweeper ------------------------------------------------------------------------


def _locked(queryset: QuerySet) -> QuerySet:
    # SKIP LOCKED lets two dispatchers share the work on PostgreSQL; SQLite serialises writers anyway.
    if connection.features.has_select_for_update_skip_locked:
        return queryset.select_for_update(skip_locked=True, of=("self",))
    return queryset


def _chunks(ids: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def messages_enqueue(*, message_ids: list[int], queue: str = "inbound") -> None:
    """Hand messages to the pipeline workers once the current transaction commits."""
    from sync.tasks import messages_process_task

    for chunk in _chunks(message_ids, int(_setting("HUB_DISPATCH_BATCH_SIZE", DISPATCH_BATCH_SIZE))):
        enqueue_on_commit(messages_process_task, chunk, queue=queue)


def deliveries_enqueue(*, delivery_ids: list[int]) -> None:
    """Hand deliveries to the delivery workers once the current transaction commits."""
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
    # it up by idempotency key before sending again (attempts > 0 makes it do so).
    stuck_after = current - datetime.timedelta(seconds=stuck_delivery_seconds())
    stuck = Delivery.objects.filter(status=DeliveryStatus.DELIVERING, updated_at__lt=stuck_after)
    stuck_count = stuck.update(status=DeliveryStatus.RETRYING, next_attempt_at=current, dispatched_at=None)
    return {"messages": len(message_ids), "deliveries": stuck_count, "pulls": batch_pulls_resume(stale=stale)}


def batch_pulls_resume(*, stale: datetime.datetime) -> int:
    """Start again the batch pulls whose run died mid-way: its cursor says running but has not moved since
    `stale` (its lease, renewed each page, has expired by then). The run continues from the stored cursor."""
    from sync.batch import BATCH_QUEUE
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


# --- the pipeline: map, validate, ownership, hold, route -------------------------------------------


class PipelineStop(Exception):
    """A stage ended the message's run (exception item opened, held, or skipped)."""


def _value_at(record: Mapping[str, Any], path: str) -> Any:
    current: Any = record
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return current


def _routes_for(message: Message) -> list[Route]:
    def load() -> list[Route]:
        routes = Route.objects.filter(source_system_id=message.system_id, entity=message.entity, active=True).filter(
            Q(legal_entity__isnull=True) | Q(legal_entity_id=message.legal_entity_id)
        )
        return list(routes.select_related("target_system").order_by("id"))

    routes = _memoized(("routes", message.system_id, message.entity, message.legal_entity_id), load)
    return [route for route in routes if not route.event_types or message.event_type in route.event_types]


def policy_for_message(message: Message, routes: list[Route] | None = None) -> SyncPolicy | None:
    """The sync policy of the first route's flow for the message's legal entity (None: hub defaults)."""
    routes = _routes_for(message) if routes is None else routes
    flow = next((route.flow for route in routes if route.flow), "")
    if not flow:
        return None
    return _memoized(
        ("policy", flow, message.legal_entity_id),
        lambda: sync_policy_for(flow=flow, legal_entity=message.legal_entity),
    )


def _system_legal_entity_id(system_id: int) -> int | None:
    def load() -> int | None:
        ids = list(LegalEntity.objects.filter(systems__id=system_id).values_list("id", flat=True)[:2])
        return ids[0] if len(ids) == 1 else None

    return _memoized(("system_legal_entity", system_id), load)


def _open_item(message: Message, category: str, reason: str, **fields: Any) -> None:
    exception_item_open(
        category=category,
        reason=reason,
        message=message,
        legal_entity=message.legal_entity,
        system=fields.pop("system", message.system),
        **fields,
    )


def _fail(message: Message, *, category: str, reason: str, now: datetime.datetime, **fields: Any) -> NoReturn:
    message.status = MessageStatus.FAILED
    message.failed_at = now
    message.last_error = reason[:2000]
    message.save()
    _open_item(message, category, reason, **fields)
    follow_up_emit(EVENT_MESSAGE_FAILED, message.pk)
    raise PipelineStop


def _stage_map(message: Message, now: datetime.datetime) -> None:
    legal_entity_id = message.legal_entity_id or _system_legal_entity_id(message.system_id)
    mapping_set = message.mapping_set
    if mapping_set is None:
        mapping_set = _published_mapping_set(
            system_id=message.system_id,
            entity_name=message.entity,
            direction=Direction.INBOUND,
            legal_entity_id=legal_entity_id,
        )
    if mapping_set is None:
        _fail(
            message,
            category=ExceptionCategory.VALIDATION,
            reason=f"No published inbound mapping for {message.entity} from {message.system.slug}.",
            payload_snapshot=message.raw_payload,
            suggested_action="Publish an inbound mapping for this system and entity, then replay.",
            now=now,
        )
    try:
        compiled = _compiled_for_batch(mapping_set.pk)
    except MappingDefinitionError as exc:
        _fail(
            message,
            category=ExceptionCategory.VALIDATION,
            reason=f"Mapping {mapping_set} does not compile: {exc}",
            payload_snapshot=message.raw_payload,
            suggested_action="Fix the mapping, publish it and replay with the current mapping.",
            now=now,
        )
    record = message.raw_payload or {}
    if compiled.uses_xrefs:
        compiled.prefetch_xrefs([record], xrefs_resolve)
    result = compiled.map_one(record)
    message.mapping_set = mapping_set
    message.mapping_version = mapping_set.version
    if result.errors:
        _fail(
            message,
            category=ExceptionCategory.VALIDATION,
            reason=f"{len(result.errors)} field(s) could not be mapped: " + "; ".join(map(str, result.errors[:5])),
            payload_snapshot=message.raw_payload,
            failed_rules=[
                {
                    "rule": "mapping",
                    "field": e["target"],
                    "expected": e["source"],
                    "actual": e["value"],
                    "message": e["message"],
                }
                for e in (error.as_dict() for error in result.errors)
            ],
            suggested_action="Correct the source record (or the mapping) and replay.",
            now=now,
        )
    message.canonical_payload = result.output
    message.status = MessageStatus.MAPPED
    message.mapped_at = now
    _derive_record_fields(message, legal_entity_id)
    # The inbound mapping already validated its output against the canonical schema: not done twice.
    message._schema_checked = compiled.validator is not None  # type: ignore[attr-defined]


def _derive_record_fields(message: Message, fallback_legal_entity_id: int | None) -> None:
    canonical = message.canonical_payload or {}
    message.canonical_id = str(canonical.get("id") or "")[:100]
    code = next((canonical[name] for name in LEGAL_ENTITY_FIELDS if canonical.get(name)), None)
    if code:
        message.legal_entity = LegalEntity.objects.filter(code=code).first()
    elif message.legal_entity_id is None and fallback_legal_entity_id:
        message.legal_entity_id = fallback_legal_entity_id
    updated = canonical.get("updated_at")
    parsed = parse_datetime(updated) if isinstance(updated, str) else None
    if parsed is not None and timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, datetime.UTC)
    message.source_timestamp = parsed


def _money(canonical: Mapping[str, Any]) -> tuple[Decimal | None, str]:
    for name in AMOUNT_FIELDS:
        value = canonical.get(name)
        if isinstance(value, Mapping) and "amount" in value:
            try:
                return Decimal(str(value["amount"])), str(value.get("currency") or "")
            except InvalidOperation:
                return None, ""
    # A time entry carries no amount of its own: its value is hours at the billed rate.
    if canonical.get("hours") is not None and canonical.get("rate") is not None:
        try:
            total = Decimal(str(canonical["hours"])) * Decimal(str(canonical["rate"]))
        except InvalidOperation:
            return None, ""
        return total, str(canonical.get("currency") or "")
    return None, ""


def _stage_validate(message: Message, policy: SyncPolicy | None, now: datetime.datetime) -> None:
    canonical = message.canonical_payload or {}
    if not getattr(message, "_schema_checked", False):
        try:
            problems = canonical_payload_validate(entity_name=message.entity, payload=canonical)
        except HubError as exc:
            problems = [{"path": "", "message": exc.detail, "keyword": "schema"}]
        if problems:
            _fail(
                message,
                category=ExceptionCategory.VALIDATION,
                reason=f"{len(problems)} schema error(s): "
                + "; ".join(f"{p['path'] or 'record'}: {p['message']}" for p in problems[:5]),
                payload_snapshot=canonical,
                failed_rules=[
                    {
                        "rule": "schema",
                        "field": p["path"],
                        "expected": p["keyword"],
                        "actual": None,
                        "message": p["message"],
                    }
                    for p in problems
                ],
                suggested_action="Correct the payload to match the canonical schema and replay.",
                now=now,
            )
    if policy is not None and policy.validation_rules:
        context = RuleContext(rate_lookup=rate_for)
        failed = []
        for entry in policy.validation_rules:
            result = rule_get(entry["rule"]).run(canonical, entry.get("params") or {}, context)
            if not result.passed:
                failed.append(
                    {
                        "rule": result.rule,
                        "field": result.field,
                        "expected": _jsonable(result.expected),
                        "actual": _jsonable(result.actual),
                        "message": result.message,
                    }
                )
        if failed:
            _fail(
                message,
                category=ExceptionCategory.POLICY,
                reason="; ".join(item["message"] for item in failed),
                payload_snapshot=canonical,
                failed_rules=failed,
                suggested_action="Fix the record in the source system, or edit the payload here and replay.",
                now=now,
            )
    message.status = MessageStatus.VALIDATED
    message.validated_at = now
    ordering_path = policy.ordering_key_path if policy is not None else ""
    key = _value_at(canonical, ordering_path) if ordering_path else None
    message.ordering_key = str(key if key is not None else message.canonical_id)[:200]


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def _stage_ownership(message: Message, now: datetime.datetime) -> None:
    canonical = dict(message.canonical_payload or {})
    entity = message.entity
    if not _memoized(("ownership", entity), lambda: OwnershipRule.objects.filter(entity__name=entity).exists()):
        return
    stage = str(canonical.get("status") or "")
    ignored: list[str] = []
    conflicts: list[dict[str, Any]] = []
    for field in [name for name in canonical if name not in IDENTITY_FIELDS]:
        rule = owner_of(entity=message.entity, field=field, stage=stage)
        if rule is None or rule.owning_system_id == message.system_id:
            continue
        entry = {"field": field, "owner": rule.owning_system.slug, "rule": rule.pk, "action": rule.conflict_action}
        if rule.conflict_action == "ignore":
            ignored.append(field)
            canonical.pop(field, None)
        conflicts.append(entry)
    blocking = [c for c in conflicts if c["action"] != "ignore"]
    if blocking:
        _fail(
            message,
            category=ExceptionCategory.OWNERSHIP_CONFLICT,
            reason="; ".join(
                f"{c['field']} is owned by {c['owner']} (rule #{c['rule']}), not {message.system.slug}"
                for c in blocking
            ),
            payload_snapshot=message.canonical_payload,
            failed_rules=[
                {
                    "rule": "ownership",
                    "field": c["field"],
                    "expected": c["owner"],
                    "actual": message.system.slug,
                    "message": f"{c['field']} is owned by {c['owner']}",
                }
                for c in blocking
            ],
            suggested_action="Make the change in the owning system, or remove the fields and replay.",
            now=now,
        )
    if ignored:
        # Never overwrite a field the sender does not own; the conflict stays on record on the message.
        message.canonical_payload = canonical
        message.notes = [*message.notes, {"ownership_ignored": ignored, "at": now.isoformat()}]


def _stage_hold(message: Message, policy: SyncPolicy | None, now: datetime.datetime) -> None:
    if policy is None or policy.approval_threshold_amount is None or message.approved_at is not None:
        return
    amount, currency = _money(message.canonical_payload or {})
    if amount is None or amount < policy.approval_threshold_amount:
        return
    if policy.approval_currency and currency and currency != policy.approval_currency:
        note = f" (in {currency}; the threshold is in {policy.approval_currency}, so it is held to be safe)"
    else:
        note = ""
    second = policy.second_approval_threshold_amount
    required = 2 if second is not None and amount >= second else 1
    message.status = MessageStatus.HELD
    message.held_at = now
    message.save()
    _open_item(
        message,
        ExceptionCategory.APPROVAL_REQUIRED,
        f"{amount} {currency} is at or above the approval threshold {policy.approval_threshold_amount} "
        f"{policy.approval_currency}{note}.",
        payload_snapshot=message.canonical_payload,
        amount=amount,
        currency=currency,
        required_approvals=required,
        suggested_action="Approve to deliver, or reject with a reason"
        + (" (two different approvers are needed above the second threshold)." if required == 2 else "."),
    )
    raise PipelineStop


def message_hold_for_approval(*, message: Message, policy: SyncPolicy | None, now: datetime.datetime) -> None:
    """The hold stage for flows that run their own stage (workflows): raises PipelineStop when it held."""
    _stage_hold(message, policy, now)


def _outbound(route: Route, message: Message) -> tuple[Any, Any, list[str]]:
    """(mapping set, payload, errors) for one target; the canonical record as is when no outbound mapping exists."""
    mapping_set = route.outbound_mapping_set or _published_mapping_set(
        system_id=route.target_system_id,
        entity_name=message.entity,
        direction=Direction.OUTBOUND,
        legal_entity_id=message.legal_entity_id,
    )
    canonical = message.canonical_payload or {}
    if mapping_set is None:
        return None, canonical, []
    compiled: CompiledMapping = _compiled_for_batch(mapping_set.pk)
    if compiled.uses_xrefs:
        compiled.prefetch_xrefs([canonical], xrefs_resolve)
    result = compiled.map_one(canonical)
    return mapping_set, result.output, [str(error) for error in result.errors]


def _stage_route(
    message: Message, routes: list[Route], now: datetime.datetime, batch: _ProcessBatch | None = None
) -> list[Delivery]:
    """The message's deliveries, one per route, ready to send. With a batch, new deliveries are left for the
    batch to insert together (their ids come with that INSERT)."""
    if not routes:
        message.status = MessageStatus.DELIVERED
        message.delivered_at = now
        message.notes = [*message.notes, {"routing": "no active route matched; nothing to deliver"}]
        return []
    if batch is not None:
        existing = batch.existing.get(message.pk, {})
    else:
        existing = {d.target_system_id: d for d in Delivery.objects.filter(message=message)}
    to_send: list[Delivery] = []
    rejected: list[str] = []
    for route in routes:
        mapping_set, payload, errors = _outbound(route, message)
        delivery = existing.get(route.target_system_id)
        if delivery is None:
            delivery = Delivery(message=message, target_system=route.target_system, route=route)
            delivery.idempotency_key = delivery_idempotency_key(message.pk, route.target_system_id, 0)
        elif delivery.outbound_payload != payload and delivery.attempts:
            # A changed payload is a new request: a new key, so the target never confuses it with the old one.
            delivery.revision += 1
            delivery.idempotency_key = delivery_idempotency_key(message.pk, route.target_system_id, delivery.revision)
            delivery.lookup_first = False
        elif delivery.attempts or delivery.status in DELIVERY_DONE_STATUSES:
            # Same request again (a replay): it may already be at the target, so look it up before sending.
            delivery.lookup_first = True
        delivery.route = route
        delivery.mapping_set = mapping_set
        delivery.outbound_payload = payload
        delivery.attempts = 0
        delivery.next_attempt_at = None
        delivery.dispatched_at = now
        delivery.last_error = ""
        if errors:
            delivery.status = DeliveryStatus.FAILED
            delivery.last_error = "; ".join(errors)[:2000]
            delivery.save()
            rejected.append(route.target_system.slug)
            _open_item(
                message,
                ExceptionCategory.VALIDATION,
                f"Outbound mapping for {route.target_system.slug} failed: " + "; ".join(errors[:5]),
                delivery=delivery,
                system=route.target_system,
                payload_snapshot=message.canonical_payload,
                suggested_action="Correct the record or the outbound mapping, then replay.",
            )
            continue
        delivery.status = DeliveryStatus.PENDING
        if batch is not None and delivery.pk is None:
            batch.new_deliveries.append(delivery)
        else:
            delivery.save()
        to_send.append(delivery)
    message.status = MessageStatus.QUEUED if to_send else MessageStatus.FAILED
    message.queued_at = now
    if not to_send:
        message.failed_at = now
        message.last_error = f"Outbound mapping failed for {', '.join(rejected)}."
    return to_send


def delivery_idempotency_key(message_id: int, target_id: int, revision: int) -> str:
    """The key sent with every call of one delivery: the same for retries, new for an edited replay."""
    return f"hub-{message_id}-{target_id}" + (f"-r{revision}" if revision else "")


# A flow that posts with its own ledger (time and expense) takes its messages over after mapping: the
# handler validates, decides what to send and sets the message's status; the engine saves the message.
FlowStage = Callable[..., None]
_flow_stages: dict[str, FlowStage] = {}


def flow_stage_register(flow: str, handler: FlowStage) -> FlowStage:
    """Make `handler(message=, policy=, routes=, now=)` run instead of validate → route for messages of `flow`.
    Register at import time (an app's ready()), so web and worker processes agree."""
    _flow_stages[flow] = handler
    return handler


def message_process(*, message_id: int) -> str | None:
    """Run one message through the stages it has not passed yet; returns its new status (None: nothing to do)."""
    return _message_process(message_id, None)


PROCESSABLE = (MessageStatus.RECEIVED, MessageStatus.MAPPED, MessageStatus.VALIDATED)


@dataclass
class _ProcessBatch:
    """A batch of messages processed in one transaction: what its stages leave to be written together."""

    existing: dict[int, dict[int, Delivery]]
    new_deliveries: list[Delivery] = dataclasses.field(default_factory=list)
    queued: list[Delivery] = dataclasses.field(default_factory=list)
    routed: list[Message] = dataclasses.field(default_factory=list)
    unrouted: list[int] = dataclasses.field(default_factory=list)


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


# --- delivery ----------------------------------------------------------------------------------------


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


def _call(delivery: Delivery, system: ConnectedSystem, lookup_first: bool) -> CallOutcome:
    """Deliver the record through the transport: updated where the target holds it (cross-reference), found
    by key where an answer may have been lost, else created once."""
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
    try:
        connector = connector_for(system)
    except Exception as exc:  # noqa: BLE001 - credentials that cannot be read: classified like a failed call
        return transport.outcome_of_error(exc, transport.UPSERT)
    return transport.record_send(connector, message.entity, call)


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
    message = delivery.message
    started = time.perf_counter()
    with transport.call_scope(correlation_id=message.correlation_id, timeout_seconds=policy_timeout(sync_policy)):
        result = _call(delivery, system, lookup_first)
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    return _record(delivery, system, result, policy, duration_ms=duration_ms, task_id=task_id, probe=probe)


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
    elif result.outcome == AttemptOutcome.TERMINAL_ERROR:
        # The system answered (a 4xx): it is up, so the circuit counts it as a success.
        if result.status_code is not None:
            circuit.circuit_record_success(system=system)
        delivery.status = DeliveryStatus.FAILED
        delivery.last_error = result.error
        delivery.save()
        category, reason, suggested = terminal_item_text(message.entity, system.slug, result)
        _open_item(
            message,
            category,
            reason,
            delivery=delivery,
            system=system,
            payload_snapshot=delivery.outbound_payload,
            suggested_action=suggested,
        )
    else:
        if count_in_circuit:
            circuit.circuit_record_failure(system=system)
        delivery.last_error = result.error
        if delivery.attempts >= policy.max_attempts:
            delivery.status = DeliveryStatus.DEAD
            delivery.save()
            _open_item(
                message,
                ExceptionCategory.DEAD_LETTER,
                f"{delivery.attempts} attempts to {system.slug} failed; last: {result.error}",
                delivery=delivery,
                system=system,
                payload_snapshot=delivery.outbound_payload,
                suggested_action="Check the target system, then replay; the replay looks the record up first.",
            )
        else:
            delivery.status = DeliveryStatus.RETRYING
            delay = policy.delay(delivery.attempts, result.retry_after)
            delivery.next_attempt_at = now + datetime.timedelta(seconds=delay)
            delivery.save()
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


def deliveries_send(*, delivery_ids: Iterable[int], task_id: str = "") -> dict[str, int]:
    """Send a batch of deliveries: claimed, called and recorded together (sync.delivering); anything unusual
    (paused, circuit, busy ordering key, spent budget, failed call) one by one through delivery_send."""
    from sync import delivering

    with _batch_scope():
        return delivering.deliveries_send(delivery_ids=delivery_ids, task_id=task_id)


# --- replay, approval release ----------------------------------------------------------------------


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


# --- follow-up events ------------------------------------------------------------------------------

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


# --- scheduled pulls ---------------------------------------------------------------------------------

# Fields that carry a record's version, first present wins; without one the record's content is its version.
VERSION_FIELDS = ("updated_at", "updatedAt", "LastModifiedDate", "write_date", "modified", "version", "_version")


def poll_lease_seconds() -> float:
    """How long a pull holds its cursor without a heartbeat: each page renews it, so a run killed mid-way
    releases the cursor within the sweeper period and the next run (or the sweeper) continues it."""
    return sweep_after_seconds()


@dataclass
class PollLease:
    """A pull's exclusive hold on one (system, entity) cursor, kept alive page by page."""

    key: str
    token: str

    def renew(self) -> None:
        if cache.get(self.key) == self.token:
            cache.touch(self.key, poll_lease_seconds())

    def release(self) -> None:
        if cache.get(self.key) == self.token:
            cache.delete(self.key)


def poll_lease_take(*, system_id: int, entity: str) -> PollLease | None:
    """The lease on the cursor of (system, entity), or None while another live run holds it."""
    lease = PollLease(f"hub:poll:{system_id}:{entity}", uuid.uuid4().hex)
    return lease if cache.add(lease.key, lease.token, timeout=poll_lease_seconds()) else None


@dataclass(frozen=True)
class PollResult:
    """What one run of a poller did: pages read, messages stored, records already stored, and why it stopped."""

    system: str
    entity: str
    pages: int
    stored: int
    duplicates: int
    outcome: str
    error: str = ""
    cursor: str = ""


def record_version(record: Mapping[str, Any]) -> str:
    """The version of a pulled record: its change timestamp or version field, else a hash of its content, so a
    re-pulled unchanged record has the same key and a changed one a new key."""
    for name in VERSION_FIELDS:
        value = record.get(name)
        if value not in (None, ""):
            return str(value)
    content = json.dumps(record, sort_keys=True, default=str).encode()
    return "sha256:" + hashlib.sha256(content).hexdigest()[:32]


def pull_idempotency_key(*, entity: str, record: Mapping[str, Any]) -> str:
    """pull:<entity>:<external id>:<version>; unique per system by the Message constraint. Too long: hashed."""
    external_id = str(record.get("id") or record.get("external_id") or "")
    if not external_id:
        # A source without ids (a bare CSV row): the content identifies the record.
        external_id = "content-" + hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()
    key = f"pull:{entity}:{external_id}:{record_version(record)}"
    if len(key) > 200:
        key = f"pull:{entity}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return key


def messages_store_batch(
    *,
    system: ConnectedSystem,
    entity: str,
    event_type: str,
    keyed_records: list[tuple[str, dict[str, Any]]],
    correlation_id: str | None = None,
) -> tuple[int, int]:
    """Insert one Message per (idempotency key, record) in one statement; keys already stored are skipped.

    Returns (stored, duplicates). Call it inside the transaction that also records the progress (the poll
    cursor, the file drop), so both commit together. New messages wait in `received` for the dispatcher.
    """
    from integrationhub.logging import new_correlation_id
    from integrationhub.lookups import ids_by_key

    unique: dict[str, dict[str, Any]] = {}
    for key, record in keyed_records:
        unique.setdefault(key, record)
    existing = set(ids_by_key(Message, "idempotency_key", unique, system_id=system.pk))
    now = timezone.now()
    rows = [
        Message(
            system=system,
            entity=entity,
            event_type=event_type,
            idempotency_key=key,
            correlation_id=correlation_id or new_correlation_id(),
            raw_payload=record,
            received_at=now,
        )
        for key, record in unique.items()
        if key not in existing
    ]
    # ON CONFLICT DO NOTHING: a concurrent writer of the same key wins and this row is dropped, never doubled.
    Message.objects.bulk_create(rows, batch_size=500, ignore_conflicts=True)
    return len(rows), len(keyed_records) - len(rows)


def poll_page_store(
    *, poll_cursor: PollCursor, entity: str, records: list[dict[str, Any]], next_cursor: str
) -> tuple[int, int]:
    """Store one pulled page and move the cursor past it, in one transaction: both or neither."""
    with transaction.atomic():
        stored, duplicates = messages_store_batch(
            system=poll_cursor.system,
            entity=entity,
            event_type=f"{entity}.{PULL_EVENT_ACTION}",
            keyed_records=[(pull_idempotency_key(entity=entity, record=record), record) for record in records],
        )
        PollCursor.objects.filter(pk=poll_cursor.pk).update(
            cursor=next_cursor,
            records_stored=F("records_stored") + stored,
            updated_at=timezone.now(),
        )
    poll_cursor.cursor = next_cursor
    return stored, duplicates


def _poll_finish(poll_cursor: PollCursor, result: PollResult) -> PollResult:
    PollCursor.objects.filter(pk=poll_cursor.pk).update(
        last_run_at=timezone.now(), last_outcome=result.outcome, last_error=result.error[:2000]
    )
    log = logger.warning if result.outcome == PollOutcome.ERROR else logger.info
    log(
        "poll run %s",
        result.outcome,
        extra={"system": result.system, "entity": result.entity, "pages": result.pages, "stored": result.stored},
    )
    return result


def poll_run(*, system: ConnectedSystem, entity: str, max_pages: int | None = None) -> PollResult:
    """Pull the changes of one entity from one system page by page, from the persisted cursor, within the
    system's rate budget. Each page's records are stored as inbound Messages (once per record version) in
    the same transaction that moves the cursor, so a crash at any point resumes with no gap and no duplicate.
    """
    if entity not in CanonicalEntityName.values:
        raise HubValidationError(f"{entity!r} is not a canonical entity.", errors=[{"field": "entity"}])
    poll_cursor, _ = PollCursor.objects.get_or_create(system=system, entity=entity)
    poll_cursor.system = system

    def result(outcome: str, pages: int = 0, stored: int = 0, duplicates: int = 0, error: str = "") -> PollResult:
        return PollResult(
            system.slug, entity, pages, stored, duplicates, outcome, error, cursor=poll_cursor.cursor or ""
        )

    if system.state == SystemState.PAUSED:
        return _poll_finish(poll_cursor, result(PollOutcome.SKIPPED, error="The system is paused."))
    # One run per (system, entity) at a time: two runs would fetch the same pages (harmless, keys dedupe,
    # but wasted calls against the budget). The lock expires, so a killed run never blocks the next one.
    lease = poll_lease_take(system_id=system.pk, entity=entity)
    if lease is None:
        return result(PollOutcome.SKIPPED, error="Another run of this poller is in progress.")
    pages = stored = duplicates = 0
    progress_id = progress.poll_start(system=system, entity=entity)
    try:
        while max_pages is None or pages < max_pages:
            lease.renew()
            cursor = poll_cursor.cursor or None
            try:
                # Through the transport: circuit, shared rate budget, correlation id, one attempt row per page.
                batch = transport.connector_call(
                    system,
                    "fetch_changes",
                    functools.partial(_page_fetch, entity=entity, cursor=cursor),
                    entity=entity,
                    context={"flow": "pull", "cursor": cursor or ""},
                )
            except transport.SystemUnavailableError as exc:
                outcome = PollOutcome.RATE_LIMITED if exc.retry_after is not None else PollOutcome.SKIPPED
                return _poll_finish(poll_cursor, result(outcome, pages, stored, duplicates, error=str(exc.detail)))
            except (ConnectorError, HubError) as exc:
                return _poll_finish(
                    poll_cursor, result(PollOutcome.ERROR, pages, stored, duplicates, error=str(exc.detail))
                )
            page_stored, page_duplicates = poll_page_store(
                poll_cursor=poll_cursor,
                entity=entity,
                records=[dict(record) for record in batch.records],
                next_cursor=batch.next_cursor or "",
            )
            pages += 1
            stored += page_stored
            duplicates += page_duplicates
            progress.batch_advance(progress_id=progress_id, done=page_stored + page_duplicates, pages=1)
            if not batch.has_more:
                return _poll_finish(poll_cursor, result(PollOutcome.COMPLETE, pages, stored, duplicates))
        return _poll_finish(poll_cursor, result(PollOutcome.PAGE_LIMIT, pages, stored, duplicates))
    finally:
        lease.release()
        progress.poll_finish(progress_id=progress_id, poll_cursor_id=poll_cursor.pk)


def _page_fetch(connector: Any, *, entity: str, cursor: str | None) -> Any:
    return connector.fetch_changes(entity, cursor)


def poll_schedule_run(*, schedule_id: int) -> PollResult | None:
    """Run the pull of one PollSchedule (what its beat entry calls); None when it no longer exists or is off."""
    schedule = PollSchedule.objects.select_related("system").filter(pk=schedule_id).first()
    if schedule is None or not schedule.active:
        return None
    return poll_run(system=schedule.system, entity=schedule.entity, max_pages=schedule.max_pages)


POLL_TASK = "sync.poll_run_task"
POLL_QUEUE = "housekeeping"


@transaction.atomic
def poll_schedule_save(*, schedule: PollSchedule, user: Any = None, reason: str = "") -> PollSchedule:
    """Validate and save a poll schedule, and keep its beat entry (an interval PeriodicTask) in step."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    if user is not None and getattr(user, "is_authenticated", False):
        schedule._history_user = user  # type: ignore[attr-defined]
    if reason:
        schedule._change_reason = reason[:100]  # type: ignore[attr-defined]
    schedule.full_clean()
    schedule.save()
    interval, _ = IntervalSchedule.objects.get_or_create(every=schedule.every_seconds, period="seconds")
    task = PeriodicTask.objects.filter(pk=schedule.periodic_task_id).first() or PeriodicTask()
    task.name = f"pull {schedule.entity} from {schedule.system.slug} (#{schedule.pk})"[:200]
    task.task = POLL_TASK
    task.interval = interval
    task.crontab = None
    task.args = json.dumps([schedule.pk])
    task.kwargs = "{}"
    task.queue = POLL_QUEUE
    task.exchange = POLL_QUEUE
    task.routing_key = POLL_QUEUE
    task.enabled = schedule.active
    # A run nobody started within its interval is obsolete: the next one resumes from the same cursor.
    task.expire_seconds = schedule.every_seconds
    task.description = f"Scheduled pull of {schedule.entity} from {schedule.system}."
    task.save()
    if schedule.periodic_task_id != task.pk:
        PollSchedule.objects.filter(pk=schedule.pk).update(periodic_task=task)
        schedule.periodic_task = task
    return schedule


@transaction.atomic
def poll_schedule_delete(*, schedule: PollSchedule) -> None:
    """Delete a poll schedule and its beat entry (the cursor stays: a new schedule resumes from it)."""
    task_id = schedule.periodic_task_id
    schedule.delete()
    if task_id:
        from django_celery_beat.models import PeriodicTask

        PeriodicTask.objects.filter(pk=task_id).delete()


# --- file drop ---------------------------------------------------------------------------------------

FILE_FIELD = "_file"
ROW_FIELD = "_row"


def file_drop_max_bytes() -> int:
    return int(_setting("HUB_FILE_DROP_MAX_BYTES", 20 * 1024 * 1024))


def file_drop_max_rows() -> int:
    return int(_setting("HUB_FILE_DROP_MAX_ROWS", 50_000))


def _file_drop_rows(text: str) -> tuple[int, list[tuple[int, dict[str, Any]]], list[dict[str, Any]]]:
    """(data rows seen, [(row number, record)], errors); row numbers as a spreadsheet shows them (header: row 1)."""
    errors: list[dict[str, Any]] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
    except csv.Error as exc:
        return 0, [], [{"row": 1, "field": "", "message": f"The header row cannot be read: {exc}"}]
    if not header or not any(header):
        return 0, [], [{"row": 1, "field": "", "message": "The file has no header row naming the fields."}]
    blank = [index + 1 for index, name in enumerate(header) if not name]
    if blank:
        errors.append({"row": 1, "field": "", "message": f"Column(s) {blank} of the header have no name."})
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        errors.append({"row": 1, "field": ", ".join(repeated), "message": "Column names must be unique."})
    rows: list[tuple[int, dict[str, Any]]] = []
    row_number = 1
    seen = 0
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append({"row": reader.line_num, "field": "", "message": f"Malformed row: {exc}"})
            break
        row_number += 1
        if not any(value.strip() for value in values):
            continue  # a blank line (often the last one) is not a record
        seen += 1
        if len(values) != len(header):
            errors.append(
                {
                    "row": row_number,
                    "field": "",
                    "message": f"The row has {len(values)} field(s); the header has {len(header)}.",
                }
            )
            continue
        rows.append((row_number, dict(zip(header, values, strict=True))))
    return seen, rows, errors


def _file_drop_mapping_errors(system: ConnectedSystem, entity: str, rows: list[tuple[int, dict[str, Any]]]) -> list:
    """Each row through the system's published inbound mapping, as the pipeline will: the errors it would hit."""
    mapping_set = published_mapping_set(
        system_id=system.pk,
        entity_name=entity,
        direction=Direction.INBOUND,
        legal_entity_id=_system_legal_entity_id(system.pk),
    )
    if mapping_set is None:
        return []  # the pipeline reports it per message (no published mapping); the rows themselves are fine
    try:
        compiled = _compiled_for_batch(mapping_set.pk)
    except MappingDefinitionError as exc:
        return [{"row": None, "field": "", "message": f"Mapping {mapping_set} does not compile: {exc}"}]
    records = [record for _, record in rows]
    if compiled.uses_xrefs:
        compiled.prefetch_xrefs(records, xrefs_resolve)
    errors = []
    for row_number, record in rows:
        for error in compiled.map_one(record).errors:
            detail = error.as_dict()
            errors.append(
                {
                    "row": row_number,
                    "field": detail["source"] or detail["target"],
                    "message": f"{detail['target']}: {detail['message']}",
                    "value": detail["value"],
                }
            )
    return errors


def file_drop_key(*, entity: str, sha256: str, row: int, record: Mapping[str, Any]) -> str:
    """A row with an id: file:<entity>:<id>:<version> (the same record in a later file is stored once);
    without: file:<file hash>:<row>."""
    external_id = str(record.get("id") or "").strip()
    if not external_id:
        return f"file:{sha256[:40]}:{row}"
    key = f"file:{entity}:{external_id}:{record_version(record)}"
    return key if len(key) <= 200 else f"file:{entity}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def file_drop_ingest(
    *, system: ConnectedSystem, entity: str, file_name: str, content: bytes, user: Any = None
) -> FileDrop:
    """Store every row of an uploaded CSV file as an inbound Message, all or nothing.

    Every row is checked first (the CSV structure, then the system's published inbound mapping when there
    is one); if any row fails, nothing of the file is stored and the FileDrop row lists each error with its
    row number (the header is row 1) and field. The same file uploaded again stores nothing new.
    """
    from integrationhub.logging import new_correlation_id

    if entity not in CanonicalEntityName.values:
        raise HubValidationError(
            f"{entity!r} is not a canonical entity.", errors=[{"field": "entity", "message": "Unknown entity."}]
        )
    if system.state == SystemState.PAUSED:
        raise SystemPausedError(f"System '{system.slug}' is paused; upload the file after it is resumed.")
    if len(content) > file_drop_max_bytes():
        raise PayloadTooLargeError(
            f"The file has {len(content)} bytes; the limit is {file_drop_max_bytes()}.",
            hint="Split the file into smaller ones.",
        )
    digest = hashlib.sha256(content).hexdigest()
    drop = FileDrop(
        system=system,
        entity=entity,
        file_name=file_name[:255],
        sha256=digest,
        correlation_id=new_correlation_id(),
        uploaded_by=user if getattr(user, "is_authenticated", False) else None,
    )
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        errors: list[dict[str, Any]] = [
            {"row": None, "field": "", "message": f"The file is not UTF-8 text (byte {exc.start})."}
        ]
        rows: list[tuple[int, dict[str, Any]]] = []
        seen = 0
    else:
        seen, rows, errors = _file_drop_rows(text)
    drop.rows_total = seen
    if len(rows) > file_drop_max_rows():
        errors.append(
            {
                "row": None,
                "field": "",
                "message": f"The file has {len(rows)} rows; the limit is {file_drop_max_rows()}.",
            }
        )
    elif rows:
        # Structural errors do not hide mapping errors: one upload reports every row that needs fixing.
        errors = [*errors, *_file_drop_mapping_errors(system, entity, rows)]
    if not errors and not rows:
        errors = [{"row": None, "field": "", "message": "The file has no data rows."}]
    progress_id = progress.batch_start(
        kind=BatchKind.FILE_DROP, system=system, entity=entity, total=seen, label=drop.file_name
    )
    with transaction.atomic():
        if errors:
            drop.status = FileDropStatus.REJECTED
            drop.errors = sorted(errors, key=lambda error: (error["row"] or 0, error["field"]))[:1000]
            drop.save()
            progress.batch_finish(
                progress_id=progress_id, status=BatchStatus.FAILED, failed=seen, error=f"{len(errors)} error(s)"
            )
            return drop
        keyed = [
            (
                file_drop_key(entity=entity, sha256=digest, row=row_number, record=record),
                {**record, FILE_FIELD: drop.file_name, ROW_FIELD: row_number},
            )
            for row_number, record in rows
        ]
        stored, duplicates = messages_store_batch(
            system=system,
            entity=entity,
            event_type=f"{entity}.{FILE_DROP_EVENT_ACTION}",
            keyed_records=keyed,
            correlation_id=drop.correlation_id,
        )
        drop.rows_accepted = stored
        drop.rows_duplicate = duplicates
        drop.status = FileDropStatus.ACCEPTED if stored else FileDropStatus.DUPLICATE
        drop.save()
        progress.batch_finish(progress_id=progress_id, done=stored + duplicates)
    return drop


# --- retention ---------------------------------------------------------------------------------------

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
