"""KPI selectors: every figure of the leaders' dashboard, the KPI API and /metrics, read from the engine's rows.

Each figure is one bounded aggregate query over messages, delivery attempts, workflow runs and steps, or
exception items (never a stored counter that could drift). Percentiles are computed by the database with
`percentile_cont` on PostgreSQL. SQLite has no percentile function: there the selector fetches the one duration
column (at most SQLITE_PERCENTILE_ROWS rows, the most recent ones, see docs/leader.md) and interpolates in
Python exactly as `percentile_cont` does, so both databases give the same figures on the same rows.
"""

from __future__ import annotations

import datetime
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Aggregate, Case, Count, F, FloatField, Func, Min, Q, QuerySet, Value, When
from django.db.models.functions import TruncDay, TruncHour, TruncWeek
from django.utils import timezone

from connectors.choices import SystemRole
from connectors.models import ConnectedSystem
from exception_queue.choices import ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from governance.choices import Flow
from insights.choices import BatchStatus, KpiBucket, KpiRange
from insights.formatting import percent
from insights.models import BatchProgress
from integrationhub.scoping import EntityScope, records_in_scope
from sync.choices import AttemptOutcome, MessageStatus
from sync.models import DeliveryAttempt, Message
from workflows.choices import RunStatus
from workflows.models import WorkflowRun, WorkflowStep

ACTIVATION_STEP = "release_staffing"
# Every count is COUNT(*), never COUNT(id): with only indexed columns in a query PostgreSQL answers it from the
# index alone (an index-only scan), instead of fetching a heap page per row.
# Messages still on their way through the pipeline (not held, not final): the backlog.
WAITING_STATUSES = (MessageStatus.RECEIVED, MessageStatus.MAPPED, MessageStatus.VALIDATED, MessageStatus.QUEUED)
SUCCESS_OUTCOMES = (AttemptOutcome.DELIVERED, AttemptOutcome.ALREADY_APPLIED)
# SQLite only: the most rows a percentile reads into Python (the most recent ones in the range).
SQLITE_PERCENTILE_ROWS = 200_000
RANGE_LENGTH = {
    KpiRange.LAST_24H: datetime.timedelta(hours=24),
    KpiRange.LAST_7D: datetime.timedelta(days=7),
    KpiRange.LAST_30D: datetime.timedelta(days=30),
    KpiRange.LAST_90D: datetime.timedelta(days=90),
}
MAX_CUSTOM_RANGE = datetime.timedelta(days=366)
TRUNC = {KpiBucket.HOUR: TruncHour, KpiBucket.DAY: TruncDay, KpiBucket.WEEK: TruncWeek}
BUCKET_STEP = {
    KpiBucket.HOUR: datetime.timedelta(hours=1),
    KpiBucket.DAY: datetime.timedelta(days=1),
    KpiBucket.WEEK: datetime.timedelta(days=7),
}


@dataclass(frozen=True)
class KpiWindow:
    """The time range of a KPI read: [start, end), with the bucket its series use."""

    key: str
    start: datetime.datetime
    end: datetime.datetime
    bucket: str

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600


class KpiRangeError(ValueError):
    """A custom range that cannot be read (missing bound, start after end, longer than a year)."""


def kpi_window_resolve(
    *,
    key: str = KpiRange.LAST_7D,
    start: datetime.datetime | None = None,
    end: datetime.datetime | None = None,
    now: datetime.datetime | None = None,
) -> KpiWindow:
    """The window of a range key (24h, 7d, 30d, 90d) ending now, or of a custom [start, end)."""
    now = now or timezone.now()
    if key == KpiRange.CUSTOM:
        if start is None or end is None:
            raise KpiRangeError("A custom range needs both a start and an end.")
        if start >= end:
            raise KpiRangeError("The start of the range must be before its end.")
        if end - start > MAX_CUSTOM_RANGE:
            raise KpiRangeError("A custom range spans at most 366 days.")
    elif key in RANGE_LENGTH:
        end = now
        start = now - RANGE_LENGTH[KpiRange(key)]
    else:
        raise KpiRangeError(f"Unknown range {key!r}; choose one of {', '.join(KpiRange.values)}.")
    span = end - start
    bucket = KpiBucket.HOUR if span <= datetime.timedelta(days=2) else KpiBucket.DAY
    if span > datetime.timedelta(days=120):
        bucket = KpiBucket.WEEK
    return KpiWindow(key=key, start=start, end=end, bucket=bucket)


