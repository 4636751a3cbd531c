"""An analyst fixes a broken inbound mapping in the mapping editor and replays the failed time entry from the
exception queue with the fixed mapping; the entry is then delivered to the ERP."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from mappings.models import MappingSample, MappingSet
from mappings.services import mapping_set_create_draft
from sync.choices import MessageStatus
from tests.browser.conftest import login, screenshot
from tests.browser.time_entry_flow import INBOUND_RULES, erp_time_entries, run_pipeline, time_entry_flow_build

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "test-password-123"
# The published mapping reads the hours from a field the PSA does not send.
BROKEN_RULES = [(target, "hours_worked" if target == "hours" else source) for target, source in INBOUND_RULES]


@pytest.fixture
def failed(live_server, make_role_user):
    """A time entry that failed mapping, the mapping's draft v2 to fix it in, and an analyst."""
    flow = time_entry_flow_build(live_server_url=live_server.url, inbound_rules=BROKEN_RULES)
    entry = flow.entry(hours=7.5)
    message = flow.send(entry)
    item = ExceptionItem.objects.get(message=message)
    assert (message.status, item.category) == (MessageStatus.FAILED, ExceptionCategory.VALIDATION), item.reason
    draft = mapping_set_create_draft(mapping_set=flow.inbound)
    make_role_user("analyst", username="ana.lyst")
    return flow, entry, message, item, draft


def test_analyst_fixes_the_mapping_and_replays_the_item_which_is_delivered(page: Page, live_server, failed):
    _flow, entry, message, item, draft = failed
    # given the analyst signed in: they land on the mapping sets
    login(page, live_server, "ana.lyst", PASSWORD)
    expect(page).to_have_url(re.compile(r"/admin/mappings/mappingset/$"))
    screenshot(page, "analyst-landing-mappings")

    # when they open the queue from the hub bar, their validation item is there with the failed field
    page.locator("#nav-queue").click()
    page.locator(f"a.item-link[href$='/{item.pk}/change/']").click()
    expect(page.locator("#failed-rules tr.failed-rule")).to_have_count(1)
    expect(page.locator("#failed-rules")).to_contain_text("hours")
    expect(page.locator("form.action-approve")).to_have_count(0)
    expect(page.locator("form.action-reject")).to_have_count(0)  # rejecting is finance's decision
    expect(page.locator("form.action-replay")).to_have_count(1)
    screenshot(page, "analyst-item-validation")

    # when they fix the hours rule in the editor of the draft and publish it
    page.goto(f"{live_server.url}/admin/mappings/mappingset/{draft.pk}/editor/")
    # (the failed message is offered as a sample; its fields are clicked, not typed)
    page.locator("#sample-picker").select_option("message:0")
    hours_rule = page.locator("#rules-list .rule[data-target=hours]")
    hours_rule.click()
    hours_rule.locator(".source-path button.source-remove").click()
    page.locator("#sample-tree button.me-field[data-path='hours']").click()
    expect(hours_rule.locator(".source-path")).to_have_attribute("data-path", "hours")
    page.fill("#change-reason", "PSA sends the hours as 'hours'")
    page.click("#save-rules")
    expect(page.locator("#save-status")).to_contain_text("Saved")
    page.click("#publish")
    expect(page.locator("#confirm-publish")).to_be_visible()
    if not MappingSample.objects.filter(lineage=draft.lineage).exists():
        # nothing to replay yet: publishing unchecked takes a written reason, kept in the history
        expect(page.locator("#no-sample-reason-box")).to_be_visible()
        page.fill("#no-sample-reason", "The failed entry itself is the check: it is replayed next")
    page.click("#confirm-publish")
    expect(page.locator("#mapping-status")).to_have_text("Published")
    screenshot(page, "analyst-mapping-published")
    assert MappingSet.objects.get(pk=draft.pk).status == "published"

    # and replay the item with the mapping published now
    page.locator("#nav-queue").click()
    page.locator(f"a.item-link[href$='/{item.pk}/change/']").click()
    replay = page.locator("form.action-replay")
    replay.locator("select[name=mapping]").select_option("current")
    replay.locator("input[name=reason]").fill("Hours rule fixed in v2")
    replay.locator("button[type=submit]").click()

    # then the item is replayed, and once the pipeline runs the entry is delivered to the ERP once
    expect(page.locator(".messagelist")).to_contain_text("Replay: done")
    expect(page.locator("#item-state")).to_have_text("Replayed")
    screenshot(page, "analyst-item-replayed")
    message = run_pipeline(message)
    assert message.status == MessageStatus.DELIVERED
    assert message.mapping_version == 2
    assert erp_time_entries(entry["id"]) == 1
    item.refresh_from_db()
    assert item.state == ExceptionState.REPLAYED
    assert list(item.decisions.values_list("action", "user__username")) == [(DecisionAction.REPLAY, "ana.lyst")]
