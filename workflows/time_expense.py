"""Workflow 2: approved time and expense from the PSA to the ERP, posted exactly once, corrected by difference.

How a message of this flow runs (the sync engine maps it, then hands it to `time_expense_stage`):

1. The entry is approved → every rule of the flow's sync policy runs (all of them, every failure kept with its
   rule, field, expected and actual). A failure opens one `policy` exception item; finance overrides it (the
   entry is released past exactly the rules that failed), rejects it, or fixes and replays it.
2. What to post is computed against the posting ledger (TimeExpensePosting): nothing when this version is
   already posted (a duplicate webhook, a replay, a re-pulled record); the whole entry when nothing is live;
   the difference (an adjustment line) when only the hours or amount changed and the ERP takes negative
   lines; otherwise the live lines are voided and the entry posted again. A withdrawn entry (unapproved or
   deleted after posting) voids its live lines: the reversal. The ERP keeps every line, so its history shows
   what was posted, corrected and reversed, and when.
3. Ledger rows wait `pending`; the sender groups them per target, entity and project and calls the ERP's
   batch operation (one call per project and batch size) with each line's own idempotency key, so a crash
   between the ERP's answer and the ledger update resends the same keys and the ERP answers the stored lines.
   A message is delivered (its delivered_at set) once all its lines are posted: settled by the engine's one rule
   after every send and by the flow's beat, so a message whose lines a killed sender posted does not stay queued.
4. The messages of one entry are planned one at a time (a lock per entry), in the order of the entry's versions:
   a version older than one already processed is skipped as stale. The PSA's version is its updated_at, to the
   second, so an entry withdrawn, edited and approved again within one second sends two states under one version;
   when a message's state differs from one already processed under the same version, the hub reads the entry from
   the PSA (through the transport) and plans what the PSA holds now, whatever order the events came in.
5. A failing entry is one exception item however often it comes (a webhook and a pull): the open item of the same
   entry and category moves to the latest message and is updated.

Triggers: an event policy (the PSA's approval webhooks) sends a message's lines as soon as it is processed; a
scheduled policy runs `time_expense_run` (a pull by cursor of every PSA routed into this flow) and its lines
wait a short batch window so one pull's entries of a project go in one call.

KPI: the message's source_timestamp is the entry's approval time (canonical approved_at), its delivered_at the
moment the ERP accepted the last line; Message.approved_at stays the hub's own release of an approval hold.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import socket
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from operator import methodcaller
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from connectors.choices import SystemState
from connectors.http import ConnectorError
from connectors.models import ConnectedSystem
from exception_queue.actions import ItemAction, register_item_action
from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from exception_queue.services import (
    PERM_DECIDE,
    decision_record,
    exception_item_open,
    locked_open_item,
    require_permission,
    require_reason,
)
from governance.choices import Flow, Trigger
from governance.flows import register_flow_runner
from governance.models import LegalEntity, RateCard, SyncPolicy
from governance.rules import (
    CLOSED_PERIOD_SUGGESTED_ACTION,
    PERIOD_RULE,
    RuleContext,
    only_closed_period,
    rule_get,
    rules_evaluate,
    schema_defaults,
)
from governance.selectors import (
    accounting_period_is_open,
    accounting_period_next_open,
    rate_card_valid_on,
    rate_for,
    sync_policy_for,
)
from integrationhub.dispatch import enqueue_on_commit
from integrationhub.errors import HubConflictError, HubError, HubValidationError
from sync.choices import DeliveryStatus, MessageStatus
from sync.models import CrossReference, Message, Route
from sync.transport import SystemUnavailableError
from workflows.choices import PostingKind, PostingStatus
from workflows.models import TimeExpensePosting, TimeExpenseSenderLease
from workflows.resource_links import HELD_PERSON_KEY, erp_requires_employee, resource_link_for
from workflows.services import connector_offers, flow_call

logger = logging.getLogger(__name__)

FLOW = Flow.TIME_EXPENSE_TO_ERP
ENTITIES = ("time_entry", "expense")
APPROVED = "approved"
OVERRIDE_NOTE = "policy_override"
WITHDRAWN_ACTIONS = ("deleted", "unapproved", "withdrawn")
SOURCE_READ_NOTE = "read_from_source"
CENT = Decimal("0.01")


def _setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


def batch_window_seconds() -> float:
    """How long a scheduled run's lines wait for the rest of the run before the target's batch is sent."""
    return _setting("HUB_TIME_EXPENSE_BATCH_WINDOW_SECONDS", 3)


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value not in (None, "") else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


# --- what an entry says ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntryState:
    """One version of a time entry or expense, as the ledger compares it with what is posted."""

    entry_key: str
    entity: str
    approved: bool
    source_version: str
    project_ref: str
    hours: Decimal
    amount: Decimal
    currency: str
    rate: str
    shape: dict[str, Any]  # the fields a posted line carries besides hours and amount: a change means void + repost


def entry_key_for(message: Message) -> str:
    """<source system slug>:<entity>:<source id>: the entry across all its versions and messages."""
    return f"{message.system.slug}:{message.entity}:{message.canonical_id}"[:200]


def _withdrawn(message: Message) -> bool:
    read = _source_read(message)
    if read is not None:
        return bool(read.get("withdrawn"))
    action = message.event_type.rsplit(".", 1)[-1]
    return action in WITHDRAWN_ACTIONS or bool((message.raw_payload or {}).get("deleted"))


def _source_read(message: Message) -> dict[str, Any] | None:
    """The entry as the PSA had it when this run of the message asked (see `_entry_read_from_source`), or None."""
    return _source_read_in(message.notes, message.replay_count)


def _source_read_in(notes: Any, replay_count: int) -> dict[str, Any] | None:
    for note in reversed(notes or []):
        if isinstance(note, dict) and isinstance(note.get(SOURCE_READ_NOTE), dict):
            read = note[SOURCE_READ_NOTE]
            # A later replay runs the message as received again, and asks again if it has to.
            return read if read.get("replay") == replay_count else None
    return None


def _canonical_id(entity: str, value: str, source: ConnectedSystem) -> str:
    """The canonical id of `value`: itself, or the canonical id of the source system's record with that id."""
    found = (
        CrossReference.objects.filter(system=source, entity=entity, external_id=value)
        .values_list("canonical_id", flat=True)
        .first()
    )
    return found or value


def erp_project_ref(*, project_id: str, source: ConnectedSystem, target: ConnectedSystem) -> str | None:
    """The project's id in the ERP (its cross-reference), or None when the project is not in the ERP."""
    canonical = _canonical_id("project", project_id, source)
    return (
        CrossReference.objects.filter(system=target, entity="project", canonical_id=canonical)
        .values_list("external_id", flat=True)
        .first()
    )


def erp_employee_ref(*, message: Message, person_ref: str, target: ConnectedSystem) -> str:
    """The employee id that books the person's time in `target` (their resource link), or "" when unlinked."""
    if not person_ref:
        return ""
    link = resource_link_for(
        psa_system_id=message.system_id,
        person_ref=person_ref,
        erp_system_id=target.pk,
        legal_entity_id=message.legal_entity_id,
    )
    return link.employee_ref if link is not None else ""


def entry_state(message: Message, target: ConnectedSystem) -> EntryState:
    """What this message's version of the entry would post to `target`."""
    record = message.canonical_payload or {}
    entity = message.entity
    project = str(record.get("project_id") or "")
    project_ref = erp_project_ref(project_id=project, source=message.system, target=target) or "" if project else ""
    if entity == "expense":
        hours, rate = Decimal(0), ""
        amount = _decimal(record.get("amount")).quantize(CENT)
    else:
        hours = _decimal(record.get("hours")).quantize(CENT)
        rate = str(record.get("rate") or "")
        amount = (hours * _decimal(rate)).quantize(CENT)
    person = str(record.get("resource_id") or "")
    shape = {
        "project_id": project_ref,
        "date": str(record.get("date") or ""),
        "employee_ref": person,
        # The ERP's employee of the person (the resource cross-reference), never a default one; a change of
        # employee changes the line's shape, so a correction voids the old line and books the new one.
        "employee_id": erp_employee_ref(message=message, person_ref=person, target=target),
        "role": str(record.get("role_code") or ""),
        "cost_code": str(record.get("cost_code") or ""),
        "bill_rate": rate,
        "cost_rate": str(record.get("cost_rate") or ""),
        "currency": str(record.get("currency") or ""),
    }
    return EntryState(
        entry_key=entry_key_for(message),
        entity=entity,
        approved=record.get("approval_status") == APPROVED and not _withdrawn(message),
        source_version=str(record.get("updated_at") or message.idempotency_key)[:100],
        project_ref=project_ref,
        hours=hours,
        amount=amount,
        currency=shape["currency"],
        rate=rate,
        shape=shape,
    )


