"""The leaders' KPI dashboard and the batch-progress page in the admin: who sees them, what they show, and a
bounded number of queries whatever the row count."""

from __future__ import annotations

import datetime
import json

import pytest
from django.utils import timezone

from connectors.tests.factories import ConnectedSystemFactory
from exception_queue.choices import ExceptionCategory
from insights.choices import BatchStatus
from insights.tests.factories import (
    BatchProgressFactory,
    DeliveryAttemptFactory,
    ExceptionItemFactory,
    MessageFactory,
    WorkflowRunFactory,
    WorkflowStepFactory,
)

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/insights/kpidashboard/"
PROGRESS = "/admin/insights/batchprogress/"
LIVE = "/admin/insights/batchprogress/live.json"
H = datetime.timedelta(hours=1)


def seed(rows: int) -> None:
    now = timezone.now()
    system = ConnectedSystemFactory()
    for index in range(rows):
        MessageFactory(system=system, source_timestamp=now - 3 * H, delivered_at=now - H - index * H)
        DeliveryAttemptFactory(created_at=now - H, delivery__target_system=system, delivery__message__system=system)
        ExceptionItemFactory(created_at=now - index * H, category=ExceptionCategory.DUPLICATE_SUSPECT)
        run = WorkflowRunFactory(triggered_at=now - 30 * H, finished_at=now - 2 * H)
        WorkflowStepFactory(run=run, finished_at=now - 2 * H - index * H)


@pytest.mark.parametrize("role", ["leader", "auditor", "integration_admin", "superuser"])
def test_dashboard_opens_for_leaders_auditors_and_admins(client_as, role):
    # given rows of every kind
    seed(3)
    # when a user of the role opens the dashboard
    response = client_as(role).get(DASHBOARD)
    # then it renders the figures and embeds them for the charts
    assert response.status_code == 200
    body = response.content.decode()
    assert "Project activation" in body and 'id="chart-throughput"' in body
    data = json.loads(body.split('id="kpi-data" type="application/json">')[1].split("</script>")[0])
    assert data["project_activation"]["count"] == 3
    assert data["duplicate_suspects"]["open"] == 3
    assert "vendor/chartjs/chart.umd.min.js" in body


@pytest.mark.parametrize("role", ["analyst", "finance_approver"])
def test_dashboard_is_refused_to_roles_without_the_kpi_permission(client_as, role):
    # when an analyst or a finance approver opens the dashboard
    client = client_as(role)
    response = client.get(DASHBOARD)
    # then it is refused, and the admin index does not offer it
    assert response.status_code == 403
    assert DASHBOARD not in client.get("/admin/").content.decode()


def test_dashboard_is_listed_on_the_admin_index_for_a_leader(client_as):
    index = client_as("leader").get("/admin/")
    assert index.status_code == 200
    assert DASHBOARD in index.content.decode()


def test_dashboard_range_selector_custom_range_and_refused_range(client_as):
    client = client_as("leader")
    seed(2)
    # a custom range of two days (end date included) is read per hour
    custom = client.get(DASHBOARD, {"range": "custom", "start": "2026-01-01", "end": "2026-01-02"})
    assert custom.status_code == 200
    assert custom.context["window"]["end"] - custom.context["window"]["start"] == datetime.timedelta(days=2)
    assert custom.context["kpis"]["project_activation"]["count"] == 0
    # a backwards custom range is refused with a message and the last 7 days are shown
    backwards = client.get(DASHBOARD, {"range": "custom", "start": "2026-02-01", "end": "2026-01-01"})
    assert backwards.status_code == 200
    assert "before its end" in backwards.content.decode()
    assert backwards.context["window"]["key"] == "7d"
    assert backwards.context["kpis"]["project_activation"]["count"] == 2


def test_dashboard_runs_a_bounded_number_of_queries(client_as, django_assert_max_num_queries):
    # given many rows of every kind
    client = client_as("leader")
    seed(25)
    # when the dashboard is rendered (30-day range), then it runs at most 25 queries (session, user and permissions
    # included), however many rows there are
    with django_assert_max_num_queries(25):
        response = client.get(DASHBOARD, {"range": "30d"})
    assert response.status_code == 200


def test_batch_progress_page_and_live_json(client_as):
    # given a running file drop and a finished pull
    started = timezone.now() - datetime.timedelta(seconds=10)
    running = BatchProgressFactory(total=200, done=50, started_at=started, updated_at=started)
    BatchProgressFactory(kind="poll", status=BatchStatus.COMPLETED, done=30, total=30, finished_at=started)
    client = client_as("leader")
    # when the page and its JSON are read
    page = client.get(PROGRESS)
    live = client.get(LIVE)
    # then the page polls the JSON, which lists the running batch first with its rate and time left
    assert page.status_code == 200
    assert LIVE in page.content.decode() and "insights/progress.js" in page.content.decode()
    batches = live.json()["batches"]
    assert batches[0]["id"] == running.pk
    assert batches[0]["done"] == 50 and batches[0]["total"] == 200
    elapsed = batches[0]["elapsed_seconds"]
    assert elapsed >= 10
    assert batches[0]["rate_per_second"] == pytest.approx(50 / elapsed, rel=0.01)
    assert batches[0]["eta_seconds"] == pytest.approx(150 / (50 / elapsed), rel=0.01)
    assert batches[1]["eta_seconds"] == 0.0


def test_batch_progress_json_is_refused_without_a_session(client):
    # an anonymous request is sent to the login page, never given the figures
    response = client.get(LIVE)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_the_exception_queue_list_runs_the_same_queries_for_many_items(client_as):
    # given a few open items, each at its own system (the benchmark's second page)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = client_as("finance_approver")
    ExceptionItemFactory.create_batch(2, system=ConnectedSystemFactory())
    with CaptureQueriesContext(connection) as few:
        assert client.get("/admin/exception_queue/exceptionitem/").status_code == 200
    # when twenty more items at twenty other systems exist
    for _ in range(20):
        ExceptionItemFactory(system=ConnectedSystemFactory())
    with CaptureQueriesContext(connection) as many:
        client.get("/admin/exception_queue/exceptionitem/")
    # then the list still runs the same queries (systems and legal entities are joined, not fetched per row)
    assert len(many.captured_queries) == len(few.captured_queries)
