"""A leader reads the KPI dashboard in Chromium: the figures and the charts drawn by the vendored Chart.js from
demo-like rows; and the batch-progress page follows a running file drop live."""

from __future__ import annotations

import datetime
import random
import re

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from connectors.tests.factories import ConnectedSystemFactory
from exception_queue.choices import ExceptionCategory, ExceptionState
from governance.choices import Flow
from insights import services as insights_services
from insights.choices import BatchKind
from insights.tests.factories import (
    DeliveryAttemptFactory,
    DeliveryFactory,
    ExceptionItemFactory,
    MessageFactory,
    WorkflowRunFactory,
    WorkflowStepFactory,
)
from sync.choices import AttemptOutcome, MessageStatus
from tests.browser.conftest import login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "test-password-123"
# Activations of 60 to 150 minutes: their median reads in minutes (under 2 hours) or hours, never days.
MINUTES_OR_HOURS = re.compile(r"^\d+(\.\d)? (min|h)$")
PERCENT = re.compile(r"^\d+\.\d%$")
NO_VALUE = "\u2013"  # the pages' en dash for a figure not known yet
CHARTS = [
    "chart-activation",
    "chart-throughput",
    "chart-exceptions-flow",
    "chart-exceptions-category",
    "chart-delivery",
]


@pytest.fixture(autouse=True)
def kpis_uncached(settings):
    """The page shows the figures of this test's rows, not ones cached by an earlier test in the same minute."""
    settings.HUB_KPI_CACHE_SECONDS = 0


def seed_demo_like_week() -> None:
    """A week of a small firm: activations, approved time posted to two ERPs, milestones, exceptions."""
    rng = random.Random(7)
    now = timezone.now()
    crm = ConnectedSystemFactory(name="Salesforce prod", slug="crm")
    psa = ConnectedSystemFactory(name="Harvest", slug="psa")
    erp_uk = ConnectedSystemFactory(name="ERP - UK entity", slug="erp-uk")
    erp_us = ConnectedSystemFactory(name="ERP - US entity", slug="erp-us")
    for day in range(7):
        for _ in range(3):
            closed_won = now - datetime.timedelta(days=day, hours=rng.randint(3, 20))
            run = WorkflowRunFactory(triggered_at=closed_won)
            WorkflowStepFactory(run=run, finished_at=closed_won + datetime.timedelta(minutes=rng.randint(60, 150)))
        for _ in range(12):
            approved = now - datetime.timedelta(days=day, hours=rng.randint(1, 20))
            message = MessageFactory(
                system=psa,
                source_timestamp=approved,
                received_at=approved + datetime.timedelta(seconds=5),
                delivered_at=approved + datetime.timedelta(seconds=rng.randint(20, 400)),
            )
            delivery = DeliveryFactory(message=message, target_system=rng.choice([erp_uk, erp_us]))
            outcome = AttemptOutcome.DELIVERED if rng.random() < 0.9 else AttemptOutcome.RETRYABLE_ERROR
            DeliveryAttemptFactory(delivery=delivery, outcome=outcome, created_at=message.delivered_at)
        for _ in range(4):
            MessageFactory(
                system=crm,
                flow=Flow.CLIENT_MASTER,
                entity="client",
                received_at=now - datetime.timedelta(days=day, hours=2),
                delivered_at=now - datetime.timedelta(days=day, hours=1),
            )
        completed = now - datetime.timedelta(days=day, hours=3)
        WorkflowRunFactory(
            flow=Flow.MILESTONE_BILLING,
            triggered_at=completed - datetime.timedelta(hours=rng.randint(4, 40)),
            finished_at=completed,
        )
    MessageFactory.create_batch(5, system=psa, status=MessageStatus.QUEUED)
    ExceptionItemFactory.create_batch(4, created_at=now - datetime.timedelta(days=2))
    ExceptionItemFactory.create_batch(
        3, flow=Flow.CLIENT_MASTER, category=ExceptionCategory.DUPLICATE_SUSPECT, external_id="001ACME"
    )
    ExceptionItemFactory(state=ExceptionState.RESOLVED, category=ExceptionCategory.POLICY)


def test_leader_reads_the_kpi_dashboard_with_its_charts(page: Page, live_server, make_role_user):
    # given a week of demo-like rows and a leader signed in
    seed_demo_like_week()
    make_role_user("leader", username="lena.leader")
    login(page, live_server, "lena.leader", PASSWORD)

    # when the leader opens the KPI dashboard from the admin index
    page.goto(f"{live_server.url}/admin/")
    page.locator("#content").get_by_role("link", name="KPI dashboard").click()

    # then every chart has been drawn by Chart.js on its canvas
    expect(page.locator("body")).to_have_attribute("data-kpi-charts-ready", "true")
    for chart in CHARTS:
        expect(page.locator(f"#{chart}")).to_have_attribute("data-rendered", "true")
    assert page.evaluate("() => typeof Chart === 'function' && Object.keys(Chart.instances).length") == len(CHARTS)
    # and the throughput chart carries a bar per day for each flow, from the rows
    series = page.evaluate(
        "() => Chart.getChart('chart-throughput').data.datasets.map(d => [d.label, d.data.reduce((a, b) => a + b, 0)])"
    )
    assert ["Approved time and expense to ERP", 84] in series
    assert ["Client master", 28] in series
    # and the figures read as durations and counts
    expect(page.locator("#kpi-activation .kpi-note")).to_contain_text("21 projects activated")
    expect(page.locator("#kpi-activation .kpi-duration").first).to_have_text(MINUTES_OR_HOURS)
    # and the activation chart's axis is in the unit its largest median calls for; rates are percentages
    axis = page.evaluate("() => Chart.getChart('chart-activation').options.scales.y.title.text")
    assert axis in ("minutes", "hours")
    expect(page.locator("#kpi-exception-rate")).to_have_text(PERCENT)
    expect(page.locator("#kpi-exceptions-flow-table")).to_contain_text("Client master")
    expect(page.locator("#kpi-duplicate-suspects")).to_have_text("3")
    expect(page.locator("#kpi-messages-waiting")).to_have_text("5")
    expect(page.locator("#kpi-delivery-table")).to_contain_text("ERP - UK entity")
    screenshot(page, "dashboard")

    # when the range is switched to the last 24 hours
    page.select_option("#id_range", "24h")
    page.click("#kpi-range-form input[type=submit]")
    # then the page shows that window, per hour
    expect(page.locator(".kpi-window")).to_contain_text("per hour")
    expect(page.locator("#chart-throughput")).to_have_attribute("data-rendered", "true")


