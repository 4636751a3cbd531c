"""An auditor reads a rate card's history in the browser: who, when, why, a field diff, and no way to edit or revert."""

from __future__ import annotations

import datetime
import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from governance.models import LegalEntity, RateCard, RateCardLine
from tests.browser.conftest import login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "test-password-123"
REASON_WIDEN = "FIN-42 wider tolerance agreed with finance"
REASON_END = "Card ends with the 2025 price list"


def saved_by(obj, user, reason):
    obj._history_user = user
    obj._change_reason = reason
    obj.save()
    return obj


@pytest.fixture
def rate_card(make_role_user):
    """A rate card an analyst created and then changed twice, each time with a reason."""
    analyst = make_role_user("analyst", username="ana.lyst")
    entity = LegalEntity.objects.create(
        code="UK01", name="Firm UK Ltd", country="GB", base_currency="GBP", tax_jurisdiction="GB", region="emea"
    )
    card = saved_by(
        RateCard(
            name="UK standard 2025",
            legal_entity=entity,
            currency="GBP",
            valid_from=datetime.date(2025, 1, 1),
            tolerance_percent=Decimal("5.00"),
        ),
        analyst,
        "New card for 2025",
    )
    line = RateCardLine(rate_card=card, role="Senior Consultant", bill_rate="1200.00", cost_rate="600.00")
    saved_by(line, analyst, "First role on the card")
    card.tolerance_percent = Decimal("7.50")
    saved_by(card, analyst, REASON_WIDEN)
    card.valid_to = datetime.date(2025, 12, 31)
    saved_by(card, analyst, REASON_END)
    return card


def test_auditor_reads_rate_card_history_and_cannot_change_it(page: Page, live_server, rate_card, make_role_user):
    # given an auditor signed in
    make_role_user("auditor", username="audrey.auditor")
    login(page, live_server, "audrey.auditor", PASSWORD)
    change_url = live_server.url + reverse("admin:governance_ratecard_change", args=[rate_card.pk])
    versions = list(rate_card.history.order_by("history_date"))
    created, widened = versions[0], versions[1]

    # when the auditor opens the rate card
    page.goto(change_url)

    # then it is read-only: no save buttons and no editable field anywhere in the form
    form = page.locator("#content-main form").first
    expect(page.locator("#content h1, #content h2").first).to_be_visible()
    expect(form).to_contain_text("UK standard 2025")
    for name in ("_save", "_continue", "_addanother", "_saveasnew"):
        expect(page.locator(f"[name={name}]")).to_have_count(0)
    expect(form.locator("input:not([type=hidden]), select, textarea")).to_have_count(0)
    expect(form.locator("input[type=submit], button[type=submit]")).to_have_count(0)
    expect(page.locator("a.deletelink")).to_have_count(0)
    expect(form).not_to_contain_text("Reason for change")
    expect(form).not_to_contain_text("Change reason")
    screenshot(page, "auditor-rate-card-change")

    # when the auditor opens its history
    page.locator("a.historylink").click()
    page.wait_for_url(re.compile(r"/history/$"))

    # then who, when and why are on the page, with a changed-fields summary per row and no revert link
    table = page.locator("#change-history")
    expect(table).to_contain_text("ana.lyst")
    expect(table).to_contain_text(REASON_WIDEN)
    expect(table).to_contain_text(REASON_END)
    widened_row = page.locator(f"tr[data-history-id='{widened.history_id}']")
    expect(widened_row.locator(".history-changed-fields")).to_contain_text("Tolerance percent")
    expect(widened_row.locator(".history-user")).to_have_text("ana.lyst")
    expect(widened_row.locator(".history-reason")).to_have_text(REASON_WIDEN)
    expect(widened_row.locator(".history-type")).to_have_text("Changed")
    expect(page.locator("a.revertlink")).to_have_count(0)
    expect(page.locator("#content a[href*='/history/'][href$='/']").filter(has_not_text="diff")).to_have_count(0)
    expect(page.get_by_text("revert", exact=False)).to_have_count(0)
    screenshot(page, "auditor-rate-card-history")

    # when the auditor compares the first version with the one that widened the tolerance
    page.locator(f"tr[data-history-id='{created.history_id}'] input[name=from]").check()
    page.locator(f"tr[data-history-id='{widened.history_id}'] input[name=to]").check()
    page.get_by_role("button", name="Compare").click()
    page.wait_for_url(re.compile(r"/history/compare/\?"))

    # then the changed field shows its old and new value, with who, when and why of both versions
    row = page.locator("#compare-fields tr[data-field='tolerance_percent']")
    expect(row.locator(".diff-field")).to_have_text("Tolerance percent")
    expect(row.locator(".diff-old")).to_have_text("5.00")
    expect(row.locator(".diff-new")).to_have_text("7.50")
    expect(page.locator("#compare-fields tr.diff-row")).to_have_count(1)
    expect(page.locator("tr.version-from .version-user")).to_have_text("ana.lyst")
    expect(page.locator("tr.version-from .version-type")).to_have_text("created")
    expect(page.locator("tr.version-to .version-reason")).to_have_text(REASON_WIDEN)
    expect(page.locator("tr.version-to .version-type")).to_have_text("changed")
    expect(page.locator("tr.version-to .version-date")).not_to_be_empty()
    expect(page.locator("#content-main form")).to_have_count(0)
    screenshot(page, "auditor-rate-card-compare")

    # and there is no way to change the card: a forged POST to the change page and to the revert form is refused
    page.goto(change_url)
    token = page.locator("input[name=csrfmiddlewaretoken]").first.input_value()
    forged = {
        "csrfmiddlewaretoken": token,
        "name": "Changed by auditor",
        "legal_entity": str(rate_card.legal_entity_id),
        "currency": "GBP",
        "valid_from": "2025-01-01",
        "tolerance_percent": "99.00",
        "change_reason": "auditor edit",
        "_save": "Save",
    }
    revert_url = live_server.url + reverse(
        "admin:governance_ratecard_simple_history", args=[rate_card.pk, created.history_id]
    )
    for url in (change_url, revert_url):
        response = page.request.post(url, form=forged, headers={"Referer": change_url})
        assert response.status == 403, url
        assert "CSRF" not in response.text()
    rate_card.refresh_from_db()
    assert rate_card.name == "UK standard 2025"
    assert rate_card.tolerance_percent == Decimal("7.50")
    assert rate_card.history.count() == len(versions)


