"""The pipeline's stages as plain functions: map, validate, ownership, hold and route.

Each stage takes a locked message, stamps it and either lets it go on or ends its run (`PipelineStop`) after
opening an exception item or holding it. They are shared by the per-record and batch pipeline (sync.pipeline)
and by the batch path of approved time (sync.batch), and flows with their own ledger replace validate → route
through the flow-stage registry (`flow_stage_register`). `_ProcessBatch` is what the route stage leaves for a
batch to write together.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from exception_queue.choices import ExceptionCategory
from governance.models import LegalEntity, OwnershipRule, SyncPolicy
from governance.rules import RuleContext, rule_get
from governance.selectors import owner_of, rate_for
from integrationhub.errors import HubError
from mappings.choices import Direction
from mappings.compiler import CompiledMapping, MappingDefinitionError
from mappings.runtime import xrefs_resolve
from mappings.selectors import canonical_payload_validate
from mappings.services import mapping_sample_capture
from sync.choices import DELIVERY_DONE_STATUSES, EVENT_MESSAGE_FAILED, DeliveryStatus, MessageStatus
from sync.entity import message_legal_entity_infer
from sync.follow_ups import follow_up_emit
from sync.models import Delivery, Message, Route
from sync.outcome import _open_item
from sync.policy import _compiled_for_batch, _memoized, _published_mapping_set, _system_legal_entity_id

# Fields that identify a record rather than describe it: never subject to ownership rules.
IDENTITY_FIELDS = frozenset({"id", "updated_at", "source_system", "external_refs"})


LEGAL_ENTITY_FIELDS = ("legal_entity_code", "contracting_legal_entity_code")


# The money field an approval threshold applies to, first present wins (credit limits are approved too).
AMOUNT_FIELDS = ("amount", "total_amount", "credit_limit")


class PipelineStop(Exception):
    """A stage ended the message's run (exception item opened, held, or skipped)."""


def _value_at(record: Mapping[str, Any], path: str) -> Any:
    current: Any = record
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return current


def _fail(message: Message, *, category: str, reason: str, now: datetime.datetime, **fields: Any) -> NoReturn:
    if message.legal_entity_id is None:
        # Not mapped, so no entity code: the project, contract or source system still tells whose work it is.
        message.legal_entity_id = message_legal_entity_infer(message)
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
    mapping_sample_capture(mapping_set=mapping_set, payload=record, message_id=message.pk)


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


@dataclass(frozen=True)
class OwnershipCheck:
    """What the ownership stage found in one record: the fields a sender that does not own them may not
    change, split into those dropped quietly (rule: ignore) and those that stop the record (a person decides)."""

    canonical: dict[str, Any]
    ignored: list[str]
    blocking: list[dict[str, Any]]

    def reason(self, sender: str) -> str:
        return "; ".join(
            f"{c['field']} is owned by {c['owner']} (rule #{c['rule']}), not {sender}" for c in self.blocking
        )

    def failed_rules(self, sender: str) -> list[dict[str, Any]]:
        return [
            {
                "rule": "ownership",
                "field": c["field"],
                "expected": c["owner"],
                "actual": sender,
                "message": f"{c['field']} is owned by {c['owner']}",
            }
            for c in self.blocking
        ]


OWNERSHIP_SUGGESTED_ACTION = "Make the change in the owning system, or remove the fields and replay."


def ownership_check(
    *, canonical: Mapping[str, Any], sender_id: int, owner: Callable[[str, str], OwnershipRule | None]
) -> OwnershipCheck:
    """The ownership stage as a plain function of one record, shared by the per-record and the batch path
    (`owner(field, lifecycle stage)` answers the rule, from the database or from a page's preloaded rules)."""
    kept = dict(canonical)
    stage = str(kept.get("status") or "")
    ignored: list[str] = []
    blocking: list[dict[str, Any]] = []
    for name in [key for key in kept if key not in IDENTITY_FIELDS]:
        rule = owner(name, stage)
        if rule is None or rule.owning_system_id == sender_id:
            continue
        if rule.conflict_action == "ignore":
            ignored.append(name)
            kept.pop(name, None)
        else:
            blocking.append({"field": name, "owner": rule.owning_system.slug, "rule": rule.pk})
    return OwnershipCheck(kept, ignored, blocking)


