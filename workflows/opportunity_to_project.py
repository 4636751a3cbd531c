"""Opportunity to project: a saga from a CRM closed-won opportunity to an activated project.

A closed-won opportunity message (the CRM's webhook, or a pull that reads the record) starts one run per
opportunity (business key crm:opportunity:<id>, triggered_at = when the record became closed-won). A worker
carries the steps out in order, each recorded as a WorkflowStep:

    validate → ensure_client → create_erp_project → create_psa_project → create_workspace
    → release_staffing → publish_to_crm

Every write is idempotent: each record is created with a key of its own (per system and opportunity) that the
connector looks up before it creates, and the ERP project's cross-reference is written as soon as it exists,
so a retried step or a re-run never creates a second record. Every call goes through the transport
(`workflow_call`): a paused system, an open circuit or a spent rate budget refuses the call before anything
is sent. A step that failed retryably (a timeout, a 5xx, a refused call) is tried again after the delay of the
flow's sync policy; a step that failed for good, or whose retries are spent, holds the run on an
activation_held item: finance retries the step, compensates (the completed steps are undone in reverse as far
as each system can), or cancels. Staffing is released only when the ERP project exists and is active.
KPI: activation time = release_staffing's finished_at minus the run's triggered_at (workflows.selectors).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from operator import methodcaller
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from connectors.base import ConnectorCapabilityError
from connectors.choices import SystemRole
from connectors.http import ConnectorError
from connectors.models import ConnectedSystem
from exception_queue.choices import ExceptionCategory
from governance.choices import Flow
from governance.models import LegalEntity, RateCard
from governance.selectors import rate_card_valid_on
from integrationhub import roles
from integrationhub.dispatch import enqueue_on_commit
from integrationhub.errors import HubConflictError, HubError, HubValidationError
from mappings.choices import Direction
from mappings.runtime import compiled_mapping, published_mapping_set
from sync.models import Message
from workflows.choices import (
    OPPORTUNITY_STEPS,
    STEP_CREATE_ERP_PROJECT,
    STEP_CREATE_PSA_PROJECT,
    STEP_CREATE_WORKSPACE,
    STEP_ENSURE_CLIENT,
    STEP_PUBLISH_TO_CRM,
    STEP_RELEASE_STAFFING,
    STEP_VALIDATE,
    RunStatus,
    StepStatus,
)
from workflows.client_master import (
    DuplicateSuspectHeld,
    system_for,
    xref_get,
    xref_set,
)
from workflows.models import FinanceNotification, WorkflowRun, WorkflowStep
from workflows.services import (
    connector_offers,
    workflow_call,
    workflow_run_correlation_id,
    workflow_run_finish,
    workflow_run_hold,
    workflow_run_lock,
    workflow_run_resume,
    workflow_run_start,
    workflow_run_wait,
    workflow_step_begin,
    workflow_step_done,
    workflow_step_fail,
)

logger = logging.getLogger(__name__)

CLOSED_WON = "closed_won"
PROJECT_ENTITY = "project"
BILLING_TYPES = ("time_and_materials", "fixed_fee", "retainer", "milestone", "non_billable")
CRM_ACTIVATED = "Activated"
CRM_COMPENSATED = "Activation undone"


class ActivationValidationError(HubValidationError):
    """The won opportunity lacks what activation needs; `failed_rules` says which rule, field, expected, actual."""

    code = "activation_validation"

    def __init__(self, failed_rules: list[dict[str, Any]]) -> None:
        super().__init__(
            "; ".join(rule["message"] for rule in failed_rules),
            errors=[{"field": rule["field"], "message": rule["message"]} for rule in failed_rules],
            hint="Correct the opportunity in the CRM (or the hub's configuration), then retry the step.",
        )
        self.failed_rules = failed_rules


class StaffingRefusedError(HubConflictError):
    """Staffing is released only for a project whose ERP financial project exists and is active."""

    code = "staffing_refused"


def business_key(opportunity_id: str) -> str:
    return f"crm:opportunity:{opportunity_id}"


def _aware(value: datetime.datetime) -> datetime.datetime:
    return timezone.make_aware(value, datetime.UTC) if timezone.is_naive(value) else value


def closed_won_at(*, canonical: Mapping[str, Any], message: Message | None = None) -> datetime.datetime:
    """When the opportunity became closed-won: the record's last change (the stage change), else when the hub
    received it."""
    updated = canonical.get("updated_at")
    parsed = parse_datetime(updated) if isinstance(updated, str) else None
    if parsed is not None:
        return _aware(parsed)
    return message.received_at if message is not None else timezone.now()


def opportunity_start_from_message(*, message: Message) -> WorkflowRun | None:
    """Start the saga for a closed-won opportunity message once; a second webhook or pull of the same
    opportunity returns the existing run and starts nothing."""
    canonical = message.canonical_payload or {}
    if canonical.get("stage") != CLOSED_WON or not canonical.get("id"):
        return None
    legal_entity = LegalEntity.objects.filter(code=canonical.get("legal_entity_code") or "").first()
    amount: Decimal | None
    try:
        amount = Decimal(str(canonical["amount"])) if canonical.get("amount") not in (None, "") else None
    except InvalidOperation:
        amount = None
    run, created = workflow_run_start(
        flow=Flow.OPPORTUNITY_TO_PROJECT,
        business_key=business_key(str(canonical["id"])),
        legal_entity=legal_entity,
        message=message,
        correlation_id=message.correlation_id,
        context={"opportunity": canonical, "crm_system": message.system.slug},
        amount=amount,
        currency=str(canonical.get("currency") or ""),
        triggered_at=closed_won_at(canonical=canonical, message=message),
    )
    if created:
        from workflows.tasks import opportunity_to_project_run_task

        enqueue_on_commit(opportunity_to_project_run_task, run.pk, queue="delivery")
    return run


# --- helpers -------------------------------------------------------------------------------------------


def _opportunity(run: WorkflowRun) -> dict[str, Any]:
    return dict((run.context or {}).get("opportunity") or {})


def _system(run: WorkflowRun, key: str) -> ConnectedSystem:
    slug = (run.context or {}).get(key)
    system = ConnectedSystem.objects.filter(slug=slug).first() if slug else None
    if system is None:
        raise HubValidationError(
            f"The run names no {key.replace('_', ' ')} (or it was deleted).",
            hint="Retry the validate step after the systems are configured.",
        )
    return system


def _rule(rule: str, field: str, expected: Any, actual: Any, message: str) -> dict[str, Any]:
    return {"rule": rule, "field": field, "expected": expected, "actual": actual, "message": message}


def _amount(opportunity: Mapping[str, Any]) -> Decimal | None:
    try:
        return Decimal(str(opportunity.get("amount")))
    except (InvalidOperation, TypeError):
        return None


def _start_date(opportunity: Mapping[str, Any]) -> str | None:
    return opportunity.get("expected_start_date") or opportunity.get("close_date")


def _key(system: ConnectedSystem, what: str, run: WorkflowRun) -> str:
    """The idempotency key of one record the saga creates in one system."""
    return f"{what}:{system.slug}:{run.business_key.rsplit(':', 1)[-1]}"


# --- steps ---------------------------------------------------------------------------------------------


def _opportunity_reread(run: WorkflowRun) -> dict[str, Any]:
    """The opportunity as the CRM shows it now, mapped with the CRM's published mapping (a retry of validate
    sees the corrections made in the CRM); the stored one when it cannot be read or mapped."""
    opportunity = _opportunity(run)
    crm = _system(run, "crm_system")
    mapping_set = published_mapping_set(
        system_id=crm.pk, entity_name="opportunity", direction=Direction.INBOUND, legal_entity_id=None
    )
    if mapping_set is None or not opportunity.get("id"):
        return opportunity
    opportunity_id = str(opportunity["id"])
    record = workflow_call(
        run,
        crm,
        "get",
        methodcaller("get", "opportunity", opportunity_id),
        step=STEP_VALIDATE,
        entity="opportunity",
    )
    result = compiled_mapping(mapping_set.pk).map_one(record)
    if result.errors:
        return opportunity
    fresh = {**opportunity, **dict(result.output)}
    run.context = {**(run.context or {}), "opportunity": fresh}
    run.save(update_fields=["context", "updated_at"])
    return fresh


def step_validate(run: WorkflowRun) -> dict[str, Any]:
    """Contract fields, legal entity, tax jurisdiction, billing type, project template, a rate card for the
    entity and currency, and the systems the entity's projects go to."""
    retried = run.steps.filter(name=STEP_VALIDATE, attempts__gt=1).exists()
    opportunity = _opportunity_reread(run) if retried else _opportunity(run)
    failed: list[dict[str, Any]] = []
    amount = _amount(opportunity)
    if amount is None or amount <= 0:
        failed.append(
            _rule(
                "contract_value", "amount", "> 0", opportunity.get("amount"), "The contract value must be above zero."
            )
        )
    if not opportunity.get("close_date"):
        failed.append(_rule("contract_dates", "close_date", "a date", None, "The opportunity has no close date."))
    contract = (opportunity.get("custom_fields") or {}).get("contract_number")
    if not contract:
        failed.append(
            _rule(
                "contract_number",
                "custom_fields.contract_number",
                "a contract number",
                None,
                "The opportunity names no signed contract.",
            )
        )
    code = opportunity.get("legal_entity_code")
    entity = LegalEntity.objects.filter(code=code).first() if code else None
    if entity is None:
        failed.append(
            _rule(
                "legal_entity",
                "legal_entity_code",
                "a known legal entity",
                code,
                f"Legal entity {code or '(none)'} is not known to the hub.",
            )
        )
    tax = opportunity.get("tax") or {}
    jurisdiction = tax.get("jurisdiction") or (entity.tax_jurisdiction if entity else "")
    if not jurisdiction:
        failed.append(
            _rule(
                "tax_jurisdiction",
                "tax.jurisdiction",
                "a jurisdiction",
                None,
                "No tax jurisdiction is known for the project.",
            )
        )
    elif entity is not None and jurisdiction.split("-")[0] != entity.country:
        failed.append(
            _rule(
                "tax_jurisdiction",
                "tax.jurisdiction",
                f"{entity.country} (the entity's country)",
                jurisdiction,
                f"Tax jurisdiction {jurisdiction} is outside {entity.code}'s country {entity.country}.",
            )
        )
    billing = opportunity.get("billing_method") or opportunity.get("contract_type")
    if billing not in BILLING_TYPES:
        failed.append(
            _rule(
                "billing_type",
                "billing_method",
                list(BILLING_TYPES),
                billing,
                f"Billing type {billing or '(none)'} is not one the ERP knows.",
            )
        )
    template = str(opportunity.get("project_template") or "").strip()
    if not template:
        failed.append(
            _rule(
                "project_template",
                "project_template",
                "a project template",
                None,
                "The opportunity names no project template.",
            )
        )
    currency = str(opportunity.get("currency") or "")
    on_date = parse_date(str(opportunity.get("close_date") or "")) or timezone.localdate()
    card = None
    if entity is not None:
        card = (
            RateCard.objects.filter(legal_entity=entity, currency=currency, client_ref="", contract_ref="")
            .filter(rate_card_valid_on(on_date=on_date))
            .order_by("-valid_from")
            .first()
        )
        if card is None:
            failed.append(
                _rule(
                    "rate_card",
                    "currency",
                    f"a rate card of {entity.code} in {currency or '?'} on {on_date}",
                    None,
                    f"No rate card of {entity.code} in {currency or '(no currency)'} is valid on {on_date}.",
                )
            )
    systems: dict[str, str] = {}
    for role, key in (
        (SystemRole.ERP, "erp_system"),
        (SystemRole.PSA, "psa_system"),
        (SystemRole.COLLABORATION, "collab_system"),
    ):
        system = system_for(role=role, legal_entity=entity) if entity is not None else None
        if entity is not None and system is None:
            failed.append(
                _rule(
                    "target_system",
                    key,
                    f"a {role} system serving {entity.code}",
                    None,
                    f"No {role} system serves {entity.code}.",
                )
            )
        elif system is not None:
            systems[key] = system.slug
    if failed:
        raise ActivationValidationError(failed)
    assert entity is not None and card is not None
    if run.legal_entity_id != entity.pk:
        run.legal_entity = entity
        run.save(update_fields=["legal_entity", "updated_at"])
    return {
        "project_number": f"{entity.code}-P{run.pk:06d}",
        "legal_entity_code": entity.code,
        "tax_jurisdiction": jurisdiction,
        "billing_type": billing,
        "project_template": template,
        "contract_number": contract,
        "rate_card_id": card.pk,
        **systems,
    }


