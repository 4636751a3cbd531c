"""Milestone to billing: a milestone the PSA completes is checked for billing eligibility, approved by finance
above the policy's threshold, billed once in the ERP as a billing event, and its billing status is published
back to the PSA milestone.

One WorkflowRun per milestone (business key `<psa slug>:milestone:<id>`, triggered at the completion time).
Steps: check_eligibility → finance_approval → create_billing_event → publish_status. The checks are the
governance rules (billing type, client acceptance, amount within the contract's remaining value, not billed
before) evaluated with lookups read from the ERP; every failure goes to finance as one policy item. The billing
event's idempotency key is derived from the run, so a retry, a replay or a second worker never bills twice.
Every call to the PSA and the ERP goes through the transport (`workflow_call`, `flow_call`): a paused system or
an open circuit refuses the call before anything is sent, and the step is tried again after the delay of the
flow's sync policy (workflows.tasks), like any retryable failure, until the policy's attempts are spent.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from operator import methodcaller
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from connectors.builtin import SandboxErpConnector
from connectors.choices import SystemRole, SystemState
from connectors.http import ConnectorError, RetryableConnectorError
from connectors.models import ConnectedSystem
from connectors.registry import registry
from exception_queue.actions import ItemAction, register_item_action
from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from governance.choices import Flow
from governance.flows import register_flow_runner
from governance.models import LegalEntity, SyncPolicy
from governance.rules import (
    MISSING,
    RuleContext,
    RuleResult,
    register_rule,
    rule_get,
    value_at,
)
from governance.selectors import sync_policy_for
from integrationhub.dispatch import enqueue_on_commit
from integrationhub.errors import HubConflictError, HubError, HubValidationError
from sync.models import PollCursor
from workflows.choices import RunStatus, StepStatus
from workflows.models import WorkflowRun
from workflows.services import (
    connector_offers,
    flow_call,
    workflow_call,
    workflow_run_finish,
    workflow_run_hold,
    workflow_run_lock,
    workflow_run_start,
    workflow_step_begin,
    workflow_step_done,
    workflow_step_fail,
)

logger = logging.getLogger(__name__)

FLOW = Flow.MILESTONE_BILLING
STEP_CHECK = "check_eligibility"
STEP_APPROVAL = "finance_approval"
STEP_BILL = "create_billing_event"
STEP_PUBLISH = "publish_status"
STEPS = (STEP_CHECK, STEP_APPROVAL, STEP_BILL, STEP_PUBLISH)
COMPLETED = "completed"
BILLABLE_TYPES = ["milestone", "fixed_fee"]
# The pull's own cursor: a scheduled engine pull of PSA milestones (if one is ever configured) keeps its own.
CURSOR_ENTITY = "milestone:billing"
BILLED = "billed"  # the PSA milestone's billing_status once the ERP holds its billing event

# Every run evaluates these; a policy's entry of the same rule overrides its params, other entries are added.
DEFAULT_RULES: list[dict[str, Any]] = [
    {"rule": "billing_type_allowed", "params": {}},
    {"rule": "client_accepted", "params": {}},
    {"rule": "amount_within_contract_remaining", "params": {}},
    {"rule": "not_billed_before", "params": {}},
]


@register_rule(
    "billing_type_allowed",
    label="Contract billing type allows milestone billing",
    description="The contract is billed by milestone or as a fixed fee (time-and-materials work is billed from time).",
    params_schema={
        "type": "object",
        "properties": {
            "field": {"type": "string", "minLength": 1, "default": "billing_type"},
            "allowed": {"type": "array", "items": {"type": "string"}, "minItems": 1, "default": BILLABLE_TYPES},
        },
        "additionalProperties": False,
    },
)
def billing_type_allowed(record: Mapping[str, Any], params: Mapping[str, Any], context: RuleContext) -> RuleResult:
    path, allowed = params["field"], list(params["allowed"])
    value = value_at(record, path)
    actual = None if value is MISSING else value
    if actual in allowed:
        return RuleResult(True, "billing_type_allowed", path, allowed, actual)
    return RuleResult(
        False,
        "billing_type_allowed",
        path,
        allowed,
        actual,
        f"The contract is billed as {actual!r}, not by {' or '.join(allowed)}; bill this work from time, or "
        "correct the contract's billing type in the ERP, then retry.",
    )


POST_INVOICE_RULE = "post_billing_invoice"


@register_rule(
    POST_INVOICE_RULE,
    label="Post the milestone's invoice in the ERP",
    description="Not a check (it always passes): with this entry in the flow's policy, the customer invoice a "
    "milestone creates in an ERP that keeps invoices (Tryton) is posted at once; without it, it stays in draft "
    "for finance to review and post there.",
    params_schema={
        "type": "object",
        "properties": {"post": {"type": "boolean", "default": True}},
        "additionalProperties": False,
    },
)
def post_billing_invoice(record: Mapping[str, Any], params: Mapping[str, Any], context: RuleContext) -> RuleResult:
    return RuleResult(True, POST_INVOICE_RULE, "", bool(params["post"]), bool(params["post"]))


def billing_invoice_posted(policy: SyncPolicy | None) -> bool:
    """Whether the flow's policy says to post the milestone's invoice (its post_billing_invoice entry)."""
    for entry in (policy.validation_rules if policy is not None else None) or []:
        if isinstance(entry, Mapping) and entry.get("rule") == POST_INVOICE_RULE:
            return bool((entry.get("params") or {}).get("post", True))
    return False


# --- trigger --------------------------------------------------------------------------------------------


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)).quantize(Decimal("0.01")) if value not in (None, "") else None
    except (InvalidOperation, ValueError):
        return None


def _when(value: Any) -> datetime.datetime | None:
    parsed = parse_datetime(value) if isinstance(value, str) else None
    if parsed is not None and timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, datetime.UTC)
    return parsed


def milestone_business_key(*, system: ConnectedSystem, milestone_id: Any) -> str:
    """`<psa slug>:milestone:<id>`: what a run is about, unique per flow."""
    return f"{system.slug}:milestone:{milestone_id}"


def milestone_billing_trigger(
    *, system: ConnectedSystem, record: Mapping[str, Any], requested_by: Any = None
) -> tuple[WorkflowRun | None, bool]:
    """Start the run of a completed PSA milestone (as the PSA lists it); (None, False) for one not completed,
    the existing run and False for one already started, so a webhook sent twice or a re-pull starts nothing."""
    if str(record.get("status") or "") != COMPLETED or record.get("id") in (None, ""):
        return None, False
    project = record.get("project") if isinstance(record.get("project"), Mapping) else {}
    context = {
        "psa_system_id": system.pk,
        "milestone_id": str(record["id"]),
        "milestone_name": str(record.get("name") or ""),
        "psa_project_id": str((project or {}).get("id") or record.get("project_id") or ""),
        "client_accepted": record.get("client_accepted"),
        "requested_by_id": getattr(requested_by, "pk", None),
    }
    run, created = workflow_run_start(
        flow=FLOW,
        business_key=milestone_business_key(system=system, milestone_id=record["id"]),
        context=context,
        amount=_decimal(record.get("amount")),
        currency=str(record.get("currency") or ""),
        triggered_at=_when(record.get("completed_at")) or timezone.now(),
    )
    if created:
        from workflows.tasks import milestone_billing_advance_task

        enqueue_on_commit(milestone_billing_advance_task, run.pk, queue="delivery")
    return run, created


def milestone_billing_request(*, system: ConnectedSystem, milestone_id: str, user: Any) -> WorkflowRun:
    """A person asks to bill a completed milestone now (instead of waiting for the pull); they become the
    requester, who may not approve it themselves."""
    try:
        record = flow_call(
            system,
            "get",
            methodcaller("get", "milestone", str(milestone_id)),
            flow=FLOW,
            step="request",
            sync_policy=sync_policy_for(flow=FLOW),
            entity="milestone",
            context={"milestone_id": str(milestone_id), "requested_by": getattr(user, "pk", None)},
        )
    except ConnectorError as exc:
        raise HubConflictError(f"The PSA did not return milestone {milestone_id}: {exc.detail}") from exc
    with transaction.atomic():
        run, _ = milestone_billing_trigger(system=system, record=record, requested_by=user)
    if run is None:
        raise HubValidationError(
            f"Milestone {milestone_id} is {record.get('status')!r}; only a completed milestone is billed.",
            errors=[{"field": "milestone_id", "message": "The milestone is not completed."}],
        )
    return run


def milestone_billing_pull(
    *, system: ConnectedSystem, max_pages: int | None = None, policy: SyncPolicy | None = None
) -> int:
    """Read the PSA's changed milestones from the pull's cursor and start a run for each completed one; the
    runs and the cursor move commit together per page. Returns how many runs were started."""
    cursor_row, _ = PollCursor.objects.get_or_create(system=system, entity=CURSOR_ENTITY)
    policy = policy or sync_policy_for(flow=FLOW)
    started = pages = 0
    while max_pages is None or pages < max_pages:
        batch = flow_call(
            system,
            "fetch_changes",
            methodcaller("fetch_changes", "milestone", cursor_row.cursor or None),
            flow=FLOW,
            step="pull",
            sync_policy=policy,
            entity="milestone",
        )
        with transaction.atomic():
            for record in batch.records:
                _, created = milestone_billing_trigger(system=system, record=record)
                started += int(created)
            PollCursor.objects.filter(pk=cursor_row.pk).update(
                cursor=batch.next_cursor or "", last_run_at=timezone.now(), last_outcome="complete"
            )
        cursor_row.cursor = batch.next_cursor or ""
        pages += 1
        if not batch.has_more:
            break
    return started


@register_flow_runner(FLOW)
def milestone_billing_scheduled(policy: SyncPolicy) -> dict[str, int]:
    """What the flow's scheduled sync policy starts: a pull of every active PSA serving its legal entity."""
    systems = ConnectedSystem.objects.filter(role=SystemRole.PSA, state=SystemState.ACTIVE)
    if policy.legal_entity_id:
        systems = systems.filter(legal_entities=policy.legal_entity_id)
    started = {system.slug: milestone_billing_pull(system=system, policy=policy) for system in systems.distinct()}
    started["resumed"] = milestone_billing_resume_stalled()
    return started


