"""End to end with a real Celery worker process, the real broker and database, and a real HTTP target.

The test plays beat: `wait_for` runs the dispatcher tick every 0.2 s, as the 1 s beat entry would.
"""

from __future__ import annotations

import datetime
import os
import signal
import time
from pathlib import Path

import pytest
from django.utils import timezone

from connectors.choices import SystemState
from connectors.models import ConnectedSystem
from connectors.services import connected_system_pause, connected_system_resume
from exception_queue.choices import ExceptionCategory
from exception_queue.models import ExceptionItem
from exception_queue.services import message_replay_request
from sync.choices import AttemptOutcome, DeliveryStatus, MessageStatus
from sync.models import Delivery, DeliveryAttempt, Message
from sync.services import deliveries_release, sync_sweep
from sync.tests.conftest import client_record, signed_post, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _pool_process_talking_to(worker_pid: int, url: str) -> int:
    """The pid of the worker's pool process holding a TCP connection to `url`'s port (Linux /proc)."""
    port = int(url.rsplit(":", 1)[1])
    remote = f":{port:04X}"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[2].endswith(remote):
                inodes.add(fields[9])
    children = Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split()
    for pid in children:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return int(pid)
    raise AssertionError("no pool process is talking to the target")


def _status(message_id: int) -> str:
    return Message.objects.get(pk=message_id).status


def _post(client, flow, record, **kwargs) -> int:
    response = signed_post(client, flow, record, **kwargs)
    assert response.status_code in (200, 202), response.content
    return response.json()["message_id"]


def test_a_duplicate_webhook_gives_one_message_and_one_delivery(client, make_flow, target, live_celery_worker_db):
    # given a flow to a live target
    flow = make_flow(target.url)
    # when the same event arrives twice
    first = _post(client, flow, client_record("C-1"), msg_id="evt-1")
    second = _post(client, flow, client_record("C-1"), msg_id="evt-1")
    wait_for(lambda: _status(first) == MessageStatus.DELIVERED)
    # then one message, one delivery, one call at the target
    assert first == second
    assert Message.objects.count() == 1
    assert Delivery.objects.count() == 1
    assert len(target.upserts()) == 1


def test_a_target_answering_500_twice_then_200_ends_delivered_after_3_attempts(
    client, make_flow, target, live_celery_worker_db
):
    # given a target that fails twice with 500
    flow = make_flow(target.url, max_attempts=5)
    target.fail_next({"status": 500}, {"status": 500})
    # when an event is sent
    message_id = _post(client, flow, client_record("C-2"))
    wait_for(lambda: _status(message_id) == MessageStatus.DELIVERED)
    # then it was delivered on the third attempt, and each attempt is on record
    attempts = list(
        DeliveryAttempt.objects.filter(delivery__message_id=message_id)
        .order_by("number")
        .values_list("outcome", "status_code")
    )
    assert attempts[:2] == [(AttemptOutcome.RETRYABLE_ERROR, 500), (AttemptOutcome.RETRYABLE_ERROR, 500)]
    assert len(attempts) == 3
    assert attempts[2][0] in (AttemptOutcome.DELIVERED, AttemptOutcome.ALREADY_APPLIED)
    assert target.record("client", "C-2") is not None


def test_a_target_answering_400_gives_an_exception_item_and_no_retry(client, make_flow, target, live_celery_worker_db):
    # given a target that rejects the record
    flow = make_flow(target.url)
    target.fail_next({"status": 400})
    # when an event is sent
    message_id = _post(client, flow, client_record("C-3"))
    wait_for(lambda: _status(message_id) == MessageStatus.FAILED)
    time.sleep(1.0)  # a few more dispatcher ticks: nothing may retry it
    wait_for(lambda: True, timeout=1)
    # then one call only, and a target_rejected item
    assert len(target.upserts()) == 1
    assert DeliveryAttempt.objects.filter(delivery__message_id=message_id).count() == 1
    assert ExceptionItem.objects.get(message_id=message_id).category == ExceptionCategory.TARGET_REJECTED


def test_a_429_with_retry_after_is_honoured(client, make_flow, target, live_celery_worker_db):
    # given a target that answers 429 with Retry-After: 2, and a policy that would retry at once
    flow = make_flow(target.url, backoff_base_seconds=0)
    target.fail_next({"status": 429, "headers": {"Retry-After": "2"}})
    # when an event is sent
    message_id = _post(client, flow, client_record("C-4"))
    wait_for(lambda: _status(message_id) == MessageStatus.DELIVERED)
    # then the second call came at least 2 s after the first
    first, second = DeliveryAttempt.objects.filter(delivery__message_id=message_id).order_by("number")[:2]
    assert first.status_code == 429
    assert (second.created_at - first.created_at).total_seconds() >= 2.0


def test_updates_arriving_out_of_order_leave_the_newest_applied(client, make_flow, target, live_celery_worker_db):
    # given the newest update of a client delivered first
    flow = make_flow(target.url)
    newest = _post(client, flow, client_record("C-5", "Newest", "2026-11-26T12:00:00Z"))
    wait_for(lambda: _status(newest) == MessageStatus.DELIVERED)
    # when two older updates arrive afterwards
    older = [
        _post(client, flow, client_record("C-5", "Older", "2026-11-26T11:00:00Z")),
        _post(client, flow, client_record("C-5", "Oldest", "2026-11-26T10:00:00Z")),
    ]
    wait_for(lambda: all(_status(m) == MessageStatus.SKIPPED_STALE for m in older))
    # then the target still holds the newest
    assert target.record("client", "C-5")["name"] == "Newest"
    assert len(target.upserts()) == 1


