"""The KPI dashboard does not mislead its readers: rates in percent, durations in the unit their size calls for,
every flow with exception items and every system called listed, no link a leader cannot open; the hub's 403
page, its favicon and the leaders' guide."""

from __future__ import annotations

import datetime
import html
import re

import pytest
from django.contrib.staticfiles import finders
from django.test import RequestFactory
from django.utils import timezone

from connectors.choices import SystemRole
from connectors.tests.factories import ConnectedSystemFactory
from exception_queue.choices import ExceptionCategory
from governance.choices import Flow
from insights.formatting import duration_axis_unit, duration_display, percent_display
from insights.tests.factories import (
    DeliveryAttemptFactory,
    DeliveryFactory,
    ExceptionItemFactory,
    MessageFactory,
    WorkflowRunFactory,
    WorkflowStepFactory,
)
from insights.views import permission_denied_view
from sync.choices import AttemptOutcome

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/insights/kpidashboard/"
GUIDE = "/admin/insights/kpidashboard/guide/"
QUEUE = "/admin/exception_queue/exceptionitem/"
S = datetime.timedelta(seconds=1)
H = datetime.timedelta(hours=1)


def section(body: str, element_id: str) -> str:
    """The HTML of the element with `element_id` up to its closing tag (cards, tables)."""
    start = body.index(f'id="{element_id}"')
    tag = body.rfind("<", 0, start)
    name = re.match(r"<(\w+)", body[tag:]).group(1)  # type: ignore[union-attr]
    return body[tag : body.index(f"</{name}>", start)]


def text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def seed_week() -> dict[str, object]:
    """A 29-second activation, 100-minute postings, a 40-hour billing; items on message and run flows; calls to
    a CRM (a workflow step's, with no delivery), a PSA and an ERP."""
    now = timezone.now()
    # Opportunity to project: one run started by no message, staffing released 29 s after closed-won.
    activation = WorkflowRunFactory(triggered_at=now - H - 29 * S, started_at=now - H - 29 * S)
    WorkflowStepFactory(run=activation, finished_at=now - H)
    # Approved time: four messages, each posted 100 minutes after its approval; one exception item.
    messages = [
        MessageFactory(source_timestamp=now - 2 * H - 100 * 60 * S, delivered_at=now - 2 * H, received_at=now - 3 * H)
        for _ in range(4)
    ]
    ExceptionItemFactory(flow=Flow.TIME_EXPENSE_TO_ERP, created_at=now - H)
    # Milestone billing: two runs (no messages), one billed 40 hours after the milestone; one item.
    WorkflowRunFactory(
        flow=Flow.MILESTONE_BILLING, triggered_at=now - 41 * H, started_at=now - 41 * H, finished_at=now - H
    )
    WorkflowRunFactory(flow=Flow.MILESTONE_BILLING, started_at=now - 2 * H, finished_at=None)
    ExceptionItemFactory(flow=Flow.MILESTONE_BILLING, category=ExceptionCategory.APPROVAL_REQUIRED, created_at=now - H)
    # Client master: one run (no message), one duplicate suspect.
    WorkflowRunFactory(flow=Flow.CLIENT_MASTER, started_at=now - 2 * H, finished_at=None)
    suspect = ExceptionItemFactory(
        flow=Flow.CLIENT_MASTER, category=ExceptionCategory.DUPLICATE_SUSPECT, external_id="001ACME", created_at=now - H
    )
    # Calls: the ERP twice by deliveries (one retried), the PSA once (refused), the CRM once by a workflow step.
    erp = ConnectedSystemFactory(name="ERP - UK entity", role=SystemRole.ERP)
    psa = ConnectedSystemFactory(name="Harvest", role=SystemRole.PSA)
    crm = ConnectedSystemFactory(name="Salesforce prod", role=SystemRole.CRM)
    delivery = DeliveryFactory(message=messages[0], target_system=erp)
    DeliveryAttemptFactory(delivery=delivery, outcome=AttemptOutcome.RETRYABLE_ERROR, created_at=now - 2 * H)
    DeliveryAttemptFactory(delivery=delivery, number=2, created_at=now - H)
    DeliveryAttemptFactory(
        delivery__message=messages[1],
        delivery__target_system=psa,
        outcome=AttemptOutcome.TERMINAL_ERROR,
        created_at=now - H,
    )
    DeliveryAttemptFactory(delivery=None, system=crm, created_at=now - H)
    return {"suspect": suspect}


