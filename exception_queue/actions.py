"""Registry of what a person can do with an open exception item, per category.

The queue's pages and API list `item_actions_available(item=, user=)` and run `item_action_perform(...)`;
they never know which app implements an action. The engine's own actions (approve, reject, replay, fix and
replay) are registered here; the workflows register theirs (retry a held step, compensate, cancel, link a
duplicate, create it as new, override failed rules) from their own modules with `register_item_action`.
Every handler takes keyword arguments `item`, `user`, `reason` plus the action's declared `inputs`, checks
the permission itself, records a Decision through `services.decision_record`, and returns the item.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from integrationhub.errors import HubConflictError, HubValidationError
from integrationhub.scoping import require_in_scope

ANY_CATEGORY = "*"
ActionHandler = Callable[..., ExceptionItem]


@dataclass(frozen=True)
class ItemAction:
    """One action offered on open items of a category."""

    action: str
    label: str
    permission: str
    handler: ActionHandler
    category: str = ANY_CATEGORY
    excluded_categories: tuple[str, ...] = ()
    inputs: tuple[str, ...] = field(default_factory=tuple)
    help_text: str = ""
    dangerous: bool = False
    # Set: the action applies only to items of that flow's workflow runs, and wins over the same action
    # registered for every flow (a workflow's approve resumes its run instead of releasing a message).
    flow: str = ""
    # With `flow`: only items that hold one of that flow's workflow runs (False: any item of the flow, for
    # flows whose items hold a message instead, like approved time and expense).
    needs_run: bool = True
    # Set: only items that hold a message (a workflow run's item without one cannot be replayed).
    needs_message: bool = False
    # Set: the values a person picks an input from, per input, read for the item at hand ((value, label) pairs; an
    # input without a list, or an empty one, is typed). The page offers them as suggestions, the API lists them.
    input_choices: Callable[[ExceptionItem], dict[str, list[tuple[str, str]]]] | None = None

    def choices_for(self, item: ExceptionItem) -> dict[str, list[tuple[str, str]]]:
        """The input choices of this action on `item` (none when it declares no list)."""
        return self.input_choices(item) if self.input_choices is not None else {}

    def applies_to(self, item: ExceptionItem) -> bool:
        if item.category in self.excluded_categories:
            return False
        if self.needs_message and item.pk is not None and item.message_id is None:
            return False
        if self.flow and (self.flow != item.flow or (self.needs_run and item.workflow_run_id is None)):
            return False
        return self.category in (ANY_CATEGORY, item.category)


_ACTIONS: list[ItemAction] = []


def register_item_action(item_action: ItemAction) -> ItemAction:
    """Offer `item_action`; a second registration of the same (category, action, flow) replaces the first."""
    _ACTIONS[:] = [
        existing
        for existing in _ACTIONS
        if (existing.category, existing.action, existing.flow)
        != (item_action.category, item_action.action, item_action.flow)
    ]
    _ACTIONS.append(item_action)
    return item_action


def item_actions_for_category(category: str, item: ExceptionItem | None = None) -> list[ItemAction]:
    """Actions that apply to items of `category`: a workflow flow's own first (when `item` belongs to a run of
    that flow), then the category's own, then generic ones; a more specific action overrides a same-named one."""
    probe = item if item is not None else ExceptionItem(category=category)
    chosen: list[ItemAction] = []
    names: set[str] = set()
    tiers = (
        [a for a in _ACTIONS if a.flow and a.applies_to(probe)],
        [a for a in _ACTIONS if not a.flow and a.category == category],
        [a for a in _ACTIONS if not a.flow and a.category == ANY_CATEGORY and a.applies_to(probe)],
    )
    for tier in tiers:
        fresh = [a for a in tier if a.action not in names]
        chosen += fresh
        names |= {a.action for a in fresh}
    return chosen


def item_actions_available(*, item: ExceptionItem, user: Any) -> list[ItemAction]:
    """What `user` may do with `item` now: nothing once the item is closed, nothing without the permission."""
    if item.state != ExceptionState.OPEN or user is None:
        return []
    return [a for a in item_actions_for_category(item.category, item) if user.has_perm(a.permission)]


def item_action_perform(*, item: ExceptionItem, action: str, user: Any, reason: str, **inputs: Any) -> ExceptionItem:
    """Run `action` on `item` as `user`; a clear error when the action does not apply to the item, and 404 when
    the item belongs to a legal entity outside the user's scope (every page, API call and bulk action ends here)."""
    require_in_scope(user=user, legal_entity_id=item.legal_entity_id, what=f"exception item #{item.pk}")
    for candidate in item_actions_for_category(item.category, item):
        if candidate.action == action:
            unknown = set(inputs) - set(candidate.inputs)
            if unknown:
                raise HubValidationError(
                    f"The action {action!r} takes no input {', '.join(sorted(unknown))}.",
                    errors=[{"field": name, "message": "Unknown input."} for name in sorted(unknown)],
                )
            return candidate.handler(item=item, user=user, reason=reason, **inputs)
    offered = ", ".join(a.action for a in item_actions_for_category(item.category, item)) or "none"
    raise HubConflictError(
        f"{action!r} is not an action on {item.get_category_display().lower()} items.",
        hint=f"Actions on this item: {offered}.",
    )


def _register_engine_actions() -> None:
    from exception_queue import services

    register_item_action(
        ItemAction(
            action=DecisionAction.APPROVE,
            label="Approve",
            permission=services.PERM_DECIDE,
            handler=services.exception_item_approve,
            category=ExceptionCategory.APPROVAL_REQUIRED,
            help_text="Release the held message. Above the second threshold a second, different approver is needed.",
        )
    )
    register_item_action(
        ItemAction(
            action=DecisionAction.REJECT,
            label="Reject",
            permission=services.PERM_DECIDE,
            handler=services.exception_item_reject,
            help_text="Stop the message for good, with a reason.",
            dangerous=True,
        )
    )
    register_item_action(
        ItemAction(
            action=DecisionAction.REPLAY,
            label="Replay",
            permission=services.PERM_FIX,
            handler=services.exception_item_replay,
            needs_message=True,
            # A record gone at the target is re-created or skipped: replayed as it is, it is gone again.
            excluded_categories=(
                ExceptionCategory.APPROVAL_REQUIRED,
                ExceptionCategory.ACTIVATION_HELD,
                ExceptionCategory.TARGET_RECORD_GONE,
            ),
            inputs=("mapping",),
            help_text="Run the message through the pipeline again (after a mapping or target fix).",
        )
    )
    register_item_action(
        ItemAction(
            action=DecisionAction.FIX_AND_REPLAY,
            label="Edit the payload and replay",
            permission=services.PERM_FIX,
            handler=services.exception_item_fix_and_replay,
            needs_message=True,
            excluded_categories=(ExceptionCategory.APPROVAL_REQUIRED, ExceptionCategory.ACTIVATION_HELD),
            inputs=("payload",),
            help_text="Correct the payload; the diff is recorded with the decision.",
        )
    )


_register_engine_actions()