# --- the steps ------------------------------------------------------------------------------------------


def _rule_entries(policy: SyncPolicy | None) -> list[dict[str, Any]]:
    entries = {entry["rule"]: dict(entry) for entry in DEFAULT_RULES}
    for entry in (policy.validation_rules if policy is not None else None) or []:
        entries[entry["rule"]] = {"rule": entry["rule"], "params": entry.get("params") or {}}
    return list(entries.values())


def _erp_contract(run: WorkflowRun, code: str) -> tuple[ConnectedSystem, dict[str, Any]]:
    """The ERP system and project (the contract) with `code`, the ERP serving the project's legal entity.
    Several systems may front one ERP (one per legal entity, same base URL): it is asked once. An ERP that
    cannot be asked now (paused, circuit open, unreachable, answering 5xx) is passed over; when no other has the
    contract, the check waits for it (a retryable error) instead of reporting the contract missing. So one entity's
    ERP being down never stops another entity's milestones."""
    candidates = ConnectedSystem.objects.filter(role=SystemRole.ERP)
    seen: set[tuple[str, str]] = set()
    unavailable: RetryableConnectorError | None = None
    for system in candidates.prefetch_related("legal_entities").order_by("id"):
        if connector_offers(system, "contract_find"):
            # Tryton: one system per company, so the project found is the system's own.
            try:
                found = workflow_call(
                    run,
                    system,
                    "contract_find",
                    methodcaller("contract_find", code),
                    step=STEP_CHECK,
                    entity="project",
                )
            except RetryableConnectorError as exc:
                unavailable = unavailable or exc
                continue
            if found:
                served = [entity.code for entity in system.legal_entities.all()]
                return system, {**found, "legal_entity": found.get("legal_entity") or (served[0] if served else "")}
            continue
        if not issubclass(registry.get(system.connector_type), SandboxErpConnector):
            continue  # contracts (projects with a billing type and a value) are read from REST ERPs of this type
        where = (system.base_url, system.connector_type)
        body: dict[str, Any] = {}
        if where not in seen:
            try:
                body = workflow_call(
                    run,
                    system,
                    "call_json",
                    methodcaller("call_json", "GET", "/projects", params={"code": code, "limit": 10}),
                    step=STEP_CHECK,
                    entity="project",
                )
            except RetryableConnectorError as exc:
                unavailable = unavailable or exc
                continue
        seen.add(where)
        codes = {entity.code for entity in system.legal_entities.all()}
        for project in body.get("results") or []:
            if project.get("code") == code and (not codes or project.get("legal_entity") in codes):
                return system, project
        # The project belongs to another legal entity of the same ERP: bill it through that entity's system.
        if body.get("results"):
            for other in candidates.exclude(pk=system.pk).filter(base_url=system.base_url):
                other_codes = {entity.code for entity in other.legal_entities.all()}
                for project in body["results"]:
                    if project.get("code") == code and project.get("legal_entity") in other_codes:
                        return other, project
    if unavailable is not None:
        raise unavailable
    raise HubConflictError(
        f"No ERP has a project (contract) with code {code!r}; create the project in the ERP, then retry.",
        hint="The PSA project's code must equal the ERP project's code.",
    )


