"""The UK entity on the local Tryton: the demo's five flows reaching a real ERP (when `make tryton` installed it).

`seed_uk_tryton_demo()` runs after the rest of the demo: it links the PSA consultant to the UK company's Tryton
employee, has the milestone policy post the invoices it creates, configures the pull of Tryton's UK invoices to
the CRM and analytics, and wins a UK opportunity in the sandbox CRM (Contoso Retail Ltd, GBP, billed by
milestone). Once web and worker run, its activation creates the party and the project (with the contract) in
Tryton's UK company; then `uk_delivery_seed()` (started by `demo_uk_followup_task` as soon as the activation
completes) logs approved time, an approved expense and a completed milestone on the activated PSA project and
pulls them at once, so the timesheet lines, the expense's supplier invoice and the milestone's customer invoice
appear in Tryton within a couple of minutes of `make run`; the invoices' status then reaches the CRM and
analytics. Safe to run again: nothing doubles.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from connectors.models import ConnectedSystem
from governance.choices import Flow
from governance.models import LegalEntity, RateCard, SyncPolicy
from governance.services import sync_policy_save
from sandbox import selectors as sandbox_selectors
from sandbox.choices import CLOSED_WON, ApprovalStatus, CrmObject, PsaObject, SandboxSystem
from sandbox.models import SandboxRecord
from sandbox.services import crm_record_save, psa_time_entry_approve, record_create, record_update
from workflows.choices import RunStatus
from workflows.models import ResourceLink, WorkflowRun

DEMO_REASON = "demo: the UK entity on Tryton"
ENTITY = "UK01"
ERP_SLUG, PSA_SLUG, CRM_SLUG, ANALYTICS_SLUG = "erp-uk", "psa", "crm", "analytics"
ACCOUNT_KEY = "uk-demo:account:CONTOSO-RETAIL"
OPPORTUNITY_KEY = "uk-demo:opportunity:CONTOSO-RETAIL-1"
CONSULTANT_ROLE = "Consultant"
# Hours of the consultant's two approved days, the expense and the milestone (GBP, below the approval threshold).
TIME_HOURS = (6.0, 4.5)
EXPENSE = {"total_cost": 85.40, "notes": "Train London - Leeds (client workshop)", "expense_category": "travel"}
MILESTONE = {"name": "Discovery signed off", "amount": 12000.0}
INVOICE_PULL_SECONDS = 30


@dataclass(frozen=True)
class UkDelivery:
    """What `uk_delivery_seed` found or made: the activation's state and the PSA records on its project."""

    state: str
    psa_project_id: str = ""
    records: tuple[str, ...] = ()


def uk_tryton_ready() -> bool:
    """Whether the demo's UK ERP is the local Tryton with credentials and a company to book in."""
    erp = ConnectedSystem.objects.filter(slug=ERP_SLUG, connector_type="tryton_erp").first()
    return erp is not None and erp.has_credentials and bool(erp.settings.get("product_id"))


def _consultant() -> SandboxRecord | None:
    for person in SandboxRecord.objects.filter(system=SandboxSystem.PSA, object_type=PsaObject.USER, deleted=False):
        if person.idempotency_key.startswith("demo:") and CONSULTANT_ROLE in (person.data.get("roles") or []):
            return person
    return None


def _resource_link(systems: dict[str, ConnectedSystem], entity: LegalEntity, employee: int) -> None:
    """The PSA consultant books UK time as the UK company's Tryton employee."""
    from workflows.resource_links import resource_link_save

    person = _consultant()
    if person is None:
        raise RuntimeError("The sandbox PSA has no demo consultant; run manage.py demo_setup first.")
    exists = ResourceLink.objects.filter(
        psa_system=systems[PSA_SLUG], person_ref=person.external_id, erp_system=systems[ERP_SLUG], legal_entity=entity
    ).exists()
    if not exists:
        resource_link_save(
            link=ResourceLink(
                psa_system=systems[PSA_SLUG],
                person_ref=person.external_id,
                person_name=f"{person.data.get('first_name', '')} {person.data.get('last_name', '')}".strip(),
                erp_system=systems[ERP_SLUG],
                legal_entity=entity,
                employee_ref=str(employee),
                employee_name=f"Hub Consultant ({ENTITY})",
            ),
            reason=DEMO_REASON,
        )


def _post_milestone_invoices() -> None:
    from workflows.milestone_billing import POST_INVOICE_RULE

    policy = SyncPolicy.objects.filter(flow=Flow.MILESTONE_BILLING, legal_entity__isnull=True).order_by("id").first()
    if policy is None:
        raise RuntimeError("The demo's milestone billing policy is missing; run manage.py demo_setup first.")
    if not any(entry.get("rule") == POST_INVOICE_RULE for entry in policy.validation_rules or []):
        policy.validation_rules = [*(policy.validation_rules or []), {"rule": POST_INVOICE_RULE, "params": {}}]
        sync_policy_save(policy=policy, reason="demo: post the invoices milestones create in Tryton")


