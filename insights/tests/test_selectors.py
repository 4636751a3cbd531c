"""Each KPI selector on known rows gives the known medians, percentiles, rates and counts (on SQLite by the
Python interpolation, on PostgreSQL by percentile_cont: the same figures)."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from connectors.tests.factories import ConnectedSystemFactory
from exception_queue.choices import ExceptionCategory, ExceptionState
from governance.choices import Flow
from insights import selectors
from insights.choices import BatchStatus, KpiBucket, KpiRange
from insights.tests.factories import (
    BatchProgressFactory,
    DeliveryAttemptFactory,
    DeliveryFactory,
    ExceptionItemFactory,
    MessageFactory,
    WorkflowRunFactory,
    WorkflowStepFactory,
)
from sync.choices import AttemptOutcome, MessageStatus
from workflows.choices import RunStatus

pytestmark = pytest.mark.django_db

T0 = datetime.datetime(2026, 11, 2, 0, 0, tzinfo=datetime.UTC)
H = datetime.timedelta(hours=1)
D = datetime.timedelta(days=1)


def window(days: int = 7, start: datetime.datetime = T0) -> selectors.KpiWindow:
    return selectors.kpi_window_resolve(key=KpiRange.CUSTOM, start=start, end=start + days * D)


def test_percentile_interpolates_between_ranks_like_percentile_cont():
    # given five values (unsorted)
    values = [40.0, 10.0, 100.0, 30.0, 20.0]
    # then the median is the middle one, and p95 lies 80 % of the way from 40 to 100
    assert selectors.percentile(values, 0.5) == 30.0
    assert selectors.percentile(values, 0.95) == pytest.approx(88.0)
    assert selectors.percentile(values, 0.0) == 10.0
    assert selectors.percentile([], 0.5) is None


def test_project_activation_median_p90_and_trend_from_release_staffing_steps():
    # given five activations of 1, 2, 3, 4 and 10 hours finishing inside the window, over two days
    for index, hours in enumerate([1, 2, 3, 4, 10]):
        triggered = T0 + (index // 3) * D + H
        run = WorkflowRunFactory(triggered_at=triggered, finished_at=triggered + hours * H)
        WorkflowStepFactory(run=run, finished_at=triggered + hours * H)
    # and rows that must not count: a step of another name, another flow's step, an activation outside the window
    other_step_run = WorkflowRunFactory(triggered_at=T0 + H)
    WorkflowStepFactory(run=other_step_run, name="create_erp_project", position=1, finished_at=T0 + 50 * H)
    other_flow = WorkflowRunFactory(flow=Flow.MILESTONE_BILLING, triggered_at=T0 + H)
    WorkflowStepFactory(run=other_flow, finished_at=T0 + 90 * H)
    old = WorkflowRunFactory(triggered_at=T0 - 10 * D)
    WorkflowStepFactory(run=old, finished_at=T0 - 9 * D)

    # when the KPI is read for the week
    kpi = selectors.project_activation_kpi(window=window())

    # then the median is 3 h and p90 is 4 h + 0.6 x (10 h - 4 h) = 7.6 h
    assert kpi["count"] == 5
    assert kpi["median_seconds"] == 3 * 3600
    assert kpi["p90_seconds"] == pytest.approx(7.6 * 3600)
    # and the trend lists every day of the week, with the median of each day that had activations
    assert len(kpi["trend"]) == 7
    assert kpi["trend"][0] == {"bucket": T0, "count": 3, "median_seconds": 2 * 3600}
    assert kpi["trend"][1] == {"bucket": T0 + D, "count": 2, "median_seconds": 7 * 3600}
    assert kpi["trend"][2] == {"bucket": T0 + 2 * D, "count": 0, "median_seconds": None}


def test_time_to_erp_latency_p50_and_p95_from_approval_to_delivery():
    # given five approved entries delivered 10, 20, 30, 40 and 100 s after their approval
    system = ConnectedSystemFactory()
    for seconds in [10, 20, 30, 40, 100]:
        approved = T0 + 5 * H
        MessageFactory(
            system=system,
            source_timestamp=approved,
            delivered_at=approved + datetime.timedelta(seconds=seconds),
        )
    # and messages that must not count: another flow, not yet delivered, delivered before the window
    MessageFactory(system=system, flow=Flow.CLIENT_MASTER, source_timestamp=T0, delivered_at=T0 + 5 * D)
    MessageFactory(system=system, status=MessageStatus.QUEUED, source_timestamp=T0, delivered_at=None)
    MessageFactory(system=system, source_timestamp=T0 - 3 * D, delivered_at=T0 - 2 * D)

    # when the latency is read
    kpi = selectors.time_to_erp_latency_kpi(window=window())

    # then p50 is 30 s and p95 is 40 + 0.8 x 60 = 88 s
    assert kpi == {"count": 5, "p50_seconds": 30.0, "p95_seconds": pytest.approx(88.0)}


def test_milestone_billing_latency_counts_completed_runs_only():
    # given two completed milestone billings of 1 and 3 days, a compensated one and one still awaiting approval
    WorkflowRunFactory(flow=Flow.MILESTONE_BILLING, triggered_at=T0, finished_at=T0 + 1 * D)
    WorkflowRunFactory(flow=Flow.MILESTONE_BILLING, triggered_at=T0, finished_at=T0 + 3 * D)
    WorkflowRunFactory(
        flow=Flow.MILESTONE_BILLING, status=RunStatus.COMPENSATED, triggered_at=T0, finished_at=T0 + 6 * D
    )
    WorkflowRunFactory(flow=Flow.MILESTONE_BILLING, status=RunStatus.AWAITING_APPROVAL, triggered_at=T0)

    # when the latency is read
    kpi = selectors.milestone_billing_latency_kpi(window=window())

    # then only the completed runs count: median 2 days, p90 1 + 0.9 x 2 = 2.8 days
    assert kpi["count"] == 2
    assert kpi["median_seconds"] == 2 * 86400
    assert kpi["p90_seconds"] == pytest.approx(2.8 * 86400)


def test_exception_rate_by_category_and_by_flow():
    # given 8 time-entry and 2 client messages received in the window, and items opened on them
    system = ConnectedSystemFactory()
    for _ in range(8):
        MessageFactory(system=system, received_at=T0 + H)
    for _ in range(2):
        MessageFactory(system=system, flow=Flow.CLIENT_MASTER, received_at=T0 + H)
    ExceptionItemFactory.create_batch(2, created_at=T0 + 2 * H)
    ExceptionItemFactory(flow=Flow.CLIENT_MASTER, category=ExceptionCategory.DUPLICATE_SUSPECT, created_at=T0 + 2 * H)
    # and an item of last month that must not count
    ExceptionItemFactory(created_at=T0 - 30 * D)

    # when the rate is read
    kpi = selectors.exception_rate_kpi(window=window())

    # then 3 items for 10 messages overall, 2 of 8 on time entries and 1 of 2 on clients
    assert (kpi["messages"], kpi["items"], kpi["rate"]) == (10, 3, 0.3)
    by_flow = {row["flow"]: row for row in kpi["by_flow"]}
    assert (by_flow[Flow.TIME_EXPENSE_TO_ERP]["items"], by_flow[Flow.TIME_EXPENSE_TO_ERP]["rate"]) == (2, 0.25)
    assert (by_flow[Flow.CLIENT_MASTER]["items"], by_flow[Flow.CLIENT_MASTER]["rate"]) == (1, 0.5)
    assert by_flow[Flow.MILESTONE_BILLING]["rate"] is None  # no messages: no rate, not zero
    by_category = {row["category"]: row for row in kpi["by_category"]}
    assert by_category[ExceptionCategory.VALIDATION]["items"] == 2
    assert by_category[ExceptionCategory.DUPLICATE_SUSPECT]["rate"] == 0.1
    assert by_category[ExceptionCategory.POLICY]["items"] == 0


def test_backlog_counts_waiting_messages_and_the_oldest_open_item():
    # given messages in every stage and three items, one of them resolved
    system = ConnectedSystemFactory()
    for status in [MessageStatus.RECEIVED, MessageStatus.RECEIVED, MessageStatus.QUEUED, MessageStatus.MAPPED]:
        MessageFactory(system=system, status=status)
    for status in [MessageStatus.DELIVERED, MessageStatus.HELD, MessageStatus.DEAD]:
        MessageFactory(system=system, status=status)
    now = T0 + 10 * H
    ExceptionItemFactory(created_at=now - 2 * H)
    ExceptionItemFactory(created_at=now - 1 * H)
    ExceptionItemFactory(created_at=now - 5 * H, state=ExceptionState.RESOLVED)

    # when the backlog is read
    kpi = selectors.backlog_kpi(now=now)

    # then four messages wait, two items are held and the oldest open one is two hours old
    assert kpi["messages_waiting"] == 4
    assert {row["status"]: row["count"] for row in kpi["waiting_by_status"]}[MessageStatus.RECEIVED] == 2
    assert kpi["items_held"] == 2
    assert kpi["oldest_item_age_seconds"] == 7200.0


def test_throughput_per_flow_per_day():
    # given deliveries over three days on two flows, one without a flow and one after the window
    system = ConnectedSystemFactory()
    for delivered in [T0 + H, T0 + 2 * H, T0 + 2 * D + H]:
        MessageFactory(system=system, delivered_at=delivered)
    MessageFactory(system=system, flow=Flow.CLIENT_MASTER, delivered_at=T0 + D + H)
    MessageFactory(system=system, flow="", delivered_at=T0 + H)
    MessageFactory(system=system, delivered_at=T0 + 4 * D)

    # when the throughput of three days is read
    kpi = selectors.throughput_kpi(window=window(days=3))

    # then each flow has its count per day and per hour
    assert kpi["bucket"] == KpiBucket.DAY
    assert kpi["buckets"] == [T0, T0 + D, T0 + 2 * D]
    flows = {row["flow"]: row for row in kpi["flows"]}
    assert flows[Flow.TIME_EXPENSE_TO_ERP]["series"] == [2, 0, 1]
    assert flows[Flow.TIME_EXPENSE_TO_ERP]["per_hour"] == round(3 / 72, 3)
    assert flows[Flow.CLIENT_MASTER]["series"] == [0, 1, 0]
    assert flows[Flow.MILESTONE_BILLING]["delivered"] == 0


def test_delivery_success_rate_per_target_system():
    # given three attempts at the ERP (delivered, retryable error, found already applied) and a refused one at the PSA
    erp = ConnectedSystemFactory(name="ERP")
    psa = ConnectedSystemFactory(name="PSA")
    delivery = DeliveryFactory(target_system=erp)
    DeliveryAttemptFactory(delivery=delivery, number=1, outcome=AttemptOutcome.RETRYABLE_ERROR, created_at=T0 + H)
    DeliveryAttemptFactory(delivery=delivery, number=2, outcome=AttemptOutcome.DELIVERED, created_at=T0 + 2 * H)
    DeliveryAttemptFactory(
        delivery=DeliveryFactory(target_system=erp), outcome=AttemptOutcome.ALREADY_APPLIED, created_at=T0 + H
    )
    DeliveryAttemptFactory(
        delivery=DeliveryFactory(target_system=psa), outcome=AttemptOutcome.TERMINAL_ERROR, created_at=T0 + H
    )
    # and an attempt before the window
    DeliveryAttemptFactory(delivery=DeliveryFactory(target_system=psa), created_at=T0 - D)

    # when the success rates are read
    rows = {row["system"]: row for row in selectors.delivery_success_kpi(window=window())}

    # then the ERP succeeded 2 of 3 times and the PSA never
    assert (rows["ERP"]["attempts"], rows["ERP"]["succeeded"], rows["ERP"]["retryable_errors"]) == (3, 2, 1)
    assert rows["ERP"]["success_rate"] == round(2 / 3, 6)
    assert (rows["PSA"]["attempts"], rows["PSA"]["terminal_errors"], rows["PSA"]["success_rate"]) == (1, 1, 0.0)


def test_duplicate_suspects_counts_open_suspects_oldest_first():
    # given two open suspects, a resolved one and an open item of another category
    newer = ExceptionItemFactory(category=ExceptionCategory.DUPLICATE_SUSPECT, created_at=T0 + 2 * H, external_id="B")
    older = ExceptionItemFactory(category=ExceptionCategory.DUPLICATE_SUSPECT, created_at=T0 + H, external_id="A")
    ExceptionItemFactory(category=ExceptionCategory.DUPLICATE_SUSPECT, state=ExceptionState.RESOLVED)
    ExceptionItemFactory(category=ExceptionCategory.VALIDATION)

    # when the suspects are read
    kpi = selectors.duplicate_suspects_kpi()

    # then two are open, the oldest listed first
    assert kpi["open"] == 2
    assert [row["id"] for row in kpi["oldest"]] == [older.pk, newer.pk]


def test_kpi_window_presets_buckets_and_refused_custom_ranges():
    now = T0 + 3 * H
    # a preset ends now; a day is read per hour, a quarter per week
    day = selectors.kpi_window_resolve(key=KpiRange.LAST_24H, now=now)
    assert (day.start, day.end, day.bucket) == (now - 24 * H, now, KpiBucket.HOUR)
    assert selectors.kpi_window_resolve(key=KpiRange.LAST_90D, now=now).bucket == KpiBucket.DAY
    assert selectors.kpi_window_resolve(key=KpiRange.CUSTOM, start=T0, end=T0 + 200 * D).bucket == KpiBucket.WEEK
    # a custom range without an end, backwards, or longer than a year is refused
    for start, end in [(T0, None), (T0, T0 - D), (T0, T0 + 400 * D)]:
        with pytest.raises(selectors.KpiRangeError):
            selectors.kpi_window_resolve(key=KpiRange.CUSTOM, start=start, end=end)
    with pytest.raises(selectors.KpiRangeError):
        selectors.kpi_window_resolve(key="1y")


def test_kpi_dashboard_query_count_does_not_grow_with_rows():
    # given a handful of rows of every kind
    system = ConnectedSystemFactory()
    MessageFactory(system=system, source_timestamp=T0, delivered_at=T0 + H)
    DeliveryAttemptFactory(created_at=T0 + H)
    ExceptionItemFactory(created_at=T0 + H)
    with CaptureQueriesContext(connection) as few:
        selectors.kpi_dashboard(window=window())
    # when ten times as many rows exist
    for index in range(10):
        MessageFactory(system=system, source_timestamp=T0, delivered_at=T0 + index * H)
        DeliveryAttemptFactory(created_at=T0 + H, delivery__target_system=system)
        ExceptionItemFactory(created_at=T0 + H, category=ExceptionCategory.DUPLICATE_SUSPECT)
        run = WorkflowRunFactory(triggered_at=T0, finished_at=T0 + H)
        WorkflowStepFactory(run=run, finished_at=T0 + H)
    with CaptureQueriesContext(connection) as many:
        selectors.kpi_dashboard(window=window())
    # then the dashboard runs the same number of queries: 14 figures, and on PostgreSQL its SET LOCAL (plus the
    # savepoint pair of its transaction inside the test's)
    assert len(many.captured_queries) == len(few.captured_queries) <= 17


def test_batch_progress_rate_and_time_left():
    # given a file drop 40 s in, with 400 of 1,000 rows done and 20 refused
    started = T0
    progress = BatchProgressFactory(total=1000, done=400, failed=20, started_at=started, updated_at=started)
    # when its figures are read at +40 s
    figures = selectors.batch_progress_figures(progress, now=started + datetime.timedelta(seconds=42))
    # then it handles 10 records/s and needs 58 s for the 580 left
    assert figures["rate_per_second"] == 10.0
    assert figures["eta_seconds"] == 58.0
    assert figures["percent"] == 42.0
    # and a finished batch has no time left, with its rate over its own duration
    progress.status = BatchStatus.COMPLETED
    progress.finished_at = started + datetime.timedelta(seconds=84)
    done = selectors.batch_progress_figures(progress, now=started + datetime.timedelta(hours=5))
    assert (done["eta_seconds"], done["rate_per_second"]) == (0.0, 5.0)


def test_cached_figures_are_reused_within_the_period_and_recomputed_after(settings):
    # given a one-minute KPI cache and one delivered entry
    from django.core.cache import cache

    settings.HUB_KPI_CACHE_SECONDS = 60
    cache.clear()
    system = ConnectedSystemFactory()
    now = datetime.datetime.now(datetime.UTC)
    MessageFactory(system=system, source_timestamp=now - H, delivered_at=now - H + datetime.timedelta(seconds=30))
    first = selectors.kpi_dashboard_cached(window=selectors.kpi_window_resolve(key=KpiRange.LAST_24H))
    # when a second entry is delivered and the figures are read again within the period
    MessageFactory(system=system, source_timestamp=now - H, delivered_at=now - H + datetime.timedelta(seconds=90))
    again = selectors.kpi_dashboard_cached(window=selectors.kpi_window_resolve(key=KpiRange.LAST_24H))
    # then they are the cached ones, and the window ends at the period's end (every row up to now included)
    assert again["time_to_erp"]["count"] == first["time_to_erp"]["count"] == 1
    assert again["range"]["end"] >= now and again["range"]["end"].timestamp() % 60 == 0
    # when the cache is off, the new entry counts at once
    settings.HUB_KPI_CACHE_SECONDS = 0
    fresh = selectors.kpi_dashboard_cached(window=selectors.kpi_window_resolve(key=KpiRange.LAST_24H))
    assert fresh["time_to_erp"]["count"] == 2
    cache.clear()
