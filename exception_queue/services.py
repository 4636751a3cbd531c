"""Exception-queue actions: open an item, replay, edit and replay, approve, reject, bulk replay.

Every action by a person writes one Decision row (who, when, why, and the payload diff for edits) and
then calls one sync service; the engine does the work, this module only decides and records.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState, ReplayMapping
from exception_queue.models import Decision, ExceptionItem
from exception_queue.ports import item_entities_fill, message_operations
from integrationhub.audit import AuditAction, audit_record
from integrationhub.errors import HubConflictError, HubValidationError
from integrationhub.scoping import EntityScope, entity_scope_for, require_in_scope

if TYPE_CHECKING:
    from sync.models import Message

PERM_DECIDE = "exception_queue.decide_exceptionitem"
PERM_FIX = "exception_queue.fix_exceptionitem"
PERM_REPLAY_MESSAGE = "sync.change_message"


# Every decision is also written to the append-only audit trail, which auditors browse and export.
DECISION_AUDIT_ACTIONS: dict[str, AuditAction] = {
    DecisionAction.APPROVE: AuditAction.EXCEPTION_APPROVED,
    DecisionAction.REJECT: AuditAction.EXCEPTION_REJECTED,
    DecisionAction.FIX_AND_REPLAY: AuditAction.EXCEPTION_FIXED,
    DecisionAction.REPLAY: AuditAction.MESSAGE_REPLAYED,
    DecisionAction.RESOLVE: AuditAction.EXCEPTION_OVERRIDDEN,
    DecisionAction.OVERRIDE: AuditAction.EXCEPTION_OVERRIDDEN,
    DecisionAction.RETRY_STEP: AuditAction.WORKFLOW_STEP_RETRIED,
    DecisionAction.COMPENSATE: AuditAction.WORKFLOW_COMPENSATED,
    DecisionAction.CANCEL: AuditAction.WORKFLOW_CANCELLED,
    DecisionAction.LINK_EXISTING: AuditAction.DUPLICATE_LINKED,
    DecisionAction.CREATE_NEW: AuditAction.DUPLICATE_CREATED,
    DecisionAction.RECREATE: AuditAction.MESSAGE_REPLAYED,
}


def decision_record(**fields: Any) -> Decision:
    """Store a decision (item, message, action, user, reason, payload_diff) and its audit event together;
    the one way every exception-queue action, including the workflows' own, is recorded."""
    return _decision_record(**fields)


def _decision_record(**fields: Any) -> Decision:
    """Store a decision and its audit event in the same transaction."""
    decision = Decision.objects.create(**fields)
    item, message = decision.item, decision.message
    target = f"exception item #{item.pk}" if item else f"message #{message.pk}" if message else "nothing"
    audit_record(
        action=DECISION_AUDIT_ACTIONS.get(decision.action, AuditAction.EXCEPTION_OVERRIDDEN),
        actor=decision.user,
        object_type="exception_queue.exceptionitem" if item else "sync.message",
        object_id=item.pk if item else (message.pk if message else ""),
        summary=f"{decision.get_action_display()} on {target}: {decision.reason}"[:500],
        details={
            "decision_id": decision.pk,
            "message_id": message.pk if message else None,
            "changed_fields": sorted({str(change.get("path", "")) for change in (decision.payload_diff or [])})
            if isinstance(decision.payload_diff, list)
            else [],
        },
        correlation_id=getattr(message, "correlation_id", None),
        legal_entity_id=item.legal_entity_id if item else getattr(message, "legal_entity_id", None),
    )
    return decision