def test_duration_and_percent_formats():
    # durations take the unit their size calls for, rates are percentages with one decimal
    assert duration_display(29) == "29 s"
    assert duration_display(8.46) == "8.5 s"
    assert duration_display(119) == "119 s"
    assert duration_display(120) == "2.0 min"
    assert duration_display(100 * 60) == "100 min"
    assert duration_display(2 * 3600) == "2.0 h"
    assert duration_display(40 * 3600) == "40 h"
    assert duration_display(3.5 * 86400) == "3.5 d"
    assert duration_display(None) == "\u2013"
    assert duration_axis_unit([None, 29.0, 12.0]).symbol == "s"
    assert duration_axis_unit([29.0, 3 * 3600]).symbol == "h"
    assert duration_axis_unit([None]).symbol == "s"
    assert percent_display(0.225) == "22.5%"
    assert percent_display(0.0123) == "1.2%"
    assert percent_display(None) == "\u2013"


def test_dashboard_labels_read_in_percent_and_in_units_by_size(client_as):
    # given a week with a 29 s activation, 100 min postings, a 40 h billing, items on every flow kind, and calls
    seed_week()
    # when a leader opens the dashboard
    response = client_as("leader").get(DASHBOARD)
    assert response.status_code == 200
    body = response.content.decode()
    # then no figure is per mille, and the exception rate is items against messages and runs: 3 / (4 + 4)
    assert "\u2030" not in body
    assert text(section(body, "kpi-exception-rate")) == "37.5%"
    assert "3 items for 4 messages and 4 workflow runs" in text(section(body, "kpi-exceptions"))
    # and each duration is written in the unit its size calls for, the activation chart's axis too
    assert "median 29 s" in text(section(body, "kpi-activation"))
    assert "p50 100 min" in text(section(body, "kpi-time-to-erp"))
    assert "median 40 h" in text(section(body, "kpi-milestone"))
    assert "(seconds)</h2>" in body and 'data-unit="s"' in body
    assert "(hours)" not in body
    # and every flow with items is listed with its rate, the run-based flows against their runs
    flows = {
        row.split(" ")[0]: text(row)
        for row in re.findall(r'data-flow="([^"]+)">(.*?)</tr>', section(body, "kpi-exceptions-flow-table"))
        for row in [" ".join(row)]
    }
    assert flows[Flow.TIME_EXPENSE_TO_ERP].endswith("1 4 0 25.0%")
    assert flows[Flow.MILESTONE_BILLING].endswith("Milestone to billing 1 0 2 50.0%")
    assert flows[Flow.CLIENT_MASTER].endswith("Client master 1 0 1 100.0%")
    assert flows[Flow.OPPORTUNITY_TO_PROJECT].endswith("0 0 1 0.0%")
    assert flows[Flow.INVOICE_STATUS].endswith("0 0 0 \u2013")
    # and every system called is listed by role, then name, with its role and its success rate in percent
    rows = [text(row) for row in re.findall(r"<tr data-system[^>]*>(.*?)</tr>", section(body, "kpi-delivery-table"))]
    assert rows == [
        "Salesforce prod CRM 1 1 0 0 100.0%",
        "Harvest PSA 1 0 0 1 0.0%",
        "ERP - UK entity ERP 2 1 1 0 50.0%",
    ]


def test_kpi_api_keeps_its_fractions_and_adds_percentages(client_as):
    # given the same week
    seed_week()
    # when the KPI API is read
    body = client_as("leader").get("/api/v1/kpis/", {"range": "7d"}).json()
    # then the rates stay fractions, with their percentage beside them, and the runs the rates count
    rate = body["exception_rate"]
    assert (rate["messages"], rate["runs"], rate["units"], rate["items"]) == (4, 4, 8, 3)
    assert (rate["rate"], rate["rate_percent"]) == (0.375, 37.5)
    by_flow = {row["flow"]: row for row in rate["by_flow"]}
    assert (by_flow[Flow.MILESTONE_BILLING]["rate"], by_flow[Flow.MILESTONE_BILLING]["rate_percent"]) == (0.5, 50.0)
    systems = [(row["system"], row["system_role"], row["success_rate_percent"]) for row in body["delivery_success"]]
    assert systems == [("Salesforce prod", "crm", 100.0), ("Harvest", "psa", 0.0), ("ERP - UK entity", "erp", 50.0)]


