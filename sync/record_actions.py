"""What a person can do with a record the target no longer has: re-create it there, or skip the update.

The hub never re-creates a record by itself: a record deleted at the target may have been deleted on
purpose. These two actions are offered on items of the "record gone at the target" category.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from exception_queue.actions import ItemAction, register_item_action
from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from exception_queue.ports import (
    item_detail_provider_register,
    item_entity_resolver_register,
    message_operations_register,
)
from exception_queue.services import (
    PERM_DECIDE,
    PERM_FIX,
    decision_record,
    locked_open_item,
    require_permission,
    require_reason,
)
from integrationhub.errors import HubConflictError
from sync.models import CrossReference, Delivery


@transaction.atomic
def exception_item_recreate(*, item: ExceptionItem, user: Any, reason: str) -> ExceptionItem:
    """Forget the id the target no longer has and deliver the message again: the record is created anew and
    the cross-reference points at the new one."""
    from sync.services import message_replay

    require_permission(user, PERM_FIX)
    reason = require_reason(reason)
    item = locked_open_item(item)
    message = item.message
    if message is None or item.system_id is None:
        raise HubConflictError(f"Exception item #{item.pk} names no message and target to re-create the record at.")
    CrossReference.objects.filter(
        system_id=item.system_id, entity=message.entity, canonical_id=message.canonical_id
    ).delete()
    decision_record(item=item, message=message, action=DecisionAction.RECREATE, user=user, reason=reason)
    item.state = ExceptionState.REPLAYED
    item.save(update_fields=["state", "updated_at"])
    message_replay(message=message, use_original_mapping=True)
    return item


@transaction.atomic
def exception_item_skip(*, item: ExceptionItem, user: Any, reason: str) -> ExceptionItem:
    """Leave the target as it is (the record was deleted there on purpose): the update is not sent again."""
    require_permission(user, PERM_DECIDE)
    reason = require_reason(reason)
    item = locked_open_item(item)
    decision_record(item=item, message=item.message, action=DecisionAction.SKIP, user=user, reason=reason)
    item.state = ExceptionState.RESOLVED
    item.save(update_fields=["state", "updated_at"])
    return item


def record_actions_register() -> None:
    """Offer re-create and skip on items of records gone at their target (called from SyncConfig.ready)."""
    register_item_action(
        ItemAction(
            action=DecisionAction.RECREATE,
            label="Re-create at the target",
            permission=PERM_FIX,
            handler=exception_item_recreate,
            category=ExceptionCategory.TARGET_RECORD_GONE,
            needs_message=True,
            help_text="Create the record again at the target and link the hub to the new one.",
        )
    )
    register_item_action(
        ItemAction(
            action=DecisionAction.SKIP,
            label="Skip",
            permission=PERM_DECIDE,
            handler=exception_item_skip,
            category=ExceptionCategory.TARGET_RECORD_GONE,
            help_text="The record was deleted at the target on purpose: leave it gone and close this item.",
        )
    )


def item_detail_deliveries(detail: Any) -> None:
    """An item's page: the deliveries of its message and the record's id in every system."""
    message = detail.item.message
    if message is None:
        return
    detail.deliveries = list(Delivery.objects.select_related("target_system").filter(message=message).order_by("id"))
    if message.canonical_id:
        detail.cross_references = list(
            CrossReference.objects.select_related("system")
            .filter(entity=message.entity, canonical_id=message.canonical_id)
            .order_by("system__name")
        )


def exception_queue_ports_register() -> None:
    """Give the exception queue the engine's message operations and its part of an item's page."""
    from sync.entity import exception_items_entity_fill
    from sync.services import message_reject, message_release, message_replay

    message_operations_register(replay=message_replay, release=message_release, reject=message_reject)
    item_detail_provider_register("sync.deliveries", item_detail_deliveries)
    item_entity_resolver_register(exception_items_entity_fill)
