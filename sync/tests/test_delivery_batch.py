"""A delivery task's batch: claimed, called and recorded together, with delivery_send's semantics for every
outcome (stale updates, rejections, an opening circuit) and a bounded number of statements."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from exception_queue.choices import ExceptionCategory
from exception_queue.models import ExceptionItem
from sync.choices import AttemptOutcome, DeliveryStatus, MessageStatus
from sync.models import CrossReference, Delivery, DeliveryAttempt, Message, OrderingWatermark
from sync.services import deliveries_send, message_process
from sync.tests.conftest import client_record, signed_post

pytestmark = pytest.mark.django_db


def _queued(client, flow, records) -> list[int]:
    """Ingest and process each record; the ids of the deliveries waiting to be sent, in order."""
    ids = []
    for record in records:
        response = signed_post(client, flow, record)
        assert response.status_code == 202, response.content
        message_process(message_id=response.json()["message_id"])
        ids.append(Delivery.objects.get(message_id=response.json()["message_id"]).pk)
    return ids


def _with_batch_endpoint(flow) -> None:
    """Make the flow's target a generic REST system whose client endpoint also takes batches."""
    flow.target_system.connector_type = "generic_rest"
    flow.target_system.settings = {
        "auth_mode": "none",
        "endpoints": {"client": {"path": "/records/client", "batch_path": "/records/client/batch"}},
    }
    flow.target_system.save()


def test_a_batch_is_recorded_in_a_bounded_number_of_statements(client, make_flow, target):
    # given twenty clients waiting to be delivered to one target
    flow = make_flow(target.url)
    ids = _queued(client, flow, [client_record(f"B-{n}", f"Client {n}") for n in range(20)])
    # when one delivery task sends them
    with CaptureQueriesContext(connection) as queries:
        counts = deliveries_send(delivery_ids=ids)
    # then every one is delivered once, with its attempt, cross-reference, watermark and message state
    assert counts == {DeliveryStatus.DELIVERED: 20}
    assert len(target.upserts()) == 20
    assert set(Delivery.objects.filter(pk__in=ids).values_list("status", flat=True)) == {DeliveryStatus.DELIVERED}
    assert DeliveryAttempt.objects.filter(delivery_id__in=ids, number=1, outcome=AttemptOutcome.DELIVERED).count() == 20
    assert CrossReference.objects.filter(system=flow.target_system, canonical_id__startswith="B-").count() == 20
    assert OrderingWatermark.objects.filter(target_system=flow.target_system).count() == 20
    messages = Message.objects.filter(deliveries__pk__in=ids)
    assert set(messages.values_list("status", flat=True)) == {MessageStatus.DELIVERED}
    assert set(messages.values_list("attempts", flat=True)) == {1}
    # in a number of statements that does not grow with the batch (one by one it was about 22 per delivery;
    # savepoints are the test's transaction, BEGIN and COMMIT in production; two reads give the records'
    # identity at the target: their cross-references and the keys of earlier unanswered deliveries)
    statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) <= 18, "\n".join(sql[:100] for sql in statements)


def test_an_older_update_behind_a_newer_one_in_the_same_batch_is_skipped_stale(client, make_flow, target):
    # given the newer update of a client queued before an older one, both in one batch
    flow = make_flow(target.url)
    ids = _queued(
        client,
        flow,
        [
            client_record("S-1", "New name", "2026-11-26T12:00:00Z"),
            client_record("S-1", "Old name", "2026-11-26T09:00:00Z"),
            client_record("S-2", "Other", "2026-11-26T10:00:00Z"),
        ],
    )
    # when the batch is sent
    counts = deliveries_send(delivery_ids=ids)
    # then the newer and the other client are delivered, the older skipped, and the target keeps the newer name
    assert counts == {DeliveryStatus.DELIVERED: 2, DeliveryStatus.SKIPPED_STALE: 1}
    assert Delivery.objects.get(pk=ids[1]).status == DeliveryStatus.SKIPPED_STALE
    assert Message.objects.get(deliveries__pk=ids[1]).status == MessageStatus.SKIPPED_STALE
    assert target.record("client", "S-1")["name"] == "New name"
    mark = OrderingWatermark.objects.get(target_system=flow.target_system, ordering_key="S-1")
    assert mark.message_id == Delivery.objects.get(pk=ids[0]).message_id