def _billing_events(run: WorkflowRun, erp: ConnectedSystem, project_id: Any) -> list[dict[str, Any]]:
    if connector_offers(erp, "billing_events"):
        return list(
            workflow_call(
                run,
                erp,
                "billing_events",
                methodcaller("billing_events", project_id),
                step=STEP_CHECK,
                entity="billing_event",
            )
        )
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"project_id": project_id, "limit": 1000}
        if cursor:
            params["cursor"] = cursor
        body = workflow_call(
            run,
            erp,
            "call_json",
            methodcaller("call_json", "GET", "/billing-events", params=params),
            step=STEP_CHECK,
            entity="billing_event",
        )
        rows += body.get("results") or []
        if not body.get("has_more"):
            return rows
        cursor = body.get("next_cursor")


def milestone_eligibility(*, run: WorkflowRun) -> tuple[list[RuleResult], dict[str, Any]]:
    """Evaluate every billing check of the run's milestone with lookups read from the PSA and the ERP;
    returns the results and what the next steps need (the ERP system and project, the legal entity)."""
    ctx = run.context
    psa = ConnectedSystem.objects.get(pk=ctx["psa_system_id"])
    milestone = workflow_call(
        run,
        psa,
        "get",
        methodcaller("get", "milestone", ctx["milestone_id"]),
        step=STEP_CHECK,
        entity="milestone",
    )
    project = (
        workflow_call(
            run,
            psa,
            "get",
            methodcaller("get", "project", ctx["psa_project_id"]),
            step=STEP_CHECK,
            entity="project",
        )
        if ctx.get("psa_project_id")
        else {}
    )
    code = str(project.get("code") or "")
    if not code:
        raise HubConflictError(
            f"PSA project {ctx.get('psa_project_id')} has no code, so its contract cannot be found in the ERP.",
            hint="Give the PSA project the ERP project's code, then retry.",
        )
    erp, contract = _erp_contract(run, code)
    events = _billing_events(run, erp, contract["id"])
    billed_total = sum((_decimal(e.get("amount")) or Decimal("0")) for e in events)
    contract_value = _decimal(contract.get("contract_value"))
    remaining = None if contract_value is None else contract_value - billed_total
    billed = {str(e.get("milestone_ref")) for e in events if e.get("milestone_ref")}
    record = {
        "milestone_id": run.business_key,
        "amount": str(_decimal(milestone.get("amount")) or ""),
        "currency": milestone.get("currency"),
        "contract_id": code,
        "billing_type": contract.get("billing_type"),
        "client_acceptance": milestone.get("client_accepted"),
    }
    rule_context = RuleContext(
        billed_milestone_ids=billed, contract_remaining=lambda cid: remaining if cid == code else None
    )
    entity = LegalEntity.objects.filter(code=contract.get("legal_entity")).first()
    policy = sync_policy_for(flow=FLOW, legal_entity=entity)
    results = [rule_get(e["rule"]).run(record, e.get("params") or {}, rule_context) for e in _rule_entries(policy)]
    facts = {
        "erp_system_id": erp.pk,
        "erp_project_id": contract["id"],
        "contract_code": code,
        "legal_entity_code": contract.get("legal_entity") or "",
        "contract_remaining": str(remaining) if remaining is not None else None,
        "amount": record["amount"],
        "currency": record["currency"] or run.currency,
    }
    return results, facts


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    return value