def _canonical_client(run: WorkflowRun) -> dict[str, Any]:
    """The opportunity's account as a canonical client: read from the CRM and mapped with the CRM's published
    client mapping, or the opportunity's client reference when there is none."""
    opportunity = _opportunity(run)
    reference = opportunity.get("client") or {}
    account_id = str(reference.get("client_id") or "")
    if not account_id:
        raise HubValidationError("The opportunity names no client.", errors=[{"field": "client.client_id"}])
    entity = run.legal_entity
    canonical: dict[str, Any] = {
        "id": account_id,
        "name": reference.get("client_name") or account_id,
        "status": "active",
    }
    crm = _system(run, "crm_system")
    mapping_set = published_mapping_set(
        system_id=crm.pk,
        entity_name="client",
        direction=Direction.INBOUND,
        legal_entity_id=entity.pk if entity else None,
    )
    if mapping_set is not None:
        record = workflow_call(
            run,
            crm,
            "get",
            methodcaller("get", "client", account_id),
            step=STEP_ENSURE_CLIENT,
            entity="client",
        )
        result = compiled_mapping(mapping_set.pk).map_one(record)
        if not result.errors and result.output.get("name"):
            canonical = dict(result.output)
    canonical["id"] = account_id
    if entity is not None:
        canonical["contracting_legal_entity_code"] = entity.code
        canonical.setdefault("billing_currency", entity.base_currency)
    return canonical


