"""The workflows reach the systems only through the transport: one attempt row per call (traced, counted in the
KPIs), a paused system refuses the call before anything is sent and the step waits, and the flow's sync policy
sets the call's timeout. Sandbox systems over real HTTP (`live_server`); a real worker where the run is queued."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.core.cache import cache
from django.utils import timezone

from connectors.http import RetryableConnectorError
from connectors.services import connected_system_pause, connected_system_resume
from exception_queue.models import ExceptionItem
from governance.choices import Flow
from governance.models import SyncPolicy
from governance.services import sync_policy_save
from insights.selectors import delivery_success_kpi, kpi_window_resolve
from integrationhub.dispatch import enqueue_on_commit
from sandbox.choices import ErpObject, SandboxSystem
from sandbox.faults import counter_key
from sandbox.models import SandboxFaultProfile, SandboxRecord
from sync.choices import AttemptOutcome
from sync.models import DeliveryAttempt
from sync.selectors import message_trace
from workflows.choices import (
    OPPORTUNITY_STEPS,
    STEP_CREATE_ERP_PROJECT,
    STEP_CREATE_PSA_PROJECT,
    STEP_CREATE_WORKSPACE,
    STEP_ENSURE_CLIENT,
    STEP_ERP_CLIENT,
    STEP_PSA_CLIENT,
    STEP_PUBLISH_TO_CRM,
    STEP_RELEASE_STAFFING,
    RunStatus,
    StepStatus,
)
from workflows.client_master import client_master_ensure
from workflows.models import WorkflowRun
from workflows.opportunity_to_project import opportunity_to_project_run
from workflows.services import workflow_retry_delay, workflow_run_start
from workflows.tasks import opportunity_to_project_run_task
from workflows.tests.conftest import Firm, faults_set, wait_for
from workflows.tests.sandbox_data import account_create, opportunity_create

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _saga_policy(**values: Any) -> SyncPolicy:
    policy = SyncPolicy.objects.get(flow=Flow.OPPORTUNITY_TO_PROJECT, legal_entity__isnull=True)
    for name, value in values.items():
        setattr(policy, name, value)
    return sync_policy_save(policy=policy, reason="test")


def _settled(run_id: int) -> WorkflowRun | None:
    run = WorkflowRun.objects.get(pk=run_id)
    return run if run.status not in (RunStatus.RUNNING, RunStatus.COMPENSATING) else None


def _erp_requests() -> int:
    """Requests the sandbox ERP answered since its fault profile was last saved (faults_set(ERP, enabled=True))."""
    profile = SandboxFaultProfile.objects.get(system=SandboxSystem.ERP)
    return int(cache.get(counter_key(SandboxSystem.ERP, profile.generation, "requests")) or 0)


def _client_ready(firm: Firm, account: SandboxRecord) -> None:
    """The account's client in the ERP and the PSA already (the client master did it), so the saga's first call
    to the ERP is the ERP project's."""
    client_master_ensure(
        canonical_client={"id": account.external_id, "name": account.data["Name"], "status": "active"},
        legal_entity=firm.entity,
    )


def _run_started(firm: Firm, account: SandboxRecord, name: str) -> WorkflowRun:
    """A won opportunity's saga, started as the CRM's webhook would start it (not queued to a worker)."""
    opportunity = opportunity_create(account, name, stage="Negotiation/Review")  # no webhook: the test drives it
    canonical = {
        "id": opportunity.external_id,
        "name": name,
        "client": {"client_id": account.external_id, "client_name": account.data["Name"]},
        "stage": "closed_won",
        "currency": "USD",
        "amount": 50000,
        "close_date": datetime.date.today().isoformat(),
        "billing_method": "time_and_materials",
        "legal_entity_code": firm.entity.code,
        "project_template": "TPL-CONSULTING",
        "custom_fields": {"contract_number": f"CTR-{opportunity.external_id[-6:]}"},
    }
    run, _ = workflow_run_start(
        flow=Flow.OPPORTUNITY_TO_PROJECT,
        business_key=f"crm:opportunity:{opportunity.external_id}",
        legal_entity=firm.entity,
        context={"opportunity": canonical, "crm_system": firm.crm.slug},
        triggered_at=timezone.now(),
    )
    return run