def test_batch_progress_page_follows_a_running_batch_live(page: Page, live_server, make_role_user):
    # given a file drop of 1,000 rows that has started, and a leader on the batch-progress page
    system = ConnectedSystemFactory(name="Harvest", slug="psa")
    progress = insights_services.batch_progress_start(
        kind=BatchKind.FILE_DROP, system=system, entity="time_entry", total=1000, label="timesheets.csv"
    )
    make_role_user("leader", username="lena.leader")
    login(page, live_server, "lena.leader", PASSWORD)
    page.goto(f"{live_server.url}/admin/insights/batchprogress/")
    row = page.locator(f'tr[data-batch-id="{progress.pk}"]')
    expect(row.locator(".batch-done")).to_have_text("0 / 1000")

    # when the batch advances, without the page being reloaded
    insights_services.batch_progress_advance(progress_id=progress.pk, done=400)
    # then the row shows it within a couple of seconds, with a rate and a time left
    expect(row.locator(".batch-done")).to_have_text("400 / 1000", timeout=5000)
    expect(row.locator(".batch-rate")).not_to_have_text(f"{NO_VALUE}/s")
    expect(row.locator(".batch-eta")).not_to_have_text(NO_VALUE)

    # when the batch finishes, then the row says so, with no time left
    insights_services.batch_progress_finish(progress_id=progress.pk, done=1000)
    expect(row.locator(".batch-status")).to_have_text("Completed", timeout=5000)
    expect(row.locator(".batch-eta")).to_have_text("0 s")
    expect(row.locator(".batch-done")).to_have_text("1000 / 1000")
    assert int(page.locator(".batch-progress").get_attribute("data-polls") or 0) >= 2


@pytest.mark.slow
def test_the_dashboard_charts_the_demo_flows_run_by_a_real_worker(
    page: Page, live_server, live_celery_worker_db, make_role_user
):
    # given the demo firm with its systems on this test's server, and its flows' demo run by a real worker
    from django.db.models import Value
    from django.db.models.functions import Replace

    from connectors.http import clients_close
    from connectors.models import ConnectedSystem
    from integrationhub.demo import DEMO_BASE_URL, demo_setup
    from sandbox import services as sandbox_services
    from sandbox.choices import SandboxSystem
    from workflows.choices import RunStatus
    from workflows.demo_opportunity import OPPORTUNITIES, seed_opportunity_and_client_demo
    from workflows.models import WorkflowRun
    from workflows.tests.conftest import wait_for

    demo_setup()
    ConnectedSystem.objects.update(base_url=Replace("base_url", Value(DEMO_BASE_URL), Value(live_server.url)))
    setting = sandbox_services.sandbox_setting_ensure(system=SandboxSystem.CRM)
    setting.webhook_url = setting.webhook_url.replace(DEMO_BASE_URL, live_server.url)
    sandbox_services.sandbox_setting_save(setting=setting, reason="test")
    clients_close()
    seed_opportunity_and_client_demo()

    def activations_settled() -> bool:
        runs = WorkflowRun.objects.filter(flow=Flow.OPPORTUNITY_TO_PROJECT)
        return runs.count() == len(OPPORTUNITIES) and not runs.filter(status=RunStatus.RUNNING).exists()

    wait_for(activations_settled, timeout=120)
    completed = WorkflowRun.objects.filter(flow=Flow.OPPORTUNITY_TO_PROJECT, status=RunStatus.COMPLETED).count()
    assert completed >= 1

    # when a leader opens the KPI dashboard
    make_role_user("leader", username="demo.leader")
    login(page, live_server, "demo.leader", PASSWORD)
    page.goto(f"{live_server.url}/admin/insights/kpidashboard/?range=24h")

    # then the charts are drawn and the activation figure counts the demo's activated projects
    expect(page.locator("body")).to_have_attribute("data-kpi-charts-ready", "true")
    for chart in CHARTS:
        expect(page.locator(f"#{chart}")).to_have_attribute("data-rendered", "true")
    expect(page.locator("#kpi-activation .kpi-note")).to_contain_text(f"{completed} projects activated")
    expect(page.locator("#kpi-duplicate-suspects")).to_have_text("1")
    screenshot(page, "dashboard_demo")
