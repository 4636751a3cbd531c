"""Seed operational records for the schemathesis run and write the schemathesis config that points the fuzzer
at them.

Run after `manage.py demo_setup --firm-only` (the firm: legal entities, systems, schemas). No counterpart is
called: the records are written as the pipeline leaves them, so that the message, trace, attempt,
exception-item and file-drop operations answer with real bodies (and their null fields: a message without a
legal entity, an item without a message, a workflow step's call without a delivery, a file drop without an
uploader) instead of 404 for random ids.

Usage: python .ci/schemathesis_seed.py <config.toml>
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integrationhub.settings")

import django

django.setup()

from django.db import transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from connectors.models import ConnectedSystem  # noqa: E402
from exception_queue.choices import ExceptionCategory  # noqa: E402
from exception_queue.models import ExceptionItem  # noqa: E402
from exception_queue.services import exception_item_open  # noqa: E402
from governance.models import LegalEntity  # noqa: E402
from sync.choices import AttemptOutcome, DeliveryStatus, FileDropStatus, MessageStatus  # noqa: E402
from sync.models import Delivery, DeliveryAttempt, FileDrop, Message  # noqa: E402

# How often a generated id is one of the seeded records; the rest stay random, so 404 answers are fuzzed too.
SEEDED_ID_PROBABILITY = 0.8


def seed() -> dict[str, list[int]]:
    """Messages in several states, their deliveries and attempts, a workflow step's call, open items and a
    rejected file drop."""
    systems = list(ConnectedSystem.objects.order_by("pk")[:2])
    if len(systems) < 2:
        raise SystemExit("the demo firm is missing: run `manage.py demo_setup --firm-only` first")
    source, target = systems
    entity = LegalEntity.objects.order_by("pk").first()
    now = timezone.now()
    messages: list[Message] = []
    items: list[ExceptionItem] = []
    with transaction.atomic():
        for index, (status, legal_entity) in enumerate(
            [
                (MessageStatus.DELIVERED, entity),
                (MessageStatus.FAILED, entity),
                (MessageStatus.DEAD, None),  # a message the pipeline never resolved a legal entity for
                (MessageStatus.HELD, entity),
            ]
        ):
            message, _ = Message.objects.get_or_create(
                system=source,
                idempotency_key=f"schemathesis-{index}",
                defaults={
                    "entity": "client",
                    "event_type": "client.updated",
                    "correlation_id": f"schemathesis-correlation-{index}",
                    "raw_payload": {"id": f"C-{index}", "name": f"Client {index}"},
                    "canonical_payload": {"external_id": f"C-{index}", "name": f"Client {index}"},
                    "canonical_id": f"client-{index}",
                    "status": status,
                    "legal_entity": legal_entity,
                    "mapped_at": now,
                    "validated_at": now,
                },
            )
            messages.append(message)
            delivery, _ = Delivery.objects.get_or_create(
                message=message,
                target_system=target,
                defaults={
                    "status": DeliveryStatus.DELIVERED if status == MessageStatus.DELIVERED else DeliveryStatus.DEAD,
                    "idempotency_key": f"schemathesis-delivery-{index}",
                },
            )
            DeliveryAttempt.objects.get_or_create(
                delivery=delivery,
                number=1,
                defaults={
                    "system": target,
                    "outcome": AttemptOutcome.DELIVERED
                    if status == MessageStatus.DELIVERED
                    else AttemptOutcome.TERMINAL_ERROR,
                    "status_code": 200 if status == MessageStatus.DELIVERED else 422,
                    "duration_ms": 12.5,
                    "request_summary": {"method": "PUT", "path": f"/clients/C-{index}"},
                    "correlation_id": message.correlation_id,
                },
            )
            if status in (MessageStatus.FAILED, MessageStatus.DEAD, MessageStatus.HELD):
                items.append(
                    exception_item_open(
                        category=ExceptionCategory.DEAD_LETTER
                        if status == MessageStatus.DEAD
                        else ExceptionCategory.TARGET_REJECTED,
                        reason=f"schemathesis seed: {status}",
                        message=message,
                        delivery=delivery,
                        system=target,
                        legal_entity=legal_entity,
                        payload_snapshot=message.canonical_payload,
                    )
                )
        # A workflow step's call: no delivery, no message.
        DeliveryAttempt.objects.get_or_create(
            delivery=None,
            number=1,
            correlation_id="schemathesis-workflow",
            defaults={
                "system": target,
                "outcome": AttemptOutcome.DELIVERED,
                "status_code": 201,
                "duration_ms": 8.0,
                "request_summary": {"operation": "create_project", "flow": "opportunity_to_project"},
            },
        )
        # An item without a message, system or legal entity (a reconciliation difference, say).
        if not ExceptionItem.objects.filter(reason="schemathesis seed: no message").exists():
            items.append(
                exception_item_open(category=ExceptionCategory.VALIDATION, reason="schemathesis seed: no message")
            )
        else:
            items.append(ExceptionItem.objects.get(reason="schemathesis seed: no message"))
        # A file drop with a row error and nobody recorded as the uploader.
        FileDrop.objects.get_or_create(
            system=source,
            sha256="0" * 64,
            defaults={
                "entity": "client",
                "file_name": "clients.csv",
                "status": FileDropStatus.REJECTED,
                "rows_total": 2,
                "errors": [{"row": 2, "field": "name", "message": "This field is required."}],
                "correlation_id": "schemathesis-file-drop",
            },
        )
    return {
        "messages": [message.pk for message in messages],
        "exception_items": [item.pk for item in items],
        "delivery_attempts": list(DeliveryAttempt.objects.order_by("pk").values_list("pk", flat=True)[:20]),
        "file_drops": list(FileDrop.objects.order_by("pk").values_list("pk", flat=True)[:5]),
        **configuration_ids(),
    }


# Each seeded collection: its URL path under /api/v1/ and the path parameter that names one record.
COLLECTION_PATHS = {
    "messages": ("messages", "id"),
    "exception_items": ("exception-items", "id"),
    "delivery_attempts": ("delivery-attempts", "id"),
    "file_drops": ("file-drops", "id"),
    "mapping_sets": ("mapping-sets", "id"),
    "field_rules": ("field-rules", "id"),
    "value_maps": ("value-maps", "id"),
    "rate_cards": ("rate-cards", "id"),
    "sync_policies": ("sync-policies", "id"),
    "resources": ("resources", "id"),
    "audit_events": ("audit-events", "id"),
    "reconciliation_runs": ("reconciliation/runs", "id"),
    "reconciliation_rows": ("reconciliation/rows", "id"),
    "systems": ("systems", "slug"),
}


def configuration_ids() -> dict[str, list[Any]]:
    """The demo firm's configuration records (and the audit events and reconciliation rows there are), so the
    detail, change and delete operations of each collection reach real records, not only 404."""
    from django.apps import apps

    collections = {
        "mapping_sets": "mappings.MappingSet",
        "field_rules": "mappings.FieldRule",
        "value_maps": "mappings.ValueMap",
        "rate_cards": "governance.RateCard",
        "sync_policies": "governance.SyncPolicy",
        "resources": "workflows.ResourceLink",
        "audit_events": "integrationhub.AuditEvent",
        "reconciliation_runs": "reconciliation.ReconciliationRun",
        "reconciliation_rows": "reconciliation.ReconciliationRow",
    }
    ids: dict[str, list[Any]] = {}
    for name, label in collections.items():
        values = list(apps.get_model(label).objects.order_by("pk").values_list("pk", flat=True)[:20])
        if values:
            ids[name] = values
    ids["systems"] = list(ConnectedSystem.objects.order_by("pk").values_list("slug", flat=True)[:20])
    return ids


def config(ids: dict[str, list[Any]]) -> str:
    """A schemathesis.toml: the `id` of each operation under a seeded collection drawn mostly from its records."""
    lines = []
    for name, values in ids.items():
        lines += [f"[dictionaries.{name.replace('_', '-')}]", f"values = {values}", ""]
    for name in ids:
        path, parameter = COLLECTION_PATHS[name]
        dictionary = name.replace("_", "-")
        lines += [
            "[[operations]]",
            f'include-path-regex = "^/api/v1/{path}/\\\\{{{parameter}\\\\}}/"',
            f'parameters = {{ "path.{parameter}" = '
            f'{{ dictionary = "{dictionary}", probability = {SEEDED_ID_PROBABILITY} }} }}',
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    seeded = seed()
    Path(sys.argv[1]).write_text(config(seeded))
    print(", ".join(f"{name}: {values}" for name, values in seeded.items()))
