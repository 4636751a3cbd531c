"""Reads of the mappings app: the schema in force for an entity and payload validation against it."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from jsonschema import Draft202012Validator

from integrationhub.errors import HubNotFoundError
from mappings.choices import MappingStatus, SchemaStatus
from mappings.compiler import schema_refs_inlined
from mappings.models import CanonicalEntity, CanonicalSchema, MappingSet
from mappings.schema_check import FastCheck, fast_check_compile


def canonical_entity_list() -> QuerySet[CanonicalEntity]:
    """All canonical entities with their schema versions."""
    return CanonicalEntity.objects.prefetch_related("schemas")


def canonical_schema_current(*, entity_name: str) -> CanonicalSchema | None:
    """The published schema version of an entity, or None when none is published."""
    return (
        CanonicalSchema.objects.select_related("entity")
        .filter(entity__name=entity_name, status=SchemaStatus.PUBLISHED)
        .order_by("-version")
        .first()
    )


_validators: dict[tuple[int, int, str], tuple[Draft202012Validator, FastCheck | None]] = {}
_VALIDATOR_CACHE_SIZE = 256


def _validator(schema: CanonicalSchema) -> tuple[Draft202012Validator, FastCheck | None]:
    """The schema's full validator and its fast yes/no check (None when the schema has none)."""
    # A version's JSON never changes after it is created (edits make a new version), so the compiled
    # validator is reused for every record; created_at in the key tells apart rows that reuse an id.
    key = (schema.pk, schema.version, schema.created_at.isoformat())
    cached = _validators.get(key)
    if cached is None:
        if len(_validators) >= _VALIDATOR_CACHE_SIZE:
            _validators.clear()
        checker = Draft202012Validator.FORMAT_CHECKER
        cached = (
            Draft202012Validator(schema.json_schema, format_checker=checker),
            fast_check_compile(schema_refs_inlined(schema.json_schema), format_checker=checker),
        )
        _validators[key] = cached
    return cached


def _json_path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def canonical_payload_validate(*, entity_name: str, payload: Any) -> list[dict[str, str]]:
    """Validate a payload against the entity's published schema; returns errors as {path, message, keyword}."""
    schema = canonical_schema_current(entity_name=entity_name)
    if schema is None:
        raise HubNotFoundError(
            f"No published schema for canonical entity '{entity_name}'.",
            hint="Publish a schema version (or run the canonical entity install) first.",
        )
    validator, fast_check = _validator(schema)
    if fast_check is not None and fast_check(payload):
        return []
    errors = sorted(validator.iter_errors(payload), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [
        {"path": _json_path(error.absolute_path), "message": error.message, "keyword": str(error.validator)}
        for error in errors
    ]


def value_map_users(name: str) -> list[MappingSet]:
    """Draft and published mapping sets with a map_value step naming the value map."""
    from mappings.runtime import value_map_names_used

    sets = MappingSet.objects.exclude(status=MappingStatus.RETIRED).prefetch_related("rules")
    return [mapping_set for mapping_set in sets if name in value_map_names_used(list(mapping_set.rules.all()))]
