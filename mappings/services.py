"""Writes of the mappings app: canonical schemas, and mapping sets (drafts, the publish gate, import/export)."""

from __future__ import annotations

import copy
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.db.models import Max, QuerySet
from django.utils import timezone
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from integrationhub.errors import HubConflictError, HubValidationError
from mappings.choices import CanonicalEntityName, Direction, MappingStatus, SampleOrigin, SchemaStatus
from mappings.compiler import MappingDefinitionError
from mappings.models import (
    CanonicalEntity,
    CanonicalSchema,
    FieldRule,
    MappingSample,
    MappingSet,
    ValueMap,
    ValueMapEntry,
)
from mappings.paths import MISSING, WILDCARD, PathError, parse_path
from mappings.rule_rows import RULE_FIELDS, rule_rows_parse
from mappings.runtime import (
    effective_rules,
    mapping_cache_invalidate,
    mapping_compile,
    value_map_names_used,
    xrefs_resolve,
)

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
    # Inbound mappings validate against the published schema: every worker must recompile with the new one.
    transaction.on_commit(mapping_cache_invalidate)
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


# --- mapping sets: drafts, the publish gate, retirement, preview, export and import ---------------------


@dataclass(frozen=True)
class SampleOutcome:
    """One saved sample mapped by the candidate version, with the output diff against the published one."""

    sample: str
    output: dict[str, Any]
    errors: list[dict[str, Any]]
    diff: list[dict[str, Any]]


@dataclass(frozen=True)
class PublishReport:
    """What publishing would do (or did): each sample's outcome; published is False for a dry run."""

    mapping_set_id: int
    version: int
    previous_version: int | None
    outcomes: list[SampleOutcome]
    published: bool

    @property
    def blocking(self) -> list[SampleOutcome]:
        return [outcome for outcome in self.outcomes if outcome.errors]


def output_diff(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """Field-level differences between two mapped outputs: [{"path", "before", "after"}], sorted by path."""
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[dict[str, Any]] = []
        for key in sorted(set(before) | set(after)):
            child = f"{path}.{key}" if path else str(key)
            changes.extend(output_diff(before.get(key, MISSING), after.get(key, MISSING), child))
        return changes
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            change
            for i, (b, a) in enumerate(zip(before, after, strict=True))
            for change in output_diff(b, a, f"{path}[{i}]")
        ]
    if before == after and type(before) is type(after):
        return []
    return [
        {
            "path": path or "(record)",
            "before": None if before is MISSING else before,
            "after": None if after is MISSING else after,
        }
    ]


def _lineage_versions(mapping_set: MappingSet) -> QuerySet[MappingSet]:
    return MappingSet.objects.filter(lineage=mapping_set.lineage)


def mapping_set_create(
    *,
    name: str,
    system: Any,
    entity: CanonicalEntity,
    direction: str,
    legal_entity: Any = None,
    parent: MappingSet | None = None,
    notes: str = "",
    user: Any = None,
) -> MappingSet:
    """Start a new mapping (version 1, draft) for a system, entity and direction."""
    mapping_set = MappingSet(
        name=name,
        system=system,
        entity=entity,
        direction=direction,
        legal_entity=legal_entity,
        parent=parent,
        notes=notes,
        created_by=user,
    )
    mapping_set.lineage = MappingSet.lineage_for(
        system_id=system.pk, entity_id=entity.pk, direction=direction, legal_entity_id=getattr(legal_entity, "pk", None)
    )
    existing = MappingSet.objects.filter(lineage=mapping_set.lineage).order_by("-version").first()
    if existing is not None:
        raise HubConflictError(
            f"A mapping for this system, entity, direction and legal entity already exists: {existing}.",
            hint="Open it and use “Create draft” to make a new version instead.",
        )
    if parent is not None and (parent.entity_id != entity.pk or parent.direction != direction):
        raise HubValidationError(
            "A regional mapping must extend a mapping of the same entity and direction.",
            errors=[{"field": "parent", "message": f"{parent} maps {parent.entity} {parent.direction}."}],
        )
    with transaction.atomic():
        mapping_set.full_clean()
        mapping_set._change_reason = "mapping created"  # type: ignore[attr-defined]
        mapping_set.save()
    return mapping_set


