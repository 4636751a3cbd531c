"""The batch path of approved time to the ERP: pull a page, map, check, store and deliver it, then the next.

A scheduled pull of time entries that never handles one record at a time. For each page of the PSA: the
compiled inbound mapping runs over the page (`map_batch`), the flow's policy rules run over it with their
lookups loaded once per page (rate cards, cross-references of projects and resources, the legal entities'
accounting-period calendars), the page's messages are written in one statement together with the cursor move,
held and failed entries go to the exception queue in one statement (an entry dated in a closed period as a
closed-period item), and the passing entries are posted to the ERP in batches (one HTTP call per batch, one
idempotency key per entry) with their delivery attempts recorded in bulk. A re-run of a page stores nothing
(the messages' pull keys exist) and so posts nothing; a batch the ERP failed is retried with the same keys,
which the ERP answers with the entries it already has, so nothing is posted twice. The next page is read, and
a page's ERP call runs, on two helper threads while the run evaluates and stores the following page (HTTP
only: every statement stays on the run's own connection, and a call's outcome is recorded before the next
batch is claimed). At most two pages are held in memory at a time.

The pieces are the engine's own: the poll cursor and its lock, pull keys, compiled mappings, the rule
registry, retry policy, circuit breaker and rate budget, delivery keys and follow-up events.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from operator import methodcaller
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.db.models import F, Max, Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from connectors.base import UpsertResult
from connectors.choices import SystemState
from connectors.http import ConnectorError
from connectors.models import ConnectedSystem
from exception_queue.choices import ExceptionCategory
from exception_queue.models import ExceptionItem
from exception_queue.services import exception_items_open_many
from governance.choices import Flow
from governance.models import LegalEntity, OwnershipRule, SyncPolicy
from governance.rules import (
    CLOSED_PERIOD_SUGGESTED_ACTION,
    PERIOD_RULE,
    RuleContext,
    RuleResult,
    only_closed_period,
    rule_get,
    rules_evaluate,
    schema_defaults,
    value_at,
)
from governance.selectors import (
    accounting_period_is_open,
    owner_of,
    period_calendar_preload,
    rate_lookup_preload,
    sync_policy_for,
)
from integrationhub.errors import HubError, HubValidationError
from integrationhub.logging import new_correlation_id
from integrationhub.lookups import ids_by_key
from mappings.choices import Direction
from mappings.compiler import CompiledMapping, MappingDefinitionError
from mappings.models import MappingSet
from mappings.runtime import compiled_mapping, published_mapping_set, xrefs_resolve
from mappings.selectors import canonical_payload_validate
from sync import circuit, transport
from sync.bulk import rows_insert, rows_update
from sync.choices import (
    EVENT_MESSAGE_DELIVERED,
    EVENT_MESSAGE_FAILED,
    PULL_EVENT_ACTION,
    AttemptOutcome,
    DeliveryStatus,
    MessageStatus,
    PollOutcome,
)
from sync.follow_ups import follow_up_emit_many
from sync.models import CrossReference, Delivery, DeliveryAttempt, Message, PollCursor, Route
from sync.outcome import failure_decide, messages_settle_from_rows
from sync.policy import RetryPolicy
from sync.polling import poll_lease_take, pull_idempotency_key
from sync.selectors import record_external_ids
from sync.stages import (
    LEGAL_ENTITY_FIELDS,
    OWNERSHIP_SUGGESTED_ACTION,
    _jsonable,
    delivery_idempotency_key,
    hold_check,
    ownership_check,
)

logger = logging.getLogger(__name__)

ENTITY = "time_entry"
FLOW = Flow.TIME_EXPENSE_TO_ERP
DEFAULT_BATCH_SIZE = 500
BATCH_QUEUE = "housekeeping"
# Fields of the outbound payload that carry the canonical id of another record: the target's own id of
# that record is sent instead, read from the cross-references once per page.
TARGET_REFERENCES = {"project_id": "project"}
# The canonical field that says who worked the entry; a resource is known when any system holds a
# cross-reference for it.
RESOURCE_ENTITY = "resource"


def run_seconds() -> float:
    """How long one run pulls new pages before it hands the rest to its next run (below the task limit)."""
    default = max(10.0, float(settings.CELERY_TASK_SOFT_TIME_LIMIT) / 2)
    return float(getattr(settings, "HUB_BATCH_RUN_SECONDS", default))


@dataclass
class BatchPullResult:
    """What one run of the batch path did: pages read, entries stored and their outcomes, why it stopped."""

    route: int
    pages: int = 0
    fetched: int = 0
    stored: int = 0
    duplicates: int = 0
    delivered: int = 0
    already_applied: int = 0
    rejected: int = 0
    retrying: int = 0
    held: int = 0
    failed: int = 0
    outcome: str = ""
    error: str = ""
    more: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --- lookups, loaded once per page ---------------------------------------------------------------------


def _rule_params(entries: Iterable[Mapping[str, Any]], name: str) -> list[dict[str, Any]]:
    found = []
    for entry in entries:
        if entry.get("rule") == name:
            rule = rule_get(name)
            found.append({**schema_defaults(rule.params_schema), **(entry.get("params") or {})})
    return found


def _date_of(value: Any) -> datetime.date | None:
    try:
        return datetime.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _period_calendar(
    records: list[dict[str, Any]], entries: list[dict[str, Any]]
) -> Callable[[str, datetime.date], bool]:
    """The legal entities' accounting-period calendars (governance's AccountingPeriod, the same calendar the
    per-record path and finance's admin use) for the page's entities and dates, read in one query."""
    codes: set[str] = set()
    dates: list[datetime.date] = []
    for params in _rule_params(entries, PERIOD_RULE):
        for record in records:
            code, on_date = value_at(record, params["legal_entity_field"]), _date_of(value_at(record, params["field"]))
            if isinstance(code, str) and on_date is not None:
                codes.add(code)
                dates.append(on_date)
    if not dates:
        return lambda code, on_date: accounting_period_is_open(legal_entity=code, on_date=on_date)
    return period_calendar_preload(legal_entity_codes=codes, first_date=min(dates), last_date=max(dates))


@dataclass
class PageLookups:
    """Everything the rules and the outbound payloads of one page need, read in a handful of queries."""

    context: RuleContext
    target_ids: dict[tuple[str, str], str] = field(default_factory=dict)


def page_lookups_load(
    *, records: list[dict[str, Any]], policies: Iterable[SyncPolicy | None], target: ConnectedSystem
) -> PageLookups:
    """Rate cards of the page's entities, roles and dates; projects known to the target; known resources;
    the period calendars. One query each, whatever the page size."""
    entries = [entry for policy in policies if policy is not None for entry in policy.validation_rules or []]
    codes: set[str] = set()
    roles: set[str] = set()
    dates: list[datetime.date] = []
    for params in _rule_params(entries, "rate_matches_card"):
        for record in records:
            code, role = value_at(record, params["legal_entity_field"]), value_at(record, params["role_field"])
            on_date = _date_of(value_at(record, params["date_field"]))
            if isinstance(code, str) and isinstance(role, str) and on_date is not None:
                codes.add(code)
                roles.add(role)
                dates.append(on_date)
    rate_lookup: Callable[..., Any] | None = None
    if dates:
        rate_lookup = rate_lookup_preload(
            legal_entity_codes=codes, roles=roles, first_date=min(dates), last_date=max(dates)
        )
    else:
        from governance.selectors import rate_for

        rate_lookup = rate_for

    project_paths = {params["field"] for params in _rule_params(entries, "project_active_in_erp")} | {"project_id"}
    project_ids = {
        str(value) for record in records for path in project_paths if (value := value_at(record, path)) is not None
    }
    target_ids: dict[tuple[str, str], str] = {}
    wanted = Q()
    for name in set(TARGET_REFERENCES.values()):
        ids = project_ids if name == "project" else set()
        if ids:
            wanted |= Q(entity=name, canonical_id__in=ids)
    if wanted:
        for entity, canonical_id, external_id in CrossReference.objects.filter(wanted, system=target).values_list(
            "entity", "canonical_id", "external_id"
        ):
            target_ids[(entity, canonical_id)] = external_id
    # A project the ERP knows (it holds its cross-reference) is postable; the ERP itself still refuses a
    # closed one, per entry, and that entry goes to the queue.
    active_projects = {canonical_id for (entity, canonical_id) in target_ids if entity == "project"}

    resource_paths = {params["field"] for params in _rule_params(entries, "resource_known")} | {"resource_id"}
    resource_ids = {
        str(value) for record in records for path in resource_paths if (value := value_at(record, path)) is not None
    }
    known_resources = set(
        CrossReference.objects.filter(entity=RESOURCE_ENTITY, canonical_id__in=resource_ids).values_list(
            "canonical_id", flat=True
        )
    )
    context = RuleContext(
        rate_lookup=rate_lookup,
        known_resources=known_resources,
        active_projects=active_projects,
        period_calendar=_period_calendar(records, entries),
    )
    return PageLookups(context=context, target_ids=target_ids)


# --- one page: map, check, store ----------------------------------------------------------------------


@dataclass
class Outcome:
    """The fate of one record of a page before delivery."""

    key: str
    record: dict[str, Any]
    canonical: dict[str, Any] | None = None
    legal_entity_id: int | None = None
    status: str = MessageStatus.QUEUED
    category: str = ""
    reason: str = ""
    failed_rules: list[dict[str, Any]] = field(default_factory=list)
    suggested_action: str = ""
    amount: Decimal | None = None
    currency: str = ""
    required_approvals: int = 1
    notes: list[dict[str, Any]] = field(default_factory=list)
    payload: dict[str, Any] | None = None
    outbound_mapping_id: int | None = None

    def fail(self, category: str, reason: str, suggested_action: str, rules: list[dict[str, Any]]) -> None:
        self.status, self.category, self.reason = MessageStatus.FAILED, category, reason
        self.suggested_action, self.failed_rules = suggested_action, rules


def _failed_rules(results: list[RuleResult]) -> list[dict[str, Any]]:
    return [
        {
            "rule": result.rule,
            "field": result.field,
            "expected": _jsonable(result.expected),
            "actual": _jsonable(result.actual),
            "message": result.message,
        }
        for result in results
        if not result.passed
    ]


class _PageContext:
    """Per-page caches: legal entities by code, policies and outbound mappings by legal entity, owners."""

    def __init__(self, route: Route, fallback_legal_entity_id: int | None) -> None:
        self.route = route
        self.fallback_legal_entity_id = fallback_legal_entity_id
        self._entities: dict[str, int | None] = {}
        self._policies: dict[int | None, SyncPolicy | None] = {}
        self._outbound: dict[int | None, tuple[MappingSet | None, CompiledMapping | None]] = {}
        self._owners: dict[tuple[str, str], Any] = {}
        self.has_ownership = OwnershipRule.objects.filter(entity__name=ENTITY).exists()

    def legal_entity_id(self, canonical: Mapping[str, Any]) -> int | None:
        code = next((canonical[name] for name in LEGAL_ENTITY_FIELDS if canonical.get(name)), None)
        if not code:
            return self.fallback_legal_entity_id
        if code not in self._entities:
            self._entities[code] = LegalEntity.objects.filter(code=code).values_list("pk", flat=True).first()
        return self._entities[code]

    def load_entities(self, codes: set[str]) -> None:
        missing = codes - set(self._entities)
        found = dict(LegalEntity.objects.filter(code__in=missing).values_list("code", "pk"))
        self._entities.update({code: found.get(code) for code in missing})

    def policy(self, legal_entity_id: int | None) -> SyncPolicy | None:
        if legal_entity_id not in self._policies:
            entity = LegalEntity.objects.filter(pk=legal_entity_id).first() if legal_entity_id else None
            self._policies[legal_entity_id] = sync_policy_for(flow=self.route.flow or FLOW, legal_entity=entity)
        return self._policies[legal_entity_id]

    def outbound(self, legal_entity_id: int | None) -> tuple[MappingSet | None, CompiledMapping | None]:
        if legal_entity_id not in self._outbound:
            mapping_set = self.route.outbound_mapping_set or published_mapping_set(
                system_id=self.route.target_system_id,
                entity_name=ENTITY,
                direction=Direction.OUTBOUND,
                legal_entity_id=legal_entity_id,
            )
            compiled = compiled_mapping(mapping_set.pk) if mapping_set is not None else None
            self._outbound[legal_entity_id] = (mapping_set, compiled)
        return self._outbound[legal_entity_id]

    def owner(self, name: str, stage: str) -> Any:
        if (name, stage) not in self._owners:
            self._owners[(name, stage)] = owner_of(entity=ENTITY, field=name, stage=stage)
        return self._owners[(name, stage)]


def _check_ownership(outcome: Outcome, page: _PageContext, source: ConnectedSystem) -> None:
    """The pipeline's ownership stage (sync.stages.ownership_check), with each (field, stage) answer read once
    per page."""
    check = ownership_check(canonical=outcome.canonical or {}, sender_id=source.pk, owner=page.owner)
    if check.blocking:
        outcome.fail(
            ExceptionCategory.OWNERSHIP_CONFLICT,
            check.reason(source.slug),
            OWNERSHIP_SUGGESTED_ACTION,
            check.failed_rules(source.slug),
        )
    elif check.ignored:
        outcome.canonical = check.canonical
        outcome.notes.append({"ownership_ignored": check.ignored, "at": timezone.now().isoformat()})


def _check_hold(outcome: Outcome, policy: SyncPolicy | None) -> None:
    """The pipeline's approval hold (sync.stages.hold_check): an amount at or above the threshold waits."""
    hold = hold_check(canonical=outcome.canonical or {}, policy=policy)
    if hold is None:
        return
    outcome.status = MessageStatus.HELD
    outcome.category = ExceptionCategory.APPROVAL_REQUIRED
    outcome.reason = hold.reason
    outcome.amount, outcome.currency = hold.amount, hold.currency
    outcome.required_approvals = hold.required_approvals
    outcome.suggested_action = hold.suggested_action