def test_a_rejected_record_in_a_batch_opens_its_item_and_the_rest_are_delivered(client, make_flow, target):
    # given three clients, the target refusing the first call
    flow = make_flow(target.url)
    ids = _queued(client, flow, [client_record(f"R-{n}") for n in range(3)])
    target.fail_next({"status": 400})
    # when the batch is sent
    counts = deliveries_send(delivery_ids=ids)
    # then the rejected one is failed with a target_rejected item, the others delivered
    assert counts == {DeliveryStatus.DELIVERED: 2, DeliveryStatus.FAILED: 1}
    assert Delivery.objects.get(pk=ids[0]).status == DeliveryStatus.FAILED
    assert ExceptionItem.objects.get(delivery_id=ids[0]).category == ExceptionCategory.TARGET_REJECTED
    assert Message.objects.get(deliveries__pk=ids[0]).status == MessageStatus.FAILED
    assert set(Delivery.objects.filter(pk__in=ids[1:]).values_list("status", flat=True)) == {DeliveryStatus.DELIVERED}


def test_a_circuit_opened_mid_batch_stops_the_calls_and_holds_the_rest_without_an_attempt(
    client, make_flow, target, settings
):
    # given a target failing every call and a breaker opening after three failures
    settings.HUB_CIRCUIT_FAILURE_THRESHOLD = 3
    settings.HUB_CIRCUIT_OPEN_SECONDS = 30
    flow = make_flow(target.url, max_attempts=10)
    ids = _queued(client, flow, [client_record(f"O-{n}") for n in range(6)])
    target.fail_next(*[{"status": 503}] * 6)
    # when the batch is sent
    counts = deliveries_send(delivery_ids=ids)
    # then three calls went out; the other three are held until the circuit lets a probe through, uncounted
    assert len(target.upserts()) == 3
    assert counts == {DeliveryStatus.RETRYING: 3, DeliveryStatus.HELD: 3}
    held = Delivery.objects.filter(pk__in=ids[3:])
    assert set(held.values_list("status", "attempts")) == {(DeliveryStatus.HELD, 0)}
    assert all(when is not None for when in held.values_list("next_attempt_at", flat=True))
    assert not DeliveryAttempt.objects.filter(delivery_id__in=ids[3:]).exists()


@pytest.fixture
def batch_target():
    """A real HTTP target with a batch endpoint (the events benchmark's): records stored once per key."""
    import threading
    from http.server import ThreadingHTTPServer

    from bench.target import Store, handler_for

    store = Store()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(store))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield store, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_target_with_a_batch_endpoint_gets_the_batch_in_one_call_and_a_retry_creates_nothing(
    client, make_flow, batch_target
):
    # given a generic REST target whose client endpoint takes batches, and five clients to deliver
    store, url = batch_target
    flow = make_flow(url)
    _with_batch_endpoint(flow)
    ids = _queued(client, flow, [client_record(f"G-{n}") for n in range(5)])
    # when the batch is sent
    counts = deliveries_send(delivery_ids=ids)
    # then one call carried all five, each stored once, with its attempt and cross-reference
    assert counts == {DeliveryStatus.DELIVERED: 5}
    assert (store.posts, len(store.keys)) == (5, 5)
    attempts = DeliveryAttempt.objects.filter(delivery_id__in=ids)
    assert set(attempts.values_list("request_summary__operation", flat=True)) == {"upsert_batch"}
    assert CrossReference.objects.filter(system=flow.target_system, canonical_id__startswith="G-").count() == 5
    # when the same deliveries are sent again as retries (their answer lost: no cross-reference was written),
    # nothing is created twice
    Delivery.objects.filter(pk__in=ids).update(status=DeliveryStatus.RETRYING)
    CrossReference.objects.filter(system=flow.target_system).delete()
    assert deliveries_send(delivery_ids=ids) == {DeliveryStatus.DELIVERED: 5}
    assert len(store.keys) == 5 and store.repeated == 5
    outcomes = DeliveryAttempt.objects.filter(delivery_id__in=ids, number=2).values_list("outcome", flat=True)
    assert set(outcomes) == {AttemptOutcome.ALREADY_APPLIED}