# --- percentiles ----------------------------------------------------------------------------------------


class PercentileCont(Aggregate):
    """PostgreSQL's continuous percentile: percentile_cont(f) WITHIN GROUP (ORDER BY expression)."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: Any, *, fraction: float, **extra: Any) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError("fraction must be between 0 and 1")
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


class EpochSeconds(Func):
    """Seconds of a PostgreSQL interval (end - start)."""

    template = "EXTRACT(EPOCH FROM %(expressions)s)"
    output_field = FloatField()


def percentile(values: list[float], fraction: float) -> float | None:
    """Linear interpolation between the closest ranks: the same figure as SQL's percentile_cont."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower = math.floor(position)
    upper = math.ceil(position)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def _is_postgres() -> bool:
    return connection.vendor == "postgresql"


def _duration_percentiles(
    rows: QuerySet, *, start_field: str, end_field: str, fractions: dict[str, float]
) -> dict[str, Any]:
    """{count, <name>: seconds at each fraction} of end_field - start_field over `rows`; one query."""
    if _is_postgres():
        seconds = EpochSeconds(F(end_field) - F(start_field))
        figures = rows.aggregate(
            count=Count("*"), **{name: PercentileCont(seconds, fraction=f) for name, f in fractions.items()}
        )
        return {"count": figures["count"], **{name: _round(figures[name]) for name in fractions}}
    pairs = rows.order_by(f"-{end_field}").values_list(end_field, start_field)[:SQLITE_PERCENTILE_ROWS]
    values = [(end - start).total_seconds() for end, start in pairs]
    return {"count": len(values), **{name: _round(percentile(values, f)) for name, f in fractions.items()}}


def _duration_trend(
    rows: QuerySet, *, start_field: str, end_field: str, window: KpiWindow, fraction: float = 0.5
) -> list[dict[str, Any]]:
    """[{bucket, count, median_seconds}] per bucket of end_field over the window, every bucket listed; one query."""
    trunc = TRUNC[KpiBucket(window.bucket)]
    found: dict[datetime.datetime, dict[str, Any]] = {}
    if _is_postgres():
        seconds = EpochSeconds(F(end_field) - F(start_field))
        grouped = (
            rows.annotate(bucket=trunc(end_field))
            .values("bucket")
            .annotate(n=Count("*"), value=PercentileCont(seconds, fraction=fraction))
            .order_by("bucket")
        )
        for row in grouped:
            found[row["bucket"]] = {"count": row["n"], "median_seconds": _round(row["value"])}
    else:
        per_bucket: dict[datetime.datetime, list[float]] = defaultdict(list)
        pairs = rows.annotate(bucket=trunc(end_field)).order_by(f"-{end_field}")
        for bucket, end, start in pairs.values_list("bucket", end_field, start_field)[:SQLITE_PERCENTILE_ROWS]:
            per_bucket[bucket].append((end - start).total_seconds())
        for bucket, values in per_bucket.items():
            found[bucket] = {"count": len(values), "median_seconds": _round(percentile(values, fraction))}
    return [
        {"bucket": bucket, **found.get(bucket, {"count": 0, "median_seconds": None})}
        for bucket in bucket_starts(window=window)
    ]