def field_rule_save(*, rule: FieldRule, user: Any = None, reason: str = "") -> FieldRule:
    """Validate (paths, transforms, parameters, value maps) and save a rule of a draft mapping set."""
    with transaction.atomic():
        rule.full_clean()
        rule._change_reason = reason or "rule saved"  # type: ignore[attr-defined]
        rule.save()
    return rule


def mapping_set_create_draft(*, mapping_set: MappingSet, user: Any = None) -> MappingSet:
    """A new draft version copying `mapping_set`'s rules; returns the lineage's existing draft if there is one."""
    with transaction.atomic():
        versions = _lineage_versions(mapping_set).select_for_update()
        draft = versions.filter(status=MappingStatus.DRAFT).order_by("-version").first()
        if draft is not None:
            return draft
        latest = versions.order_by("-version").first()
        source_rules = list(mapping_set.rules.all())
        draft = MappingSet.objects.get(pk=mapping_set.pk)
        draft.pk = None
        draft.id = None
        draft.version = (latest.version if latest else 0) + 1
        draft.status = MappingStatus.DRAFT
        draft.published_at = None
        draft.published_by = None
        draft.created_by = user
        draft._change_reason = f"draft v{draft.version} created from v{mapping_set.version}"  # type: ignore[attr-defined]
        draft.save()
        for rule in source_rules:
            rule.pk = None
            rule.id = None
            rule.mapping_set = draft
            rule._change_reason = f"copied into draft v{draft.version}"  # type: ignore[attr-defined]
            rule.save()
    return draft


def _outcomes(candidate: MappingSet, previous: MappingSet | None) -> list[SampleOutcome]:
    try:
        compiled = mapping_compile(candidate)
    except MappingDefinitionError as exc:
        raise HubValidationError(
            f"{candidate} cannot be compiled.", errors=[{"field": "rules", "message": p} for p in exc.problems]
        ) from exc
    before_compiled = mapping_compile(previous) if previous is not None else None
    outcomes = []
    for sample in MappingSample.objects.filter(lineage=candidate.lineage).order_by("name"):
        result = compiled.map_one(sample.payload)
        before = before_compiled.map_one(sample.payload).output if before_compiled else {}
        outcomes.append(
            SampleOutcome(
                sample=sample.name,
                output=result.output,
                errors=[error.as_dict() for error in result.errors],
                diff=output_diff(before, result.output),
            )
        )
    return outcomes


def mapping_set_publish(
    *, mapping_set: MappingSet, user: Any = None, confirm: bool = False, no_sample_reason: str | None = None
) -> PublishReport:
    """The publish gate: every sample (saved or kept from real messages) must map without error; returns the
    diff against the published version.

    With confirm=False nothing changes (the analyst reviews the diff); with confirm=True the previous
    version is retired, this one published, and every worker recompiles. With no sample at all to replay,
    confirming needs a written reason, kept on the version and in its history.
    """
    if mapping_set.status != MappingStatus.DRAFT:
        raise HubConflictError(f"{mapping_set} is {mapping_set.status}; only a draft can be published.")
    previous = _lineage_versions(mapping_set).filter(status=MappingStatus.PUBLISHED).first()
    outcomes = _outcomes(mapping_set, previous)
    if no_sample_reason is None and not outcomes:
        # Only the hub's own code (flow set-up, installs) publishes without passing a reason; people publish
        # through the editor or the API, which always pass what they typed, so an empty one is refused below.
        no_sample_reason = "published by the hub's own set-up code, no sample to replay yet"
    no_sample_reason = (no_sample_reason or "").strip()
    if confirm and not outcomes and not no_sample_reason:
        raise HubValidationError(
            f"{mapping_set} has no sample to replay, so publishing cannot check it.",
            errors=[
                {
                    "field": "no_sample_reason",
                    "message": "Save a sample (or let real messages arrive), or write why publishing unchecked is safe.",  # noqa: E501
                }
            ],
            hint="The reason is kept on the version and shown in its history.",
        )
    report = PublishReport(
        mapping_set_id=mapping_set.pk,
        version=mapping_set.version,
        previous_version=previous.version if previous else None,
        outcomes=outcomes,
        published=False,
    )
    if report.blocking:
        raise HubValidationError(
            f"Publishing {mapping_set} would break {len(report.blocking)} saved sample(s); "
            "fix the rules and try again.",
            errors=[
                {
                    "field": f"samples.{outcome.sample}.{error['target']}",
                    "message": str(error["message"]),
                    "source": error["source"],
                    "value": error["value"],
                }
                for outcome in report.blocking
                for error in outcome.errors
            ],
        )
    if not confirm:
        return report
    with transaction.atomic():
        locked = _lineage_versions(mapping_set).select_for_update()
        for old in locked.filter(status=MappingStatus.PUBLISHED):
            old.status = MappingStatus.RETIRED
            old._change_reason = f"retired by publishing v{mapping_set.version}"  # type: ignore[attr-defined]
            old.save()
        mapping_set.status = MappingStatus.PUBLISHED
        mapping_set.published_at = timezone.now()
        mapping_set.published_by = user
        reason = f"published v{mapping_set.version}"
        if not outcomes:
            mapping_set.published_without_samples_reason = no_sample_reason
            reason = f"{reason} without samples: {no_sample_reason}"
        # History keeps 100 characters of a reason; the full one stays on the version (shown in history too).
        mapping_set._change_reason = reason[:100]  # type: ignore[attr-defined]
        mapping_set.save()
        transaction.on_commit(mapping_cache_invalidate)
    return PublishReport(**{**report.__dict__, "published": True})


