"""The pipeline stages run in-process (services called directly, as a task would): map, validate, ownership,
hold, route, deliver, ordering, and the exception items each failure opens."""

from __future__ import annotations

from decimal import Decimal

import pytest

from connectors.models import ConnectedSystem
from exception_queue.choices import ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from governance.choices import ConflictAction, Flow
from governance.models import OwnershipRule
from mappings.models import CanonicalEntity
from sync.choices import AttemptOutcome, DeliveryStatus, MessageStatus
from sync.models import CrossReference, Delivery, Message
from sync.selectors import message_trace
from sync.services import delivery_send, message_process
from sync.tests.conftest import client_record, signed_post

pytestmark = pytest.mark.django_db


def _ingest(client, flow, record, **kwargs) -> Message:
    response = signed_post(client, flow, record, **kwargs)
    assert response.status_code == 202, response.content
    return Message.objects.get(pk=response.json()["message_id"])


def test_a_message_is_mapped_validated_routed_and_delivered_with_every_stage_stamped(client, make_flow, target):
    # given a flow CRM → target and an inbound client event
    flow = make_flow(target.url)
    message = _ingest(client, flow, client_record("C-7", "Acme"), headers={"X-Correlation-ID": "trace-7"})
    # when the pipeline runs and the delivery is sent
    assert message_process(message_id=message.pk) == MessageStatus.QUEUED
    delivery = Delivery.objects.get(message=message)
    assert delivery_send(delivery_id=delivery.pk) == DeliveryStatus.DELIVERED
    # then the target holds the canonical record, the cross-reference links the ids, every stage is stamped
    message.refresh_from_db()
    assert target.record("client", "C-7") == {
        "id": "C-7",
        "name": "Acme",
        "status": "active",
        "updated_at": "2026-11-26T10:00:00Z",
    }
    assert message.status == MessageStatus.DELIVERED
    assert message.mapping_set_id is not None and message.mapping_version == 1
    assert all([message.received_at, message.mapped_at, message.validated_at, message.queued_at, message.delivered_at])
    assert CrossReference.objects.get(system=flow.target_system, entity="client", canonical_id="C-7").external_id == (
        "T-client-C-7"
    )
    attempt = delivery.attempts_log.get()
    assert (attempt.outcome, attempt.correlation_id) == (AttemptOutcome.DELIVERED, "trace-7")
    assert attempt.request_summary["idempotency_key"] == delivery.idempotency_key
    # the outbound request carried the correlation id and the idempotency key
    upsert = target.upserts()[0]
    assert upsert.headers["X-Correlation-ID"] == "trace-7"
    assert upsert.headers["Idempotency-Key"] == delivery.idempotency_key
    # and the trace lists the stages in order
    stages = [step.stage for step in message_trace(correlation_id="trace-7")]
    assert stages == ["received", "mapped", "validated", "queued", "attempt:delivered", "delivered"]


def test_running_the_process_task_twice_has_one_effect(client, make_flow, target):
    # given a processed message
    flow = make_flow(target.url)
    message = _ingest(client, flow, client_record())
    message_process(message_id=message.pk)
    # when the same task runs again (redelivered by the broker)
    again = message_process(message_id=message.pk)
    # then nothing happens the second time
    assert again is None
    assert Delivery.objects.filter(message=message).count() == 1


def test_a_mapping_failure_opens_a_validation_item_and_stops(client, make_flow, target):
    # given a record missing a required canonical field (status)
    flow = make_flow(target.url)
    message = _ingest(client, flow, {"Id": "C-1", "Name": "Acme"})
    # when it is processed
    status = message_process(message_id=message.pk)
    # then it fails terminally with a validation item naming the field, and nothing is routed
    assert status == MessageStatus.FAILED
    item = ExceptionItem.objects.get(message=message)
    assert item.category == ExceptionCategory.VALIDATION
    assert any(rule["field"] == "status" for rule in item.failed_rules)
    assert item.payload_snapshot == {"Id": "C-1", "Name": "Acme"}
    assert not Delivery.objects.filter(message=message).exists()


def test_a_failing_policy_rule_opens_a_policy_item_with_the_failed_rules(client, make_flow, target):
    # given a policy requiring the status to be "approved"
    flow = make_flow(
        target.url,
        validation_rules=[{"rule": "entry_approved", "params": {"field": "status", "approved_values": ["blocked"]}}],
    )
    message = _ingest(client, flow, client_record())
    # when a record with status "active" is processed
    status = message_process(message_id=message.pk)
    # then a policy item lists the rule, field, expected and actual value
    assert status == MessageStatus.FAILED
    item = ExceptionItem.objects.get(message=message)
    assert item.category == ExceptionCategory.POLICY
    assert item.failed_rules[0] | {"message": ""} == {
        "rule": "entry_approved",
        "field": "status",
        "expected": ["blocked"],
        "actual": "active",
        "message": "",
    }


def test_a_field_the_sender_does_not_own_is_dropped_when_the_rule_says_ignore(client, make_flow, target):
    # given the name of a client owned by another system, conflicts ignored
    flow = make_flow(target.url)
    owner = ConnectedSystem.objects.create(
        name="ERP owner", slug="erp-owner", role="erp", connector_type="generic_rest", base_url="http://127.0.0.1:9"
    )
    OwnershipRule.objects.create(
        entity=CanonicalEntity.objects.get(name="client"),
        field_group=["name"],
        owning_system=owner,
        conflict_action=ConflictAction.IGNORE,
    )
    message = _ingest(client, flow, client_record("C-2", "Renamed by CRM"))
    # when the update is processed and delivered
    message_process(message_id=message.pk)
    delivery_send(delivery_id=Delivery.objects.get(message=message).pk)
    # then the name never reaches the target and the conflict is noted on the message
    assert "name" not in target.record("client", "C-2")
    message.refresh_from_db()
    assert message.notes[0]["ownership_ignored"] == ["name"]


