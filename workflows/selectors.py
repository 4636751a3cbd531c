"""Selectors of the workflows app: the flows' KPI rows (milestone-to-billing and approved-time-to-ERP latency)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Exists, OuterRef, QuerySet

from governance.choices import Flow
from sync.models import Message
from workflows.choices import STEP_RELEASE_STAFFING, PostingKind, RunStatus, StepStatus
from workflows.models import TimeExpensePosting, WorkflowRun, WorkflowStep

# --- milestone to billing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MilestoneBillingLatency:
    """One billed milestone: from its completion in the PSA to the end of its run (billed and published)."""

    run_id: int
    business_key: str
    amount: Decimal | None
    currency: str
    triggered_at: datetime.datetime
    finished_at: datetime.datetime
    seconds: float


def milestone_billing_latencies(
    *,
    finished_after: datetime.datetime | None = None,
    finished_before: datetime.datetime | None = None,
    legal_entity_id: int | None = None,
) -> list[MilestoneBillingLatency]:
    """Milestone-to-billing latency of each completed run (finished_at - triggered_at), oldest first; rejected
    and still-open runs are not billed, so they have no latency."""
    runs = WorkflowRun.objects.filter(
        flow=Flow.MILESTONE_BILLING, status=RunStatus.COMPLETED, finished_at__isnull=False
    )
    if finished_after is not None:
        runs = runs.filter(finished_at__gte=finished_after)
    if finished_before is not None:
        runs = runs.filter(finished_at__lt=finished_before)
    if legal_entity_id is not None:
        runs = runs.filter(legal_entity_id=legal_entity_id)
    rows = runs.order_by("finished_at", "id").values_list(
        "id", "business_key", "amount", "currency", "triggered_at", "finished_at"
    )
    return [
        MilestoneBillingLatency(pk, key, amount, currency, start, end, (end - start).total_seconds())
        for pk, key, amount, currency, start, end in rows
        if end is not None
    ]


# --- approved time and expense to the ERP ------------------------------------------------------------------


@dataclass(frozen=True)
class TimeToErpLatency:
    """One approved entry version's trip to the ERP: approved in the PSA at `approved_at`, accepted by the ERP at
    `delivered_at` (the message's delivered_at, when its last line was posted)."""

    message_id: int
    entry_id: str
    entity: str
    legal_entity: str
    system: str
    approved_at: datetime.datetime
    delivered_at: datetime.datetime
    latency_seconds: float


def time_to_erp_latencies(
    *,
    delivered_from: datetime.datetime,
    delivered_to: datetime.datetime,
    legal_entity: str | None = None,
    entity: str | None = None,
) -> list[TimeToErpLatency]:
    """Approved-time-to-ERP latency of every entry version delivered in [delivered_from, delivered_to), oldest
    first: delivered_at minus the approval time (the message's source_timestamp, set from the entry's
    approved_at). Only messages that posted a line count: duplicates, withdrawals and entries that were already
    posted are not a trip to the ERP. `legal_entity` is a code."""
    posted_line = TimeExpensePosting.objects.filter(
        message_id=OuterRef("pk"), kind__in=[PostingKind.POST, PostingKind.ADJUSTMENT]
    )
    rows = (
        Message.objects.filter(
            flow=Flow.TIME_EXPENSE_TO_ERP,
            delivered_at__gte=delivered_from,
            delivered_at__lt=delivered_to,
            source_timestamp__isnull=False,
        )
        .filter(Exists(posted_line))
        .select_related("legal_entity", "system")
        .order_by("delivered_at", "id")
    )
    if legal_entity:
        rows = rows.filter(legal_entity__code=legal_entity)
    if entity:
        rows = rows.filter(entity=entity)
    return [
        TimeToErpLatency(
            message_id=row.pk,
            entry_id=row.canonical_id,
            entity=row.entity,
            legal_entity=row.legal_entity.code if row.legal_entity else "",
            system=row.system.slug,
            approved_at=row.source_timestamp,
            delivered_at=row.delivered_at,
            latency_seconds=(row.delivered_at - row.source_timestamp).total_seconds(),
        )
        for row in rows
        if row.source_timestamp is not None and row.delivered_at is not None
    ]


@dataclass(frozen=True)
class ActivationTime:
    """One activated project: from closed-won (the run's triggered_at) to staffing released."""

    run_id: int
    business_key: str
    legal_entity_id: int | None
    triggered_at: datetime.datetime
    activated_at: datetime.datetime

    @property
    def duration(self) -> datetime.timedelta:
        return self.activated_at - self.triggered_at

    @property
    def seconds(self) -> float:
        return self.duration.total_seconds()


def activation_steps(
    *,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    legal_entity_id: int | None = None,
) -> QuerySet[WorkflowStep]:
    """The done release_staffing steps of opportunity-to-project runs finished in [since, until)."""
    steps = WorkflowStep.objects.filter(
        run__flow=Flow.OPPORTUNITY_TO_PROJECT,
        name=STEP_RELEASE_STAFFING,
        status__in=(StepStatus.DONE, StepStatus.COMPENSATED),
        finished_at__isnull=False,
    )
    if since is not None:
        steps = steps.filter(finished_at__gte=since)
    if until is not None:
        steps = steps.filter(finished_at__lt=until)
    if legal_entity_id is not None:
        steps = steps.filter(run__legal_entity_id=legal_entity_id)
    return steps


def activation_times(
    *,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    legal_entity_id: int | None = None,
) -> list[ActivationTime]:
    """Activation time per project whose staffing was released in [since, until): release_staffing's
    finished_at minus the run's triggered_at (closed-won in the CRM), oldest first."""
    rows = (
        activation_steps(since=since, until=until, legal_entity_id=legal_entity_id)
        .order_by("finished_at", "id")
        .values_list("run_id", "run__business_key", "run__legal_entity_id", "run__triggered_at", "finished_at")
    )
    return [
        ActivationTime(
            run_id=run_id,
            business_key=key,
            legal_entity_id=entity_id,
            triggered_at=triggered_at,
            activated_at=finished_at,
        )
        for run_id, key, entity_id, triggered_at, finished_at in rows
        if finished_at is not None
    ]


def workflow_run_list(*, flow: str | None = None, status: str | None = None) -> QuerySet[WorkflowRun]:
    """Runs, newest first, optionally of one flow and status."""
    runs = WorkflowRun.objects.select_related("legal_entity")
    if flow:
        runs = runs.filter(flow=flow)
    if status:
        runs = runs.filter(status=status)
    return runs.order_by("-started_at", "-id")
