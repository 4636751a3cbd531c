"""The exception-queue API's generic actions: `actions/` lists what the caller may do with an item (from the
action registry, so the workflows' own actions too), and `act/` runs one of them with a reason."""

from __future__ import annotations

from decimal import Decimal

import pytest

from exception_queue.actions import _ACTIONS, ItemAction, register_item_action
from exception_queue.choices import DecisionAction, ExceptionState
from exception_queue.models import Decision, ExceptionItem
from exception_queue.services import decision_record, require_permission, require_reason
from exception_queue.tests.test_api import _ingest
from sync.tests.conftest import client_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def held_item(client, make_flow, target):
    """A 1500 GBP credit limit held for approval."""
    flow = make_flow(
        target.url,
        approval_threshold=Decimal("1000"),
        rules=[("id", "Id"), ("name", "Name"), ("status", "Status"), ("credit_limit", "Limit")],
    )
    message = _ingest(client, flow, {**client_record(), "Limit": {"amount": "1500.00", "currency": "GBP"}})
    return ExceptionItem.objects.get(message=message)


@pytest.fixture
def escalate_action():
    """A registered action of another app (as the workflows register theirs), removed after the test."""

    def escalate(*, item, user, reason, note=""):
        require_permission(user, "exception_queue.decide_exceptionitem")
        reason = require_reason(reason)
        decision_record(item=item, message=item.message, action=DecisionAction.OVERRIDE, user=user, reason=reason)
        item.state = ExceptionState.APPROVED
        item.save(update_fields=["state", "updated_at"])
        return item

    registered = register_item_action(
        ItemAction(
            action="escalate",
            label="Escalate",
            permission="exception_queue.decide_exceptionitem",
            handler=escalate,
            inputs=("note",),
            help_text="Hand it to the finance lead.",
        )
    )
    yield registered
    _ACTIONS.remove(registered)


def test_actions_lists_what_the_caller_may_do_with_the_item(client_as, held_item, escalate_action):
    # when a finance approver and an auditor ask what they may do with a held approval item
    approver = client_as("finance_approver").get(f"/api/v1/exception-items/{held_item.pk}/actions/")
    auditor = client_as("auditor").get(f"/api/v1/exception-items/{held_item.pk}/actions/")

    # then the approver sees approve, reject and the other app's escalate, with their inputs; the auditor none
    assert approver.status_code == 200, approver.content
    names = [entry["action"] for entry in approver.json()]
    assert {"approve", "reject", "escalate"} <= set(names)
    escalate = next(entry for entry in approver.json() if entry["action"] == "escalate")
    assert escalate["inputs"] == ["note"] and escalate["help_text"] == "Hand it to the finance lead."
    assert auditor.status_code == 200 and auditor.json() == []


def test_act_runs_a_registered_action_with_a_reason_and_records_the_decision(client_as, held_item, escalate_action):
    # when a finance approver runs the other app's action through act/
    response = client_as("finance_approver").post(
        f"/api/v1/exception-items/{held_item.pk}/act/",
        {"action": "escalate", "reason": "Above my limit", "inputs": {"note": "see contract"}},
        content_type="application/json",
    )

    # then the item answers in its new state with the decision recorded
    assert response.status_code == 200, response.content
    assert response.json()["state"] == ExceptionState.APPROVED
    assert Decision.objects.get(item=held_item).reason == "Above my limit"


def test_act_refuses_a_role_without_the_actions_permission_and_records_nothing(client_as, held_item, escalate_action):
    # when an analyst (who may fix, not decide) tries to escalate
    response = client_as("analyst").post(
        f"/api/v1/exception-items/{held_item.pk}/act/",
        {"action": "escalate", "reason": "try"},
        content_type="application/json",
    )

    # then 403 and the item is untouched
    assert response.status_code == 403
    assert not Decision.objects.exists()
    assert ExceptionItem.objects.get(pk=held_item.pk).state == ExceptionState.OPEN


def test_act_with_an_unknown_action_or_input_is_refused_and_records_nothing(client_as, held_item, escalate_action):
    approver = client_as("finance_approver")
    url = f"/api/v1/exception-items/{held_item.pk}/act/"

    # when the action does not exist for the item, or an input the action does not take is sent
    unknown = approver.post(url, {"action": "teleport", "reason": "x"}, content_type="application/json")
    bad_input = approver.post(
        url, {"action": "escalate", "reason": "x", "inputs": {"colour": "red"}}, content_type="application/json"
    )

    # then each is refused with what to do instead, and nothing is decided
    assert unknown.status_code == 409 and "escalate" in unknown.json()["hint"]
    assert bad_input.status_code == 422
    assert bad_input.json()["errors"] == [{"field": "colour", "message": "Unknown input."}]
    assert not Decision.objects.exists()
