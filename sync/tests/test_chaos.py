"""Chaos: the delivery spine loses nothing and duplicates nothing when its parts fail, against a target that
does not de-duplicate (every create appends a record).

Each test runs the hub for real: webhooks over HTTP to the live server, Celery worker processes on a broker
and cache of the test's own (sync/tests/chaos_harness.py), the dispatcher and sweeper played by the test as
beat would run them, and a target that appends every create. Then faults: a worker killed mid-batch, Redis
gone for 20 s, the database's connections terminated, a target that stores a create and answers 503.

At the end of each: every event answered 2xx is stored and none answered 5xx is; every stored record is at the
target exactly once, at its newest stored version; every message is delivered (or skipped as stale).
"""

from __future__ import annotations

import datetime
import logging
import time

import pytest
from django.db import connection
from django.utils import timezone

from connectors.models import ConnectedSystem
from sync import circuit
from sync.choices import AttemptOutcome, DeliveryStatus, MessageStatus
from sync.models import Delivery, DeliveryAttempt, Message
from sync.services import delivery_send, message_process, stuck_delivery_seconds, sync_sweep
from sync.tests.appending_target import AppendingTarget
from sync.tests.chaos_harness import (
    Beat,
    ChaosHub,
    Event,
    Sender,
    all_settled,
    assert_nothing_lost_or_duplicated,
    assert_stored_iff_accepted,
    chaos_hub_running,
    entries_report,
    on_postgresql,
    on_redis,
    outcome_of,
)
from sync.tests.conftest import signed_post

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Generous: a loaded two-core machine runs two worker processes, the live server and the target here.
SETTLE_SECONDS = 180


@pytest.fixture
def chaos_hub(settings, tmp_path):
    requests_log = logging.getLogger("httpx")
    level = requests_log.level
    requests_log.setLevel(logging.WARNING)  # a line per webhook otherwise
    try:
        with chaos_hub_running(settings, tmp_path) as hub:
            yield hub
    finally:
        requests_log.setLevel(level)


def _flow(make_flow, target: AppendingTarget, *, backoff_seconds: int = 0):
    """A CRM → appending target client flow that retries after `backoff_seconds` (at once), up to ten attempts."""
    flow = make_flow(
        target.url, max_attempts=10, backoff_base_seconds=backoff_seconds, backoff_cap_seconds=max(1, backoff_seconds)
    )
    flow.target_system.connector_type = "generic_rest"
    flow.target_system.settings = target.settings()
    flow.target_system.base_url = target.url
    flow.target_system.save()
    return flow