def _failed_rules(results: list[RuleResult]) -> list[dict[str, Any]]:
    return [
        {
            "rule": r.rule,
            "field": r.field,
            "expected": _jsonable(r.expected),
            "actual": _jsonable(r.actual),
            "message": r.message,
        }
        for r in results
        if not r.passed
    ]


def _step_check(run: WorkflowRun) -> bool:
    step = workflow_step_begin(run=run, name=STEP_CHECK, position=1)
    try:
        results, facts = milestone_eligibility(run=run)
    except (ConnectorError, HubError) as exc:
        detail = getattr(exc, "detail", str(exc))
        if isinstance(exc, ConnectorError) and exc.retryable:
            workflow_step_fail(step=step, error=detail)
            raise  # the task retries with backoff; the failed attempt stays on the step
        with transaction.atomic():
            workflow_step_fail(step=step, error=detail)
            workflow_run_hold(
                run=run,
                category=ExceptionCategory.VALIDATION,
                reason=f"The billing checks could not run: {detail}",
                step=STEP_CHECK,
                external_id=run.context.get("milestone_id", ""),
                suggested_action="Fix the source record or the system, then retry the step.",
            )
        return False
    failed = _failed_rules(results)
    with transaction.atomic():
        entity = LegalEntity.objects.filter(code=facts["legal_entity_code"]).first()
        run.legal_entity = entity
        amount = _decimal(facts["amount"])
        if amount is not None:
            run.amount = amount
        run.currency = (facts.get("currency") or run.currency or "")[:3]
        run.save(update_fields=["legal_entity", "amount", "currency", "updated_at"])
        if failed:
            workflow_step_fail(step=step, error="; ".join(f["message"] for f in failed))
            workflow_run_hold(
                run=run,
                category=ExceptionCategory.POLICY,
                reason="; ".join(f["message"] for f in failed),
                step=STEP_CHECK,
                failed_rules=failed,
                payload_snapshot=facts,
                external_id=run.context.get("milestone_id", ""),
                suggested_action="Correct the milestone or the contract in its system and retry, or reject it.",
            )
            return False
        workflow_step_done(step=step, result=facts)
    return True