def exception_item_open(
    *,
    category: str,
    reason: str,
    message: Message | None = None,
    delivery: Any = None,
    system: Any = None,
    legal_entity: Any = None,
    payload_snapshot: Any = None,
    failed_rules: list[dict[str, Any]] | None = None,
    suggested_action: str = "",
    amount: Decimal | None = None,
    currency: str = "",
    required_approvals: int = 1,
    flow: str = "",
    workflow_run: Any = None,
    step: str = "",
    external_id: str = "",
    requested_by: Any = None,
) -> ExceptionItem:
    """Open an item for work that needs a person; an open item of the same message, delivery and category
    is updated instead, so a repeated failure never floods the queue."""
    existing = None
    if message is not None or workflow_run is not None:
        existing = (
            ExceptionItem.objects.select_for_update()
            .filter(
                message=message,
                delivery=delivery,
                workflow_run=workflow_run,
                category=category,
                state=ExceptionState.OPEN,
            )
            .first()
        )
    item = existing or ExceptionItem(category=category, message=message, delivery=delivery, workflow_run=workflow_run)
    item.reason = reason[:4000]
    item.system = system
    item.legal_entity = legal_entity
    item.payload_snapshot = payload_snapshot
    item.failed_rules = failed_rules or []
    item.suggested_action = suggested_action
    item.amount = amount
    item.currency = currency[:3]
    item.required_approvals = required_approvals
    item.flow = flow or item.flow or getattr(message, "flow", "") or ""
    item.step = step
    item.external_id = external_id[:200] or item.external_id
    item.requested_by = requested_by
    # An item is scoped by its legal entity: when the caller could not tell it (the mapping failed), the
    # message's, the project's or the system's is taken, so the item lands in its entity's queue.
    item_entities_fill([item])
    item.full_clean(exclude=["message", "delivery", "system", "legal_entity", "workflow_run", "requested_by"])
    item.save()
    return item


# What a batch path's item may carry; an open item of the same message, delivery and category takes them over.
ITEM_FIELDS = (
    "reason",
    "system",
    "legal_entity",
    "payload_snapshot",
    "failed_rules",
    "suggested_action",
    "amount",
    "currency",
    "required_approvals",
    "flow",
    "external_id",
)


def exception_items_open_many(*, items: list[ExceptionItem]) -> None:
    """`exception_item_open` for the items of a batch, in three statements: an open item of the same message,
    delivery and category is updated instead of a second one opened (so a page retried, or a failure seen by a
    webhook and by a pull, never floods the queue); the others are inserted together."""
    if not items:
        return
    item_entities_fill(items)
    wanted = {(item.message_id, item.delivery_id, item.category): item for item in items}
    message_ids = {key[0] for key in wanted if key[0] is not None}
    found: dict[tuple[Any, Any, str], ExceptionItem] = {}
    if message_ids:
        existing = ExceptionItem.objects.select_for_update().filter(
            state=ExceptionState.OPEN, message_id__in=message_ids, category__in={key[2] for key in wanted}
        )
        found = {(e.message_id, e.delivery_id, e.category): e for e in existing}
    updated = []
    for key, item in wanted.items():
        current = found.get(key)
        if current is None:
            continue
        for name in ITEM_FIELDS:
            setattr(current, name, getattr(item, name))
        current.updated_at = timezone.now()
        updated.append(current)
    if updated:
        ExceptionItem.objects.bulk_update(updated, [*ITEM_FIELDS, "updated_at"])
    ExceptionItem.objects.bulk_create([item for key, item in wanted.items() if key not in found])


def require_permission(user: Any, permission: str) -> None:
    """Refuse (PermissionDenied) a user without `permission`; used by every decision service."""
    _require(user, permission)


def require_reason(reason: str) -> str:
    """The stripped reason, or a validation error naming the field: every decision needs a reason."""
    return _require_reason(reason)


def locked_open_item(item: ExceptionItem) -> ExceptionItem:
    """`item` locked for update, or a conflict error when someone already acted on it."""
    return _locked_open(item)


def _require(user: Any, permission: str) -> None:
    if user is None or not user.has_perm(permission):
        raise PermissionDenied(f"This action needs the permission {permission}.")


def require_item_in_scope(user: Any, item: ExceptionItem) -> None:
    """An item of a legal entity outside the user's scope is answered as missing (404), from every entry point."""
    require_in_scope(user=user, legal_entity_id=item.legal_entity_id, what=f"exception item #{item.pk}")