def _line_payload(state: EntryState, *, hours: Decimal, amount: Decimal, description: str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        **{name: value for name, value in state.shape.items() if value != ""},
        "hours": str(hours),
        "description": description[:500],
        "source_ref": state.entry_key,
        "kind": state.entity,
    }
    if state.entity == "expense":
        payload["amount"] = str(amount)
        payload.pop("bill_rate", None)
    return payload


# --- the rules' lookups ----------------------------------------------------------------------------------


def hours_booked(*, resource_id: str, on_date: datetime.date, exclude_entry: str) -> Decimal:
    """Hours of the person's other approved time entries of that day known to the hub (each entry's latest
    version), so the daily limit counts every entry once however often it was sent."""
    rows = (
        Message.objects.filter(
            flow=FLOW,
            entity="time_entry",
            canonical_payload__resource_id=resource_id,
            canonical_payload__date=on_date.isoformat(),
        )
        .exclude(canonical_id=exclude_entry)
        .exclude(status=MessageStatus.SKIPPED_STALE)
        .order_by("id")
        .values_list("system_id", "canonical_id", "canonical_payload", "event_type", "notes", "replay_count")
    )
    # Each entry's latest version: the newest updated_at, and under one updated_at the state the PSA confirmed
    # when two came with it (the messages' arrival order says nothing then).
    latest: dict[tuple[int, str], tuple[tuple[Any, ...], Mapping[str, Any]]] = {}
    for system_id, canonical_id, payload, event_type, notes, replay_count in rows:
        read = _source_read_in(notes, replay_count)
        withdrawn = (
            bool(read.get("withdrawn")) if read is not None else event_type.rsplit(".", 1)[-1] in WITHDRAWN_ACTIONS
        )
        version = _version_time(payload) or datetime.datetime.min.replace(tzinfo=datetime.UTC)
        rank = (version, read is not None)
        known = latest.get((system_id, canonical_id))
        if known is None or rank >= known[0]:
            latest[(system_id, canonical_id)] = (rank, {} if withdrawn else (payload or {}))
    return sum(
        (
            _decimal(payload.get("hours"))
            for _, payload in latest.values()
            if payload.get("approval_status") == APPROVED
        ),
        Decimal(0),
    )


def entity_currencies(*, legal_entity_code: str, on_date: datetime.date) -> list[str]:
    """The legal entity's base currency and the currencies of its rate cards valid on the day."""
    entity = LegalEntity.objects.filter(code=legal_entity_code).first()
    if entity is None:
        return []
    cards = RateCard.objects.filter(rate_card_valid_on(on_date=on_date), legal_entity=entity)
    return sorted({entity.base_currency, *cards.values_list("currency", flat=True)})


def rule_context(*, message: Message, target: ConnectedSystem | None) -> RuleContext:
    """The lookups the flow's rules need, answered from the hub's own records for this message's systems."""
    source = message.system

    def project_active(value: str) -> bool:
        return target is not None and erp_project_ref(project_id=value, source=source, target=target) is not None

    def resource_known(value: str) -> bool:
        return (
            CrossReference.objects.filter(entity="resource")
            .filter(Q(canonical_id=value) | Q(system=source, external_id=value))
            .exists()
        )

    return RuleContext(
        rate_lookup=rate_for,
        known_resources=resource_known,
        active_projects=project_active,
        period_calendar=lambda code, day: accounting_period_is_open(legal_entity=code, on_date=day),
        hours_booked=lambda resource, day, own: hours_booked(resource_id=resource, on_date=day, exclude_entry=own),
        entity_currencies=lambda code, day: entity_currencies(legal_entity_code=code, on_date=day),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool, dict)):
        return value
    return str(value)


def _overridden_rules(message: Message) -> set[str]:
    return {
        rule
        for note in (message.notes or [])
        if isinstance(note, dict) and OVERRIDE_NOTE in note
        for rule in note[OVERRIDE_NOTE].get("rules", [])
    }


def entry_rules_check(*, message: Message, policy: SyncPolicy | None, target: ConnectedSystem | None) -> list[dict]:
    """Every failed rule of the policy on this entry (rules finance overrode for this message left out)."""
    if policy is None or not policy.validation_rules:
        return []
    results = rules_evaluate(
        record=message.canonical_payload or {},
        entries=policy.validation_rules,
        context=rule_context(message=message, target=target),
        entity=message.entity,
    )
    overridden = _overridden_rules(message)
    return [
        {
            "rule": result.rule,
            "field": result.field,
            "expected": _jsonable(result.expected),
            "actual": _jsonable(result.actual),
            "message": result.message,
        }
        for result in results
        if not result.passed and result.rule not in overridden
    ]


# --- the stage: validate, then plan the postings ------------------------------------------------------------


def _approval_time(record: Mapping[str, Any]) -> datetime.datetime | None:
    value = record.get("approved_at")
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is not None and timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, datetime.UTC)
    return parsed


def _flow_target(routes: Iterable[Route]) -> ConnectedSystem | None:
    return next((route.target_system for route in routes if route.flow == FLOW), None)


def _live_lines(entry_key: str, target: ConnectedSystem) -> list[TimeExpensePosting]:
    """Lines of the entry that are (or will be) in the ERP and not voided, oldest first."""
    rows = list(
        TimeExpensePosting.objects.select_for_update()
        .filter(entry_key=entry_key, target_system=target)
        .order_by("version")
    )
    voided = {row.reverses_id for row in rows if row.reverses_id}
    return [row for row in rows if row.kind != PostingKind.REVERSAL and row.pk not in voided]


def _next_version(entry_key: str, target: ConnectedSystem) -> int:
    last = (
        TimeExpensePosting.objects.filter(entry_key=entry_key, target_system=target)
        .order_by("-version")
        .values_list("version", flat=True)
        .first()
    )
    return (last or 0) + 1


def _line_key(state: EntryState, target: ConnectedSystem, version: int) -> str:
    # The same version of the same entry, planned against the same ledger, always gets the same key: whoever
    # computes it, it is posted once. The ledger's version is in it because the PSA's version (updated_at, to the
    # second) can name two different states of an entry changed twice within a second: each gets its own line.
    seed = f"{state.entry_key}|{target.pk}|{state.source_version}|{version}"
    return f"hub-te-{hashlib.sha256(seed.encode()).hexdigest()[:40]}"


@dataclass(frozen=True)
class PostingPlan:
    """What one version of an entry changes in the ERP: lines to void, and at most one line to post."""

    voids: list[TimeExpensePosting]
    line_kind: str = ""
    hours: Decimal = Decimal(0)
    amount: Decimal = Decimal(0)

    @property
    def empty(self) -> bool:
        return not self.voids and not self.line_kind


def posting_plan(*, state: EntryState, live: list[TimeExpensePosting], negative_lines: bool) -> PostingPlan:
    """Compare the entry's version with its live lines: nothing, a full post, a difference, or void and repost."""
    posted_hours = sum((line.hours for line in live), Decimal(0))
    posted_amount = sum((line.amount for line in live), Decimal(0))
    if not state.approved:
        return PostingPlan(voids=live)
    if not live:
        return PostingPlan(voids=[], line_kind=PostingKind.POST, hours=state.hours, amount=state.amount)
    same_shape = all(
        {k: v for k, v in line.payload.items() if k in state.shape} == {k: v for k, v in state.shape.items() if v != ""}
        for line in live
    )
    delta_hours, delta_amount = state.hours - posted_hours, state.amount - posted_amount
    if same_shape and not delta_hours and not delta_amount:
        return PostingPlan(voids=[])
    if same_shape and (negative_lines or (delta_hours >= 0 and delta_amount >= 0)):
        return PostingPlan(voids=[], line_kind=PostingKind.ADJUSTMENT, hours=delta_hours, amount=delta_amount)
    return PostingPlan(voids=live, line_kind=PostingKind.ADJUSTMENT, hours=state.hours, amount=state.amount)


