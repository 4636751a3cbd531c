"""A PSA → sandbox ERP time-entry flow built through the real services, for the queue's browser tests.

The PSA sends a signed `time_entry.approved` webhook to the hub; the message is mapped (an inbound mapping
from the PSA's field names), validated by the flow's policy, held above its approval threshold (hours times rate),
and delivered over real HTTP to the sandbox ERP served by pytest's `live_server`. The tests play the worker
by calling the engine's own `message_process` and `delivery_send`, so they see each stage happen.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from django.test import Client

from connectors.choices import SystemRole
from connectors.models import ConnectedSystem
from connectors.services import connected_system_create
from governance.choices import Flow
from governance.models import LegalEntity, SyncPolicy
from mappings.choices import Direction, MappingStatus
from mappings.models import CanonicalEntity, FieldRule, MappingSet
from mappings.runtime import mapping_cache_invalidate
from sandbox.models import SandboxRecord
from sandbox.services import sandbox_demo_seed
from sandbox.webhooks import generate_webhook_secret
from sync.choices import DeliveryStatus, MessageStatus
from sync.models import CrossReference, Delivery, Message, Route
from sync.services import delivery_send, message_process
from sync.tests.conftest import canonical_entity_install, signed_post

# PSA field → canonical time-entry field.
INBOUND_RULES = [
    ("id", "id"),
    ("resource_id", "user_id"),
    ("project_id", "project_id"),
    ("date", "spent_date"),
    ("hours", "hours"),
    ("rate", "billable_rate"),
    ("currency", "currency"),
    ("billable", "billable"),
    ("approval_status", "approval_status"),
    ("approved_at", "approved_at"),
    ("approver_id", "approver_id"),
    ("legal_entity_code", "legal_entity"),
]
# Canonical time-entry field → sandbox ERP field.
OUTBOUND_RULES = [
    ("project_id", "project_id"),
    ("date", "date"),
    ("hours", "hours"),
    ("bill_rate", "rate"),
    ("currency", "currency"),
    ("source_ref", "id"),
]


@dataclass
class TimeEntryFlow:
    psa: ConnectedSystem
    erp: ConnectedSystem
    inbound: MappingSet
    policy: SyncPolicy
    erp_project_id: str

    def entry(self, *, hours: float, rate: str = "250.00", **fields: Any) -> dict[str, Any]:
        """A PSA time entry as its approval webhook carries it."""
        return {
            "id": f"TE-{uuid.uuid4().hex[:8]}",
            "user_id": "U-7",
            "project_id": self.erp_project_id,
            "spent_date": "2026-11-20",
            "hours": hours,
            "billable_rate": rate,
            "currency": "GBP",
            "billable": True,
            "approval_status": "approved",
            "approved_at": "2026-11-21T09:30:00Z",
            "approver_id": "U-2",
            "legal_entity": "UK01",
            **fields,
        }

    def send(self, entry: dict[str, Any]) -> Message:
        """The PSA's signed webhook for `entry`, received by the hub and run through the pipeline once."""
        sender = SimpleNamespace(secret=self.psa.webhook_secret, source=self.psa)
        response = signed_post(Client(), sender, entry, event_type="time_entry.approved")
        assert response.status_code == 202, response.content
        message = Message.objects.get(pk=response.json()["message_id"])
        message_process(message_id=message.pk)
        message.refresh_from_db()
        return message


def erp_time_entries(source_ref: str) -> int:
    """Posted time entries carrying `source_ref`, counted in the sandbox ERP itself."""
    # The time and expense flow posts each line with the entry's key, <PSA system>:time_entry:<entry id>.
    return SandboxRecord.objects.filter(
        system="erp", object_type="time-entries", data__source_ref__endswith=f":time_entry:{source_ref}", deleted=False
    ).count()


