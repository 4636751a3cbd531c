"""The time and expense sender: one sender per target by a lease it renews before every call, so a sender that
was killed mid-way holds the target for at most a minute; every call goes through the transport."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from governance.choices import Trigger
from sync.models import DeliveryAttempt, Message
from workflows.choices import PostingStatus
from workflows.models import TimeExpensePosting, TimeExpenseSenderLease
from workflows.tests.time_expense_fixtures import build_world, run_until
from workflows.time_expense import (
    SENDER_LEASE_SECONDS,
    sender_lease_release,
    sender_lease_take,
    time_expense_postings_send,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _posted(world) -> int:
    return TimeExpensePosting.objects.filter(target_system=world.erp, status=PostingStatus.POSTED).count()


def test_a_sender_lease_lasts_at_most_a_minute_after_its_last_renewal(request):
    # given a target and a sender that took its lease
    world = build_world(request, trigger=Trigger.EVENT)
    now = timezone.now()
    assert sender_lease_take(target_system_id=world.erp.pk, holder="worker-a", now=now)

    # then the lease ends at most a minute after it was taken (the sweeper period), and another sender waits
    lease = TimeExpenseSenderLease.objects.get(target_system=world.erp)
    assert SENDER_LEASE_SECONDS <= 60
    assert lease.expires_at - lease.heartbeat_at == datetime.timedelta(seconds=SENDER_LEASE_SECONDS)
    assert not sender_lease_take(target_system_id=world.erp.pk, holder="worker-b", now=now)
    # and the holder renews it before each call
    later = now + datetime.timedelta(seconds=SENDER_LEASE_SECONDS - 1)
    assert sender_lease_take(target_system_id=world.erp.pk, holder="worker-a", now=later)
    assert not sender_lease_take(target_system_id=world.erp.pk, holder="worker-b", now=later)

    # when the holder is killed and renews it no more
    after = later + datetime.timedelta(seconds=SENDER_LEASE_SECONDS)

    # then the next sender takes it over, and the killed one cannot come back to it
    assert sender_lease_take(target_system_id=world.erp.pk, holder="worker-b", now=after)
    assert not sender_lease_take(target_system_id=world.erp.pk, holder="worker-a", now=after)
    # and a finished sender frees it at once
    sender_lease_release(target_system_id=world.erp.pk, holder="worker-b")
    assert sender_lease_take(target_system_id=world.erp.pk, holder="worker-c")


@pytest.mark.usefixtures("live_celery_worker_db")
def test_posting_resumes_as_soon_as_a_killed_senders_lease_runs_out(request):
    # given a sender of the ERP killed mid-way: its lease was renewed just before the call it died in
    world = build_world(request, trigger=Trigger.EVENT)
    world.webhooks_on()
    killed_at = timezone.now()
    TimeExpenseSenderLease.objects.create(
        target_system=world.erp,
        holder="celery@worker-1:4242:killed",
        heartbeat_at=killed_at,
        expires_at=killed_at + datetime.timedelta(seconds=SENDER_LEASE_SECONDS),
    )

    # when two entries are approved
    entries = [world.time_entry(project="alpha", hours=1), world.time_entry(project="alpha", hours=2)]
    for entry in entries:
        world.approve(entry)
    run_until(lambda: TimeExpensePosting.objects.filter(status=PostingStatus.PENDING).count() == 2)

    # then while the lease runs no other sender posts: their lines wait, nothing reaches the ERP twice
    assert time_expense_postings_send(target_system_id=world.erp.pk).calls == 0
    assert world.erp_lines() == []

    # when its lease runs out, a minute after its last renewal (not the 5.5 minutes of the task-limit lock)
    TimeExpenseSenderLease.objects.filter(target_system=world.erp).update(
        expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )

    # then the beat's next dispatch sends the lines at once
    run_until(lambda: _posted(world) == 2, timeout=20)
    assert len(world.erp_lines()) == 2
    lease = TimeExpenseSenderLease.objects.get(target_system=world.erp)
    assert lease.holder == "" and lease.expires_at <= timezone.now()

    # and each call to the ERP is an attempt row naming the postings and messages it carried
    attempts = DeliveryAttempt.objects.filter(system=world.erp, delivery__isnull=True)
    postings = {pk for a in attempts for pk in a.request_summary["postings"]}
    assert postings == set(TimeExpensePosting.objects.values_list("pk", flat=True))
    messages = Message.objects.filter(system=world.psa)
    assert {a.correlation_id for a in attempts} <= set(messages.values_list("correlation_id", flat=True))
    assert {a.request_summary["operation"] for a in attempts} == {"upsert_batch"}
    assert all(a.request_summary["flow"] == "time_expense_to_erp" for a in attempts)
