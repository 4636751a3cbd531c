"""Services of the sandbox app: every write to the simulated systems, their credentials and fault profiles."""

from __future__ import annotations

import json
import logging
import secrets
import string
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import CharField
from django.db.models.functions import Cast
from django.utils import timezone

from integrationhub.dispatch import enqueue_on_commit
from integrationhub.errors import HubConflictError, HubError, HubNotFoundError, HubValidationError
from sandbox import selectors
from sandbox.choices import (
    CLOSED_WON,
    EVENT_OPPORTUNITY_CLOSED_WON,
    PSA_APPROVAL_EVENTS,
    ApprovalStatus,
    CollabObject,
    CrmObject,
    ErpInvoiceStatus,
    ErpObject,
    ErpPeriodStatus,
    ErpProjectStatus,
    PsaObject,
    SandboxSystem,
    WebhookDeliveryStatus,
)
from sandbox.models import (
    SandboxAccessToken,
    SandboxFaultProfile,
    SandboxRecord,
    SandboxSetting,
    SandboxWebhookDelivery,
)
from sandbox.salesforce import sobject_render
from sandbox.webhooks import generate_webhook_secret, standard_webhook_headers

logger = logging.getLogger(__name__)

REASON_MAX_LENGTH = 100
WEBHOOK_TIMEOUT_SECONDS = 10.0
SALESFORCE_PREFIXES: dict[str, str] = {CrmObject.ACCOUNT: "001", CrmObject.CONTACT: "003", CrmObject.OPPORTUNITY: "006"}
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
DEFAULT_PAGE_SIZES: dict[str, int] = {
    SandboxSystem.CRM: 200,
    SandboxSystem.PSA: 100,
    SandboxSystem.COLLAB: 100,
    SandboxSystem.ERP: 100,
}


class SandboxAuthError(HubError):
    """The credentials presented to a simulated system are wrong; `code` is the system's own error word."""

    status = 401
    code = "sandbox_auth"
    title = "Not authenticated"

    def __init__(self, detail: str, *, error_code: str) -> None:
        super().__init__(detail)
        self.error_code = error_code


def now_ms() -> datetime:
    """Now, truncated to milliseconds: what the simulated APIs show is exactly what is stored."""
    current = timezone.now()
    return current.replace(microsecond=current.microsecond // 1000 * 1000)


def _stamp(instance: Any, *, user: Any = None, reason: str = "") -> None:
    if user is not None and getattr(user, "is_authenticated", False):
        instance._history_user = user
    if reason:
        instance._change_reason = reason[:REASON_MAX_LENGTH]


def salesforce_id(prefix: str) -> str:
    """An 18-character Salesforce-style id: key prefix, pod, 9 random base62 characters and the case checksum."""
    base = prefix + "5g0" + "".join(secrets.choice(_BASE62) for _ in range(9))
    suffix = ""
    for chunk in range(3):
        bits = sum(1 << i for i, char in enumerate(base[chunk * 5 : chunk * 5 + 5]) if char.isupper())
        suffix += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]
    return base + suffix


# --- settings, credentials and tokens -----------------------------------------------------------------


def sandbox_setting_ensure(*, system: str) -> SandboxSetting:
    """The setting row of `system`, created with random credentials the first time (never well-known ones)."""
    setting = selectors.sandbox_setting_get(system=system)
    if setting is not None:
        return setting
    try:
        with transaction.atomic():
            return SandboxSetting.objects.create(
                system=system,
                client_id=f"sandbox-{system}-{secrets.token_hex(4)}",
                client_secret=secrets.token_urlsafe(24),
                api_token=secrets.token_urlsafe(24),
                account_id=str(100000 + secrets.randbelow(900000)),
                page_size=DEFAULT_PAGE_SIZES.get(system, 100),
                webhook_secret=generate_webhook_secret(),
            )
    except IntegrityError:  # created by a concurrent request
        return SandboxSetting.objects.get(system=system)


@transaction.atomic
def sandbox_setting_save(*, setting: SandboxSetting, user: Any = None, reason: str = "") -> SandboxSetting:
    """Validate and save a sandbox system's credentials and options, recording who and why."""
    setting.full_clean()
    _stamp(setting, user=user, reason=reason)
    setting.save()
    return setting


