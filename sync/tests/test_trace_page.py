"""The trace page finds work by any id and shows its stages across systems."""

from __future__ import annotations

import pytest

from insights.trace import trace_lookup, trace_timeline
from sync.models import CrossReference, Delivery, Message
from sync.services import delivery_send, message_process
from sync.tests.conftest import client_record, signed_post

pytestmark = pytest.mark.django_db


@pytest.fixture
def delivered(client, make_flow, target):
    """A client record delivered to the target after one retryable 503."""
    flow = make_flow(target.url)
    response = signed_post(client, flow, client_record("C-9", "Globex"), msg_id="msg_trace_1")
    message = Message.objects.get(pk=response.json()["message_id"])
    message_process(message_id=message.pk)
    delivery = Delivery.objects.get(message=message)
    target.fail_next({"status": 503})
    delivery_send(delivery_id=delivery.pk)
    delivery_send(delivery_id=delivery.pk)
    message.refresh_from_db()
    return message, flow


def test_every_id_a_person_has_finds_the_work(delivered):
    # given a delivered message with a cross-reference at the target
    message, flow = delivered
    xref = CrossReference.objects.get(system=flow.target_system, canonical_id="C-9")
    # when it is looked up by correlation id, idempotency key and the target's id
    # then each finds the message's correlation id
    for query in (message.correlation_id, message.idempotency_key, xref.external_id):
        assert trace_lookup(query=query) == [message.correlation_id], query
    # and an unknown id finds nothing
    assert trace_lookup(query="nothing-like-this") == []


def test_the_timeline_shows_each_stage_with_the_mapping_version_and_each_attempt(delivered):
    # given a delivered message that needed a retry
    message, flow = delivered
    # when its timeline is read
    entries = trace_timeline(correlation_id=message.correlation_id)
    stages = [entry.stage for entry in entries]
    # then it is in pipeline order, with the mapping version, the retried attempt and the delivery
    assert stages[:4] == ["received", "mapped", "validated", "queued"]
    mapped = entries[1]
    assert f"(version {message.mapping_version})" in mapped.detail
    attempts = [entry for entry in entries if entry.stage.startswith("attempt:")]
    assert [a.stage for a in attempts] == ["attempt:retryable_error", "attempt:delivered"]
    assert attempts[0].status_code == 503
    assert all(a.duration_ms is not None and a.system == flow.target_system.slug for a in attempts)
    assert "retried" in attempts[0].label
    assert stages[-1] == "delivered"


def test_the_trace_page_renders_the_timeline_for_every_role_that_reads_messages(delivered, client_as):
    # given a delivered message
    message, flow = delivered
    for role in ("finance_approver", "analyst", "auditor", "integration_admin"):
        # when the role searches the trace page by the message's idempotency key
        page = client_as(role).get("/admin/trace/", {"q": message.idempotency_key})
        # then the timeline shows the failed attempt's status code and the delivery to the target
        html = page.content.decode()
        assert page.status_code == 200, role
        assert f'data-correlation-id="{message.correlation_id}"' in html
        assert f"Delivered to {flow.target_system.slug} (attempt 2)" in html and "HTTP 503" in html


def test_the_trace_page_says_when_nothing_matches(client_as):
    page = client_as("auditor").get("/admin/trace/", {"q": "no-such-id"})
    assert page.status_code == 200
    assert 'id="trace-none"' in page.content.decode()


def test_the_trace_page_needs_a_signed_in_user(client):
    response = client.get("/admin/trace/", {"q": "x"})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
