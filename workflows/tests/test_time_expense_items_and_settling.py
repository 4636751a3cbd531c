"""Time and expense bookkeeping around the ledger: one exception item per failing entry however often it is seen,
and a message whose lines are all in the ERP settled even when the sender that posted them died before settling."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from exception_queue.choices import ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from governance.choices import Trigger
from governance.services import sync_policy_run
from sync.choices import MessageStatus
from sync.models import Message
from workflows.choices import PostingStatus
from workflows.models import TimeExpensePosting, TimeExpenseSenderLease
from workflows.tests.time_expense_fixtures import build_world, run_until
from workflows.time_expense import (
    SendResult,
    _claim,
    _send_claimed,
    _Sender,
    sender_lease_take,
    time_expense_postings_dispatch,
    time_expense_postings_send,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.usefixtures("live_celery_worker_db")
def test_a_failing_entry_seen_by_webhook_and_by_pull_opens_one_item(request):
    # given a PSA that sends its approval webhooks and is also pulled on schedule, and an entry with a cost code
    # the policy does not allow
    world = build_world(request, trigger=Trigger.SCHEDULE)
    world.webhooks_on()
    entry = world.time_entry(project="alpha", hours=2, cost_code="GOLF")

    # when the entry is approved: its webhook fails the rules
    world.approve(entry)
    run_until(lambda: ExceptionItem.objects.filter(category=ExceptionCategory.POLICY).exists())
    [first] = ExceptionItem.objects.all()

    # and the scheduled pull brings the same entry again, as a second message that fails the same way
    sync_policy_run(policy_id=world.policy.pk)
    messages = Message.objects.filter(system=world.psa, canonical_id=entry)
    run_until(lambda: messages.count() == 2 and not messages.exclude(status=MessageStatus.FAILED).exists())

    # then finance sees one open item for the entry (the PSA's other entries pulled with it have their own), now
    # on the latest message, with the failed rule
    [item] = ExceptionItem.objects.filter(message__canonical_id=entry)
    assert item.pk == first.pk
    assert item.state == ExceptionState.OPEN
    assert item.category == ExceptionCategory.POLICY
    assert item.message_id == messages.order_by("-pk").first().pk
    assert item.external_id == entry
    assert [rule["rule"] for rule in item.failed_rules] == ["cost_code_allowed"]
    # and nothing reached the ERP
    assert not world.erp_lines(data__source_ref__endswith=f":{entry}")
    assert not TimeExpensePosting.objects.filter(entry_key__endswith=f":{entry}").exists()


KILLED = "celery@worker-1:4242:killed"


def _kill_after_the_erp_answered(world) -> None:
    """What a sender killed right after the ERP accepted its lines leaves: the lines posted in the ERP and in the
    ledger (the sender's own calls and bookkeeping), its lease still running, and their messages never settled."""
    sender = _Sender(target=world.erp, holder=KILLED, result=SendResult())
    _send_claimed(sender, _claim(world.erp.pk, timezone.now()))


@pytest.fixture
def queued_with_lines_posted(request, live_celery_worker_db):
    # The killed sender holds the ERP's lease, so no other sender posts the lines first.
    world = build_world(request, trigger=Trigger.SCHEDULE)
    assert sender_lease_take(target_system_id=world.erp.pk, holder=KILLED)
    entries = [world.time_entry(project="alpha", hours=h) for h in (1, 2)]
    for entry in entries:
        world.approve(entry)
    sync_policy_run(policy_id=world.policy.pk)
    messages = Message.objects.filter(system=world.psa, canonical_id__in=entries)
    run_until(lambda: TimeExpensePosting.objects.filter(status=PostingStatus.PENDING).count() == 2)
    _kill_after_the_erp_answered(world)
    assert TimeExpensePosting.objects.filter(status=PostingStatus.POSTED).count() == 2
    assert len(world.erp_lines()) == 2
    assert set(messages.values_list("status", flat=True)) == {MessageStatus.QUEUED}
    assert not messages.filter(delivered_at__isnull=False).exists()
    return world, messages


def test_messages_a_killed_sender_left_queued_are_settled_by_the_beat(queued_with_lines_posted):
    # given two messages whose lines a sender posted to the ERP and recorded, before it was killed
    world, messages = queued_with_lines_posted

    # when the flow's beat runs (nothing is left to send)
    time_expense_postings_dispatch()

    # then both messages are delivered, with the time their lines were settled, and nothing was sent again
    assert set(messages.values_list("status", flat=True)) == {MessageStatus.DELIVERED}
    assert not messages.filter(delivered_at__isnull=True).exists()
    assert len(world.erp_lines()) == 2


def test_messages_a_killed_sender_left_queued_are_settled_by_the_next_send(queued_with_lines_posted):
    # given two messages whose lines a sender posted to the ERP and recorded, before it was killed
    world, messages = queued_with_lines_posted

    # when the killed sender's lease runs out and the next sender of the ERP runs, with no line left to send
    TimeExpenseSenderLease.objects.filter(target_system=world.erp).update(
        expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )
    result = time_expense_postings_send(target_system_id=world.erp.pk)

    # then it made no call and settled both messages
    assert result.calls == 0
    assert set(messages.values_list("status", flat=True)) == {MessageStatus.DELIVERED}
    assert not messages.filter(delivered_at__isnull=True).exists()
    assert len(world.erp_lines()) == 2
