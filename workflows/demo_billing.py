"""Demo seeding of the billing flows (milestone to billing, invoice and payment status), on top of the demo firm.

`seed_billing_demo()` runs after `integrationhub.demo.demo_data_load()` (it needs the demo's systems and
policies). It makes a milestone-billed contract in the sandbox PSA and ERP with completed milestones (two
below the approval threshold, one above it), gives the hub the analytics sink's credentials, configures the
invoice flow (mapping, routes, poll schedule) and schedules the milestone pull. With web and worker running,
two milestones bill, one waits for finance, and the ERP's posted and paid invoices reach the CRM and analytics.
Safe to run again: nothing doubles.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.db import transaction

from connectors.models import ConnectedSystem
from connectors.services import connected_system_set_secrets
from governance.choices import Flow, Trigger
from governance.models import SyncPolicy
from governance.services import sync_policy_save
from sandbox import selectors as sandbox_selectors
from sandbox.choices import ErpObject, ErpProjectStatus, PsaObject, SandboxSystem
from sandbox.services import record_create, sandbox_setting_ensure, sandbox_setting_save
from workflows.invoice_status import invoice_status_setup

DEMO_REASON = "demo: billing flows"
# The token every install used to share; an install that still has it gets one of its own.
FORMER_ANALYTICS_TOKEN = "sandbox-analytics-demo-token"
CONTRACT_CODE = "NW-MS-02"
CONTRACT_VALUE = "200000.00"
# name, amount, completed, client accepted: two bill at once, the 60,000 one waits for finance (threshold 50,000).
MILESTONES = (
    ("Design signed off", 12000.0, True, True),
    ("Pilot live", 18000.0, True, True),
    ("Rollout wave 1", 60000.0, True, True),
    ("Rollout wave 2", 80000.0, False, False),
)
MILESTONE_PULL_CRON = "* * * * *"
INVOICE_PULL_SECONDS = 30


@dataclass(frozen=True)
class BillingDemoResult:
    """What the billing demo seeded and configured."""

    milestones: list[str]
    erp_project_id: str
    invoice_routes: list[str]
    invoice_schedule_id: int


def _demo_record(system: str, object_type: str, key: str, data: dict[str, Any]) -> Any:
    record, _ = record_create(system=system, object_type=object_type, data=data, idempotency_key=f"demo:{key}")
    return record


def _analytics_credentials(analytics: ConnectedSystem) -> None:
    """The sandbox analytics sink's token, generated for this install (kept once made), and the hub's copy."""
    setting = sandbox_setting_ensure(system=SandboxSystem.ANALYTICS)
    if not setting.api_token or setting.api_token == FORMER_ANALYTICS_TOKEN:
        setting.api_token = secrets.token_urlsafe(24)
        sandbox_setting_save(setting=setting, reason=DEMO_REASON)
    held: Any = analytics.credentials
    if not analytics.has_credentials or not isinstance(held, dict) or held.get("bearer_token") != setting.api_token:
        connected_system_set_secrets(
            system=analytics, credentials={"bearer_token": setting.api_token}, reason="demo: sandbox analytics token"
        )


def _milestone_contract() -> tuple[Any, list[Any]]:
    today = date.today()
    psa_client = sandbox_selectors.record_by_idempotency_key(
        system=SandboxSystem.PSA, object_type=PsaObject.CLIENT, key="demo:client:ACC-1001"
    )
    erp_client = sandbox_selectors.record_by_idempotency_key(
        system=SandboxSystem.ERP, object_type=ErpObject.CLIENT, key="demo:client:ACC-1001"
    )
    if psa_client is None or erp_client is None:
        raise RuntimeError("Run the demo firm's setup (manage.py demo_setup) before seeding the billing demo.")
    erp_project = _demo_record(
        SandboxSystem.ERP,
        ErpObject.PROJECT,
        f"project:{CONTRACT_CODE}",
        {
            "client_id": int(erp_client.external_id),
            "code": CONTRACT_CODE,
            "name": "Northwind - Managed analytics (milestones)",
            "legal_entity": "US01",
            "currency": "USD",
            "status": ErpProjectStatus.ACTIVE.value,
            "billing_type": "milestone",
            "contract_value": CONTRACT_VALUE,
            "external_ref": "OPP-2001",
        },
    )
    psa_project = _demo_record(
        SandboxSystem.PSA,
        PsaObject.PROJECT,
        f"project:{CONTRACT_CODE}",
        {
            "client_id": int(psa_client.external_id),
            "name": "Northwind - Managed analytics (milestones)",
            "code": CONTRACT_CODE,
            "is_active": True,
            "is_billable": True,
            "bill_by": "Project",
            "fee": float(CONTRACT_VALUE),
            "starts_on": today.replace(day=1).isoformat(),
            "external_reference": "OPP-2001",
        },
    )
    from sandbox.services import now_ms

    milestones = []
    for number, (name, amount, completed, accepted) in enumerate(MILESTONES, start=1):
        milestones.append(
            _demo_record(
                SandboxSystem.PSA,
                PsaObject.MILESTONE,
                f"milestone:{CONTRACT_CODE}:{number}",
                {
                    "project_id": int(psa_project.external_id),
                    "name": name,
                    "due_date": (today + timedelta(days=14 * number)).isoformat(),
                    "amount": amount,
                    "currency": "USD",
                    "status": "completed" if completed else "open",
                    "client_accepted": accepted,
                    "completed_at": now_ms().isoformat() if completed else None,
                },
            )
        )
    return erp_project, milestones


def _schedule_milestone_pull() -> None:
    policy = SyncPolicy.objects.filter(flow=Flow.MILESTONE_BILLING, legal_entity__isnull=True).order_by("id").first()
    if policy is None:
        raise RuntimeError("The demo's milestone billing policy is missing; run manage.py demo_setup first.")
    if policy.trigger != Trigger.SCHEDULE or policy.cron != MILESTONE_PULL_CRON:
        policy.trigger, policy.cron = Trigger.SCHEDULE, MILESTONE_PULL_CRON
        sync_policy_save(policy=policy, reason="demo: pull completed milestones every minute")


@transaction.atomic
def seed_billing_demo() -> BillingDemoResult:
    """Configure and seed the billing flows of the demo firm (idempotent); see the module docstring."""
    systems = {s.slug: s for s in ConnectedSystem.objects.filter(slug__in=["crm", "psa", "erp-us", "analytics"])}
    missing = sorted({"crm", "psa", "erp-us", "analytics"} - set(systems))
    if missing:
        raise RuntimeError(f"The demo systems {', '.join(missing)} are missing; run manage.py demo_setup first.")
    _analytics_credentials(systems["analytics"])
    erp_project, milestones = _milestone_contract()
    setup = invoice_status_setup(
        erp=systems["erp-us"],
        crm=systems["crm"],
        analytics=systems["analytics"],
        legal_entity_code="US01",
        every_seconds=INVOICE_PULL_SECONDS,
    )
    _schedule_milestone_pull()
    return BillingDemoResult(
        milestones=[m.external_id for m in milestones],
        erp_project_id=erp_project.external_id,
        invoice_routes=[route.name for route in setup.routes],
        invoice_schedule_id=setup.schedule.pk,
    )