def _connector_posts_negative_lines(target: ConnectedSystem) -> bool:
    from connectors.registry import registry

    try:
        return bool(getattr(registry.get(target.connector_type), "posts_negative_lines", False))
    except HubError:
        return False


def _entry_item_open(*, message: Message, category: str, **fields: Any) -> ExceptionItem:
    """`exception_item_open` for an entry: an open item of the same entry (PSA, entity, id) and category that
    another message opened (the webhook's, when this is the pulled one, or an older version's) moves to this
    message and is updated, so one failing entry is one item for finance, pointing at its latest message."""
    existing = (
        ExceptionItem.objects.select_for_update(of=("self",))
        .filter(
            state=ExceptionState.OPEN,
            category=category,
            flow=FLOW,
            message__system_id=message.system_id,
            message__entity=message.entity,
            message__canonical_id=message.canonical_id,
        )
        .exclude(message_id=message.pk)
        .order_by("-pk")
        .first()
    )
    if existing is not None and message.pk is not None:
        previous = existing.message_id
        ExceptionItem.objects.filter(pk=existing.pk).update(message=message, delivery=None)
        message.notes = [*(message.notes or []), {"exception_item": {"id": existing.pk, "from_message": previous}}]
    return exception_item_open(category=category, message=message, **fields)


def _policy_fail(message: Message, failed: list[dict], state: EntryState | None, now: datetime.datetime) -> None:
    message.status = MessageStatus.FAILED
    message.failed_at = now
    message.last_error = "; ".join(item["message"] for item in failed)[:2000]
    record = message.canonical_payload or {}
    closed_period = only_closed_period(failed)
    _entry_item_open(
        # An entry whose only failure is a closed period waits for finance's own decision on it (post in the
        # next open period, or reject), whatever path it came by; any other failure makes it a policy item.
        category=ExceptionCategory.CLOSED_PERIOD if closed_period else ExceptionCategory.POLICY,
        reason=message.last_error,
        message=message,
        legal_entity=message.legal_entity,
        system=message.system,
        payload_snapshot=record,
        failed_rules=failed,
        amount=state.amount if state is not None else None,
        currency=(state.currency if state is not None else "")[:3],
        flow=FLOW,
        external_id=str(message.canonical_id),
        suggested_action=CLOSED_PERIOD_SUGGESTED_ACTION
        if closed_period
        else "Fix the entry in the PSA (it comes again once re-approved), edit the payload here and "
        "replay, or, in finance, approve an override of the failed rules.",
    )


def _unknown_resource_hold(
    message: Message, state: EntryState, target: ConnectedSystem, now: datetime.datetime
) -> None:
    """The entry's person has no employee in the ERP: nothing is posted (never to a default employee); one item
    names the person and the ERP, and linking them (its action, or a resource saved in the admin) posts it."""
    person = state.shape["employee_ref"] or "(none)"
    entity = message.legal_entity.code if message.legal_entity is not None else "any legal entity"
    message.status, message.held_at = MessageStatus.HELD, now
    message.last_error = f"{message.system.slug} person {person} has no employee in {target.slug} ({entity})"
    exception_item_open(
        category=ExceptionCategory.UNKNOWN_RESOURCE,
        reason=f"{message.last_error}: the {state.entity.replace('_', ' ')} {message.canonical_id} waits for one.",
        message=message,
        system=target,
        legal_entity=message.legal_entity,
        payload_snapshot={
            HELD_PERSON_KEY: {
                "psa_system_id": message.system_id,
                "psa_system": message.system.slug,
                "person_ref": state.shape["employee_ref"],
                "erp_system_id": target.pk,
                "erp_system": target.slug,
                "legal_entity": message.legal_entity.code if message.legal_entity is not None else "",
            },
            "entry": message.canonical_payload or {},
        },
        amount=state.amount,
        currency=state.currency[:3],
        flow=FLOW,
        external_id=str(message.canonical_id),
        suggested_action=f"Link the person to their employee in {target.slug} (Link the resource, or Workflows → "
        "Resources); every entry held for them there is then posted.",
    )


def _held_for_approval(message: Message, policy: SyncPolicy | None, now: datetime.datetime) -> bool:
    """An entry at or above the policy's approval threshold waits for finance like any held message (two
    different approvers above the second threshold); once approved it is planned and posted as usual."""
    from sync.services import PipelineStop, message_hold_for_approval

    try:
        message_hold_for_approval(message=message, policy=policy, now=now)
    except PipelineStop:
        return True
    return False


# --- the order of an entry's versions --------------------------------------------------------------------------
#
# The PSA names a version by its updated_at, to the second (as Harvest does). An entry unapproved, edited and
# approved again within one second sends its withdrawal and its re-approval with the same version, and the two
# webhooks (and a pull) can reach the hub in any order and at the same moment. So the messages of one entry are
# planned one at a time; a version older than one already seen is stale; and two different states under the same
# version are settled by asking the PSA for the entry as it is now.

PENDING_STATUSES = (MessageStatus.RECEIVED, MessageStatus.MAPPED, MessageStatus.VALIDATED)


def _entry_lock(entry_key: str, target: ConnectedSystem) -> None:
    """Hold the entry until this transaction ends, so the next message of the entry reads the ledger and the
    messages this one leaves (PostgreSQL: a transaction-level advisory lock; SQLite writes one at a time anyway)."""
    if connection.vendor != "postgresql":
        return
    seed = hashlib.sha256(f"time_expense|{target.pk}|{entry_key}".encode()).digest()[:8]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(seed, "big", signed=True)])


def _version_time(record: Mapping[str, Any] | None) -> datetime.datetime | None:
    value = (record or {}).get("updated_at")
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is not None and timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, datetime.UTC)
    return parsed


def _posting_signature(state: EntryState) -> tuple[Any, ...]:
    """What the ERP would hold for this state: nothing when withdrawn, else its hours, amount and line fields."""
    if not state.approved:
        return (False,)
    return (True, state.hours, state.amount, tuple(sorted(state.shape.items())))


@dataclass(frozen=True)
class EntryOrder:
    """Where a message's version stands among the entry's versions the hub has already processed."""

    newer: str = ""  # the updated_at of a newer version already processed: this message is stale
    ambiguous: bool = False  # another state of the entry was processed under the same version


def entry_order(*, message: Message, target: ConnectedSystem) -> EntryOrder:
    """Compare the message's version with every processed message of the same entry (call under `_entry_lock`).

    Only messages as the PSA sent them count for a tie: a message a person replayed (an override, a fixed
    payload, a moved date) is that person's decision on its version, never to be undone by reading the PSA."""
    version = _version_time(message.canonical_payload)
    if version is None:
        return EntryOrder()
    seen = (
        Message.objects.filter(
            system_id=message.system_id, entity=message.entity, ordering_key=message.ordering_key, flow=FLOW
        )
        .exclude(pk=message.pk)
        .exclude(status__in=PENDING_STATUSES)
        .exclude(canonical_payload__isnull=True)
        .select_related("system")
    )
    mine = _posting_signature(entry_state(message, target))
    ambiguous = False
    for other in seen:
        other_version = _version_time(other.canonical_payload)
        if other_version is None:
            continue
        if other_version > version:
            return EntryOrder(newer=str((other.canonical_payload or {}).get("updated_at")))
        if (
            other_version == version
            and message.replay_count == 0
            and other.replay_count == 0
            and _posting_signature(entry_state(other, target)) != mine
        ):
            ambiguous = True
    return EntryOrder(ambiguous=ambiguous)


