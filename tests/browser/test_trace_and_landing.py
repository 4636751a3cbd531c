"""The trace page shows a delivered time entry's timeline, found by its id in the ERP; each role lands on its page."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from sync.choices import MessageStatus
from tests.browser.conftest import login, screenshot
from tests.browser.time_entry_flow import run_pipeline, time_entry_flow_build
from workflows.models import TimeExpensePosting

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "test-password-123"


def test_the_trace_page_shows_the_timeline_of_a_delivered_message(page: Page, live_server, make_role_user):
    # given a time entry delivered to the sandbox ERP
    flow = time_entry_flow_build(live_server_url=live_server.url)
    message = run_pipeline(flow.send(flow.entry(hours=6)))
    assert message.status == MessageStatus.DELIVERED, message.last_error
    erp_id = TimeExpensePosting.objects.get(message=message).external_id
    assert erp_id
    make_role_user("integration_admin", username="otto.ops")
    login(page, live_server, "otto.ops", PASSWORD)

    # when the trace page is searched by the entry's id in the ERP
    page.locator("#nav-trace").click()
    page.fill("#trace-q", erp_id)
    page.get_by_role("button", name="Trace").click()

    # then the message's timeline shows every stage, the mapping version and the line posted to the ERP
    trace = page.locator(f"section.trace[data-correlation-id='{message.correlation_id}']")
    expect(trace).to_have_count(1)
    entries = trace.locator(".hub-timeline li")
    expect(entries.first).to_have_attribute("data-stage", "received")
    expect(trace.locator("li[data-stage='received']")).to_contain_text(f"Received from {flow.psa.slug}")
    expect(trace.locator("li[data-stage='mapped']")).to_contain_text("(version 1)")
    expect(trace.locator("li[data-stage='validated']")).to_have_count(1)
    posted = trace.locator("li[data-stage='posting:posted']")
    expect(posted).to_contain_text(f"Posted line to {flow.erp.slug}: posted in the erp")
    expect(posted).to_contain_text(f"line {erp_id} in the ERP")
    expect(trace.locator("li[data-stage='delivered']")).to_have_count(1)
    screenshot(page, "trace-delivered-message")

    # and the same work is found by its correlation id and by the PSA's entry id
    for query in (message.correlation_id, message.canonical_id):
        page.fill("#trace-q", query)
        page.get_by_role("button", name="Trace").click()
        expect(page.locator(f"section.trace[data-correlation-id='{message.correlation_id}']")).to_have_count(1)


LANDINGS = [
    ("finance_approver", r"/admin/exception_queue/exceptionitem/\?state__exact=open$", "Exception queue"),
    ("analyst", r"/admin/mappings/mappingset/$", "mapping set"),
    ("auditor", r"/admin/history/$", "Change history"),
    ("integration_admin", r"/admin/$", "Systems, mappings, governance and operations"),
]


@pytest.mark.parametrize(("role", "url", "heading"), LANDINGS, ids=[role for role, _, _ in LANDINGS])
def test_each_role_lands_on_its_own_page_after_login(page: Page, live_server, make_role_user, role, url, heading):
    # given a user of the role
    make_role_user(role, username=f"{role}.user")
    # when they sign in
    login(page, live_server, f"{role}.user", PASSWORD)
    # then they land on their role's page, with the hub bar showing the pages of their role
    expect(page).to_have_url(re.compile(url))
    expect(page.locator("#content h1").first).to_contain_text(heading, ignore_case=True)
    expect(page.locator("#hub-nav")).to_be_visible()
    expect(page.locator("#nav-audit")).to_have_count(1 if role in ("auditor", "integration_admin") else 0)
    screenshot(page, f"landing-{role}")