@transaction.atomic
def access_token_issue(*, system: str, client_id: str, client_secret: str) -> SandboxAccessToken:
    """Check the client credentials against the system's setting and issue a bearer token (client_credentials)."""
    setting = sandbox_setting_ensure(system=system)
    if not client_id or not secrets.compare_digest(client_id, setting.client_id):
        raise SandboxAuthError("client identifier invalid", error_code="invalid_client_id")
    if not client_secret or not secrets.compare_digest(client_secret, setting.client_secret):
        raise SandboxAuthError("invalid client credentials", error_code="invalid_client")
    issued = timezone.now()
    SandboxAccessToken.objects.filter(system=system, expires_at__lt=issued).delete()
    return SandboxAccessToken.objects.create(
        system=system,
        token=f"00D5g0000{secrets.token_urlsafe(48)}",
        client_id=client_id,
        issued_at=issued,
        expires_at=issued + timedelta(seconds=setting.token_ttl_seconds),
    )


def static_token_is_valid(*, system: str, token: str) -> bool:
    """Whether `token` is the system's static bearer token / API key, or a token its token endpoint issued."""
    setting = sandbox_setting_ensure(system=system)
    if token and setting.api_token and secrets.compare_digest(token, setting.api_token):
        return True
    return selectors.access_token_is_valid(system=system, token=token)


# --- fault profiles -----------------------------------------------------------------------------------


def fault_profile_ensure(*, system: str) -> SandboxFaultProfile:
    """The fault profile row of `system` (created disabled)."""
    profile, _ = SandboxFaultProfile.objects.get_or_create(system=system, defaults={"generation": uuid.uuid4().hex})
    return profile


def _profile_publish(profile: SandboxFaultProfile) -> None:
    # The cached copy is what every process applies; replace it once the row is committed.
    def publish() -> None:
        cache.delete(selectors.profile_cache_key(profile.system))

    cache.delete(selectors.profile_cache_key(profile.system))
    transaction.on_commit(publish)


@transaction.atomic
def fault_profile_save(*, profile: SandboxFaultProfile, user: Any = None, reason: str = "") -> SandboxFaultProfile:
    """Validate and save a fault profile; counting ("every Nth", the burst) restarts from the next request."""
    profile.renew_generation()
    profile.full_clean()
    _stamp(profile, user=user, reason=reason or "fault profile changed")
    profile.save()
    _profile_publish(profile)
    return profile


@transaction.atomic
def fault_profile_reset(*, system: str, user: Any = None, reason: str = "") -> SandboxFaultProfile:
    """Turn every fault of `system` off and back to its default value."""
    profile = fault_profile_ensure(system=system)
    defaults = SandboxFaultProfile(system=system)
    for model_field in SandboxFaultProfile._meta.concrete_fields:
        if model_field.name not in ("id", "system", "generation", "updated_at"):
            setattr(profile, model_field.attname, getattr(defaults, model_field.attname))
    return fault_profile_save(profile=profile, user=user, reason=reason or "fault profile reset")


def fault_profile_cache_clear() -> None:
    """Forget the cached fault profiles of every system (tests, and after editing rows outside the services)."""
    cache.delete_many([selectors.profile_cache_key(system) for system in SandboxSystem.values])


# --- records ------------------------------------------------------------------------------------------


def _new_external_id(system: str, object_type: str) -> str:
    if system == SandboxSystem.CRM:
        return salesforce_id(SALESFORCE_PREFIXES.get(object_type, "a00"))
    if system == SandboxSystem.COLLAB:
        return str(uuid.uuid4())
    return ""  # PSA and ERP number their records: the row id, assigned after the insert


@transaction.atomic
def record_create(
    *, system: str, object_type: str, data: dict[str, Any], idempotency_key: str = ""
) -> tuple[SandboxRecord, bool]:
    """Store a new record; with an idempotency key already used, return that record and created=False."""
    existing = selectors.record_by_idempotency_key(system=system, object_type=object_type, key=idempotency_key)
    if existing is not None:
        return existing, False
    stamp = now_ms()
    external_id = _new_external_id(system, object_type)
    record = SandboxRecord(
        system=system,
        object_type=object_type,
        external_id=external_id or f"tmp-{uuid.uuid4().hex}",
        data=data,
        idempotency_key=idempotency_key,
        created_at=stamp,
        updated_at=stamp,
    )
    try:
        with transaction.atomic():
            record.save()
    except IntegrityError:
        # A concurrent request with the same key won the race: answer with its record.
        existing = selectors.record_by_idempotency_key(system=system, object_type=object_type, key=idempotency_key)
        if existing is None:
            raise
        return existing, False
    if not external_id:
        record.external_id = str(record.pk)
        record.save(update_fields=["external_id"])
    return record, True


