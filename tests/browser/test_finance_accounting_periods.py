"""Finance works the period calendar in the browser: the periods the pull read from the ERP, a period closed by
hand with a reason, and who changed what (the pull or a person) in the list and the history."""

from __future__ import annotations

import datetime
import uuid

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from connectors.choices import SystemRole
from connectors.services import connected_system_create
from governance.choices import PeriodStatus
from governance.models import AccountingPeriod, LegalEntity
from governance.period_pull import accounting_periods_pull
from tests.browser.conftest import login, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "test-password-123"
REASON = "Soft close for the month-end review"


@pytest.fixture
def pulled_periods(live_server):
    """Two periods of US01 in the sandbox ERP, March closed there, read into the hub by the period pull."""
    from sandbox.services import record_create, sandbox_demo_seed

    demo = sandbox_demo_seed()
    entity = LegalEntity.objects.create(
        code="US01", name="Firm US", country="US", base_currency="USD", tax_jurisdiction="US-NY", region="americas"
    )
    erp = connected_system_create(
        name="ERP US",
        slug=f"erp-{uuid.uuid4().hex[:8]}",
        role=SystemRole.ERP,
        connector_type="sandbox_erp",
        base_url=f"{live_server.url}/sandbox/erp/api",
        settings={"company_code": "US01", "timeout_seconds": 30},
        credentials={"api_key": demo["erp"]["api_token"]},
        legal_entities=[entity],
        reason="test",
    )
    for month, status in ((3, "closed"), (4, "open")):
        start = datetime.date(2032, month, 1)
        end = (start + datetime.timedelta(days=32)).replace(day=1) - datetime.timedelta(days=1)
        record_create(
            system="erp",
            object_type="periods",
            data={
                "name": start.strftime("%Y-%m"),
                "legal_entity": "US01",
                "start_date": start.isoformat(),
                "end_date": end.isoformat(),
                "status": status,
            },
        )
    accounting_periods_pull(system=erp)
    return erp


def test_finance_closes_a_period_and_sees_who_changed_each_period(
    page: Page, live_server, pulled_periods, make_role_user
):
    # given finance signed in, and the calendar the pull read from the ERP
    make_role_user("finance_approver", username="fiona.finance")
    login(page, live_server, "fiona.finance", PASSWORD)
    changelist = live_server.url + reverse("admin:governance_accountingperiod_changelist")

    # when finance opens the period calendar
    page.goto(changelist)

    # then each period shows its state here and in the ERP, the ERP it came from, and that the pull set it
    march = page.locator("#result_list tbody tr", has_text="2032-03")
    expect(march).to_contain_text("Closed")
    expect(march).to_contain_text("ERP US")
    expect(march).to_contain_text("system")
    expect(march).to_contain_text(f"period pull from {pulled_periods.slug}")
    april = page.locator("#result_list tbody tr", has_text="2032-04")
    expect(april).to_contain_text("Open")
    screenshot(page, "finance-accounting-periods-pulled")

    # when finance closes April by hand, with a reason
    april.locator("a").first.click()
    page.select_option("#id_status", PeriodStatus.CLOSED)
    page.fill("#id_change_reason", REASON)
    page.click("input[name=_save]")
    page.wait_for_url(lambda url: url.rstrip("/").endswith("accountingperiod"))

    # then April is closed, and the list names finance and the reason as its last change
    april = page.locator("#result_list tbody tr", has_text="2032-04")
    expect(april).to_contain_text("Closed")
    expect(april).to_contain_text("fiona.finance")
    expect(april).to_contain_text(REASON)
    screenshot(page, "finance-accounting-periods-closed-by-hand")
    period = AccountingPeriod.objects.get(name="2032-04")
    assert period.status == PeriodStatus.CLOSED

    # and its history lists the pull's creation (no user) and finance's close
    page.goto(live_server.url + reverse("admin:governance_accountingperiod_history", args=[period.pk]))
    content = page.locator("#content")
    expect(content).to_contain_text(REASON)
    expect(content).to_contain_text("fiona.finance")
    expect(content).to_contain_text(f"period pull from {pulled_periods.slug}")
    screenshot(page, "finance-accounting-period-history")
