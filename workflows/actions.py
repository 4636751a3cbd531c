"""What a person can do with the workflows' exception items, registered in the exception queue's action registry.

Held activations (activation_held): retry the step, compensate, cancel; finance approvers and integration
admins decide them (exception_queue.decide_exceptionitem). Duplicate suspects (duplicate_suspect): link to the
existing client, create a new one, reject; analysts work them (exception_queue.fix_exceptionitem). Every action
records a Decision (and so an audit event) before it changes anything.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from exception_queue.actions import ItemAction, register_item_action
from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from exception_queue.services import (
    PERM_DECIDE,
    PERM_FIX,
    decision_record,
    locked_open_item,
    require_permission,
    require_reason,
)
from governance.choices import Flow
from integrationhub.dispatch import enqueue_on_commit
from integrationhub.errors import HubConflictError, HubValidationError
from workflows.choices import RunStatus
from workflows.models import ClientDirectoryEntry, WorkflowRun
from workflows.services import workflow_run_finish, workflow_run_resume


def _held_run(item: ExceptionItem, flow: str) -> WorkflowRun:
    run = item.workflow_run
    if run is None or run.flow != flow:
        raise HubConflictError(f"Exception item #{item.pk} holds no {flow.replace('_', ' ')} run.")
    run = WorkflowRun.objects.select_for_update().get(pk=run.pk)
    if run.status != RunStatus.HELD:
        raise HubConflictError(
            f"The run {run.business_key} is {run.status}, not held.", hint="Reload the queue; someone acted on it."
        )
    return run


def _close(item: ExceptionItem, state: str) -> None:
    item.state = state
    item.save(update_fields=["state", "updated_at"])


# --- held activations ----------------------------------------------------------------------------------


@transaction.atomic
def activation_retry_step(*, item: ExceptionItem, user: Any, reason: str) -> ExceptionItem:
    """Resume the held run from the step that failed (after the cause was fixed)."""
    from workflows.tasks import opportunity_to_project_run_task

    require_permission(user, PERM_DECIDE)
    reason = require_reason(reason)
    item = locked_open_item(item)
    run = _held_run(item, Flow.OPPORTUNITY_TO_PROJECT)
    decision_record(item=item, message=item.message, action=DecisionAction.RETRY_STEP, user=user, reason=reason)
    _close(item, ExceptionState.RESOLVED)
    workflow_run_resume(run=run)
    enqueue_on_commit(opportunity_to_project_run_task, run.pk, queue="delivery")
    return item


@transaction.atomic
def activation_compensate(*, item: ExceptionItem, user: Any, reason: str) -> ExceptionItem:
    """Undo the run's completed steps in reverse (archive the PSA project, delete the workspace, close the ERP
    project), then close the run as compensated."""
    from workflows.tasks import opportunity_to_project_compensate_task

    require_permission(user, PERM_DECIDE)
    reason = require_reason(reason)
    item = locked_open_item(item)
    run = _held_run(item, Flow.OPPORTUNITY_TO_PROJECT)
    decision_record(item=item, message=item.message, action=DecisionAction.COMPENSATE, user=user, reason=reason)
    _close(item, ExceptionState.RESOLVED)
    run.status = RunStatus.COMPENSATING
    run.save(update_fields=["status", "updated_at"])
    enqueue_on_commit(opportunity_to_project_compensate_task, run.pk, queue="delivery")
    return item


@transaction.atomic
def activation_cancel(*, item: ExceptionItem, user: Any, reason: str) -> ExceptionItem:
    """Stop the run for good, leaving what was created as it is."""
    require_permission(user, PERM_DECIDE)
    reason = require_reason(reason)
    item = locked_open_item(item)
    run = _held_run(item, Flow.OPPORTUNITY_TO_PROJECT)
    decision_record(item=item, message=item.message, action=DecisionAction.CANCEL, user=user, reason=reason)
    _close(item, ExceptionState.CANCELLED)
    workflow_run_finish(run=run, status=RunStatus.CANCELLED)
    return item


# --- duplicate suspects --------------------------------------------------------------------------------


def _suspect_entry(item: ExceptionItem) -> ClientDirectoryEntry:
    entry = ClientDirectoryEntry.objects.select_for_update().filter(source_key=f"hub:{item.external_id}").first()
    if entry is None:
        raise HubConflictError(f"The client {item.external_id} of item #{item.pk} is not in the client directory.")
    return entry


def _resume_client(run: WorkflowRun) -> None:
    from workflows.tasks import client_master_run_task

    workflow_run_resume(run=run)
    enqueue_on_commit(client_master_run_task, run.pk, queue="delivery")


@transaction.atomic
def duplicate_link_existing(*, item: ExceptionItem, user: Any, reason: str, candidate: str = "") -> ExceptionItem:
    """Link the account to the chosen existing client: later updates of the account go to that client's ERP and
    PSA records, and sagas waiting on the account resume."""
    from connectors.models import ConnectedSystem
    from workflows.client_master import CLIENT_ENTITY, xref_set

    require_permission(user, PERM_FIX)
    reason = require_reason(reason)
    item = locked_open_item(item)
    offered = {str(rule.get("candidate")): rule for rule in item.failed_rules or [] if rule.get("candidate")}
    if candidate not in offered:
        raise HubValidationError(
            f"Choose one of the candidates of item #{item.pk}: {', '.join(offered) or 'none'}.",
            errors=[{"field": "candidate", "message": "Not a candidate of this item."}],
        )
    run = _held_run(item, Flow.CLIENT_MASTER)
    chosen = offered[candidate]
    entry = _suspect_entry(item)
    if chosen.get("canonical_id"):
        entry.linked_to = str(chosen["canonical_id"])
        entry.save(update_fields=["linked_to", "updated_at"])
        linked = f"client {chosen['canonical_id']}"
    else:
        # A record only the ERP or PSA knows: it becomes this client's record in that system.
        system = ConnectedSystem.objects.get(slug=chosen["system"])
        xref_set(
            system=system, entity=CLIENT_ENTITY, canonical_id=entry.canonical_id, external_id=str(chosen["external_id"])
        )
        ClientDirectoryEntry.objects.filter(source_key=chosen["candidate"]).update(canonical_id=entry.canonical_id)
        entry.duplicate_cleared = True
        entry.save(update_fields=["duplicate_cleared", "updated_at"])
        linked = f"{chosen['system']} client {chosen['external_id']}"
    decision_record(
        item=item,
        message=item.message,
        action=DecisionAction.LINK_EXISTING,
        user=user,
        reason=reason,
        payload_diff=[{"path": "linked_to", "before": None, "after": linked, "change": "added"}],
    )
    _close(item, ExceptionState.RESOLVED)
    _resume_client(run)
    return item


@transaction.atomic
def duplicate_create_new(*, item: ExceptionItem, user: Any, reason: str) -> ExceptionItem:
    """The account is a new client after all: create it in the ERP and the PSA; it is not checked again."""
    require_permission(user, PERM_FIX)
    reason = require_reason(reason)
    item = locked_open_item(item)
    run = _held_run(item, Flow.CLIENT_MASTER)
    entry = _suspect_entry(item)
    entry.duplicate_cleared = True
    entry.save(update_fields=["duplicate_cleared", "updated_at"])
    decision_record(item=item, message=item.message, action=DecisionAction.CREATE_NEW, user=user, reason=reason)
    _close(item, ExceptionState.RESOLVED)
    _resume_client(run)
    return item


@transaction.atomic
def duplicate_reject(*, item: ExceptionItem, user: Any, reason: str) -> ExceptionItem:
    """Reject the account: nothing is created; sagas waiting on it are held for finance."""
    from workflows.opportunity_to_project import opportunity_runs_hold_for_rejected_client

    require_permission(user, PERM_FIX)
    reason = require_reason(reason)
    item = locked_open_item(item)
    run = _held_run(item, Flow.CLIENT_MASTER)
    decision_record(item=item, message=item.message, action=DecisionAction.REJECT, user=user, reason=reason)
    _close(item, ExceptionState.REJECTED)
    workflow_run_finish(run=run, status=RunStatus.REJECTED)
    opportunity_runs_hold_for_rejected_client(canonical_id=item.external_id, reason=reason)
    return item


def _register() -> None:
    held = ExceptionCategory.ACTIVATION_HELD
    register_item_action(
        ItemAction(
            action=DecisionAction.RETRY_STEP,
            label="Retry the step",
            permission=PERM_DECIDE,
            handler=activation_retry_step,
            category=held,
            help_text="Resume the activation from the step that failed, once its cause is fixed.",
        )
    )
    register_item_action(
        ItemAction(
            action=DecisionAction.COMPENSATE,
            label="Compensate",
            permission=PERM_DECIDE,
            handler=activation_compensate,
            category=held,
            help_text="Undo the completed steps in reverse: archive the PSA project, delete the workspace, close "
            "the ERP project.",
            dangerous=True,
        )
    )
    register_item_action(
        ItemAction(
            action=DecisionAction.CANCEL,
            label="Cancel the activation",
            permission=PERM_DECIDE,
            handler=activation_cancel,
            category=held,
            help_text="Stop the run; records already created stay as they are.",
            dangerous=True,
        )
    )
    # Rejecting a held activation is cancelling it (the engine's reject would leave the run held).
    register_item_action(
        ItemAction(
            action=DecisionAction.REJECT,
            label="Reject (cancel the activation)",
            permission=PERM_DECIDE,
            handler=activation_cancel,
            category=held,
            help_text="Stop the run; records already created stay as they are.",
            dangerous=True,
        )
    )
    suspect = ExceptionCategory.DUPLICATE_SUSPECT
    register_item_action(
        ItemAction(
            action=DecisionAction.LINK_EXISTING,
            label="Link to the existing client",
            permission=PERM_FIX,
            handler=duplicate_link_existing,
            category=suspect,
            inputs=("candidate",),
            help_text="Choose the candidate; the account's updates then go to that client's ERP and PSA records.",
        )
    )
    register_item_action(
        ItemAction(
            action=DecisionAction.CREATE_NEW,
            label="Create a new client",
            permission=PERM_FIX,
            handler=duplicate_create_new,
            category=suspect,
            help_text="Not a duplicate: create the client in the ERP and the PSA.",
        )
    )
    register_item_action(
        ItemAction(
            action=DecisionAction.REJECT,
            label="Reject",
            permission=PERM_FIX,
            handler=duplicate_reject,
            category=suspect,
            help_text="Create nothing; activations waiting on this client are held.",
            dangerous=True,
        )
    )


_register()