def mapping_set_retire(*, mapping_set: MappingSet, user: Any = None) -> MappingSet:
    """Retire a version: it no longer maps anything (a published one leaves its lineage without a live version)."""
    if mapping_set.status == MappingStatus.RETIRED:
        return mapping_set
    with transaction.atomic():
        mapping_set.status = MappingStatus.RETIRED
        mapping_set._change_reason = "retired"  # type: ignore[attr-defined]
        mapping_set.save()
        transaction.on_commit(mapping_cache_invalidate)
    return mapping_set


def mapping_preview(*, mapping_set: MappingSet, payload: Any) -> dict[str, Any]:
    """Map one sample payload with the set as it is now (drafts included); returns output and errors."""
    if not isinstance(payload, dict):
        raise HubValidationError(
            "The sample payload must be a JSON object.", errors=[{"field": "payload", "message": "expected an object"}]
        )
    try:
        compiled = mapping_compile(mapping_set)
    except MappingDefinitionError as exc:
        return {
            "output": {},
            "errors": [{"target": "", "source": "", "value": None, "message": p} for p in exc.problems],
        }
    if compiled.uses_xrefs:
        compiled.prefetch_xrefs([payload], xrefs_resolve)
    result = compiled.map_one(payload)
    return {"output": result.output, "errors": [error.as_dict() for error in result.errors]}


def mapping_sample_save(*, mapping_set: MappingSet, name: str, payload: Any, user: Any = None) -> MappingSample:
    """Save (or replace) a named sample payload of the mapping's lineage; the publish gate replays it."""
    if not isinstance(payload, dict):
        raise HubValidationError(
            "A sample payload must be a JSON object.", errors=[{"field": "payload", "message": "expected an object"}]
        )
    sample, _ = MappingSample.objects.update_or_create(
        lineage=mapping_set.lineage,
        name=name,
        defaults={"payload": payload, "created_by": user, "origin": SampleOrigin.SAVED, "message_id": None},
    )
    return sample


# A masked value keeps its shape, so a kept sample still replays through formats and patterns: letters
# become x, digits 0, an e-mail address masked@example.com, a number 1.
MASKED_EMAIL = "masked@example.com"


