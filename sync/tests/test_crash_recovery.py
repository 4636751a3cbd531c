"""What a killed worker leaves behind never stalls work for longer than the sweeper period: a pull's lease on
its cursor expires unless renewed, the sweeper starts a batch pull whose cursor stopped moving again, and a
delivery batch is claimed slice by slice so that unsent deliveries are not held as in flight."""

from __future__ import annotations

import datetime
import time
from collections import Counter

import pytest
from django.utils import timezone

from sandbox.models import SandboxRecord
from sync import batch, delivering
from sync.batch import time_entries_batch_pull
from sync.choices import DeliveryStatus, PollOutcome
from sync.models import Delivery, PollCursor
from sync.services import deliveries_send, message_process, poll_lease_take, stuck_delivery_seconds, sync_sweep
from sync.tests.conftest import client_record, signed_post


def test_a_pull_lease_left_by_a_killed_run_expires_within_the_sweeper_period(settings):
    # given a sweeper period of one second and a lease taken by a run that was then killed (never released)
    settings.HUB_SYNC_SWEEP_AFTER_SECONDS = 1
    held = poll_lease_take(system_id=987654, entity="time_entry")
    assert held is not None
    # then no second run can take it while it lives
    assert poll_lease_take(system_id=987654, entity="time_entry") is None
    # and once the period has passed without a heartbeat, the next run takes it
    deadline = time.monotonic() + 30
    taken = None
    while taken is None and time.monotonic() < deadline:
        taken = poll_lease_take(system_id=987654, entity="time_entry")
        if taken is None:
            time.sleep(0.2)
    assert taken is not None, "the lease of a killed run never expired"
    taken.release()


@pytest.mark.django_db(transaction=True)
def test_the_sweeper_starts_again_a_batch_pull_that_died_and_nothing_is_posted_twice(time_psa, time_flow, monkeypatch):
    # given a batch pull killed after storing its first page (its cursor says running, and stops moving)
    flow = time_flow
    send = batch._send

    def post_then_die(*args, **kwargs):
        send(*args, **kwargs)
        raise RuntimeError("worker killed")

    monkeypatch.setattr(batch, "_send", post_then_die)
    with pytest.raises(RuntimeError):
        time_entries_batch_pull(route_id=flow.route.pk)
    monkeypatch.setattr(batch, "_send", send)
    cursor = PollCursor.objects.get(system=flow.psa, entity="time_entry")
    assert cursor.last_outcome == PollOutcome.RUNNING
    # when the sweeper runs a sweeper period later
    started = []
    from sync import dispatching

    monkeypatch.setattr(dispatching, "enqueue_on_commit", lambda task, *args, **kw: started.append((task.name, args)))
    swept = sync_sweep(now=timezone.now() + datetime.timedelta(seconds=61))
    # then it started the pull of that route again, once
    assert swept["pulls"] == 1 and started == [("sync.time_entries_batch_pull_task", (flow.route.pk,))]
    assert sync_sweep(now=timezone.now() + datetime.timedelta(seconds=61))["pulls"] == 0
    # and the resumed run, with the dead run's deliveries swept, posts every approved entry exactly once
    sync_sweep(now=timezone.now() + datetime.timedelta(days=1))
    deliveries_send(delivery_ids=list(Delivery.objects.filter(route=flow.route).values_list("pk", flat=True)))
    result = time_entries_batch_pull(route_id=flow.route.pk)
    assert result.outcome == PollOutcome.COMPLETE
    rows = SandboxRecord.objects.filter(system="erp", object_type="time-entries", deleted=False)
    posted = Counter(str(data.get("source_ref")) for data in rows.values_list("data", flat=True))
    approved = {r.external_id for r in time_psa.records("time_entries") if r.data.get("approval_status") == "approved"}
    assert set(posted) == approved and set(posted.values()) == {1}