@dataclass(frozen=True)
class HoldDecision:
    """An amount at or above the flow's approval threshold: what finance is asked."""

    amount: Decimal
    currency: str
    required_approvals: int
    reason: str
    suggested_action: str


def hold_check(*, canonical: Mapping[str, Any], policy: SyncPolicy | None) -> HoldDecision | None:
    """The approval hold as a plain function of one record, shared by the per-record and the batch path: None
    when the record goes on, else what the approval item says (two approvers above the second threshold; an
    amount in another currency than the threshold's is held to be safe, and the reason says so)."""
    if policy is None or policy.approval_threshold_amount is None:
        return None
    amount, currency = _money(canonical)
    if amount is None or amount < policy.approval_threshold_amount:
        return None
    if policy.approval_currency and currency and currency != policy.approval_currency:
        note = f" (in {currency}; the threshold is in {policy.approval_currency}, so it is held to be safe)"
    else:
        note = ""
    second = policy.second_approval_threshold_amount
    required = 2 if second is not None and amount >= second else 1
    return HoldDecision(
        amount=amount,
        currency=currency,
        required_approvals=required,
        reason=f"{amount} {currency} is at or above the approval threshold {policy.approval_threshold_amount} "
        f"{policy.approval_currency}{note}.",
        suggested_action="Approve to deliver, or reject with a reason"
        + (" (two different approvers are needed above the second threshold)." if required == 2 else "."),
    )


def _stage_ownership(message: Message, now: datetime.datetime) -> None:
    entity = message.entity
    if not _memoized(("ownership", entity), lambda: OwnershipRule.objects.filter(entity__name=entity).exists()):
        return
    check = ownership_check(
        canonical=message.canonical_payload or {},
        sender_id=message.system_id,
        owner=lambda field, stage: owner_of(entity=entity, field=field, stage=stage),
    )
    if check.blocking:
        _fail(
            message,
            category=ExceptionCategory.OWNERSHIP_CONFLICT,
            reason=check.reason(message.system.slug),
            payload_snapshot=message.canonical_payload,
            failed_rules=check.failed_rules(message.system.slug),
            suggested_action=OWNERSHIP_SUGGESTED_ACTION,
            now=now,
        )
    if check.ignored:
        # Never overwrite a field the sender does not own; the conflict stays on record on the message.
        message.canonical_payload = check.canonical
        message.notes = [*message.notes, {"ownership_ignored": check.ignored, "at": now.isoformat()}]


def _stage_hold(message: Message, policy: SyncPolicy | None, now: datetime.datetime) -> None:
    if message.approved_at is not None:
        return
    hold = hold_check(canonical=message.canonical_payload or {}, policy=policy)
    if hold is None:
        return
    message.status = MessageStatus.HELD
    message.held_at = now
    message.save()
    _open_item(
        message,
        ExceptionCategory.APPROVAL_REQUIRED,
        hold.reason,
        payload_snapshot=message.canonical_payload,
        amount=hold.amount,
        currency=hold.currency,
        required_approvals=hold.required_approvals,
        suggested_action=hold.suggested_action,
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


@dataclass
class _ProcessBatch:
    """A batch of messages processed in one transaction: what its stages leave to be written together."""

    existing: dict[int, dict[int, Delivery]]
    new_deliveries: list[Delivery] = dataclasses.field(default_factory=list)
    queued: list[Delivery] = dataclasses.field(default_factory=list)
    routed: list[Message] = dataclasses.field(default_factory=list)
    unrouted: list[int] = dataclasses.field(default_factory=list)
