"""Reads of reconciliation runs and rows, always within the caller's legal-entity scope."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Q, QuerySet, Sum

from integrationhub.models import ApiKey
from integrationhub.scoping import entity_scope_of
from reconciliation.choices import RunStatus
from reconciliation.models import ReconciliationRow, ReconciliationRun

# The legal-entity ids a caller may see, None for every entity (integrationhub.scoping's answer).
Scope = frozenset[int] | None
EVERY_ENTITY: Scope = None


def scope_of(user: Any, api_key: ApiKey | None = None) -> Scope:
    """The legal entities `user` (through `api_key`, if any) sees runs and rows of: the hub's legal-entity scope."""
    return entity_scope_of(user, api_key)


def in_scope(queryset: QuerySet, scope: Scope) -> QuerySet:
    """The runs or rows of `queryset` whose legal entity is in `scope`."""
    return queryset if scope is None else queryset.filter(legal_entity_id__in=scope)


def scope_covers(scope: Scope, legal_entity_id: int) -> bool:
    return scope is None or legal_entity_id in scope


def run_list(*, scope: Scope, legal_entity_id: int | None = None, period: str = "") -> QuerySet[ReconciliationRun]:
    """Runs in scope, newest first, optionally of one entity and period."""
    runs = in_scope(ReconciliationRun.objects.select_related("legal_entity", "failed_system", "started_by"), scope)
    if legal_entity_id:
        runs = runs.filter(legal_entity_id=legal_entity_id)
    if period:
        runs = runs.filter(period=period)
    return runs.order_by("-created_at", "-id")


def latest_good_runs(*, scope: Scope, legal_entity_id: int | None = None, period: str = "") -> list[ReconciliationRun]:
    """The last succeeded run of each (entity, period) in scope: the result the page shows."""
    found: dict[tuple[int, str], ReconciliationRun] = {}
    runs = run_list(scope=scope, legal_entity_id=legal_entity_id, period=period).filter(status=RunStatus.SUCCEEDED)
    for run in runs.order_by("-finished_at", "-id"):
        found.setdefault((run.legal_entity_id, run.period), run)
    return sorted(found.values(), key=lambda run: (run.period, run.legal_entity.code), reverse=True)


def latest_runs(*, scope: Scope, legal_entity_id: int | None = None, period: str = "") -> list[ReconciliationRun]:
    """The newest run of each (entity, period) in scope, whatever its outcome (a failure shows beside the result)."""
    found: dict[tuple[int, str], ReconciliationRun] = {}
    for run in run_list(scope=scope, legal_entity_id=legal_entity_id, period=period):
        found.setdefault((run.legal_entity_id, run.period), run)
    return list(found.values())


@dataclass(frozen=True)
class RowFilters:
    """The page's and the API's row filters."""

    legal_entity_id: int | None = None
    period: str = ""
    project: str = ""
    person: str = ""
    kind: str = ""
    only_differences: bool = False


def row_list(*, scope: Scope, runs: list[ReconciliationRun], filters: RowFilters) -> QuerySet[ReconciliationRow]:
    """The rows of `runs` in scope matching `filters` (project and person match the id or the name)."""
    rows = in_scope(ReconciliationRow.objects.select_related("run", "legal_entity"), scope).filter(
        run__in=[run.pk for run in runs]
    )
    if filters.legal_entity_id:
        rows = rows.filter(legal_entity_id=filters.legal_entity_id)
    if filters.period:
        rows = rows.filter(period=filters.period)
    if filters.kind:
        rows = rows.filter(kind=filters.kind)
    if filters.project:
        rows = rows.filter(Q(project=filters.project) | Q(project_name__icontains=filters.project))
    if filters.person:
        rows = rows.filter(Q(person=filters.person) | Q(person_name__icontains=filters.person))
    if filters.only_differences:
        rows = rows.exclude(unexplained_amount=0, unexplained_hours=0)
    return rows.order_by("-period", "legal_entity__code", "kind", "project", "person", "id")


def leakage_kpi(*, scope: Scope) -> dict[str, Any]:
    """Leakage on the KPI dashboard: the unexplained amount and the number of differences of the last good run
    of every (entity, period) in scope, per currency, and when the newest of those runs finished."""
    runs = latest_good_runs(scope=scope)
    amounts: dict[str, Decimal] = {}
    count = 0
    for row in (
        ReconciliationRow.objects.filter(run__in=[run.pk for run in runs])
        .exclude(unexplained_amount=0, unexplained_hours=0)
        .values("currency")
        .annotate(total=Sum("unexplained_amount"))
    ):
        # SQLite sums decimals without their places: shown as money either way.
        amounts[row["currency"] or "?"] = Decimal(row["total"] or 0).quantize(Decimal("0.01"))
    count = sum(run.differences for run in runs)
    last: datetime.datetime | None = max((run.finished_at for run in runs if run.finished_at), default=None)
    failed = [run for run in latest_runs(scope=scope) if run.status == RunStatus.FAILED]
    return {
        "differences": count,
        "amounts": [{"currency": currency, "amount": amount} for currency, amount in sorted(amounts.items())],
        "last_run_at": last,
        "runs": len(runs),
        "failed": len(failed),
    }