def _outbound_payload(outcome: Outcome, page: _PageContext, lookups: PageLookups) -> None:
    mapping_set, compiled = page.outbound(outcome.legal_entity_id)
    canonical = outcome.canonical or {}
    if compiled is None:
        payload = dict(canonical)
    else:
        result = compiled.map_one(canonical)
        if result.errors:
            errors = [str(error) for error in result.errors]
            outcome.fail(
                ExceptionCategory.VALIDATION,
                f"Outbound mapping for {page.route.target_system.slug} failed: " + "; ".join(errors[:5]),
                "Correct the record or the outbound mapping, then replay.",
                [],
            )
            return
        payload = result.output
    for name, entity in TARGET_REFERENCES.items():
        if payload.get(name) not in (None, ""):
            external = lookups.target_ids.get((entity, str(payload[name])))
            if external is not None:
                payload[name] = int(external) if external.isdigit() else external
    outcome.payload = payload
    outcome.outbound_mapping_id = mapping_set.pk if mapping_set is not None else None


def page_evaluate(
    *,
    route: Route,
    records: list[tuple[str, dict[str, Any]]],
    compiled: CompiledMapping,
    fallback_legal_entity_id: int | None,
) -> list[Outcome]:
    """Map a page with the compiled inbound mapping, then run ownership, the policy rules and the hold over
    it, and build the outbound payloads of the entries that pass."""
    source = route.source_system
    page = _PageContext(route, fallback_legal_entity_id)
    results = compiled.map_batch([record for _, record in records], resolve_xrefs=xrefs_resolve)
    outcomes: list[Outcome] = []
    mapped: list[Outcome] = []
    for (key, record), result in zip(records, results, strict=True):
        outcome = Outcome(key=key, record=record)
        outcomes.append(outcome)
        if result.errors:
            outcome.fail(
                ExceptionCategory.VALIDATION,
                f"{len(result.errors)} field(s) could not be mapped: " + "; ".join(map(str, result.errors[:5])),
                "Correct the source record (or the mapping) and replay.",
                [
                    {
                        "rule": "mapping",
                        "field": error["target"],
                        "expected": error["source"],
                        "actual": error["value"],
                        "message": error["message"],
                    }
                    for error in (e.as_dict() for e in result.errors)
                ],
            )
            continue
        outcome.canonical = result.output
        mapped.append(outcome)
    page.load_entities(
        {
            str(o.canonical[name])
            for o in mapped
            for name in LEGAL_ENTITY_FIELDS
            if o.canonical and o.canonical.get(name)
        }
    )
    for outcome in mapped:
        outcome.legal_entity_id = page.legal_entity_id(outcome.canonical or {})
    policies = {outcome.legal_entity_id: page.policy(outcome.legal_entity_id) for outcome in mapped}
    lookups = page_lookups_load(
        records=[o.canonical or {} for o in mapped], policies=policies.values(), target=route.target_system
    )
    for outcome in mapped:
        canonical = outcome.canonical or {}
        if compiled.validator is None:
            try:
                problems = canonical_payload_validate(entity_name=ENTITY, payload=canonical)
            except HubError as exc:
                problems = [{"path": "", "message": exc.detail, "keyword": "schema"}]
            if problems:
                outcome.fail(
                    ExceptionCategory.VALIDATION,
                    f"{len(problems)} schema error(s): "
                    + "; ".join(f"{p['path'] or 'record'}: {p['message']}" for p in problems[:5]),
                    "Correct the payload to match the canonical schema and replay.",
                    [
                        {"rule": "schema", "field": p["path"], "expected": p["keyword"], "actual": None}
                        | {"message": p["message"]}
                        for p in problems
                    ],
                )
                continue
        policy = policies[outcome.legal_entity_id]
        if policy is not None and policy.validation_rules:
            failed = _failed_rules(
                rules_evaluate(record=canonical, entries=policy.validation_rules, context=lookups.context)
            )
            if failed:
                if only_closed_period(failed):
                    # Held for finance's decision: post in the next open period, or reject; nothing is posted.
                    outcome.fail(
                        ExceptionCategory.CLOSED_PERIOD,
                        "; ".join(item["message"] for item in failed),
                        CLOSED_PERIOD_SUGGESTED_ACTION,
                        failed,
                    )
                    continue
                outcome.fail(
                    ExceptionCategory.POLICY,
                    "; ".join(item["message"] for item in failed),
                    "Fix the record in the source system, or edit the payload here and replay.",
                    failed,
                )
                continue
        if page.has_ownership:
            _check_ownership(outcome, page, source)
            if outcome.status == MessageStatus.FAILED:
                continue
        _check_hold(outcome, policy)
        if outcome.status == MessageStatus.HELD:
            continue
        _outbound_payload(outcome, page, lookups)
    return outcomes