def bucket_starts(*, window: KpiWindow) -> list[datetime.datetime]:
    """The start of every bucket that overlaps the window, in UTC, oldest first."""
    step = BUCKET_STEP[KpiBucket(window.bucket)]
    start = window.start.astimezone(datetime.UTC)
    if window.bucket == KpiBucket.HOUR:
        first = start.replace(minute=0, second=0, microsecond=0)
    else:
        first = start.replace(hour=0, minute=0, second=0, microsecond=0)
        if window.bucket == KpiBucket.WEEK:
            first -= datetime.timedelta(days=first.weekday())
    buckets = []
    current = first
    while current < window.end:
        buckets.append(current)
        current += step
    return buckets


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def _rate(part: int, whole: int) -> float | None:
    return None if not whole else round(part / whole, 6)


# --- the figures ----------------------------------------------------------------------------------------


def _in_scope(queryset: QuerySet, scope: EntityScope | None) -> QuerySet:
    """The rows of `queryset` a scoped reader's figures count (every row without a scope: /metrics, tests)."""
    return queryset if scope is None else records_in_scope(queryset, scope=scope)


def _scope_key(scope: EntityScope | None) -> str:
    if scope is None or scope.all_entities:
        return "all"
    return "-".join(str(pk) for pk in sorted(scope.entity_ids)) or "none"


def project_activation_kpi(*, window: KpiWindow, scope: EntityScope | None = None) -> dict[str, Any]:
    """Opportunity to project: closed-won (the run's triggered_at) to staffing released (the release_staffing
    step's finished_at), for activations finished in the window: count, median, p90 and the median per bucket."""
    steps = _in_scope(WorkflowStep.objects.all(), scope).filter(
        name=ACTIVATION_STEP,
        finished_at__gte=window.start,
        finished_at__lt=window.end,
        run__flow=Flow.OPPORTUNITY_TO_PROJECT,
    )
    figures = _duration_percentiles(
        steps, start_field="run__triggered_at", end_field="finished_at", fractions={"median": 0.5, "p90": 0.9}
    )
    return {
        "count": figures["count"],
        "median_seconds": figures["median"],
        "p90_seconds": figures["p90"],
        "trend": _duration_trend(steps, start_field="run__triggered_at", end_field="finished_at", window=window),
    }


def time_to_erp_latency_kpi(*, window: KpiWindow, scope: EntityScope | None = None) -> dict[str, Any]:
    """Approved time and expense to ERP: approval (the message's source_timestamp) to delivery, for messages
    delivered in the window: count, p50 and p95 in seconds."""
    rows = _in_scope(Message.objects.all(), scope).filter(
        flow=Flow.TIME_EXPENSE_TO_ERP,
        delivered_at__gte=window.start,
        delivered_at__lt=window.end,
        source_timestamp__isnull=False,
    )
    figures = _duration_percentiles(
        rows, start_field="source_timestamp", end_field="delivered_at", fractions={"p50": 0.5, "p95": 0.95}
    )
    return {"count": figures["count"], "p50_seconds": figures["p50"], "p95_seconds": figures["p95"]}


def milestone_billing_latency_kpi(*, window: KpiWindow, scope: EntityScope | None = None) -> dict[str, Any]:
    """Milestone to billing: milestone completion (the run's triggered_at) to the billing event created (the
    completed run's finished_at), for runs finished in the window: count, median and p90 in seconds."""
    runs = _in_scope(WorkflowRun.objects.all(), scope).filter(
        flow=Flow.MILESTONE_BILLING,
        status=RunStatus.COMPLETED,
        finished_at__gte=window.start,
        finished_at__lt=window.end,
    )
    figures = _duration_percentiles(
        runs, start_field="triggered_at", end_field="finished_at", fractions={"median": 0.5, "p90": 0.9}
    )
    return {"count": figures["count"], "median_seconds": figures["median"], "p90_seconds": figures["p90"]}


