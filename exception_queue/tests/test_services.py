"""Exception-queue actions: each writes a Decision and drives the message through one sync service."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied

from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import Decision, ExceptionItem
from exception_queue.services import (
    exception_item_approve,
    exception_item_fix_and_replay,
    exception_item_reject,
    exception_item_replay,
    exception_items_bulk_replay,
    message_replay_request,
)
from integrationhub.errors import HubConflictError, HubValidationError
from sync.choices import AttemptOutcome, DeliveryStatus, MessageStatus
from sync.models import Delivery, Message
from sync.selectors import message_trace
from sync.services import delivery_send, message_process
from sync.tests.conftest import client_record, signed_post

pytestmark = pytest.mark.django_db


def _ingest(client, flow, record, **kwargs) -> Message:
    response = signed_post(client, flow, record, **kwargs)
    assert response.status_code == 202, response.content
    return Message.objects.get(pk=response.json()["message_id"])


@pytest.fixture
def held(client, make_flow, target):
    """A 5000 GBP credit limit held for approval; above 4000 two approvers are needed."""
    flow = make_flow(
        target.url,
        approval_threshold=Decimal("1000"),
        second_threshold=Decimal("4000"),
        rules=[("id", "Id"), ("name", "Name"), ("status", "Status"), ("credit_limit", "Limit")],
    )
    message = _ingest(client, flow, {**client_record(), "Limit": {"amount": "5000.00", "currency": "GBP"}})
    message_process(message_id=message.pk)
    return message, ExceptionItem.objects.get(message=message)


def test_a_large_amount_needs_two_different_approvers_before_it_is_delivered(held, make_role_user, target):
    # given a held message and two finance approvers
    message, item = held
    first = make_role_user("finance_approver", "approver-1")
    second = make_role_user("finance_approver", "approver-2")
    # when the first approves, then tries again, then the second approves
    exception_item_approve(item=item, user=first, reason="Within the client's contract")
    item.refresh_from_db()
    message.refresh_from_db()
    assert (item.state, message.status) == (ExceptionState.OPEN, MessageStatus.HELD)
    with pytest.raises(HubConflictError):
        exception_item_approve(item=item, user=first, reason="again")
    exception_item_approve(item=item, user=second, reason="Agreed")
    # then the item is approved, the message released and, once run, delivered
    item.refresh_from_db()
    message.refresh_from_db()
    assert item.state == ExceptionState.APPROVED
    assert message.status == MessageStatus.VALIDATED and message.approved_at is not None
    assert message_process(message_id=message.pk) == MessageStatus.QUEUED
    assert delivery_send(delivery_id=Delivery.objects.get(message=message).pk) == DeliveryStatus.DELIVERED
    assert list(item.decisions.values_list("action", "user__username")) == [
        (DecisionAction.APPROVE, "approver-1"),
        (DecisionAction.APPROVE, "approver-2"),
    ]
    # and both approvals are in the append-only audit trail with who and why
    from integrationhub.audit import AuditAction
    from integrationhub.models import AuditEvent

    audited = AuditEvent.objects.filter(action=AuditAction.EXCEPTION_APPROVED, object_id=str(item.pk))
    assert sorted(audited.values_list("actor_username", flat=True)) == ["approver-1", "approver-2"]
    assert any("Within the client's contract" in event.summary for event in audited)


def test_an_auditor_cannot_approve(held, make_role_user):
    # given a held item and an auditor
    _, item = held
    # when the auditor tries to approve
    with pytest.raises(PermissionDenied):
        exception_item_approve(item=item, user=make_role_user("auditor"), reason="ok")
    # then nothing is recorded, neither as a decision nor in the audit trail
    from integrationhub.models import AuditEvent

    assert not Decision.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="exception.").exists()


def test_reject_needs_a_reason_and_stops_the_message(held, make_role_user):
    # given a held item
    message, item = held
    approver = make_role_user("finance_approver")
    # when it is rejected without a reason, then with one
    with pytest.raises(HubValidationError):
        exception_item_reject(item=item, user=approver, reason="  ")
    exception_item_reject(item=item, user=approver, reason="Credit limit not agreed with the client")
    # then the item is rejected, the message failed, and the decision keeps the reason
    item.refresh_from_db()
    message.refresh_from_db()
    assert item.state == ExceptionState.REJECTED
    assert message.status == MessageStatus.FAILED
    assert Decision.objects.get().reason == "Credit limit not agreed with the client"


def test_fix_and_replay_records_the_diff_and_runs_the_corrected_payload(client, make_flow, target, make_role_user):
    # given a message that failed mapping because Status was missing
    flow = make_flow(target.url)
    message = _ingest(client, flow, {"Id": "C-3", "Name": "Acme"})
    message_process(message_id=message.pk)
    item = ExceptionItem.objects.get(message=message)
    assert item.category == ExceptionCategory.VALIDATION
    # when an analyst adds the status and replays
    analyst = make_role_user("analyst")
    exception_item_fix_and_replay(
        item=item,
        user=analyst,
        reason="Status confirmed with sales",
        payload={"Id": "C-3", "Name": "Acme", "Status": "active"},
    )
    # then the diff is on the decision, and the corrected message goes through
    decision = Decision.objects.get()
    assert decision.payload_diff == [{"path": "Status", "before": None, "after": "active", "change": "added"}]
    assert message_process(message_id=message.pk) == MessageStatus.QUEUED
    delivery_send(delivery_id=Delivery.objects.get(message=message).pk)
    assert target.record("client", "C-3")["status"] == "active"


def test_replaying_a_delivered_message_updates_it_in_place_and_creates_nothing_twice(
    client, make_flow, target, make_role_user
):
    # given a delivered message
    flow = make_flow(target.url)
    message = _ingest(client, flow, client_record("C-4"))
    message_process(message_id=message.pk)
    delivery = Delivery.objects.get(message=message)
    delivery_send(delivery_id=delivery.pk)
    # when an integration admin replays it
    admin = make_role_user("integration_admin")
    message_replay_request(message=message, user=admin, reason="Check the target has it")
    message_process(message_id=message.pk)
    status = delivery_send(delivery_id=delivery.pk)
    # then the record the cross-reference names is updated in place: one create, then one update
    assert status == DeliveryStatus.DELIVERED
    assert len(target.upserts()) == 1 and len(target.records["client"]) == 1
    attempts = list(delivery.attempts_log.values_list("outcome", "request_summary__operation"))
    assert attempts == [(AttemptOutcome.DELIVERED, "upsert"), (AttemptOutcome.DELIVERED, "update")]
    assert Decision.objects.get().message_id == message.pk
    # and the trace shows the replay decision and both attempts
    stages = [step.stage for step in message_trace(correlation_id=message.correlation_id)]
    assert "decision:replay" in stages
    assert stages.count("attempt:delivered") == 2


def test_replaying_a_rejected_delivery_after_the_target_is_fixed_delivers_it(client, make_flow, target, make_role_user):
    # given a delivery the target rejected with 400
    flow = make_flow(target.url)
    target.fail_next({"status": 400})
    message = _ingest(client, flow, client_record("C-6"))
    message_process(message_id=message.pk)
    delivery_send(delivery_id=Delivery.objects.get(message=message).pk)
    item = ExceptionItem.objects.get(message=message, category=ExceptionCategory.TARGET_REJECTED)
    # when it is replayed
    exception_item_replay(item=item, user=make_role_user("finance_approver"), reason="Target data corrected")
    message_process(message_id=message.pk)
    status = delivery_send(delivery_id=Delivery.objects.get(message=message).pk)
    # then it is delivered once
    assert status == DeliveryStatus.DELIVERED
    assert target.record("client", "C-6") is not None
    item.refresh_from_db()
    assert item.state == ExceptionState.REPLAYED


def test_bulk_replay_replays_only_the_items_matching_the_filter(client, make_flow, target, make_role_user):
    # given two flows, each with messages that failed mapping
    first, second = make_flow(target.url), make_flow(target.url)
    for flow, count in ((first, 2), (second, 1)):
        for _ in range(count):
            message_process(message_id=_ingest(client, flow, {"Id": "X", "Name": "No status"}).pk)
    # when a finance approver bulk-replays the items of the first source system
    user = make_role_user("finance_approver")
    count = exception_items_bulk_replay(user=user, reason="Mapping fixed", system_id=first.source.pk)
    # then exactly those two are replayed, each with its own decision
    assert count == 2
    assert Decision.objects.filter(action=DecisionAction.REPLAY).count() == 2
    assert ExceptionItem.objects.filter(state=ExceptionState.OPEN, system=second.source).count() == 1
    assert Message.objects.filter(system=first.source, status=MessageStatus.RECEIVED).count() == 2


def test_the_action_registry_offers_approve_to_finance_and_nothing_to_an_auditor(held, make_role_user):
    # given a held approval item
    from exception_queue.actions import item_action_perform, item_actions_available

    _, item = held
    finance = make_role_user("finance_approver", "approver-r")
    auditor = make_role_user("auditor", "auditor-r")
    # then finance is offered approve and reject, the auditor nothing, and replay is not offered on approvals
    assert {a.action for a in item_actions_available(item=item, user=finance)} == {"approve", "reject"}
    assert item_actions_available(item=item, user=auditor) == []
    # and an action that does not apply is refused naming the ones that do
    with pytest.raises(HubConflictError, match="not an action on approval required items"):
        item_action_perform(item=item, action="replay", user=finance, reason="x")
    # when finance approves through the registry, a decision is recorded
    item_action_perform(item=item, action="approve", user=finance, reason="ok")
    assert item.decisions.filter(action=DecisionAction.APPROVE, user=finance).exists()


def test_an_integration_admin_reads_the_queue_but_decides_nothing(held, make_role_user, client):
    # given a held approval item and an integration admin (segregation of duties: finance decides)
    from exception_queue.actions import item_actions_available

    message, item = held
    admin = make_role_user("integration_admin", "ops-sod")
    # then no decision is offered to them, and each one is refused when tried
    assert item_actions_available(item=item, user=admin) == []
    for decide in (exception_item_approve, exception_item_reject, exception_item_replay):
        with pytest.raises(PermissionDenied):
            decide(item=item, user=admin, reason="ops deciding")
    item.refresh_from_db()
    message.refresh_from_db()
    assert (item.state, message.status, item.decisions.count()) == (ExceptionState.OPEN, MessageStatus.HELD, 0)
    # and they still read the queue and the item's page
    client.force_login(admin)
    assert client.get("/admin/exception_queue/exceptionitem/").status_code == 200
    assert client.get(f"/admin/exception_queue/exceptionitem/{item.pk}/change/").status_code == 200


def test_the_requester_cannot_approve_their_own_item(held, make_role_user):
    # given an item requested by a finance approver
    _, item = held
    requester = make_role_user("finance_approver", "requester")
    item.requested_by = requester
    item.save()
    # when they approve it, then it is refused and nothing is recorded
    with pytest.raises(HubConflictError, match="cannot approve it yourself"):
        exception_item_approve(item=item, user=requester, reason="mine")
    assert not item.decisions.exists()


def test_opening_a_batch_of_items_updates_an_open_item_of_the_same_message_and_never_doubles_it(client, make_flow):
    # given a message that already has an open item of a category
    from exception_queue.services import exception_item_open, exception_items_open_many

    flow = make_flow()
    message = _ingest(client, flow, client_record("B-1"))
    other = _ingest(client, flow, client_record("B-2"))
    exception_item_open(category=ExceptionCategory.DEAD_LETTER, reason="first failure", message=message)
    # when a batch opens an item of the same message and category again, and one for another message
    exception_items_open_many(
        items=[
            ExceptionItem(category=ExceptionCategory.DEAD_LETTER, reason="second failure", message=message),
            ExceptionItem(category=ExceptionCategory.DEAD_LETTER, reason="its own failure", message=other),
        ]
    )
    # then the first message still has one open item, now with the newer reason, and the other gets its own
    items = ExceptionItem.objects.filter(category=ExceptionCategory.DEAD_LETTER).order_by("message_id")
    assert [(item.message_id, item.reason) for item in items] == [
        (message.pk, "second failure"),
        (other.pk, "its own failure"),
    ]