def _crm(object_type: str, key: str, data: dict[str, Any]) -> tuple[SandboxRecord, bool]:
    existing = sandbox_selectors.record_by_idempotency_key(system=SandboxSystem.CRM, object_type=object_type, key=key)
    if existing is not None:
        return existing, False
    return crm_record_save(object_type=object_type, data=data, idempotency_key=key)


def _win_uk_opportunity(today: datetime.date) -> bool:
    """Contoso Retail Ltd's store-analytics opportunity, won now (its closed-won webhook goes to the hub). The
    account and opportunity carry their own Id as External_Id__c, which is how the invoice status flow finds
    them from the ids Tryton's invoices carry."""
    account, _ = _crm(
        CrmObject.ACCOUNT,
        ACCOUNT_KEY,
        {"Name": "Contoso Retail Ltd", "Type": "Customer", "CurrencyIsoCode": "GBP", "Industry": "Retail"}
        | {"BillingCountry": "United Kingdom", "Website": "https://contosoretail.example", "Tax_Id__c": "GB284671903"},
    )
    if account.data.get("External_Id__c") != account.external_id:
        account, _ = crm_record_save(
            object_type=CrmObject.ACCOUNT, record=account, data={"External_Id__c": account.external_id}
        )
    opportunity, _ = _crm(
        CrmObject.OPPORTUNITY,
        OPPORTUNITY_KEY,
        {
            "Name": "Contoso Retail - Store analytics",
            "AccountId": account.external_id,
            "StageName": "Negotiation/Review",
            "Amount": 96000,
            "CurrencyIsoCode": "GBP",
            "CloseDate": today.isoformat(),
            "Probability": 90,
            "Legal_Entity__c": ENTITY,
            "Billing_Type__c": "milestone",
            "Project_Template__c": "TPL-CONSULTING",
            "Contract_Number__c": "CTR-CONTOSO-RETAIL-1",
            # Work started this month: Tryton refuses time before the contract's start.
            "Expected_Start__c": today.replace(day=1).isoformat(),
        },
    )
    if opportunity.data.get("StageName") == CLOSED_WON:
        return False
    # Won with its own Id as the external id, in one change: the sandbox sends the closed-won webhook after commit.
    crm_record_save(
        object_type=CrmObject.OPPORTUNITY,
        record=opportunity,
        data={"External_Id__c": opportunity.external_id, "StageName": CLOSED_WON, "Probability": 100},
    )
    return True


@transaction.atomic
def seed_uk_tryton_demo() -> list[str]:
    """Configure the UK entity's flows on the local Tryton and win the UK opportunity (see the module docstring);
    a one-line note when Tryton is not installed."""
    from integrationhub.demo import local_tryton_ids
    from workflows.invoice_status import invoice_status_setup

    if not uk_tryton_ready():
        return ["UK on Tryton: the local Tryton is not installed (run `make tryton`, then `make run` again)"]
    ids = local_tryton_ids() or {}
    company = (ids.get("companies") or {}).get(ENTITY) or {}
    slugs = [ERP_SLUG, PSA_SLUG, CRM_SLUG, ANALYTICS_SLUG]
    systems = {system.slug: system for system in ConnectedSystem.objects.filter(slug__in=slugs)}
    entity = LegalEntity.objects.get(code=ENTITY)
    _resource_link(systems, entity, int(company["employee"]))
    _post_milestone_invoices()
    invoice_status_setup(
        erp=systems[ERP_SLUG],
        crm=systems[CRM_SLUG],
        analytics=systems.get(ANALYTICS_SLUG),
        legal_entity_code=ENTITY,
        every_seconds=INVOICE_PULL_SECONDS,
    )
    won = _win_uk_opportunity(datetime.date.today())
    demo_uk_followup_start()
    return [
        f"UK on Tryton: company {company.get('company_name', '?')} ({company.get('currency_code', '?')}); "
        f"opportunity Contoso Retail - Store analytics {'won now' if won else 'already won'}; its time, expense "
        "and milestone follow once it is activated"
    ]


def demo_uk_followup_start() -> None:
    """Hand the UK follow-up to a worker (it waits for the activation by checking every few seconds)."""
    from integrationhub.dispatch import enqueue_on_commit
    from workflows.tasks import demo_uk_followup_task

    enqueue_on_commit(demo_uk_followup_task, 0, queue="delivery")