def test_a_saga_run_leaves_one_attempt_per_call_which_the_trace_and_the_kpis_show(firm, live_celery_worker_db):
    # given a CRM account
    account = account_create("Fabrikam Advisory Ltd", Website="https://fabrikam-advisory.example")

    # when sales wins an opportunity (the CRM's webhook starts the saga, a worker runs it)
    opportunity = opportunity_create(account, "Fabrikam - Finance transformation")
    run = wait_for(
        lambda: WorkflowRun.objects.filter(
            flow=Flow.OPPORTUNITY_TO_PROJECT,
            business_key=f"crm:opportunity:{opportunity.external_id}",
            status=RunStatus.COMPLETED,
        ).first()
    )

    # then every call of the run is one attempt row: no delivery, the system called, the run's correlation id,
    # a duration, and the flow, run and step in its summary
    attempts = list(DeliveryAttempt.objects.filter(correlation_id=run.correlation_id).select_related("system"))
    assert attempts
    assert all(a.delivery_id is None and a.system_id is not None and a.duration_ms is not None for a in attempts)
    assert {a.outcome for a in attempts} == {AttemptOutcome.DELIVERED}
    calls = [
        (a.system_id, a.request_summary["operation"], a.request_summary["step"], a.request_summary["flow"])
        for a in attempts
    ]
    saga = Flow.OPPORTUNITY_TO_PROJECT
    expected = [
        (firm.crm.pk, "get", STEP_ENSURE_CLIENT, saga),
        (firm.erp.pk, "upsert", STEP_ERP_CLIENT, Flow.CLIENT_MASTER),
        (firm.psa.pk, "upsert", STEP_PSA_CLIENT, Flow.CLIENT_MASTER),
        (firm.erp.pk, "upsert", STEP_CREATE_ERP_PROJECT, saga),
        (firm.psa.pk, "upsert", STEP_CREATE_PSA_PROJECT, saga),
        (firm.collab.pk, "upsert", STEP_CREATE_WORKSPACE, saga),
        (firm.erp.pk, "get", STEP_RELEASE_STAFFING, saga),
        (firm.psa.pk, "release_staffing", STEP_RELEASE_STAFFING, saga),
        (firm.crm.pk, "update_record", STEP_PUBLISH_TO_CRM, saga),
    ]
    for call in expected:
        assert calls.count(call) == 1, (call, calls)
    saga_attempts = [a for a in attempts if a.request_summary["flow"] == saga]
    assert {a.request_summary["workflow_run"] for a in saga_attempts} == {run.pk}
    assert {a.request_summary["message_id"] for a in saga_attempts} == {run.message_id}
    creates = [a for a in saga_attempts if a.request_summary["operation"] == "upsert"]
    assert all(a.request_summary["idempotency_key"] and a.request_summary["entity"] == "project" for a in creates)

    # and the run's trace shows the calls, each with its system and step
    traced = {
        (step.system, step.detail.get("step"))
        for step in message_trace(correlation_id=run.correlation_id)
        if step.stage == f"attempt:{AttemptOutcome.DELIVERED}"
    }
    assert {
        (firm.erp.slug, STEP_CREATE_ERP_PROJECT),
        (firm.psa.slug, STEP_CREATE_PSA_PROJECT),
        (firm.collab.slug, STEP_CREATE_WORKSPACE),
        (firm.crm.slug, STEP_PUBLISH_TO_CRM),
    } <= traced

    # and the delivery success KPI lists the ERP, the PSA and the collaboration suite
    rows = {row["system"]: row for row in delivery_success_kpi(window=kpi_window_resolve(key="24h"))}
    for system in (firm.erp, firm.psa, firm.collab, firm.crm):
        assert rows[system.name]["attempts"] >= 1
        assert rows[system.name]["success_rate"] == 1.0