def step_ensure_client(run: WorkflowRun) -> dict[str, Any]:
    """The client exists in the ERP and the PSA (created, or linked by the client master)."""
    from workflows.client_master import client_master_ensure

    canonical = _canonical_client(run)
    result = client_master_ensure(
        canonical_client=canonical,
        legal_entity=run.legal_entity,
        correlation_id=workflow_run_correlation_id(run=run),
        message=None,
    )
    return {
        "client_id": result.canonical_id,
        "client_name": canonical.get("name"),
        "erp_client_id": result.erp_id,
        "psa_client_id": result.psa_id,
        "waiting_for_client": "",
    }


def _erp_project_payload(system: ConnectedSystem, run: WorkflowRun) -> dict[str, Any]:
    opportunity, context = _opportunity(run), run.context or {}
    number = context["project_number"]
    if system.connector_type == "tryton_erp":
        # Tryton keeps the contract in project fields where it has them (dates, rates, the company's currency)
        # and the rest in the project's comment (docs/workflow-opportunity-and-client.md).
        card = RateCard.objects.filter(pk=int(context.get("rate_card_id") or 0)).first()
        contract: dict[str, Any] = {
            "name": f"{number} {opportunity.get('name', '')}".strip(),
            "client_id": int(context["erp_client_id"]),
            "code": number,
            "contract_number": context.get("contract_number", ""),
            "opportunity_ref": str(opportunity.get("id") or ""),
            "legal_entity": context["legal_entity_code"],
            "billing_type": context["billing_type"],
            "contract_value": str(_amount(opportunity)),
            "currency": opportunity.get("currency"),
            "starts_on": _start_date(opportunity),
            "ends_on": opportunity.get("expected_end_date"),
        }
        if card is not None:
            contract["rate_card"] = card.name
            contract["rates"] = [
                {"role": line.role, "bill_rate": str(line.bill_rate)} for line in card.lines.order_by("role")
            ]
        return {key: value for key, value in contract.items() if value not in (None, "")}
    payload: dict[str, Any] = {
        "client_id": int(context["erp_client_id"]),
        "code": number,
        "name": opportunity.get("name") or number,
        "legal_entity": context["legal_entity_code"],
        "currency": opportunity.get("currency"),
        "billing_type": context["billing_type"],
        "contract_value": str(_amount(opportunity)),
        "external_ref": str(opportunity.get("id")),
    }
    if _start_date(opportunity):
        payload["starts_on"] = _start_date(opportunity)
    if opportunity.get("expected_end_date"):
        payload["ends_on"] = opportunity["expected_end_date"]
    return payload


