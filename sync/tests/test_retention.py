"""Retention: payloads of old delivered messages go first, the skeleton stays; old attempts are deleted;
open exception items, their messages and every decision are left alone."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from exception_queue.choices import ExceptionState
from exception_queue.models import Decision, ExceptionItem
from exception_queue.services import message_replay_request
from integrationhub.errors import HubConflictError
from sync.choices import DeliveryStatus, MessageStatus
from sync.models import Delivery, DeliveryAttempt, Message
from sync.services import delivery_send, message_process, retention_prune
from sync.tests.conftest import client_record, signed_post

pytestmark = pytest.mark.django_db


def _delivered(client, flow, canonical_id: str) -> Message:
    response = signed_post(client, flow, client_record(canonical_id))
    message = Message.objects.get(pk=response.json()["message_id"])
    message_process(message_id=message.pk)
    assert delivery_send(delivery_id=Delivery.objects.get(message=message).pk) == DeliveryStatus.DELIVERED
    return Message.objects.get(pk=message.pk)


def _age(message: Message, days: int) -> None:
    then = timezone.now() - datetime.timedelta(days=days)
    Message.objects.filter(pk=message.pk).update(received_at=then, delivered_at=then)
    DeliveryAttempt.objects.filter(delivery__message=message).update(created_at=then)


def test_old_payloads_are_blanked_and_the_skeleton_kept_and_old_attempts_deleted(
    client, make_flow, target, settings, make_role_user
):
    # given retention of 30 days for payloads and 60 for attempts, and delivered messages 10, 45 and 90 days old
    settings.HUB_RETENTION_DAYS = 30
    settings.HUB_RETENTION_ATTEMPT_DAYS = 60
    flow = make_flow(target.url)
    recent, old, older = (_delivered(client, flow, f"C-{n}") for n in (1, 2, 3))
    _age(recent, 10)
    _age(old, 45)
    _age(older, 90)
    # and a decision on the oldest (an admin replayed it once, long ago)
    Decision.objects.create(message=older, action="replay", reason="audit trail", user=make_role_user("auditor"))
    # when retention runs in batches of one
    result = retention_prune(batch_size=1)
    # then the payloads of the two old messages are gone but their rows and stage timestamps stay
    assert (result.payloads_pruned, result.attempts_deleted, result.more) == (2, 1, False)
    for message in (old, older):
        message.refresh_from_db()
        assert message.raw_payload is None and message.canonical_payload is None
        assert message.status == MessageStatus.DELIVERED and message.mapped_at and message.delivered_at
        assert Delivery.objects.get(message=message).outbound_payload is None
    recent.refresh_from_db()
    assert recent.raw_payload["Id"] == "C-1"
    assert Delivery.objects.get(message=recent).outbound_payload is not None
    # and only the attempt older than 60 days is deleted; the decision stays
    assert not DeliveryAttempt.objects.filter(delivery__message=older).exists()
    assert DeliveryAttempt.objects.filter(delivery__message__in=[recent, old]).count() == 2
    assert Decision.objects.filter(message=older).count() == 1
    # and a second run finds nothing more to do
    assert retention_prune() == type(result)(0, 0, False)


def test_a_message_with_an_open_exception_item_keeps_its_payload_and_attempts(client, make_flow, target, settings):
    # given an old message rejected by the target (an open item), and an old failed one
    settings.HUB_RETENTION_DAYS = 1
    settings.HUB_RETENTION_ATTEMPT_DAYS = 1
    flow = make_flow(target.url)
    target.fail_next({"status": 400})
    response = signed_post(client, flow, client_record("C-9"))
    message = Message.objects.get(pk=response.json()["message_id"])
    message_process(message_id=message.pk)
    delivery_send(delivery_id=Delivery.objects.get(message=message).pk)
    item = ExceptionItem.objects.get(message=message)
    _age(message, 30)
    # when retention runs
    result = retention_prune()
    # then nothing of it is touched
    assert (result.payloads_pruned, result.attempts_deleted) == (0, 0)
    message.refresh_from_db()
    assert message.raw_payload is not None
    assert DeliveryAttempt.objects.filter(delivery__message=message).count() == 1
    assert ExceptionItem.objects.get(pk=item.pk).state == ExceptionState.OPEN


def test_the_batches_are_bounded_and_the_next_run_continues(client, make_flow, target, settings):
    settings.HUB_RETENTION_DAYS = 1
    flow = make_flow(target.url)
    for n in range(3):
        _age(_delivered(client, flow, f"C-{n}"), 5)
    first = retention_prune(batch_size=1, max_batches=2)
    second = retention_prune(batch_size=1, max_batches=2)
    assert (first.payloads_pruned, first.more) == (2, True)
    assert second.payloads_pruned == 1
    assert not Message.objects.filter(raw_payload__isnull=False).exists()


def test_a_pruned_message_cannot_be_replayed(client, make_flow, target, settings, make_role_user):
    settings.HUB_RETENTION_DAYS = 1
    flow = make_flow(target.url)
    message = _delivered(client, flow, "C-5")
    _age(message, 5)
    retention_prune()
    with pytest.raises(HubConflictError):
        message_replay_request(message=message, user=make_role_user("integration_admin"), reason="try")
    assert Message.objects.get(pk=message.pk).status == MessageStatus.DELIVERED


def test_retention_runs_hourly_on_the_housekeeping_queue():
    task = PeriodicTask.objects.get(task="sync.retention_prune_task")
    assert (task.queue, task.interval.every, task.interval.period, task.enabled) == (
        "housekeeping",
        3600,
        "seconds",
        True,
    )