@pytest.mark.django_db
def test_a_delivery_batch_is_claimed_in_slices_and_a_killed_worker_holds_only_one(
    client, make_flow, target, monkeypatch
):
    # given more deliveries than one claim slice, waiting for one target
    monkeypatch.setattr(delivering, "CLAIM_SLICE", 5)
    flow = make_flow(target.url)
    ids = []
    for n in range(12):
        response = signed_post(client, flow, client_record(f"S-{n}"))
        message_process(message_id=response.json()["message_id"])
        ids.append(Delivery.objects.get(message_id=response.json()["message_id"]).pk)
    # when the worker dies while it sends the second slice
    real_call = delivering._call_one
    calls = []

    def call_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7:
            raise SystemExit("worker killed")
        return real_call(*args, **kwargs)

    monkeypatch.setattr(delivering, "_call_one", call_then_die)
    with pytest.raises(SystemExit):
        deliveries_send(delivery_ids=ids)
    # then the first slice is delivered and recorded, only the second is held in flight, and the third was
    # never claimed: the dispatcher hands it out again without waiting for the stuck-delivery timeout
    states = Counter(Delivery.objects.filter(pk__in=ids).values_list("status", flat=True))
    assert states == {DeliveryStatus.DELIVERED: 5, DeliveryStatus.DELIVERING: 5, DeliveryStatus.PENDING: 2}


@pytest.mark.django_db(transaction=True)
def test_deliveries_a_killed_batch_pull_left_in_flight_are_dispatched_again_after_an_advanced_sweep(
    time_psa, time_flow, monkeypatch
):
    # given a batch pull killed after storing its first page and before its ERP call went out: the page's
    # messages queued, their deliveries stored in flight by the run (attempt counted, no attempt row), the
    # cursor running, and nothing of the page at the ERP
    flow = time_flow

    def die_before_the_call(*args, **kwargs):
        raise SystemExit("worker killed")

    monkeypatch.setattr(batch, "_send", die_before_the_call)
    with pytest.raises(SystemExit):
        time_entries_batch_pull(route_id=flow.route.pk, max_pages=1)
    monkeypatch.undo()
    left = Delivery.objects.filter(route=flow.route)
    assert left.exists() and set(left.values_list("status", "attempts")) == {(DeliveryStatus.DELIVERING, 1)}
    assert not SandboxRecord.objects.filter(system="erp", object_type="time-entries").exists()
    # when the sweeper judges them stuck on a clock that runs ahead of the dispatcher's (as after the
    # stuck-delivery period, or a sweep started with a later `now`); what it hands to the workers is kept here,
    # so that no worker of the session takes it
    from sync import dispatching

    handed_out: dict[str, list] = {}
    monkeypatch.setattr(
        dispatching,
        "enqueue_on_commit",
        lambda task, *args, **kwargs: handed_out.setdefault(task.name, []).extend(args),
    )
    swept = sync_sweep(now=timezone.now() + datetime.timedelta(seconds=stuck_delivery_seconds() + 1))
    assert swept["deliveries"] == left.count() and swept["pulls"] == 1
    # then they are due at once: the dispatcher's next beat, on its own clock, hands out every one of them
    assert dispatching.deliveries_dispatch() == left.count()
    (delivery_ids,) = handed_out["sync.deliveries_send_task"]
    assert sorted(delivery_ids) == sorted(left.values_list("pk", flat=True))
    # and sent, each entry reaches the ERP once, its message delivered
    deliveries_send(delivery_ids=delivery_ids)
    rows = SandboxRecord.objects.filter(system="erp", object_type="time-entries", deleted=False)
    posted = Counter(str(data.get("source_ref")) for data in rows.values_list("data", flat=True))
    assert set(posted) == set(left.values_list("message__canonical_id", flat=True)) and set(posted.values()) == {1}
    assert set(left.values_list("status", "message__status")) == {(DeliveryStatus.DELIVERED, "delivered")}