def step_create_erp_project(run: WorkflowRun) -> dict[str, Any]:
    """The financial project in the legal entity's ERP, cross-referenced under the project number."""
    erp = _system(run, "erp_system")
    number = run.context["project_number"]
    payload, key = _erp_project_payload(erp, run), _key(erp, "project", run)
    result = workflow_call(
        run,
        erp,
        "upsert",
        methodcaller("upsert", PROJECT_ENTITY, payload, key),
        step=STEP_CREATE_ERP_PROJECT,
        entity=PROJECT_ENTITY,
        key=key,
    )
    xref_set(system=erp, entity=PROJECT_ENTITY, canonical_id=number, external_id=result.external_id)
    return {"erp_project_id": result.external_id}


def step_create_psa_project(run: WorkflowRun) -> dict[str, Any]:
    """The delivery project in the PSA, carrying the ERP project's id as its external reference."""
    psa = _system(run, "psa_system")
    opportunity, context = _opportunity(run), run.context
    amount = _amount(opportunity)
    payload: dict[str, Any] = {
        "client_id": int(context["psa_client_id"]),
        "name": opportunity.get("name") or context["project_number"],
        "code": context["project_number"],
        "is_billable": context["billing_type"] != "non_billable",
        "bill_by": "Project",
        "notes": f"ERP project {context['erp_project_id']} in {context['erp_system']}; "
        f"opportunity {opportunity.get('id')}",
        "external_reference": str(context["erp_project_id"]),
    }
    if amount is not None:
        payload["budget"] = float(amount)
    if _start_date(opportunity):
        payload["starts_on"] = _start_date(opportunity)
    key = _key(psa, "project", run)
    result = workflow_call(
        run,
        psa,
        "upsert",
        methodcaller("upsert", PROJECT_ENTITY, payload, key),
        step=STEP_CREATE_PSA_PROJECT,
        entity=PROJECT_ENTITY,
        key=key,
    )
    xref_set(system=psa, entity=PROJECT_ENTITY, canonical_id=context["project_number"], external_id=result.external_id)
    return {"psa_project_id": result.external_id}


