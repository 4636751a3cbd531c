"""The approved-time flow PSA → ERP as the batch path's tests and benchmark configure it.

Harvest time entries map to the canonical time entry (inbound), and the canonical entry to the sandbox
ERP's time entry (outbound); the flow's policy lists the six time-entry rules; the legal entity's period
calendar has this month and the three before it open; the rate card carries the PSA people's bill rates;
cross-references make the PSA people known resources and the PSA project the ERP's project. Everything
goes through the real models, so the engine reads it as it would in production.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from connectors.choices import SystemRole
from connectors.models import ConnectedSystem
from connectors.services import connected_system_create
from governance.choices import Flow
from governance.models import AccountingPeriod, LegalEntity, RateCard, RateCardLine, SyncPolicy
from governance.services import accounting_period_save
from mappings.choices import Direction, MappingStatus
from mappings.models import CanonicalEntity, FieldRule, MappingSet
from mappings.runtime import mapping_cache_invalidate
from mappings.services import canonical_schema_edit, canonical_schema_file, canonical_schema_publish
from sync.models import CrossReference, Route

ALLOWED_COST_CODES = ["CONS-DELIVERY", "TRAVEL"]

# canonical field ← Harvest path, steps
INBOUND_RULES: list[tuple[str, str, list[dict[str, Any]]]] = [
    ("id", "id", [{"transform": "trim"}]),
    ("resource_id", "user.id", [{"transform": "trim"}]),
    ("project_id", "project.id", [{"transform": "trim"}]),
    ("role_code", "role", []),
    ("date", "spent_date", []),
    ("hours", "hours", []),
    ("rate", "billable_rate", []),
    ("cost_code", "cost_code", []),
    ("billable", "billable", []),
    ("approval_status", "approval_status", []),
    ("approved_at", "approved_at", []),
    ("approver_id", "approved_by.id", [{"transform": "trim"}]),
    ("description", "notes", []),
    ("updated_at", "updated_at", []),
]
# ERP field ← canonical path
OUTBOUND_RULES = [
    ("project_id", "project_id"),
    ("date", "date"),
    ("hours", "hours"),
    ("employee_ref", "resource_id"),
    ("role", "role_code"),
    ("cost_code", "cost_code"),
    ("bill_rate", "rate"),
    ("description", "description"),
    ("source_ref", "id"),
]
RULES = [
    {"rule": "entry_approved", "params": {"field": "approval_status"}},
    {"rule": "rate_matches_card", "params": {"role_field": "role_code", "legal_entity_field": "legal_entity_code"}},
    {"rule": "cost_code_allowed", "params": {"allowed_codes": ALLOWED_COST_CODES}},
    {"rule": "project_active_in_erp", "params": {}},
    {"rule": "resource_known", "params": {}},
    {"rule": "period_open", "params": {}},
]


@dataclass
class TimeFlow:
    psa: ConnectedSystem
    erp: ConnectedSystem
    route: Route
    policy: SyncPolicy
    legal_entity: LegalEntity


def canonical_entity_install(name: str) -> CanonicalEntity:
    entity, _ = CanonicalEntity.objects.get_or_create(name=name)
    if entity.published_schema is None:
        draft = canonical_schema_edit(entity=entity, json_schema=canonical_schema_file(entity_name=name), user=None)
        canonical_schema_publish(schema=draft)
    return entity


def _mapping(system: ConnectedSystem, entity: CanonicalEntity, direction: str, rules: list[tuple]) -> MappingSet:
    mapping = MappingSet.objects.create(
        name=f"{system.slug} time entry {direction}", system=system, entity=entity, direction=direction
    )
    for position, rule in enumerate(rules):
        target, source, steps = rule if len(rule) == 3 else (*rule, [])
        FieldRule.objects.create(
            mapping_set=mapping, position=position, target_path=target, source_paths=[source], steps=steps
        )
    if direction == Direction.INBOUND:
        FieldRule.objects.create(
            mapping_set=mapping,
            position=len(rules),
            target_path="legal_entity_code",
            source_paths=["legal_entity"],
            has_default=True,
            default_value="US01",
        )
    MappingSet.objects.filter(pk=mapping.pk).update(status=MappingStatus.PUBLISHED)
    return mapping


def open_months_install(*, legal_entity: LegalEntity, months: int = 4) -> None:
    """Open accounting periods of the legal entity for this month and the months before it (the PSA's entries
    fall in them): the period calendar is what every path asks whether an entry may post."""
    start = datetime.date.today().replace(day=1)
    for _ in range(months):
        end = (start + datetime.timedelta(days=32)).replace(day=1) - datetime.timedelta(days=1)
        if not AccountingPeriod.objects.filter(legal_entity=legal_entity, start_date__lte=end, end_date__gte=start):
            accounting_period_save(
                period=AccountingPeriod(legal_entity=legal_entity, start_date=start, end_date=end), reason="time flow"
            )
        start = (start - datetime.timedelta(days=1)).replace(day=1)


def time_flow_configure(
    *,
    psa_url: str,
    erp_url: str,
    credentials: dict[str, dict[str, str]],
    people: list[tuple[int, str, float]],
    projects: list[tuple[int, int]],
    batch_size: int = 500,
    page_size: int = 500,
    max_attempts: int = 3,
) -> TimeFlow:
    """Configure the flow. `people`: (PSA user id, role, bill rate); `projects`: (PSA project id, ERP project id);
    `credentials`: what `sandbox_demo_seed` returns."""
    suffix = uuid.uuid4().hex[:6]
    entity = canonical_entity_install("time_entry")
    legal_entity, _ = LegalEntity.objects.get_or_create(
        code="US01",
        defaults={
            "name": "Firm US",
            "country": "US",
            "base_currency": "USD",
            "tax_jurisdiction": "US-NY",
            "region": "americas",
        },
    )
    psa = connected_system_create(
        name=f"PSA {suffix}",
        slug=f"psa-{suffix}",
        role=SystemRole.PSA,
        connector_type="harvest_psa",
        base_url=psa_url,
        settings={"account_id": credentials["psa"]["account_id"], "page_size": page_size, "timeout_seconds": 60},
        credentials={"access_token": credentials["psa"]["api_token"]},
        legal_entities=[legal_entity],
        rate_limit_per_second=Decimal("1000"),
        reason="time flow",
    )
    erp = connected_system_create(
        name=f"ERP {suffix}",
        slug=f"erp-{suffix}",
        role=SystemRole.ERP,
        connector_type="sandbox_erp",
        base_url=erp_url,
        settings={"company_code": "US01", "timeout_seconds": 60},
        credentials={"api_key": credentials["erp"]["api_token"]},
        legal_entities=[legal_entity],
        rate_limit_per_second=Decimal("1000"),
        reason="time flow",
    )
    open_months_install(legal_entity=legal_entity)
    _mapping(psa, entity, Direction.INBOUND, INBOUND_RULES)
    _mapping(erp, entity, Direction.OUTBOUND, OUTBOUND_RULES)
    mapping_cache_invalidate()
    card = RateCard.objects.create(
        name=f"US01 standard {suffix}",
        legal_entity=legal_entity,
        currency="USD",
        valid_from=datetime.date.today() - datetime.timedelta(days=3650),
        tolerance_percent=Decimal("0.5"),
    )
    for role, bill in sorted({(role, bill) for _, role, bill in people}):
        RateCardLine.objects.create(
            rate_card=card, role=role, bill_rate=Decimal(str(bill)), cost_rate=Decimal(str(bill)) / 2
        )
    CrossReference.objects.bulk_create(
        [
            CrossReference(entity="resource", canonical_id=str(user_id), system=psa, external_id=str(user_id))
            for user_id, _, _ in people
        ]
        + [
            CrossReference(entity="project", canonical_id=str(psa_id), system=erp, external_id=str(erp_id))
            for psa_id, erp_id in projects
        ]
    )
    policy = SyncPolicy.objects.create(
        name=f"Approved time to ERP {suffix}",
        flow=Flow.TIME_EXPENSE_TO_ERP,
        trigger="schedule",
        batch_size=batch_size,
        max_attempts=max_attempts,
        dead_letter_threshold=max_attempts,
        backoff_base_seconds=0,
        backoff_cap_seconds=0,
        jitter=False,
        validation_rules=RULES,
    )
    route = Route.objects.create(
        name=f"{psa.slug} → {erp.slug}",
        source_system=psa,
        entity="time_entry",
        target_system=erp,
        flow=Flow.TIME_EXPENSE_TO_ERP,
    )
    return TimeFlow(psa=psa, erp=erp, route=route, policy=policy, legal_entity=legal_entity)