def _approval_time(canonical: Mapping[str, Any] | None) -> datetime.datetime | None:
    value = (canonical or {}).get("approved_at") or (canonical or {}).get("updated_at")
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is not None and timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, datetime.UTC)
    return parsed


def page_store(
    *,
    route: Route,
    poll_cursor: PollCursor,
    outcomes: list[Outcome],
    inbound_mapping: MappingSet,
    next_cursor: str,
    correlation_id: str = "",
) -> list[dict[str, Any]]:
    """Store one evaluated page in one transaction with the cursor move: its messages (one statement), the
    exception items of held and failed entries (one statement), and the deliveries of the passing ones.

    The deliveries are stored claimed by this run (in flight, first attempt counted), as a claim would mark
    them, so posting them takes no claim statements; were the run to die before posting, the sweeper finds
    them in flight and retries them, looking the entries up first. Returns their CLAIMED_FIELDS rows.
    `correlation_id`: the page's (its read's attempt row carries it too); a new one when not given."""
    source, target = route.source_system, route.target_system
    now = timezone.now()
    correlation_id = correlation_id or new_correlation_id()
    messages: list[Message] = []
    for outcome in outcomes:
        canonical = outcome.canonical
        passed = outcome.status == MessageStatus.QUEUED
        messages.append(
            Message(
                system=source,
                entity=ENTITY,
                event_type=f"{ENTITY}.{PULL_EVENT_ACTION}",
                idempotency_key=outcome.key,
                correlation_id=correlation_id,
                raw_payload=outcome.record,
                canonical_payload=canonical,
                canonical_id=str((canonical or {}).get("id") or "")[:100],
                status=outcome.status,
                mapping_set=inbound_mapping,
                mapping_version=inbound_mapping.version,
                legal_entity_id=outcome.legal_entity_id,
                ordering_key=str((canonical or {}).get("id") or "")[:200],
                flow=route.flow or FLOW,
                source_timestamp=_approval_time(canonical),
                last_error=outcome.reason[:2000],
                notes=outcome.notes,
                received_at=now,
                dispatched_at=now,
                mapped_at=now if canonical is not None else None,
                validated_at=now if passed or outcome.status == MessageStatus.HELD else None,
                held_at=now if outcome.status == MessageStatus.HELD else None,
                queued_at=now if passed else None,
                failed_at=now if outcome.status == MessageStatus.FAILED else None,
            )
        )
    with transaction.atomic():
        rows_insert(Message, messages, returning_ids=True)
        items = [
            ExceptionItem(
                category=outcome.category,
                reason=outcome.reason[:4000],
                message=message,
                system=source,
                legal_entity_id=outcome.legal_entity_id,
                payload_snapshot=outcome.canonical if outcome.canonical is not None else outcome.record,
                failed_rules=outcome.failed_rules,
                suggested_action=outcome.suggested_action,
                amount=outcome.amount,
                currency=outcome.currency[:3],
                required_approvals=outcome.required_approvals,
                flow=route.flow or FLOW,
                external_id=str(outcome.record.get("id") or "")[:200],
            )
            for outcome, message in zip(outcomes, messages, strict=True)
            if outcome.status in (MessageStatus.FAILED, MessageStatus.HELD)
        ]
        exception_items_open_many(items=items)
        follow_up_emit_many(
            EVENT_MESSAGE_FAILED,
            [m.pk for m, o in zip(messages, outcomes, strict=True) if o.status == MessageStatus.FAILED],
        )
        deliveries = [
            Delivery(
                message=message,
                target_system=target,
                route=route,
                status=DeliveryStatus.DELIVERING,
                attempts=1,
                idempotency_key=delivery_idempotency_key(message.pk, target.pk, 0),
                mapping_set_id=outcome.outbound_mapping_id,
                outbound_payload=outcome.payload,
                # Claimed by this run: the dispatcher leaves it alone unless the run dies (then the sweeper).
                dispatched_at=now,
            )
            for outcome, message in zip(outcomes, messages, strict=True)
            if outcome.status == MessageStatus.QUEUED
        ]
        rows_insert(Delivery, deliveries, returning_ids=True)
        PollCursor.objects.filter(pk=poll_cursor.pk).update(
            cursor=next_cursor, records_stored=F("records_stored") + len(messages), updated_at=now
        )
    poll_cursor.cursor = next_cursor
    return [
        {
            "pk": delivery.pk,
            "message_id": delivery.message_id,
            "idempotency_key": delivery.idempotency_key,
            "outbound_payload": delivery.outbound_payload,
            "attempts": delivery.attempts,
            "lookup_first": delivery.lookup_first,
            "external_id": "",
            "message__canonical_id": delivery.message.canonical_id,
            "message__correlation_id": correlation_id,
            "fresh": True,
        }
        for delivery in deliveries
    ]


