"""GET /metrics: Prometheus text from the database at scrape time, HTTP metrics, and who may scrape."""

from __future__ import annotations

import datetime
import uuid

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from connectors.tests.factories import ConnectedSystemFactory
from insights import metrics
from insights.tests.factories import DeliveryAttemptFactory, DeliveryFactory, ExceptionItemFactory, MessageFactory
from sync.choices import AttemptOutcome, MessageStatus
from sync.models import Message

pytestmark = pytest.mark.django_db

OUTSIDE = "203.0.113.7"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_read_the_hubs_rows_at_scrape_time(client):
    # given messages in three statuses, attempts at one system (one retry, and one from yesterday that is out of
    # the last hour) and an item open for an hour
    system = ConnectedSystemFactory(slug="erp-uk")
    for status in (MessageStatus.RECEIVED, MessageStatus.RECEIVED, MessageStatus.DEAD):
        MessageFactory(system=system, status=status)
    delivery = DeliveryFactory(target_system=system, message__system=system)
    DeliveryAttemptFactory(delivery=delivery, number=1, outcome=AttemptOutcome.RETRYABLE_ERROR)
    DeliveryAttemptFactory(delivery=delivery, number=2, outcome=AttemptOutcome.DELIVERED)
    yesterday = timezone.now() - datetime.timedelta(days=1)
    DeliveryAttemptFactory(delivery=delivery, number=3, outcome=AttemptOutcome.DELIVERED, created_at=yesterday)
    ExceptionItemFactory(created_at=timezone.now() - datetime.timedelta(hours=1))

    # when Prometheus scrapes from the local machine
    response = client.get("/metrics")

    # then the figures are those of the rows
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    found = samples(response.content.decode())
    assert found[("hub_messages", (("status", "received"),))] == 2
    assert found[("hub_messages", (("status", "dead"),))] == 1
    assert found[("hub_messages", (("status", "delivered"),))] == 1  # the delivery's own message
    assert found[("hub_messages_waiting", ())] == 2
    assert found[("hub_delivery_attempts_last_hour", (("outcome", "retryable_error"), ("system", "erp-uk")))] == 1
    assert found[("hub_delivery_attempts_last_hour", (("outcome", "delivered"), ("system", "erp-uk")))] == 1
    assert found[("hub_delivery_retries_last_hour", ())] == 1
    assert found[("hub_exception_items_open", ())] == 1
    assert 3590 <= found[("hub_oldest_open_exception_item_age_seconds", ())] <= 3700
    assert ("hub_celery_queue_depth", (("queue", "inbound"),)) in found


def test_metrics_follow_the_rows_without_a_counter(client):
    # given a first scrape
    first = samples(client.get("/metrics").content.decode())
    # when a message is stored and another is deleted
    MessageFactory(status=MessageStatus.QUEUED)
    # then the next scrape shows it (nothing was counted in the process)
    second = samples(client.get("/metrics").content.decode())
    key = ("hub_messages", (("status", "queued"),))
    assert second[key] == first[key] + 1
    Message.objects.filter(status=MessageStatus.QUEUED).delete()
    assert samples(client.get("/metrics").content.decode())[key] == first[key]


def test_http_requests_are_counted_and_timed_by_view(client):
    # given the count of /healthz requests so far
    key = ("hub_http_requests_total", (("method", "GET"), ("status", "200"), ("view", "healthz")))
    before = samples(client.get("/metrics").content.decode()).get(key, 0)
    # when /healthz is called twice
    client.get("/healthz")
    client.get("/healthz")
    # then the counter grew by two and the latency histogram saw them
    found = samples(client.get("/metrics").content.decode())
    assert found[key] == before + 2
    assert found[("hub_http_request_duration_seconds_count", (("method", "GET"), ("view", "healthz")))] >= 2


def test_metrics_refuse_an_address_outside_the_allowed_networks_without_a_key(client):
    # when a scraper from outside the allowed networks sends no key
    response = client.get("/metrics", REMOTE_ADDR=OUTSIDE)
    # then it is told how to get in, and sees no figure
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Api-Key"
    assert b"hub_messages" not in response.content


def test_metrics_from_outside_need_a_key_with_kpis_read(client, make_api_key):
    # given two keys, one without and one with the kpis:read scope
    _, without = make_api_key("integration_admin", scopes=["messages:read"])
    _, with_scope = make_api_key("leader", scopes=["kpis:read"])
    # when each scrapes from outside the allowed networks
    refused = client.get("/metrics", REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Api-Key {without}")
    allowed = client.get("/metrics", REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Api-Key {with_scope}")
    bogus = client.get("/metrics", REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION="Api-Key hk_nope.nope")
    # then only the key with the scope reads the figures
    assert refused.status_code == 403 and b"kpis:read" in refused.content
    assert allowed.status_code == 200 and b"hub_messages" in allowed.content
    assert bogus.status_code == 401 and b"hub_messages" not in bogus.content


def test_allowed_networks_come_from_the_setting(client, settings):
    # given a setting that allows only a monitoring subnet
    settings.HUB_METRICS_ALLOWED_NETWORKS = ["10.20.0.0/16"]
    # then an address inside it scrapes and the loopback address no longer does
    assert client.get("/metrics", REMOTE_ADDR="10.20.3.4").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401
    assert not metrics.address_allowed("not-an-address")


def test_queue_depth_counts_tasks_waiting_on_the_broker(settings):
    # given a queue of the hub's list that no worker consumes, with two tasks published to it
    from integrationhub.celery import app

    queue = f"metrics-test-{uuid.uuid4().hex[:8]}"
    settings.HUB_QUEUES = (*settings.HUB_QUEUES, queue)
    try:
        for _ in range(2):
            app.send_task("insights.tests.never_run", queue=queue)
        # when the depths are read (LLEN on Redis, message files on the embedded broker)
        depths = metrics.queue_depths()
        # then the queue holds the two tasks
        assert depths[queue] == 2
    finally:
        with app.connection_for_write() as connection:
            connection.default_channel.queue_purge(queue)
    assert metrics.queue_depths()[queue] == 0