def exception_rate_kpi(*, window: KpiWindow, scope: EntityScope | None = None) -> dict[str, Any]:
    """Exception items opened in the window against the work received in it: overall, per category and per flow
    (through the `flow` column items, messages and runs carry). Three grouped queries.

    The work of a flow is its messages received in the window plus its workflow runs started in it that no
    message started (a milestone, a person's request): milestone billing and client master hold items against
    runs, and a run started by a message is already counted as that message. `messages` stays the count of
    messages; `runs` and `units` (messages + runs) say what the rates are taken against."""
    flows = [*Flow.values, ""]
    messages_by_flow = dict(
        _in_scope(Message.objects.all(), scope)
        .filter(flow__in=flows, received_at__gte=window.start, received_at__lt=window.end)
        .values_list("flow")
        .annotate(n=Count("*"))
        .values_list("flow", "n")
        .order_by()
    )
    runs_by_flow = dict(
        _in_scope(WorkflowRun.objects.all(), scope)
        .filter(flow__in=Flow.values, message__isnull=True, started_at__gte=window.start, started_at__lt=window.end)
        .values_list("flow")
        .annotate(n=Count("*"))
        .values_list("flow", "n")
        .order_by()
    )
    item_rows = (
        _in_scope(ExceptionItem.objects.all(), scope)
        .filter(created_at__gte=window.start, created_at__lt=window.end)
        .values_list("flow", "category")
        .annotate(n=Count("*"))
        .values_list("flow", "category", "n")
        .order_by()
    )
    items_by_flow: dict[str, int] = defaultdict(int)
    items_by_category: dict[str, int] = defaultdict(int)
    for flow, category, count in item_rows:
        items_by_flow[flow] += count
        items_by_category[category] += count
    messages = sum(messages_by_flow.values())
    runs = sum(runs_by_flow.values())
    units = messages + runs
    items = sum(items_by_category.values())
    by_flow = []
    for value, label in Flow.choices:
        flow_units = messages_by_flow.get(value, 0) + runs_by_flow.get(value, 0)
        flow_rate = _rate(items_by_flow.get(value, 0), flow_units)
        by_flow.append(
            {
                "flow": value,
                "label": str(label),
                "messages": messages_by_flow.get(value, 0),
                "runs": runs_by_flow.get(value, 0),
                "units": flow_units,
                "items": items_by_flow.get(value, 0),
                "rate": flow_rate,
                "rate_percent": percent(flow_rate),
            }
        )
    by_category = []
    for value, label in ExceptionCategory.choices:
        category_rate = _rate(items_by_category.get(value, 0), units)
        by_category.append(
            {
                "category": value,
                "label": str(label),
                "items": items_by_category.get(value, 0),
                "rate": category_rate,
                "rate_percent": percent(category_rate),
            }
        )
    rate = _rate(items, units)
    return {
        "messages": messages,
        "runs": runs,
        "units": units,
        "items": items,
        "rate": rate,
        "rate_percent": percent(rate),
        "by_category": by_category,
        "by_flow": by_flow,
    }


def backlog_kpi(*, now: datetime.datetime | None = None, scope: EntityScope | None = None) -> dict[str, Any]:
    """Now: messages waiting in the pipeline (received, mapped, validated, queued) per status, open exception
    items and the age of the oldest one. Two queries."""
    now = now or timezone.now()
    waiting = dict(
        _in_scope(Message.objects.all(), scope)
        .filter(status__in=WAITING_STATUSES)
        .values_list("status")
        .annotate(n=Count("*"))
        .values_list("status", "n")
        .order_by()
    )
    held = (
        _in_scope(ExceptionItem.objects.all(), scope)
        .filter(state=ExceptionState.OPEN)
        .aggregate(n=Count("*"), oldest=Min("created_at"))
    )
    oldest = held["oldest"]
    return {
        "messages_waiting": sum(waiting.values()),
        "waiting_by_status": [{"status": str(status), "count": waiting.get(status, 0)} for status in WAITING_STATUSES],
        "items_held": held["n"],
        "oldest_item_created_at": oldest,
        "oldest_item_age_seconds": _round((now - oldest).total_seconds()) if oldest else None,
    }