def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(
    chaos_hub: ChaosHub, make_flow, appending_target: AppendingTarget, live_server
):
    # given a worker, and a target that answers every create 0.2 s after storing it
    started = time.monotonic()
    records = 200
    flow = _flow(make_flow, appending_target)
    worker = chaos_hub.worker_start()
    appending_target.fail_next(*[{"delay": 0.2}] * records)
    sender, beat = Sender(live_server.url, flow.source.slug, flow.secret), Beat()

    # when 200 clients are created, and the worker (its whole process group) is SIGKILLed a third of the way in
    sender.send_all(Event(f"K-{n}", 1) for n in range(records))
    beat.until(lambda: appending_target.creates >= records // 3, timeout=SETTLE_SECONDS, what="a third created")
    worker.kill()
    created_before_kill = appending_target.creates
    in_flight = Delivery.objects.filter(message__system=flow.source, status=DeliveryStatus.DELIVERING).count()
    with appending_target.lock:
        appending_target.script.clear()  # the target answers at once from now on
    # and the stuck-delivery period passes (no worker lives, so every delivery in flight is the dead one's),
    # a new worker starts, and newer versions of every other client arrive
    sync_sweep(now=timezone.now() + datetime.timedelta(seconds=stuck_delivery_seconds() + 1))
    chaos_hub.worker_start()
    sender.send_all(Event(f"K-{n}", 2) for n in range(0, records, 2))
    settled = beat.within(lambda: all_settled(flow.source.pk), timeout=SETTLE_SECONDS)

    # then the kill came mid-batch: some created, some in flight, the rest not yet sent
    outcome = outcome_of(sender, flow.source.pk, appending_target)
    print(
        outcome.summary("worker killed mid-batch", time.monotonic() - started),
        f"created before the kill: {created_before_kill}, in flight: {in_flight}",
    )
    assert 0 < created_before_kill < records and in_flight > 0, (created_before_kill, in_flight)
    # and every event was accepted and stored, each client is at the target once, at its newest version
    assert settled, f"messages still open after {SETTLE_SECONDS} s: {outcome.statuses}"
    assert sender.statuses() == {202: records + records // 2}
    assert_stored_iff_accepted(outcome)
    assert_nothing_lost_or_duplicated(outcome)
    assert len(outcome.at_target) == records
    # and the newer versions of clients created before went as updates in place
    assert outcome.updates > 0


@pytest.mark.skipif(not on_redis(), reason="the embedded default has no Redis to lose (filesystem broker and cache)")
def test_with_redis_gone_for_20_seconds_accepted_events_are_stored_and_delivered_once(
    chaos_hub: ChaosHub, make_flow, appending_target: AppendingTarget, live_server
):
    # given a worker, and a source that sends 10 events a second for 32 s: five versions of 64 clients
    started = time.monotonic()
    flow = _flow(make_flow, appending_target)
    chaos_hub.worker_start()
    sender, beat = Sender(live_server.url, flow.source.slug, flow.secret), Beat()
    events = [Event(f"R-{n % 64}", n // 64 + 1) for n in range(320)]
    sending = sender.send_paced(events, per_second=10)

    # when Redis (broker and cache) is killed 4 s in, and started again, empty, 20 s later
    beat.run(4)
    assert chaos_hub.redis is not None
    chaos_hub.redis.kill()
    beat.run(20)
    chaos_hub.redis.start()
    beat.until(lambda: not sending.is_alive(), timeout=SETTLE_SECONDS, what="the sender finished")
    settled = beat.within(lambda: all_settled(flow.source.pk), timeout=SETTLE_SECONDS)

    # then the outage was felt (beat could not dispatch), every event answered 202 was stored, none answered 5xx
    outcome = outcome_of(sender, flow.source.pk, appending_target)
    print(outcome.summary("Redis gone for 20 s", time.monotonic() - started), f"beats failed: {dict(beat.failures)}")
    assert sum(beat.failures.values()) > 0
    assert_stored_iff_accepted(outcome)
    # and the inbound budget failed open: Redis being away refused no event
    assert set(sender.statuses()) == {202}, sender.statuses()
    # and after Redis returned every stored client reached the target once, at its newest version
    assert settled, f"messages still open after {SETTLE_SECONDS} s: {outcome.statuses}"
    assert_nothing_lost_or_duplicated(outcome)


def _terminate_other_connections() -> int:
    """Terminate every connection to the test database but this one (web, workers); how many there were."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


@pytest.mark.skipif(not on_postgresql(), reason="terminating server connections needs PostgreSQL (SQLite has none)")
def test_with_the_database_connections_terminated_nothing_is_lost_or_duplicated(
    chaos_hub: ChaosHub, make_flow, appending_target: AppendingTarget, live_server
):
    # given a worker with one pool process (every task runs on a connection that gets terminated), a flow that
    # retries after 3 s, and a source that sends 20 events a second for 10 s: four versions of 50 clients
    started = time.monotonic()
    flow = _flow(make_flow, appending_target, backoff_seconds=3)
    chaos_hub.worker_start(concurrency=1)
    sender, beat = Sender(live_server.url, flow.source.slug, flow.secret), Beat()
    events = [Event(f"P-{n % 50}", n // 50 + 1) for n in range(200)]
    sending = sender.send_paced(events, per_second=20)

    # when every other connection to the hub's database (web, worker) is terminated five times meanwhile
    terminated = []
    for _ in range(5):
        beat.run(1.8)
        terminated.append(_terminate_other_connections())
    beat.until(lambda: not sending.is_alive(), timeout=SETTLE_SECONDS, what="the sender finished")
    # and once more while the hub is idle but for one more client, whose create the target refused (503, not
    # stored) and which waits 3 s for its retry
    # (generous waits: with its connections back, the hub delivers the events in about 15 s, the last in 5 s)
    settled_before = beat.within(lambda: all_settled(flow.source.pk), timeout=60)
    appending_target.fail_next({"status": 503})
    sender.send_all([Event("P-last", 1)], threads=1)
    retrying = Delivery.objects.filter(
        message__system=flow.source, message__canonical_id="P-last", status=DeliveryStatus.RETRYING
    )
    waiting = settled_before and beat.within(retrying.exists, timeout=60)
    terminated.append(_terminate_other_connections())
    settled = waiting and beat.within(lambda: all_settled(flow.source.pk), timeout=30)

    # then connections were terminated, every event answered 2xx was stored, none answered 5xx was
    outcome = outcome_of(sender, flow.source.pk, appending_target)
    print(
        outcome.summary("database connections terminated", time.monotonic() - started),
        f"connections terminated: {terminated}",
        sender.refusals(),
        outcome.lost,
    )
    assert sum(terminated) > 0
    assert_stored_iff_accepted(outcome)
    # and every stored client reached the target once, at its newest version, the last one after its retry
    assert settled_before and waiting and settled, f"messages still open: {outcome.statuses}"
    assert set(sender.statuses()) <= {202, 503}, sender.statuses()  # 503: the database did not answer
    assert_nothing_lost_or_duplicated(outcome)
    assert "P-last" in outcome.at_target


def test_creates_stored_but_answered_503_are_found_not_created_again(
    chaos_hub: ChaosHub, make_flow, appending_target: AppendingTarget, live_server
):
    # given a worker, and a target that stores every fifth create and then answers it 503
    started = time.monotonic()
    records = 150
    flow = _flow(make_flow, appending_target)
    chaos_hub.worker_start()
    script = [{}, {}, {}, {}, {"accept_then_fail": True}] * records
    appending_target.fail_next(*script)
    sender, beat = Sender(live_server.url, flow.source.slug, flow.secret), Beat()

    # when 150 clients are created, and newer versions of every third follow while the lost answers are retried
    sender.send_all(Event(f"A-{n}", 1) for n in range(records))
    beat.run(1.0)
    sender.send_all(Event(f"A-{n}", 2) for n in range(0, records, 3))
    settled = beat.within(lambda: all_settled(flow.source.pk), timeout=SETTLE_SECONDS)

    # then each answer the target lost is on record as a retryable 503
    with appending_target.lock:
        posted = len(script) - len(appending_target.script)
    lost_answers = sum(1 for fault in script[:posted] if fault)
    outcome = outcome_of(sender, flow.source.pk, appending_target)
    print(outcome.summary("every fifth create answered 503", time.monotonic() - started), f"503s: {lost_answers}")
    assert settled, f"messages still open after {SETTLE_SECONDS} s: {outcome.statuses}"
    assert lost_answers > 0
    retried = DeliveryAttempt.objects.filter(
        delivery__message__system=flow.source, outcome=AttemptOutcome.RETRYABLE_ERROR, status_code=503
    ).count()
    assert retried == lost_answers
    # and every event was stored, every client is at the target once, at its newest version
    assert sender.statuses() == {202: records + records // 3}
    assert_stored_iff_accepted(outcome)
    assert_nothing_lost_or_duplicated(outcome)
    assert len(outcome.at_target) == records


def test_a_create_that_may_have_landed_is_looked_up_while_its_delivery_waits_at_an_open_circuit(
    chaos_hub: ChaosHub, client, make_flow, appending_target: AppendingTarget, settings
):
    # given two versions of a client queued for a target that appends every create, and a breaker that opens at
    # the first failure (the chaos test above, made deterministic; the hub's own broker has no worker, so this
    # test alone sends the deliveries)
    settings.HUB_CIRCUIT_FAILURE_THRESHOLD = 1
    flow = _flow(make_flow, appending_target)
    older, newer = (_queued(client, flow, Event("H-1", version)) for version in (1, 2))
    # when the newer one's create lands but its answer is lost (503), and the circuit, open now, holds its retry
    appending_target.fail_next({"accept_then_fail": True})
    assert delivery_send(delivery_id=newer) == DeliveryStatus.RETRYING
    assert delivery_send(delivery_id=newer) == DeliveryStatus.HELD
    # and, the circuit closed again, the older one is sent first, then the newer one
    circuit.circuit_record_success(system=ConnectedSystem.objects.get(pk=flow.target_system.pk))
    delivery_send(delivery_id=older)
    delivery_send(delivery_id=newer)
    # then the older one found the record the held delivery created: one record, at the newer version
    assert [record["name"] for record in appending_target.by_canonical_id()["H-1"]] == ["H-1 v2"]
    assert appending_target.creates == 1


def _queued(client, flow, event: Event) -> int:
    """Ingest and process one event; its delivery's id."""
    response = signed_post(client, flow, event.record())
    assert response.status_code == 202, response.content
    message_id = response.json()["message_id"]
    message_process(message_id=message_id)
    return Delivery.objects.get(message_id=message_id).pk


def test_a_batch_pull_killed_mid_run_continues_within_two_minutes_with_the_default_sweeper(
    chaos_hub: ChaosHub, time_psa, time_flow, settings
):
    # given the default sweeper period (the chaos hub shortens it) and a PSA whose pages answer slowly
    from collections import Counter

    from sandbox.models import SandboxRecord
    from sync.batch import BATCH_QUEUE
    from sync.choices import PollOutcome
    from sync.models import PollCursor
    from sync.tasks import time_entries_batch_pull_task
    from sync.tests.test_batch import _approved_ids, _erp_control

    settings.HUB_SYNC_SWEEP_AFTER_SECONDS = 60
    del settings.HUB_SYNC_STUCK_DELIVERY_SECONDS
    expected = _approved_ids(time_psa)
    _erp_control(time_psa, "PUT", system="psa", latency_ms=1500)
    worker = chaos_hub.worker_start()
    beat = Beat()

    def cursor() -> PollCursor | None:
        return PollCursor.objects.filter(system=time_flow.psa, entity="time_entry").first()

    def posted() -> Counter:
        rows = SandboxRecord.objects.filter(system="erp", object_type="time-entries", deleted=False)
        return Counter(str(data.get("source_ref")) for data in rows.values_list("data", flat=True))

    # when a worker runs the batch pull and its whole process group is SIGKILLed once a page is stored
    time_entries_batch_pull_task.apply_async(args=[time_flow.route.pk], queue=BATCH_QUEUE)
    beat.until(
        lambda: (c := cursor()) is not None and c.records_stored > 0 and c.last_outcome == PollOutcome.RUNNING,
        timeout=SETTLE_SECONDS,
        what="a first page stored",
    )
    worker.kill()
    stored_at_kill = cursor().records_stored  # type: ignore[union-attr]
    assert stored_at_kill < len(expected), "the run finished before it could be killed"
    _erp_control(time_psa, "DELETE", system="psa")
    # and a worker comes back while beat runs the dispatcher and the sweeper with their defaults
    restarted = time.monotonic()
    chaos_hub.worker_start()
    continued = beat.within(lambda: cursor().last_outcome == PollOutcome.COMPLETE, timeout=SETTLE_SECONDS)  # type: ignore[union-attr]
    took = time.monotonic() - restarted
    print(f"batch pull killed after {stored_at_kill} of {len(expected)} entries stored; completed {took:.0f} s later")
    # then the pull continued from its cursor and finished within two minutes of the worker's return
    assert continued and took <= 120, f"the pull did not complete within 120 s ({took:.0f} s)"
    # and once the killed run's deliveries in flight count as stuck, every approved entry is in the ERP once
    sync_sweep(now=timezone.now() + datetime.timedelta(seconds=stuck_delivery_seconds() + 1))
    # (and recorded: its message delivered, none left queued behind a delivery the killed run held)
    open_messages = Message.objects.filter(system=time_flow.psa, canonical_id__in=expected).exclude(
        status=MessageStatus.DELIVERED
    )
    all_posted = beat.within(lambda: set(posted()) == expected and not open_messages.exists(), timeout=SETTLE_SECONDS)
    missing = (expected - set(posted())) | set(open_messages.values_list("canonical_id", flat=True))
    assert all_posted, (
        f"every approved entry posted and delivered: not within {SETTLE_SECONDS} s; missing or open:\n"
        + entries_report(source=time_flow.psa, canonical_ids=missing)
    )
    assert set(posted().values()) == {1}, f"an entry was posted twice: {posted()}"