def _step_approval(run: WorkflowRun) -> bool:
    """True when the run may bill now; False when it waits for finance (the approval item was opened)."""
    if run.context.get("approved"):
        return True
    policy = sync_policy_for(flow=FLOW, legal_entity=run.legal_entity)
    threshold = policy.approval_threshold_amount if policy is not None else None
    amount = run.amount or Decimal("0")
    with transaction.atomic():
        step = workflow_step_begin(run=run, name=STEP_APPROVAL, position=2)
        if policy is None or threshold is None or amount < threshold:
            workflow_step_done(step=step, result={"approval": "not needed"}, status=StepStatus.SKIPPED)
            return True
        second = policy.second_approval_threshold_amount
        required = 2 if second is not None and amount >= second else 1
        note = ""
        if policy.approval_currency and run.currency and run.currency != policy.approval_currency:
            note = f" (in {run.currency}; the threshold is in {policy.approval_currency}, so it is held to be safe)"
        from django.contrib.auth import get_user_model

        requester = get_user_model().objects.filter(pk=run.context.get("requested_by_id")).first()
        workflow_run_hold(
            run=run,
            category=ExceptionCategory.APPROVAL_REQUIRED,
            reason=f"Milestone billing of {amount} {run.currency} is at or above the approval threshold "
            f"{threshold} {policy.approval_currency}{note}.",
            step=STEP_APPROVAL,
            status=RunStatus.AWAITING_APPROVAL,
            message=None,  # approving resumes the run; there is no message to release
            required_approvals=required,
            requested_by=requester,
            external_id=run.context.get("milestone_id", ""),
            payload_snapshot={k: run.context.get(k) for k in ("milestone_name", "contract_code", "contract_remaining")},
            suggested_action="Approve to bill, or reject with a reason"
            + (" (two different approvers are needed above the second threshold)." if required == 2 else "."),
        )
    return False


