"""Milestone to billing and invoice status, end to end against the sandbox systems over real HTTP.

The demo firm and the billing demo are seeded, and the demo's systems are pointed at pytest's live server,
so the PSA, ERP, CRM and analytics calls are real HTTP calls to the sandbox apps.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django_celery_beat.models import PeriodicTask

from exception_queue.actions import item_action_perform, item_actions_available
from exception_queue.choices import ExceptionCategory, ExceptionState
from governance.choices import Flow, Trigger
from governance.flows import flow_runner_get
from governance.models import SyncPolicy
from integrationhub.errors import HubConflictError
from sandbox import selectors as sandbox_selectors
from sandbox.choices import CrmObject, ErpObject, PsaObject, SandboxSystem
from sandbox.services import erp_invoice_transition, record_create, record_update
from sync.choices import DeliveryStatus
from sync.models import Message, PollSchedule, Route
from sync.services import message_replay, messages_dispatch
from sync.transport import connector_call
from workflows.choices import RunStatus
from workflows.demo_billing import seed_billing_demo
from workflows.invoice_status import invoice_status_pull
from workflows.milestone_billing import milestone_billing_advance, milestone_billing_pull, milestone_billing_request
from workflows.models import WorkflowRun
from workflows.selectors import milestone_billing_latencies
from workflows.tests.billing_support import (
    billing_events,
    billing_world,
    contract_make,
    deliveries_settled,
    milestone_make,
    runs_driven_by_the_test,
    user_named,
    wait_for,
)


@pytest.fixture
def billing(live_server):
    return billing_world(live_server)


@pytest.fixture
def driven(monkeypatch):
    return runs_driven_by_the_test(monkeypatch)


@pytest.mark.django_db(transaction=True)
def test_seed_billing_demo_configures_both_flows_and_running_it_again_doubles_nothing(billing, driven):
    # given the billing demo seeded once (by the fixture)
    counts = (
        Route.objects.filter(flow=Flow.INVOICE_STATUS).count(),
        PollSchedule.objects.filter(entity="invoice").count(),
        sandbox_selectors.records(system=SandboxSystem.PSA, object_type=PsaObject.MILESTONE).count(),
    )
    # when it runs again
    result = seed_billing_demo()
    # then nothing doubled, the invoice pull and the milestone pull are scheduled, and analytics has credentials
    assert counts == (2, 1, 6)
    assert counts == (
        Route.objects.filter(flow=Flow.INVOICE_STATUS).count(),
        PollSchedule.objects.filter(entity="invoice").count(),
        sandbox_selectors.records(system=SandboxSystem.PSA, object_type=PsaObject.MILESTONE).count(),
    )
    assert len(result.milestones) == 4 and len(result.invoice_routes) == 2
    policy = SyncPolicy.objects.get(flow=Flow.MILESTONE_BILLING, legal_entity__isnull=True)
    assert policy.trigger == Trigger.SCHEDULE and PeriodicTask.objects.filter(pk=policy.periodic_task_id).exists()
    assert billing["analytics"].has_credentials
    assert connector_call(billing["analytics"], "health_check", lambda connector: connector.health_check()).ok
    # and the flows' scheduled runners pull: completed milestones start runs, invoices are stored as messages
    assert flow_runner_get(Flow.MILESTONE_BILLING)(policy) == {"psa": 4, "resumed": 0}
    assert len(driven) == 4
    invoice_policy = SyncPolicy.objects.get(flow=Flow.INVOICE_STATUS, legal_entity__isnull=True)
    assert flow_runner_get(Flow.INVOICE_STATUS)(invoice_policy) == {"erp-us": "complete"}
    assert Message.objects.filter(system=billing["erp-us"], entity="invoice").count() == 3


@pytest.mark.django_db(transaction=True)
def test_demo_milestones_bill_below_the_threshold_and_wait_above_it_with_real_workers(billing, live_celery_worker_db):
    # given the demo's completed milestones: 12,000 and 18,000 (below 50,000), 60,000 (above), one open
    psa = billing["psa"]
    # when the PSA is pulled and the workers carry the runs
    started = milestone_billing_pull(system=psa)
    runs = WorkflowRun.objects.filter(flow=Flow.MILESTONE_BILLING)
    wait_for(lambda: not runs.filter(status=RunStatus.RUNNING).exists())
    # then each completed milestone has one run (the demo firm's own T&M milestone too)
    assert started == 4 == runs.count()
    by_amount = {run.amount: run for run in runs}
    billed = [by_amount[Decimal("12000.00")], by_amount[Decimal("18000.00")]]
    # and the two below the threshold are billed once, without approval, and published to the PSA
    for run in billed:
        assert run.status == RunStatus.COMPLETED
        assert len(billing_events(run.business_key)) == 1
        milestone = sandbox_selectors.record_get(
            system=SandboxSystem.PSA, object_type=PsaObject.MILESTONE, external_id=run.context["milestone_id"]
        )
        assert milestone.data["billing_status"] == "billed"
        assert run.steps.get(name="finance_approval").status == "skipped"
    # and the 60,000 one waits for finance, with nothing billed
    waiting = by_amount[Decimal("60000.00")]
    assert waiting.status == RunStatus.AWAITING_APPROVAL and not billing_events(waiting.business_key)
    assert waiting.exception_items.get().category == ExceptionCategory.APPROVAL_REQUIRED
    # and the time-and-materials milestone is refused by the billing-type check
    refused = by_amount[Decimal("25000.00")]
    assert refused.status == RunStatus.HELD
    assert [r["rule"] for r in refused.exception_items.get().failed_rules] == ["billing_type_allowed"]
    # and the latency KPI covers exactly the billed runs
    latencies = milestone_billing_latencies()
    assert {row.run_id for row in latencies} == {run.pk for run in billed}
    assert all(row.seconds > 0 for row in latencies)
    # when the PSA is pulled again, then nothing starts twice
    assert milestone_billing_pull(system=psa) == 0


@pytest.mark.django_db(transaction=True)
def test_above_the_second_threshold_two_different_approvers_bill_it_exactly_once(billing, driven):
    # given a 300,000 milestone (second threshold 250,000) requested by finance
    psa_project, _ = contract_make("MC-300")
    milestone = milestone_make(psa_project, 300000.0)
    finance = user_named("finance")
    run = milestone_billing_request(system=billing["psa"], milestone_id=milestone.external_id, user=finance)
    milestone_billing_advance(run_id=run.pk)
    run.refresh_from_db()
    item = run.exception_items.get()
    assert (run.status, item.required_approvals) == (RunStatus.AWAITING_APPROVAL, 2)
    assert item.requested_by == user_named("finance")
    # when the requester approves, then it is refused
    with pytest.raises(HubConflictError, match="asked for this approval"):
        item_action_perform(item=item, action="approve", user=user_named("finance"), reason="mine")
    # when a first approver approves, then the run still waits and nothing is billed
    item_action_perform(item=item, action="approve", user=user_named("admin"), reason="contract checked")
    run.refresh_from_db()
    assert run.status == RunStatus.AWAITING_APPROVAL and not billing_events(run.business_key)
    # when the same approver approves again, then it is refused
    with pytest.raises(HubConflictError, match="already approved"):
        item_action_perform(item=item, action="approve", user=user_named("admin"), reason="again")
    # when a second, different approver approves, then the run resumes and bills once
    assert "approve" in [a.action for a in item_actions_available(item=item, user=user_named("finance2"))]
    item_action_perform(item=item, action="approve", user=user_named("finance2"), reason="second pair of eyes")
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.context["approved"] is True
    assert driven[-1] == (run.pk,), "the final approval hands the run to a worker"
    milestone_billing_advance(run_id=run.pk)
    # and a retried or replayed advance bills nothing more
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED
    assert milestone_billing_advance(run_id=run.pk) == RunStatus.COMPLETED
    events = billing_events(run.business_key)
    assert len(events) == 1 and events[0].data["amount"] == "300000.00"
    item.refresh_from_db()
    assert item.state == ExceptionState.APPROVED and item.decisions.filter(action="approve").count() == 2


@pytest.mark.django_db(transaction=True)
def test_rejecting_an_approval_ends_the_run_unbilled(billing, driven):
    # given a 60,000 milestone waiting for approval
    psa_project, _ = contract_make("RJ-60")
    milestone = milestone_make(psa_project, 60000.0)
    finance = user_named("finance")
    run = milestone_billing_request(system=billing["psa"], milestone_id=milestone.external_id, user=finance)
    milestone_billing_advance(run_id=run.pk)
    item = run.exception_items.get()
    # when finance2 rejects it
    item_action_perform(item=item, action="reject", user=user_named("finance2"), reason="not yet invoiced to client")
    # then the run is rejected and nothing is billed
    run.refresh_from_db()
    assert run.status == RunStatus.REJECTED and run.finished_at is not None
    assert not billing_events(run.business_key)


@pytest.mark.parametrize(
    ("case", "rule", "expected", "actual"),
    [
        ("time_and_materials", "billing_type_allowed", ["milestone", "fixed_fee"], "time_and_materials"),
        ("not_accepted", "client_accepted", [True, "accepted"], False),
        ("over_remaining", "amount_within_contract_remaining", "1000.00", "5000.00"),
        ("billed_before", "not_billed_before", "not in billed milestones", None),
    ],
)
@pytest.mark.django_db(transaction=True)
def test_each_failing_eligibility_check_holds_the_run_on_a_policy_item_and_bills_nothing(
    billing, driven, case, rule, expected, actual
):
    # given a completed milestone that fails exactly one check
    code = f"EL-{case[:8].upper()}"
    psa_project, erp_project = contract_make(
        code,
        billing_type="time_and_materials" if case == "time_and_materials" else "fixed_fee",
        value="1000.00" if case == "over_remaining" else "100000.00",
    )
    milestone = milestone_make(psa_project, 5000.0, accepted=case != "not_accepted")
    key = f"psa:milestone:{milestone.external_id}"
    if case == "billed_before":
        record_create(
            system=SandboxSystem.ERP,
            object_type=ErpObject.BILLING_EVENT,
            data={"project_id": int(erp_project.external_id), "amount": "5000.00", "milestone_ref": key},
        )
    before = len(billing_events(key))
    # when the run is started and advanced
    run = milestone_billing_request(system=billing["psa"], milestone_id=milestone.external_id, user=user_named("ops"))
    milestone_billing_advance(run_id=run.pk)
    # then it is held on a policy item naming the rule with what was expected and found
    run.refresh_from_db()
    item = run.exception_items.get()
    assert (run.status, item.category, item.flow) == (RunStatus.HELD, ExceptionCategory.POLICY, Flow.MILESTONE_BILLING)
    failed = {f["rule"]: f for f in item.failed_rules}
    assert list(failed) == [rule]
    if case == "billed_before":
        assert failed[rule]["expected"] == expected and failed[rule]["actual"] == key
    else:
        assert (failed[rule]["expected"], failed[rule]["actual"]) == (expected, actual)
    # and finance may retry the checks or reject, not replay a message the run never had
    offered = {a.action for a in item_actions_available(item=item, user=user_named("finance"))}
    assert offered == {"retry_step", "reject"}
    # and nothing was billed
    assert len(billing_events(key)) == before
    assert not run.steps.filter(name="create_billing_event").exists()


PIPELINE_STAGES = ("received", "mapped", "validated")


def _through_workers(message_ids: list[int]) -> None:
    """Wait until the workers took the messages through the pipeline and every delivery ended."""
    wait_for(lambda: not Message.objects.filter(pk__in=message_ids, status__in=PIPELINE_STAGES).exists())
    deliveries_settled(message_ids)


def _deliver_pulled(system) -> list[int]:
    """Hand the pulled invoices to the workers (what beat's dispatcher does every second) and wait for them."""
    ids = list(Message.objects.filter(system=system, entity="invoice").values_list("id", flat=True))
    messages_dispatch()
    _through_workers(ids)
    return ids


def _crm(object_type: str, code: str):
    return sandbox_selectors.record_by_field(
        system=SandboxSystem.CRM, object_type=object_type, field="External_Id__c", value=code
    )


@pytest.mark.django_db(transaction=True)
def test_posted_then_paid_invoice_updates_the_crm_and_analytics_once_and_an_older_status_never_wins(
    billing, live_celery_worker_db
):
    # given a Contoso invoice (client ACC-1002, project for opportunity OPP-2002), posted in the ERP
    erp = billing["erp-us"]
    client = sandbox_selectors.record_by_idempotency_key(
        system=SandboxSystem.ERP, object_type=ErpObject.CLIENT, key="demo:client:ACC-1002"
    )
    project, _ = record_create(
        system=SandboxSystem.ERP,
        object_type=ErpObject.PROJECT,
        data={"client_id": int(client.external_id), "name": "Contoso cloud", "legal_entity": "US01"}
        | {"code": "CT-CLOUD", "status": "active", "external_ref": "OPP-2002"},
    )
    invoice, _ = record_create(
        system=SandboxSystem.ERP,
        object_type=ErpObject.INVOICE,
        data={"client_id": int(client.external_id), "project_id": int(project.external_id), "amount": "18000.00"}
        | {"currency": "USD", "status": "draft", "lines": []},
    )
    invoice = record_update(record=invoice, changes={"number": "INV-CT-0001"})
    erp_invoice_transition(record=invoice, status="posted")
    # when the invoices are pulled and delivered
    invoice_status_pull(system=erp)
    _deliver_pulled(erp)
    # then the CRM account and opportunity show the posted invoice
    for object_type, code in ((CrmObject.ACCOUNT, "ACC-1002"), (CrmObject.OPPORTUNITY, "OPP-2002")):
        data = _crm(object_type, code).data
        assert (data["Last_Invoice_Number__c"], data["Last_Invoice_Status__c"]) == ("INV-CT-0001", "posted")
        assert data["Last_Invoice_Amount__c"] == 18000.0 and data.get("Last_Invoice_Paid_Date__c") is None
    posted_message = Message.objects.get(system=erp, entity="invoice", raw_payload__number="INV-CT-0001")
    # when it is paid, pulled and delivered
    invoice.refresh_from_db()
    paid = erp_invoice_transition(record=invoice, status="paid")
    invoice_status_pull(system=erp)
    _deliver_pulled(erp)
    # then both CRM records show it paid, with the paid date
    for object_type, code in ((CrmObject.ACCOUNT, "ACC-1002"), (CrmObject.OPPORTUNITY, "OPP-2002")):
        data = _crm(object_type, code).data
        assert data["Last_Invoice_Status__c"] == "paid"
        assert data["Last_Invoice_Paid_Date__c"] == paid.data["paid_at"][:10]
    # and analytics received one event per status of the invoice
    arrived = list(sandbox_selectors.records(system=SandboxSystem.ANALYTICS, object_type="northwind"))
    events = [row.data["record"] for row in arrived if row.data["record"].get("number") == "INV-CT-0001"]
    assert sorted(e["status"] for e in events) == ["paid", "posted"]
    assert {row.data["table"] for row in arrived} == {"hub_invoice"}
    # when the ERP is pulled again, then nothing is stored or sent twice
    stored = Message.objects.filter(system=erp).count()
    assert invoice_status_pull(system=erp).stored == 0 and Message.objects.filter(system=erp).count() == stored
    # when the older "posted" message is replayed and delivered after "paid"
    message_replay(message=posted_message, use_original_mapping=True)
    _through_workers([posted_message.pk])
    # then it is skipped as stale and the CRM still shows paid
    crm_delivery = posted_message.deliveries.get(target_system=billing["crm"])
    assert crm_delivery.status == DeliveryStatus.SKIPPED_STALE
    assert _crm(CrmObject.OPPORTUNITY, "OPP-2002").data["Last_Invoice_Status__c"] == "paid"
    assert _crm(CrmObject.ACCOUNT, "ACC-1002").data["Last_Invoice_Status__c"] == "paid"
    # and analytics did not receive the replayed older version again
    again = sandbox_selectors.records(system=SandboxSystem.ANALYTICS, object_type="northwind")
    assert sum(1 for row in again if row.data["record"].get("number") == "INV-CT-0001") == 2


@pytest.mark.django_db(transaction=True)
def test_an_invoice_of_a_client_the_crm_does_not_know_goes_to_finance_and_changes_no_crm_record(
    billing, live_celery_worker_db
):
    # given a posted invoice of an ERP client whose CRM id matches no CRM account
    erp = billing["erp-us"]
    client, _ = record_create(
        system=SandboxSystem.ERP,
        object_type=ErpObject.CLIENT,
        data={"name": "Unknown Ltd", "legal_entity": "US01", "external_ref": "ACC-9999", "status": "active"},
    )
    invoice, _ = record_create(
        system=SandboxSystem.ERP,
        object_type=ErpObject.INVOICE,
        data={"client_id": int(client.external_id), "amount": "500.00", "currency": "USD", "status": "draft"}
        | {"lines": [], "number": "INV-UNKNOWN-1"},
    )
    erp_invoice_transition(record=invoice, status="posted")
    # when the invoices are pulled and delivered
    invoice_status_pull(system=erp)
    _deliver_pulled(erp)
    # then the CRM delivery failed terminally onto a target-rejected item naming the missing account
    message = Message.objects.get(system=erp, raw_payload__number="INV-UNKNOWN-1")
    crm_delivery = message.deliveries.get(target_system=billing["crm"])
    assert crm_delivery.status == DeliveryStatus.FAILED and "ACC-9999" in crm_delivery.last_error
    item = message.exception_items.get()
    assert item.category == ExceptionCategory.TARGET_REJECTED
    # and no CRM record shows the invoice, while analytics still received it
    for object_type in (CrmObject.ACCOUNT, CrmObject.OPPORTUNITY):
        shown = sandbox_selectors.records(system=SandboxSystem.CRM, object_type=object_type)
        assert not shown.filter(data__Last_Invoice_Number__c="INV-UNKNOWN-1").exists()
    assert message.deliveries.get(target_system=billing["analytics"]).status == DeliveryStatus.DELIVERED