def throughput_kpi(*, window: KpiWindow, scope: EntityScope | None = None) -> dict[str, Any]:
    """Messages delivered per flow in the window: totals, per-hour rate, and a count per bucket. One query."""
    trunc = TRUNC[KpiBucket(window.bucket)]
    rows = (
        _in_scope(Message.objects.all(), scope)
        .filter(
            flow__in=Flow.values,
            delivered_at__gte=window.start,
            delivered_at__lt=window.end,
        )
        .annotate(bucket=trunc("delivered_at"))
        .values_list("flow", "bucket")
        .annotate(n=Count("*"))
        .values_list("flow", "bucket", "n")
        .order_by()
    )
    counts: dict[str, dict[datetime.datetime, int]] = defaultdict(dict)
    for flow, bucket, count in rows:
        counts[flow][bucket] = counts[flow].get(bucket, 0) + count
    buckets = bucket_starts(window=window)
    flows = []
    for value, label in Flow.choices:
        delivered = sum(counts[value].values())
        flows.append(
            {
                "flow": value,
                "label": str(label),
                "delivered": delivered,
                "per_hour": _round(delivered / window.hours) if window.hours else None,
                "series": [counts[value].get(bucket, 0) for bucket in buckets],
            }
        )
    return {"bucket": window.bucket, "buckets": buckets, "flows": flows}


def delivery_success_kpi(*, window: KpiWindow, scope: EntityScope | None = None) -> list[dict[str, Any]]:
    """Calls made in the window per connected system (a delivery's attempts and a workflow step's calls alike,
    through the attempt's `system`): attempts, successes (delivered or found already applied), retryable and
    terminal errors, and the success rate. Sorted by the system's role (CRM, PSA, ERP, ...) then its name. One
    grouped query plus the systems' names and roles."""
    rows = (
        _in_scope(DeliveryAttempt.objects.all(), scope)
        .filter(created_at__gte=window.start, created_at__lt=window.end)
        .values_list("system")
        .annotate(
            attempts=Count("*"),
            succeeded=Count("outcome", filter=Q(outcome__in=SUCCESS_OUTCOMES)),
            retryable=Count("outcome", filter=Q(outcome=AttemptOutcome.RETRYABLE_ERROR)),
            terminal=Count("outcome", filter=Q(outcome=AttemptOutcome.TERMINAL_ERROR)),
        )
        .values_list("system", "attempts", "succeeded", "retryable", "terminal")
        .order_by()
    )
    figures = {system_id: rest for system_id, *rest in rows}
    systems = {
        pk: (name, role)
        for pk, name, role in ConnectedSystem.objects.filter(pk__in=[pk for pk in figures if pk is not None])
        .values_list("pk", "name", "role")
        .order_by()
    }
    role_labels = dict(SystemRole.choices)
    role_order = {role: position for position, role in enumerate(SystemRole.values)}
    result = []
    for system_id, (attempts, succeeded, retryable, terminal) in figures.items():
        # An attempt without a system predates the attempt's system column and was not backfilled: kept, named so.
        name, role = systems.get(system_id, ("System not recorded" if system_id is None else f"#{system_id}", ""))
        success_rate = _rate(succeeded, attempts)
        result.append(
            {
                "system_id": system_id,
                "system": name,
                "system_role": role,
                "system_role_label": str(role_labels.get(role, "")),
                "attempts": attempts,
                "succeeded": succeeded,
                "retryable_errors": retryable,
                "terminal_errors": terminal,
                "success_rate": success_rate,
                "success_rate_percent": percent(success_rate),
            }
        )
    return sorted(
        result, key=lambda row: (row["system_id"] is None, role_order.get(row["system_role"], 99), row["system"])
    )


