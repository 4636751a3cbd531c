"""A time and expense set-up against the sandbox PSA and ERP over real HTTP (`live_server`): hub systems, legal
entity, rate card, period calendar, routes, policy, mappings, cross-references, and PSA people and projects."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from connectors.models import ConnectedSystem
from connectors.tests.contract_fixtures import sandbox_harness
from governance.choices import Flow, PeriodStatus, Trigger
from governance.models import AccountingPeriod, LegalEntity, RateCard, SyncPolicy
from governance.services import accounting_period_save, rate_card_save, sync_policy_save
from mappings.models import CanonicalEntity
from mappings.runtime import mapping_cache_invalidate
from mappings.services import canonical_schema_edit, canonical_schema_file, canonical_schema_publish
from sandbox.models import SandboxRecord, SandboxSetting
from sandbox.services import psa_time_entry_approve, record_create, record_update
from sandbox.webhooks import generate_webhook_secret
from sync.models import CrossReference, Route
from sync.services import sync_tick
from workflows.models import ResourceLink
from workflows.resource_links import erp_employees as erp_employee_choices
from workflows.resource_links import erp_requires_employee, resource_link_save
from workflows.time_expense import time_expense_postings_dispatch, time_expense_psa_mappings_install

TODAY = datetime.date.today()
CONSULTANT_RATE = 160.0
ALLOWED_CODES = ["BILL", "NONBILL", "TRAVEL"]


def canonical_entity_install(name: str) -> CanonicalEntity:
    entity, _ = CanonicalEntity.objects.get_or_create(name=name)
    if entity.published_schema is None:
        draft = canonical_schema_edit(entity=entity, json_schema=canonical_schema_file(entity_name=name), user=None)
        canonical_schema_publish(schema=draft)
    return entity


def flow_rules(*, max_hours: float = 12, receipt_above: float = 25) -> list[dict[str, Any]]:
    """Every rule of the flow, with the params the canonical time entry and expense need."""
    return [
        {"rule": "entry_approved", "params": {"field": "approval_status"}},
        {
            "rule": "rate_matches_card",
            "params": {"role_field": "role_code", "legal_entity_field": "legal_entity_code"},
            "entities": ["time_entry"],
        },
        {"rule": "cost_code_allowed", "params": {"allowed_codes": ALLOWED_CODES}},
        {"rule": "project_active_in_erp", "params": {}},
        {"rule": "resource_known", "params": {}},
        {"rule": "period_open", "params": {}},
        {"rule": "daily_hours_within_limit", "params": {"max_hours": max_hours}, "entities": ["time_entry"]},
        {"rule": "receipt_required_above", "params": {"amount": receipt_above}, "entities": ["expense"]},
        {"rule": "currency_matches_entity", "params": {}},
    ]


@dataclass
class TimeExpenseWorld:
    """The systems and records of one time and expense test, and helpers to act in the sandbox PSA."""

    psa: ConnectedSystem
    erp: ConnectedSystem
    policy: SyncPolicy
    entity: LegalEntity
    server_url: str
    users: dict[str, SandboxRecord] = field(default_factory=dict)
    projects: dict[str, SandboxRecord] = field(default_factory=dict)
    erp_projects: dict[str, SandboxRecord] = field(default_factory=dict)

    def time_entry(self, *, user: str = "diego", project: str = "alpha", hours: float = 2.0, **data: Any) -> str:
        fields = {
            "user_id": int(self.users[user].external_id),
            "project_id": int(self.projects[project].external_id),
            "spent_date": TODAY.isoformat(),
            "hours": hours,
            "notes": "Workshop",
            "billable": True,
            "cost_code": "BILL",
            "role": self.users[user].data["roles"][0],
            "task_id": 1,
            **data,
        }
        record, _ = record_create(system="psa", object_type="time_entries", data=fields)
        return record.external_id

    def expense(self, *, user: str = "diego", project: str = "alpha", amount: float = 20.0, **data: Any) -> str:
        fields = {
            "user_id": int(self.users[user].external_id),
            "project_id": int(self.projects[project].external_id),
            "spent_date": TODAY.isoformat(),
            "total_cost": amount,
            "currency": "USD",
            "expense_category": "travel",
            "notes": "Train",
            "billable": True,
            "cost_code": "TRAVEL",
            **data,
        }
        record, _ = record_create(system="psa", object_type="expenses", data=fields)
        return record.external_id

    def approve(self, entry_id: str, *, object_type: str = "time_entries") -> None:
        psa_time_entry_approve(
            external_id=entry_id,
            approver_id=int(self.users["ben"].external_id),
            object_type=object_type,
        )

    def unapprove(self, entry_id: str, *, object_type: str = "time_entries") -> None:
        psa_time_entry_approve(external_id=entry_id, approve=False, object_type=object_type)

    def edit(self, entry_id: str, **changes: Any) -> None:
        record = SandboxRecord.objects.get(system="psa", object_type="time_entries", external_id=entry_id)
        record_update(record=record, changes=changes)

    def erp_lines(self, **filters: Any) -> list[SandboxRecord]:
        """The ERP's time lines this hub posted (the sandbox's own demo lines left out)."""
        lines = SandboxRecord.objects.filter(
            system="erp", object_type="time-entries", data__source_ref__startswith=f"{self.psa.slug}:", **filters
        )
        return list(lines.order_by("pk"))

    def person_add(self, key: str, *, first: str, role: str, rate: float, employee: str = "") -> SandboxRecord:
        """A PSA person (with the hub's resource cross-reference) and, given `employee`, the resource that books
        their time to that ERP employee."""
        user, _ = record_create(
            system="psa",
            object_type="users",
            data={
                "first_name": first,
                "last_name": "Tester",
                "email": f"{key}@example.com",
                "roles": [role],
                "default_hourly_rate": rate,
                "cost_rate": 70.0,
                "is_active": True,
            },
        )
        self.users[key] = user
        CrossReference.objects.create(
            system=self.psa, entity="resource", external_id=user.external_id, canonical_id=f"res-{key}"
        )
        if employee:
            self.link(key, employee)
        return user

    def link(self, key: str, employee: str) -> None:
        """Book the person's time in the world's ERP to `employee` (their resource link)."""
        resource_link_save(
            link=ResourceLink(
                psa_system=self.psa,
                person_ref=self.users[key].external_id,
                person_name=f"{self.users[key].data['first_name']} Tester",
                erp_system=self.erp,
                employee_ref=str(employee),
            ),
            reason="test",
        )

    def webhooks_on(self) -> None:
        """The sandbox PSA sends its approval webhooks to this hub's inbound endpoint, signed with a shared secret."""
        secret = generate_webhook_secret()
        ConnectedSystem.objects.filter(pk=self.psa.pk).update(webhook_secret=secret)
        SandboxSetting.objects.filter(system="psa").update(
            webhook_url=f"{self.server_url}/api/v1/inbound/{self.psa.slug}/{{event_type}}/", webhook_secret=secret
        )


def run_until(predicate: Callable[[], bool], *, timeout: float = 60.0) -> None:
    """Act as beat (the engine's dispatcher and the time and expense sender) until `predicate()` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sync_tick()
        time_expense_postings_dispatch()
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"condition not met within {timeout} s")


def build_world(
    request: pytest.FixtureRequest,
    *,
    trigger: str = Trigger.EVENT,
    erp: ConnectedSystem | None = None,
    make_erp_project: Callable[[str], str] | None = None,
    erp_employees: list[str] | None = None,
    **rule_options: Any,
) -> TimeExpenseWorld:
    """The world; an ERP whose lines need an employee gets each person linked to their own employee, from
    `erp_employees` (in the people's order) or else from the employees the ERP lists."""
    psa_harness = sandbox_harness("harvest_psa", request)
    erp_harness = sandbox_harness("sandbox_erp", request)
    for name in ("time_entry", "expense", "project", "resource"):
        canonical_entity_install(name)
    entity = LegalEntity.objects.create(
        code="US01",
        name="Northwind Advisory Inc.",
        country="US",
        base_currency="USD",
        tax_jurisdiction="US-NY",
        region="americas",
    )
    psa = psa_harness.make_system(page_size=50)
    erp = erp or erp_harness.make_system()
    for system in (psa, erp):
        system.rate_limit_per_second = Decimal("1000")
        system.save(update_fields=["rate_limit_per_second"])
        system.legal_entities.add(entity)
    rate_card_save(
        rate_card=RateCard(
            name="US01 standard",
            legal_entity=entity,
            currency="USD",
            valid_from=TODAY.replace(month=1, day=1),
            tolerance_percent=Decimal("1.00"),
        ),
        lines=[
            {"role": "Consultant", "bill_rate": CONSULTANT_RATE, "cost_rate": 70, "unit": "hour"},
            {"role": "Manager", "bill_rate": 300, "cost_rate": 120, "unit": "hour"},
        ],
        reason="test",
    )
    month_start = TODAY.replace(day=1)
    next_month = (month_start + datetime.timedelta(days=32)).replace(day=1)
    previous_start = (month_start - datetime.timedelta(days=1)).replace(day=1)
    accounting_period_save(
        period=AccountingPeriod(
            legal_entity=entity, start_date=month_start, end_date=next_month - datetime.timedelta(days=1)
        ),
        reason="test",
    )
    accounting_period_save(
        period=AccountingPeriod(
            legal_entity=entity,
            start_date=previous_start,
            end_date=month_start - datetime.timedelta(days=1),
            status=PeriodStatus.CLOSED,
        ),
        reason="test",
    )
    time_expense_psa_mappings_install(system=psa, legal_entity_by_currency={"USD": "US01", "GBP": "UK01"})
    mapping_cache_invalidate()
    for entity_name in ("time_entry", "expense"):
        Route.objects.create(
            name=f"{psa.slug} {entity_name} → {erp.slug}",
            source_system=psa,
            entity=entity_name,
            target_system=erp,
            flow=Flow.TIME_EXPENSE_TO_ERP,
        )
    policy = sync_policy_save(
        policy=SyncPolicy(
            name="Approved time to ERP (test)",
            flow=Flow.TIME_EXPENSE_TO_ERP,
            trigger=trigger,
            cron="*/15 * * * *" if trigger == Trigger.SCHEDULE else "",
            batch_size=100,
            max_attempts=3,
            backoff_base_seconds=1,
            backoff_cap_seconds=2,
            jitter=False,
            validation_rules=flow_rules(**rule_options),
        ),
        reason="test",
    )
    world = TimeExpenseWorld(
        psa=psa, erp=erp, policy=policy, entity=entity, server_url=psa_harness.base_url.split("/sandbox")[0]
    )
    client, _ = record_create(system="psa", object_type="clients", data={"name": "Acme", "currency": "USD"})
    erp_client, _ = record_create(system="erp", object_type="clients", data={"name": "Acme", "legal_entity": "US01"})
    if erp_employees is None and erp_requires_employee(erp):
        erp_employees = [row["id"] for row in erp_employee_choices(erp_system=erp).employees]
    employees = iter(erp_employees or [])
    for key, (first, role, rate) in {
        "diego": ("Diego", "Consultant", CONSULTANT_RATE),
        "ben": ("Ben", "Manager", 300.0),
    }.items():
        world.person_add(key, first=first, role=role, rate=rate, employee=next(employees, ""))
    for key in ("alpha", "beta", "closed"):
        project, _ = record_create(
            system="psa",
            object_type="projects",
            data={
                "client_id": int(client.external_id),
                "name": f"Project {key}",
                "code": key.upper(),
                "is_active": True,
            },
        )
        world.projects[key] = project
        CrossReference.objects.create(
            system=psa, entity="project", external_id=project.external_id, canonical_id=f"prj-{key}"
        )
        if key == "closed":
            continue  # a project the ERP does not have: no cross-reference there
        if make_erp_project is not None:
            CrossReference.objects.create(
                system=erp, entity="project", external_id=make_erp_project(key), canonical_id=f"prj-{key}"
            )
            continue
        erp_project, _ = record_create(
            system="erp",
            object_type="projects",
            data={
                "client_id": int(erp_client.external_id),
                "name": f"Project {key}",
                "legal_entity": "US01",
                "status": "active",
                "currency": "USD",
                "billing_type": "time_and_materials",
            },
        )
        world.erp_projects[key] = erp_project
        CrossReference.objects.create(
            system=erp, entity="project", external_id=erp_project.external_id, canonical_id=f"prj-{key}"
        )
    return world
