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


# --- the answers are what the OpenAPI schema says -------------------------------------------------------------


def _openapi() -> dict:
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)


def _json_schema(node, components: dict):
    """An OpenAPI 3.0 schema as plain JSON Schema: $refs inlined, `nullable` as a null type."""
    if isinstance(node, list):
        return [_json_schema(item, components) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _json_schema(components[node["$ref"].rsplit("/", 1)[-1]], components)
    out = {key: _json_schema(value, components) for key, value in node.items() if key != "nullable"}
    if node.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def _assert_documented(openapi: dict, path: str, method: str, response) -> None:
    import jsonschema

    documented = openapi["paths"][path][method]["responses"][str(response.status_code)]
    body_schema = next(iter(documented["content"].values()))["schema"]
    jsonschema.validate(response.json(), _json_schema(body_schema, openapi["components"]["schemas"]))


def test_answers_with_null_fields_match_the_schema(client, client_as, make_flow, target):
    from exception_queue.choices import ExceptionCategory
    from exception_queue.services import exception_item_open
    from sync.choices import AttemptOutcome
    from sync.models import DeliveryAttempt

    # given a delivered message with no legal entity, a workflow step's call (no delivery, no message) and an
    # exception item without a message, system or legal entity
    flow = make_flow(target.url)
    message = _delivered(client, flow, "C-9", headers={"X-Correlation-ID": "corr-schema-9"})
    assert message.legal_entity_id is None
    call = DeliveryAttempt.objects.create(
        delivery=None, system=message.system, number=1, outcome=AttemptOutcome.DELIVERED, correlation_id="wf-1"
    )
    item = exception_item_open(category=ExceptionCategory.VALIDATION, reason="reconciliation difference")
    openapi = _openapi()
    admin = client_as("integration_admin")
    # when they are read (and the message replayed), then every answer validates against its documented schema
    answers = [
        ("/api/v1/messages/", "get", admin.get("/api/v1/messages/")),
        ("/api/v1/messages/{id}/", "get", admin.get(f"/api/v1/messages/{message.pk}/")),
        ("/api/v1/messages/{id}/trace/", "get", admin.get(f"/api/v1/messages/{message.pk}/trace/")),
        ("/api/v1/delivery-attempts/{id}/", "get", admin.get(f"/api/v1/delivery-attempts/{call.pk}/")),
        ("/api/v1/delivery-attempts/", "get", admin.get("/api/v1/delivery-attempts/")),
        ("/api/v1/exception-items/{id}/", "get", admin.get(f"/api/v1/exception-items/{item.pk}/")),
        ("/api/v1/exception-items/", "get", admin.get("/api/v1/exception-items/")),
        (
            "/api/v1/messages/{id}/replay/",
            "post",
            admin.post(f"/api/v1/messages/{message.pk}/replay/", {"reason": "r"}, content_type="application/json"),
        ),
    ]
    for path, method, response in answers:
        assert response.status_code in (200, 202), (path, response.content[:500])
        _assert_documented(openapi, path, method, response)
    # and the nulls are there: a trace is a plain list, a step's call has neither delivery nor message
    assert isinstance(answers[2][2].json(), list)
    assert answers[3][2].json()["delivery"] is None and answers[3][2].json()["message"] is None
    assert answers[5][2].json()["correlation_id"] is None and answers[5][2].json()["system"] is None
    assert answers[1][2].json()["legal_entity"] is None
    assert set(answers[7][2].json()) == {"decision_id", "message"}
