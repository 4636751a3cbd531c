"""Bulk decisions from the queue page: one registered action on many selected items, each recorded on its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import PermissionDenied

from exception_queue.actions import item_action_perform
from exception_queue.models import ExceptionItem
from exception_queue.selectors import exception_item_actions_for
from exception_queue.services import require_reason
from integrationhub.errors import HubError

BULK_ACTIONS = ("replay", "reject")


@dataclass
class BulkOutcome:
    """What a bulk decision did: the items it acted on and, per skipped item, why."""

    done: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)


def exception_items_bulk_perform(*, item_ids: list[int], action: str, user: Any, reason: str) -> BulkOutcome:
    """Run `action` (replay or reject) on each item `user` may take it on, each in its own transaction with its
    own Decision; an item that is closed meanwhile or does not offer the action is skipped with the reason."""
    if action not in BULK_ACTIONS:
        raise HubError(f"{action!r} cannot be done in bulk; pick replay or reject.")
    reason = require_reason(reason)
    outcome = BulkOutcome()
    for item in ExceptionItem.objects.select_related("message").filter(pk__in=item_ids).order_by("id"):
        if action not in {a.action for a in exception_item_actions_for(item=item, user=user)}:
            outcome.skipped[item.pk] = f"{action} is not offered on this item to you"
            continue
        try:
            item_action_perform(item=item, action=action, user=user, reason=reason)
        except (HubError, PermissionDenied) as error:
            outcome.skipped[item.pk] = getattr(error, "detail", None) or str(error)
            continue
        outcome.done.append(item.pk)
    return outcome