def _entry_read_from_source(message: Message, policy: SyncPolicy | None, now: datetime.datetime) -> bool:
    """Replace the message's version of the entry by the entry as the PSA has it now (read through the transport
    and mapped with the message's own mapping), noted on the message; an entry the PSA no longer has is withdrawn.

    False when the PSA refused the read for good: the message failed with an item saying what to do. A PSA that
    cannot answer now raises (retryable): the message waits for the sweeper and asks again."""
    from mappings.runtime import compiled_mapping, xrefs_resolve

    source = message.system
    source_id = str((message.raw_payload or {}).get("id") or message.canonical_id)
    received = dict(message.canonical_payload or {})
    problem = ""
    raw: Mapping[str, Any] | None = None
    try:
        raw = flow_call(
            source,
            "get",
            methodcaller("get", message.entity, source_id),
            flow=FLOW,
            step="read_entry",
            correlation_id=message.correlation_id,
            sync_policy=policy,
            entity=message.entity,
            context={"message_id": message.pk},
        )
    except ConnectorError as exc:
        if exc.retryable:
            raise
        if exc.status_code not in (404, 410):
            problem = f"{source.slug} refused to return {message.entity} {source_id}: {exc.detail}"
    canonical: dict[str, Any] = received
    if raw is not None and not problem:
        mapping_set_id = message.mapping_set_id
        if mapping_set_id is None:
            problem = f"{message.entity} {source_id} has no inbound mapping to read the PSA's current version with"
        else:
            compiled = compiled_mapping(mapping_set_id)
            if compiled.uses_xrefs:
                compiled.prefetch_xrefs([raw], xrefs_resolve)
            result = compiled.map_one(raw)
            if result.errors:
                problem = f"the PSA's current version of {message.entity} {source_id} does not map: " + "; ".join(
                    map(str, result.errors[:5])
                )
            else:
                canonical = dict(result.output)
    if problem:
        message.status, message.failed_at, message.last_error = MessageStatus.FAILED, now, problem[:2000]
        _entry_item_open(
            category=ExceptionCategory.VALIDATION,
            reason=f"The entry changed more than once within one second in the PSA, and {problem}.",
            message=message,
            legal_entity=message.legal_entity,
            system=source,
            payload_snapshot=received,
            flow=FLOW,
            external_id=str(message.canonical_id),
            suggested_action="Check the PSA system's credentials and the inbound mapping, then replay this message; "
            "it asks the PSA again for the entry's current version.",
        )
        return False
    withdrawn = raw is None or bool(raw.get("deleted"))
    message.canonical_payload = canonical
    message.notes = [
        *(message.notes or []),
        {
            SOURCE_READ_NOTE: {
                "replay": message.replay_count,
                "withdrawn": withdrawn,
                "received_updated_at": received.get("updated_at"),
                "received_approval_status": received.get("approval_status"),
                "updated_at": canonical.get("updated_at"),
                "approval_status": None if raw is None else canonical.get("approval_status"),
                "why": "another state of the entry came with the same version (changed twice within one second)",
                "at": now.isoformat(),
            }
        },
    ]
    return True


def time_expense_stage(
    *, message: Message, policy: SyncPolicy | None, routes: list[Route], now: datetime.datetime
) -> None:
    """The engine's stage for this flow: validate an approved entry, then plan its lines against the ledger."""
    record = message.canonical_payload or {}
    approved_at = _approval_time(record)
    if approved_at is not None:
        message.source_timestamp = approved_at  # the KPI's start: when the entry was approved in the PSA
    target = _flow_target(routes)
    if target is None:
        message.status, message.delivered_at = MessageStatus.DELIVERED, now
        message.notes = [*message.notes, {"routing": "no active route of the time and expense flow matched"}]
        return
    with transaction.atomic():
        # One entry's messages are planned one at a time, each against the ledger and the messages the one before
        # left (a withdrawal and a re-approval within one second reach two workers at once).
        _entry_lock(entry_key_for(message), target)
        message.ordering_key = str(message.canonical_id)[:200]
        order = entry_order(message=message, target=target)
        if order.newer:
            message.status = MessageStatus.SKIPPED_STALE
            note = f"stale: the entry's version {order.newer} was already processed; this older one posts nothing"
            message.notes = [*message.notes, {"time_expense": note}]
            return
        if order.ambiguous:
            if not _entry_read_from_source(message, policy, now):
                return
            record = message.canonical_payload or {}
            approved_at = _approval_time(record)
            if approved_at is not None:
                message.source_timestamp = approved_at
        state = entry_state(message, target)
        if state.approved:
            failed = entry_rules_check(message=message, policy=policy, target=target)
            if failed:
                _policy_fail(message, failed, state, now)
                return
            if _held_for_approval(message, policy, now):
                return
        message.validated_at = now
        TimeExpensePosting.objects.filter(
            entry_key=state.entry_key, target_system=target, status=PostingStatus.FAILED
        ).update(status=PostingStatus.PENDING, attempts=0, next_attempt_at=None, last_error="")
        plan = posting_plan(
            state=state,
            live=_live_lines(state.entry_key, target),
            negative_lines=_connector_posts_negative_lines(target),
        )
        if plan.line_kind and not state.shape["employee_id"] and erp_requires_employee(target):
            _unknown_resource_hold(message, state, target, now)
            return
        event_mode = policy is None or policy.trigger != Trigger.SCHEDULE
        if plan.empty and TimeExpensePosting.objects.filter(message=message, status=PostingStatus.PENDING).exists():
            # A replay of this message after the ERP refused its line: the line is resent as it was.
            message.status, message.queued_at = MessageStatus.QUEUED, now
            postings_send_enqueue(target_system_id=target.pk)
            return
        if plan.empty:
            message.status, message.delivered_at = MessageStatus.DELIVERED, now
            note = "already posted: nothing changed" if state.approved else "not approved and not posted: nothing to do"
            message.notes = [*message.notes, {"time_expense": note}]
            return
        send_after = now if event_mode else now + datetime.timedelta(seconds=batch_window_seconds())
        version = _next_version(state.entry_key, target)
        for line in plan.voids:
            TimeExpensePosting.objects.create(
                entry_key=state.entry_key,
                entity=state.entity,
                version=version,
                kind=PostingKind.REVERSAL,
                target_system=target,
                message=message,
                source_version=state.source_version,
                project_ref=line.project_ref,
                hours=-line.hours,
                amount=-line.amount,
                currency=line.currency,
                payload={},
                idempotency_key=f"{line.idempotency_key}:void",
                reverses=line,
                send_after=send_after,
            )
            version += 1
        if plan.line_kind:
            description = str(record.get("description") or "")
            TimeExpensePosting.objects.create(
                entry_key=state.entry_key,
                entity=state.entity,
                version=version,
                kind=plan.line_kind,
                target_system=target,
                message=message,
                source_version=state.source_version,
                project_ref=state.project_ref,
                hours=plan.hours,
                amount=plan.amount,
                currency=state.currency,
                payload=_line_payload(state, hours=plan.hours, amount=plan.amount, description=description),
                idempotency_key=_line_key(state, target, version),
                send_after=send_after,
            )
        message.status, message.queued_at = MessageStatus.QUEUED, now
        if event_mode:
            postings_send_enqueue(target_system_id=target.pk)


# --- sending -------------------------------------------------------------------------------------------


def postings_send_enqueue(*, target_system_id: int) -> None:
    """Send the target's due lines once the current transaction commits."""
    from workflows.tasks import time_expense_postings_send_task

    enqueue_on_commit(time_expense_postings_send_task, target_system_id, queue="delivery")


def _due(target_system_id: int, now: datetime.datetime) -> QuerySet[TimeExpensePosting]:
    return TimeExpensePosting.objects.filter(target_system_id=target_system_id, status=PostingStatus.PENDING).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )


def time_expense_postings_dispatch(*, now: datetime.datetime | None = None) -> int:
    """Beat: enqueue a send for every target with due lines whose batch window has closed; returns how many."""
    current = now or timezone.now()
    targets = set(
        TimeExpensePosting.objects.filter(status=PostingStatus.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=current))
        .values_list("target_system_id", flat=True)
    )
    waiting = set(
        TimeExpensePosting.objects.filter(status=PostingStatus.PENDING, send_after__gt=current).values_list(
            "target_system_id", flat=True
        )
    )
    ready = sorted(targets - waiting)
    with transaction.atomic():
        for target_id in ready:
            postings_send_enqueue(target_system_id=target_id)
    # The sweep: a message whose lines were all posted by a sender that died before settling it is settled here.
    time_expense_messages_settle()
    return len(ready)