def records_create_many(
    *, system: str, object_type: str, items: list[tuple[str, dict[str, Any]]]
) -> list[tuple[SandboxRecord, bool]]:
    """Store many new records in a few statements (a batch endpoint); each (idempotency key, data) answers
    (record, created) in order, and a key already used answers its record with created=False."""
    if not items:
        return []
    keys = [key for key, _ in items]
    existing = selectors.records_by_idempotency_keys(system=system, object_type=object_type, keys=keys)
    stamp = now_ms()
    fresh = [
        SandboxRecord(
            system=system,
            object_type=object_type,
            external_id=_new_external_id(system, object_type) or f"tmp-{uuid.uuid4().hex}",
            data=data,
            idempotency_key=key,
            created_at=stamp,
            updated_at=stamp,
        )
        for key, data in items
        if key not in existing
    ]
    try:
        with transaction.atomic():
            SandboxRecord.objects.bulk_create(fresh)
            numbered = [record for record in fresh if record.external_id.startswith("tmp-")]
            for record in numbered:
                record.external_id = str(record.pk)
            # One UPDATE setting each id from its key: bulk_update's CASE per row took most of a batch's time.
            SandboxRecord.objects.filter(pk__in=[record.pk for record in numbered]).update(
                external_id=Cast("pk", output_field=CharField())
            )
    except IntegrityError:
        # A concurrent request stored one of the keys first: fall back to one create per record.
        return [
            record_create(system=system, object_type=object_type, data=data, idempotency_key=key) for key, data in items
        ]
    created = iter(fresh)
    return [(existing[key], False) if key in existing else (next(created), True) for key, _ in items]


@transaction.atomic
def record_update(*, record: SandboxRecord, changes: dict[str, Any]) -> SandboxRecord:
    """Merge `changes` into the record's payload and move its updated timestamp."""
    record.data = {**record.data, **changes}
    record.updated_at = max(now_ms(), record.updated_at)
    record.save(update_fields=["data", "updated_at"])
    return record


@transaction.atomic
def record_delete(*, record: SandboxRecord) -> SandboxRecord:
    """Soft-delete: the row stays (IsDeleted / deleted=true) and its updated timestamp moves."""
    record.deleted = True
    # A deleted record frees its idempotency key: the same key afterwards creates a new record.
    record.idempotency_key = ""
    record.updated_at = max(now_ms(), record.updated_at)
    record.save(update_fields=["deleted", "idempotency_key", "updated_at"])
    return record


def _require(record: SandboxRecord | None, what: str) -> SandboxRecord:
    if record is None:
        raise HubNotFoundError(f"{what} does not exist.")
    return record


# --- CRM ----------------------------------------------------------------------------------------------


def _crm_derive(object_type: str, data: dict[str, Any]) -> dict[str, Any]:
    if object_type == CrmObject.OPPORTUNITY and "StageName" in data:
        closed = data["StageName"] in (CLOSED_WON, "Closed Lost")
        return {**data, "IsClosed": closed, "IsWon": data["StageName"] == CLOSED_WON}
    return data


def _crm_closed_won(object_type: str, before: dict[str, Any], after: dict[str, Any]) -> bool:
    return (
        object_type == CrmObject.OPPORTUNITY
        and after.get("StageName") == CLOSED_WON
        and before.get("StageName") != CLOSED_WON
    )


@transaction.atomic
def crm_record_save(
    *,
    object_type: str,
    data: dict[str, Any],
    record: SandboxRecord | None = None,
    idempotency_key: str = "",
    notify: bool = True,
) -> tuple[SandboxRecord, bool]:
    """Create or update a CRM sObject; an opportunity that becomes Closed Won sends the signed webhook."""
    before: dict[str, Any] = {}
    if record is None:
        record, created = record_create(
            system=SandboxSystem.CRM,
            object_type=object_type,
            data=_crm_derive(object_type, data),
            idempotency_key=idempotency_key,
        )
    else:
        before, created = dict(record.data), False
        record = record_update(record=record, changes=_crm_derive(object_type, {**record.data, **data}))
    if notify and (created or before) and _crm_closed_won(object_type, before, record.data):
        webhook_delivery_create(event_type=EVENT_OPPORTUNITY_CLOSED_WON, record=record)
    return record, created


@transaction.atomic
def crm_opportunity_close_won(*, external_id: str) -> SandboxRecord:
    """Mark an opportunity Closed Won (the sandbox CRM's UI button); sends the webhook."""
    record = _require(
        selectors.record_get(system=SandboxSystem.CRM, object_type=CrmObject.OPPORTUNITY, external_id=external_id),
        f"Opportunity {external_id}",
    )
    record, _ = crm_record_save(object_type=CrmObject.OPPORTUNITY, record=record, data={"StageName": CLOSED_WON})
    return record


# --- PSA ----------------------------------------------------------------------------------------------


