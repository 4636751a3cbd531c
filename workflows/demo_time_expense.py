"""Demo of workflow 2 (approved time and expense to the ERP) on top of the demo firm of integrationhub/demo.py.

`seed_time_expense_demo()` configures what the flow needs (the PSA's inbound mappings, routes to each entity's
ERP, the period calendars, the flow's rules, cross-references of the demo projects and people) and makes sandbox
PSA entries. Once web, worker and beat run, the scheduled policy pulls the approved entries every minute, posts
them to the ERP batched per project, and three entries wait in the exception queue: a wrong rate, a closed
period and a missing receipt. Safe to run again: nothing doubles.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from django.db import transaction

DEMO_REASON = "demo: time and expense to the ERP"
PSA_SLUG = "psa"
ERP_BY_ENTITY = {"US01": "erp-us", "UK01": "erp-uk", "DE01": "erp-de"}
CURRENCY_ENTITY = {"USD": "US01", "GBP": "UK01", "EUR": "DE01"}
ALLOWED_COST_CODES = ["BILL", "NONBILL", "TRAVEL", "CONS-DELIVERY"]
RECEIPT_ABOVE = 25
# The ERP project of each PSA project (sandbox ERP idempotency keys of the demo records).
PROJECTS = {"NW-DATA-01": "demo:project:NW-DATA-01", "NW-CR-01": "demo-te:erp-project:NW-CR-01"}
WRONG_RATE = 199.0  # the change-request project's PSA rate, not the rate card's


@dataclass(frozen=True)
class TimeExpenseDemo:
    """What the seeding did, for the command's summary."""

    approved_entries: int
    expected_exceptions: list[str]
    summary: list[str]


def time_expense_policy_rules(*, allowed_codes: list[str], receipt_above: float = RECEIPT_ABOVE) -> list[dict]:
    """The flow's rules with the params the canonical time entry and expense need."""
    return [
        {"rule": "entry_approved", "params": {"field": "approval_status"}},
        {
            "rule": "rate_matches_card",
            "params": {"role_field": "role_code", "legal_entity_field": "legal_entity_code"},
            "entities": ["time_entry"],
        },
        {"rule": "cost_code_allowed", "params": {"allowed_codes": allowed_codes}},
        {"rule": "project_active_in_erp", "params": {}},
        {"rule": "resource_known", "params": {}},
        {"rule": "period_open", "params": {}},
        {"rule": "daily_hours_within_limit", "params": {"max_hours": 12}, "entities": ["time_entry"]},
        {"rule": "receipt_required_above", "params": {"amount": receipt_above}, "entities": ["expense"]},
        {"rule": "currency_matches_entity", "params": {}},
    ]


def _policy(systems: dict[str, Any]) -> Any:
    from governance.choices import Flow, Trigger
    from governance.models import SyncPolicy
    from governance.services import sync_policy_save

    policy = SyncPolicy.objects.filter(flow=Flow.TIME_EXPENSE_TO_ERP, legal_entity__isnull=True).order_by("id").first()
    policy = policy or SyncPolicy(name="Approved time to ERP", flow=Flow.TIME_EXPENSE_TO_ERP)
    policy.trigger = Trigger.SCHEDULE
    policy.cron = "* * * * *"  # every minute in the demo, so entries show up in the ERP while you watch
    policy.batch_size = 500
    policy.validation_rules = time_expense_policy_rules(allowed_codes=ALLOWED_COST_CODES)
    policy.active = True
    return sync_policy_save(policy=policy, reason=DEMO_REASON)


def _periods(entities: dict[str, Any], today: datetime.date) -> None:
    from governance.choices import PeriodStatus
    from governance.models import AccountingPeriod
    from governance.services import accounting_period_save

    month = today.replace(day=1)
    previous = (month - datetime.timedelta(days=1)).replace(day=1)
    following = (month + datetime.timedelta(days=32)).replace(day=1)
    for entity in entities.values():
        for start, end, status in (
            (previous, month - datetime.timedelta(days=1), PeriodStatus.CLOSED),
            (month, following - datetime.timedelta(days=1), PeriodStatus.OPEN),
        ):
            if AccountingPeriod.objects.filter(legal_entity=entity, start_date=start).exists():
                continue
            accounting_period_save(
                period=AccountingPeriod(legal_entity=entity, start_date=start, end_date=end, status=status),
                reason=DEMO_REASON,
            )


def _routes(systems: dict[str, Any], entities: dict[str, Any]) -> None:
    from governance.choices import Flow
    from sync.models import Route

    for code, slug in ERP_BY_ENTITY.items():
        for entity_name in ("time_entry", "expense"):
            Route.objects.get_or_create(
                source_system=systems[PSA_SLUG],
                entity=entity_name,
                target_system=systems[slug],
                legal_entity=entities[code],
                defaults={"name": f"PSA {entity_name} → {slug}", "flow": Flow.TIME_EXPENSE_TO_ERP},
            )


def _xref(system: Any, entity: str, external_id: str, canonical_id: str) -> None:
    from sync.models import CrossReference

    CrossReference.objects.get_or_create(
        system=system, entity=entity, canonical_id=canonical_id, defaults={"external_id": external_id}
    )