def test_auditor_follows_the_change_feed_to_the_diff_and_exports_the_audit_trail(
    page: Page, live_server, rate_card, make_role_user
):
    # given the rate card's history and an approval in the audit trail
    from integrationhub.audit import AuditAction, audit_record

    approver = make_role_user("finance_approver", username="fiona.finance")
    audit_record(
        action=AuditAction.EXCEPTION_APPROVED,
        actor=approver,
        object_type="exception_queue.exceptionitem",
        object_id=41,
        summary="Approve on exception item #41: within the statement of work",
    )
    make_role_user("auditor", username="audrey.auditor")
    widened = list(rate_card.history.order_by("history_date"))[1]

    # when the auditor signs in, they land on the change feed, newest first, with who and why
    login(page, live_server, "audrey.auditor", PASSWORD)
    expect(page).to_have_url(re.compile(r"/admin/history/$"))
    feed = page.locator("#change-feed")
    expect(feed.locator("tr.feed-row").first.locator(".feed-reason")).to_have_text(REASON_END)
    expect(feed).to_contain_text("First role on the card")
    screenshot(page, "auditor-change-feed")

    # when they filter by the analyst and the rate card type
    page.select_option("#feed-filters select[name=user]", "ana.lyst")
    page.select_option("#feed-filters select[name=type]", "governance.ratecard")
    page.locator("#feed-filters button[type=submit]").click()

    # then only the card's three versions are listed, each by the analyst
    rows = page.locator("#change-feed tr.feed-row")
    expect(rows).to_have_count(3)
    expect(rows.locator(".feed-user").filter(has_text="ana.lyst")).to_have_count(3)
    expect(page.locator("#change-feed")).not_to_contain_text("First role on the card")
    screenshot(page, "auditor-change-feed-filtered")

    # when they open the diff of the change that widened the tolerance
    page.locator(f"tr.feed-row[data-history-id='{widened.history_id}'] a.feed-compare").click()
    page.wait_for_url(re.compile(r"/history/compare/\?"))

    # then the field-by-field diff shows the old and new tolerance
    row = page.locator("#compare-fields tr[data-field='tolerance_percent']")
    expect(row.locator(".diff-old")).to_have_text("5.00")
    expect(row.locator(".diff-new")).to_have_text("7.50")
    expect(page.locator("tr.version-to .version-reason")).to_have_text(REASON_WIDEN)

    # when they follow the feed's link to the audit log and export every event as CSV
    page.locator("#nav-history").click()
    page.locator("#audit-log-link").click()
    page.wait_for_url(re.compile(r"/admin/integrationhub/auditevent/"))
    expect(page.locator("#result_list")).to_contain_text("within the statement of work")
    expect(page.locator("a.addlink")).to_have_count(0)
    page.locator("#action-toggle").check()
    page.select_option("select[name=action]", "export_csv")
    with page.expect_download() as download_info:
        page.locator("button[name=index]").click()
    download = download_info.value
    screenshot(page, "auditor-audit-log")

    # then the CSV holds the approval with who did it and why
    text = Path(download.path()).read_text()
    lines = text.splitlines()
    assert lines[0].startswith("id,occurred_at,actor_username")
    approval = [line for line in lines if "exception.approved" in line]
    assert len(approval) == 1 and "fiona.finance" in approval[0] and "within the statement of work" in approval[0]
    assert download.suggested_filename == "audit-events.csv"