def test_a_paused_erp_holds_the_erp_step_without_a_call_until_it_is_resumed(firm, live_celery_worker_db):
    # given a saga whose policy retries every second, a client already in the ERP and the PSA, and a paused ERP
    _saga_policy(max_attempts=60, backoff_base_seconds=1, backoff_cap_seconds=1, jitter=False)
    account = account_create("Adatum Partners LLC")
    _client_ready(firm, account)
    run = _run_started(firm, account, "Adatum - Controls review")
    connected_system_pause(system=firm.erp, reason="test: ERP maintenance")
    faults_set(SandboxSystem.ERP, enabled=True)  # no fault: the sandbox ERP counts the requests it answers
    erp_projects = SandboxRecord.objects.filter(system=SandboxSystem.ERP, object_type=ErpObject.PROJECT).count()

    # when a worker carries the run out
    enqueue_on_commit(opportunity_to_project_run_task, run.pk, queue="delivery")
    step = wait_for(
        lambda: run.steps.filter(name=STEP_CREATE_ERP_PROJECT, attempts__gte=3, status=StepStatus.FAILED).first()
    )

    # then the ERP step waits and is tried again, the run is neither held nor failed, and nothing reached the ERP
    run.refresh_from_db()
    assert (run.status, run.current_step) == (RunStatus.RUNNING, STEP_CREATE_ERP_PROJECT)
    assert "paused" in step.error
    assert not ExceptionItem.objects.filter(workflow_run=run).exists()
    assert _erp_requests() == 0
    assert not DeliveryAttempt.objects.filter(system=firm.erp, correlation_id=run.correlation_id).exists()
    assert SandboxRecord.objects.filter(system=SandboxSystem.ERP, object_type=ErpObject.PROJECT).count() == erp_projects
    assert run.steps.filter(status=StepStatus.DONE).count() == 2  # validate and ensure_client

    # when the ERP is resumed
    connected_system_resume(system=firm.erp, reason="test: maintenance over")
    run = wait_for(lambda: _settled(run.pk))

    # then the run completes, with one call creating the ERP project
    assert run.status == RunStatus.COMPLETED, run.last_error
    assert [s.status for s in run.steps.order_by("position")] == [StepStatus.DONE] * len(OPPORTUNITY_STEPS)
    created = DeliveryAttempt.objects.filter(
        system=firm.erp, correlation_id=run.correlation_id, request_summary__step=STEP_CREATE_ERP_PROJECT
    )
    assert created.count() == 1
    assert _erp_requests() > 0


def test_the_policy_timeout_reaches_the_http_call_and_the_step_fails_retryably(firm):
    # given a saga policy with a one-second timeout, and an ERP that answers after three seconds
    _saga_policy(timeout_seconds=1)
    account = account_create("Coho Winery SA")
    _client_ready(firm, account)
    run = _run_started(firm, account, "Coho - Supply chain")
    faults_set(SandboxSystem.ERP, timeout_seconds=3.0)

    # when the saga runs
    with pytest.raises(RetryableConnectorError) as raised:
        opportunity_to_project_run(run_id=run.pk)

    # then the ERP call gave up after the policy's second, not the sandbox's three nor the system's own ten
    run.refresh_from_db()
    assert (run.status, run.current_step) == (RunStatus.RUNNING, STEP_CREATE_ERP_PROJECT)
    assert run.steps.get(name=STEP_CREATE_ERP_PROJECT).status == StepStatus.FAILED
    (attempt,) = DeliveryAttempt.objects.filter(system=firm.erp, correlation_id=run.correlation_id)
    assert attempt.outcome == AttemptOutcome.RETRYABLE_ERROR
    assert attempt.request_summary["step"] == STEP_CREATE_ERP_PROJECT
    assert 900 <= attempt.duration_ms < 2500
    # and it is retryable: the task runs the step again after the policy's delay
    assert workflow_retry_delay(run_id=run.pk, attempt=1, error=raised.value) is not None
    assert not ExceptionItem.objects.filter(workflow_run=run).exists()

    # when the ERP answers in time again and the step runs again
    faults_set(SandboxSystem.ERP)
    assert opportunity_to_project_run(run_id=run.pk) == RunStatus.COMPLETED

    # then the run completes with one ERP project, even if the late answer's write landed
    run.refresh_from_db()
    projects = SandboxRecord.objects.filter(
        system=SandboxSystem.ERP, object_type=ErpObject.PROJECT, data__code=run.context["project_number"]
    )
    assert projects.count() == 1