def step_create_workspace(run: WorkflowRun) -> dict[str, Any]:
    """The delivery team's workspace in the collaboration suite."""
    collab = _system(run, "collab_system")
    opportunity, context = _opportunity(run), run.context
    payload = {
        "client_name": context.get("client_name") or "",
        "project_name": opportunity.get("name") or context["project_number"],
        "code": context["project_number"],
        "description": f"Delivery workspace of {context['project_number']}",
    }
    key = _key(collab, "workspace", run)
    result = workflow_call(
        run,
        collab,
        "upsert",
        methodcaller("upsert", PROJECT_ENTITY, payload, key),
        step=STEP_CREATE_WORKSPACE,
        entity=PROJECT_ENTITY,
        key=key,
    )
    xref_set(
        system=collab, entity=PROJECT_ENTITY, canonical_id=context["project_number"], external_id=result.external_id
    )
    return {"workspace_id": result.external_id}


def staffing_release_check(*, run: WorkflowRun) -> str:
    """The ERP project's id when staffing may be released: its cross-reference exists and the ERP shows the
    project active; StaffingRefusedError otherwise."""
    erp = _system(run, "erp_system")
    number = (run.context or {}).get("project_number", "")
    erp_id = xref_get(system=erp, entity=PROJECT_ENTITY, canonical_id=number) if number else None
    if not erp_id:
        raise StaffingRefusedError(
            f"Staffing of {number or 'the project'} is not released: no ERP project is cross-referenced in {erp.slug}.",
            hint="Retry create_erp_project first.",
        )
    try:
        record = workflow_call(
            run,
            erp,
            "get",
            methodcaller("get", PROJECT_ENTITY, erp_id),
            step=STEP_RELEASE_STAFFING,
            entity=PROJECT_ENTITY,
        )
    except ConnectorError as exc:
        if exc.status_code == 404:
            raise StaffingRefusedError(
                f"Staffing of {number} is not released: ERP project {erp_id} does not exist in {erp.slug}.",
                hint="Recreate the ERP project (retry create_erp_project after removing the stale cross-reference).",
            ) from exc
        raise
    status = str(record.get("status") or "active")
    if status != "active":
        raise StaffingRefusedError(
            f"Staffing of {number} is not released: ERP project {erp_id} is {status}.",
            hint="Reopen the project in the ERP, then retry release_staffing.",
        )
    return str(erp_id)


def step_release_staffing(run: WorkflowRun) -> dict[str, Any]:
    """Release the PSA project's staffing, only once the ERP project is confirmed."""
    erp_id = staffing_release_check(run=run)
    psa = _system(run, "psa_system")
    if not connector_offers(psa, "release_staffing"):
        raise ConnectorCapabilityError(f"The connector of {psa.slug} cannot release staffing.")
    project_id = str(run.context["psa_project_id"])
    record: dict[str, Any] = workflow_call(
        run,
        psa,
        "release_staffing",
        methodcaller("release_staffing", project_id),
        step=STEP_RELEASE_STAFFING,
        entity=PROJECT_ENTITY,
    )
    return {"staffing_status": record.get("staffing_status", "released"), "staffing_erp_project_id": erp_id}


