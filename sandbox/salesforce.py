"""The sandbox CRM's Salesforce shapes: its sObject types, their fields, and how a record is shown.

Shared by the CRM's HTTP views and by the closed-won webhook, which carries the record as the API shows it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sandbox.choices import CrmObject
from sandbox.models import SandboxRecord

SYSTEM_FIELDS = ["Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp"]
SOBJECT_FIELDS: dict[str, list[str]] = {
    CrmObject.ACCOUNT: [
        "Name",
        "AccountNumber",
        "Type",
        "Industry",
        "BillingStreet",
        "BillingCity",
        "BillingPostalCode",
        "BillingCountry",
        "Phone",
        "Website",
        "Description",
        "CurrencyIsoCode",
        "OwnerId",
    ],
    CrmObject.CONTACT: ["FirstName", "LastName", "Email", "Phone", "Title", "AccountId", "MailingCountry", "OwnerId"],
    CrmObject.OPPORTUNITY: [
        "Name",
        "AccountId",
        "StageName",
        "Amount",
        "CurrencyIsoCode",
        "CloseDate",
        "Probability",
        "Type",
        "LeadSource",
        "Description",
        "IsClosed",
        "IsWon",
        "OwnerId",
    ],
}
REQUIRED_FIELDS = {
    CrmObject.ACCOUNT: ["Name"],
    CrmObject.CONTACT: ["LastName"],
    CrmObject.OPPORTUNITY: ["Name", "StageName", "CloseDate"],
}
READ_ONLY_FIELDS = {*SYSTEM_FIELDS, "IsClosed", "IsWon"}
REFERENCE_FIELDS = {"AccountId": CrmObject.ACCOUNT}


def sf_datetime(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def is_field(sobject: str, name: str) -> bool:
    return name in SYSTEM_FIELDS or name in SOBJECT_FIELDS[sobject] or name.endswith("__c")


def sobject_render(record: SandboxRecord, *, version: str, fields: list[str] | None = None) -> dict[str, Any]:
    """A record as Salesforce returns it: attributes first, then the fields (all of them, or `fields`)."""
    system_values = {
        "Id": record.external_id,
        "IsDeleted": record.deleted,
        "CreatedDate": sf_datetime(record.created_at),
        "LastModifiedDate": sf_datetime(record.updated_at),
        "SystemModstamp": sf_datetime(record.updated_at),
    }
    names = fields or [
        "Id",
        *SOBJECT_FIELDS.get(record.object_type, []),
        *sorted(k for k in record.data if k.endswith("__c")),
        *SYSTEM_FIELDS[1:],
    ]
    body: dict[str, Any] = {
        "attributes": {
            "type": record.object_type,
            "url": f"/services/data/{version}/sobjects/{record.object_type}/{record.external_id}",
        }
    }
    for name in names:
        body[name] = system_values[name] if name in system_values else record.data.get(name)
    return body