@transaction.atomic
def psa_time_entry_approve(
    *,
    external_id: str,
    approve: bool = True,
    approver_id: int | None = None,
    object_type: str = PsaObject.TIME_ENTRY,
) -> SandboxRecord:
    """Approve (locks the entry) or withdraw the approval of a PSA time entry or expense; either sends the PSA's
    approval webhook when the PSA has a webhook URL."""
    record = _require(
        selectors.record_get(system=SandboxSystem.PSA, object_type=object_type, external_id=external_id),
        f"{object_type} {external_id}",
    )
    if approve:
        changes = {
            "approval_status": ApprovalStatus.APPROVED.value,
            "approved_at": now_ms().isoformat(),
            "approved_by_id": approver_id,
            "is_closed": True,
        }
    else:
        changes = {"approval_status": ApprovalStatus.UNSUBMITTED.value, "approved_at": None, "is_closed": False}
    record = record_update(record=record, changes=changes)
    event = PSA_APPROVAL_EVENTS.get((object_type, "approved" if approve else "unapproved"))
    if event:
        webhook_delivery_create(event_type=event, record=record)
    return record


@transaction.atomic
def psa_entry_delete(*, record: SandboxRecord) -> SandboxRecord:
    """Delete a PSA record; a time entry or expense also sends the PSA's deleted webhook."""
    record = record_delete(record=record)
    event = PSA_APPROVAL_EVENTS.get((record.object_type, "deleted"))
    if event:
        webhook_delivery_create(event_type=event, record=record)
    return record


@transaction.atomic
def psa_project_release_staffing(*, external_id: str) -> SandboxRecord:
    """Release a PSA project's staffing to resource managers; releasing again keeps the first release time."""
    record = _require(
        selectors.record_get(system=SandboxSystem.PSA, object_type=PsaObject.PROJECT, external_id=external_id),
        f"Project {external_id}",
    )
    if not record.data.get("is_active", True):
        raise HubConflictError(f"Project {external_id} is archived; its staffing cannot be released.")
    if record.data.get("staffing_status") == "released":
        return record
    return record_update(
        record=record, changes={"staffing_status": "released", "staffing_released_at": now_ms().isoformat()}
    )


# --- ERP ----------------------------------------------------------------------------------------------

INVOICE_TRANSITIONS = {
    ErpInvoiceStatus.DRAFT: {ErpInvoiceStatus.POSTED},
    ErpInvoiceStatus.POSTED: {ErpInvoiceStatus.PAID},
    ErpInvoiceStatus.PAID: set(),
}


def erp_project_require_active(*, project_id: Any) -> SandboxRecord:
    """The ERP project `project_id`, or an error when it is missing or closed (nothing is posted to it)."""
    project = selectors.record_get(system=SandboxSystem.ERP, object_type=ErpObject.PROJECT, external_id=str(project_id))
    if project is None:
        raise HubValidationError(f"Project {project_id} does not exist.", errors=[{"field": "project_id"}])
    if project.data.get("status") != ErpProjectStatus.ACTIVE:
        raise HubConflictError(f"Project {project_id} is {project.data.get('status')}; nothing can be posted to it.")
    return project


def erp_closed_periods(*, legal_entities: Iterable[str]) -> dict[str, list[tuple[str, str, str, str]]]:
    """The ERP's periods of these legal entities that refuse postings (closed or locked), as (start, end, name,
    status) per entity code, read once (the batch endpoint checks every item against them)."""
    closed: dict[str, list[tuple[str, str, str, str]]] = {}
    periods = selectors.records(system=SandboxSystem.ERP, object_type=ErpObject.PERIOD).filter(
        data__legal_entity__in=list(legal_entities)
    )
    for period in periods:
        data = period.data
        if data.get("status") != ErpPeriodStatus.OPEN:
            closed.setdefault(str(data.get("legal_entity")), []).append(
                (str(data.get("start_date")), str(data.get("end_date")), str(data.get("name")), str(data.get("status")))
            )
    return closed


def erp_period_require_open(
    *, project: SandboxRecord, on_date: Any, closed: Mapping[str, list[tuple[str, str, str, str]]] | None = None
) -> None:
    """Refuse (conflict) an entry dated in a period the ERP has closed or locked for the project's legal entity,
    as a real ERP refuses a posting in a closed period; a date outside every period of the ERP is accepted."""
    if not on_date:
        return
    code = str(project.data.get("legal_entity") or "")
    periods = closed if closed is not None else erp_closed_periods(legal_entities=[code])
    day = str(on_date)[:10]
    for start, end, name, status in periods.get(code, []):
        if start <= day <= end:
            raise HubConflictError(
                f"Period {name} of {code} is {status} in the ERP; nothing dated {day} can be posted."
            )