def _masked(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return 1
    if isinstance(value, str):
        if "@" in value:
            return MASKED_EMAIL
        return "".join("0" if ch.isdigit() else ("x" if ch.isalpha() else ch) for ch in value)
    if isinstance(value, list):
        return [_masked(item) for item in value]
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    return value


def schema_sensitive_paths(json_schema: Any, prefix: str = "") -> set[str]:
    """Dotted paths (lists as [*]) of the properties a canonical schema marks "x-sensitive": true."""
    found: set[str] = set()
    if not isinstance(json_schema, dict):
        return found
    definitions = json_schema.get("$defs") or {}

    def walk(node: Any, path: str, trail: tuple[str, ...]) -> None:
        if not isinstance(node, dict):
            return
        if node.get("x-sensitive") is True and path:
            found.add(path)
            return
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name not in trail:
                walk(definitions.get(name), path, (*trail, name))
        for name, child in (node.get("properties") or {}).items():
            walk(child, f"{path}.{name}" if path else name, trail)
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[*]", trail)
        for keyword in ("allOf", "anyOf", "oneOf"):
            for child in node.get(keyword) or []:
                walk(child, path, trail)

    walk(json_schema, prefix, ())
    return found


def _mask_path(payload: Any, tokens: tuple[Any, ...]) -> None:
    if not tokens or not isinstance(payload, dict | list):
        return
    token, rest = tokens[0], tokens[1:]
    if isinstance(payload, dict) and isinstance(token, str):
        if token not in payload:
            return
        if rest:
            _mask_path(payload[token], rest)
        else:
            payload[token] = _masked(payload[token])
    elif isinstance(payload, list):
        indexes = range(len(payload)) if token == WILDCARD else ([token] if isinstance(token, int) else [])
        for index in indexes:
            if not -len(payload) <= index < len(payload):
                continue
            if rest:
                _mask_path(payload[index], rest)
            else:
                payload[index] = _masked(payload[index])


def sample_payload_masked(*, mapping_set: MappingSet, payload: dict[str, Any]) -> dict[str, Any]:
    """A copy of `payload` with the values of sensitive canonical fields masked.

    An outbound payload is canonical: its sensitive paths are masked as they are. An inbound payload is the
    source system's: the source paths of every rule whose target is sensitive are masked.
    """
    schema = mapping_set.entity.published_schema
    sensitive = schema_sensitive_paths(schema.json_schema) if schema else set()
    masked = copy.deepcopy(payload)
    if not sensitive:
        return masked
    if mapping_set.direction == Direction.INBOUND:
        paths = {
            source
            for rule in effective_rules(mapping_set)
            if re.sub(r"\[\d+\]", "[*]", rule.target_path) in sensitive
            for source in rule.source_paths or []
        }
    else:
        paths = sensitive
    for path in paths:
        try:
            tokens = parse_path(path)
        except PathError:
            continue
        _mask_path(masked, tokens)
    return masked


def mapping_sample_capture(
    *, mapping_set: MappingSet, payload: Any, message_id: int | None = None
) -> MappingSample | None:
    """Keep a real payload that mapped cleanly as a sample of the set's lineage (sensitive fields masked).

    Only the most recent HUB_MAPPING_SAMPLES_KEPT captured samples of a lineage are kept; samples saved by
    analysts are never pruned. Returns None when keeping samples is switched off (0) or the payload is no object.
    """
    kept = int(getattr(settings, "HUB_MAPPING_SAMPLES_KEPT", 5))
    if kept <= 0 or not isinstance(payload, dict):
        return None
    name = f"message #{message_id}" if message_id is not None else f"captured {timezone.now():%Y-%m-%d %H:%M:%S.%f}"
    try:
        return _sample_keep(mapping_set=mapping_set, payload=payload, message_id=message_id, name=name, kept=kept)
    except DatabaseError:
        # A sample is a convenience for the publish gate: failing to keep one never fails the message.
        logger.warning("mapping sample not kept", extra={"lineage": mapping_set.lineage}, exc_info=True)
        return None


def _sample_keep(
    *, mapping_set: MappingSet, payload: dict[str, Any], message_id: int | None, name: str, kept: int
) -> MappingSample:
    with transaction.atomic():
        sample, _ = MappingSample.objects.update_or_create(
            lineage=mapping_set.lineage,
            name=name,
            defaults={
                "payload": sample_payload_masked(mapping_set=mapping_set, payload=payload),
                "origin": SampleOrigin.CAPTURED,
                "message_id": message_id,
            },
        )
        stale = list(
            MappingSample.objects.filter(lineage=mapping_set.lineage, origin=SampleOrigin.CAPTURED)
            .order_by("-created_at", "-id")
            .values_list("id", flat=True)[kept:]
        )
        if stale:
            MappingSample.objects.filter(id__in=stale).delete()
    return sample


EXPORT_FORMAT = "integrationhub.mapping-set/1"


def mapping_set_export(*, mapping_set: MappingSet) -> dict[str, Any]:
    """The set as JSON, with its version, rules, the value maps it uses and its samples, to promote it elsewhere."""
    rules = list(mapping_set.rules.all())
    used = value_map_names_used(rules)
    return {
        "format": EXPORT_FORMAT,
        "name": mapping_set.name,
        "system": mapping_set.system.slug,
        "entity": mapping_set.entity.name,
        "direction": mapping_set.direction,
        "legal_entity": mapping_set.legal_entity.code if mapping_set.legal_entity else None,
        "parent": {"system": mapping_set.parent.system.slug, "version": mapping_set.parent.version}
        if mapping_set.parent
        else None,
        "version": mapping_set.version,
        "status": mapping_set.status,
        "notes": mapping_set.notes,
        "rules": [
            {
                "position": rule.position,
                "target_path": rule.target_path,
                "source_paths": rule.source_paths,
                "steps": rule.steps,
                "required": rule.required,
                "has_default": rule.has_default,
                "default_value": rule.default_value,
                "condition": rule.condition,
                "notes": rule.notes,
            }
            for rule in rules
        ],
        "value_maps": [
            {
                "name": value_map.name,
                "description": value_map.description,
                "unmapped": value_map.unmapped,
                "default_value": value_map.default_value,
                "entries": {entry.source_value: entry.target_value for entry in value_map.entries.all()},
            }
            for value_map in ValueMap.objects.filter(name__in=used).prefetch_related("entries")
        ],
        "samples": [
            {"name": sample.name, "payload": sample.payload}
            for sample in MappingSample.objects.filter(lineage=mapping_set.lineage).order_by("name")
        ],
    }


def mapping_set_import(*, data: Any, user: Any = None) -> MappingSet:
    """Import an exported set as a new draft of the matching lineage here (value maps and samples included).

    All or nothing: a missing system, entity or a rule that does not validate leaves nothing stored.
    """
    from connectors.models import ConnectedSystem
    from governance.models import LegalEntity

    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise HubValidationError(f"This is not a mapping-set export (expected format {EXPORT_FORMAT!r}).")
    problems: list[dict[str, str]] = []
    system = ConnectedSystem.objects.filter(slug=data.get("system")).first()
    entity = CanonicalEntity.objects.filter(name=data.get("entity")).first()
    legal_entity = LegalEntity.objects.filter(code=data["legal_entity"]).first() if data.get("legal_entity") else None
    if system is None:
        problems.append({"field": "system", "message": f"no connected system with slug {data.get('system')!r} here"})
    if entity is None:
        problems.append({"field": "entity", "message": f"no canonical entity {data.get('entity')!r}"})
    if data.get("legal_entity") and legal_entity is None:
        problems.append({"field": "legal_entity", "message": f"no legal entity {data['legal_entity']!r} here"})
    if problems:
        raise HubValidationError("The export does not fit this installation.", errors=problems)
    assert system is not None and entity is not None
    with transaction.atomic():
        for map_data in data.get("value_maps", []):
            value_map, _ = ValueMap.objects.update_or_create(
                name=map_data["name"],
                defaults={
                    "description": map_data.get("description", ""),
                    "unmapped": map_data.get("unmapped", "error"),
                    "default_value": map_data.get("default_value"),
                },
            )
            for source_value, target_value in map_data.get("entries", {}).items():
                ValueMapEntry.objects.update_or_create(
                    value_map=value_map, source_value=source_value, defaults={"target_value": target_value}
                )
        lineage = MappingSet.lineage_for(
            system_id=system.pk,
            entity_id=entity.pk,
            direction=data["direction"],
            legal_entity_id=getattr(legal_entity, "pk", None),
        )
        latest = MappingSet.objects.filter(lineage=lineage).order_by("-version").first()
        if latest is not None and latest.status == MappingStatus.DRAFT:
            raise HubConflictError(f"{latest} is already a draft here; publish or delete it before importing.")
        draft = MappingSet(
            name=data["name"],
            system=system,
            entity=entity,
            direction=data["direction"],
            legal_entity=legal_entity,
            notes=data.get("notes", ""),
            created_by=user,
            version=(latest.version + 1) if latest else 1,
        )
        draft.full_clean()
        draft._change_reason = f"imported from export of v{data.get('version')}"  # type: ignore[attr-defined]
        draft.save()
        for index, rule_data in enumerate(data.get("rules", []), start=1):
            rule = FieldRule(
                mapping_set=draft,
                **{
                    key: rule_data.get(key)
                    for key in (
                        "position",
                        "target_path",
                        "source_paths",
                        "steps",
                        "required",
                        "has_default",
                        "default_value",
                        "condition",
                    )
                },
                notes=rule_data.get("notes") or "",
            )
            try:
                rule.full_clean()
            except ValidationError as exc:
                raise HubValidationError(
                    f"Rule {index} ({rule_data.get('target_path')}) of the export is not valid here; "
                    "nothing was imported.",
                    errors=[
                        {"field": f"rules[{index - 1}].{field}", "message": " ".join(messages)}
                        for field, messages in exc.message_dict.items()
                    ],
                ) from exc
            rule._change_reason = "imported"  # type: ignore[attr-defined]
            rule.save()
        for sample in data.get("samples", []):
            MappingSample.objects.update_or_create(
                lineage=lineage, name=sample["name"], defaults={"payload": sample["payload"], "created_by": user}
            )
    return draft


def mapping_rules_save(*, mapping_set: MappingSet, rules: Any, user: Any = None, reason: str = "") -> list[FieldRule]:
    """Save the editor's whole rules table for a draft: rows in order, removed rows deleted; all or nothing.

    Each row is saved through field_rule_save (so the same validation as every other write applies). When
    any row fails, nothing is stored and HubValidationError lists every failing row as rules[<row>].<field>.
    """
    if mapping_set.status != MappingStatus.DRAFT:
        raise HubConflictError(
            f"{mapping_set} is {mapping_set.status}; create a draft version to change its rules.",
            hint="Use “Create draft”, then edit the draft.",
        )
    reason = (reason or "").strip()
    if not reason:
        raise HubValidationError(
            "Give a reason for the change; auditors see it in the history.",
            errors=[{"field": "reason", "message": "This field is required."}],
        )
    rows = rule_rows_parse(rules)
    errors: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for row in rows:
        problems = list(row.problems)
        target = row.fields.get("target_path")
        if target and target in seen:
            problems.append(f"Target {target} is also mapped by row {seen[target] + 1}.")
        elif target:
            seen[target] = row.index
        errors.extend({"row": row.index, "field": f"rules[{row.index}]", "message": p} for p in problems)
    if errors:
        raise HubValidationError(_rows_failed(errors), errors=errors)
    saved: list[FieldRule] = []
    with transaction.atomic():
        existing = {rule.pk: rule for rule in MappingSet.objects.select_for_update().get(pk=mapping_set.pk).rules.all()}
        unknown = {row.index for row in rows if row.id is not None and row.id not in existing}
        for row in (rows[index] for index in sorted(unknown)):
            errors.append({"row": row.index, "field": f"rules[{row.index}]", "message": "This rule no longer exists."})
        keep = {row.id for row in rows if row.id is not None}
        for rule in existing.values():
            if rule.pk not in keep:
                rule._change_reason = reason[:100]  # type: ignore[attr-defined]
                if user is not None and getattr(user, "pk", None):
                    rule._history_user = user  # type: ignore[attr-defined]
                rule.delete()
        for row in rows:
            if row.index in unknown:
                continue
            found = existing.get(row.id) if row.id is not None else None
            rule = found or FieldRule(mapping_set=mapping_set)
            for name in RULE_FIELDS:
                setattr(rule, name, row.fields[name])
            rule.position = row.index
            if user is not None and getattr(user, "pk", None):
                rule._history_user = user  # type: ignore[attr-defined]
            try:
                field_rule_save(rule=rule, user=user, reason=reason[:100])
            except ValidationError as exc:
                errors.extend(
                    {"row": row.index, "field": f"rules[{row.index}].{field}", "message": message}
                    for field, messages in _messages(exc).items()
                    for message in messages
                )
                continue
            saved.append(rule)
        if errors:
            # Raising inside the atomic block rolls back the rows already saved: all or nothing.
            raise HubValidationError(_rows_failed(errors), errors=errors)
    return saved


def _messages(exc: ValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "error_dict"):
        return {("rule" if key == "__all__" else key): list(value) for key, value in exc.message_dict.items()}
    return {"rule": list(exc.messages)}


def _rows_failed(errors: list[dict[str, Any]]) -> str:
    rows = sorted({error["row"] + 1 for error in errors})
    return f"Rule row(s) {', '.join(map(str, rows))} are not valid; nothing was saved: " + "; ".join(
        error["message"] for error in errors[:3]
    )


def mapping_set_update(
    *, mapping_set: MappingSet, data: dict[str, Any], user: Any = None, reason: str = ""
) -> MappingSet:
    """Rename a draft, change its notes or its parent; the lineage fields never change after creation."""
    if mapping_set.status != MappingStatus.DRAFT:
        raise HubConflictError(f"{mapping_set} is {mapping_set.status}; create a draft version to change it.")
    fixed = [name for name in ("system", "entity", "direction", "legal_entity") if name in data]
    changed = [name for name in fixed if data[name] != getattr(mapping_set, name)]
    if changed:
        raise HubValidationError(
            "The system, entity, direction and legal entity of a mapping are fixed once it is created.",
            errors=[{"field": name, "message": "cannot be changed"} for name in changed],
        )
    parent = data.get("parent", mapping_set.parent)
    if parent is not None and (
        parent.pk == mapping_set.pk
        or parent.entity_id != mapping_set.entity_id
        or parent.direction != mapping_set.direction
    ):
        raise HubValidationError(
            "A regional mapping must extend another mapping of the same entity and direction.",
            errors=[{"field": "parent", "message": f"{parent} cannot be the parent of {mapping_set}."}],
        )
    for name in ("name", "notes", "parent"):
        if name in data:
            setattr(mapping_set, name, data[name])
    with transaction.atomic():
        mapping_set.full_clean()
        mapping_set._change_reason = (reason or "mapping changed")[:100]  # type: ignore[attr-defined]
        mapping_set.save()
    return mapping_set


def mapping_set_delete(*, mapping_set: MappingSet, user: Any = None) -> None:
    """Delete a draft version (with its rules); published and retired versions are the record of what ran."""
    if mapping_set.status != MappingStatus.DRAFT:
        raise HubConflictError(
            f"{mapping_set} is {mapping_set.status}; only a draft can be deleted. Retire it instead."
        )
    with transaction.atomic():
        mapping_set._change_reason = "draft deleted"  # type: ignore[attr-defined]
        mapping_set.delete()


def field_rule_delete(*, rule: FieldRule, user: Any = None, reason: str = "") -> None:
    """Delete one rule of a draft set."""
    if rule.mapping_set.status != MappingStatus.DRAFT:
        raise HubConflictError(f"{rule.mapping_set} is {rule.mapping_set.status}; edit a new draft version instead.")
    rule._change_reason = (reason or "rule deleted")[:100]  # type: ignore[attr-defined]
    rule.delete()


def value_map_save(
    *, value_map: ValueMap, entries: dict[str, Any] | None = None, user: Any = None, reason: str = ""
) -> ValueMap:
    """Save a value map and (when given) replace its entries; every worker recompiles its mappings."""
    from mappings.models import ValueMapEntry
    from mappings.runtime import mapping_cache_invalidate

    with transaction.atomic():
        value_map.full_clean()
        value_map._change_reason = (reason or "value map saved")[:100]  # type: ignore[attr-defined]
        value_map.save()
        if entries is not None:
            for entry in value_map.entries.exclude(source_value__in=list(entries)):
                entry._change_reason = (reason or "entry removed")[:100]  # type: ignore[attr-defined]
                entry.delete()
            for source_value, target_value in entries.items():
                entry = value_map.entries.filter(source_value=source_value).first() or ValueMapEntry(
                    value_map=value_map, source_value=source_value
                )
                if entry.pk and entry.target_value == target_value:
                    continue
                entry.target_value = target_value
                entry.full_clean()
                entry._change_reason = (reason or "entry saved")[:100]  # type: ignore[attr-defined]
                entry.save()
        transaction.on_commit(mapping_cache_invalidate)
    return value_map


def value_map_delete(*, value_map: ValueMap, user: Any = None) -> None:
    """Delete a value map no draft or published mapping uses."""
    from mappings.runtime import mapping_cache_invalidate
    from mappings.selectors import value_map_users

    users = value_map_users(value_map.name)
    if users:
        raise HubConflictError(
            f"Value map {value_map.name} is used by {', '.join(str(m) for m in users)}; remove those steps first."
        )
    with transaction.atomic():
        value_map._change_reason = "value map deleted"  # type: ignore[attr-defined]
        value_map.delete()
        transaction.on_commit(mapping_cache_invalidate)