def duplicate_suspects_kpi(*, limit: int = 10, scope: EntityScope | None = None) -> dict[str, Any]:
    """Open duplicate-suspect items: how many, and the oldest few an analyst should look at first. Two queries."""
    open_items = _in_scope(ExceptionItem.objects.all(), scope).filter(
        state=ExceptionState.OPEN, category=ExceptionCategory.DUPLICATE_SUSPECT
    )
    oldest = list(
        open_items.order_by("created_at", "id").values("id", "external_id", "reason", "created_at", "flow")[:limit]
    )
    return {"open": open_items.count(), "oldest": oldest}


def kpi_dashboard(
    *, window: KpiWindow, now: datetime.datetime | None = None, scope: EntityScope | None = None
) -> dict[str, Any]:
    """Every figure of the leaders' dashboard for one window (about 15 queries, independent of the row count),
    counted over the rows of `scope`'s legal entities only when given."""
    if not _is_postgres():
        # Not in a transaction on SQLite: the embedded default's transactions take the write lock at BEGIN.
        return _kpi_dashboard(window=window, now=now, scope=scope)
    with transaction.atomic():
        # Percentiles sort their rows: give this transaction's sorts enough memory not to spill to disk on a
        # 90-day range (PostgreSQL's default is 4 MB). JIT compiling costs more than it saves on these short
        # aggregates. SET LOCAL ends with the transaction.
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL work_mem = '64MB'; SET LOCAL jit = off")
        return _kpi_dashboard(window=window, now=now, scope=scope)


def kpi_cache_seconds() -> int:
    """How long the dashboard and the KPI API reuse computed figures (HUB_KPI_CACHE_SECONDS; 0: never)."""
    return int(getattr(settings, "HUB_KPI_CACHE_SECONDS", 60))


def kpi_dashboard_cached(*, window: KpiWindow, scope: EntityScope | None = None) -> dict[str, Any]:
    """kpi_dashboard through the shared cache for kpi_cache_seconds(): a leader reloading the page, or several
    leaders opening it, cost one computation per window and period. A preset window's end is rounded up to the
    period, so the figures still include every row up to the moment they were computed. Each legal-entity scope
    has its own cache entry: a scoped reader never gets figures counted over another entity's rows."""
    ttl = kpi_cache_seconds()
    if ttl <= 0:
        return kpi_dashboard(window=window, scope=scope)
    if window.key != KpiRange.CUSTOM:
        stamp = math.ceil(window.end.timestamp() / ttl) * ttl
        end = datetime.datetime.fromtimestamp(stamp, tz=datetime.UTC)
        window = KpiWindow(key=window.key, start=end - (window.end - window.start), end=end, bucket=window.bucket)
    key = (
        f"hub:kpis:v3:{window.key}:{window.start.timestamp():.0f}:{window.end.timestamp():.0f}:{window.bucket}"
        f":{_scope_key(scope)}"
    )
    figures = cache.get(key)
    if figures is None:
        figures = kpi_dashboard(window=window, scope=scope)
        figures["computed_at"] = timezone.now()
        cache.set(key, figures, ttl)
    return figures


def _kpi_dashboard(
    *, window: KpiWindow, now: datetime.datetime | None, scope: EntityScope | None = None
) -> dict[str, Any]:
    return {
        "range": {"key": window.key, "start": window.start, "end": window.end, "bucket": window.bucket},
        "project_activation": project_activation_kpi(window=window, scope=scope),
        "time_to_erp": time_to_erp_latency_kpi(window=window, scope=scope),
        "milestone_billing": milestone_billing_latency_kpi(window=window, scope=scope),
        "exception_rate": exception_rate_kpi(window=window, scope=scope),
        "backlog": backlog_kpi(now=now, scope=scope),
        "throughput": throughput_kpi(window=window, scope=scope),
        "delivery_success": delivery_success_kpi(window=window, scope=scope),
        "duplicate_suspects": duplicate_suspects_kpi(scope=scope),
    }


# --- /metrics: current totals, read at scrape time -------------------------------------------------------


