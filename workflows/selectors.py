"""Selectors of the workflows app."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal

from governance.choices import Flow
from workflows.choices import RunStatus
from workflows.models import WorkflowRun

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
