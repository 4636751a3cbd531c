"""Milestone billing and invoice status against the real Tryton ERP: the demo firm's UK entity books in Tryton's
UK company (GBP); the PSA, CRM and analytics are the sandbox systems served by the live server."""

from __future__ import annotations

import uuid

import pytest

from connectors.services import connected_system_set_secrets, connected_system_update
from connectors.tests.tryton_fixtures import *  # noqa: F403
from connectors.tests.tryton_fixtures import TrytonServer
from exception_queue.actions import item_action_perform
from governance.choices import Flow
from governance.models import SyncPolicy
from governance.services import sync_policy_save
from sandbox import selectors as sandbox_selectors
from sandbox.choices import CrmObject, PsaObject, SandboxSystem
from sandbox.services import record_create
from sync.models import Message
from sync.services import messages_dispatch
from sync.transport import connector_call
from workflows.choices import RunStatus
from workflows.invoice_status import invoice_status_pull, invoice_status_setup
from workflows.milestone_billing import POST_INVOICE_RULE, milestone_billing_advance, milestone_billing_request
from workflows.tests.billing_support import (
    billing_world,
    deliveries_settled,
    runs_driven_by_the_test,
    user_named,
    wait_for,
)

pytestmark = [pytest.mark.tryton, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def billing(live_server, tryton_server: TrytonServer, monkeypatch):
    """The billing demo on the live server, its UK ERP pointed at the test Tryton's UK company, and milestone
    runs carried forward by the test."""
    systems = billing_world(live_server)
    company = tryton_server.ids["companies"]["UK01"]
    erp = connected_system_update(
        system=_erp_uk(),
        data={
            "base_url": tryton_server.url,
            "settings": {
                "database": tryton_server.database,
                "company_id": company["company"],
                "product_id": company["product"],
                "payment_term_id": company["payment_term"],
                "payment_method_id": company["payment_method"],
                "timeout_seconds": 30,
            },
        },
        reason="test: the local Tryton's UK company",
    )
    connected_system_set_secrets(
        system=erp,
        credentials={"user": tryton_server.hub_login, "password": tryton_server.hub_password},
        reason="test",
    )
    policy = SyncPolicy.objects.get(flow=Flow.MILESTONE_BILLING, legal_entity__isnull=True)
    policy.validation_rules = [*policy.validation_rules, {"rule": POST_INVOICE_RULE, "params": {"post": True}}]
    sync_policy_save(policy=policy, reason="test: post milestone invoices")
    runs_driven_by_the_test(monkeypatch)
    return {**systems, "erp-uk": erp}


def _erp_uk():
    from connectors.models import ConnectedSystem

    return ConnectedSystem.objects.get(slug="erp-uk")


def _tryton(erp, operation: str, *args, **kwargs):
    """A call to Tryton through the transport, as any flow makes it."""
    return connector_call(erp, operation, lambda connector: getattr(connector, operation)(*args, **kwargs))


def _uk_contract(erp, *, value: str = "100000.00"):
    """A Tryton project (the contract) of Contoso (CRM account ACC-1002, opportunity OPP-2002) and the PSA project
    with its code."""
    code = f"UK01-T{uuid.uuid4().hex[:6]}"
    party = _tryton(erp, "upsert", "client", {"name": "Contoso Retail Ltd", "city": "London"}, "client:erp-uk:ACC-1002")
    project = _tryton(
        erp,
        "upsert",
        "project",
        {
            "name": f"{code} Contoso - Store analytics",
            "client_id": int(party.external_id),
            "code": code,
            "opportunity_ref": "OPP-2002",
            "legal_entity": "UK01",
            "billing_type": "milestone",
            "contract_value": value,
            "currency": "GBP",
        },
        f"project:erp-uk:{code}",
    )
    psa_client = sandbox_selectors.record_by_idempotency_key(
        system=SandboxSystem.PSA, object_type=PsaObject.CLIENT, key="demo:client:ACC-1001"
    )
    psa_project, _ = record_create(
        system=SandboxSystem.PSA,
        object_type=PsaObject.PROJECT,
        data={"client_id": int(psa_client.external_id), "name": f"Contract {code}", "code": code, "is_active": True},
    )
    return project, psa_project


def _milestone(psa_project, amount: float):
    record, _ = record_create(
        system=SandboxSystem.PSA,
        object_type=PsaObject.MILESTONE,
        data={
            "project_id": int(psa_project.external_id),
            "name": "Rollout wave 1",
            "amount": amount,
            "currency": "GBP",
            "status": "completed",
            "client_accepted": True,
            "completed_at": "2026-11-20T09:00:00+00:00",
        },
    )
    return record


def _crm(object_type: str, code: str):
    return sandbox_selectors.record_by_field(
        system=SandboxSystem.CRM, object_type=object_type, field="External_Id__c", value=code
    )


def test_a_milestone_approved_in_the_hub_becomes_one_posted_tryton_invoice_and_paying_it_updates_crm_and_sink_once(
    billing, live_celery_worker_db
):
    erp = billing["erp-uk"]
    # given a UK contract in Tryton and a completed 60,000 GBP milestone (above the 50,000 approval threshold)
    project, psa_project = _uk_contract(erp)
    milestone = _milestone(psa_project, 60000.0)
    run = milestone_billing_request(system=billing["psa"], milestone_id=milestone.external_id, user=user_named("ops"))
    milestone_billing_advance(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.AWAITING_APPROVAL, run.last_error
    assert run.context["erp_system_id"] == erp.pk and str(run.context["erp_project_id"]) == project.external_id
    assert _tryton(erp, "billing_events", project.external_id) == []
    # when finance approves it in the hub and the run goes on (twice, as a retry would)
    item = run.exception_items.get()
    item_action_perform(item=item, action="approve", user=user_named("finance"), reason="contract checked")
    assert milestone_billing_advance(run_id=run.pk) == RunStatus.COMPLETED
    assert milestone_billing_advance(run_id=run.pk) == RunStatus.COMPLETED
    # then Tryton holds one customer invoice of the milestone, posted as the policy says
    (event,) = _tryton(erp, "billing_events", project.external_id)
    assert (event["amount"], event["state"], event["milestone_ref"]) == ("60000.00", "posted", run.business_key)
    run.refresh_from_db()
    assert str(run.context["billing_event_id"]) == str(event["id"])
    # and a second milestone of the same contract above its remaining value is held, nothing invoiced
    over = _milestone(psa_project, 50000.0)
    held = milestone_billing_request(system=billing["psa"], milestone_id=over.external_id, user=user_named("ops"))
    milestone_billing_advance(run_id=held.pk)
    held.refresh_from_db()
    assert held.status == RunStatus.HELD and "exceeds the 40000.00 left" in held.last_error
    assert len(_tryton(erp, "billing_events", project.external_id)) == 1

    # given the invoice status flow pulls Tryton's UK invoices to the CRM and analytics
    invoice_status_setup(
        erp=erp, crm=billing["crm"], analytics=billing["analytics"], legal_entity_code="UK01", every_seconds=3600
    )
    # when the invoice is paid in Tryton, pulled and delivered by the workers
    paid = _tryton(erp, "pay_invoice", event["id"])
    assert paid["state"] == "paid"
    invoice_status_pull(system=erp)
    ids = list(Message.objects.filter(system=erp, entity="invoice").values_list("id", flat=True))
    messages_dispatch()
    wait_for(lambda: not Message.objects.filter(pk__in=ids, status__in=("received", "mapped", "validated")).exists())
    deliveries_settled(ids)
    # then the CRM account and opportunity show the paid invoice
    for object_type, code in ((CrmObject.ACCOUNT, "ACC-1002"), (CrmObject.OPPORTUNITY, "OPP-2002")):
        data = _crm(object_type, code).data
        assert (data["Last_Invoice_Number__c"], data["Last_Invoice_Status__c"]) == (paid["number"], "paid")
        assert data["Last_Invoice_Amount__c"] == 60000.0
        assert data["Last_Invoice_Paid_Date__c"] == paid["reconciled"][:10]

    def sink_events() -> list[dict]:
        rows = sandbox_selectors.records(system=SandboxSystem.ANALYTICS, object_type="northwind")
        return [row.data["record"] for row in rows if row.data["record"].get("number") == paid["number"]]

    assert [(e["status"], e["currency"], e["legal_entity_code"]) for e in sink_events()] == [("paid", "GBP", "UK01")]
    # when Tryton is pulled again, then nothing is stored or sent twice
    stored = Message.objects.filter(system=erp).count()
    assert invoice_status_pull(system=erp).stored == 0
    messages_dispatch()
    assert Message.objects.filter(system=erp).count() == stored
    assert len(sink_events()) == 1