def message_counts_by_status() -> dict[str, int]:
    """Messages per status (every status listed). One grouped query over the status index."""
    counts = dict(Message.objects.values_list("status").annotate(n=Count("*")).values_list("status", "n").order_by())
    return {status: counts.get(status, 0) for status in MessageStatus.values}


def attempt_counts_by_system(*, since: datetime.datetime | None = None) -> list[tuple[str, str, int]]:
    """[(system slug, outcome, attempts)] of delivery attempts (since a time, if given). Two queries."""
    attempts = DeliveryAttempt.objects.all()
    if since is not None:
        attempts = attempts.filter(created_at__gte=since)
    rows = list(
        attempts.values_list("system", "outcome")
        .annotate(n=Count("*"))
        .values_list("system", "outcome", "n")
        .order_by()
    )
    slugs = dict(ConnectedSystem.objects.filter(pk__in={row[0] for row in rows}).values_list("pk", "slug"))
    return [(slugs.get(system_id, str(system_id)), outcome, count) for system_id, outcome, count in rows]


def retries_total(*, since: datetime.datetime | None = None) -> int:
    """Delivery attempts after the first one of their delivery (number > 1): the retries made."""
    attempts = DeliveryAttempt.objects.filter(number__gt=1)
    if since is not None:
        attempts = attempts.filter(created_at__gte=since)
    return attempts.count()


def oldest_open_item_age_seconds(*, now: datetime.datetime | None = None) -> float:
    """Age of the oldest open exception item in seconds; 0 when none is open."""
    now = now or timezone.now()
    oldest = ExceptionItem.objects.filter(state=ExceptionState.OPEN).aggregate(oldest=Min("created_at"))["oldest"]
    return (now - oldest).total_seconds() if oldest else 0.0


# --- batch progress ---------------------------------------------------------------------------------------


def batch_progress_figures(progress: BatchProgress, *, now: datetime.datetime | None = None) -> dict[str, Any]:
    """One batch as the progress page shows it: done/total, percent, rate (records/s) and seconds left."""
    now = now or timezone.now()
    until = progress.finished_at or now
    elapsed = max((until - progress.started_at).total_seconds(), 0.0)
    handled = progress.done + progress.failed
    rate = handled / elapsed if elapsed > 0 else None
    remaining = None if progress.total is None else max(progress.total - handled, 0)
    eta = None
    if progress.status == BatchStatus.RUNNING and remaining is not None and rate:
        eta = remaining / rate
    elif progress.status != BatchStatus.RUNNING:
        eta = 0.0
    percent = None if not progress.total else min(100.0, 100.0 * handled / progress.total)
    return {
        "id": progress.pk,
        "kind": progress.kind,
        "kind_label": progress.get_kind_display(),
        "system": progress.system.name if progress.system_id else "",
        "entity": progress.entity,
        "label": progress.label,
        "status": progress.status,
        "status_label": progress.get_status_display(),
        "total": progress.total,
        "done": progress.done,
        "failed": progress.failed,
        "pages": progress.pages,
        "percent": _round(percent),
        "rate_per_second": _round(rate),
        "eta_seconds": _round(eta),
        "elapsed_seconds": _round(elapsed),
        "error": progress.error,
        "started_at": progress.started_at,
        "updated_at": progress.updated_at,
        "finished_at": progress.finished_at,
    }


def batch_progress_list(
    *, limit: int = 20, now: datetime.datetime | None = None, scope: EntityScope | None = None
) -> list[dict[str, Any]]:
    """The running batches first, then the most recent finished ones (of systems serving only `scope`'s legal
    entities, when given); one query."""
    rows: Iterable[BatchProgress] = (
        _in_scope(BatchProgress.objects.all(), scope)
        .select_related("system")
        .annotate(running_first=Case(When(status=BatchStatus.RUNNING, then=Value(0)), default=Value(1)))
        .order_by("running_first", "-started_at", "-id")[:limit]
    )
    return [batch_progress_figures(progress, now=now) for progress in rows]
