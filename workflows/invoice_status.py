"""Invoice and payment status: ERP invoices, pulled by cursor, update the CRM account and opportunity (invoice
number, amount, status, paid date) and go to analytics as events.

The sync engine does the work: a poll schedule pulls the ERP's changed invoices (`poll_run`, each record version
stored once), the ERP's inbound mapping turns them into canonical invoices, and the flow's routes deliver them
to the CRM (the Salesforce connector writes the status onto the Account and the Opportunity) and to the
analytics sink. The flow's policy orders deliveries by invoice id and the invoice's `updated_at`, so the
engine's watermarks skip an older "posted" that arrives after a newer "paid": paid is never overwritten.
This module is the flow's configuration (`invoice_status_setup`) and its scheduled runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from connectors.choices import SystemRole, SystemState
from connectors.models import ConnectedSystem
from governance.choices import Flow
from governance.flows import register_flow_runner
from governance.models import SyncPolicy
from mappings.choices import Direction, MappingStatus
from mappings.models import CanonicalEntity, FieldRule, MappingSet
from mappings.services import field_rule_save, mapping_set_create, mapping_set_publish
from sync.models import PollSchedule, Route
from sync.services import PollResult, poll_run, poll_schedule_save

FLOW = Flow.INVOICE_STATUS
ENTITY = "invoice"

# Sandbox ERP invoice → canonical invoice. client_ref / project_ref are the CRM ids the ERP keeps on the
# invoice's client and project (the connector adds them to each pulled invoice).
TEXT = [{"transform": "trim"}]
ERP_INVOICE_RULES: list[dict[str, Any]] = [
    {"target_path": "id", "source_paths": ["id"], "steps": TEXT, "required": True},
    {"target_path": "number", "source_paths": ["number"]},
    {"target_path": "status", "source_paths": ["status"], "required": True},
    {
        "target_path": "client.client_id",
        "source_paths": ["client_ref", "client_id"],
        "steps": [{"transform": "coalesce"}, {"transform": "trim"}],
        "required": True,
    },
    {"target_path": "project_id", "source_paths": ["project_id"], "steps": TEXT},
    {"target_path": "opportunity_id", "source_paths": ["project_ref"], "steps": TEXT},
    {"target_path": "currency", "source_paths": ["currency"], "required": True},
    {"target_path": "total_amount", "source_paths": ["amount"], "required": True},
    {"target_path": "due_date", "source_paths": ["due_date"]},
    {"target_path": "posted_at", "source_paths": ["posted_at"]},
    {"target_path": "paid_at", "source_paths": ["paid_at"]},
    {"target_path": "updated_at", "source_paths": ["updated_at"]},
]

# Tryton customer invoice (as the tryton_erp connector pulls it) → canonical invoice. Tryton's states are the
# canonical statuses; the connector adds client_ref (the canonical client the party was created under),
# project_ref (the CRM opportunity in the project's contract lines), currency_code, amount, posted_at and paid_at
# (the date the invoice was reconciled).
AS_TEXT = [{"transform": "concat"}]
TRYTON_INVOICE_RULES: list[dict[str, Any]] = [
    {"target_path": "id", "source_paths": ["id"], "steps": AS_TEXT, "required": True},
    {"target_path": "number", "source_paths": ["number"]},
    {"target_path": "status", "source_paths": ["status"], "required": True},
    {"target_path": "client.client_id", "source_paths": ["client_ref"], "steps": TEXT, "required": True},
    {"target_path": "project_id", "source_paths": ["project_id"], "steps": AS_TEXT},
    {"target_path": "opportunity_id", "source_paths": ["project_ref"], "steps": TEXT},
    {"target_path": "currency", "source_paths": ["currency_code"], "required": True},
    {"target_path": "total_amount", "source_paths": ["amount"], "required": True},
    {"target_path": "invoice_date", "source_paths": ["invoice_date"]},
    {"target_path": "posted_at", "source_paths": ["posted_at"]},
    {"target_path": "paid_at", "source_paths": ["paid_at"]},
    {"target_path": "updated_at", "source_paths": ["updated_at"]},
]


@dataclass(frozen=True)
class InvoiceStatusSetup:
    """What `invoice_status_setup` made sure exists."""

    mapping_set: MappingSet
    routes: list[Route]
    schedule: PollSchedule


def _erp_inbound_mapping(*, erp: ConnectedSystem, legal_entity_code: str, user: Any = None) -> MappingSet:
    entity = CanonicalEntity.objects.get(name=ENTITY)
    found = (
        MappingSet.objects.filter(system=erp, entity=entity, direction=Direction.INBOUND)
        .exclude(status=MappingStatus.RETIRED)
        .order_by("-version")
        .first()
    )
    if found is not None:
        return found
    mapping = mapping_set_create(
        name=f"{erp.slug} invoice in", system=erp, entity=entity, direction=Direction.INBOUND, user=user
    )
    rules = [*(TRYTON_INVOICE_RULES if erp.connector_type == "tryton_erp" else ERP_INVOICE_RULES)]
    rules.append(
        {
            "target_path": "legal_entity_code",
            "source_paths": ["legal_entity"],
            "has_default": True,
            "default_value": legal_entity_code,
        }
    )
    for position, spec in enumerate(rules):
        field_rule_save(rule=FieldRule(mapping_set=mapping, position=position, **spec), user=user, reason="setup")
    mapping_set_publish(mapping_set=mapping, user=user, confirm=True)
    mapping.refresh_from_db()
    return mapping


@transaction.atomic
def invoice_status_setup(
    *,
    erp: ConnectedSystem,
    crm: ConnectedSystem,
    analytics: ConnectedSystem | None,
    legal_entity_code: str,
    every_seconds: int = 300,
    user: Any = None,
) -> InvoiceStatusSetup:
    """Configure the flow for one ERP (idempotent): the ERP's inbound invoice mapping, the routes to the CRM
    and to analytics, and the scheduled pull of invoices. Deliveries are ordered per invoice (the policy's
    ordering key, else the canonical id) by the invoice's updated_at."""
    mapping = _erp_inbound_mapping(erp=erp, legal_entity_code=legal_entity_code, user=user)
    routes = []
    for target in [crm, *([analytics] if analytics is not None else [])]:
        route = Route.objects.filter(source_system=erp, entity=ENTITY, target_system=target, flow=FLOW).first()
        if route is None:
            route = Route(
                name=f"Invoice status: {erp.slug} → {target.slug}",
                source_system=erp,
                entity=ENTITY,
                target_system=target,
                flow=FLOW,
            )
            route.full_clean()
            route.save()
        routes.append(route)
    schedule = PollSchedule.objects.filter(system=erp, entity=ENTITY).first() or PollSchedule(
        system=erp, entity=ENTITY, every_seconds=every_seconds
    )
    schedule = poll_schedule_save(schedule=schedule, user=user, reason="invoice status flow")
    return InvoiceStatusSetup(mapping_set=mapping, routes=routes, schedule=schedule)


def invoice_status_pull(*, system: ConnectedSystem, max_pages: int | None = None) -> PollResult:
    """Pull the ERP's changed invoices now, from the flow's persisted cursor (the same as the schedule's)."""
    return poll_run(system=system, entity=ENTITY, max_pages=max_pages)


@register_flow_runner(FLOW)
def invoice_status_scheduled(policy: SyncPolicy) -> dict[str, str]:
    """What the flow's scheduled sync policy starts: a pull of invoices from every ERP routed in the flow."""
    sources = ConnectedSystem.objects.filter(
        role=SystemRole.ERP, state=SystemState.ACTIVE, routes_out__flow=FLOW, routes_out__active=True
    ).distinct()
    if policy.legal_entity_id:
        sources = sources.filter(legal_entities=policy.legal_entity_id)
    return {system.slug: invoice_status_pull(system=system).outcome for system in sources}