@dataclass
class SendResult:
    """What one send did for one target: calls made and lines posted, retried and failed."""

    calls: int = 0
    posted: int = 0
    retrying: int = 0
    failed: int = 0


# How long a sender's lease lasts after its last renewal (it renews before every call). A sender killed mid-way
# (out of memory, the hard time limit, a lost host) holds the target at most this long: the beat's dispatch,
# every few seconds, starts the next sender as soon as it runs out. One call taking longer than this (a policy
# timeout above it) lets a second sender in, which resends the same idempotency keys: the ERP answers the lines
# it stored, so nothing is posted twice.
SENDER_LEASE_SECONDS = 60


def sender_lease_take(*, target_system_id: int, holder: str, now: datetime.datetime | None = None) -> bool:
    """Take the target's sender lease, or renew it while `holder` has it, for SENDER_LEASE_SECONDS; False while
    another sender's lease runs (or after it took over an expired one)."""
    current = now or timezone.now()
    TimeExpenseSenderLease.objects.get_or_create(target_system_id=target_system_id, defaults={"expires_at": current})
    taken = (
        TimeExpenseSenderLease.objects.filter(target_system_id=target_system_id)
        .filter(Q(holder=holder) | Q(expires_at__lte=current))
        .update(
            holder=holder,
            heartbeat_at=current,
            expires_at=current + datetime.timedelta(seconds=SENDER_LEASE_SECONDS),
        )
    )
    return taken == 1


def sender_lease_release(*, target_system_id: int, holder: str) -> None:
    """Free the target's lease at once (the send is over), unless another sender holds it by now."""
    now = timezone.now()
    TimeExpenseSenderLease.objects.filter(target_system_id=target_system_id, holder=holder).update(
        holder="", heartbeat_at=now, expires_at=now
    )


class _SendStopped(Exception):
    """The send ends early: another sender took the lease over (this one outlived it); it carries on."""


@dataclass
class _Sender:
    """One send to one target: every call renews the lease, then goes through the transport."""

    target: ConnectedSystem
    holder: str
    result: SendResult
    # The lines this send has dealt with (posted, failed, or retried later); the others wait if it stops early.
    handled: set[int] = field(default_factory=set)

    def call(self, rows: list[TimeExpensePosting], operation: str, call: Callable[[Any], Any], *, key: str = "") -> Any:
        """Make one call for `rows`: refused (_SendStopped) when the lease was lost; SystemUnavailableError
        when the target cannot be called now (nothing was sent)."""
        if not sender_lease_take(target_system_id=self.target.pk, holder=self.holder):
            raise _SendStopped(f"another sender took the lease of {self.target.slug} over")
        messages = [row.message for row in rows if row.message is not None]
        first = messages[0] if messages else None
        answer = flow_call(
            self.target,
            operation,
            call,
            flow=FLOW,
            step="void_line" if operation == "void" else "post_lines",
            correlation_id=first.correlation_id if first is not None else "",
            sync_policy=sync_policy_for(flow=FLOW, legal_entity=first.legal_entity if first is not None else None),
            entity=rows[0].entity,
            key=key,
            context={
                "message_id": first.pk if first is not None else None,
                "message_ids": sorted({message.pk for message in messages}),
                "postings": [row.pk for row in rows],
            },
        )
        self.result.calls += 1
        return answer

    def wait(self, rows: list[TimeExpensePosting], exc: SystemUnavailableError) -> None:
        """The target cannot be called now: the lines not dealt with wait until it can, without an attempt."""
        pending = [row.pk for row in rows if row.pk not in self.handled]
        if exc.retry_after and pending:
            until = timezone.now() + datetime.timedelta(seconds=exc.retry_after)
            TimeExpensePosting.objects.filter(pk__in=pending, status=PostingStatus.PENDING).update(
                next_attempt_at=until, last_error=exc.detail[:2000], updated_at=timezone.now()
            )
        self.result.retrying += len(pending)


def _claim(target_system_id: int, now: datetime.datetime) -> list[TimeExpensePosting]:
    # No row locks: the target's sender lease already makes this the only sender, and a row lock held over the
    # ERP call would block the pipeline's ledger reads for as long as the ERP takes to answer.
    rows = _due(target_system_id, now).select_related("message", "message__legal_entity", "reverses", "target_system")
    return list(rows.order_by("entry_key", "version"))


def _sender_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"[:200]


def time_expense_postings_send(*, target_system_id: int) -> SendResult:
    """Send the target's due lines: voids one by one, new lines in one batch call per entity and project.

    One sender per target at a time (a lease renewed before every call, see SENDER_LEASE_SECONDS); the rows stay
    pending until the ERP has answered, so a sender that dies mid-call leaves them for the next one, which
    resends the same idempotency keys. Every call goes through the transport: while the target is paused, its
    circuit open or its rate budget spent, nothing is sent and the lines wait without counting an attempt.
    """
    result = SendResult()
    target = ConnectedSystem.objects.filter(pk=target_system_id).first()
    if target is None or target.state == SystemState.PAUSED:
        return result
    sender = _Sender(target=target, holder=_sender_holder(), result=result)
    if not sender_lease_take(target_system_id=target_system_id, holder=sender.holder):
        return result
    rows: list[TimeExpensePosting] = []
    try:
        rows = _claim(target_system_id, timezone.now())
        if rows:
            _send_claimed(sender, rows)
    except SystemUnavailableError as exc:
        sender.wait(rows, exc)
    except _SendStopped:
        logger.info("time and expense send stopped", extra={"system": target.slug})
    finally:
        sender_lease_release(target_system_id=target_system_id, holder=sender.holder)
    time_expense_messages_settle(target_system_id=target_system_id)
    return result


def _send_claimed(sender: _Sender, rows: list[TimeExpensePosting]) -> None:
    voids = [row for row in rows if row.kind == PostingKind.REVERSAL]
    lines = [row for row in rows if row.kind != PostingKind.REVERSAL]
    # An entry's void goes before its new line (void and repost): the ERP never holds both at once.
    waiting = [row for row in voids if not _send_void(sender, row)]
    # A line newer than a void not yet done (its voided line is not in the ERP yet, or the void failed) waits,
    # so the old and the new line are never both in the ERP; older lines go now, and the void right after.
    waiting_void: dict[str, int] = {}
    for row in voids:
        if row.status != PostingStatus.POSTED:
            waiting_void[row.entry_key] = min(row.version, waiting_void.get(row.entry_key, row.version))
    groups: dict[tuple[str, str], list[TimeExpensePosting]] = defaultdict(list)
    for row in lines:
        if row.version < waiting_void.get(row.entry_key, row.version + 1):
            groups[(row.entity, row.project_ref)].append(row)
    for (entity, _project), group in groups.items():
        size = _batch_size(group[0])
        for start in range(0, len(group), size):
            _send_lines(sender, entity, group[start : start + size])
    for row in waiting:
        _send_void(sender, row)  # its line may have gone out just above


def _batch_size(row: TimeExpensePosting) -> int:
    policy = sync_policy_for(flow=FLOW, legal_entity=row.message.legal_entity if row.message else None)
    return max(1, policy.batch_size if policy is not None else 100)


def _send_void(sender: _Sender, row: TimeExpensePosting) -> bool:
    """Void the line `row` reverses; False when that line is not in the ERP yet (nothing was called)."""
    # Read again: the line it voids may have been posted earlier in this same send.
    line = TimeExpensePosting.objects.filter(pk=row.reverses_id).first() if row.reverses_id else None
    if line is None or line.status != PostingStatus.POSTED or not line.external_id:
        return False  # the line it voids is not in the ERP yet: a later send voids it once it is
    external_id = line.external_id
    try:
        sender.call([row], "void", methodcaller("void", row.entity, external_id), key=row.idempotency_key)
    except SystemUnavailableError:
        raise
    except (ConnectorError, HubError) as exc:
        _record_failure([row], exc, sender.result)
        sender.handled.add(row.pk)
        return True
    _record_success([(row, external_id)], sender.result)
    sender.handled.add(row.pk)
    return True