def billing_event_key(run: WorkflowRun) -> str:
    """The billing event's idempotency key: derived from the run, so it is the same on every retry."""
    return f"hub-billing-{run.flow}-{run.pk}"


def _step_bill(run: WorkflowRun) -> bool:
    step = workflow_step_begin(run=run, name=STEP_BILL, position=3)
    ctx = run.context
    erp = ConnectedSystem.objects.get(pk=ctx["erp_system_id"])
    payload = {
        "project_id": ctx["erp_project_id"],
        "date": timezone.localdate().isoformat(),
        "amount": str(run.amount),
        "currency": run.currency,
        "description": f"Milestone: {ctx.get('milestone_name', '')}"[:200],
        "milestone_ref": run.business_key,
        "source_ref": f"hub:workflow-run:{run.pk}",
    }
    if connector_offers(erp, "contract_find") and billing_invoice_posted(
        sync_policy_for(flow=FLOW, legal_entity=run.legal_entity)
    ):
        payload["post"] = True  # an ERP that keeps invoices: the policy says whether this one is posted now
    key = billing_event_key(run)
    try:
        result = workflow_call(
            run,
            erp,
            "upsert",
            methodcaller("upsert", "billing_event", payload, key),
            step=STEP_BILL,
            entity="billing_event",
            key=key,
        )
    except ConnectorError as exc:
        if exc.retryable:
            workflow_step_fail(step=step, error=exc.detail)
            raise  # the retry sends the same idempotency key: the ERP answers the event it may have stored
        with transaction.atomic():
            workflow_step_fail(step=step, error=exc.detail)
            workflow_run_hold(
                run=run,
                category=ExceptionCategory.TARGET_REJECTED,
                reason=f"The ERP refused the billing event: {exc.detail}",
                step=STEP_BILL,
                system=erp,
                external_id=ctx.get("milestone_id", ""),
                suggested_action="Fix the project in the ERP, then retry the step.",
            )
        return False
    workflow_step_done(
        step=step, result={"billing_event_id": result.external_id, "billing_event_created": result.created}
    )
    return True


