"""Reconciliation against the sandbox PSA and ERP over real HTTP: approved = posted + queued + withdrawn, and a
line deleted directly in the ERP is a difference with one exception item."""

from __future__ import annotations

from decimal import Decimal

import pytest

from exception_queue.choices import ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from reconciliation.choices import RunStatus
from reconciliation.models import ReconciliationRow
from reconciliation.selectors import EVERY_ENTITY, latest_good_runs, latest_runs
from reconciliation.tests.support import faults_set, pull_and_post, pull_and_process, reconcile
from sandbox.services import record_delete
from workflows.choices import PostingStatus
from workflows.models import TimeExpensePosting
from workflows.tests.time_expense_fixtures import build_world

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _no_worker_takes_part(monkeypatch):
    """These tests play beat and the worker themselves: the tasks the hub enqueues stay unsent, so a worker the
    session started for other tests cannot post or process anything between their steps."""
    from celery.app.task import Task

    monkeypatch.setattr(Task, "apply_async", lambda self, *args, **kwargs: None)


def _rows(run) -> dict[tuple[str, str, str], ReconciliationRow]:
    return {(row.kind, row.project, row.person): row for row in ReconciliationRow.objects.filter(run=run)}


def test_approved_equals_posted_plus_queued_plus_withdrawn_with_nothing_unexplained(request, live_server):
    # given posted entries on two projects, an expense, an entry held by a rule (a closed project) and an entry
    # approved, posted and then withdrawn in the PSA (its reversal waiting to be sent)
    world = build_world(request)
    posted = [world.time_entry(project="alpha", hours=2), world.time_entry(project="beta", hours=3)]
    expense = world.expense(amount=20)
    held = world.time_entry(project="closed", hours=4)
    withdrawn = world.time_entry(project="alpha", hours=1.5)
    for entry in [*posted, held, withdrawn]:
        world.approve(entry)
    world.approve(expense, object_type="expenses")
    pull_and_post(world)
    world.unapprove(withdrawn)
    pull_and_process(world)
    assert TimeExpensePosting.objects.filter(status=PostingStatus.PENDING, kind="reversal").count() == 1

    # when the period is reconciled
    run = reconcile(world)

    # then every figure is explained: approved = posted + queued + withdrawn, nothing unexplained
    assert run.status == RunStatus.SUCCEEDED, run.error
    rows = _rows(run)
    assert run.differences == 0, [(r.project, r.unexplained_amount) for r in rows.values()]
    assert run.unexplained_amount == 0
    ours = {"prj-alpha", "prj-beta", "prj-closed"}  # the projects' canonical ids
    time_rows = [row for (kind, project, _), row in rows.items() if kind == "time_entry" and project in ours]

    def total(name: str, of=time_rows) -> Decimal:
        return sum((getattr(row, name) for row in of), Decimal("0"))

    assert total("approved_hours") == Decimal("9.00")  # 2 + 3 + 4 (the withdrawn one is not approved any more)
    assert total("posted_hours") == Decimal("6.50")  # 2 + 3 + 1.5 still in the ERP
    assert total("queued_hours") == Decimal("4.00")  # held by the project rule
    assert total("withdrawn_hours") == Decimal("-1.50")  # the reversal on its way
    assert total("approved_amount") == Decimal("1440.00")  # 9 h at 160
    assert total("unexplained_amount") == 0
    expense_rows = [row for (kind, project, _), row in rows.items() if kind == "expense" and project in ours]
    assert total("approved_amount", expense_rows) == total("posted_amount", expense_rows) == Decimal("20.00")
    closed = next(row for row in rows.values() if row.queued_hours)
    assert closed.queue_reasons and closed.queue_reasons[0]["category"] == ExceptionCategory.POLICY
    assert not ExceptionItem.objects.filter(category=ExceptionCategory.RECONCILIATION_DIFFERENCE).exists()


def test_a_line_deleted_in_the_erp_is_a_difference_with_one_item_resolved_when_it_is_back(request, live_server):
    # given two posted entries of one person and project, reconciled with nothing unexplained
    world = build_world(request)
    kept, lost = world.time_entry(hours=2), world.time_entry(hours=5)
    for entry in (kept, lost):
        world.approve(entry)
    pull_and_post(world)
    first = reconcile(world)
    assert first.status == RunStatus.SUCCEEDED and first.differences == 0, first.error

    # when someone deletes one of the lines directly in the ERP
    line = next(line for line in world.erp_lines() if line.data["source_ref"].endswith(f":{lost}"))
    record_delete(record=line)
    second = reconcile(world)

    # then the next run reports that entry as the difference and opens one item for the project and person
    assert second.status == RunStatus.SUCCEEDED, second.error
    assert second.differences == 1
    row = ReconciliationRow.objects.get(run=second, project="prj-alpha")
    assert row.unexplained_hours == Decimal("5.00") and row.unexplained_amount == Decimal("800.00")
    differing = [e for e in row.entries if e["unexplained_amount"] != "0.00"]
    assert [e["psa_id"] for e in differing] == [lost]
    assert differing[0]["erp_lines"] == []
    items = ExceptionItem.objects.filter(category=ExceptionCategory.RECONCILIATION_DIFFERENCE)
    assert items.count() == 1
    item = items.get()
    assert item.state == ExceptionState.OPEN and item.amount == Decimal("800.00")
    assert item.legal_entity == world.entity and row.exception_item == item

    # and a second run updates that item instead of opening another
    third = reconcile(world)
    assert third.differences == 1
    assert items.count() == 1 and items.get().state == ExceptionState.OPEN

    # and once the line is back in the ERP the next run resolves the item, with a decision naming the run
    line.deleted = False
    line.save(update_fields=["deleted"])
    fourth = reconcile(world)
    assert fourth.differences == 0
    item.refresh_from_db()
    assert item.state == ExceptionState.RESOLVED
    assert f"#{fourth.pk}" in item.decisions.get().reason


def test_an_unreachable_erp_fails_the_run_naming_it_and_the_last_good_result_stays(request, live_server):
    # given a good reconciliation of posted time
    world = build_world(request)
    entry = world.time_entry(hours=2)
    world.approve(entry)
    pull_and_post(world)
    good = reconcile(world)
    assert good.status == RunStatus.SUCCEEDED, good.error

    # when the ERP answers nothing but 503 at the next run
    faults_set("erp", error_rate=1.0)
    try:
        failed = reconcile(world)
    finally:
        faults_set("erp")

    # then the run failed, says which system and why, and stored no rows; the last good result is still the one shown
    assert failed.status == RunStatus.FAILED
    assert failed.failed_system == world.erp
    assert world.erp.slug in failed.error and "could not be read" in failed.error
    assert f"run #{good.pk}" in failed.error
    assert not ReconciliationRow.objects.filter(run=failed).exists()
    scope = EVERY_ENTITY
    shown = latest_good_runs(scope=scope, legal_entity_id=world.entity.pk, period=failed.period)
    assert shown == [good]
    assert latest_runs(scope=scope, legal_entity_id=world.entity.pk, period=failed.period) == [failed]
    # and no difference item was opened or resolved by the failed run
    assert not ExceptionItem.objects.filter(category=ExceptionCategory.RECONCILIATION_DIFFERENCE).exists()