def hrefs(body: str) -> list[str]:
    return [html.unescape(href) for href in re.findall(r'href="([^"#][^"]*)"', body)]


@pytest.mark.parametrize("role", ["leader", "auditor", "integration_admin"])
def test_no_link_on_the_dashboard_answers_403(client_as, role):
    # given a week with a duplicate suspect, and a user of a role that sees the dashboard
    seed_week()
    client = client_as(role)
    body = client.get(DASHBOARD).content.decode()
    # when every link of the page is followed as that user
    links = sorted({href for href in hrefs(body) if href.startswith("/") and not href.startswith("/static/")})
    assert GUIDE in links
    refused = [href for href in links if client.get(href).status_code == 403]
    # then none of them is refused
    assert refused == []


def test_duplicate_suspects_link_only_for_roles_that_open_the_queue(client_as):
    # given an open duplicate suspect
    suspect = seed_week()["suspect"]
    item_url = f"{QUEUE}{suspect.pk}/change/"  # type: ignore[attr-defined]
    # when a leader and a finance approver's admin (auditor: view on the queue) open the dashboard
    leader = client_as("leader").get(DASHBOARD).content.decode()
    auditor = client_as("auditor").get(DASHBOARD).content.decode()
    # then the leader reads the suspect without a link, the auditor gets the link
    assert f"#{suspect.pk}" in text(section(leader, "kpi-duplicates"))  # type: ignore[attr-defined]
    assert item_url not in leader
    assert item_url in auditor


def test_the_403_page_names_the_permission_and_leads_back(client_as):
    # when a leader opens the exception queue
    response = client_as("leader").get(QUEUE)
    # then the hub's 403 page says what the page needs and who has it, in the hub's look, with a way back
    assert response.status_code == 403
    body = response.content.decode()
    assert "You cannot open this page" in body
    assert "exception_queue.view_exceptionitem" in body
    assert "finance approver" in text(body) and "auditor" in text(body)
    assert 'id="hub-nav"' in body and "hub/theme.css" in body
    assert f'id="hub-forbidden-back" href="{DASHBOARD}"' in body


def test_the_403_page_of_a_hub_page_and_of_the_api(client_as):
    # the trace page names its permission; a finance approver's way back is the open queue
    response = client_as("leader").get("/admin/trace/")
    assert response.status_code == 403 and "sync.view_message" in response.content.decode()
    approver = client_as("finance_approver").get(DASHBOARD)
    assert approver.status_code == 403
    assert "insights.view_kpis" in approver.content.decode()
    assert f'href="{QUEUE}?state__exact=open"' in approver.content.decode()
    # under /api/ the refusal stays problem+json
    request = RequestFactory().get("/api/v1/unknown/")
    api = permission_denied_view(request, Exception())
    assert api.status_code == 403 and api["Content-Type"].startswith("application/problem+json")


def test_favicon(client_as, client):
    # the icon exists, every admin page links it, and /favicon.ico leads to it
    assert finders.find("favicon.svg")
    assert 'rel="icon"' in client_as("leader").get(DASHBOARD).content.decode()
    response = client.get("/favicon.ico")
    assert response.status_code == 302
    assert response["Location"].endswith("favicon.svg")


def test_the_leaders_guide_is_a_page_of_the_hub(client_as):
    # when a leader follows the dashboard's guide link
    response = client_as("leader").get(GUIDE)
    # then docs/leader.md reads as a page: headings, the figures, the units
    assert response.status_code == 200
    body = response.content.decode()
    assert '<h2 id="the-figures">The figures</h2>' in body
    assert '<h3 id="exception-rate">Exception rate</h3>' in body
    assert "<li>" in body and "<code>29 s</code>" in body
    # and a role without the KPI permission is refused it
    assert client_as("analyst").get(GUIDE).status_code == 403