def uk_activation() -> WorkflowRun | None:
    """The UK opportunity's activation run, once the CRM's webhook started it."""
    opportunity = sandbox_selectors.record_by_idempotency_key(
        system=SandboxSystem.CRM, object_type=CrmObject.OPPORTUNITY, key=OPPORTUNITY_KEY
    )
    if opportunity is None:
        return None
    return WorkflowRun.objects.filter(
        flow=Flow.OPPORTUNITY_TO_PROJECT, business_key=f"crm:opportunity:{opportunity.external_id}"
    ).first()


def _psa_entry(object_type: str, key: str, data: dict[str, Any], approver: SandboxRecord | None) -> SandboxRecord:
    record, _ = record_create(system=SandboxSystem.PSA, object_type=object_type, data=data, idempotency_key=key)
    if object_type != PsaObject.MILESTONE and record.data.get("approval_status") != ApprovalStatus.APPROVED:
        psa_time_entry_approve(
            external_id=record.external_id,
            approver_id=int(approver.external_id) if approver is not None else None,
            object_type=object_type,
        )
    return record


def uk_delivery_seed(*, today: datetime.date | None = None) -> UkDelivery:
    """Once the UK activation completed: approved time and an approved expense of the consultant and a completed
    milestone on its PSA project (billed at the UK rate card's consultant rate), then the flows' pulls at once.
    Returns the state it found; idempotent (each record is made once, by its key)."""
    from workflows.milestone_billing import milestone_billing_pull
    from workflows.time_expense import time_expense_run

    run = uk_activation()
    if run is None or run.status != RunStatus.COMPLETED:
        return UkDelivery(state=run.status if run is not None else "not started")
    today = today or datetime.date.today()
    psa_project_id = str(run.context["psa_project_id"])
    project = sandbox_selectors.record_get(
        system=SandboxSystem.PSA, object_type=PsaObject.PROJECT, external_id=psa_project_id
    )
    entity = LegalEntity.objects.get(code=ENTITY)
    card = RateCard.objects.filter(legal_entity=entity, currency="GBP", client_ref="", contract_ref="").first()
    line = card.lines.filter(role=CONSULTANT_ROLE).first() if card is not None else None
    if project is not None and line is not None and project.data.get("hourly_rate") != float(line.bill_rate):
        record_update(record=project, changes={"hourly_rate": float(line.bill_rate)})
    consultant = _consultant()
    if consultant is None:
        raise RuntimeError("The sandbox PSA has no demo consultant; run manage.py demo_setup first.")
    manager = next(
        (
            p
            for p in SandboxRecord.objects.filter(system=SandboxSystem.PSA, object_type=PsaObject.USER, deleted=False)
            if "Manager" in (p.data.get("roles") or [])
        ),
        None,
    )
    person = {"user_id": int(consultant.external_id), "project_id": int(psa_project_id)}
    made = []
    for number, hours in enumerate(TIME_HOURS, start=1):
        made.append(
            _psa_entry(
                PsaObject.TIME_ENTRY,
                f"uk-demo:time:{run.pk}:{number}",
                {
                    **person,
                    "task_id": 1,
                    "billable": True,
                    "role": CONSULTANT_ROLE,
                    "hours": hours,
                    "cost_code": "BILL",
                    "spent_date": today.isoformat(),
                    "notes": f"Store analytics discovery, day {number}",
                },
                manager,
            ).external_id
        )
    made.append(
        _psa_entry(
            PsaObject.EXPENSE,
            f"uk-demo:expense:{run.pk}",
            {
                **person,
                **EXPENSE,
                "spent_date": today.isoformat(),
                "currency": "GBP",
                "billable": True,
                "cost_code": "TRAVEL",
                "receipt_url": "https://files.example/receipts/uk-train.pdf",
            },
            manager,
        ).external_id
    )
    made.append(
        _psa_entry(
            PsaObject.MILESTONE,
            f"uk-demo:milestone:{run.pk}",
            {
                "project_id": int(psa_project_id),
                **MILESTONE,
                "currency": "GBP",
                "due_date": today.isoformat(),
                "status": "completed",
                "client_accepted": True,
                "completed_at": datetime.datetime.now(datetime.UTC).isoformat(),
            },
            None,
        ).external_id
    )
    psa = ConnectedSystem.objects.get(slug=PSA_SLUG)
    policy = SyncPolicy.objects.filter(flow=Flow.TIME_EXPENSE_TO_ERP, legal_entity__isnull=True).order_by("id").first()
    if policy is not None:
        time_expense_run(policy)
    milestone_billing_pull(system=psa)
    return UkDelivery(state=run.status, psa_project_id=psa_project_id, records=tuple(made))