def test_a_field_conflict_with_exception_action_opens_an_ownership_item(client, make_flow, target):
    # given the name owned by another system, conflicts sent to the queue
    flow = make_flow(target.url)
    owner = ConnectedSystem.objects.create(
        name="ERP owner", slug="erp-owner", role="erp", connector_type="generic_rest", base_url="http://127.0.0.1:9"
    )
    OwnershipRule.objects.create(
        entity=CanonicalEntity.objects.get(name="client"),
        field_group=["name"],
        owning_system=owner,
        conflict_action=ConflictAction.EXCEPTION,
    )
    message = _ingest(client, flow, client_record())
    # when processed
    status = message_process(message_id=message.pk)
    # then an ownership_conflict item names the owner; nothing is delivered
    assert status == MessageStatus.FAILED
    item = ExceptionItem.objects.get(message=message)
    assert item.category == ExceptionCategory.OWNERSHIP_CONFLICT
    assert "erp-owner" in item.reason
    assert target.upserts() == []


def test_an_amount_above_the_threshold_is_held_for_approval(client, make_flow, target):
    # given a policy holding amounts of 1000 GBP and more, and a client with a 5000 GBP credit limit
    flow = make_flow(
        target.url,
        approval_threshold=Decimal("1000"),
        second_threshold=Decimal("4000"),
        rules=[("id", "Id"), ("name", "Name"), ("status", "Status"), ("credit_limit", "Limit")],
    )
    message = _ingest(client, flow, {**client_record(), "Limit": {"amount": "5000.00", "currency": "GBP"}})
    # when processed
    status = message_process(message_id=message.pk)
    # then it is held with an approval item needing two approvers, nothing delivered
    assert status == MessageStatus.HELD
    item = ExceptionItem.objects.get(message=message)
    assert (item.category, item.amount, item.currency, item.required_approvals) == (
        ExceptionCategory.APPROVAL_REQUIRED,
        Decimal("5000.00"),
        "GBP",
        2,
    )
    assert item.state == ExceptionState.OPEN
    assert not Delivery.objects.filter(message=message).exists()


def test_a_target_400_opens_a_target_rejected_item_and_is_not_retried(client, make_flow, target):
    # given a target that rejects the record
    flow = make_flow(target.url)
    target.fail_next({"status": 400})
    message = _ingest(client, flow, client_record())
    message_process(message_id=message.pk)
    delivery = Delivery.objects.get(message=message)
    # when the delivery is sent
    status = delivery_send(delivery_id=delivery.pk)
    # then it failed terminally: one call, an item, no retry scheduled
    assert status == DeliveryStatus.FAILED
    delivery.refresh_from_db()
    assert delivery.next_attempt_at is None
    assert len(target.upserts()) == 1
    item = ExceptionItem.objects.get(message=message)
    assert item.category == ExceptionCategory.TARGET_REJECTED
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED


def test_a_retry_looks_the_record_up_by_idempotency_key_before_creating_it(client, make_flow, target):
    # given a first call that timed out after the target stored the record (simulated: key known, 500 answered)
    flow = make_flow(target.url)
    message = _ingest(client, flow, client_record("C-9"))
    message_process(message_id=message.pk)
    delivery = Delivery.objects.get(message=message)
    target.keys[delivery.idempotency_key] = "T-client-C-9"
    target.fail_next({"status": 500})
    delivery_send(delivery_id=delivery.pk)
    # when the retry runs
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=None)
    status = delivery_send(delivery_id=delivery.pk)
    # then it found the record and did not send it again
    assert status == DeliveryStatus.DELIVERED
    assert len(target.upserts()) == 1
    assert len(target.finds()) == 1
    outcomes = list(delivery.attempts_log.order_by("number").values_list("outcome", flat=True))
    assert outcomes == [AttemptOutcome.RETRYABLE_ERROR, AttemptOutcome.ALREADY_APPLIED]


def test_an_older_update_arriving_after_a_newer_one_is_skipped_stale(client, make_flow, target):
    # given two updates of one client, the newer delivered first
    flow = make_flow(target.url)
    newer = _ingest(client, flow, client_record("C-5", "New name", "2026-11-26T12:00:00Z"))
    older = _ingest(client, flow, client_record("C-5", "Old name", "2026-11-26T09:00:00Z"))
    message_process(message_id=newer.pk)
    delivery_send(delivery_id=Delivery.objects.get(message=newer).pk)
    # when the older one is processed and sent
    message_process(message_id=older.pk)
    status = delivery_send(delivery_id=Delivery.objects.get(message=older).pk)
    # then it is skipped and the newest stays applied
    assert status == DeliveryStatus.SKIPPED_STALE
    older.refresh_from_db()
    assert older.status == MessageStatus.SKIPPED_STALE
    assert target.record("client", "C-5")["name"] == "New name"
    assert len(target.upserts()) == 1


def test_a_processed_message_carries_the_flow_of_its_route(client, make_flow, target):
    # given a client flow whose route belongs to client master
    flow = make_flow(target.url)
    response = signed_post(client, flow, client_record())
    message = Message.objects.get(pk=response.json()["message_id"])
    assert message.flow == ""
    # when it is processed
    message_process(message_id=message.pk)
    # then it is stamped with the route's flow
    message.refresh_from_db()
    assert message.flow == Flow.CLIENT_MASTER