def ledger_line_outbound(row: TimeExpensePosting, *, mapping_sets: dict[tuple, Any] | None = None) -> dict[str, Any]:
    """What the ERP receives for a ledger line: the line itself, or, when the target has a published outbound
    mapping of the entity (the route's, else the legal entity's, else the enterprise one), that mapping's output.

    The mapping reads the entry's canonical record overlaid with the line's own fields (its hours and amount,
    the ERP project, `employee_id` from the resource link, `description`, `source_ref`, `kind`), so an analyst
    decides what reaches the ERP (which employee field, what the description says) without touching the ledger,
    which keeps comparing what the entry says with what was posted. Mapping errors raise HubValidationError.
    `mapping_sets` keeps the set (and its compiled form) found per source, entity, target and legal entity across
    one send's lines."""
    from mappings.runtime import compiled_mapping, xrefs_resolve

    message = row.message
    scope = (
        message.system_id if message is not None else None,
        row.entity,
        row.target_system_id,
        message.legal_entity_id if message is not None else None,
    )
    found = mapping_sets if mapping_sets is not None else {}
    if scope not in found:
        chosen = _ledger_mapping_set(row, message)
        found[scope] = (chosen, compiled_mapping(chosen.pk) if chosen is not None else None)
    mapping_set, compiled = found[scope]
    if mapping_set is None or compiled is None:
        return dict(row.payload)
    source = {**((message.canonical_payload or {}) if message is not None else {}), **row.payload}
    if compiled.uses_xrefs:
        compiled.prefetch_xrefs([source], xrefs_resolve)
    result = compiled.map_one(source)
    if result.errors:
        raise HubValidationError(
            f"The outbound mapping {mapping_set.name} (v{mapping_set.version}) failed on the line: "
            + "; ".join(str(error) for error in result.errors[:5]),
            hint="Correct the mapping (Mappings → Mapping sets), publish it, and replay the entry.",
        )
    output = dict(result.output)
    # The line's own key is how the hub, the reconciliation and a person find the line in the ERP: a mapping
    # decides everything else that reaches the ERP, but never replaces the key.
    if "source_ref" in row.payload:
        output["source_ref"] = row.payload["source_ref"]
    return output


def _ledger_mapping_set(row: TimeExpensePosting, message: Message | None) -> Any:
    """The outbound mapping set of a ledger line: its route's, else the target's published one for the entity and
    legal entity (or the enterprise one); None when there is none (the line is sent as it is)."""
    from mappings.choices import Direction
    from mappings.runtime import published_mapping_set

    route = (
        Route.objects.filter(
            flow=FLOW, entity=row.entity, target_system_id=row.target_system_id, outbound_mapping_set__isnull=False
        )
        .filter(source_system_id=message.system_id if message is not None else None)
        .select_related("outbound_mapping_set")
        .first()
    )
    if route is not None:
        return route.outbound_mapping_set
    return published_mapping_set(
        system_id=row.target_system_id,
        entity_name=row.entity,
        direction=Direction.OUTBOUND,
        legal_entity_id=message.legal_entity_id if message is not None else None,
    )


def _send_lines(sender: _Sender, entity: str, rows: list[TimeExpensePosting]) -> None:
    mapped: list[TimeExpensePosting] = []
    items: list[tuple[dict[str, Any], str]] = []
    mapping_sets: dict[tuple, Any] = {}
    for row in rows:
        try:
            items.append((ledger_line_outbound(row, mapping_sets=mapping_sets), row.idempotency_key))
        except HubValidationError as exc:
            _record_failure([row], exc, sender.result)  # terminal: only this line fails, the others go
            sender.handled.add(row.pk)
            continue
        mapped.append(row)
    rows = mapped
    if not rows:
        return
    answers: list[Any]
    try:
        if connector_offers(sender.target, "upsert_batch"):
            answers = list(sender.call(rows, "upsert_batch", methodcaller("upsert_batch", entity, items)))
        else:
            answers = []
            for row, (payload, key) in zip(rows, items, strict=True):
                answers.append(
                    sender.call(
                        [row],
                        "upsert",
                        methodcaller("upsert", entity, payload, key),
                        key=key,
                    )
                )
    except SystemUnavailableError:
        raise
    except (ConnectorError, HubError) as exc:
        _record_failure(rows, exc, sender.result)
        sender.handled.update(row.pk for row in rows)
        return
    # A batch answers per line: the lines the ERP refused fail on their own, the others are posted.
    posted: list[tuple[TimeExpensePosting, str]] = []
    for row, answer in zip(rows, answers, strict=True):
        if isinstance(answer, (ConnectorError, HubError)):
            _record_failure([row], answer, sender.result)
        else:
            posted.append((row, answer.external_id))
    _record_success(posted, sender.result)
    sender.handled.update(row.pk for row in rows)


@transaction.atomic
def _record_success(pairs: list[tuple[TimeExpensePosting, str]], result: SendResult) -> None:
    now = timezone.now()
    for row, external_id in pairs:
        TimeExpensePosting.objects.filter(pk=row.pk).update(
            status=PostingStatus.POSTED,
            external_id=external_id,
            posted_at=now,
            attempts=row.attempts + 1,
            last_error="",
            next_attempt_at=None,
            updated_at=now,
        )
        row.status, row.external_id = PostingStatus.POSTED, external_id
        result.posted += 1


def _record_failure(rows: list[TimeExpensePosting], exc: HubError, result: SendResult) -> None:
    from sync.services import RetryPolicy

    now = timezone.now()
    retryable = bool(getattr(exc, "retryable", False))
    detail = str(getattr(exc, "detail", exc))[:2000]
    for row in rows:
        with transaction.atomic():
            message = row.message
            policy = RetryPolicy.of(sync_policy_for(flow=FLOW, legal_entity=message.legal_entity if message else None))
            attempts = row.attempts + 1
            if retryable and attempts < policy.max_attempts:
                delay = policy.delay(attempts, getattr(exc, "retry_after", None))
                TimeExpensePosting.objects.filter(pk=row.pk).update(
                    attempts=attempts,
                    last_error=detail,
                    next_attempt_at=now + datetime.timedelta(seconds=delay),
                    updated_at=now,
                )
                result.retrying += 1
                continue
            TimeExpensePosting.objects.filter(pk=row.pk).update(
                status=PostingStatus.FAILED, attempts=attempts, last_error=detail, updated_at=now
            )
            row.status = PostingStatus.FAILED
            result.failed += 1
            if message is None:
                continue
            category = ExceptionCategory.DEAD_LETTER if retryable else ExceptionCategory.TARGET_REJECTED
            Message.objects.filter(pk=message.pk).update(
                status=MessageStatus.DEAD if retryable else MessageStatus.FAILED,
                failed_at=now,
                last_error=detail,
                updated_at=now,
            )
            exception_item_open(
                category=category,
                reason=f"{row.target_system.slug} did not take the {row.get_kind_display().lower()} line of "
                f"{row.entry_key}: {detail}",
                message=message,
                system=row.target_system,
                legal_entity=message.legal_entity,
                payload_snapshot=row.payload,
                amount=row.amount,
                currency=row.currency,
                flow=FLOW,
                external_id=str(message.canonical_id),
                suggested_action="Correct the ERP (an inactive project, a closed period) or the entry, then replay; "
                "the replay resends the same line, which the ERP recognises if it already has it.",
            )


# The ledger's statuses as the engine's settle rule reads a delivery's: a posted line is delivered, a refused one
# failed; a pending line keeps its message queued, so such a message is not settled yet.
_SETTLE_STATUS = {PostingStatus.POSTED: DeliveryStatus.DELIVERED, PostingStatus.FAILED: DeliveryStatus.FAILED}
SETTLE_BATCH = 500


