"""The read API over messages, traces and delivery attempts, and the replay action."""

from __future__ import annotations

import pytest

from exception_queue.models import Decision
from sync.choices import DeliveryStatus, MessageStatus
from sync.models import Delivery, Message
from sync.services import delivery_send, message_process
from sync.tests.conftest import client_record, signed_post

pytestmark = pytest.mark.django_db


def _delivered(client, flow, canonical_id: str, **kwargs) -> Message:
    response = signed_post(client, flow, client_record(canonical_id), **kwargs)
    assert response.status_code == 202, response.content
    message = Message.objects.get(pk=response.json()["message_id"])
    message_process(message_id=message.pk)
    assert delivery_send(delivery_id=Delivery.objects.get(message=message).pk) == DeliveryStatus.DELIVERED
    return message


def test_messages_are_listed_and_filtered_by_status_system_correlation_and_external_id(
    client, client_as, make_flow, target
):
    # given a delivered message of one flow and a received one of another
    first, second = make_flow(target.url), make_flow(target.url)
    delivered = _delivered(client, first, "C-1", headers={"X-Correlation-ID": "corr-api-1"})
    signed_post(client, second, client_record("C-2"))
    auditor = client_as("auditor")
    # when an auditor lists them with filters
    by_status = auditor.get("/api/v1/messages/", {"status": "delivered"}).json()
    by_system = auditor.get("/api/v1/messages/", {"system": second.source.slug}).json()
    by_correlation = auditor.get("/api/v1/messages/", {"correlation_id": "corr-api-1"}).json()
    by_source_id = auditor.get("/api/v1/messages/", {"external_id": "C-1"}).json()
    by_target_id = auditor.get("/api/v1/messages/", {"external_id": "T-client-C-1"}).json()
    by_search = auditor.get("/api/v1/messages/", {"search": "corr-api-1"}).json()
    # then each filter finds exactly the message it names
    assert [row["id"] for row in by_status["results"]] == [delivered.pk]
    assert [row["entity"] for row in by_system["results"]] == ["client"]
    assert by_system["results"][0]["status"] == MessageStatus.RECEIVED
    for page in (by_correlation, by_source_id, by_target_id, by_search):
        assert [row["id"] for row in page["results"]] == [delivered.pk]
    # and the detail has the payloads and the delivery
    detail = auditor.get(f"/api/v1/messages/{delivered.pk}/").json()
    assert detail["raw_payload"]["Id"] == "C-1"
    assert detail["deliveries"][0]["external_id"] == "T-client-C-1"


def test_a_message_trace_lists_every_stage_in_order(client, client_as, make_flow, target):
    # given a delivered message
    flow = make_flow(target.url)
    message = _delivered(client, flow, "C-3", headers={"X-Correlation-ID": "corr-trace-3"})
    auditor = client_as("auditor")
    # when its trace is read by message, by correlation id and by external id
    by_message = auditor.get(f"/api/v1/messages/{message.pk}/trace/").json()
    by_correlation = auditor.get("/api/v1/traces/", {"correlation_id": "corr-trace-3"}).json()
    by_external = auditor.get("/api/v1/traces/", {"external_id": "C-3"}).json()
    # then all three list the stages in pipeline order
    stages = ["received", "mapped", "validated", "queued", "attempt:delivered", "delivered"]
    assert [step["stage"] for step in by_message] == stages
    assert by_correlation == by_message == by_external
    # and a trace without a key is a 422 problem
    assert auditor.get("/api/v1/traces/").status_code == 422


def test_delivery_attempts_are_listed_with_filters(client, client_as, make_flow, target):
    # given a delivered message and another flow's delivered message
    flow, other = make_flow(target.url), make_flow(target.url)
    message = _delivered(client, flow, "C-4")
    _delivered(client, other, "C-5")
    # when attempts are listed for the message
    rows = client_as("auditor").get("/api/v1/delivery-attempts/", {"message": message.pk}).json()["results"]
    # then the one attempt of that message is there, with its target and outcome
    assert len(rows) == 1
    assert (rows[0]["message"], rows[0]["target_system"], rows[0]["outcome"]) == (
        message.pk,
        flow.target_system.slug,
        "delivered",
    )


def test_an_integration_admin_replays_a_message_and_it_is_audited(client, client_as, make_flow, target):
    # given a delivered message
    flow = make_flow(target.url)
    message = _delivered(client, flow, "C-6")
    # when an integration admin replays it with the current mapping
    response = client_as("integration_admin").post(
        f"/api/v1/messages/{message.pk}/replay/",
        {"reason": "Target restored from backup", "use_current_mapping": True},
        content_type="application/json",
    )
    # then it is back in the pipeline, the decision is recorded, and replaying never duplicates at the target
    assert response.status_code == 202, response.content
    assert response.json()["message"]["replay_count"] == 1
    decision = Decision.objects.get(pk=response.json()["decision_id"])
    assert (decision.message_id, decision.reason) == (message.pk, "Target restored from backup")
    message_process(message_id=message.pk)
    delivery_send(delivery_id=Delivery.objects.get(message=message).pk)
    assert len(target.upserts()) == 1


@pytest.mark.parametrize("role", ["auditor", "analyst", "finance_approver"])
def test_only_an_integration_admin_may_replay_a_message(client, client_as, make_flow, target, role):
    # given a delivered message
    flow = make_flow(target.url)
    message = _delivered(client, flow, "C-7")
    # when another role tries to replay it
    response = client_as(role).post(
        f"/api/v1/messages/{message.pk}/replay/", {"reason": "try"}, content_type="application/json"
    )
    # then it is refused and nothing happened
    assert response.status_code == 403
    assert not Decision.objects.exists()
    assert Message.objects.get(pk=message.pk).replay_count == 0


def test_a_replay_without_a_reason_is_refused(client, client_as, make_flow, target):
    flow = make_flow(target.url)
    message = _delivered(client, flow, "C-8")
    response = client_as("integration_admin").post(
        f"/api/v1/messages/{message.pk}/replay/", {}, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "reason"
    assert Message.objects.get(pk=message.pk).replay_count == 0


def test_the_viewsets_declare_their_scope_family_and_the_replay_its_scope():
    from sync.api.views import DeliveryAttemptViewSet, MessageViewSet, TraceViewSet

    assert {MessageViewSet.scope_family, TraceViewSet.scope_family, DeliveryAttemptViewSet.scope_family} == {"messages"}
    assert MessageViewSet.replay.kwargs["required_scope"] == "messages:replay"
