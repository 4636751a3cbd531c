"""A period finance closes in the admin holds the batch path's entries of that period in the queue (as closed-period
items), and finance's decision on them: post in the next open period (once, with the moved date) or reject.

The sandbox PSA and ERP over real HTTP (live_server); the engine's pipeline and the time and expense sender are
run in-process, as a worker would run them."""

from __future__ import annotations

import datetime

import pytest

from connectors.tests.contract_fixtures import PsaHarness
from exception_queue.actions import item_action_perform, item_actions_available
from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from governance.choices import PeriodStatus
from governance.models import AccountingPeriod
from governance.services import accounting_period_save
from sandbox.models import SandboxRecord
from sync.batch import time_entries_batch_pull
from sync.choices import MessageStatus
from sync.models import Delivery, Message
from sync.services import messages_process
from sync.tests.batch_flow import TimeFlow
from workflows.choices import PostingStatus
from workflows.models import TimeExpensePosting
from workflows.time_expense import time_expense_postings_send

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def psa(time_psa: PsaHarness) -> PsaHarness:
    return time_psa


@pytest.fixture
def flow(time_flow: TimeFlow) -> TimeFlow:
    return time_flow


def _erp_lines(source_ref: str) -> list[SandboxRecord]:
    """The ERP's time entries for one PSA entry: the batch path sends its id, the posting ledger its entry key."""
    rows = SandboxRecord.objects.filter(system="erp", object_type="time-entries", deleted=False)
    return [row for row in rows if str(row.data.get("source_ref", "")).rsplit(":", 1)[-1] == source_ref]


def _finance_closes_in_admin(client, period: AccountingPeriod) -> None:
    """Finance closes the period on its admin change form, with a reason, as a person would."""
    response = client.post(
        f"/admin/governance/accountingperiod/{period.pk}/change/",
        {
            "legal_entity": period.legal_entity_id,
            "name": period.name,
            "start_date": period.start_date.isoformat(),
            "end_date": period.end_date.isoformat(),
            "status": PeriodStatus.CLOSED,
            "notes": "",
            "change_reason": "month-end close",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]


def _closed_entry(psa: PsaHarness, flow: TimeFlow, client) -> tuple[SandboxRecord, AccountingPeriod]:
    """One approved PSA entry moved into last month, and last month closed by finance in the admin, this month
    open."""
    from sandbox.services import record_update

    today = datetime.date.today()
    last_month_day = today.replace(day=1) - datetime.timedelta(days=10)
    entry = psa.records("time_entries").filter(data__approval_status="approved").order_by("id")[0]
    record_update(record=entry, changes={"spent_date": last_month_day.isoformat()})
    period = AccountingPeriod.objects.get(
        legal_entity=flow.legal_entity, start_date__lte=last_month_day, end_date__gte=last_month_day
    )
    _finance_closes_in_admin(client, period)
    period.refresh_from_db()
    assert period.status == PeriodStatus.CLOSED
    return entry, period


def _user(username: str):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=username)


def _process_and_send(message: Message, flow: TimeFlow) -> None:
    """What the workers do after a decision: run the message through the pipeline, then send the ERP lines."""
    messages_process(message_ids=[message.pk])
    time_expense_postings_send(target_system_id=flow.erp.pk)