def test_a_message_stuck_in_received_is_picked_up_by_the_sweeper(
    client, make_flow, target, live_celery_worker_db, settings
):
    # given a message handed to a task that was lost (dispatched two minutes ago, still received)
    settings.HUB_SYNC_SWEEP_AFTER_SECONDS = 60
    flow = make_flow(target.url)
    message_id = _post(client, flow, client_record("C-6"))
    Message.objects.filter(pk=message_id).update(dispatched_at=timezone.now() - datetime.timedelta(minutes=2))
    # when the dispatcher ticks, it leaves it alone; the sweeper picks it up
    wait_for(lambda: True, timeout=0.5)
    assert _status(message_id) == MessageStatus.RECEIVED
    assert sync_sweep()["messages"] == 1
    wait_for(lambda: _status(message_id) == MessageStatus.DELIVERED)
    # then it was delivered
    assert target.record("client", "C-6") is not None


def test_replaying_a_delivered_message_creates_no_duplicate(
    client, make_flow, target, live_celery_worker_db, make_role_user
):
    # given a delivered message
    flow = make_flow(target.url)
    message_id = _post(client, flow, client_record("C-7"))
    wait_for(lambda: _status(message_id) == MessageStatus.DELIVERED)
    # when an integration admin replays it
    message = Message.objects.get(pk=message_id)
    message_replay_request(message=message, user=make_role_user("integration_admin"), reason="Re-sync")
    wait_for(lambda: DeliveryAttempt.objects.filter(delivery__message_id=message_id).count() == 2)
    wait_for(lambda: _status(message_id) == MessageStatus.DELIVERED)
    # then the target got one create; the replay updated the record the cross-reference names
    assert len(target.upserts()) == 1
    assert len(target.records["client"]) == 1
    assert [call.method for call in target.calls if call.method == "PUT"] == ["PUT"]
    last = DeliveryAttempt.objects.filter(delivery__message_id=message_id).order_by("number").last()
    assert (last.outcome, last.request_summary["operation"]) == (AttemptOutcome.DELIVERED, "update")


def test_pause_holds_and_resume_releases_deliveries(client, make_flow, target, live_celery_worker_db):
    # given a paused target
    flow = make_flow(target.url)
    connected_system_pause(system=flow.target_system, reason="maintenance window")
    # when events arrive
    ids = [_post(client, flow, client_record(f"C-8{n}")) for n in range(3)]
    wait_for(lambda: all(_status(m) == MessageStatus.QUEUED or _status(m) == MessageStatus.DELIVERING for m in ids))
    wait_for(lambda: True, timeout=1)
    # then nothing reaches the target while paused
    assert target.upserts() == []
    assert not Delivery.objects.filter(status=DeliveryStatus.DELIVERED).exists()
    # when the target is resumed
    system = ConnectedSystem.objects.get(pk=flow.target_system.pk)
    connected_system_resume(system=system, reason="maintenance over")
    deliveries_release(system=system)
    wait_for(lambda: all(_status(m) == MessageStatus.DELIVERED for m in ids))
    # then all three are delivered, once each
    assert len(target.upserts()) == 3


def test_the_open_circuit_stops_attempts_then_recovers(client, make_flow, target, live_celery_worker_db):
    # given a target failing 5 times in a row (the worker's breaker opens after 3 for 2 s)
    flow = make_flow(target.url, max_attempts=10)
    target.fail_next(*[{"status": 503}] * 5)
    # when an event is sent
    message_id = _post(client, flow, client_record("C-9"))
    wait_for(
        lambda: ConnectedSystem.objects.get(pk=flow.target_system.pk).state == SystemState.CIRCUIT_OPEN, timeout=20
    )
    # then while open, no call goes out
    calls_when_opened = len(target.upserts())
    assert calls_when_opened == 3
    wait_for(lambda: True, timeout=1.0)
    assert len(target.upserts()) == calls_when_opened
    # and after the open period single probes go out until one succeeds, which closes the circuit
    wait_for(lambda: _status(message_id) == MessageStatus.DELIVERED, timeout=30)
    assert ConnectedSystem.objects.get(pk=flow.target_system.pk).state == SystemState.ACTIVE
    probes = DeliveryAttempt.objects.filter(delivery__message_id=message_id, request_summary__probe=True)
    assert probes.count() >= 1


def test_a_worker_killed_between_the_target_call_and_the_commit_leaves_one_record(
    client, make_flow, target, live_celery_worker_db, settings
):
    # given a target that stores the record and then answers slowly
    settings.HUB_SYNC_SWEEP_AFTER_SECONDS = 1
    settings.HUB_SYNC_STUCK_DELIVERY_SECONDS = 2
    flow = make_flow(target.url)
    target.fail_next({"store": True, "delay": 4})
    message_id = _post(client, flow, client_record("C-10"))
    wait_for(lambda: len(target.upserts()) == 1, timeout=20)
    # when the pool processes of the worker are killed mid-call (the record is at the target, nothing committed)
    os.kill(_pool_process_talking_to(live_celery_worker_db.pid, target.url), signal.SIGKILL)
    delivery = Delivery.objects.get(message_id=message_id)
    assert delivery.status == DeliveryStatus.DELIVERING
    # and the sweeper finds the delivery stuck mid-call
    time.sleep(2.5)
    assert sync_sweep()["deliveries"] == 1
    wait_for(lambda: _status(message_id) == MessageStatus.DELIVERED, timeout=30)
    # then the retry looked it up instead of creating it again: one record, one create
    assert len(target.upserts()) == 1
    assert len(target.records["client"]) == 1
    outcomes = list(DeliveryAttempt.objects.filter(delivery__message_id=message_id).values_list("outcome", flat=True))
    assert outcomes == [AttemptOutcome.ALREADY_APPLIED]