def _step_publish(run: WorkflowRun) -> None:
    step = workflow_step_begin(run=run, name=STEP_PUBLISH, position=4)
    ctx = run.context
    psa = ConnectedSystem.objects.get(pk=ctx["psa_system_id"])
    changes = {"billing_status": BILLED, "billing_reference": f"ERP billing event {ctx.get('billing_event_id')}"}
    try:
        workflow_call(
            run,
            psa,
            "call",
            methodcaller("call", "PATCH", f"/milestones/{ctx['milestone_id']}", json=changes),
            step=STEP_PUBLISH,
            entity="milestone",
        )
    except ConnectorError as exc:
        if exc.retryable:
            workflow_step_fail(step=step, error=exc.detail)
            raise
        with transaction.atomic():
            workflow_step_fail(step=step, error=exc.detail)
            workflow_run_hold(
                run=run,
                category=ExceptionCategory.TARGET_REJECTED,
                reason=f"Billed, but the PSA refused the billing status: {exc.detail}",
                step=STEP_PUBLISH,
                system=psa,
                external_id=ctx.get("milestone_id", ""),
                suggested_action="Fix the milestone in the PSA, then retry the step (the billing is not repeated).",
            )
        return
    with transaction.atomic():
        workflow_step_done(step=step, result={"published": changes})
        workflow_run_finish(run=run)


def milestone_billing_advance(*, run_id: int) -> str | None:
    """Carry a run forward from where it stands: checks, approval, billing, publishing. One worker at a time
    per run (the run's lease, renewed while it works; the calls to the systems happen outside database
    transactions); a retryable connector error propagates so the task retries, anything a person must fix holds
    the run on an item."""
    with workflow_run_lock(run_id=run_id) as acquired:
        if not acquired:
            return None
        run = WorkflowRun.objects.filter(pk=run_id, flow=FLOW).first()
        if run is None or run.status != RunStatus.RUNNING:
            return run.status if run else None
        done = set(run.steps.filter(status__in=(StepStatus.DONE, StepStatus.SKIPPED)).values_list("name", flat=True))
        if STEP_CHECK not in done and not _step_check(run):
            return run.status
        if STEP_APPROVAL not in done and not _step_approval(run):
            return run.status
        if STEP_BILL not in done and not _step_bill(run):
            return run.status
        run.refresh_from_db()
        _step_publish(run)
        return run.status


def milestone_billing_give_up(*, run_id: int, error: str) -> WorkflowRun | None:
    """The retries of a run are spent (a system kept failing): hold it at its step for a person to retry."""
    with transaction.atomic():
        run = WorkflowRun.objects.select_for_update().filter(pk=run_id, flow=FLOW).first()
        if run is None or run.status != RunStatus.RUNNING:
            return run
        step = run.steps.filter(status=StepStatus.FAILED).order_by("-position").first()
        workflow_run_hold(
            run=run,
            category=ExceptionCategory.DEAD_LETTER,
            reason=f"Gave up after repeated failures: {error}"[:4000],
            step=step.name if step else run.current_step,
            external_id=run.context.get("milestone_id", ""),
            suggested_action="Check the system named in the error (paused, down, credentials), then retry the step.",
        )
    return run


STALLED_AFTER = datetime.timedelta(minutes=15)


def milestone_billing_resume_stalled(*, now: datetime.datetime | None = None) -> int:
    """Hand runs left running (their task was lost with a worker) to a worker again; returns how many."""
    from workflows.tasks import milestone_billing_advance_task

    cutoff = (now or timezone.now()) - STALLED_AFTER
    ids = list(
        WorkflowRun.objects.filter(flow=FLOW, status=RunStatus.RUNNING, updated_at__lt=cutoff).values_list(
            "id", flat=True
        )[:500]
    )
    for run_id in ids:
        enqueue_on_commit(milestone_billing_advance_task, run_id, queue="delivery")
    return len(ids)


# --- what finance can do with the run's items -------------------------------------------------------------


