"""Follow-up events: stored with the delivery that caused them (durable), handed to subscribers once,
retried when a subscriber fails."""

from __future__ import annotations

import pytest

from sync.choices import EVENT_MESSAGE_DELIVERED, EVENT_MESSAGE_FAILED, FollowUpStatus
from sync.models import Delivery, FollowUpEvent, Message
from sync.services import (
    delivery_send,
    follow_up_events_dispatch,
    follow_up_events_process,
    follow_up_unsubscribe,
    message_process,
    subscribe,
)
from sync.tests.conftest import client_record, signed_post

pytestmark = pytest.mark.django_db


@pytest.fixture
def heard():
    """A subscriber to sync.message.delivered that records the message ids it was called with."""
    calls: list[int] = []

    @subscribe(EVENT_MESSAGE_DELIVERED)
    def on_delivered(message_id: int) -> None:
        if len(calls) == 0 and getattr(on_delivered, "fail_once", False):
            on_delivered.fail_once = False  # type: ignore[attr-defined]
            raise RuntimeError("subscriber down")
        calls.append(message_id)

    on_delivered.calls = calls  # type: ignore[attr-defined]
    yield on_delivered
    follow_up_unsubscribe(EVENT_MESSAGE_DELIVERED, on_delivered)


def _deliver(client, flow, canonical_id: str) -> Message:
    response = signed_post(client, flow, client_record(canonical_id))
    message = Message.objects.get(pk=response.json()["message_id"])
    message_process(message_id=message.pk)
    delivery_send(delivery_id=Delivery.objects.get(message=message).pk)
    return message


def test_a_delivered_message_stores_one_follow_up_event_and_its_subscriber_runs_once(client, make_flow, target, heard):
    # given a subscriber to delivered messages
    flow = make_flow(target.url)
    # when a message is delivered
    message = _deliver(client, flow, "C-1")
    # then the event is stored (durable) before any subscriber ran
    event = FollowUpEvent.objects.get()
    assert (event.name, event.message_id, event.status) == (EVENT_MESSAGE_DELIVERED, message.pk, FollowUpStatus.PENDING)
    assert heard.calls == []
    # when the dispatcher claims it and a worker processes it (twice, as a redelivered task would)
    assert follow_up_events_dispatch() == 1
    follow_up_events_process(event_ids=[event.pk])
    follow_up_events_process(event_ids=[event.pk])
    # then the subscriber ran exactly once and the event is done
    assert heard.calls == [message.pk]
    assert FollowUpEvent.objects.get().status == FollowUpStatus.DONE
    assert follow_up_events_dispatch() == 0


def test_a_failing_subscriber_is_retried_later(client, make_flow, target, heard):
    # given a subscriber that fails on its first call
    heard.fail_once = True
    flow = make_flow(target.url)
    message = _deliver(client, flow, "C-2")
    event = FollowUpEvent.objects.get()
    # when the event is processed, then processed again after the backoff
    follow_up_events_process(event_ids=[event.pk])
    event.refresh_from_db()
    assert (event.status, event.attempts, event.next_attempt_at is not None) == (FollowUpStatus.PENDING, 1, True)
    assert "subscriber down" in event.last_error
    FollowUpEvent.objects.filter(pk=event.pk).update(next_attempt_at=None)
    assert follow_up_events_dispatch() == 1
    follow_up_events_process(event_ids=[event.pk])
    # then the subscriber's effect happened once
    assert heard.calls == [message.pk]
    assert FollowUpEvent.objects.get(pk=event.pk).status == FollowUpStatus.DONE


def test_an_event_nobody_subscribes_to_stores_nothing(client, make_flow, target, heard):
    # given a subscriber to delivered messages only, and a target rejecting the delivery
    flow = make_flow(target.url)
    target.fail_next({"status": 400})
    # when the message fails
    _deliver(client, flow, "C-3")
    # then no follow-up event of the failure is stored
    assert not FollowUpEvent.objects.filter(name=EVENT_MESSAGE_FAILED).exists()
    assert not FollowUpEvent.objects.exists()