@transaction.atomic
def erp_invoice_transition(*, record: SandboxRecord, status: str) -> SandboxRecord:
    """Move an invoice draft → posted → paid; any other move is refused."""
    current = record.data.get("status", ErpInvoiceStatus.DRAFT)
    if status == current:
        return record
    if status not in INVOICE_TRANSITIONS.get(current, set()):
        raise HubConflictError(f"An invoice cannot go from {current} to {status}.")
    stamp_field = {ErpInvoiceStatus.POSTED: "posted_at", ErpInvoiceStatus.PAID: "paid_at"}[ErpInvoiceStatus(status)]
    return record_update(record=record, changes={"status": status, stamp_field: now_ms().isoformat()})


# --- webhooks -----------------------------------------------------------------------------------------


@transaction.atomic
def webhook_delivery_create(*, event_type: str, record: SandboxRecord) -> SandboxWebhookDelivery | None:
    """Record a webhook of the CRM and send it after commit on the delivery queue; None when no URL is set."""
    setting = sandbox_setting_ensure(system=record.system)
    if not setting.webhook_url:
        logger.info("sandbox webhook not sent: no webhook_url", extra={"system": record.system, "event": event_type})
        return None
    if record.system == SandboxSystem.PSA:
        from sandbox.views.psa import render as psa_render

        # The PSA sends the record itself (as its API renders it), with the event in the URL, so one inbound
        # mapping reads both pulled records and webhooks. "{event_type}" in the URL is replaced by the event.
        payload: dict[str, Any] = {**psa_render(record), "deleted": record.deleted}
    else:
        payload = {
            "type": event_type,
            "timestamp": now_ms().isoformat().replace("+00:00", "Z"),
            "data": sobject_render(record, version="v60.0"),
        }
    delivery = SandboxWebhookDelivery.objects.create(
        system=record.system,
        event_type=event_type,
        msg_id=f"msg_{uuid.uuid4().hex}",
        record_external_id=record.external_id,
        url=setting.webhook_url.replace("{event_type}", event_type),
        payload=payload,
    )
    from sandbox.tasks import sandbox_webhook_deliver_task

    enqueue_on_commit(sandbox_webhook_deliver_task, delivery.pk, queue="delivery")
    return delivery


@dataclass(frozen=True)
class WebhookAttemptOutcome:
    delivered: bool
    retryable: bool
    status_code: int | None
    error: str


def webhook_delivery_attempt(*, delivery_id: int, final: bool = False) -> WebhookAttemptOutcome:
    """POST one delivery, signed now, and log the attempt. `final`: a failure marks the delivery failed."""
    delivery = SandboxWebhookDelivery.objects.get(pk=delivery_id)
    if delivery.status == WebhookDeliveryStatus.DELIVERED:  # a task run twice does not send twice
        return WebhookAttemptOutcome(True, False, delivery.status_code, "")
    setting = sandbox_setting_ensure(system=delivery.system)
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "IntegrationHub-Sandbox/1.0",
        **standard_webhook_headers(setting.webhook_secret, delivery.msg_id, int(time.time()), body),
    }
    started = time.monotonic()
    status_code: int | None = None
    error = ""
    try:
        response = httpx.post(delivery.url, content=body.encode(), headers=headers, timeout=WEBHOOK_TIMEOUT_SECONDS)
        status_code = response.status_code
        if status_code >= 300:
            error = f"HTTP {status_code}: {response.text[:200]}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    delivered = status_code is not None and 200 <= status_code < 300
    # As the hub's own deliveries: retry timeouts, connection errors, 429 and 5xx; never another 4xx.
    retryable = not delivered and (status_code is None or status_code == 429 or status_code >= 500)
    attempted = timezone.now()
    with transaction.atomic():
        delivery = SandboxWebhookDelivery.objects.select_for_update().get(pk=delivery_id)
        delivery.attempts += 1
        delivery.attempt_log = [
            *delivery.attempt_log,
            {
                "at": attempted.isoformat(),
                "status_code": status_code,
                "error": error,
                "ms": round((time.monotonic() - started) * 1000, 1),
            },
        ]
        delivery.status_code = status_code
        delivery.error = error
        delivery.last_attempt_at = attempted
        if delivered:
            delivery.status = WebhookDeliveryStatus.DELIVERED
            delivery.delivered_at = attempted
        elif final or not retryable:
            delivery.status = WebhookDeliveryStatus.FAILED
        delivery.save()
    return WebhookAttemptOutcome(delivered, retryable, status_code, error)


