"""Writes of the mappings app: canonical entities and their versioned JSON Schemas."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from integrationhub.errors import HubConflictError, HubValidationError
from mappings.choices import CanonicalEntityName, SchemaStatus
from mappings.models import CanonicalEntity, CanonicalSchema

logger = logging.getLogger(__name__)

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"


def _pointer(parts: Any) -> str:
    """A JSON-pointer-like path for people: properties/amount/type, or (root)."""
    text = "/".join(str(part) for part in parts)
    return text or "(root)"


def canonical_json_schema_check(*, json_schema: Any) -> None:
    """Raise HubValidationError unless `json_schema` is a valid Draft 2020-12 schema; errors name the keyword path."""
    if not isinstance(json_schema, dict):
        raise HubValidationError(
            "A canonical schema must be a JSON object.",
            errors=[{"field": "json_schema", "message": "Must be a JSON object."}],
        )
    try:
        Draft202012Validator.check_schema(json_schema)
    except SchemaError as best:
        # check_schema reports the best match; list every problem so the analyst can fix them in one go.
        meta = Draft202012Validator(Draft202012Validator.META_SCHEMA)
        problems = sorted(meta.iter_errors(json_schema), key=lambda e: (list(map(str, e.absolute_path)), e.message))
        errors = [
            {
                "field": f"json_schema/{_pointer(e.absolute_path)}",
                "message": f"{e.message} (keyword '{e.validator}')",
            }
            for e in problems
        ] or [{"field": f"json_schema/{_pointer(best.absolute_path)}", "message": best.message}]
        raise HubValidationError(
            f"Invalid JSON Schema at {_pointer(best.absolute_path)}: {best.message} (keyword '{best.validator}')",
            errors=errors,
            hint="Fix the keywords listed in `errors`; the published version stays in force meanwhile.",
        ) from None


def _record(obj: Any, *, user: Any, reason: str) -> None:
    obj._history_user = user
    obj._change_reason = reason[:100]


@transaction.atomic
def canonical_schema_edit(
    *, entity: CanonicalEntity, json_schema: dict[str, Any], user: Any = None, notes: str = ""
) -> CanonicalSchema:
    """Save a changed schema as a new draft version (max + 1); published versions are never overwritten."""
    if not isinstance(json_schema, dict):
        raise HubValidationError(
            "A canonical schema must be a JSON object.",
            errors=[{"field": "json_schema", "message": "Must be a JSON object."}],
        )
    # Lock the entity so two concurrent edits cannot both take the same next version number.
    CanonicalEntity.objects.select_for_update().filter(pk=entity.pk).first()
    latest = entity.schemas.aggregate(latest=Max("version"))["latest"] or 0
    schema = CanonicalSchema(
        entity=entity,
        version=latest + 1,
        json_schema=json_schema,
        status=SchemaStatus.DRAFT,
        notes=notes,
        created_by=user if getattr(user, "pk", None) else None,
    )
    schema.full_clean()
    _record(schema, user=user, reason=notes or f"draft v{schema.version}")
    schema.save()
    logger.info("canonical schema drafted", extra={"entity": entity.name, "version": schema.version})
    return schema


@transaction.atomic
def canonical_schema_publish(*, schema: CanonicalSchema, user: Any = None) -> CanonicalSchema:
    """Publish a schema version after checking it is a valid JSON Schema; the previous published one is retired."""
    CanonicalEntity.objects.select_for_update().filter(pk=schema.entity_id).first()
    schema.refresh_from_db()
    canonical_json_schema_check(json_schema=schema.json_schema)
    if schema.status == SchemaStatus.PUBLISHED:
        raise HubConflictError(f"{schema.entity.name} v{schema.version} is already published.")
    now = timezone.now()
    # Retire first: at most one published version per entity is a database constraint.
    for previous in CanonicalSchema.objects.filter(entity_id=schema.entity_id, status=SchemaStatus.PUBLISHED):
        previous.status = SchemaStatus.RETIRED
        _record(previous, user=user, reason=f"retired by publishing v{schema.version}")
        previous.save(update_fields=["status"])
    schema.status = SchemaStatus.PUBLISHED
    schema.published_at = now
    schema.full_clean()
    _record(schema, user=user, reason=f"published v{schema.version}")
    schema.save(update_fields=["status", "published_at"])
    logger.info("canonical schema published", extra={"entity": schema.entity.name, "version": schema.version})
    return schema


def canonical_schema_file(*, entity_name: str) -> dict[str, Any]:
    """The JSON Schema shipped with the hub for an entity (mappings/schemas/<name>.json)."""
    return json.loads((SCHEMA_DIR / f"{entity_name}.json").read_text(encoding="utf-8"))


@transaction.atomic
def canonical_entities_install(*, user: Any = None) -> dict[str, int]:
    """Create the 13 canonical entities and publish v1 of each from the shipped files where no version exists.

    Idempotent: a second run changes nothing and reports zeros. Entities that already have versions
    (edited by analysts) are left alone.
    """
    counts = {"entities_created": 0, "schemas_published": 0, "unchanged": 0}
    for name in CanonicalEntityName.values:
        shipped = canonical_schema_file(entity_name=name)
        entity, created = CanonicalEntity.objects.get_or_create(
            name=name, defaults={"description": shipped.get("description", "")}
        )
        counts["entities_created"] += int(created)
        if entity.schemas.exists():
            counts["unchanged"] += int(not created)
            continue
        draft = canonical_schema_edit(entity=entity, json_schema=shipped, user=user, notes="shipped with the hub")
        canonical_schema_publish(schema=draft, user=user)
        counts["schemas_published"] += 1
    logger.info("canonical entities installed", extra=counts)
    return counts