def _finance_recipients() -> list[str]:
    users = get_user_model().objects.filter(groups__name=roles.FINANCE_APPROVER, is_active=True).exclude(email="")
    return sorted(set(users.values_list("email", flat=True)))


def finance_notify(*, run: WorkflowRun, subject: str, body: str) -> FinanceNotification:
    """A notification row finance sees in the admin (Workflows → Finance notifications), and an e-mail to the
    finance approvers; once per run and subject."""
    existing = FinanceNotification.objects.filter(workflow_run=run, subject=subject[:255]).first()
    if existing is not None:
        return existing
    recipients = _finance_recipients()
    notification = FinanceNotification(
        workflow_run=run,
        legal_entity=run.legal_entity,
        subject=subject[:255],
        body=body,
        project_number=(run.context or {}).get("project_number", ""),
        amount=run.amount,
        currency=run.currency,
        emailed_to=recipients,
    )
    notification.full_clean()
    notification.save()
    if recipients:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients, fail_silently=True)
    return notification


def step_publish_to_crm(run: WorkflowRun) -> dict[str, Any]:
    """Write the project number and status back to the opportunity, and tell finance."""
    crm = _system(run, "crm_system")
    opportunity, context = _opportunity(run), run.context
    changes = {
        "Project_Number__c": context["project_number"],
        "Activation_Status__c": CRM_ACTIVATED,
        "ERP_Project_Id__c": str(context["erp_project_id"]),
    }
    if not connector_offers(crm, "update_record"):
        raise ConnectorCapabilityError(f"The connector of {crm.slug} cannot update an opportunity by id.")
    opportunity_id = str(opportunity["id"])
    workflow_call(
        run,
        crm,
        "update_record",
        methodcaller("update_record", "opportunity", opportunity_id, changes),
        step=STEP_PUBLISH_TO_CRM,
        entity="opportunity",
    )
    notification = finance_notify(
        run=run,
        subject=f"Project {context['project_number']} activated: {opportunity.get('name', '')}"[:255],
        body=(
            f"Opportunity {opportunity.get('id')} ({opportunity.get('name', '')}) was won and activated.\n"
            f"Legal entity: {context['legal_entity_code']}; contract {context.get('contract_number', '')}; "
            f"value {run.amount} {run.currency}; billing {context['billing_type']}.\n"
            f"ERP project {context['erp_project_id']} ({context['erp_system']}), PSA project "
            f"{context['psa_project_id']} ({context['psa_system']}), workspace {context.get('workspace_id', '')}."
        ),
    )
    return {"crm_activation_status": CRM_ACTIVATED, "finance_notification_id": notification.pk}


STEP_FUNCTIONS: dict[str, Callable[[WorkflowRun], dict[str, Any]]] = {
    STEP_VALIDATE: step_validate,
    STEP_ENSURE_CLIENT: step_ensure_client,
    STEP_CREATE_ERP_PROJECT: step_create_erp_project,
    STEP_CREATE_PSA_PROJECT: step_create_psa_project,
    STEP_CREATE_WORKSPACE: step_create_workspace,
    STEP_RELEASE_STAFFING: step_release_staffing,
    STEP_PUBLISH_TO_CRM: step_publish_to_crm,
}


# --- running and undoing -------------------------------------------------------------------------------


def _hold_at_step(run: WorkflowRun, name: str, exc: HubError, error: str) -> None:
    workflow_run_hold(
        run=run,
        category=ExceptionCategory.ACTIVATION_HELD,
        reason=f"Step {name} failed: {error}",
        step=name,
        failed_rules=getattr(exc, "failed_rules", None)
        or [_rule(name, "", "the step completes", type(exc).__name__, exc.detail)],
        external_id=str(_opportunity(run).get("id") or ""),
        payload_snapshot=_opportunity(run),
        suggested_action="Fix the cause, then retry the step; or compensate to undo what was created; or cancel.",
    )


