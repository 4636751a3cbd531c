"""The trace page's reads: find the work behind any id a person has at hand, and tell its story as a timeline.

`trace_lookup` accepts a correlation id or any external id (a message's idempotency key, a cross-reference's
external id, an exception item's external id, a delivery's id at the target) and returns the correlation ids
it belongs to. `trace_timeline` turns `sync.selectors.message_trace` plus the workflow runs of a correlation
id into entries people read: which stage, where, with which mapping version, status and duration per attempt.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Q

from integrationhub.scoping import EntityScope, records_in_scope
from sync.choices import AttemptOutcome
from sync.models import CrossReference, Message
from sync.selectors import correlation_ids_for_external_id, message_trace

MAX_CORRELATION_IDS = 20


@dataclass(frozen=True)
class TimelineEntry:
    """One line of a trace: when, what, where, how it went."""

    at: datetime.datetime
    stage: str
    label: str
    system: str = ""
    level: str = "info"  # info, ok, warn, error: the colour of the dot
    status_code: int | None = None
    duration_ms: float | None = None
    detail: str = ""
    message_id: int | None = None


def trace_lookup(*, query: str, scope: EntityScope | None = None) -> list[str]:
    """Correlation ids the `query` names: itself when it is one, else the work of the record it identifies;
    with `scope`, only those of work (a message or a workflow run) of the scope's legal entities."""
    from exception_queue.models import ExceptionItem
    from workflows.models import WorkflowRun

    query = query.strip()
    if not query:
        return []
    found: list[str] = []

    def add(values: Any) -> None:
        for value in values:
            if value and value not in found and len(found) < MAX_CORRELATION_IDS:
                found.append(value)

    add(Message.objects.filter(correlation_id=query).values_list("correlation_id", flat=True)[:1])
    add(WorkflowRun.objects.filter(correlation_id=query).values_list("correlation_id", flat=True)[:1])
    add(Message.objects.filter(idempotency_key=query).order_by("-id").values_list("correlation_id", flat=True)[:5])
    items = ExceptionItem.objects.filter(external_id=query).select_related("message", "workflow_run")[:10]
    add(
        item.message.correlation_id if item.message else getattr(item.workflow_run, "correlation_id", "")
        for item in items
    )
    xrefs = list(CrossReference.objects.filter(external_id=query).values_list("entity", "canonical_id")[:5])
    if xrefs:
        condition = Q()
        for entity, canonical_id in xrefs:
            condition |= Q(entity=entity, canonical_id=canonical_id)
        add(Message.objects.filter(condition).order_by("-id").values_list("correlation_id", flat=True)[:50])
    add(correlation_ids_for_external_id(external_id=query))
    # A time or expense line's id in the ERP: the flow posts through its ledger, not through deliveries.
    from workflows.models import TimeExpensePosting

    add(
        TimeExpensePosting.objects.filter(external_id=query, message__isnull=False)
        .order_by("-id")
        .values_list("message__correlation_id", flat=True)[:5]
    )
    if scope is None or scope.all_entities:
        return found
    in_scope = set(
        records_in_scope(Message.objects.filter(correlation_id__in=found), scope=scope).values_list(
            "correlation_id", flat=True
        )
    ) | set(
        records_in_scope(WorkflowRun.objects.filter(correlation_id__in=found), scope=scope).values_list(
            "correlation_id", flat=True
        )
    )
    return [correlation_id for correlation_id in found if correlation_id in in_scope]


ATTEMPT_LABELS: dict[str, tuple[str, str]] = {
    AttemptOutcome.DELIVERED: ("Delivered to {system}", "ok"),
    AttemptOutcome.ALREADY_APPLIED: ("Found at {system} by idempotency key; not sent again", "ok"),
    AttemptOutcome.RETRYABLE_ERROR: ("Attempt to {system} failed; retried", "warn"),
    AttemptOutcome.TERMINAL_ERROR: ("Rejected by {system}", "error"),
}
STEP_LEVELS = {"done": "ok", "failed": "error", "compensated": "warn", "compensation_failed": "error"}
STAGE_LABELS = {
    "received": ("Received from {system}", "info"),
    "mapped": ("Mapped to canonical", "info"),
    "validated": ("Validated", "ok"),
    "held": ("Held for approval", "warn"),
    "queued": ("Queued for delivery", "info"),
    "delivered": ("Delivered to every target", "ok"),
    "failed": ("Failed", "error"),
}


