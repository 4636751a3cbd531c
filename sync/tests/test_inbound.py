"""The inbound webhook endpoint: one message per event, problem+json for everything it refuses."""

from __future__ import annotations

import json
import time

import pytest

from connectors.choices import SystemState
from sync.choices import MessageStatus
from sync.models import Message
from sync.tests.conftest import client_record, signed_post

pytestmark = pytest.mark.django_db


def test_a_signed_event_is_stored_once_and_answered_202(client, make_flow):
    # given a source system with a webhook secret
    flow = make_flow()
    # when it posts a signed event with a correlation id
    response = signed_post(client, flow, client_record(), msg_id="msg_1", headers={"X-Correlation-ID": "corr-1"})
    # then one received message holds the raw payload, the idempotency key and the correlation id
    assert response.status_code == 202, response.content
    body = response.json()
    message = Message.objects.get()
    assert body == {"message_id": message.pk, "correlation_id": "corr-1"}
    assert (message.status, message.idempotency_key, message.entity) == (MessageStatus.RECEIVED, "msg_1", "client")
    assert message.raw_payload == client_record()
    assert message.dispatched_at is None  # ingest publishes nothing; the dispatcher picks it up


def test_a_duplicate_event_answers_200_with_the_original_id_and_stores_nothing(client, make_flow):
    # given an event that was already accepted
    flow = make_flow()
    first = signed_post(client, flow, client_record(), msg_id="msg_dup")
    # when the sender retries it (same webhook-id, newly signed)
    second = signed_post(client, flow, client_record(), msg_id="msg_dup")
    # then the answer is 200 with the original message id, and there is still one message
    assert second.status_code == 200
    assert second.json()["message_id"] == first.json()["message_id"]
    assert second.json()["duplicate"] is True
    assert Message.objects.count() == 1


def test_a_bad_signature_is_401_and_nothing_is_stored(client, make_flow):
    # given a sender using the wrong secret
    flow = make_flow()
    # when it posts
    response = signed_post(client, flow, client_record(), secret="whsec_" + "QUJD" * 8)
    # then 401 problem+json and no message
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert "signature" in response.json()["detail"]
    assert Message.objects.count() == 0


def test_a_body_changed_after_signing_is_401(client, make_flow):
    # given a correctly signed request whose body is then altered
    flow = make_flow()
    from sandbox.webhooks import standard_webhook_headers

    signed = standard_webhook_headers(flow.secret, "msg_x", int(time.time()), json.dumps(client_record()))
    # when the altered body arrives
    response = client.post(
        f"/api/v1/inbound/{flow.source.slug}/client.updated/",
        data=json.dumps(client_record(name="Tampered")),
        content_type="application/json",
        headers=signed,
    )
    # then it is refused and nothing is stored
    assert response.status_code == 401
    assert Message.objects.count() == 0


def test_a_stale_timestamp_is_401_with_a_hint_about_the_clock(client, make_flow):
    # given a correctly signed event sent ten minutes ago
    flow = make_flow()
    # when it arrives
    response = signed_post(client, flow, client_record(), timestamp=int(time.time()) - 600)
    # then it is refused as stale
    assert response.status_code == 401
    assert "clock" in response.json()["hint"]
    assert Message.objects.count() == 0


def test_an_unknown_system_is_404(client, make_flow):
    # given no system with the slug
    flow = make_flow()
    flow.source.slug = "nobody"
    # when an event is posted to it
    response = signed_post(client, flow, client_record())
    # then 404 problem+json
    assert response.status_code == 404
    assert response.json()["type"].endswith("unknown_system")
    assert Message.objects.count() == 0


def test_a_paused_system_is_423_and_nothing_is_stored(client, make_flow):
    # given a paused source system
    flow = make_flow()
    flow.source.state = SystemState.PAUSED
    flow.source.save()
    # when it posts a valid event
    response = signed_post(client, flow, client_record())
    # then 423 says to resend after resume
    assert response.status_code == 423
    assert "resume" in response.json()["hint"]
    assert Message.objects.count() == 0


def test_malformed_json_is_400(client, make_flow):
    # given a signed body that is not JSON
    flow = make_flow()
    # when it is posted
    response = signed_post(client, flow, None, body="{not json")
    # then 400 and nothing stored
    assert response.status_code == 400
    assert Message.objects.count() == 0


def test_json_nested_too_deep_is_400(client, make_flow):
    # given a body nested 40 levels deep
    flow = make_flow()
    body = '{"a":' * 40 + "1" + "}" * 40
    # when it is posted
    response = signed_post(client, flow, None, body=body)
    # then 400 names the depth limit
    assert response.status_code == 400
    assert "deeper" in response.json()["detail"]
    assert Message.objects.count() == 0


def test_a_body_over_the_limit_is_413(client, make_flow, settings):
    # given a 1 KB body limit
    settings.HUB_INBOUND_MAX_BODY_BYTES = 1024
    flow = make_flow()
    # when a 2 KB event is posted
    response = signed_post(client, flow, {"Id": "C-1", "Name": "x" * 2048})
    # then 413
    assert response.status_code == 413
    assert Message.objects.count() == 0


def test_an_event_type_naming_no_entity_is_400(client, make_flow):
    # given an event type that is not <entity>.<action>
    flow = make_flow()
    # when it is posted
    response = signed_post(client, flow, client_record(), event_type="spaceship.launched")
    # then 400 lists the entities
    assert response.status_code == 400
    assert "client.updated" in response.json()["hint"]


def test_the_correlation_id_comes_from_traceparent_when_no_x_correlation_id(client, make_flow):
    # given a W3C traceparent header
    flow = make_flow()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    # when the event is posted
    response = signed_post(client, flow, client_record(), headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    # then the trace id is the message's correlation id
    assert response.json()["correlation_id"] == trace_id
    assert Message.objects.get().correlation_id == trace_id