def opportunity_to_project_run(*, run_id: int) -> str | None:
    """Carry a running saga on from its first step that is not done; returns the run's status (None: another
    worker has it, or it is not running). A step that failed retryably (the system refused the call while
    paused or its circuit open, a timeout, a 5xx) leaves the run running and raises its ConnectorError: the task
    tries again after the policy's delay, and `opportunity_to_project_give_up` holds the run once the policy's
    attempts are spent. Any other failure holds the run at the step on an activation_held item."""
    with workflow_run_lock(run_id=run_id) as acquired:
        if not acquired:
            return None
        run = (
            WorkflowRun.objects.select_related("legal_entity")
            .filter(pk=run_id, flow=Flow.OPPORTUNITY_TO_PROJECT)
            .first()
        )
        if run is None or run.status != RunStatus.RUNNING:
            return None
        done = set(run.steps.filter(status__in=(StepStatus.DONE, StepStatus.SKIPPED)).values_list("name", flat=True))
        for position, name in enumerate(OPPORTUNITY_STEPS, start=1):
            if name in done:
                continue
            step = workflow_step_begin(run=run, name=name, position=position)
            try:
                # No transaction around a step: its calls go over HTTP, and each write below commits on its own.
                result = STEP_FUNCTIONS[name](run)
            except DuplicateSuspectHeld as exc:
                workflow_step_fail(
                    step=step, error=f"Waiting for the duplicate decision on exception item #{exc.item_id}."
                )
                run.context = {**(run.context or {}), "waiting_for_client": exc.canonical_id}
                run.save(update_fields=["context", "updated_at"])
                workflow_run_wait(
                    run=run, step=name, reason=f"The client waits for a duplicate decision (item #{exc.item_id})."
                )
                return run.status
            except HubError as exc:
                error = exc.detail + (f" {exc.hint}" if exc.hint else "")
                workflow_step_fail(step=step, error=error)
                if isinstance(exc, ConnectorError) and exc.retryable:
                    raise  # the run stays running at this step; the task tries it again
                _hold_at_step(run, name, exc, error)
                return run.status
            workflow_step_done(step=step, result=result)
            run.refresh_from_db()
        workflow_run_finish(run=run)
        return run.status


def opportunity_to_project_give_up(*, run_id: int, error: ConnectorError) -> WorkflowRun | None:
    """A step kept failing retryably until the policy's attempts were spent: hold the run at that step on an
    activation_held item, as any failed step, for finance to retry, compensate or cancel."""
    with workflow_run_lock(run_id=run_id) as acquired:
        run = WorkflowRun.objects.filter(pk=run_id, flow=Flow.OPPORTUNITY_TO_PROJECT).first()
        if not acquired or run is None or run.status != RunStatus.RUNNING:
            return run
        step = run.steps.filter(status=StepStatus.FAILED).order_by("-position").first()
        name = step.name if step is not None else run.current_step
        detail = error.detail + (f" {error.hint}" if error.hint else "")
        attempts = f" (tried {step.attempts} times)" if step is not None else ""
        _hold_at_step(run, name, error, f"{detail}{attempts}")
        return run


def opportunity_runs_resume_for_client(*, canonical_id: str) -> int:
    """Resume the sagas that waited for this client's duplicate decision; returns how many."""
    from workflows.tasks import opportunity_to_project_run_task

    runs = WorkflowRun.objects.filter(
        flow=Flow.OPPORTUNITY_TO_PROJECT, status=RunStatus.HELD, context__waiting_for_client=canonical_id
    )
    count = 0
    for run in runs:
        workflow_run_resume(run=run)
        enqueue_on_commit(opportunity_to_project_run_task, run.pk, queue="delivery")
        count += 1
    return count


def opportunity_runs_hold_for_rejected_client(*, canonical_id: str, reason: str) -> int:
    """Hold the sagas that waited for a client a person rejected, on an activation item of their own."""
    runs = WorkflowRun.objects.filter(
        flow=Flow.OPPORTUNITY_TO_PROJECT, status=RunStatus.HELD, context__waiting_for_client=canonical_id
    )
    count = 0
    for run in runs:
        workflow_run_hold(
            run=run,
            category=ExceptionCategory.ACTIVATION_HELD,
            reason=f"Step {STEP_ENSURE_CLIENT} failed: the client was rejected in the duplicate check ({reason}).",
            step=STEP_ENSURE_CLIENT,
            external_id=str(_opportunity(run).get("id") or ""),
            suggested_action="Correct the account in the CRM and retry, or cancel the activation.",
        )
        count += 1
    return count