def trace_timeline(*, correlation_id: str, scope: EntityScope | None = None) -> list[TimelineEntry]:
    """Every stage of a correlation id across systems, in time order, with the workflow runs' steps; with
    `scope`, only the rows of its legal entities."""
    from workflows.models import WorkflowStep

    steps = message_trace(correlation_id=correlation_id, scope=scope)
    message_ids = {step.message_id for step in steps if step.message_id}
    messages = {
        message.pk: message for message in Message.objects.select_related("mapping_set").filter(pk__in=message_ids)
    }
    user_ids = {int(step.detail["user_id"]) for step in steps if step.detail.get("user_id") is not None}
    usernames: dict[int, str] = dict(get_user_model().objects.filter(pk__in=user_ids).values_list("pk", "username"))
    entries: list[TimelineEntry] = []
    for step in steps:
        message = messages.get(step.message_id)
        kind, _, sub = step.stage.partition(":")
        if kind == "attempt":
            template, level = ATTEMPT_LABELS.get(sub, ("Attempt at {system}", "info"))
            number = step.detail.get("number")
            entries.append(
                TimelineEntry(
                    at=step.at,
                    stage=step.stage,
                    label=template.format(system=step.system) + (f" (attempt {number})" if number else ""),
                    system=step.system,
                    level=level,
                    status_code=step.detail.get("status_code"),
                    duration_ms=step.detail.get("duration_ms"),
                    detail=step.detail.get("error") or "",
                    message_id=step.message_id,
                )
            )
        elif kind == "exception":
            entries.append(
                TimelineEntry(
                    at=step.at,
                    stage=step.stage,
                    label=f"Exception item #{step.detail.get('item_id')} opened ({sub.replace('_', ' ')}), "
                    f"now {step.detail.get('state')}",
                    system=step.system,
                    level="warn",
                    detail=step.detail.get("reason") or "",
                    message_id=step.message_id,
                )
            )
        elif kind == "decision":
            who = usernames.get(int(step.detail.get("user_id") or 0), "someone")
            entries.append(
                TimelineEntry(
                    at=step.at,
                    stage=step.stage,
                    label=f"{sub.replace('_', ' ').capitalize()} by {who}",
                    level="info",
                    detail=step.detail.get("reason") or "",
                    message_id=step.message_id,
                )
            )
        else:
            template, level = STAGE_LABELS.get(step.stage, (step.stage, "info"))
            detail = ""
            if step.stage == "received":
                detail = str(step.detail.get("event_type") or "")
            elif step.stage == "mapped" and message is not None and message.mapping_set_id:
                detail = f"with {message.mapping_set} (version {message.mapping_version})"
            elif step.stage == "failed" and message is not None:
                detail = message.last_error
            entries.append(
                TimelineEntry(
                    at=step.at,
                    stage=step.stage,
                    label=template.format(system=step.system),
                    system=step.system,
                    level=level,
                    detail=detail,
                    message_id=step.message_id,
                )
            )
    workflow_steps = WorkflowStep.objects.select_related("run").filter(run__correlation_id=correlation_id)
    if scope is not None:
        workflow_steps = records_in_scope(workflow_steps, scope=scope)
    for workflow_step in workflow_steps.order_by("position"):
        at = workflow_step.started_at or workflow_step.finished_at or workflow_step.run.started_at
        level = STEP_LEVELS.get(workflow_step.status, "info")
        entries.append(
            TimelineEntry(
                at=at,
                stage=f"workflow:{workflow_step.status}",
                label=f"Workflow {workflow_step.run.get_flow_display()} step {workflow_step.position} "
                f"{workflow_step.name}: {workflow_step.get_status_display().lower()}",
                level=level,
                duration_ms=(workflow_step.finished_at - workflow_step.started_at).total_seconds() * 1000
                if workflow_step.started_at and workflow_step.finished_at
                else None,
                detail=workflow_step.error,
            )
        )
    entries.extend(_posting_entries(correlation_id=correlation_id, scope=scope))
    return sorted(entries, key=lambda entry: entry.at)


POSTING_LEVELS = {"posted": "ok", "pending": "info", "failed": "error"}


def _posting_entries(*, correlation_id: str, scope: EntityScope | None = None) -> list[TimelineEntry]:
    """The time and expense flow's ledger lines of the correlation id's messages: what went to which ERP."""
    from workflows.models import TimeExpensePosting

    postings = (
        TimeExpensePosting.objects.select_related("target_system")
        .filter(message__correlation_id=correlation_id)
        .order_by("id")
    )
    if scope is not None:
        postings = records_in_scope(postings, scope=scope)
    return [
        TimelineEntry(
            at=posting.posted_at or posting.created_at,
            stage=f"posting:{posting.status}",
            label=f"{posting.get_kind_display().split(' (')[0]} line to {posting.target_system.slug}: "
            f"{posting.get_status_display().lower()}",
            system=posting.target_system.slug,
            level=POSTING_LEVELS.get(posting.status, "info"),
            detail=posting.last_error or (f"line {posting.external_id} in the ERP" if posting.external_id else ""),
            message_id=posting.message_id,
        )
        for posting in postings
    ]


def item_detail_trace(detail: Any) -> None:
    """An exception item's page: the timeline of its message's (or its workflow run's) correlation id."""
    message, run = detail.item.message, detail.item.workflow_run
    correlation_id = message.correlation_id if message else (run.correlation_id if run else "")
    if correlation_id:
        detail.trace = trace_timeline(correlation_id=correlation_id, scope=getattr(detail, "scope", None))