# --- delivery in batches ------------------------------------------------------------------------------


def _send(
    target: ConnectedSystem,
    payloads: list[tuple[dict[str, Any], str]],
    *,
    may_exist: bool = True,
    external_ids: list[str] | None = None,
    correlation_id: str = "",
    timeout_seconds: float | None = None,
) -> list[UpsertResult | ConnectorError]:
    """One batch of time entries to the target, through the transport (`records_post`: the flow's timeout and
    the correlation id header)."""
    return transport.records_post(
        target,
        ENTITY,
        payloads,
        may_exist=may_exist,
        external_ids=external_ids,
        correlation_id=correlation_id,
        timeout_seconds=timeout_seconds,
    )


def http_call(function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run a connector call on a helper thread: in a copy of the caller's context (its correlation id goes into
    the call's log line), and with any database connection the call opened closed again on that thread."""
    try:
        return contextvars.copy_context().run(function, *args, **kwargs)
    finally:
        connections.close_all()


@dataclass
class _InFlight:
    """A claimed batch whose call to the target is running (in the sender's thread, or already done)."""

    rows: list[dict[str, Any]]
    call: Future[list[UpsertResult | ConnectorError]] = field(default_factory=Future)
    started: float = 0.0
    ended: float | None = None

    def timed(self, send: Callable[[], list[UpsertResult | ConnectorError]]) -> list[UpsertResult | ConnectorError]:
        """Make the call, timed where it runs (on its thread): the attempt's duration is the target's, not the
        time the call waited for a thread nor the time the caller spent on the next page."""
        self.started = time.perf_counter()
        try:
            return send()
        finally:
            self.ended = time.perf_counter()


class BatchSender:
    """Posts deliveries of one route to its target in batches: claim, one call per batch, record in bulk.

    With an `executor`, the call of the last batch handed to `send` stays in flight when `send` returns, so
    the caller reads, evaluates and stores the next page while the target works; the next `send` (or
    `finish`) records it before anything else is claimed, so the circuit sees each call's outcome before
    the next call goes out. Only the HTTP call runs in the executor's thread; every statement runs in the
    caller's. Without an executor every batch is recorded before `send` returns.

    Each call passes the transport's gate first (a paused target, an open circuit, the shared rate budget at
    the flow's rate) and goes out under the sync policy's timeout with the batch's correlation id.
    """

    def __init__(
        self,
        *,
        route: Route,
        batch_size: int,
        policy: RetryPolicy,
        task_id: str = "",
        executor: Executor | None = None,
        sync_policy: SyncPolicy | None = None,
    ) -> None:
        self.route, self.batch_size, self.policy, self.task_id = route, batch_size, policy, task_id
        self.executor = executor
        self.sync_policy = sync_policy
        self.in_flight: _InFlight | None = None

    def send(self, delivery_ids: list[int]) -> dict[str, int]:
        """Claim these deliveries batch by batch and hand them to the target; the counts of every batch
        recorded during the call."""
        return self._send_batches(delivery_ids, claimed=False)

    def send_claimed(self, rows: list[dict[str, Any]]) -> dict[str, int]:
        """`send` for deliveries stored already claimed (as `page_store` stores a page's: in flight, attempt
        counted), given as their CLAIMED_FIELDS rows: no claim statements."""
        return self._send_batches(rows, claimed=True)

    def _send_batches(self, items: list[Any], *, claimed: bool) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        target = self.route.target_system
        if not items:
            return counts
        # A pause a person made since the run started holds what is not sent yet.
        transport.system_state_refresh(target)
        for start in range(0, len(items), self.batch_size):
            _counts_add(counts, self.finish())
            try:
                transport.system_gate(target, self.sync_policy)
            except transport.SystemUnavailableError as refused:
                if refused.reason == transport.SystemUnavailableError.PAUSED:
                    # Paused: left for the dispatcher, which sends them once the system is resumed.
                    _released(items[start:], claimed=claimed).update(
                        status=DeliveryStatus.HELD, dispatched_at=None, updated_at=timezone.now()
                    )
                    counts["held"] += len(items) - start
                    break
                until = timezone.now() + datetime.timedelta(seconds=refused.retry_after or 1.0)
                _released(items[start:], claimed=claimed).update(
                    status=DeliveryStatus.RETRYING, next_attempt_at=until, dispatched_at=None, updated_at=timezone.now()
                )
                counts["waiting"] += len(items) - start
                break
            chunk = items[start : start + self.batch_size]
            rows = chunk if claimed else _claim(chunk)
            if rows:
                self._start(rows)
        if self.executor is None:
            _counts_add(counts, self.finish())
        return dict(counts)

    def _start(self, rows: list[dict[str, Any]]) -> None:
        """Start the call of one claimed batch: on the executor's thread, or here and now without one."""
        # Attempts are counted at claim: above one (or a replay's lookup_first), the entry may be there already.
        may_exist = any(row["attempts"] > 1 or row["lookup_first"] for row in rows)
        payloads = [(dict(row["outbound_payload"] or {}), row["idempotency_key"]) for row in rows]
        # Entries the target already holds (a new version of an entry posted before) are updated, never created
        # again: one query for the batch, here on the run's own connection.
        known = record_external_ids(
            system_id=self.route.target_system_id,
            entity=ENTITY,
            canonical_ids=[row["message__canonical_id"] for row in rows],
        )
        external_ids = [known.get(row["message__canonical_id"], "") for row in rows] if known else None
        # The batch's entries come from one page (a retry's may mix pages): the first one's trace carries it.
        correlation_id = rows[0].get("message__correlation_id") or ""
        timeout_seconds = transport.policy_timeout(self.sync_policy)
        target = self.route.target_system
        in_flight = _InFlight(rows)

        def send() -> list[UpsertResult | ConnectorError]:
            return _send(
                target,
                payloads,
                may_exist=may_exist,
                external_ids=external_ids,
                correlation_id=correlation_id,
                timeout_seconds=timeout_seconds,
            )

        if self.executor is None:
            try:
                in_flight.call.set_result(in_flight.timed(send))
            except Exception as exc:  # noqa: BLE001 - classified by finish(), as from the executor
                in_flight.call.set_exception(exc)
        else:
            in_flight.call = self.executor.submit(http_call, in_flight.timed, send)
        self.in_flight = in_flight

    def finish(self) -> dict[str, int]:
        """Wait for the batch in flight, if any, and record its outcome; its counts."""
        in_flight, self.in_flight = self.in_flight, None
        if in_flight is None:
            return {}
        target = self.route.target_system
        call_error: ConnectorError | None = None
        results: list[UpsertResult | ConnectorError] = []
        try:
            results = in_flight.call.result()
        except ConnectorError as exc:
            call_error = exc
        except HubError as exc:  # capability missing, credentials not set: a person must act
            call_error = ConnectorError(exc.detail, system_slug=target.slug)
        ended = in_flight.ended or time.perf_counter()
        duration_ms = round((ended - (in_flight.started or ended)) * 1000, 1)
        return _record_batch(
            self.route, in_flight.rows, results, call_error, self.policy, duration_ms=duration_ms, task_id=self.task_id
        )


def _released(items: list[Any], *, claimed: bool) -> QuerySet[Delivery]:
    """The deliveries of `items` (ids, or claimed rows) to put back unsent; a claimed one gives back the
    attempt its claim counted, since no call went out."""
    if not claimed:
        return Delivery.objects.filter(pk__in=items)
    ids = [row["pk"] for row in items]
    Delivery.objects.filter(pk__in=ids).update(attempts=F("attempts") - 1)
    return Delivery.objects.filter(pk__in=ids)


def _counts_add(counts: dict[str, int], more: Mapping[str, int]) -> None:
    for outcome, number in more.items():
        counts[outcome] += number


def deliveries_send_batch(
    *,
    route: Route,
    delivery_ids: list[int],
    batch_size: int,
    policy: RetryPolicy,
    task_id: str = "",
    sync_policy: SyncPolicy | None = None,
) -> dict[str, int]:
    """Post deliveries of one route to its target in batches: claim, one call per batch, record in bulk."""
    return BatchSender(
        route=route, batch_size=batch_size, policy=policy, task_id=task_id, sync_policy=sync_policy
    ).send(delivery_ids)


CLAIMED_FIELDS = (
    "pk",
    "message_id",
    "idempotency_key",
    "outbound_payload",
    "attempts",
    "lookup_first",
    "external_id",
    "message__canonical_id",
    "message__correlation_id",
)


def _claim(ids: list[int]) -> list[dict[str, Any]]:
    """Mark the still-open deliveries of a batch as in flight (attempt counted before the call, so a worker
    killed mid-call leaves "maybe sent", and the retry's same keys make that harmless)."""
    with transaction.atomic():
        open_ids = list(
            Delivery.objects.select_for_update()
            .filter(pk__in=ids, status__in=[DeliveryStatus.PENDING, DeliveryStatus.RETRYING, DeliveryStatus.HELD])
            .values_list("pk", flat=True)
        )
        Delivery.objects.filter(pk__in=open_ids).update(
            status=DeliveryStatus.DELIVERING, attempts=F("attempts") + 1, updated_at=timezone.now()
        )
    rows = Delivery.objects.filter(pk__in=open_ids).order_by("pk")
    return [dict(row) for row in rows.values(*CLAIMED_FIELDS)]


@transaction.atomic
def _record_batch(
    route: Route,
    rows: list[dict[str, Any]],
    results: list[UpsertResult | ConnectorError],
    call_error: ConnectorError | None,
    policy: RetryPolicy,
    *,
    duration_ms: float,
    task_id: str,
) -> dict[str, int]:
    """Record one batch call in bulk: attempt rows, delivery and message states, cross-references, follow-up
    events, exception items; and the call's effect on the target's circuit."""
    target = route.target_system
    now = timezone.now()
    # A delivery stored by this run (`fresh`) has no attempt yet; the others' last attempt numbers, in one
    # query (order_by(): the model's ordering by delivery would join the deliveries for nothing).
    asked = [row["pk"] for row in rows if not row.get("fresh")]
    previous = (
        dict(
            DeliveryAttempt.objects.filter(delivery_id__in=asked)
            .order_by()
            .values("delivery_id")
            .annotate(last=Max("number"))
            .values_list("delivery_id", "last")
        )
        if asked
        else {}
    )
    attempts: list[DeliveryAttempt] = []
    deliveries: list[_DeliveryOutcome] = []
    delivered_messages: list[int] = []
    failed_messages: list[int] = []
    xrefs: list[CrossReference] = []
    items: list[ExceptionItem] = []
    counts: dict[str, int] = defaultdict(int)
    settle_rows: dict[int, list[tuple[Any, ...]]] = {}
    for position, row in enumerate(rows):
        delivery = _DeliveryOutcome(pk=row["pk"], external_id=row.get("external_id") or "", updated_at=now)
        result: UpsertResult | ConnectorError | None = call_error or (results[position] if results else None)
        if result is None:
            result = ConnectorError("The target answered no result for this entry.", system_slug=target.slug)
        if isinstance(result, UpsertResult):
            outcome = AttemptOutcome.DELIVERED if result.created else AttemptOutcome.ALREADY_APPLIED
            status_code: int | None = 201 if result.created else 200
            error = ""
            delivery.status, delivery.external_id, delivery.delivered_at = (
                DeliveryStatus.DELIVERED,
                str(result.external_id),
                now,
            )
            delivery.next_attempt_at = None
            delivered_messages.append(row["message_id"])
            if row["message__canonical_id"]:
                xrefs.append(
                    CrossReference(
                        entity=ENTITY,
                        canonical_id=row["message__canonical_id"],
                        system=target,
                        external_id=str(result.external_id),
                    )
                )
            counts["delivered" if result.created else "already_applied"] += 1
        else:
            # Decided as per record (sync.outcome.failure_decide): retry on the policy, dead, or rejected.
            failure = transport.outcome_of_error(result, "upsert_many")
            decision = failure_decide(
                entity=ENTITY, system_slug=target.slug, result=failure, attempts=row["attempts"], policy=policy, now=now
            )
            outcome, error, status_code = AttemptOutcome(failure.outcome), failure.error[:2000], failure.status_code
            delivery.delivered_at = None  # an id the target gave earlier is kept, as delivery_send keeps it
            delivery.status, delivery.next_attempt_at = decision.status, decision.next_attempt_at
            if decision.status == DeliveryStatus.RETRYING:
                counts["retrying"] += 1
            else:
                failed_messages.append(row["message_id"])
                items.append(
                    ExceptionItem(
                        category=decision.category,
                        reason=decision.reason[:4000],
                        message_id=row["message_id"],
                        delivery_id=row["pk"],
                        system=target,
                        payload_snapshot=row["outbound_payload"],
                        suggested_action=decision.suggested_action,
                        flow=route.flow or FLOW,
                    )
                )
                counts["rejected" if decision.status == DeliveryStatus.FAILED else "dead"] += 1
        delivery.last_error = error
        # Each message of the batch path has this one delivery: its row is what the message settles from.
        settle_rows[row["message_id"]] = [(delivery.status, row["attempts"], delivery.next_attempt_at, error)]
        deliveries.append(delivery)
        attempts.append(
            DeliveryAttempt(
                delivery_id=row["pk"],
                system=target,
                number=(previous.get(row["pk"]) or 0) + 1,
                request_summary={
                    "target": target.slug,
                    "operation": "upsert_many",
                    "entity": ENTITY,
                    "idempotency_key": row["idempotency_key"],
                    "batch_size": len(rows),
                    "batch_position": position,
                },
                status_code=status_code,
                duration_ms=duration_ms,
                outcome=outcome,
                error=error,
                task_id=task_id[:100],
                correlation_id=(row.get("message__correlation_id") or "")[:64],
                created_at=now,
            )
        )
    rows_insert(DeliveryAttempt, attempts)
    _deliveries_update(deliveries)
    # The entry's canonical id now resolves to its ERP id; a key already there stays as it was.
    rows_insert(CrossReference, xrefs, ignore_conflicts=True)
    messages_settle_from_rows(settle_rows, now)
    exception_items_open_many(items=items)
    follow_up_emit_many(EVENT_MESSAGE_DELIVERED, delivered_messages, routed=True)
    follow_up_emit_many(EVENT_MESSAGE_FAILED, failed_messages, routed=True)
    if call_error is None or (call_error.status_code is not None and not call_error.retryable):
        circuit.circuit_record_success(system=target)
    else:
        circuit.circuit_record_failure(system=target)
    return dict(counts)


@dataclass(slots=True)
class _DeliveryOutcome:
    """A delivery's new state after its batch's call: what `_deliveries_update` writes (a model instance per
    delivery cost more to build than the rest of the recording)."""

    pk: int
    external_id: str
    updated_at: datetime.datetime
    status: str = DeliveryStatus.DELIVERING
    delivered_at: datetime.datetime | None = None
    next_attempt_at: datetime.datetime | None = None
    last_error: str = ""
    lookup_first: bool = False
    dispatched_at: datetime.datetime | None = None


DELIVERY_OUTCOME_FIELDS = (
    "status",
    "external_id",
    "delivered_at",
    "next_attempt_at",
    "last_error",
    "lookup_first",
    "dispatched_at",
    "updated_at",
)


def _deliveries_update(deliveries: list[_DeliveryOutcome]) -> None:
    """The deliveries' new states in one statement (rows_update: one array per column), so each delivery's row
    is written once."""
    rows_update(Delivery, deliveries, DELIVERY_OUTCOME_FIELDS)


# --- the run -------------------------------------------------------------------------------------------


@dataclass
class _PageRead:
    """A page read through the transport: the gated call (its attempt row is written on the run's thread) and
    the helper thread's answer."""

    gated: transport.GatedCall
    call: Future[Any]


# How a run stops when the transport's gate refuses a page read (the reason is its error): a paused PSA
# waits for a person, an open circuit and a spent rate budget for the next run.
REFUSED_OUTCOMES = {
    transport.SystemUnavailableError.PAUSED: PollOutcome.SKIPPED,
    transport.SystemUnavailableError.CIRCUIT_OPEN: PollOutcome.SKIPPED,
    transport.SystemUnavailableError.RATE_LIMITED: PollOutcome.RATE_LIMITED,
}


def _route_get(route_id: int) -> Route:
    route = (
        Route.objects.select_related("source_system", "target_system", "outbound_mapping_set")
        .filter(pk=route_id)
        .first()
    )
    if route is None or route.entity != ENTITY:
        raise HubValidationError(
            f"Route {route_id} does not exist or does not carry time entries.",
            errors=[{"field": "route_id"}],
            hint="Choose an active route of time entries from the PSA to the ERP.",
        )
    return route


def _due_retries(route: Route, now: datetime.datetime) -> list[int]:
    """Deliveries of this route a failed batch left to retry, now due (the retry sends the same keys)."""
    return list(
        Delivery.objects.filter(route=route, status=DeliveryStatus.RETRYING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by("pk")
        .values_list("pk", flat=True)[:10_000]
    )


def time_entries_batch_pull(
    *, route_id: int, max_pages: int | None = None, seconds: float | None = None, task_id: str = ""
) -> BatchPullResult:
    """Run the batch path of one route of time entries: first the due retries of earlier batches, then the
    PSA's changed entries page by page from the persisted cursor, until the source has no more, `max_pages`
    pages were read, or `seconds` (default: `run_seconds()`) have passed (then `more` is true and the
    caller starts the next run)."""
    route = _route_get(route_id)
    source = route.source_system
    result = BatchPullResult(route=route.pk)
    budget_seconds = run_seconds() if seconds is None else seconds
    started = time.monotonic()
    poll_cursor, _ = PollCursor.objects.get_or_create(system=source, entity=ENTITY)

    def stop(outcome: str, error: str = "") -> BatchPullResult:
        result.outcome, result.error = outcome, error
        PollCursor.objects.filter(pk=poll_cursor.pk).update(
            last_run_at=timezone.now(), last_outcome=outcome, last_error=error[:2000]
        )
        log = logger.warning if outcome == PollOutcome.ERROR else logger.info
        log("batch pull %s", outcome, extra={"route": route.pk, **result.as_dict()})
        return result

    if not route.active or source.state == SystemState.PAUSED:
        return stop(PollOutcome.SKIPPED, "The route is inactive or the source system is paused.")
    # The same lease as the per-record pull of this system and entity: one reader of the cursor at a time.
    lease = poll_lease_take(system_id=source.pk, entity=ENTITY)
    if lease is None:
        result.outcome, result.error = PollOutcome.SKIPPED, "Another run of this pull is in progress."
        return result
    # Running: if this run dies, the cursor stops moving and the sweeper starts the pull again.
    PollCursor.objects.filter(pk=poll_cursor.pk).update(
        last_run_at=timezone.now(), last_outcome=PollOutcome.RUNNING, updated_at=timezone.now()
    )
    try:
        fallback_ids = list(LegalEntity.objects.filter(systems__id=source.pk).values_list("id", flat=True)[:2])
        fallback_legal_entity_id = fallback_ids[0] if len(fallback_ids) == 1 else None
        policy = sync_policy_for(
            flow=route.flow or FLOW,
            legal_entity=LegalEntity.objects.filter(pk=fallback_legal_entity_id).first()
            if fallback_legal_entity_id
            else None,
        )
        retry = RetryPolicy.of(policy)
        batch_size = policy.batch_size if policy is not None else DEFAULT_BATCH_SIZE
        # Two threads for HTTP only: the next PSA page is read, and the last batch's ERP call runs, while this
        # thread evaluates and stores a page; every statement stays on this thread's connection.
        http = ThreadPoolExecutor(max_workers=2, thread_name_prefix="batch-http")
        sender = BatchSender(
            route=route, batch_size=batch_size, policy=retry, task_id=task_id, executor=http, sync_policy=policy
        )

        def tally(counts: Mapping[str, int]) -> None:
            result.delivered += counts.get("delivered", 0)
            result.already_applied += counts.get("already_applied", 0)
            result.rejected += counts.get("rejected", 0) + counts.get("dead", 0)
            result.retrying += counts.get("retrying", 0) + counts.get("waiting", 0)

        def finish(outcome: str, error: str = "") -> BatchPullResult:
            tally(sender.finish())
            return stop(outcome, error)

        read_ahead: _PageRead | None = None
        try:
            tally(sender.send(_due_retries(route, timezone.now())))
            inbound = published_mapping_set(
                system_id=source.pk,
                entity_name=ENTITY,
                direction=Direction.INBOUND,
                legal_entity_id=fallback_legal_entity_id,
            )
            if inbound is None:
                return finish(
                    PollOutcome.ERROR, f"No published inbound mapping for {ENTITY} from {source.slug}; publish one."
                )
            try:
                compiled = compiled_mapping(inbound.pk)
            except MappingDefinitionError as exc:
                return finish(PollOutcome.ERROR, f"Mapping {inbound} does not compile: {exc}")

            def read(cursor: str | None) -> _PageRead:
                # The transport's gate here (a pause made since the last page, the circuit, the rate budget at
                # the flow's rate); the call on a helper thread, under the policy's timeout, with the page's
                # correlation id, which its messages carry too.
                transport.system_state_refresh(source)
                gated = transport.call_open(
                    source,
                    transport.FETCH_CHANGES,
                    correlation_id=new_correlation_id(),
                    sync_policy=policy,
                    entity=ENTITY,
                    key=cursor or "",
                    context={"route": route.pk},
                )
                return _PageRead(
                    gated, http.submit(http_call, gated.run, methodcaller("fetch_changes", ENTITY, cursor))
                )

            while max_pages is None or result.pages < max_pages:
                lease.renew()
                if result.pages and time.monotonic() - started >= budget_seconds:
                    result.more = True
                    return finish(PollOutcome.PAGE_LIMIT)
                if read_ahead is None:
                    try:
                        read_ahead = read(poll_cursor.cursor or None)
                    except transport.SystemUnavailableError as refused:
                        return finish(REFUSED_OUTCOMES.get(refused.reason, PollOutcome.ERROR), str(refused.detail))
                page, read_ahead = read_ahead, None
                try:
                    batch = page.call.result()
                except (ConnectorError, HubError) as exc:
                    return finish(PollOutcome.ERROR, str(exc.detail))
                finally:
                    page.gated.close()
                # The next page is read while this one is processed; a page read but not stored (the run stops
                # first) is read again by the next run, since the cursor moves only with a stored page. A read
                # ahead the gate refuses is asked for again on the next turn, which stops there.
                if batch.has_more and (max_pages is None or result.pages + 1 < max_pages):
                    with contextlib.suppress(transport.SystemUnavailableError):
                        read_ahead = read(batch.next_cursor)
                keyed: dict[str, dict[str, Any]] = {}
                for record in batch.records:
                    keyed.setdefault(pull_idempotency_key(entity=ENTITY, record=record), dict(record))
                known = set(ids_by_key(Message, "idempotency_key", keyed, system_id=source.pk))
                fresh = [(key, record) for key, record in keyed.items() if key not in known]
                outcomes = page_evaluate(
                    route=route, records=fresh, compiled=compiled, fallback_legal_entity_id=fallback_legal_entity_id
                )
                claimed = page_store(
                    route=route,
                    poll_cursor=poll_cursor,
                    outcomes=outcomes,
                    inbound_mapping=inbound,
                    next_cursor=batch.next_cursor or "",
                    correlation_id=page.gated.correlation_id,
                )
                result.pages += 1
                result.fetched += len(batch.records)
                result.stored += len(outcomes)
                result.duplicates += len(batch.records) - len(fresh)
                result.held += sum(1 for o in outcomes if o.status == MessageStatus.HELD)
                result.failed += sum(1 for o in outcomes if o.status == MessageStatus.FAILED)
                tally(sender.send_claimed(claimed))
                if not batch.has_more:
                    return finish(PollOutcome.COMPLETE)
            return finish(PollOutcome.PAGE_LIMIT)
        finally:
            if sender.in_flight is not None:  # an error stopped the run: the call's outcome is still recorded
                try:
                    tally(sender.finish())
                except Exception:  # left claimed: the sweeper retries it, looking the entries up first
                    logger.exception("recording the last batch of a stopped batch pull failed")
            if read_ahead is not None and not read_ahead.call.cancel():
                # A page read ahead and not stored is dropped (the cursor moves only with a stored page), but
                # its call went out: it gets its attempt row like every other call.
                with contextlib.suppress(Exception):
                    read_ahead.call.result()
                read_ahead.gated.close()
            http.shutdown(wait=False, cancel_futures=True)
    finally:
        lease.release()
