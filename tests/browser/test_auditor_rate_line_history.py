"""An auditor sees a rate-card line's rate change in the rate card's history and compare view, follows the change
feed (which names the card and its version) to it, and exports the configuration history as CSV."""

from __future__ import annotations

import csv
import datetime
import io
import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from governance.models import LegalEntity, RateCard, RateCardLine
from integrationhub.models import AuditEvent
from tests.browser.conftest import login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "test-password-123"
REASON_RATE = "FIN-77 analyst rate for 2026"


def saved_by(obj, user, reason):
    obj._history_user = user
    obj._change_reason = reason
    obj.save()
    return obj


@pytest.fixture
def rate_card_with_a_changed_line(make_role_user):
    """A card with two lines; then, as the admin's change form does, the card is saved and one line's rate
    goes from 170 to 250."""
    analyst = make_role_user("analyst", username="ana.lyst")
    entity = LegalEntity.objects.create(
        code="UK01", name="Firm UK Ltd", country="GB", base_currency="GBP", tax_jurisdiction="GB", region="emea"
    )
    card = saved_by(
        RateCard(name="UK standard 2026", legal_entity=entity, currency="GBP", valid_from=datetime.date(2026, 1, 1)),
        analyst,
        "New card for 2026",
    )
    analyst_line = saved_by(
        RateCardLine(rate_card=card, role="Analyst", bill_rate="170.00", cost_rate="90.00"), analyst, "New card"
    )
    saved_by(RateCardLine(rate_card=card, role="Manager", bill_rate="260.00", cost_rate="140.00"), analyst, "New card")
    saved_by(card, analyst, REASON_RATE)
    analyst_line.bill_rate = Decimal("250.00")
    saved_by(analyst_line, analyst, REASON_RATE)
    return card


def test_auditor_sees_a_line_rate_change_in_the_card_compare_and_exports_history_csv(
    page: Page, live_server, rate_card_with_a_changed_line, make_role_user
):
    card = rate_card_with_a_changed_line
    created, rate_changed = list(card.history.order_by("history_date", "history_id"))
    make_role_user("auditor", username="audrey.auditor")
    login(page, live_server, "audrey.auditor", PASSWORD)

    # when the auditor opens the card's history
    page.goto(live_server.url + reverse("admin:governance_ratecard_history", args=[card.pk]))

    # then the version that changed the line says so
    changed_row = page.locator(f"tr[data-history-id='{rate_changed.history_id}']")
    expect(changed_row.locator(".history-changed-fields")).to_contain_text("Rate-card lines 'Analyst' changed")
    screenshot(page, "auditor-rate-card-history-with-lines")

    # when they compare the two versions
    page.locator(f"tr[data-history-id='{created.history_id}'] input[name=from]").check()
    page.locator(f"tr[data-history-id='{rate_changed.history_id}'] input[name=to]").check()
    page.get_by_role("button", name="Compare").click()
    page.wait_for_url(re.compile(r"/history/compare/\?"))

    # then the line's bill rate shows 170.00 → 250.00, and the untouched line is not listed
    row = page.locator("#compare-children tr[data-row='Analyst'][data-field='bill_rate']")
    expect(row.locator(".diff-old")).to_have_text("170.00")
    expect(row.locator(".diff-new")).to_have_text("250.00")
    expect(page.locator("#compare-children tr.child-diff-row")).to_have_count(1)
    expect(page.locator("#compare-children")).not_to_contain_text("Manager")
    screenshot(page, "auditor-rate-card-compare-lines")

    # when they open the change feed, filtered to rate-card lines
    page.goto(live_server.url + reverse("hub-change-history") + "?type=governance.ratecardline")
    line_row = page.locator("#change-feed tr.feed-row").first
    # then the line's change names its card and the card's version, and its diff is the card's compare
    expect(line_row.locator(".feed-record")).to_contain_text("Rate card UK standard 2026")
    expect(line_row.locator(".feed-record")).to_contain_text("Analyst")
    expect(line_row.locator(".feed-version")).to_have_text("(in version 2)")
    line_row.locator("a.feed-compare").click()
    page.wait_for_url(re.compile(r"/governance/ratecard/\d+/history/compare/\?"))
    expect(page.locator("#compare-children tr[data-field='bill_rate'] .diff-new")).to_have_text("250.00")

    # when they export the feed, filtered to rate-card lines, as CSV
    page.goto(live_server.url + reverse("hub-change-history") + "?type=governance.ratecardline")
    with page.expect_download() as download_info:
        page.locator("#feed-export-csv").click()
    download = download_info.value
    screenshot(page, "auditor-change-feed-export")

    # then the CSV holds the rate change with old and new value, who and why, and the export is audited
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    change = [r for r in rows if r["field"] == "Bill rate"]
    assert len(change) == 1, rows
    assert (change[0]["old_value"], change[0]["new_value"]) == ("170.00", "250.00")
    assert change[0]["who"] == "ana.lyst" and change[0]["why"] == REASON_RATE
    assert change[0]["parent"] == "Rate card UK standard 2026" and change[0]["version"] == "2"
    assert {r["record_type"] for r in rows} == {"Rate card line"}
    assert download.suggested_filename.startswith("configuration-history-")
    assert AuditEvent.objects.filter(action="config_history.exported", actor_username="audrey.auditor").exists()