def _psa_records(systems: dict[str, Any], today: datetime.date) -> tuple[int, list[str]]:
    """PSA people priced at the firm's US rate card, the demo project and a change-request project (whose PSA
    rate is off the card), their ERP projects, and new entries: four that post, three that wait for finance."""
    from integrationhub.demo import RATES
    from sandbox.choices import ApprovalStatus, ErpObject, PsaObject, SandboxSystem
    from sandbox.models import SandboxRecord
    from sandbox.selectors import record_by_idempotency_key
    from sandbox.services import psa_time_entry_approve, record_create, record_update

    psa, erp = SandboxSystem.PSA, SandboxSystem.ERP
    people = {
        record.data["roles"][0]: record
        for record in SandboxRecord.objects.filter(system=psa, object_type=PsaObject.USER, deleted=False)
        if record.idempotency_key.startswith("demo:") and record.data.get("roles")
    }
    for role, person in people.items():
        bill = float(RATES["US01"].get(role, (person.data.get("default_hourly_rate"), None))[0])
        if person.data.get("default_hourly_rate") != bill:
            record_update(record=person, changes={"default_hourly_rate": bill})
        _xref(systems[PSA_SLUG], "resource", person.external_id, f"resource-{person.data['email']}")
    project = record_by_idempotency_key(system=psa, object_type=PsaObject.PROJECT, key="demo:project:NW-DATA-01")
    erp_project = record_by_idempotency_key(system=erp, object_type=ErpObject.PROJECT, key=PROJECTS["NW-DATA-01"])
    if project is None or erp_project is None:
        raise RuntimeError("The sandbox demo data is missing; run the demo set-up (manage.py demo_setup) first.")
    change_request, _ = record_create(
        system=psa,
        object_type=PsaObject.PROJECT,
        data={
            "client_id": project.data["client_id"],
            "name": "Northwind - Change requests",
            "code": "NW-CR-01",
            "is_active": True,
            "is_billable": True,
            "hourly_rate": WRONG_RATE,
        },
        idempotency_key="demo-te:project:NW-CR-01",
    )
    erp_change_request, _ = record_create(
        system=erp,
        object_type=ErpObject.PROJECT,
        data={**erp_project.data, "code": "NW-CR-01", "name": "Northwind - Change requests", "external_ref": ""},
        idempotency_key=PROJECTS["NW-CR-01"],
    )
    for code, psa_project, erp_record in (
        ("NW-DATA-01", project, erp_project),
        ("NW-CR-01", change_request, erp_change_request),
    ):
        canonical = f"project-{code.lower()}"
        _xref(systems[PSA_SLUG], "project", psa_project.external_id, canonical)
        _xref(systems["erp-us"], "project", erp_record.external_id, canonical)

    consultant, manager = people["Consultant"], people["Manager"]
    closed_day = today.replace(day=1) - datetime.timedelta(days=3)
    base = {"user_id": int(consultant.external_id), "task_id": 1, "billable": True, "role": "Consultant"}
    time_entries = [
        ("ok-1", {**base, "project_id": int(project.external_id), "hours": 3.0, "cost_code": "BILL"}),
        ("ok-2", {**base, "project_id": int(project.external_id), "hours": 1.5, "cost_code": "BILL"}),
        ("wrong-rate", {**base, "project_id": int(change_request.external_id), "hours": 2.0, "cost_code": "BILL"}),
        (
            "closed-period",
            {**base, "project_id": int(project.external_id), "hours": 4.0, "cost_code": "BILL"},
        ),
    ]
    approved = 0
    for key, data in time_entries:
        day = closed_day if key == "closed-period" else today
        entry, _ = record_create(
            system=psa,
            object_type=PsaObject.TIME_ENTRY,
            data={**data, "spent_date": day.isoformat(), "notes": f"Demo entry {key}"},
            idempotency_key=f"demo-te:time:{key}",
        )
        if entry.data.get("approval_status") != ApprovalStatus.APPROVED:
            psa_time_entry_approve(external_id=entry.external_id, approver_id=int(manager.external_id))
        approved += 1
    expenses = [
        ("train", 85.0, "https://files.example/receipts/train.pdf"),
        ("taxi", 18.0, ""),
        ("hotel", 180.0, ""),  # above the receipt threshold without a receipt: waits for finance
    ]
    for key, amount, receipt in expenses:
        data = {
            "user_id": int(consultant.external_id),
            "project_id": int(project.external_id),
            "spent_date": today.isoformat(),
            "total_cost": amount,
            "currency": "USD",
            "expense_category": "lodging" if key == "hotel" else "travel",
            "notes": f"Demo expense {key}",
            "billable": True,
            "cost_code": "TRAVEL",
        }
        if receipt:
            data["receipt_url"] = receipt
        expense, _ = record_create(
            system=psa, object_type=PsaObject.EXPENSE, data=data, idempotency_key=f"demo-te:expense:{key}"
        )
        if expense.data.get("approval_status") != ApprovalStatus.APPROVED:
            psa_time_entry_approve(
                external_id=expense.external_id,
                approver_id=int(manager.external_id),
                object_type=PsaObject.EXPENSE,
            )
        approved += 1
    return approved, ["rate_matches_card", "period_open", "receipt_required_above"]