@transaction.atomic
def erp_time_entry_reverse(*, external_id: str) -> tuple[SandboxRecord, bool]:
    """Post the negative of an ERP time entry and mark the original reversed; twice gives the same reversal."""
    original = _require(
        selectors.record_get(system=SandboxSystem.ERP, object_type=ErpObject.TIME_ENTRY, external_id=external_id),
        f"Time entry {external_id}",
    )
    negated = {
        key: (str(-Decimal(value)) if key in ("hours", "amount") and value is not None else value)
        for key, value in original.data.items()
        if key != "status"
    }
    reversal, created = record_create(
        system=SandboxSystem.ERP,
        object_type=ErpObject.TIME_ENTRY,
        data={**negated, "status": "posted", "reverses_id": int(original.external_id)},
        idempotency_key=f"reversal-of:{original.external_id}",
    )
    if created:
        record_update(record=original, changes={"status": "reversed", "reversed_by_id": int(reversal.external_id)})
    return reversal, created


# --- demo seed ----------------------------------------------------------------------------------------

# The demo sandboxes' credentials: identifiers as given, secrets ("") generated per install (see below).
DEMO_CREDENTIALS: dict[str, dict[str, str]] = {
    SandboxSystem.CRM: {"client_id": "sandbox-crm-demo-client", "client_secret": ""},
    SandboxSystem.PSA: {"api_token": "", "account_id": "424242"},
    SandboxSystem.COLLAB: {"client_id": "sandbox-collab-demo-client", "client_secret": "", "api_token": ""},
    SandboxSystem.ERP: {"api_token": ""},
}
DEMO_PEOPLE = [
    # first, last, role, cost rate, bill rate
    ("Alice", "Hartley", "Partner", 180.0, 450.0),
    ("Ben", "Okafor", "Manager", 120.0, 300.0),
    ("Chloe", "Martin", "Senior Consultant", 95.0, 220.0),
    ("Diego", "Alvarez", "Consultant", 70.0, 160.0),
    ("Emma", "Schultz", "Analyst", 50.0, 110.0),
]


def _demo(system: str, object_type: str, key: str, data: dict[str, Any]) -> SandboxRecord:
    if system == SandboxSystem.CRM:
        record, _ = crm_record_save(object_type=object_type, data=data, idempotency_key=f"demo:{key}", notify=False)
    else:
        record, _ = record_create(system=system, object_type=object_type, data=data, idempotency_key=f"demo:{key}")
    return record


# Secrets of the demo's sandboxes, generated once per install: a constant would let one install's calls (and a
# webhook signed for one) be accepted by another on the same machine. Values every install once shared are
# replaced too.
DEMO_SECRET_FIELDS = ("client_secret", "api_token", "webhook_secret")
FORMER_DEMO_SECRETS = frozenset(
    {
        "whsec_c2FuZGJveC1jcm0tZGVtby13ZWJob29rLXNlY3JldCE=",
        "sandbox-crm-demo-secret",
        "sandbox-psa-demo-token",
        "sandbox-collab-demo-secret",
        "sandbox-collab-demo-token",
        "sandbox-erp-demo-key",
    }
)


def _demo_secret(field: str) -> str:
    return generate_webhook_secret() if field == "webhook_secret" else secrets.token_urlsafe(24)


def _demo_credentials(*, webhook_url: str = "") -> dict[str, dict[str, str]]:
    result: dict[str, dict[str, str]] = {}
    for system, values in DEMO_CREDENTIALS.items():
        setting = sandbox_setting_ensure(system=system)
        wanted = list(values) + (["webhook_secret"] if system == SandboxSystem.CRM else [])
        changes: dict[str, str] = {}
        for name in wanted:
            current = str(getattr(setting, name) or "")
            if name in DEMO_SECRET_FIELDS:
                if not current or current in FORMER_DEMO_SECRETS:
                    changes[name] = _demo_secret(name)
            elif current != values[name]:
                changes[name] = values[name]
        if system == SandboxSystem.CRM and webhook_url and setting.webhook_url != webhook_url:
            changes["webhook_url"] = webhook_url
        if changes:
            for name, value in changes.items():
                setattr(setting, name, value)
            sandbox_setting_save(setting=setting, reason="demo seed")
        result[system] = {name: str(getattr(setting, name)) for name in values}
    result[SandboxSystem.CRM] |= {
        "base_path": "/sandbox/crm",
        "token_path": "/sandbox/crm/services/oauth2/token",
        "api_version": "v60.0",
        "webhook_secret": sandbox_setting_ensure(system=SandboxSystem.CRM).webhook_secret,
    }
    result[SandboxSystem.PSA] |= {"base_path": "/sandbox/psa/v2"}
    result[SandboxSystem.COLLAB] |= {
        "base_path": "/sandbox/collab/v1.0",
        "token_path": "/sandbox/collab/oauth2/v2.0/token",
    }
    result[SandboxSystem.ERP] |= {"base_path": "/sandbox/erp/api", "api_key_header": "X-API-Key"}
    for system in result:
        result[system]["health_path"] = f"/sandbox/{system}/whoami"
    return result


