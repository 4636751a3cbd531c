"""Demo of the opportunity-to-project saga and the client master, on top of the demo firm (`demo_setup`).

`seed_opportunity_and_client_demo()` configures what the two flows need (the CRM's inbound mappings of accounts
and opportunities, the duplicate check on the client-master policy) and wins five opportunities in the sandbox
CRM. Each sends its signed closed-won webhook, so once the web process and a worker run:

- three activate fully (Woodgrove Bank and Relecloud in US01, Fourth Coffee in DE01);
- one is held at create_workspace: its name contains a word the collaboration suite's naming policy blocks;
- one waits at ensure_client: its account "Northwind Legal, L.L.P." looks like the ERP's "Northwind Legal LLP",
  so a duplicate suspect waits for an analyst, and the activation resumes once they decide.

Safe to run again: records that exist are left alone and no webhook is sent twice.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from django.db import transaction

from connectors.models import ConnectedSystem
from integrationhub.errors import HubValidationError
from sandbox import selectors as sandbox_selectors
from sandbox.choices import CLOSED_WON, CrmObject, SandboxSystem
from sandbox.models import SandboxRecord
from sandbox.services import crm_record_save
from workflows.setup import crm_inbound_mapping_ensure, workflow_policies_ensure

DEMO_CRM_SLUG = "crm"

# key, account name, currency, website, tax id
ACCOUNTS = [
    ("WOODGROVE", "Woodgrove Bank", "USD", "https://woodgrovebank.example", "US-41-5550101"),
    ("RELECLOUD", "Relecloud Inc", "USD", "https://relecloud.example", "US-52-5550102"),
    ("FOURTHCOFFEE", "Fourth Coffee GmbH", "EUR", "https://fourthcoffee.example", "DE555010301"),
    ("ADATUM", "Adatum Corporation", "USD", "https://adatum.example", "US-63-5550104"),
    ("NORTHWIND-LLP", "Northwind Legal, L.L.P.", "USD", "", ""),
]
# key, account key, name, amount, currency, legal entity, billing type
OPPORTUNITIES = [
    (
        "WOODGROVE-1",
        "WOODGROVE",
        "Woodgrove - Payments platform assessment",
        185000,
        "USD",
        "US01",
        "time_and_materials",
    ),
    ("RELECLOUD-1", "RELECLOUD", "Relecloud - Cloud cost optimisation", 92000, "USD", "US01", "fixed_fee"),
    ("FOURTHCOFFEE-1", "FOURTHCOFFEE", "Fourth Coffee - Supply chain redesign", 140000, "EUR", "DE01", "milestone"),
    ("ADATUM-1", "ADATUM", "Adatum - Confidential carve-out advisory", 260000, "USD", "US01", "time_and_materials"),
    ("NORTHWIND-2", "NORTHWIND-LLP", "Northwind - Contract analytics", 76000, "USD", "US01", "time_and_materials"),
]


def _crm_record(object_type: str, key: str, data: dict[str, Any]) -> tuple[SandboxRecord, bool]:
    idempotency_key = f"workflow-demo:{key}"
    existing = sandbox_selectors.record_by_idempotency_key(
        system=SandboxSystem.CRM, object_type=object_type, key=idempotency_key
    )
    if existing is not None:
        return existing, False
    return crm_record_save(object_type=object_type, data=data, idempotency_key=idempotency_key)


@transaction.atomic
def seed_opportunity_and_client_demo() -> list[str]:
    """Configure the two flows on the demo firm and win the demo opportunities in the sandbox CRM; returns a
    summary. Run `manage.py demo_setup` (or `integrationhub.demo.demo_setup()`) first."""
    crm = ConnectedSystem.objects.filter(slug=DEMO_CRM_SLUG).first()
    if crm is None:
        raise HubValidationError(
            "The demo firm is not set up: there is no connected system 'crm'.",
            hint="Run `python manage.py demo_setup` first.",
        )
    mappings = [crm_inbound_mapping_ensure(crm=crm, entity_name=name) for name in ("client", "opportunity")]
    policies = workflow_policies_ensure(reason="demo: opportunity and client flows")
    accounts: dict[str, SandboxRecord] = {}
    for key, name, currency, website, tax_id in ACCOUNTS:
        data = {"Name": name, "Type": "Customer", "CurrencyIsoCode": currency, "Industry": "Professional Services"}
        if website:
            data["Website"] = website
        if tax_id:
            data["Tax_Id__c"] = tax_id
        accounts[key], _ = _crm_record(CrmObject.ACCOUNT, f"account:{key}", data)
    won = 0
    today = date.today()
    for key, account_key, name, amount, currency, entity, billing in OPPORTUNITIES:
        _, created = _crm_record(
            CrmObject.OPPORTUNITY,
            f"opportunity:{key}",
            {
                "Name": name,
                "AccountId": accounts[account_key].external_id,
                # Created closed-won: the sandbox CRM sends the signed closed-won webhook after commit.
                "StageName": CLOSED_WON,
                "Amount": amount,
                "CurrencyIsoCode": currency,
                "CloseDate": today.isoformat(),
                "Probability": 100,
                "Legal_Entity__c": entity,
                "Billing_Type__c": billing,
                "Project_Template__c": "TPL-CONSULTING",
                "Contract_Number__c": f"CTR-{key}",
                "Expected_Start__c": (today + timedelta(days=14)).isoformat(),
            },
        )
        won += int(created)
    return [
        f"CRM inbound mappings: {', '.join(f'{m.entity.name} v{m.version}' for m in mappings)}",
        f"sync policies: {', '.join(p.name for p in policies)}",
        f"demo opportunities won now: {won} (of {len(OPPORTUNITIES)}); their closed-won webhooks go to the hub",
    ]
