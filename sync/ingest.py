"""Storing inbound data once: the signed webhook (`message_ingest`) and batches of pulled or dropped records.

The webhook path verifies the sender (known, not paused, Standard Webhooks signature, inbound budget), refuses
what PostgreSQL could not store with a 400 naming the field, and inserts one Message per idempotency key;
a database that does not answer is a 503 the sender retries. `messages_store_batch` is the same promise for
pulls and file drops. Ingest writes the message row and nothing else: the dispatcher takes it from there.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from connectors.choices import SystemState
from connectors.models import ConnectedSystem
from connectors.webhooks import (
    DEFAULT_TOLERANCE_SECONDS,
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    verify_standard_webhook,
)
from integrationhub.counters import INBOUND_BUDGET_FAIL_OPEN
from integrationhub.errors import HubConflictError
from integrationhub.parsers import NUL_REFUSED, contains_nul
from integrationhub.throttling import BudgetUnavailableError, budget_spend_leased
from mappings.choices import CanonicalEntityName
from sync.bulk import insert_unless_conflict
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
from sync.models import Message
from sync.policy import _setting

logger = logging.getLogger(__name__)


MAX_JSON_DEPTH = 32


EVENT_TYPE = re.compile(r"^([a-z_]+)\.[a-z_]+(\.[a-z_]+)*$")


# Built once: Choices.values makes a new list on every read, and every webhook asks.
CANONICAL_ENTITIES = frozenset(CanonicalEntityName.values)


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
