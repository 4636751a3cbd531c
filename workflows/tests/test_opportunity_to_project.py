"""Opportunity to project: the saga end to end (real worker, sandbox systems over HTTP), its holds and recovery."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from exception_queue.actions import item_action_perform, item_actions_available
from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import Decision, ExceptionItem
from governance.choices import Flow
from governance.models import SyncPolicy
from governance.services import sync_policy_save
from sandbox.choices import CollabObject, CrmObject, ErpObject, PsaObject, SandboxSystem
from sandbox.models import SandboxRecord
from sync.models import CrossReference
from workflows.choices import OPPORTUNITY_STEPS, STEP_CREATE_WORKSPACE, STEP_RELEASE_STAFFING, RunStatus, StepStatus
from workflows.models import FinanceNotification, WorkflowRun
from workflows.opportunity_to_project import StaffingRefusedError, opportunity_to_project_run, staffing_release_check
from workflows.selectors import activation_times
from workflows.services import workflow_run_start
from workflows.tests.conftest import faults_set, wait_for
from workflows.tests.sandbox_data import account_create, opportunity_create, sandbox_record

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _run_of(opportunity: SandboxRecord) -> WorkflowRun | None:
    return WorkflowRun.objects.filter(
        flow=Flow.OPPORTUNITY_TO_PROJECT, business_key=f"crm:opportunity:{opportunity.external_id}"
    ).first()


def _settled(opportunity: SandboxRecord) -> WorkflowRun | None:
    run = _run_of(opportunity)
    return run if run is not None and run.status not in (RunStatus.RUNNING, RunStatus.COMPENSATING) else None


def test_closed_won_activates_the_project_through_all_seven_steps(firm, live_celery_worker_db, make_role_user):
    # given a finance approver with an e-mail address, and a CRM account
    make_role_user("finance_approver", username="fin").__class__.objects.filter(username="fin").update(
        email="fin@firm.example"
    )
    account = account_create("Litware Analytics Inc", Website="https://litware.example")

    # when sales marks a new opportunity closed-won (the sandbox CRM sends its signed webhook)
    opportunity = opportunity_create(account, "Litware - Data strategy")
    run = wait_for(lambda: _settled(opportunity))

    # then every step is done, in order, and the run completed
    assert run.status == RunStatus.COMPLETED, run.last_error
    steps = list(run.steps.order_by("position"))
    assert [step.name for step in steps] == list(OPPORTUNITY_STEPS)
    assert all(step.status == StepStatus.DONE for step in steps)
    assert run.triggered_at <= steps[0].started_at
    context = run.context
    # the ERP financial project, the PSA project linked to it, the workspace and the released staffing exist
    erp_project = sandbox_record(SandboxSystem.ERP, ErpObject.PROJECT, context["erp_project_id"])
    assert erp_project.data["code"] == context["project_number"]
    assert erp_project.data["status"] == "active"
    assert erp_project.data["client_id"] == int(context["erp_client_id"])
    psa_project = sandbox_record(SandboxSystem.PSA, PsaObject.PROJECT, context["psa_project_id"])
    assert psa_project.data["external_reference"] == context["erp_project_id"]
    assert psa_project.data["staffing_status"] == "released"
    assert sandbox_record(SandboxSystem.COLLAB, CollabObject.GROUP, context["workspace_id"]).deleted is False
    # the CRM opportunity carries the project number, and finance was told
    opportunity.refresh_from_db()
    assert opportunity.data["Project_Number__c"] == context["project_number"]
    assert opportunity.data["Activation_Status__c"] == "Activated"
    notification = FinanceNotification.objects.get(workflow_run=run)
    assert context["project_number"] in notification.subject
    assert notification.emailed_to == ["fin@firm.example"]
    # and the cross-references of client and projects are written
    assert CrossReference.objects.filter(
        system=firm.erp, entity="project", external_id=context["erp_project_id"]
    ).exists()
    assert CrossReference.objects.filter(system=firm.psa, entity="client", canonical_id=account.external_id).exists()
    # and the KPI reads the release_staffing step against closed-won
    (kpi,) = activation_times(since=run.triggered_at - datetime.timedelta(hours=1))
    release = run.steps.get(name=STEP_RELEASE_STAFFING)
    assert kpi.run_id == run.pk
    assert kpi.duration == release.finished_at - run.triggered_at


def test_a_failing_workspace_holds_the_run_without_staffing_and_compensation_undoes_erp_and_psa(
    firm, live_celery_worker_db, make_role_user
):
    # given the collaboration suite failing every call
    faults_set(SandboxSystem.COLLAB, error_rate=1.0, error_status=400)
    account = account_create("Proseware Ltd")

    # when an opportunity is won
    opportunity = opportunity_create(account, "Proseware - Cloud move")
    run = wait_for(lambda: _settled(opportunity))

    # then the run is held at create_workspace on an activation_held item, and staffing was not released
    assert run.status == RunStatus.HELD
    assert run.current_step == STEP_CREATE_WORKSPACE
    item = ExceptionItem.objects.get(workflow_run=run, state=ExceptionState.OPEN)
    assert item.category == ExceptionCategory.ACTIVATION_HELD
    assert item.step == STEP_CREATE_WORKSPACE
    assert "create_workspace" in item.reason
    assert not run.steps.filter(name=STEP_RELEASE_STAFFING).exists()
    psa_project = sandbox_record(SandboxSystem.PSA, PsaObject.PROJECT, run.context["psa_project_id"])
    assert psa_project.data.get("staffing_status") != "released"

    # when an analyst tries to compensate, they are refused; a finance approver compensates
    analyst = make_role_user("analyst")
    assert DecisionAction.COMPENSATE not in [a.action for a in item_actions_available(item=item, user=analyst)]
    finance = make_role_user("finance_approver")
    item_action_perform(item=item, action=DecisionAction.COMPENSATE, user=finance, reason="client postponed")
    run = wait_for(lambda: _settled(opportunity))

    # then the ERP project is closed and the PSA project archived, each step recorded as compensated
    assert (
        sandbox_record(SandboxSystem.ERP, ErpObject.PROJECT, run.context["erp_project_id"]).data["status"] == "closed"
    )
    assert (
        sandbox_record(SandboxSystem.PSA, PsaObject.PROJECT, run.context["psa_project_id"]).data["is_active"] is False
    )
    statuses = dict(run.steps.values_list("name", "status"))
    assert statuses["create_erp_project"] == StepStatus.COMPENSATED
    assert statuses["create_psa_project"] == StepStatus.COMPENSATED
    assert Decision.objects.filter(item=item, action=DecisionAction.COMPENSATE, user=finance).exists()
    # and while the suite is still down, whether the failed step left a workspace cannot be checked: held again
    assert statuses["create_workspace"] == StepStatus.COMPENSATION_FAILED
    assert run.status == RunStatus.HELD
    again = ExceptionItem.objects.get(workflow_run=run, state=ExceptionState.OPEN)
    assert "create_workspace" in again.reason

    # when the suite is back and finance compensates again
    faults_set(SandboxSystem.COLLAB)
    item_action_perform(item=again, action=DecisionAction.COMPENSATE, user=finance, reason="suite is back")
    run = wait_for(lambda: _settled(opportunity))

    # then the run is compensated, and the steps undone before are not undone twice
    assert run.status == RunStatus.COMPENSATED, run.last_error
    assert run.steps.get(name=STEP_CREATE_WORKSPACE).status == StepStatus.COMPENSATED
    assert run.steps.get(name="create_erp_project").compensation_note.startswith("close the ERP project")


def test_a_retry_after_the_fix_completes_the_run_and_a_second_webhook_starts_nothing(
    firm, live_celery_worker_db, make_role_user
):
    # given a saga policy that tries a step twice, a second apart, and a collaboration outage that outlasts it
    policy = SyncPolicy.objects.get(flow=Flow.OPPORTUNITY_TO_PROJECT, legal_entity__isnull=True)
    policy.max_attempts, policy.backoff_base_seconds, policy.jitter = 2, 1, False
    sync_policy_save(policy=policy, reason="test: retry quickly")
    faults_set(SandboxSystem.COLLAB, error_rate=1.0, error_status=503)
    account = account_create("Tailspin Toys GmbH")
    opportunity = opportunity_create(account, "Tailspin - Store rollout")
    run = wait_for(lambda: _settled(opportunity))

    # then the step was tried as often as the policy allows before the run was held at it
    assert run.status == RunStatus.HELD
    assert run.steps.get(name=STEP_CREATE_WORKSPACE).attempts == policy.max_attempts
    item = ExceptionItem.objects.get(workflow_run=run, state=ExceptionState.OPEN)
    assert (item.category, item.step) == (ExceptionCategory.ACTIVATION_HELD, STEP_CREATE_WORKSPACE)
    assert f"tried {policy.max_attempts} times" in item.reason
    erp_projects_before = SandboxRecord.objects.filter(system=SandboxSystem.ERP, object_type=ErpObject.PROJECT).count()

    # when the outage is over and finance retries the step
    faults_set(SandboxSystem.COLLAB)
    item_action_perform(
        item=item, action=DecisionAction.RETRY_STEP, user=make_role_user("finance_approver"), reason="fixed"
    )
    run = wait_for(lambda: _settled(opportunity))

    # then the run completes from the failed step, without a second ERP or PSA project
    assert run.status == RunStatus.COMPLETED, run.last_error
    assert run.steps.get(name=STEP_CREATE_WORKSPACE).attempts == policy.max_attempts + 1
    assert run.steps.get(name="create_erp_project").attempts == 1
    assert (
        SandboxRecord.objects.filter(system=SandboxSystem.ERP, object_type=ErpObject.PROJECT).count()
        == erp_projects_before
    )
    assert (
        SandboxRecord.objects.filter(
            system=SandboxSystem.PSA, object_type=PsaObject.PROJECT, data__code=run.context["project_number"]
        ).count()
        == 1
    )

    # when the CRM sends closed-won for the same opportunity again
    from sandbox.services import webhook_delivery_create
    from sync.models import FollowUpEvent, Message

    webhook_delivery_create(event_type="opportunity.closed_won", record=opportunity)
    wait_for(
        lambda: (
            _webhooks_delivered()
            and Message.objects.filter(system=firm.crm, entity="opportunity", status="delivered").count() == 2
            and not FollowUpEvent.objects.filter(status="pending").exists()
        )
    )

    # then no second run starts
    assert WorkflowRun.objects.filter(flow=Flow.OPPORTUNITY_TO_PROJECT, business_key=run.business_key).count() == 1


def _settled_run(run_id: int) -> WorkflowRun | None:
    run = WorkflowRun.objects.get(pk=run_id)
    return run if run.status not in (RunStatus.RUNNING, RunStatus.COMPENSATING) else None


def _webhooks_delivered() -> bool:
    from sandbox.models import SandboxWebhookDelivery

    return not SandboxWebhookDelivery.objects.filter(status="pending").exists()


def test_staffing_is_refused_while_the_erp_project_is_missing_or_closed(firm):
    # given a saga whose ERP project does not exist yet
    run, _ = workflow_run_start(
        flow=Flow.OPPORTUNITY_TO_PROJECT,
        business_key="crm:opportunity:006REFUSED",
        context={"project_number": "US01-P999999", "erp_system": firm.erp.slug, "psa_system": firm.psa.slug},
    )

    # when staffing would be released, then it is refused
    with pytest.raises(StaffingRefusedError, match="no ERP project"):
        staffing_release_check(run=run)

    # given an ERP project that exists but was closed
    from sync.transport import connector_call
    from workflows.client_master import xref_set

    client = connector_call(
        firm.erp,
        "upsert",
        lambda erp: erp.upsert("client", {"name": "Refused Co", "legal_entity": "US01"}, "client:refused"),
    )
    project = connector_call(
        firm.erp,
        "upsert",
        lambda erp: erp.upsert(
            "project", {"client_id": int(client.external_id), "name": "P", "legal_entity": "US01"}, "project:refused"
        ),
    )
    xref_set(system=firm.erp, entity="project", canonical_id="US01-P999999", external_id=project.external_id)
    connector_call(firm.erp, "void", lambda erp: erp.void("project", project.external_id))

    # then release is still refused, naming the status
    with pytest.raises(StaffingRefusedError, match="closed"):
        staffing_release_check(run=run)


def test_an_opportunity_missing_contract_fields_is_held_at_validate_then_retried_after_the_crm_fix(
    firm, live_celery_worker_db, make_role_user
):
    # given a won opportunity without contract number, with an unknown billing type and no rate card currency
    account = account_create("Wingtip Partners LLC")
    opportunity = opportunity_create(
        account,
        "Wingtip - Audit",
        stage="Negotiation/Review",
        Contract_Number__c="",
        Billing_Type__c="barter",
        CurrencyIsoCode="JPY",
    )
    canonical = {
        "id": opportunity.external_id,
        "name": "Wingtip - Audit",
        "client": {"client_id": account.external_id},
        "stage": "closed_won",
        "currency": "JPY",
        "amount": 1000,
        "close_date": "2026-11-26",
        "billing_method": "barter",
        "legal_entity_code": "US01",
        "project_template": "TPL",
    }
    run, _ = workflow_run_start(
        flow=Flow.OPPORTUNITY_TO_PROJECT,
        business_key=f"crm:opportunity:{opportunity.external_id}",
        context={"opportunity": canonical, "crm_system": firm.crm.slug},
        triggered_at=timezone.now(),
    )

    # when the saga runs
    opportunity_to_project_run(run_id=run.pk)

    # then it is held at validate, with one failed rule per problem, and nothing was created in the ERP
    run.refresh_from_db()
    assert run.status == RunStatus.HELD
    assert run.current_step == "validate"
    item = ExceptionItem.objects.get(workflow_run=run)
    rules = {rule["rule"]: rule for rule in item.failed_rules}
    assert set(rules) >= {"contract_number", "billing_type", "rate_card"}
    assert rules["billing_type"]["actual"] == "barter"
    assert rules["billing_type"]["field"] == "billing_method"
    assert not run.steps.filter(name="ensure_client").exists()

    # when sales corrects the opportunity in the CRM and finance retries the step
    from sandbox.services import crm_record_save

    crm_record_save(
        object_type=CrmObject.OPPORTUNITY,
        record=opportunity,
        data={"Contract_Number__c": "CTR-77", "Billing_Type__c": "fixed_fee", "CurrencyIsoCode": "USD"},
        notify=False,
    )
    item_action_perform(
        item=item, action=DecisionAction.RETRY_STEP, user=make_role_user("finance_approver"), reason="CRM fixed"
    )
    run = wait_for(lambda: _settled_run(run.pk))

    # then validate reads the corrected opportunity and passes on its second attempt
    validate = run.steps.get(name="validate")
    assert (validate.status, validate.attempts) == (StepStatus.DONE, 2)
    assert run.context["billing_type"] == "fixed_fee"
    assert run.context["opportunity"]["currency"] == "USD"