def _require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise HubValidationError(
            "Give a reason for the decision; auditors read it next to the action.",
            errors=[{"field": "reason", "message": "This field is required."}],
        )
    return reason


def _locked_open(item: ExceptionItem) -> ExceptionItem:
    item = ExceptionItem.objects.select_for_update(of=("self",)).select_related("message").get(pk=item.pk)
    if item.state != ExceptionState.OPEN:
        raise HubConflictError(
            f"Exception item #{item.pk} is already {item.state}.", hint="Reload the queue; someone acted on it."
        )
    return item


def payload_diff(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """The changes from `before` to `after` as [{path, before, after}], walking nested objects."""
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[dict[str, Any]] = []
        for key in sorted(set(before) | set(after), key=str):
            child = f"{path}.{key}" if path else str(key)
            if key not in before:
                changes.append({"path": child, "before": None, "after": after[key], "change": "added"})
            elif key not in after:
                changes.append({"path": child, "before": before[key], "after": None, "change": "removed"})
            else:
                changes.extend(payload_diff(before[key], after[key], child))
        return changes
    if before != after:
        return [{"path": path or "(record)", "before": before, "after": after, "change": "changed"}]
    return []


@transaction.atomic
def exception_item_replay(
    *, item: ExceptionItem, user: Any, reason: str, mapping: str = ReplayMapping.ORIGINAL
) -> ExceptionItem:
    """Replay the item's message unchanged, with the original or the current mapping version."""
    message_replay = message_operations().replay

    _require(user, PERM_FIX)
    require_item_in_scope(user, item)
    reason = _require_reason(reason)
    item = _locked_open(item)
    if item.message is None:
        raise HubConflictError(f"Exception item #{item.pk} has no message to replay.")
    if item.category == ExceptionCategory.APPROVAL_REQUIRED:
        raise HubConflictError("An item awaiting approval is approved or rejected, not replayed.")
    _decision_record(item=item, message=item.message, action=DecisionAction.REPLAY, user=user, reason=reason)
    item.state = ExceptionState.REPLAYED
    item.save(update_fields=["state", "updated_at"])
    message_replay(message=item.message, use_original_mapping=mapping == ReplayMapping.ORIGINAL)
    return item


@transaction.atomic
def exception_item_fix_and_replay(
    *, item: ExceptionItem, user: Any, reason: str, payload: dict[str, Any]
) -> ExceptionItem:
    """Replace the payload a person corrected (canonical if the message was mapped, else raw), record the
    diff, and replay from the first stage that reads it."""
    message_replay = message_operations().replay

    _require(user, PERM_FIX)
    require_item_in_scope(user, item)
    reason = _require_reason(reason)
    if not isinstance(payload, dict):
        raise HubValidationError("The corrected payload must be a JSON object.")
    item = _locked_open(item)
    message = item.message
    if message is None:
        raise HubConflictError(f"Exception item #{item.pk} has no message to replay.")
    edit_canonical = message.canonical_payload is not None
    before = message.canonical_payload if edit_canonical else message.raw_payload
    diff = payload_diff(before, payload)
    if not diff:
        raise HubValidationError("The payload is unchanged; use Replay to run it again as it is.")
    _decision_record(
        item=item, message=message, action=DecisionAction.FIX_AND_REPLAY, user=user, reason=reason, payload_diff=diff
    )
    item.state = ExceptionState.REPLAYED
    item.save(update_fields=["state", "updated_at"])
    if edit_canonical:
        message_replay(message=message, use_original_mapping=True, canonical_payload=payload)
    else:
        message_replay(message=message, use_original_mapping=False, raw_payload=payload)
    return item


@transaction.atomic
def exception_item_approve(*, item: ExceptionItem, user: Any, reason: str) -> ExceptionItem:
    """Approve a held item; above the second threshold a second, different approver completes the approval."""
    message_release = message_operations().release

    _require(user, PERM_DECIDE)
    require_item_in_scope(user, item)
    reason = _require_reason(reason)
    item = _locked_open(item)
    if item.category != ExceptionCategory.APPROVAL_REQUIRED:
        raise HubConflictError(
            f"Exception item #{item.pk} is a {item.category} item; only approval items are approved.",
            hint="Replay, fix and replay, or reject it instead.",
        )
    if item.requested_by_id is not None and item.requested_by_id == user.pk:
        raise HubConflictError(
            "You asked for this approval, so you cannot approve it yourself.",
            hint="Ask another finance approver to review it.",
        )
    approvers = set(item.decisions.filter(action=DecisionAction.APPROVE).values_list("user_id", flat=True))
    if user.pk in approvers:
        raise HubConflictError(
            "You already approved this item; a second, different approver must complete it.",
            hint="Ask another finance approver to review it.",
        )
    _decision_record(item=item, message=item.message, action=DecisionAction.APPROVE, user=user, reason=reason)
    if len(approvers) + 1 >= item.required_approvals:
        item.state = ExceptionState.APPROVED
        item.save(update_fields=["state", "updated_at"])
        if item.message is not None:
            message_release(message=item.message)
    return item


@transaction.atomic
def exception_item_reject(*, item: ExceptionItem, user: Any, reason: str) -> ExceptionItem:
    """Reject an item with a reason: its message stops for good (it can still be replayed by an admin)."""
    message_reject = message_operations().reject

    _require(user, PERM_DECIDE)
    require_item_in_scope(user, item)
    reason = _require_reason(reason)
    item = _locked_open(item)
    _decision_record(item=item, message=item.message, action=DecisionAction.REJECT, user=user, reason=reason)
    item.state = ExceptionState.REJECTED
    item.save(update_fields=["state", "updated_at"])
    if item.message is not None:
        message_reject(message=item.message, reason=reason)
    return item


def exception_items_bulk_replay(
    *,
    user: Any,
    reason: str,
    category: str | None = None,
    system_id: int | None = None,
    legal_entity_id: int | None = None,
    created_after: datetime.datetime | None = None,
    created_before: datetime.datetime | None = None,
    limit: int = 500,
    mapping: str = ReplayMapping.ORIGINAL,
    scope: EntityScope | None = None,
) -> int:
    """Replay every open item matching the filter (at most `limit`) within the legal entities of `scope` (a key's)
    or of `user`, one Decision each; returns the count. The filter only narrows: it never reaches beyond them."""
    from exception_queue.selectors import exception_item_list

    _require(user, PERM_FIX)
    reason = _require_reason(reason)
    items: QuerySet[ExceptionItem] = exception_item_list(
        state=ExceptionState.OPEN,
        category=category,
        system_id=system_id,
        legal_entity_id=legal_entity_id,
        created_after=created_after,
        created_before=created_before,
        scope=scope or entity_scope_for(user),
    ).exclude(category=ExceptionCategory.APPROVAL_REQUIRED)
    count = 0
    for item in items.filter(message__isnull=False)[:limit]:
        try:
            exception_item_replay(item=item, user=user, reason=reason, mapping=mapping)
        except HubConflictError:
            continue  # acted on concurrently; the other action stands
        count += 1
    return count


@transaction.atomic
def message_replay_request(
    *, message: Message, user: Any, reason: str, mapping: str = ReplayMapping.ORIGINAL
) -> Decision:
    """An integration admin replays any message (delivered, failed or dead); audited as a Decision. Open
    items of the message are marked replayed. A delivered message is looked up at the target first."""
    message_replay = message_operations().replay

    _require(user, PERM_REPLAY_MESSAGE)
    require_in_scope(user=user, legal_entity_id=message.legal_entity_id, what=f"message #{message.pk}")
    reason = _require_reason(reason)
    decision = _decision_record(message=message, action=DecisionAction.REPLAY, user=user, reason=reason)
    ExceptionItem.objects.filter(message=message, state=ExceptionState.OPEN).exclude(
        category=ExceptionCategory.APPROVAL_REQUIRED
    ).update(state=ExceptionState.REPLAYED)
    message_replay(message=message, use_original_mapping=mapping == ReplayMapping.ORIGINAL)
    return decision
