"""Finance reconciles a month in the browser: a line deleted in the ERP shows as a difference, the drill-down lists
the entry with its trace, the CSV export carries the same rows, and "run now" queues a run."""

from __future__ import annotations

import csv
import io
import re

import pytest
from playwright.sync_api import Page, expect

from reconciliation.models import ReconciliationRun
from reconciliation.tests.support import PERIOD, pull_and_post, reconcile
from sandbox.services import record_delete
from tests.browser.conftest import login, screenshot
from workflows.tests.time_expense_fixtures import build_world

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "test-password-123"


def test_finance_drills_into_a_difference_and_exports_the_rows(page: Page, live_server, request, make_role_user):
    # given two posted time entries, one of whose lines was then deleted directly in the ERP, and a run that saw it
    world = build_world(request)
    kept, lost = world.time_entry(hours=2), world.time_entry(hours=5)
    for entry in (kept, lost):
        world.approve(entry)
    pull_and_post(world)
    record_delete(record=next(line for line in world.erp_lines() if line.data["source_ref"].endswith(f":{lost}")))
    run = reconcile(world)
    assert run.differences == 1, run.error
    make_role_user("finance_approver", username="fiona.finance")

    # when finance opens the reconciliation page from the hub bar and keeps only the differences
    login(page, live_server, "fiona.finance", PASSWORD)
    page.locator("#nav-reconciliation").click()
    page.wait_for_url(re.compile(r"/admin/reconciliation/"))
    result = page.locator(f"section.recon-result[data-entity='US01'][data-period='{PERIOD}']")
    expect(result).to_contain_text(f"Last good run #{run.pk}")
    expect(result.locator(".recon-differences")).to_have_text("1")
    page.locator("#recon-filters input[name=only_differences]").check()
    page.locator("#recon-filters button[type=submit]").click()
    page.wait_for_url(re.compile(r"only_differences=on"))
    rows = page.locator("#recon-rows tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".recon-unexplained")).to_have_text("800.00")
    screenshot(page, "reconciliation-differences")

    # and drills into the difference
    rows.first.locator("a.recon-drill").click()
    page.wait_for_url(re.compile(r"/admin/reconciliation/rows/\d+/$"))

    # then the row says what is unexplained and the deleted entry is listed with no ERP line and a trace link
    expect(page.locator("#recon-row-unexplained")).to_have_text("5.00 h / 800.00 USD")
    entry = page.locator("#recon-entries tr.recon-difference")
    expect(entry).to_have_count(1)
    expect(entry.locator("td").first).to_have_text(lost)
    expect(entry).to_contain_text("none")
    expect(page.locator("#recon-row-item")).to_be_visible()
    screenshot(page, "reconciliation-drill-down")
    entry.locator("a.recon-trace").click()
    page.wait_for_url(re.compile(r"/admin/trace/\?q="))
    expect(page.locator("section.trace")).to_have_count(1)
    screenshot(page, "reconciliation-trace")

    # and the CSV export of the page carries the same rows
    page.go_back()
    page.go_back()
    with page.expect_download() as download_info:
        page.locator("#recon-export").click()
    path = download_info.value.path()
    with open(path, encoding="utf-8") as exported_file:
        exported = list(csv.DictReader(io.StringIO(exported_file.read())))
    assert [
        (row["legal_entity"], row["period"], row["unexplained_hours"], row["unexplained_amount"]) for row in exported
    ] == [("US01", PERIOD, "5.00", "800.00")]

    # and "run now" queues a run of the period, said on the page
    page.locator("#recon-run-now select[name=legal_entity]").select_option(str(world.entity.pk))
    page.locator("#recon-run-now button[type=submit]").click()
    expect(page.locator(".messagelist")).to_contain_text("is queued")
    # (queued, or already taken by a worker the session started for other tests)
    assert ReconciliationRun.objects.filter(started_by__username="fiona.finance").count() == 1
