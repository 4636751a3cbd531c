"""The milestone billing runs in the admin: listed with their latency, read-only, with steps and items."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from exception_queue.choices import ExceptionCategory
from governance.choices import Flow
from integrationhub.roles import AUDITOR, roles_sync
from workflows.choices import RunStatus
from workflows.services import workflow_run_finish, workflow_run_hold, workflow_run_start, workflow_step_begin

pytestmark = pytest.mark.django_db
URL = "/admin/workflows/milestonebillingrun/"


@pytest.fixture
def runs():
    billed, _ = workflow_run_start(
        flow=Flow.MILESTONE_BILLING, business_key="psa:milestone:41", amount=Decimal("12000"), currency="USD"
    )
    workflow_run_finish(run=billed)
    waiting, _ = workflow_run_start(
        flow=Flow.MILESTONE_BILLING, business_key="psa:milestone:42", amount=Decimal("60000"), currency="USD"
    )
    workflow_step_begin(run=waiting, name="finance_approval", position=2)
    workflow_run_hold(
        run=waiting,
        category=ExceptionCategory.APPROVAL_REQUIRED,
        reason="above the threshold",
        step="finance_approval",
        status=RunStatus.AWAITING_APPROVAL,
    )
    other, _ = workflow_run_start(flow=Flow.OPPORTUNITY_TO_PROJECT, business_key="crm:opportunity:9")
    return billed, waiting, other


def test_the_list_shows_only_milestone_billing_runs(admin_client, runs):
    # when finance opens the list
    response = admin_client.get(URL)
    # then both milestone runs are there and the other flow's run is not
    body = response.content.decode()
    assert response.status_code == 200
    assert "psa:milestone:41" in body and "psa:milestone:42" in body and "crm:opportunity:9" not in body


def test_a_run_is_read_only_with_its_steps_and_items(admin_client, runs):
    # when the waiting run is opened
    _, waiting, _ = runs
    response = admin_client.get(f"{URL}{waiting.pk}/change/")
    # then it shows its step and its approval item, with nothing to save, add or delete
    body = response.content.decode()
    assert response.status_code == 200
    assert "finance_approval" in body and "above the threshold" in body
    assert 'name="_save"' not in body
    assert admin_client.get(f"{URL}add/").status_code == 403
    assert admin_client.post(f"{URL}{waiting.pk}/delete/", {"post": "yes"}).status_code == 403


def test_an_auditor_reads_the_runs(client, runs):
    # given an auditor
    roles_sync()
    user = get_user_model().objects.create_user("audit1", password="pw-123456789", is_staff=True)
    user.groups.add(Group.objects.get(name=AUDITOR))
    client.force_login(user)
    # when they open the list, then they can read it
    assert client.get(URL).status_code == 200