def time_expense_messages_settle(*, target_system_id: int | None = None, limit: int = SETTLE_BATCH) -> int:
    """Settle every queued message of the flow whose lines are all final (for one target's lines, or all), by the
    engine's one settle rule: all posted → delivered now (the end of the flow's KPI). Run after each send and by
    the beat, so a message whose lines a killed sender (or the next one) posted does not stay queued. Returns how
    many were settled."""
    from sync.outcome import SETTLE_ROW_FIELDS, messages_settle_from_rows

    postings = TimeExpensePosting.objects.all()
    if target_system_id is not None:
        postings = postings.filter(target_system_id=target_system_id)
    candidates = (
        Message.objects.filter(
            flow=FLOW,
            status=MessageStatus.QUEUED,
            pk__in=postings.values("message_id"),
        )
        .exclude(
            pk__in=TimeExpensePosting.objects.filter(status=PostingStatus.PENDING, message__isnull=False).values(
                "message_id"
            )
        )
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    with transaction.atomic():
        # Locked in id order, as every batch locks them; one a replay or the pipeline holds is left for next time.
        message_ids = list(
            Message.objects.select_for_update(skip_locked=True)
            .filter(pk__in=list(candidates), status=MessageStatus.QUEUED)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        rows: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
        for message_id, status, *rest in TimeExpensePosting.objects.filter(message_id__in=message_ids).values_list(
            "message_id", *SETTLE_ROW_FIELDS
        ):
            rows[message_id].append((_SETTLE_STATUS.get(status, DeliveryStatus.PENDING), *rest))
        final = {
            message_id: found
            for message_id, found in rows.items()
            if found and all(row[0] != DeliveryStatus.PENDING for row in found)
        }
        messages_settle_from_rows(final, timezone.now())
    return len(final)


# --- the scheduled run -------------------------------------------------------------------------------------


@register_flow_runner(FLOW)
def time_expense_run(policy: SyncPolicy) -> dict[str, Any]:
    """A scheduled run: pull changed time entries and expenses by cursor from every PSA routed into the flow
    (for the policy's legal entity when it has one); the pipeline validates them and the ledger batches them."""
    from sync.services import poll_run

    routes = Route.objects.filter(flow=FLOW, active=True, entity__in=ENTITIES).select_related("source_system")
    if policy.legal_entity_id:
        routes = routes.filter(Q(legal_entity__isnull=True) | Q(legal_entity_id=policy.legal_entity_id))
    pulls = sorted({(route.source_system_id, route.entity) for route in routes})
    outcome: dict[str, Any] = {}
    for system_id, entity in pulls:
        system = ConnectedSystem.objects.get(pk=system_id)
        result = poll_run(system=system, entity=entity)
        outcome[f"{system.slug}:{entity}"] = {"outcome": result.outcome, "stored": result.stored}
    return outcome


# --- finance's override ---------------------------------------------------------------------------------------


@transaction.atomic
def exception_item_override(*, item: ExceptionItem, user: Any, reason: str) -> ExceptionItem:
    """Finance approves an override of a time or expense entry's failed rules: the entry is released past exactly
    those rules and posted (once: the ledger and the line's idempotency key see to it)."""
    from sync.services import message_replay

    require_permission(user, PERM_DECIDE)
    reason = require_reason(reason)
    item = locked_open_item(item)
    if item.category != ExceptionCategory.POLICY or item.flow != FLOW or item.message is None:
        raise HubConflictError(
            f"Exception item #{item.pk} is not a policy item of the time and expense flow; it cannot be overridden.",
            hint="Replay, fix and replay, or reject it instead.",
        )
    if item.requested_by_id is not None and item.requested_by_id == user.pk:
        raise HubConflictError(
            "You asked for this override, so you cannot approve it yourself.", hint="Ask another finance approver."
        )
    rules = sorted({str(entry.get("rule")) for entry in item.failed_rules or [] if entry.get("rule")})
    decision = decision_record(
        item=item,
        message=item.message,
        action=DecisionAction.OVERRIDE,
        user=user,
        reason=reason,
        payload_diff=[
            {
                "path": entry.get("field") or entry.get("rule"),
                "before": entry.get("expected"),
                "after": entry.get("actual"),
            }
            for entry in item.failed_rules or []
        ],
    )
    item.state = ExceptionState.APPROVED
    item.save(update_fields=["state", "updated_at"])
    message = Message.objects.select_for_update().get(pk=item.message.pk)
    note = {OVERRIDE_NOTE: {"rules": rules, "decision": decision.pk, "by": user.pk, "at": timezone.now().isoformat()}}
    message.notes = [*(message.notes or []), note]
    message.save(update_fields=["notes", "updated_at"])
    if message.canonical_payload is not None:
        message_replay(message=message, use_original_mapping=True, canonical_payload=message.canonical_payload)
    else:
        message_replay(message=message, use_original_mapping=True)
    return item


def _register() -> None:
    from sync.services import flow_stage_register

    flow_stage_register(FLOW, time_expense_stage)
    register_item_action(
        ItemAction(
            action=DecisionAction.OVERRIDE,
            label="Approve an override",
            permission=PERM_DECIDE,
            handler=exception_item_override,
            category=ExceptionCategory.POLICY,
            # Only this flow's entries can be released past their failed rules (a milestone cannot).
            flow=FLOW,
            needs_run=False,
            help_text="Post the time or expense entry although the listed rules failed; the reason is audited.",
        )
    )


_register()


# --- finance's decision on an entry in a closed period ------------------------------------------------------------

POSTING_DATE_MOVED_NOTE = "posting_date_moved"


def _period_fields(item: ExceptionItem) -> tuple[str, str]:
    """The paths of the entry's date and legal entity code the failed period check read (its params' defaults
    when the item does not say)."""
    defaults = schema_defaults(rule_get(PERIOD_RULE).params_schema)
    failed: dict[str, Any] = next((entry for entry in item.failed_rules or [] if entry.get("rule") == PERIOD_RULE), {})
    return str(failed.get("field") or defaults["field"]), str(defaults["legal_entity_field"])


@transaction.atomic
def exception_item_post_next_period(*, item: ExceptionItem, user: Any, reason: str) -> ExceptionItem:
    """Finance posts an entry held in a closed period in the next open period of its legal entity: the entry's date
    moves to that period's first day (recorded with the decision and on the message), and the entry runs again
    through every check and the posting ledger, so it is posted once, with the moved date, or held again."""
    from sync.services import message_replay

    require_permission(user, PERM_DECIDE)
    reason = require_reason(reason)
    item = locked_open_item(item)
    if item.category != ExceptionCategory.CLOSED_PERIOD or item.message is None:
        raise HubConflictError(
            f"Exception item #{item.pk} is not a closed-period item of an entry; its date cannot be moved.",
            hint="Replay, fix and replay, or reject it instead.",
        )
    message = Message.objects.select_for_update().get(pk=item.message.pk)
    record = dict(message.canonical_payload or {})
    date_path, entity_path = _period_fields(item)
    if "." in date_path:
        raise HubConflictError(
            f"The entry's date is the nested field {date_path}; correct it with Edit the payload and replay."
        )
    try:
        on_date = datetime.date.fromisoformat(str(record.get(date_path) or "")[:10])
    except ValueError:
        raise HubValidationError(
            f"The entry has no valid date in {date_path}; correct it with Edit the payload and replay.",
            errors=[{"field": date_path, "message": "A date YYYY-MM-DD is required."}],
        ) from None
    entity_code = str(
        record.get(entity_path) or (message.legal_entity.code if message.legal_entity is not None else "")
    )
    if not entity_code:
        raise HubValidationError(
            f"The entry names no legal entity ({entity_path}), so it has no period calendar.",
            errors=[{"field": entity_path, "message": "This field is required."}],
        )
    period = accounting_period_next_open(legal_entity=entity_code, after=on_date)
    if period is None:
        raise HubConflictError(
            f"{entity_code} has no open accounting period after {on_date.isoformat()}.",
            hint="Open the next period in the admin (or in the ERP, then wait for the period pull), and try again.",
        )
    moved = period.start_date.isoformat()
    diff = [{"path": date_path, "before": record.get(date_path), "after": moved, "change": "changed"}]
    decision = decision_record(
        item=item,
        message=message,
        action=DecisionAction.POST_NEXT_PERIOD,
        user=user,
        reason=f"{reason} (posting date {on_date.isoformat()} → {moved}, period {period.name} of {entity_code})",
        payload_diff=diff,
    )
    item.state = ExceptionState.REPLAYED
    item.save(update_fields=["state", "updated_at"])
    note = {
        POSTING_DATE_MOVED_NOTE: {
            "from": on_date.isoformat(),
            "to": moved,
            "period": period.name,
            "legal_entity": entity_code,
            "decision": decision.pk,
            "by": user.pk,
            "at": timezone.now().isoformat(),
        }
    }
    message.notes = [*(message.notes or []), note]
    message.save(update_fields=["notes", "updated_at"])
    message_replay(message=message, use_original_mapping=True, canonical_payload={**record, date_path: moved})
    return item


def _register_closed_period_actions() -> None:
    register_item_action(
        ItemAction(
            action=DecisionAction.POST_NEXT_PERIOD,
            label="Post in the next open period",
            permission=PERM_DECIDE,
            handler=exception_item_post_next_period,
            category=ExceptionCategory.CLOSED_PERIOD,
            needs_message=True,
            help_text="Move the entry's date to the first day of the next open period of its legal entity and post "
            "it there; the date change is recorded with your reason.",
        )
    )


_register_closed_period_actions()


# --- the PSA's inbound mappings (used by the demo and the tests; analysts edit them like any other) --------------

# target ← source paths, steps. Harvest ids are numbers: `concat` makes them text; `coalesce` leaves a null
# (an unapproved entry's approved_at) out instead of writing null into the canonical record.
_AS_TEXT = [{"transform": "concat"}]
_OPTIONAL = [{"transform": "coalesce"}]
_APPROVAL = [{"transform": "case", "params": {"cases": [{"when": "unsubmitted", "then": "draft"}]}}]
# Rules that only apply when their source is there (an unapproved entry has no approver).
_CONDITIONS = {"approver_id": {"path": "approved_by.id", "op": "exists"}}
PSA_TIME_ENTRY_RULES: list[tuple[str, list[str], list[dict[str, Any]]]] = [
    ("id", ["id"], _AS_TEXT),
    ("resource_id", ["user.id"], _AS_TEXT),
    ("role_code", ["role"], _OPTIONAL),
    ("project_id", ["project.id"], _AS_TEXT),
    ("date", ["spent_date"], []),
    ("hours", ["hours"], []),
    ("rate", ["billable_rate"], _OPTIONAL),
    ("cost_rate", ["cost_rate"], _OPTIONAL),
    ("currency", ["client.currency"], _OPTIONAL),
    ("cost_code", ["cost_code"], _OPTIONAL),
    ("description", ["notes"], _OPTIONAL),
    ("billable", ["billable"], []),
    ("approval_status", ["approval_status"], _APPROVAL),
    ("approved_at", ["approved_at"], _OPTIONAL),
    ("approver_id", ["approved_by.id"], _AS_TEXT),
    ("updated_at", ["updated_at"], []),
]
PSA_EXPENSE_RULES: list[tuple[str, list[str], list[dict[str, Any]]]] = [
    ("id", ["id"], _AS_TEXT),
    ("resource_id", ["user.id"], _AS_TEXT),
    ("project_id", ["project.id"], _AS_TEXT),
    ("date", ["spent_date"], []),
    ("category", ["expense_category"], [{"transform": "default", "params": {"value": "other"}}]),
    ("amount", ["total_cost"], []),
    ("currency", ["currency"], []),
    ("cost_code", ["cost_code"], _OPTIONAL),
    ("description", ["notes"], _OPTIONAL),
    ("receipt_url", ["receipt_url"], _OPTIONAL),
    ("billable", ["billable"], []),
    ("approval_status", ["approval_status"], _APPROVAL),
    ("approved_at", ["approved_at"], _OPTIONAL),
    ("approver_id", ["approved_by.id"], _AS_TEXT),
    ("updated_at", ["updated_at"], []),
]


def time_expense_psa_mappings_install(
    *, system: ConnectedSystem, legal_entity_by_currency: Mapping[str, str], user: Any = None
) -> list[Any]:
    """Create and publish the inbound time entry and expense mappings of a Harvest-shaped PSA (once per system).

    The PSA has no legal entity on its entries: the client's currency (time) or the expense's currency names it,
    through `legal_entity_by_currency` ({"USD": "US01", ...}).
    """
    from mappings.choices import Direction
    from mappings.models import CanonicalEntity, FieldRule, MappingSet
    from mappings.services import field_rule_save, mapping_set_create, mapping_set_publish

    cases = [{"when": currency, "then": code} for currency, code in sorted(legal_entity_by_currency.items())]
    published = []
    for entity, rules, currency_path in (
        ("time_entry", PSA_TIME_ENTRY_RULES, "client.currency"),
        ("expense", PSA_EXPENSE_RULES, "currency"),
    ):
        canonical = CanonicalEntity.objects.get(name=entity)
        existing = MappingSet.objects.filter(system=system, entity=canonical, direction=Direction.INBOUND).first()
        if existing is not None:
            published.append(existing)
            continue
        mapping_set = mapping_set_create(
            name=f"{system.slug} {entity} in",
            system=system,
            entity=canonical,
            direction=Direction.INBOUND,
            notes="Time and expense flow: the PSA's entries to the canonical record.",
            user=user,
        )
        all_rules = [
            *rules,
            ("legal_entity_code", [currency_path], [{"transform": "case", "params": {"cases": cases}}]),
        ]
        for position, (target, sources, steps) in enumerate(all_rules):
            field_rule_save(
                rule=FieldRule(
                    mapping_set=mapping_set,
                    position=position,
                    target_path=target,
                    source_paths=sources,
                    steps=steps,
                    condition=_CONDITIONS.get(target),
                ),
                user=user,
                reason="time and expense flow set-up",
            )
        mapping_set_publish(mapping_set=mapping_set, user=user, confirm=True)
        published.append(mapping_set)
    return published


# --- the ERP's outbound mappings of ledger lines (analysts edit them like any other) ---------------------------

# What a ledger line carries (see _line_payload and ledger_line_outbound): each is mapped to the ERP field of the
# same name by the installed mapping. A field a line does not have (an expense has no bill rate) is left out.
LEDGER_LINE_FIELDS = (
    "project_id",
    "date",
    "hours",
    "amount",
    "employee_id",
    "employee_ref",
    "role",
    "cost_code",
    "bill_rate",
    "cost_rate",
    "currency",
    "description",
    "source_ref",
    "kind",
)


def time_expense_erp_mappings_install(*, system: ConnectedSystem, user: Any = None) -> list[Any]:
    """Create and publish the outbound time entry and expense mappings of an ERP (once per system): every ledger
    line field to the ERP field of the same name, so an analyst sees what reaches the ERP and changes it (the
    employee field, the description) by publishing a new version."""
    from mappings.choices import Direction
    from mappings.models import CanonicalEntity, FieldRule, MappingSet
    from mappings.services import field_rule_save, mapping_set_create, mapping_set_publish

    published = []
    for entity in ENTITIES:
        canonical = CanonicalEntity.objects.get(name=entity)
        existing = MappingSet.objects.filter(system=system, entity=canonical, direction=Direction.OUTBOUND).first()
        if existing is not None:
            published.append(existing)
            continue
        mapping_set = mapping_set_create(
            name=f"{system.slug} {entity} ledger lines out",
            system=system,
            entity=canonical,
            direction=Direction.OUTBOUND,
            notes="Time and expense flow: what each ledger line sends to the ERP (the line's fields, the employee "
            "from the person's resource link, the PSA's description).",
            user=user,
        )
        for position, name in enumerate(LEDGER_LINE_FIELDS):
            field_rule_save(
                rule=FieldRule(mapping_set=mapping_set, position=position, target_path=name, source_paths=[name]),
                user=user,
                reason="time and expense flow set-up",
            )
        mapping_set_publish(mapping_set=mapping_set, user=user, confirm=True)
        published.append(mapping_set)
    return published
