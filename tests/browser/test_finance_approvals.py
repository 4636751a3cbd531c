"""Finance approves held time entries in the browser: posted to the ERP once; a second approval by the same
person on a large entry is refused on the page and changes nothing."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from sync.choices import MessageStatus
from tests.browser.conftest import login, screenshot
from tests.browser.time_entry_flow import erp_time_entries, run_pipeline, time_entry_flow_build

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "test-password-123"


@pytest.fixture
def flow(live_server):
    """Time entries above 1,000 GBP are held; from 5,000 GBP two different approvers are needed."""
    return time_entry_flow_build(
        live_server_url=live_server.url, approval_threshold=Decimal("1000"), second_threshold=Decimal("5000")
    )


def open_item(page: Page, item: ExceptionItem) -> None:
    page.locator(f"a.item-link[href$='/{item.pk}/change/']").click()
    page.wait_for_url(re.compile(rf"/exceptionitem/{item.pk}/change/$"))


def approve(page: Page, reason: str) -> None:
    form = page.locator("form.action-approve")
    form.locator("input[name=reason]").fill(reason)
    form.locator("button[type=submit]").click()
    page.wait_for_load_state()


def test_finance_approves_a_held_time_entry_and_it_is_posted_once(page: Page, live_server, flow, make_role_user):
    # given an approved PSA time entry of 8 h at 250 GBP (2,000 GBP) held above the threshold
    entry = flow.entry(hours=8)
    message = flow.send(entry)
    item = ExceptionItem.objects.get(message=message)
    assert message.status == MessageStatus.HELD, item.reason
    assert (message.status, item.category, item.required_approvals) == (
        MessageStatus.HELD,
        ExceptionCategory.APPROVAL_REQUIRED,
        1,
    )
    assert erp_time_entries(entry["id"]) == 0
    make_role_user("finance_approver", username="fiona.finance")

    # when the finance approver signs in, they land on the open queue, which lists the item with its amount
    login(page, live_server, "fiona.finance", PASSWORD)
    expect(page).to_have_url(re.compile(r"/admin/exception_queue/exceptionitem/\?state__exact=open$"))
    row = page.locator("#result_list tbody tr").filter(has=page.locator(f"a.item-link[href$='/{item.pk}/change/']"))
    expect(row).to_contain_text("2,000.00 GBP")
    expect(row).to_contain_text("0 of 1")
    expect(page.locator("strong[data-category='approval_required']")).to_have_text("1")
    screenshot(page, "finance-queue")

    # and opens the item: the payload, the trace so far and the approval state are on the page
    open_item(page, item)
    expect(page.locator("#approval-count")).to_have_text("0 of 1 approval")
    expect(page.locator("#payload")).to_contain_text(f'"id": "{entry["id"]}"')
    expect(page.locator(".hub-timeline li[data-stage='held']")).to_have_count(1)
    expect(page.locator("form.action-replay")).to_have_count(0)  # approvals are approved or rejected
    screenshot(page, "finance-item-held")

    # when they approve with a reason
    approve(page, "Workshop week agreed with the client")

    # then the page shows the approval and who gave it
    expect(page.locator(".messagelist")).to_contain_text("Approve: done")
    expect(page.locator("#item-state")).to_have_text("Approved")
    expect(page.locator("#approvers")).to_have_text("fiona.finance")
    expect(page.locator("#actions")).to_have_count(0)
    screenshot(page, "finance-item-approved")

    # and once the pipeline runs, the entry is posted to the ERP exactly once, even if it runs again
    message = run_pipeline(message)
    assert message.status == MessageStatus.DELIVERED
    assert erp_time_entries(entry["id"]) == 1
    run_pipeline(message)
    assert erp_time_entries(entry["id"]) == 1
    item.refresh_from_db()
    assert item.state == ExceptionState.APPROVED
    assert list(item.decisions.values_list("action", "user__username")) == [(DecisionAction.APPROVE, "fiona.finance")]


def test_the_same_person_cannot_give_the_second_approval_on_a_large_entry(
    page: Page, live_server, flow, make_role_user
):
    # given 24 h at 250 GBP (6,000 GBP): two different approvers are needed
    entry = flow.entry(hours=24)
    message = flow.send(entry)
    item = ExceptionItem.objects.get(message=message)
    assert item.required_approvals == 2
    make_role_user("finance_approver", username="fiona.finance")
    make_role_user("finance_approver", username="frank.finance")
    login(page, live_server, "fiona.finance", PASSWORD)
    page.goto(live_server.url + reverse("admin:exception_queue_exceptionitem_change", args=[item.pk]))
    expect(page.locator("#approval-count")).to_have_text("0 of 2 approvals")

    # when the first approver approves
    approve(page, "Large but within the statement of work")

    # then the page shows 1 of 2 and who approved, and the entry stays held
    expect(page.locator("#approval-count")).to_have_text("1 of 2 approvals")
    expect(page.locator("#approvers")).to_have_text("fiona.finance")
    expect(page.locator("#item-state")).to_have_text("Open")
    screenshot(page, "finance-item-one-of-two")

    # when the same person tries to give the second approval
    approve(page, "Approving again")

    # then the page says they cannot, and nothing changed
    expect(page.locator(".messagelist .error")).to_contain_text("You already approved this item")
    expect(page.locator("#approval-count")).to_have_text("1 of 2 approvals")
    screenshot(page, "finance-second-approval-refused")
    item.refresh_from_db()
    message.refresh_from_db()
    assert item.state == ExceptionState.OPEN and item.decisions.count() == 1
    assert message.status == MessageStatus.HELD
    run_pipeline(message)
    assert erp_time_entries(entry["id"]) == 0

    # when a different finance approver gives the second approval
    page.context.clear_cookies()
    login(page, live_server, "frank.finance", PASSWORD)
    page.goto(live_server.url + reverse("admin:exception_queue_exceptionitem_change", args=[item.pk]))
    approve(page, "Second approval")

    # then it is approved by both and posted once
    expect(page.locator("#approvers")).to_have_text("fiona.finance, frank.finance")
    expect(page.locator("#item-state")).to_have_text("Approved")
    assert run_pipeline(message).status == MessageStatus.DELIVERED
    assert erp_time_entries(entry["id"]) == 1


def test_an_auditor_reads_a_held_item_without_actions_and_a_forged_approval_is_refused(
    page: Page, live_server, flow, make_role_user
):
    # given a held time entry and an auditor
    entry = flow.entry(hours=8)
    message = flow.send(entry)
    item = ExceptionItem.objects.get(message=message)
    make_role_user("auditor", username="audrey.auditor")
    login(page, live_server, "audrey.auditor", PASSWORD)
    item_url = live_server.url + reverse("admin:exception_queue_exceptionitem_change", args=[item.pk])

    # when the auditor opens the item
    page.goto(item_url)

    # then they read it all, with no action
    expect(page.locator("#approval-count")).to_have_text("0 of 1 approval")
    expect(page.locator("#payload")).to_contain_text(entry["id"])
    expect(page.locator("#actions")).to_have_count(0)
    expect(page.locator("#content-main form")).to_have_count(0)
    screenshot(page, "auditor-item-read-only")

    # and a forged approval is refused, with nothing changed
    token = page.context.cookies()
    csrf = next(cookie["value"] for cookie in token if cookie["name"] == "csrftoken")
    act = live_server.url + reverse("admin:exception_queue_exceptionitem_act", args=[item.pk])
    response = page.request.post(
        act, form={"csrfmiddlewaretoken": csrf, "action": "approve", "reason": "forged"}, headers={"Referer": item_url}
    )
    assert response.status == 403
    assert "CSRF" not in response.text()
    item.refresh_from_db()
    message.refresh_from_db()
    assert item.state == ExceptionState.OPEN and not item.decisions.exists()
    assert message.status == MessageStatus.HELD
    assert run_pipeline(message).status == MessageStatus.HELD
    assert erp_time_entries(entry["id"]) == 0