def test_a_period_closed_in_the_admin_holds_the_batch_runs_entry_until_finance_posts_it_in_the_next_period(
    psa, flow, client_as
):
    # given an approved entry dated in last month, which finance closed in the admin
    finance = client_as("finance_approver")
    entry, closed = _closed_entry(psa, flow, finance)
    approved = {r.external_id for r in psa.records("time_entries") if r.data.get("approval_status") == "approved"}

    # when the scheduled batch run pulls the PSA's entries
    result = time_entries_batch_pull(route_id=flow.route.pk)

    # then that entry waits in the queue as a closed-period item, naming the period, and is not posted
    message = Message.objects.get(system=flow.psa, raw_payload__id=str(entry.external_id))
    assert message.status == MessageStatus.FAILED
    item = ExceptionItem.objects.get(message=message)
    assert item.category == ExceptionCategory.CLOSED_PERIOD
    assert [rule["rule"] for rule in item.failed_rules] == ["period_open"]
    assert closed.start_date.strftime("%Y-%m") in item.reason and "US01" in item.reason
    assert not Delivery.objects.filter(message=message).exists()
    assert _erp_lines(str(entry.external_id)) == []
    # and every other entry was posted once
    assert result.failed == 1 and result.delivered == len(approved) - 1
    # and finance is offered to post it in the next open period, or to reject it
    approver = _user("finance_approver-user")
    offered = [action.action for action in item_actions_available(item=item, user=approver)]
    assert DecisionAction.POST_NEXT_PERIOD in offered and DecisionAction.REJECT in offered
    assert DecisionAction.OVERRIDE not in offered

    # when finance posts it in the next open period
    item_action_perform(
        item=item, action=DecisionAction.POST_NEXT_PERIOD, user=approver, reason="Late approval; book it in this month"
    )
    message.refresh_from_db()
    _process_and_send(message, flow)

    # then it is posted once, dated the first day of the next open period (this month)
    next_start = closed.end_date + datetime.timedelta(days=1)
    [line] = _erp_lines(str(entry.external_id))
    assert line.data["date"] == next_start.isoformat()
    message.refresh_from_db()
    assert message.canonical_payload["date"] == next_start.isoformat()
    assert message.status == MessageStatus.DELIVERED
    # and the date change is on the item's decision and on the message
    item.refresh_from_db()
    assert item.state == ExceptionState.REPLAYED
    decision = item.decisions.get()
    assert decision.action == DecisionAction.POST_NEXT_PERIOD and decision.user == approver
    assert decision.payload_diff[0]["path"] == "date"
    assert decision.payload_diff[0]["after"] == next_start.isoformat()
    assert decision.payload_diff[0]["before"] != next_start.isoformat()
    assert next_start.isoformat() in decision.reason
    [note] = [n["posting_date_moved"] for n in message.notes if "posting_date_moved" in n]
    assert (note["to"], note["period"]) == (next_start.isoformat(), next_start.strftime("%Y-%m"))

    # and running the pipeline, the sender and the batch path again posts nothing more
    _process_and_send(message, flow)
    time_entries_batch_pull(route_id=flow.route.pk)
    assert len(_erp_lines(str(entry.external_id))) == 1
    assert TimeExpensePosting.objects.filter(message=message, status=PostingStatus.POSTED).count() == 1
    # and the item is closed: no second decision
    assert item_actions_available(item=item, user=approver) == []


def test_rejecting_a_closed_period_item_closes_it_and_posts_nothing(psa, flow, client_as):
    # given an entry of the batch run held in a period finance closed in the admin
    finance = client_as("finance_approver")
    entry, _ = _closed_entry(psa, flow, finance)
    time_entries_batch_pull(route_id=flow.route.pk)
    item = ExceptionItem.objects.get(category=ExceptionCategory.CLOSED_PERIOD)
    approver = _user("finance_approver-user")

    # when finance rejects it
    item_action_perform(item=item, action=DecisionAction.REJECT, user=approver, reason="Duplicate of a manual entry")

    # then the item is closed, its message stopped, and nothing reached the ERP
    item.refresh_from_db()
    assert item.state == ExceptionState.REJECTED
    assert item.decisions.get().action == DecisionAction.REJECT
    message = Message.objects.get(pk=item.message_id)
    assert message.status == MessageStatus.FAILED and "Rejected" in message.last_error
    _process_and_send(message, flow)
    assert _erp_lines(str(entry.external_id)) == []
    assert not TimeExpensePosting.objects.filter(message=message).exists()


def test_post_in_the_next_period_is_refused_while_no_later_period_is_open(psa, flow, client_as):
    # given a held entry, and every period after it closed
    finance = client_as("finance_approver")
    _entry, closed = _closed_entry(psa, flow, finance)
    time_entries_batch_pull(route_id=flow.route.pk)
    item = ExceptionItem.objects.get(category=ExceptionCategory.CLOSED_PERIOD)
    for period in AccountingPeriod.objects.filter(legal_entity=flow.legal_entity, start_date__gt=closed.start_date):
        period.status = PeriodStatus.CLOSED
        accounting_period_save(period=period, reason="test")
    approver = _user("finance_approver-user")

    # when finance asks to post it in the next open period
    from integrationhub.errors import HubConflictError

    with pytest.raises(HubConflictError) as refused:
        item_action_perform(item=item, action=DecisionAction.POST_NEXT_PERIOD, user=approver, reason="book it later")

    # then it is refused with what to do, and nothing changed
    assert "no open accounting period" in refused.value.detail and "Open the next period" in refused.value.hint
    item.refresh_from_db()
    assert item.state == ExceptionState.OPEN and not item.decisions.exists()
    message = Message.objects.get(pk=item.message_id)
    assert closed.start_date.isoformat() <= message.canonical_payload["date"] <= closed.end_date.isoformat()
