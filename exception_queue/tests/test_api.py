"""The exception-queue API: filtered reads and each decision as a POST with a reason."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import Decision, ExceptionItem
from sync.choices import MessageStatus
from sync.models import Message
from sync.services import message_process
from sync.tests.conftest import client_record, signed_post

pytestmark = pytest.mark.django_db


def _ingest(client, flow, record) -> Message:
    response = signed_post(client, flow, record)
    assert response.status_code == 202, response.content
    message = Message.objects.get(pk=response.json()["message_id"])
    message_process(message_id=message.pk)
    return message


@pytest.fixture
def held(client, make_flow, target):
    """A 1500 GBP credit limit held for approval by one approver."""
    flow = make_flow(
        target.url,
        approval_threshold=Decimal("1000"),
        rules=[("id", "Id"), ("name", "Name"), ("status", "Status"), ("credit_limit", "Limit")],
    )
    message = _ingest(client, flow, {**client_record(), "Limit": {"amount": "1500.00", "currency": "GBP"}})
    return ExceptionItem.objects.get(message=message)


@pytest.fixture
def failed(client, make_flow, target):
    """A message that failed mapping (no Status): a validation item."""
    flow = make_flow(target.url)
    message = _ingest(client, flow, {"Id": "X-1", "Name": "No status"})
    return ExceptionItem.objects.get(message=message)


def _post(client, url: str, body: dict):
    return client.post(url, body, content_type="application/json")


def test_items_are_filtered_by_category_state_system_amount_and_age(client_as, held, failed):
    # given an approval item of 1500 and a validation item, the validation item two days old
    ExceptionItem.objects.filter(pk=failed.pk).update(created_at=timezone.now() - datetime.timedelta(days=2))
    reader = client_as("auditor")

    def ids(**params) -> list[int]:
        response = reader.get("/api/v1/exception-items/", params)
        assert response.status_code == 200, response.content
        return [row["id"] for row in response.json()["results"]]

    # when the queue is read with filters, then each filter finds its item
    assert ids(category="approval_required") == [held.pk]
    assert ids(category="validation", state="open") == [failed.pk]
    assert ids(system=failed.system.slug) == [failed.pk]
    assert ids(amount_min="1000", amount_max="2000") == [held.pk]
    assert ids(amount_min="2000") == []
    assert ids(older_than_hours="24") == [failed.pk]
    assert ids(newer_than_hours="24") == [held.pk]
    assert ids(correlation_id=held.message.correlation_id) == [held.pk]
    detail = reader.get(f"/api/v1/exception-items/{held.pk}/").json()
    assert detail["payload_snapshot"]["credit_limit"]["amount"] == "1500.00"


def test_a_finance_approver_approves_a_held_item_and_it_is_released(client_as, held):
    # when a finance approver approves with a reason
    response = _post(client_as("finance_approver"), f"/api/v1/exception-items/{held.pk}/approve/", {"reason": "OK"})
    # then the item is approved, the decision recorded, and the message released to routing
    assert response.status_code == 200, response.content
    assert response.json()["state"] == ExceptionState.APPROVED
    assert [d["action"] for d in response.json()["decisions"]] == [DecisionAction.APPROVE]
    assert Message.objects.get(pk=held.message_id).status == MessageStatus.VALIDATED


def test_a_finance_approver_rejects_with_a_reason(client_as, held):
    response = _post(client_as("finance_approver"), f"/api/v1/exception-items/{held.pk}/reject/", {"reason": "No"})
    assert response.status_code == 200, response.content
    assert response.json()["state"] == ExceptionState.REJECTED
    assert Message.objects.get(pk=held.message_id).status == MessageStatus.FAILED


@pytest.mark.parametrize("role", ["analyst", "auditor"])
def test_approve_needs_the_decide_permission(client_as, held, role):
    # when a user without decide_exceptionitem approves
    response = _post(client_as(role), f"/api/v1/exception-items/{held.pk}/approve/", {"reason": "OK"})
    # then it is refused and nothing is recorded
    assert response.status_code == 403
    assert not Decision.objects.exists()
    assert ExceptionItem.objects.get(pk=held.pk).state == ExceptionState.OPEN


def test_a_decision_without_a_reason_is_refused(client_as, held):
    response = _post(client_as("finance_approver"), f"/api/v1/exception-items/{held.pk}/approve/", {"reason": ""})
    assert response.status_code == 400
    assert not Decision.objects.exists()


def test_an_analyst_fixes_the_payload_and_replays_it(client_as, failed):
    # when an analyst sends the corrected raw payload
    response = _post(
        client_as("analyst"),
        f"/api/v1/exception-items/{failed.pk}/fix/",
        {"reason": "Status was missing", "payload": {"Id": "X-1", "Name": "No status", "Status": "active"}},
    )
    # then the diff is recorded and the message runs again from the start
    assert response.status_code == 200, response.content
    decision = response.json()["decisions"][0]
    assert decision["action"] == DecisionAction.FIX_AND_REPLAY
    assert decision["payload_diff"] == [{"path": "Status", "before": None, "after": "active", "change": "added"}]
    assert Message.objects.get(pk=failed.message_id).status == MessageStatus.RECEIVED


def test_an_auditor_cannot_replay(client_as, failed):
    response = _post(client_as("auditor"), f"/api/v1/exception-items/{failed.pk}/replay/", {"reason": "try"})
    assert response.status_code == 403
    assert ExceptionItem.objects.get(pk=failed.pk).state == ExceptionState.OPEN


def test_replay_and_a_second_decision_on_the_same_item_is_a_conflict(client_as, failed):
    approver = client_as("finance_approver")
    first = _post(approver, f"/api/v1/exception-items/{failed.pk}/replay/", {"reason": "Mapping fixed"})
    second = _post(approver, f"/api/v1/exception-items/{failed.pk}/replay/", {"reason": "Again"})
    assert first.status_code == 200 and first.json()["state"] == ExceptionState.REPLAYED
    assert second.status_code == 409


def test_bulk_replay_replays_the_open_items_of_a_system(client, client_as, make_flow, target):
    # given two flows with failed messages
    first, second = make_flow(target.url), make_flow(target.url)
    for flow, count in ((first, 2), (second, 1)):
        for _ in range(count):
            _ingest(client, flow, {"Id": "X", "Name": "No status"})
    # when the first system's validation items are bulk-replayed
    response = _post(
        client_as("finance_approver"),
        "/api/v1/exception-items/bulk-replay/",
        {"reason": "Mapping fixed", "system": first.source.slug, "category": ExceptionCategory.VALIDATION},
    )
    # then exactly those two are replayed
    assert response.status_code == 202, response.content
    assert response.json() == {"replayed": 2}
    assert ExceptionItem.objects.filter(state=ExceptionState.OPEN, system=second.source).count() == 1


def test_the_viewset_declares_the_exceptions_family_and_the_decide_scope():
    from exception_queue.api.views import ExceptionItemViewSet

    assert ExceptionItemViewSet.scope_family == "exceptions"
    for name in ("approve", "reject", "replay", "fix", "bulk_replay"):
        assert getattr(ExceptionItemViewSet, name).kwargs["required_scope"] == "exceptions:decide"


def test_a_decision_by_api_key_records_the_key_prefix_address_and_user_agent(make_role_user, held):
    from django.test import Client

    from integrationhub.apikeys import api_key_create
    from integrationhub.audit import AuditAction
    from integrationhub.models import AuditEvent

    # given a finance approver's key that may decide
    created = api_key_create(
        name="finance bot",
        owner=make_role_user("finance_approver"),
        scopes=["exceptions:read", "exceptions:decide"],
        all_entities=True,  # every entity its owner has (a key with no entity reads none)
    )
    client = Client(HTTP_AUTHORIZATION=f"Api-Key {created.key}", HTTP_USER_AGENT="finance-bot/2.1")
    # when the key approves the held item
    response = client.post(
        f"/api/v1/exception-items/{held.pk}/approve/",
        {"reason": "within budget"},
        content_type="application/json",
        REMOTE_ADDR="198.51.100.7",
    )
    # then the audit event of the decision names the key's prefix, its owner, the address and the user agent
    assert response.status_code == 200, response.content
    event = AuditEvent.objects.get(action=AuditAction.EXCEPTION_APPROVED, object_id=str(held.pk))
    assert (event.api_key_prefix, event.actor_username, event.ip, event.user_agent) == (
        created.api_key.prefix,
        "finance_approver-user",
        "198.51.100.7",
        "finance-bot/2.1",
    )