@transaction.atomic
def sandbox_demo_seed(*, webhook_url: str = "") -> dict[str, dict[str, str]]:
    """Demo data in every sandbox system and its known demo credentials; safe to run again (nothing doubles).

    Returns, per system, the credentials and paths a demo ConnectedSystem needs (prefix the paths with the
    host the hub or `run_sandbox` serves on). `webhook_url`, when given, is where the CRM sends closed-won.
    """
    from datetime import date

    credentials = _demo_credentials(webhook_url=webhook_url)
    crm, psa, collab, erp = SandboxSystem.CRM, SandboxSystem.PSA, SandboxSystem.COLLAB, SandboxSystem.ERP
    today = date.today()

    # CRM: three accounts, a contact each, one opportunity closed-won and two still open.
    accounts = {}
    for code, name, country, currency in (
        ("ACC-1001", "Northwind Legal LLP", "United States", "USD"),
        ("ACC-1002", "Contoso Health plc", "United Kingdom", "GBP"),
        ("ACC-1003", "Fabrikam Energy GmbH", "Germany", "EUR"),
    ):
        accounts[code] = _demo(
            crm,
            CrmObject.ACCOUNT,
            f"account:{code}",
            {
                "Name": name,
                "AccountNumber": code,
                "Type": "Customer",
                "Industry": "Professional Services",
                "BillingCountry": country,
                "CurrencyIsoCode": currency,
                "External_Id__c": code,
            },
        )
    for code, first, last, email in (
        ("ACC-1001", "Grace", "Lee", "grace.lee@northwind.example"),
        ("ACC-1002", "Oliver", "Brown", "oliver.brown@contoso.example"),
        ("ACC-1003", "Lena", "Vogel", "lena.vogel@fabrikam.example"),
    ):
        _demo(
            crm,
            CrmObject.CONTACT,
            f"contact:{email}",
            {"FirstName": first, "LastName": last, "Email": email, "AccountId": accounts[code].external_id},
        )
    for code, account, name, stage, amount, currency, entity in (
        ("OPP-2001", "ACC-1001", "Northwind - Data platform modernisation", CLOSED_WON, 250000, "USD", "US01"),
        ("OPP-2002", "ACC-1002", "Contoso - Cloud migration", "Negotiation/Review", 180000, "GBP", "UK01"),
        ("OPP-2003", "ACC-1003", "Fabrikam - ERP rollout", "Proposal/Price Quote", 320000, "EUR", "DE01"),
    ):
        _demo(
            crm,
            CrmObject.OPPORTUNITY,
            f"opportunity:{code}",
            {
                "Name": name,
                "AccountId": accounts[account].external_id,
                "StageName": stage,
                "Amount": amount,
                "CurrencyIsoCode": currency,
                "CloseDate": today.isoformat(),
                "Probability": 100 if stage == CLOSED_WON else 60,
                "Type": "New Business",
                "External_Id__c": code,
                "Legal_Entity__c": entity,
                "Billing_Type__c": "time_and_materials",
                "Project_Template__c": "TPL-CONSULTING",
                "Contract_Number__c": f"CTR-{code[4:]}",
            },
        )

    # PSA: one person per role, a client, its project, milestones and approved time.
    people = {}
    for first, last, role, cost, bill in DEMO_PEOPLE:
        email = f"{first.lower()}.{last.lower()}@firm.example"
        people[role] = _demo(
            psa,
            PsaObject.USER,
            f"user:{email}",
            {
                "first_name": first,
                "last_name": last,
                "email": email,
                "is_active": True,
                "is_contractor": False,
                "roles": [role],
                "cost_rate": cost,
                "default_hourly_rate": bill,
                "weekly_capacity": 144000,
            },
        )
    client = _demo(
        psa,
        PsaObject.CLIENT,
        "client:ACC-1001",
        {"name": "Northwind Legal LLP", "is_active": True, "currency": "USD", "external_reference": "ACC-1001"},
    )
    project = _demo(
        psa,
        PsaObject.PROJECT,
        "project:NW-DATA-01",
        {
            "client_id": int(client.external_id),
            "name": "Northwind - Data platform modernisation",
            "code": "NW-DATA-01",
            "is_active": True,
            "is_billable": True,
            "bill_by": "People",
            "budget": 250000.0,
            "starts_on": today.replace(day=1).isoformat(),
            "external_reference": "OPP-2001",
        },
    )
    for number, (name, milestone_amount, status, accepted) in enumerate(
        (("Discovery complete", 25000.0, "completed", True), ("MVP live", 75000.0, "open", False)), start=1
    ):
        _demo(
            psa,
            PsaObject.MILESTONE,
            f"milestone:NW-DATA-01:{number}",
            {
                "project_id": int(project.external_id),
                "name": name,
                "due_date": (today + timedelta(days=30 * number)).isoformat(),
                "amount": milestone_amount,
                "currency": "USD",
                "status": status,
                "client_accepted": accepted,
                "completed_at": now_ms().isoformat() if status == "completed" else None,
            },
        )
    manager = people["Manager"]
    for day in range(1, 6):
        for role, person in people.items():
            key = f"time:NW-DATA-01:{person.external_id}:{day}"
            entry = _demo(
                psa,
                PsaObject.TIME_ENTRY,
                key,
                {
                    "user_id": int(person.external_id),
                    "project_id": int(project.external_id),
                    "task_id": 1,
                    "spent_date": (today - timedelta(days=day)).isoformat(),
                    "hours": 2.0 if role == "Partner" else 7.5,
                    "notes": f"Data platform work, day {day}",
                    "billable": True,
                    "role": role,
                    "cost_code": "CONS-DELIVERY",
                    "approval_status": ApprovalStatus.UNSUBMITTED.value,
                },
            )
            if entry.data.get("approval_status") != ApprovalStatus.APPROVED:
                psa_time_entry_approve(external_id=entry.external_id, approver_id=int(manager.external_id))

    # Collaboration: the same people, and the workspace of the won project with its team.
    directory = {}
    for first, last, role, _, _ in DEMO_PEOPLE:
        email = f"{first.lower()}.{last.lower()}@firm.example"
        directory[role] = _demo(
            collab,
            CollabObject.USER,
            f"upn:{email}",
            {
                "displayName": f"{first} {last}",
                "givenName": first,
                "surname": last,
                "mail": email,
                "userPrincipalName": email,
                "jobTitle": role,
                "accountEnabled": True,
            },
        )
    _demo(
        collab,
        CollabObject.GROUP,
        "group:nw-data-01",
        {
            "displayName": "Northwind - Data platform modernisation",
            "mailNickname": "nw-data-01",
            "description": "Delivery workspace of NW-DATA-01",
            "mailEnabled": True,
            "securityEnabled": False,
            "groupTypes": ["Unified"],
            "visibility": "Private",
            "mail": "nw-data-01@sandbox.onmicrosoft.com",
            "isArchived": False,
            "members": [directory[role].external_id for role in ("Partner", "Manager", "Senior Consultant")],
        },
    )

    # ERP: the clients, the won project (active), an older closed one, and invoices in each status.
    erp_clients = {}
    for code, name, entity, currency in (
        ("ACC-1001", "Northwind Legal LLP", "US01", "USD"),
        ("ACC-1002", "Contoso Health plc", "UK01", "GBP"),
    ):
        erp_clients[code] = _demo(
            erp,
            ErpObject.CLIENT,
            f"client:{code}",
            {"name": name, "legal_entity": entity, "currency": currency, "status": "active", "external_ref": code},
        )
    northwind = int(erp_clients["ACC-1001"].external_id)
    active = _demo(
        erp,
        ErpObject.PROJECT,
        "project:NW-DATA-01",
        {
            "client_id": northwind,
            "code": "NW-DATA-01",
            "name": "Northwind - Data platform modernisation",
            "legal_entity": "US01",
            "currency": "USD",
            "status": ErpProjectStatus.ACTIVE.value,
            "billing_type": "time_and_materials",
            "contract_value": "250000.00",
            "external_ref": "OPP-2001",
        },
    )
    _demo(
        erp,
        ErpObject.PROJECT,
        "project:NW-AUDIT-00",
        {
            "client_id": northwind,
            "code": "NW-AUDIT-00",
            "name": "Northwind - Records audit (2024)",
            "legal_entity": "US01",
            "currency": "USD",
            "status": ErpProjectStatus.CLOSED.value,
            "billing_type": "fixed_fee",
            "contract_value": "40000.00",
        },
    )
    for number, (status, invoice_amount) in enumerate(
        (
            (ErpInvoiceStatus.PAID, "40000.00"),
            (ErpInvoiceStatus.POSTED, "25000.00"),
            (ErpInvoiceStatus.DRAFT, "9800.00"),
        ),
        start=1,
    ):
        _demo(
            erp,
            ErpObject.INVOICE,
            f"invoice:NW:{number}",
            {
                "client_id": northwind,
                "project_id": int(active.external_id),
                "currency": "USD",
                "amount": invoice_amount,
                "status": status.value,
                "number": f"INV-DEMO-{number:03d}",
                "lines": [{"description": "Professional services", "amount": invoice_amount}],
            },
        )
    return credentials
