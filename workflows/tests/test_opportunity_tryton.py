"""Opportunity to project against the real Tryton ERP: the financial project is a Tryton project.work."""

from __future__ import annotations

import pytest

from connectors.services import connected_system_create
from connectors.tests.tryton_fixtures import *  # noqa: F403
from connectors.tests.tryton_fixtures import TrytonServer
from exception_queue.actions import item_action_perform
from exception_queue.choices import DecisionAction, ExceptionState
from exception_queue.models import ExceptionItem
from governance.choices import Flow
from sandbox.choices import PsaObject, SandboxSystem
from sync.transport import connector_call
from workflows.choices import OPPORTUNITY_STEPS, RunStatus, StepStatus
from workflows.models import WorkflowRun
from workflows.tests.conftest import faults_set, wait_for
from workflows.tests.sandbox_data import account_create, opportunity_create, sandbox_record

pytestmark = [pytest.mark.tryton, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _settled(opportunity) -> WorkflowRun | None:
    run = WorkflowRun.objects.filter(
        flow=Flow.OPPORTUNITY_TO_PROJECT, business_key=f"crm:opportunity:{opportunity.external_id}"
    ).first()
    return run if run is not None and run.status not in (RunStatus.RUNNING, RunStatus.COMPENSATING) else None


def _tryton_project(tryton, project_id: str) -> dict:
    """The project as Tryton holds it, read through the transport like any other call."""
    return connector_call(tryton, "get", lambda connector: connector.get("project", project_id))


def test_an_opportunity_activates_on_tryton_and_compensation_closes_the_tryton_project(
    firm, tryton_server: TrytonServer, live_celery_worker_db, make_role_user
):
    # given the legal entity's ERP is the real Tryton
    ids = tryton_server.ids
    firm.erp.legal_entities.clear()
    tryton = connected_system_create(
        name="Tryton US",
        slug="tryton-us",
        role="erp",
        connector_type="tryton_erp",
        base_url=tryton_server.url,
        settings={
            "database": tryton_server.database,
            "company_id": ids["company"],
            "product_id": ids["product"],
            "payment_term_id": ids["payment_term"],
            "timeout_seconds": 30,
        },
        legal_entities=[firm.entity],
        credentials={"user": tryton_server.hub_login, "password": tryton_server.hub_password},
        reason="test",
    )

    # when an opportunity is won
    account = account_create("Lamna Healthcare Company")
    won = opportunity_create(account, "Lamna - Clinical data hub")
    run = wait_for(lambda: _settled(won), timeout=90)

    # then all seven steps are done, with the project and the party in Tryton
    assert run.status == RunStatus.COMPLETED, run.last_error
    assert list(run.steps.order_by("position").values_list("name", flat=True)) == list(OPPORTUNITY_STEPS)
    project = _tryton_project(tryton, run.context["erp_project_id"])
    assert project["name"].startswith(run.context["project_number"])
    assert str(project["party"]) == run.context["erp_client_id"]
    assert project["status"] == "active"
    assert run.context["staffing_erp_project_id"] == run.context["erp_project_id"]
    assert (
        sandbox_record(SandboxSystem.PSA, PsaObject.PROJECT, run.context["psa_project_id"]).data["external_reference"]
        == run.context["erp_project_id"]
    )

    # given a second opportunity held at the workspace step
    faults_set(SandboxSystem.COLLAB, error_rate=1.0, error_status=400)
    held_opportunity = opportunity_create(account, "Lamna - Patient portal")
    held = wait_for(lambda: _settled(held_opportunity), timeout=90)
    assert held.status == RunStatus.HELD
    faults_set(SandboxSystem.COLLAB)

    # when finance compensates it
    item = ExceptionItem.objects.get(workflow_run=held, state=ExceptionState.OPEN)
    item_action_perform(
        item=item, action=DecisionAction.COMPENSATE, user=make_role_user("finance_approver"), reason="lost"
    )
    held = wait_for(lambda: _settled(held_opportunity), timeout=90)

    # then the Tryton project is closed (Done) and the run compensated; the first project stays open
    assert held.status == RunStatus.COMPENSATED, held.last_error
    assert held.steps.get(name="create_erp_project").status == StepStatus.COMPENSATED
    assert _tryton_project(tryton, held.context["erp_project_id"])["status"] == "closed"
    assert _tryton_project(tryton, run.context["erp_project_id"])["status"] == "active"
