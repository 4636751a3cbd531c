"""Records in the sandbox CRM for the workflow tests, and the signed account events the CRM would send."""

from __future__ import annotations

import json
import time
import uuid
from datetime import date
from typing import Any

from django.test import Client

from sandbox import selectors as sandbox_selectors
from sandbox.choices import CrmObject, ErpObject, PsaObject, SandboxSystem
from sandbox.models import SandboxRecord
from sandbox.salesforce import sobject_render
from sandbox.services import crm_record_save
from sandbox.webhooks import standard_webhook_headers
from workflows.tests.conftest import WEBHOOK_SECRET, Firm


def account_create(name: str, **fields: Any) -> SandboxRecord:
    record, _ = crm_record_save(
        object_type=CrmObject.ACCOUNT,
        data={"Name": name, "Type": "Customer", "CurrencyIsoCode": "USD", **fields},
        notify=False,
    )
    return record


def opportunity_create(account: SandboxRecord, name: str, *, stage: str = "Closed Won", **fields: Any) -> SandboxRecord:
    """An opportunity of `account`; created Closed Won, the sandbox CRM sends the signed webhook to the hub."""
    record, _ = crm_record_save(
        object_type=CrmObject.OPPORTUNITY,
        data={
            "Name": name,
            "AccountId": account.external_id,
            "StageName": stage,
            "Amount": 120000,
            "CurrencyIsoCode": "USD",
            "CloseDate": date.today().isoformat(),
            "Legal_Entity__c": "US01",
            "Billing_Type__c": "time_and_materials",
            "Project_Template__c": "TPL-CONSULTING",
            "Contract_Number__c": f"CTR-{uuid.uuid4().hex[:6]}",
            **fields,
        },
    )
    return record


def account_event(firm: Firm, account: SandboxRecord, *, event_type: str = "client.updated") -> Any:
    """POST the account to the hub's inbound endpoint as the CRM's signed webhook would."""
    account.refresh_from_db()
    body = json.dumps(
        {"type": event_type, "timestamp": "2026-11-26T10:00:00Z", "data": sobject_render(account, version="v60.0")}
    )
    headers = standard_webhook_headers(WEBHOOK_SECRET, f"msg_{uuid.uuid4().hex}", int(time.time()), body)
    response = Client().post(
        f"/api/v1/inbound/{firm.crm.slug}/{event_type}/", data=body, content_type="application/json", headers=headers
    )
    assert response.status_code in (200, 202), response.content
    return response


def sandbox_record(system: str, object_type: str, external_id: str) -> SandboxRecord:
    record = sandbox_selectors.record_get(system=system, object_type=object_type, external_id=str(external_id))
    assert record is not None, f"{system} {object_type} {external_id} does not exist"
    return record


def erp_records(object_type: str = ErpObject.CLIENT, **data: Any) -> list[SandboxRecord]:
    rows = SandboxRecord.objects.filter(system=SandboxSystem.ERP, object_type=object_type, deleted=False)
    return [row for row in rows if all(row.data.get(k) == v for k, v in data.items())]


def psa_records(object_type: str = PsaObject.CLIENT, **data: Any) -> list[SandboxRecord]:
    rows = SandboxRecord.objects.filter(system=SandboxSystem.PSA, object_type=object_type, deleted=False)
    return [row for row in rows if all(row.data.get(k) == v for k, v in data.items())]
