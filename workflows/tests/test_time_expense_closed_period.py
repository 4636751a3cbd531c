"""An entry approved through the PSA's webhook in a closed accounting period: held as a closed-period item, then
posted once in the next open period by finance's decision over the API (sandbox PSA and ERP over real HTTP, a
real Celery worker)."""

from __future__ import annotations

import datetime

import pytest

from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from governance.choices import Trigger
from governance.models import RateCard
from workflows.choices import PostingStatus
from workflows.models import TimeExpensePosting
from workflows.tests.time_expense_fixtures import TODAY, build_world, run_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("live_celery_worker_db")]


def test_a_webhook_entry_in_a_closed_period_is_posted_once_in_the_next_open_period_after_finance_decides(
    request, client_as
):
    # given the PSA's webhooks on, last month closed and this month open in the entity's calendar
    world = build_world(request, trigger=Trigger.EVENT)
    world.webhooks_on()
    this_month = TODAY.replace(day=1)
    last_month_day = this_month - datetime.timedelta(days=3)
    # (the rate card valid on that day too, also in January, so the period is the entry's only problem)
    RateCard.objects.filter(legal_entity=world.entity, valid_from__gt=last_month_day).update(valid_from=last_month_day)
    entry = world.time_entry(project="alpha", hours=3, spent_date=last_month_day.isoformat())

    # when the entry, dated last month, is approved
    world.approve(entry)
    run_until(lambda: ExceptionItem.objects.filter(category=ExceptionCategory.CLOSED_PERIOD).exists())

    # then it waits as a closed-period item, and nothing is in the ERP
    item = ExceptionItem.objects.get(category=ExceptionCategory.CLOSED_PERIOD)
    assert item.external_id == entry and [rule["rule"] for rule in item.failed_rules] == ["period_open"]
    assert world.erp_lines() == []
    finance = client_as("finance_approver")
    offered = finance.get(f"/api/v1/exception-items/{item.pk}/actions/").json()
    assert {DecisionAction.POST_NEXT_PERIOD, DecisionAction.REJECT} <= {row["action"] for row in offered}

    # when finance posts it in the next open period through the API
    response = finance.post(
        f"/api/v1/exception-items/{item.pk}/act/",
        {"action": DecisionAction.POST_NEXT_PERIOD, "reason": "Approved late; book it in the open month"},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    run_until(
        lambda: TimeExpensePosting.objects.filter(target_system=world.erp, status=PostingStatus.POSTED).count() == 1
    )

    # then it is in the ERP once, dated the first day of this month, and the decision shows the move
    [line] = world.erp_lines()
    assert line.data["date"] == this_month.isoformat()
    item.refresh_from_db()
    assert item.state == ExceptionState.REPLAYED
    [change] = item.decisions.get().payload_diff
    moved = (change["path"], change["before"], change["after"])
    assert moved == ("date", last_month_day.isoformat(), this_month.isoformat())

    # and a second decision is refused: the item is closed
    again = finance.post(
        f"/api/v1/exception-items/{item.pk}/act/",
        {"action": DecisionAction.POST_NEXT_PERIOD, "reason": "again"},
        content_type="application/json",
    )
    assert again.status_code == 409
    assert len(world.erp_lines()) == 1
