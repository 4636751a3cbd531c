"""Batch syncs record their progress: a file drop (total known up front) and a scheduled pull (page by page,
over real HTTP to the sandbox PSA)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from connectors.tests.contract_fixtures import PsaHarness, sandbox_harness
from connectors.tests.factories import ConnectedSystemFactory
from insights.choices import BatchKind, BatchStatus
from insights.models import BatchProgress
from sync import polling
from sync.choices import PollOutcome
from sync.services import file_drop_ingest, poll_run

GOOD = "Id,Name\nC-1,Acme\nC-2,Globex\nC-3,Initech\n"
BAD = "Id,Name\nC-1,Acme\nC-2\n"
PAGE_SIZE = 4


@pytest.mark.django_db
def test_a_file_drop_records_its_total_and_the_rows_done():
    # given a system without an inbound mapping yet (rows are stored as they are)
    system = ConnectedSystemFactory()
    # when a three-row file is dropped
    drop = file_drop_ingest(system=system, entity="client", file_name="clients.csv", content=GOOD.encode())
    # then one progress row says 3 of 3 done, completed
    progress = BatchProgress.objects.get()
    assert drop.rows_accepted == 3
    assert (progress.kind, progress.label, progress.status) == (BatchKind.FILE_DROP, "clients.csv", "completed")
    assert (progress.total, progress.done, progress.failed) == (3, 3, 0)
    assert progress.finished_at is not None and progress.system == system


@pytest.mark.django_db
def test_a_rejected_file_drop_records_its_rows_as_failed_and_none_done():
    # when a file with a short row is dropped
    system = ConnectedSystemFactory()
    file_drop_ingest(system=system, entity="client", file_name="bad.csv", content=BAD.encode())
    # then its progress is failed: nothing done, both rows refused
    progress = BatchProgress.objects.get()
    assert (progress.status, progress.total, progress.done, progress.failed) == (BatchStatus.FAILED, 2, 0, 2)
    assert "error" in progress.error


@pytest.fixture
def psa(request) -> PsaHarness:
    harness = sandbox_harness("harvest_psa", request)
    assert isinstance(harness, PsaHarness)
    harness.seed(PAGE_SIZE * 2 + 1)
    return harness


@pytest.mark.django_db(transaction=True)
def test_a_pull_advances_its_progress_page_by_page(psa, monkeypatch):
    # given a PSA with three pages of time entries, and a spy on each page the pull stores
    system = psa.make_system(page_size=PAGE_SIZE)
    system.rate_limit_per_second = Decimal("100")
    system.save(update_fields=["rate_limit_per_second"])
    seen: list[tuple[int, int]] = []
    real_store = polling.poll_page_store

    def store_and_look(**kwargs):
        stored = real_store(**kwargs)
        progress = BatchProgress.objects.get()
        seen.append((progress.done, progress.pages))
        return stored

    monkeypatch.setattr(polling, "poll_page_store", store_and_look)
    # when the pull runs
    result = poll_run(system=system, entity="time_entry")
    # then while it ran, the row was running and advanced after each page (readable from outside the run)
    expected = len(psa.all_ids())
    pages = -(-expected // PAGE_SIZE)
    assert result.outcome == PollOutcome.COMPLETE
    assert seen == [(PAGE_SIZE * page, page) for page in range(pages)]
    # and once complete it knows its total: every record pulled
    progress = BatchProgress.objects.get()
    assert (progress.kind, progress.status) == (BatchKind.POLL, BatchStatus.COMPLETED)
    assert progress.done == progress.total == expected
    assert progress.pages == pages


@pytest.mark.django_db(transaction=True)
def test_a_pull_that_crashes_leaves_a_failed_progress_row(psa, monkeypatch):
    # given a store step that dies on the second page
    system = psa.make_system(page_size=PAGE_SIZE)
    system.rate_limit_per_second = Decimal("100")
    system.save(update_fields=["rate_limit_per_second"])
    real_store = polling.poll_page_store
    calls = {"n": 0}

    def crashing_store(**kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("worker killed")
        return real_store(**kwargs)

    monkeypatch.setattr(polling, "poll_page_store", crashing_store)
    # when the pull runs and crashes
    with pytest.raises(RuntimeError):
        poll_run(system=system, entity="time_entry")
    # then its progress says failed after one page, never "running" forever
    progress = BatchProgress.objects.get()
    assert (progress.status, progress.done, progress.total) == (BatchStatus.FAILED, PAGE_SIZE, None)
    assert "unexpected error" in progress.error
