"""Finance decides a duplicate suspect by comparing the account with each candidate side by side and clicking the
one it is; an analyst gets the same choice."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from exception_queue.choices import DecisionAction, ExceptionState
from exception_queue.models import Decision, ExceptionItem
from tests.browser.conftest import login, screenshot
from workflows.client_master import DuplicateSuspectHeld, client_directory_entry_save, client_master_ensure
from workflows.models import ClientDirectoryEntry
from workflows.tests.conftest import firm_build

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "test-password-123"


@pytest.fixture
def suspect_item(live_server) -> ExceptionItem:
    """A new CRM account that looks like two known clients: one by name and web domain, one by tax id."""
    firm = firm_build(live_server.url)
    client_directory_entry_save(
        canonical_client={"id": "001NWT", "name": "Northwind Traders", "website": "https://northwind.example"},
        legal_entity=firm.entity,
    )
    client_directory_entry_save(
        canonical_client={"id": "001NWG", "name": "NW Trading Group", "registration_number": "GB123456789"},
        legal_entity=firm.entity,
    )
    with pytest.raises(DuplicateSuspectHeld) as held:
        client_master_ensure(
            canonical_client={
                "id": "001NEW",
                "name": "Northwind Traders Ltd",
                "website": "https://www.northwind.example",
                "registration_number": "GB123456789",
                "status": "active",
            },
            legal_entity=firm.entity,
        )
    return ExceptionItem.objects.get(pk=held.value.item_id)


def test_finance_links_a_duplicate_suspect_to_the_second_candidate_by_clicking_it(
    page: Page, live_server, suspect_item, make_role_user
):
    make_role_user("finance_approver", username="fiona.finance")
    login(page, live_server, "fiona.finance", PASSWORD)
    page.goto(live_server.url + reverse("admin:exception_queue_exceptionitem_change", args=[suspect_item.pk]))

    # then the account and both candidates are side by side, with each key's score and the ids they hold
    panel = page.locator("#duplicate-compare")
    expect(panel.locator("#duplicate-suspect .cand-name")).to_have_text("Northwind Traders Ltd")
    cards = panel.locator(".hub-card.candidate")
    expect(cards).to_have_count(2)
    first, second = cards.nth(0), cards.nth(1)
    expect(first).to_have_attribute("data-candidate", "hub:001NWT")
    expect(first).to_contain_text("northwind.example")
    expect(first).to_contain_text("score 100.0")
    expect(second).to_have_attribute("data-candidate", "hub:001NWG")
    expect(second).to_contain_text("GB123456789")
    expect(second.locator("tr", has_text="Matched on")).to_contain_text("tax_id")
    # and the generic form offers the candidates as a list, not a box to type into
    expect(page.locator("form.action-link_existing select[name=candidate] option")).to_have_count(2)
    screenshot(page, "finance-duplicate-side-by-side")

    # when finance links the account to the second candidate by clicking it
    second.locator("input[name=reason]").fill("Same VAT number: NW Trading Group is its registered name")
    second.get_by_role("button", name="Link to this one").click()
    page.wait_for_url(re.compile(rf"/exceptionitem/{suspect_item.pk}/change/"))

    # then the item is resolved, the decision names the chosen client, and the account is linked to it
    expect(page.locator("#item-state")).to_have_text("Resolved")
    expect(page.locator("#decisions")).to_contain_text("client 001NWG")
    screenshot(page, "finance-duplicate-linked")
    suspect_item.refresh_from_db()
    assert suspect_item.state == ExceptionState.RESOLVED
    decision = Decision.objects.get(item=suspect_item, action=DecisionAction.LINK_EXISTING)
    assert decision.user.username == "fiona.finance"
    assert ClientDirectoryEntry.objects.get(source_key="hub:001NEW").linked_to == "001NWG"


def test_an_analyst_is_offered_the_same_choice(client, suspect_item, make_role_user):
    analyst = make_role_user("analyst", username="ana.lyst")
    client.force_login(analyst)
    response = client.get(reverse("admin:exception_queue_exceptionitem_change", args=[suspect_item.pk]))
    assert response.status_code == 200
    text = response.content.decode()
    assert text.count('class="hub-link-candidate"') == 2
    assert 'value="hub:001NWG"' in text