# What compensation undoes per step: (system key in the context, id key, key prefix, how).
UNDO: dict[str, tuple[str, str, str, str]] = {
    STEP_CREATE_WORKSPACE: ("collab_system", "workspace_id", "workspace", "delete the workspace"),
    STEP_CREATE_PSA_PROJECT: ("psa_system", "psa_project_id", "project", "archive the PSA project"),
    STEP_CREATE_ERP_PROJECT: ("erp_system", "erp_project_id", "project", "close the ERP project"),
}


def _undo(run: WorkflowRun, step: WorkflowStep) -> str:
    context = run.context or {}
    undo_step = f"{step.name}:compensate"
    if step.name == STEP_PUBLISH_TO_CRM and step.status == StepStatus.DONE:
        crm = _system(run, "crm_system")
        if not connector_offers(crm, "update_record"):
            raise ConnectorCapabilityError(f"The connector of {crm.slug} cannot update the opportunity.")
        opportunity_id = str(_opportunity(run)["id"])
        workflow_call(
            run,
            crm,
            "update_record",
            methodcaller("update_record", "opportunity", opportunity_id, {"Activation_Status__c": CRM_COMPENSATED}),
            step=undo_step,
            entity="opportunity",
        )
        return "opportunity marked 'Activation undone' in the CRM"
    if step.name == STEP_RELEASE_STAFFING:
        return "staffing is withdrawn with the archived PSA project"
    if step.name not in UNDO:
        return "nothing to undo"
    system_key, id_key, prefix, how = UNDO[step.name]
    system = _system(run, system_key)
    external_id = context.get(id_key)
    if not external_id:
        # A failed step may still have created its record (the answer was lost): look it up by its key.
        key = _key(system, prefix, run)
        found = workflow_call(
            run,
            system,
            "find",
            methodcaller("find", PROJECT_ENTITY, key),
            step=undo_step,
            entity=PROJECT_ENTITY,
            key=key,
        )
        external_id = found["id"] if found else None
    if not external_id:
        return "nothing was created"
    operation = "void"
    if step.name == STEP_CREATE_PSA_PROJECT and connector_offers(system, "archive"):
        operation = "archive"
    elif step.name == STEP_CREATE_WORKSPACE and connector_offers(system, "delete"):
        operation = "delete"
    record_id = str(external_id)
    workflow_call(
        run,
        system,
        operation,
        methodcaller(operation, PROJECT_ENTITY, record_id),
        step=undo_step,
        entity=PROJECT_ENTITY,
    )
    return f"{how} {external_id} in {system.slug}"


def opportunity_to_project_compensate(*, run_id: int) -> str | None:
    """Undo the completed (and the failed) steps in reverse, each as far as its system can; every step records
    compensated or compensation_failed. A run with a failed undo is held again for finance."""
    with workflow_run_lock(run_id=run_id) as acquired:
        if not acquired:
            return None
        run = WorkflowRun.objects.filter(pk=run_id, flow=Flow.OPPORTUNITY_TO_PROJECT).first()
        if run is None or run.status != RunStatus.COMPENSATING:
            return None
        failures: list[str] = []
        steps = run.steps.filter(status__in=(StepStatus.DONE, StepStatus.FAILED, StepStatus.COMPENSATION_FAILED))
        for step in sorted(steps, key=lambda s: s.position, reverse=True):
            try:
                note = _undo(run, step)
                step.status = StepStatus.COMPENSATED
            except HubError as exc:
                note = f"could not undo: {exc.detail}"
                step.status = StepStatus.COMPENSATION_FAILED
                failures.append(f"{step.name}: {exc.detail}")
            step.compensated_at = timezone.now()
            step.compensation_note = note[:2000]
            step.save(update_fields=["status", "compensated_at", "compensation_note"])
        if failures:
            workflow_run_hold(
                run=run,
                category=ExceptionCategory.ACTIVATION_HELD,
                reason="Compensation could not undo: " + "; ".join(failures),
                step=run.current_step,
                external_id=str(_opportunity(run).get("id") or ""),
                suggested_action="Undo these records by hand in their systems, then compensate again or cancel.",
            )
            return run.status
        workflow_run_finish(run=run, status=RunStatus.COMPENSATED)
        return run.status
