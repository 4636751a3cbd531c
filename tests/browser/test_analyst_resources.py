"""An analyst finds a person under Workflows → Resources, relinks them to another ERP employee with a reason, and
sees who changed what and why in the history; an auditor reads the list but cannot change it."""

from __future__ import annotations

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from connectors.choices import SystemRole
from connectors.models import ConnectedSystem
from governance.models import LegalEntity
from tests.browser.conftest import login, screenshot
from workflows.models import ResourceLink
from workflows.resource_links import resource_link_save

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "test-password-123"
REASON = "HR-311 Ben moved to the UK payroll"


@pytest.fixture
def resources():
    uk = LegalEntity.objects.create(code="UK01", name="Firm UK Ltd", country="GB", base_currency="GBP", region="emea")
    psa = ConnectedSystem.objects.create(
        name="PSA", slug="psa", role=SystemRole.PSA, connector_type="harvest_psa", base_url="http://127.0.0.1:9/"
    )
    erp = ConnectedSystem.objects.create(
        name="ERP UK", slug="erp-uk", role=SystemRole.ERP, connector_type="sandbox_erp", base_url="http://127.0.0.1:9/"
    )
    erp.legal_entities.add(uk)
    links = {}
    for person, name, employee in (("4010", "Alice Hartley", "E-2"), ("4011", "Ben Okafor", "E-3")):
        links[person] = resource_link_save(
            link=ResourceLink(
                psa_system=psa,
                person_ref=person,
                person_name=name,
                erp_system=erp,
                legal_entity=uk,
                employee_ref=employee,
                employee_name=name,
            ),
            reason="first load",
        )
    return links


def test_analyst_relinks_a_person_and_the_history_says_who_and_why(page: Page, live_server, resources, make_role_user):
    # given an analyst signed in
    make_role_user("analyst", username="ana.lyst")
    login(page, live_server, "ana.lyst", PASSWORD)

    # when the analyst searches the resources for Ben
    page.goto(live_server.url + reverse("admin:workflows_resourcelink_changelist"))
    page.fill("#searchbar", "okafor")
    page.locator("#changelist-search input[type=submit]").click()

    # then only Ben is listed, with his ERP employee and legal entity
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Ben Okafor (4011)")
    expect(rows.first).to_contain_text("E-3")
    expect(rows.first).to_contain_text("UK01")
    screenshot(page, "analyst-resources-list")

    # when the analyst opens him and books his time to another employee, with a reason
    rows.first.get_by_role("link", name="Ben Okafor (4011)").click()
    page.fill("#id_employee_ref", "E-31")
    page.fill("#id_change_reason", REASON)
    page.locator("[name=_save]").click()
    expect(page.locator("ul.messagelist li.success")).to_contain_text("was changed successfully")

    # then the link is saved and its history names the analyst, the reason and the changed field
    assert ResourceLink.objects.get(pk=resources["4011"].pk).employee_ref == "E-31"
    page.goto(live_server.url + reverse("admin:workflows_resourcelink_history", args=[resources["4011"].pk]))
    table = page.locator("#change-history")
    expect(table).to_contain_text("ana.lyst")
    expect(table).to_contain_text(REASON)
    expect(table).to_contain_text("Employee ref")
    screenshot(page, "analyst-resource-history")


def test_auditor_reads_resources_but_has_no_way_to_change_them(page: Page, live_server, resources, make_role_user):
    # given an auditor signed in
    make_role_user("auditor", username="audrey.auditor")
    login(page, live_server, "audrey.auditor", PASSWORD)

    # when the auditor opens the list and a resource
    page.goto(live_server.url + reverse("admin:workflows_resourcelink_changelist"))
    expect(page.locator("#result_list tbody tr")).to_have_count(2)
    expect(page.locator("a.addlink")).to_have_count(0)
    page.goto(live_server.url + reverse("admin:workflows_resourcelink_change", args=[resources["4010"].pk]))

    # then nothing on the page can be changed
    for name in ("_save", "_continue", "_addanother"):
        expect(page.locator(f"[name={name}]")).to_have_count(0)
    expect(
        page.locator("#content-main form").first.locator("input:not([type=hidden]), select, textarea")
    ).to_have_count(0)
    screenshot(page, "auditor-resource-read-only")
