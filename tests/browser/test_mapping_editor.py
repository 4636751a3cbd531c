"""An analyst edits a mapping in the browser: the preview follows the edit without a reload, then publishing
shows the regression diff of the saved sample and, once confirmed, puts the new version in force."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from connectors.tests.factories import ConnectedSystemFactory
from mappings.models import MappingSet, ValueMap, ValueMapEntry
from mappings.services import (
    canonical_entities_install,
    mapping_sample_save,
    mapping_set_create_draft,
    mapping_set_publish,
)
from mappings.tests.test_mapping_sets import SAMPLE, opportunity_mapping
from tests.browser.conftest import login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "test-password-123"


@pytest.fixture
def draft_v2(make_role_user):
    """CRM opportunity mapping: v1 published with a saved sample, v2 a draft copy; an analyst to edit it."""
    make_role_user("analyst", username="ana.lyst")
    canonical_entities_install()
    stage = ValueMap.objects.create(name="sf-stage", unmapped="error")
    ValueMapEntry.objects.create(value_map=stage, source_value="Closed Won", target_value="closed_won")
    system = ConnectedSystemFactory(slug="crm-test", name="Salesforce test")
    v1 = opportunity_mapping(system)
    mapping_sample_save(mapping_set=v1, name="closed won deal", payload=SAMPLE)
    mapping_set_publish(mapping_set=v1, confirm=True)
    return mapping_set_create_draft(mapping_set=v1)


def rule_card(page: Page, target: str):
    return page.locator(f"#rules-list .rule[data-target='{target}']")


def test_analyst_edits_a_rule_sees_the_preview_change_and_publishes_with_the_diff(page: Page, live_server, draft_v2):
    # given the analyst signed in, on the editor of the draft
    login(page, live_server, "ana.lyst", PASSWORD)
    page.goto(live_server.url + reverse("admin:mappings_mappingset_changelist"))
    page.locator(f"a.mapping-editor-link[href$='/{draft_v2.pk}/editor/']").click()
    page.wait_for_url(re.compile(rf"/{draft_v2.pk}/editor/$"))
    output = page.locator("#preview-output")

    # then the saved sample is picked and mapped by the current rules
    expect(page.locator("#sample-picker")).to_have_value("sample:0")
    expect(output).to_contain_text('"name": "Atlas"')
    expect(output).to_contain_text('"stage": "closed_won"')
    expect(page.locator("#no-errors")).to_be_visible()
    expect(page.locator("#rules-list .rule")).to_have_count(5)
    screenshot(page, "mapping-editor")

    # when the analyst adds an "upper" step to the name rule (a marker on window shows there is no reload)
    page.evaluate("window.__sameDocument = true")
    rule_card(page, "name").locator("select.add-step").select_option("upper")

    # then the live output changes on the same page
    expect(output).to_contain_text('"name": "ATLAS"')
    assert page.evaluate("window.__sameDocument === true")
    expect(page.locator("#publish")).to_be_disabled()  # unsaved rules are not what would be published
    screenshot(page, "mapping-editor-preview-changed")

    # when a power user types a typo'd transform in the advanced JSON view, the rule names the step, and the
    # rest still maps; the exact JSON read back applies without a change
    page.locator("#advanced summary").click()
    original = page.locator("#advanced-json").input_value()
    page.locator("#advanced-json").fill(original.replace('"transform": "upper"', '"transform": "uper"', 1))
    page.click("#apply-json")
    expect(page.locator("#rules-list .rule.has-errors .row-errors")).to_contain_text("unknown transform 'uper'")
    expect(output).to_contain_text('"currency": "GBP"')
    page.locator("#advanced-json").fill(original)
    page.click("#apply-json")
    expect(page.locator("#rules-list .rule.has-errors")).to_have_count(0)
    assert page.locator("#advanced-json").input_value() == original
    expect(output).to_contain_text('"name": "ATLAS"')

    # when the rules are saved with a reason
    page.fill("#change-reason", "MAP-12 names in capitals")
    page.click("#save-rules")
    expect(page.locator("#save-status")).to_have_text("Saved 5 rule(s).")
    assert draft_v2.rules.get(target_path="name").steps == [{"transform": "upper"}]

    # and Publish is clicked, the regression report shows the diff of the saved sample
    page.click("#publish")
    diff = page.locator("#publish-report .publish-sample[data-sample='closed won deal'] tr.diff-row")
    expect(diff).to_have_count(1)
    expect(diff.locator(".diff-path")).to_have_text("name")
    expect(diff.locator(".diff-before")).to_have_text("Atlas")
    expect(diff.locator(".diff-after")).to_have_text("ATLAS")
    expect(page.locator("#confirm-publish")).to_be_visible()
    assert MappingSet.objects.get(pk=draft_v2.pk).status == "draft"  # the dry run changed nothing
    screenshot(page, "mapping-editor-publish-diff")

    # when the analyst confirms
    page.click("#confirm-publish")

    # then v2 is published, v1 retired, and the editor shows the published version read-only
    expect(page.locator("#mapping-status")).to_have_text("Published")
    expect(page.locator("#readonly-notice")).to_be_visible()
    expect(page.locator(".messagelist")).to_contain_text("Published CRM opportunity v2")
    statuses = dict(MappingSet.objects.values_list("version", "status"))
    assert statuses == {1: "retired", 2: "published"}
    screenshot(page, "mapping-editor-published")