def run_pipeline(message: Message) -> Message:
    """What beat and a worker would do next: process the message, then send its pending deliveries (the time
    and expense flow posts through its ledger: its due lines are sent to the ERP)."""
    from workflows.models import TimeExpensePosting
    from workflows.time_expense import time_expense_postings_send

    message_process(message_id=message.pk)
    for delivery in Delivery.objects.filter(message=message).exclude(status=DeliveryStatus.DELIVERED):
        delivery_send(delivery_id=delivery.pk)
    targets = set(TimeExpensePosting.objects.filter(message=message).values_list("target_system_id", flat=True))
    # A session's live worker may hold a target's sender lock and send the lines itself: send, then wait a
    # little for whichever sender has them to finish.
    deadline = time.monotonic() + 30
    message.refresh_from_db()
    while targets and message.status == MessageStatus.QUEUED and time.monotonic() < deadline:
        for target_id in targets:
            time_expense_postings_send(target_system_id=target_id)
        message.refresh_from_db()
        if message.status == MessageStatus.QUEUED:
            time.sleep(0.2)
    return message


def _mapping(system: ConnectedSystem, direction: str, rules: list[tuple[str, str]]) -> MappingSet:
    mapping = MappingSet.objects.create(
        name=f"{system.slug} time entry {direction}",
        system=system,
        entity=CanonicalEntity.objects.get(name="time_entry"),
        direction=direction,
    )
    for position, (target_path, source_path) in enumerate(rules):
        FieldRule.objects.create(
            mapping_set=mapping, position=position, target_path=target_path, source_paths=[source_path]
        )
    MappingSet.objects.filter(pk=mapping.pk).update(status=MappingStatus.PUBLISHED)
    mapping.refresh_from_db()
    return mapping


def time_entry_flow_build(
    *,
    live_server_url: str,
    approval_threshold: Decimal | None = None,
    second_threshold: Decimal | None = None,
    inbound_rules: list[tuple[str, str]] | None = None,
) -> TimeEntryFlow:
    """The PSA, the sandbox ERP of the UK entity, both mappings, the route and the flow's policy."""
    demo = sandbox_demo_seed()
    project = SandboxRecord.objects.filter(
        system="erp", object_type="projects", data__status="active", deleted=False
    ).first()
    assert project is not None, "the sandbox ERP demo seed has an active project"
    canonical_entity_install("time_entry")
    LegalEntity.objects.get_or_create(
        code="UK01",
        defaults={"name": "Firm UK Ltd", "country": "GB", "base_currency": "GBP", "tax_jurisdiction": "GB"},
    )
    suffix = uuid.uuid4().hex[:6]
    psa = ConnectedSystem.objects.create(
        name=f"PSA {suffix}",
        slug=f"psa-{suffix}",
        role=SystemRole.PSA,
        connector_type="generic_rest",
        base_url="http://127.0.0.1:9",
        settings={"auth_mode": "none"},
        webhook_secret=generate_webhook_secret(),
    )
    erp = connected_system_create(
        name=f"ERP UK {suffix}",
        slug=f"erp-uk-{suffix}",
        role=SystemRole.ERP,
        connector_type="sandbox_erp",
        base_url=f"{live_server_url}/sandbox/erp/api",
        settings={"health_path": "/clients", "timeout_seconds": 10},
        credentials={"api_key": demo["erp"]["api_token"]},
        reason="browser test: the UK entity's sandbox ERP",
    )
    inbound = _mapping(psa, Direction.INBOUND, inbound_rules or INBOUND_RULES)
    _mapping(erp, Direction.OUTBOUND, OUTBOUND_RULES)
    mapping_cache_invalidate()
    policy = SyncPolicy.objects.create(
        name=f"Approved time to ERP {suffix}",
        flow=Flow.TIME_EXPENSE_TO_ERP,
        max_attempts=3,
        dead_letter_threshold=3,
        backoff_base_seconds=0,
        backoff_cap_seconds=1,
        jitter=False,
        validation_rules=[{"rule": "entry_approved", "params": {"field": "approval_status"}}],
        approval_threshold_amount=approval_threshold,
        second_approval_threshold_amount=second_threshold,
        approval_currency="GBP" if approval_threshold is not None else "",
    )
    Route.objects.create(
        name=f"{psa.slug} → {erp.slug}",
        source_system=psa,
        entity="time_entry",
        target_system=erp,
        flow=Flow.TIME_EXPENSE_TO_ERP,
    )
    # The project is known to the hub in the ERP (its cross-reference): the flow posts only to active projects.
    CrossReference.objects.create(
        system=erp, entity="project", canonical_id=project.external_id, external_id=project.external_id
    )
    return TimeEntryFlow(psa=psa, erp=erp, inbound=inbound, policy=policy, erp_project_id=project.external_id)