def _resume(run: WorkflowRun, **context: Any) -> None:
    run.context = {**(run.context or {}), **context}
    run.status = RunStatus.RUNNING
    run.last_error = ""
    run.save(update_fields=["context", "status", "last_error", "updated_at"])
    from workflows.tasks import milestone_billing_advance_task

    enqueue_on_commit(milestone_billing_advance_task, run.pk, queue="delivery")


@transaction.atomic
def milestone_billing_approve(*, item: ExceptionItem, user: Any, reason: str) -> ExceptionItem:
    """Approve a milestone's billing; the final approval (the second, different approver above the second
    threshold) resumes the run, which then bills. The requester and a repeated approver are refused."""
    from exception_queue.services import exception_item_approve

    item = exception_item_approve(item=item, user=user, reason=reason)
    if item.state == ExceptionState.APPROVED and item.workflow_run_id is not None:
        run = WorkflowRun.objects.select_for_update().get(pk=item.workflow_run_id)
        approvers = list(item.decisions.filter(action=DecisionAction.APPROVE).values_list("user_id", flat=True))
        step = run.steps.filter(name=STEP_APPROVAL).first()
        if step is not None:
            workflow_step_done(step=step, result={"approved_by": approvers})
        _resume(run, approved=True, approved_by=approvers)
    return item


@transaction.atomic
def milestone_billing_reject(*, item: ExceptionItem, user: Any, reason: str) -> ExceptionItem:
    """Reject the milestone's billing: the item closes and the run ends as rejected; nothing is billed."""
    from exception_queue.services import exception_item_reject

    item = exception_item_reject(item=item, user=user, reason=reason)
    if item.workflow_run_id is not None:
        run = WorkflowRun.objects.select_for_update().get(pk=item.workflow_run_id)
        if run.finished_at is None:
            workflow_run_finish(run=run, status=RunStatus.REJECTED)
    return item


@transaction.atomic
def milestone_billing_retry(*, item: ExceptionItem, user: Any, reason: str) -> ExceptionItem:
    """Run the held step again after the source was corrected (the checks are evaluated afresh)."""
    from exception_queue.services import (
        PERM_FIX,
        decision_record,
        locked_open_item,
        require_permission,
        require_reason,
    )

    require_permission(user, PERM_FIX)
    reason = require_reason(reason)
    item = locked_open_item(item)
    if item.workflow_run_id is None:
        raise HubConflictError(f"Exception item #{item.pk} holds no workflow run.")
    decision_record(item=item, message=None, action=DecisionAction.RETRY_STEP, user=user, reason=reason)
    item.state = ExceptionState.RESOLVED
    item.save(update_fields=["state", "updated_at"])
    _resume(WorkflowRun.objects.select_for_update().get(pk=item.workflow_run_id))
    return item


def _register_actions() -> None:
    from exception_queue.services import PERM_DECIDE, PERM_FIX

    register_item_action(
        ItemAction(
            action=DecisionAction.APPROVE,
            label="Approve billing",
            permission=PERM_DECIDE,
            handler=milestone_billing_approve,
            category=ExceptionCategory.APPROVAL_REQUIRED,
            flow=FLOW,
            help_text="Approve the milestone's billing; above the second threshold a second, different approver "
            "completes it and the billing event is created.",
        )
    )
    register_item_action(
        ItemAction(
            action=DecisionAction.REJECT,
            label="Reject billing",
            permission=PERM_DECIDE,
            handler=milestone_billing_reject,
            flow=FLOW,
            help_text="Do not bill this milestone; the run ends as rejected.",
            dangerous=True,
        )
    )
    register_item_action(
        ItemAction(
            action=DecisionAction.RETRY_STEP,
            label="Retry the checks",
            permission=PERM_FIX,
            handler=milestone_billing_retry,
            flow=FLOW,
            excluded_categories=(ExceptionCategory.APPROVAL_REQUIRED,),
            help_text="After correcting the milestone or the contract at the source, run the held step again.",
        )
    )


_register_actions()