def test_a_message_failing_unexpectedly_in_a_batch_leaves_the_others_processed(client, make_flow, target, monkeypatch):
    # given three received messages, the second of which makes a stage raise an unexpected error
    from sync import pipeline

    flow = make_flow(target.url)
    ids = []
    for n in range(3):
        response = signed_post(client, flow, client_record(f"F-{n}"))
        ids.append(response.json()["message_id"])
    real_route = pipeline._stage_route

    def route_or_fail(message, routes, now, batch=None):
        if message.canonical_id == "F-1":
            raise RuntimeError("unexpected")
        return real_route(message, routes, now, batch)

    monkeypatch.setattr(pipeline, "_stage_route", route_or_fail)
    # when the batch is processed
    counts = pipeline.messages_process(message_ids=ids)
    # then the batch fell back to one message at a time: the other two are queued with their deliveries,
    # the failing one is left where it was for the sweeper, and nothing of it was half stored
    assert counts == {MessageStatus.QUEUED: 2, "error": 1}
    statuses = dict(Message.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert (statuses[ids[0]], statuses[ids[2]]) == (MessageStatus.QUEUED, MessageStatus.QUEUED)
    assert statuses[ids[1]] == MessageStatus.RECEIVED
    assert not Delivery.objects.filter(message_id=ids[1]).exists()
    assert Delivery.objects.filter(message_id__in=[ids[0], ids[2]]).count() == 2


def test_a_batch_call_answered_503_retries_every_record_and_counts_once_in_the_circuit(client, make_flow, settings):
    # given a batch target that answers 503 to the first batch call, and a breaker opening after two failures
    import threading
    from http.server import ThreadingHTTPServer

    from bench.target import Store, handler_for

    settings.HUB_CIRCUIT_FAILURE_THRESHOLD = 2
    store = Store()
    failures = [503]

    class Flaky(handler_for(store)):  # type: ignore[misc]
        def do_POST(self) -> None:
            if failures:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._reply(failures.pop(), {"error": "unavailable"})
                return
            super().do_POST()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        flow = make_flow(f"http://127.0.0.1:{server.server_address[1]}", max_attempts=5)
        _with_batch_endpoint(flow)
        ids = _queued(client, flow, [client_record(f"U-{n}") for n in range(3)])
        # when the batch is sent and the call fails as a whole
        counts = deliveries_send(delivery_ids=ids)
        # then every record waits for a retry with a retryable attempt, nothing stored, and the one failed call
        # counted once: the circuit (threshold two) stays closed
        assert counts == {DeliveryStatus.RETRYING: 3}
        assert store.keys == {}
        attempts = DeliveryAttempt.objects.filter(delivery_id__in=ids)
        assert set(attempts.values_list("outcome", "status_code")) == {(AttemptOutcome.RETRYABLE_ERROR, 503)}
        flow.target_system.refresh_from_db()
        assert flow.target_system.state == "active"
        # and the retry (the key search first, as the record may have landed) delivers each record once
        Delivery.objects.filter(pk__in=ids).update(next_attempt_at=None)
        assert deliveries_send(delivery_ids=ids) == {DeliveryStatus.DELIVERED: 3}
        assert len(store.keys) == 3
    finally:
        server.shutdown()
        server.server_close()


def test_a_full_message_batch_hands_out_the_next_batch_without_waiting_for_the_dispatcher(
    client, make_flow, target, settings, django_capture_on_commit_callbacks
):
    from sync.services import messages_process

    # given batches of three messages and seven events waiting, none handed to a worker yet
    settings.HUB_DISPATCH_BATCH_SIZE = 3
    flow = make_flow(target.url)
    for n in range(7):
        assert signed_post(client, flow, client_record(f"N-{n}", f"Client {n}")).status_code == 202
    ids = list(Message.objects.order_by("pk").values_list("pk", flat=True))
    # when a worker processes a full batch (the first three)
    with django_capture_on_commit_callbacks(execute=False):
        messages_process(message_ids=ids[:3])
    # then the next three are handed out at once, the seventh waits for the dispatcher's tick
    dispatched = set(Message.objects.filter(dispatched_at__isnull=False).values_list("pk", flat=True))
    assert dispatched == set(ids[3:6])
    # and a batch that was not full hands out nothing
    with django_capture_on_commit_callbacks(execute=False):
        messages_process(message_ids=ids[3:5])
    assert Message.objects.get(pk=ids[6]).dispatched_at is None