def _resource_links(systems: dict[str, Any]) -> list[str]:
    """Link each demo PSA person to their employee in every ERP of the flow, so their time is booked to them: in
    an ERP that lists its employees (the local Tryton, see tryton/setup_employees.py) the employee of the same
    name, in the sandbox ERPs (which keep no employee register) the employee number EMP-<PSA id>. A person
    without an employee there is left unlinked: their entries wait in the queue as unknown resources."""
    from sandbox.choices import PsaObject, SandboxSystem
    from sandbox.models import SandboxRecord
    from workflows.models import ResourceLink
    from workflows.resource_links import erp_employees, resource_link_save

    people = [
        record
        for record in SandboxRecord.objects.filter(system=SandboxSystem.PSA, object_type=PsaObject.USER, deleted=False)
        if record.idempotency_key.startswith("demo:")
    ]
    notes = []
    for slug in sorted(set(ERP_BY_ENTITY.values())):
        erp = systems[slug]
        listed = erp_employees(erp_system=erp)
        by_name = {row["name"]: row["id"] for row in listed.employees}
        linked = 0
        for person in people:
            name = f"{person.data.get('first_name', '')} {person.data.get('last_name', '')}".strip()
            employee = by_name.get(name) if by_name else f"EMP-{person.external_id}"
            known = ResourceLink.objects.filter(
                psa_system=systems[PSA_SLUG], person_ref=person.external_id, erp_system=erp
            ).exists()
            if employee is None or known:
                continue
            resource_link_save(
                link=ResourceLink(
                    psa_system=systems[PSA_SLUG],
                    person_ref=person.external_id,
                    person_name=name,
                    erp_system=erp,
                    employee_ref=str(employee),
                    employee_name=name,
                ),
                reason=DEMO_REASON,
            )
            linked += 1
        if linked:
            notes.append(f"time and expense: {linked} people linked to their employee in {slug}")
        elif listed.note and "cannot list" not in listed.note:
            notes.append(f"time and expense: nobody linked in {slug} yet ({listed.note})")
    return notes


def _psa_webhooks(systems: dict[str, Any], base_url: str) -> None:
    """The sandbox PSA sends its approval webhooks to the hub, signed with the PSA system's webhook secret."""
    from connectors.services import connected_system_set_secrets
    from sandbox.choices import SandboxSystem
    from sandbox.services import sandbox_setting_ensure, sandbox_setting_save
    from sandbox.webhooks import generate_webhook_secret

    system = systems[PSA_SLUG]
    if not system.webhook_secret:
        connected_system_set_secrets(system=system, webhook_secret=generate_webhook_secret(), reason=DEMO_REASON)
        system.refresh_from_db()
    setting = sandbox_setting_ensure(system=SandboxSystem.PSA)
    setting.webhook_url = f"{base_url}/api/v1/inbound/{system.slug}/{{event_type}}/"
    setting.webhook_secret = system.webhook_secret
    sandbox_setting_save(setting=setting, reason=DEMO_REASON)


def seed_time_expense_demo(*, base_url: str | None = None) -> TimeExpenseDemo:
    """Configure workflow 2 on the demo firm and make PSA entries: some post, three wait in the queue."""
    from connectors.models import ConnectedSystem
    from governance.models import LegalEntity
    from integrationhub.demo import demo_data_load, demo_public_url
    from workflows.time_expense import time_expense_erp_mappings_install, time_expense_psa_mappings_install

    base_url = (base_url or demo_public_url()).rstrip("/")
    demo_data_load(base_url=base_url)  # idempotent: the firm, its systems, schemas, rate cards and policies
    today = datetime.date.today()
    with transaction.atomic():
        systems = {system.slug: system for system in ConnectedSystem.objects.all()}
        entities = {entity.code: entity for entity in LegalEntity.objects.filter(code__in=ERP_BY_ENTITY)}
        time_expense_psa_mappings_install(system=systems[PSA_SLUG], legal_entity_by_currency=CURRENCY_ENTITY)
        _routes(systems, entities)
        _periods(entities, today)
        policy = _policy(systems)
        approved, expected = _psa_records(systems, today)
    for slug in sorted(set(ERP_BY_ENTITY.values())):
        time_expense_erp_mappings_install(system=systems[slug])
    # Outside the transaction: the ERP that lists its employees is asked through the transport.
    linked = _resource_links(systems)
    # Webhooks last: the entries above are picked up by the scheduled pull, not sent before the web runs.
    _psa_webhooks(systems, base_url)
    return TimeExpenseDemo(
        approved_entries=approved,
        expected_exceptions=expected,
        summary=[
            f"time and expense: policy '{policy.name}' runs every minute with {len(policy.validation_rules)} rules",
            f"time and expense: {approved} demo entries approved in the PSA; "
            f"{len(expected)} will wait for finance ({', '.join(expected)})",
            *linked,
        ],
    )
