"""Selectors of the workflows app: reads over the run and step rows (KPIs are computed from them, never counted)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.db.models import QuerySet

from governance.choices import Flow
from workflows.choices import STEP_RELEASE_STAFFING, StepStatus
from workflows.models import WorkflowRun, WorkflowStep


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
