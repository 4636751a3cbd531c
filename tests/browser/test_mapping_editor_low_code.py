"""An analyst maps a new field without typing JSON: clicks it in the sample tree, picks its canonical target,
adds a `case` step through its form, sees a bad date reported on the date rule, and publishes against the
samples the hub kept from real messages, with the output diff shown."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from connectors.tests.factories import ConnectedSystemFactory
from mappings.models import CanonicalEntity, FieldRule, MappingSample, MappingSet
from mappings.services import (
    canonical_entities_install,
    field_rule_save,
    mapping_sample_capture,
    mapping_set_create,
    mapping_set_create_draft,
    mapping_set_publish,
)
from tests.browser.conftest import login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "test-password-123"

ENTRY = {
    "EntryId": "te-881",
    "Person": "res-7",
    "Project": "prj-2",
    "Day": "2026-03-02",
    "LoggedOn": "2026-13-45",
    "Hours": 7.5,
    "Billable": True,
    "Status": "submitted",
    "Entity": "UK01",
    "WorkType": "onsite",
}
RULES = [
    ("id", "EntryId"),
    ("resource_id", "Person"),
    ("project_id", "Project"),
    ("date", "Day"),
    ("hours", "Hours"),
    ("billable", "Billable"),
    ("approval_status", "Status"),
    ("legal_entity_code", "Entity"),
]


@pytest.fixture
def time_draft(make_role_user):
    """PSA time entries: v1 published, a real payload kept by the pipeline's capture, v2 a draft."""
    make_role_user("analyst", username="ana.lyst")
    canonical_entities_install()
    system = ConnectedSystemFactory(slug="psa-test", name="PSA test")
    v1 = mapping_set_create(
        name="PSA time entry", system=system, entity=CanonicalEntity.objects.get(name="time_entry"), direction="inbound"
    )
    for position, (target, source) in enumerate(RULES):
        field_rule_save(rule=FieldRule(mapping_set=v1, position=position, target_path=target, source_paths=[source]))
    mapping_set_publish(mapping_set=v1, confirm=True)
    mapping_sample_capture(mapping_set=v1, payload=ENTRY, message_id=881)
    return mapping_set_create_draft(mapping_set=v1)


def test_analyst_maps_a_field_by_clicking_adds_a_case_step_and_publishes_against_kept_samples(
    page: Page, live_server, time_draft
):
    # given the analyst on the draft's editor, the kept sample picked and shown as a tree
    login(page, live_server, "ana.lyst", PASSWORD)
    page.goto(live_server.url + reverse("admin:mappings_mappingset_editor", args=[time_draft.pk]))
    page.wait_for_url(re.compile(rf"/{time_draft.pk}/editor/$"))
    output = page.locator("#preview-output")
    expect(page.locator("#sample-picker")).to_have_value("sample:0")
    expect(page.locator("#sample-tree button.me-field[data-path='WorkType']")).to_contain_text("string")
    expect(page.locator("#sample-tree button.me-field[data-path='WorkType']")).to_contain_text("onsite")
    expect(page.locator("#no-errors")).to_be_visible()
    screenshot(page, "mapping-editor-low-code")

    # when the analyst clicks WorkType in the sample (no rule active: a new rule starts from it)
    page.locator("#sample-tree button.me-field[data-path='WorkType']").click()
    new_rule = page.locator("#rules-list .rule.me-active")
    expect(new_rule.locator(".source-path")).to_have_attribute("data-path", "WorkType")
    # and picks its target from the canonical schema (required fields are starred in the list)
    expect(new_rule.locator("select[name=target_path] option[value=date]")).to_contain_text("date *")
    new_rule.locator("select[name=target_path]").select_option("role_code")
    expect(output).to_contain_text('"role_code": "onsite"')

    # and adds a case step through its form
    new_rule = page.locator("#rules-list .rule[data-index='8']")
    new_rule.locator("select.add-step").select_option("case")
    step = new_rule.locator(".me-step[data-transform=case]")
    step.locator("button.add-item").click()
    step.locator("input[name=param-cases-when]").fill("onsite")
    step.locator("input[name=param-cases-then]").fill("CONSULTANT")
    step.locator("input[name=param-default]").fill("STAFF")
    expect(output).to_contain_text('"role_code": "CONSULTANT"')
    screenshot(page, "mapping-editor-case-form")

    # when the date rule takes a field holding a bad date, the error is shown on the date rule itself
    date_rule = page.locator("#rules-list .rule[data-target=date]")
    date_rule.click()
    date_rule.locator(".source-path[data-path=Day] button.source-remove").click()
    page.locator("#sample-tree button.me-field[data-path='LoggedOn']").click()
    expect(date_rule.locator(".row-errors")).to_contain_text("is not a 'date'")
    expect(page.locator("#rules-list .rule.has-errors")).to_have_count(1)
    screenshot(page, "mapping-editor-rule-error")
    # and taking the right field back clears it
    date_rule.locator(".source-path[data-path=LoggedOn] button.source-remove").click()
    page.locator("#sample-tree button.me-field[data-path='Day']").click()
    expect(page.locator("#rules-list .rule.has-errors")).to_have_count(0)

    # when the rules are saved with a reason
    page.fill("#change-reason", "Role code from the work type")
    page.click("#save-rules")
    expect(page.locator("#save-status")).to_have_text("Saved 9 rule(s).")
    saved = time_draft.rules.get(target_path="role_code")
    assert saved.source_paths == ["WorkType"]
    assert saved.steps == [
        {"transform": "case", "params": {"cases": [{"when": "onsite", "then": "CONSULTANT"}], "default": "STAFF"}}
    ]
    assert time_draft.rules.get(target_path="date").source_paths == ["Day"]

    # and Publish replays the kept sample: the diff shows the new field
    page.click("#publish")
    diff = page.locator("#publish-report .publish-sample[data-sample='message #881'] tr.diff-row")
    expect(diff).to_have_count(1)
    expect(diff.locator(".diff-path")).to_have_text("role_code")
    expect(diff.locator(".diff-after")).to_have_text("CONSULTANT")
    expect(page.locator("#no-sample-reason-box")).to_be_hidden()
    screenshot(page, "mapping-editor-kept-sample-diff")
    page.click("#confirm-publish")
    expect(page.locator("#mapping-status")).to_have_text("Published")
    assert MappingSet.objects.get(pk=time_draft.pk).status == "published"
    assert MappingSample.objects.filter(origin="captured").count() == 1
