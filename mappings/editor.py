"""The mapping editor's reads: preview of unsaved rules and what the page shows (writes live in services.py).

The browser editor and the API both call these; they never save while previewing. A preview compiles
the edited rules in memory (the set's own rules as typed, plus the rules it inherits from its parent and
does not override), so an analyst sees the effect of a change before it is stored.
"""

from __future__ import annotations

import json
from typing import Any

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist

from integrationhub.errors import HubValidationError
from mappings.choices import Direction
from mappings.compiler import MappingDefinitionError, MappingSpec, RuleSpec, compile_mapping, rule_validate
from mappings.models import FieldRule, MappingSample, MappingSet, ValueMap
from mappings.paths import MISSING
from mappings.rule_rows import RuleRow, rule_rows_parse
from mappings.runtime import effective_rules, rule_spec, value_maps_load, xrefs_resolve
from mappings.services import PublishReport


def _spec_of(fields: dict[str, Any]) -> RuleSpec:
    return RuleSpec(
        target=fields["target_path"],
        sources=list(fields["source_paths"]) if isinstance(fields["source_paths"], list) else [],
        steps=list(fields["steps"]) if isinstance(fields["steps"], list) else [],
        required=fields["required"],
        default=fields["default_value"] if fields["has_default"] else MISSING,
        condition=fields["condition"],
    )


def _row_problems(row: RuleRow, *, value_map_names: set[str], seen_targets: dict[str, int]) -> list[str]:
    problems = list(row.problems)
    fields = row.fields
    if not problems:
        if not isinstance(fields["source_paths"], list) or not all(isinstance(p, str) for p in fields["source_paths"]):
            problems.append('List the source paths, for example ["Account.Id"].')
        elif not isinstance(fields["steps"], list):
            problems.append('Steps are a list, for example [{"transform": "trim"}].')
        else:
            problems.extend(rule_validate(_spec_of(fields), value_map_names=value_map_names))
    target = fields.get("target_path")
    if target:
        if target in seen_targets:
            problems.append(f"Target {target} is also mapped by row {seen_targets[target] + 1}.")
        else:
            seen_targets[target] = row.index
    return problems


def mapping_preview_rules(*, mapping_set: MappingSet, rules: Any, payload: Any) -> dict[str, Any]:
    """Map `payload` with the edited (unsaved) rules of `mapping_set` plus what it inherits; nothing is saved.

    Returns {"output", "errors", "rule_errors"}: rule_errors lists {"row", "target", "messages"} for rows
    that do not validate; those rows are left out of the preview so the rest still maps while one is typed.
    """
    if not isinstance(payload, dict):
        raise HubValidationError(
            "The sample payload must be a JSON object.", errors=[{"field": "payload", "message": "expected an object"}]
        )
    rows = rule_rows_parse(rules)
    value_map_names = set(ValueMap.objects.values_list("name", flat=True))
    seen: dict[str, int] = {}
    rule_errors: list[dict[str, Any]] = []
    own: list[RuleSpec] = []
    for row in rows:
        problems = _row_problems(row, value_map_names=value_map_names, seen_targets=seen)
        if problems:
            rule_errors.append({"row": row.index, "target": row.fields.get("target_path", ""), "messages": problems})
        else:
            own.append(_spec_of(row.fields))
    own_targets = {row.fields.get("target_path") for row in rows}
    inherited = [rule_spec(rule) for rule in inherited_rules(mapping_set) if rule.target_path not in own_targets]
    specs = inherited + own
    used = {
        str((step.get("params") or {}).get("value_map"))
        for spec in specs
        for step in spec.steps
        if isinstance(step, dict) and step.get("transform") == "map_value"
    }
    output_schema = None
    if mapping_set.direction == Direction.INBOUND:
        schema = mapping_set.entity.published_schema
        output_schema = schema.json_schema if schema else None
    spec = MappingSpec(
        label=f"{mapping_set.name} v{mapping_set.version} (editing)",
        rules=specs,
        value_maps=value_maps_load(used),
        output_schema=output_schema,
    )
    try:
        compiled = compile_mapping(spec)
    except MappingDefinitionError as exc:
        return {
            "output": {},
            "errors": [{"target": "", "source": "", "value": None, "message": p} for p in exc.problems],
            "rule_errors": rule_errors,
        }
    if compiled.uses_xrefs:
        compiled.prefetch_xrefs([payload], xrefs_resolve)
    result = compiled.map_one(payload)
    return {
        "output": result.output,
        "errors": [error.as_dict() for error in result.errors],
        "rule_errors": rule_errors,
    }


def inherited_rules(mapping_set: MappingSet) -> list[FieldRule]:
    """The rules the set inherits from its parent chain (before its own rules override any of them)."""
    return effective_rules(mapping_set.parent) if mapping_set.parent is not None else []


def rule_as_row(rule: FieldRule) -> dict[str, Any]:
    """A saved rule in the shape the editor edits (and sends back)."""
    return {
        "id": rule.pk,
        "target_path": rule.target_path,
        "source_paths": list(rule.source_paths or []),
        "steps": list(rule.steps or []),
        "required": rule.required,
        "has_default": rule.has_default,
        "default_value": rule.default_value,
        "condition": rule.condition,
        "notes": rule.notes,
    }


def publish_report_as_dict(report: PublishReport) -> dict[str, Any]:
    """A publish report as JSON: per sample the output diff (path, before, after) or the blocking errors."""
    return {
        "mapping_set": report.mapping_set_id,
        "version": report.version,
        "previous_version": report.previous_version,
        "published": report.published,
        "blocked": bool(report.blocking),
        "outcomes": [
            {"sample": outcome.sample, "output": outcome.output, "errors": outcome.errors, "diff": outcome.diff}
            for outcome in report.outcomes
        ],
    }


def editor_samples(mapping_set: MappingSet) -> list[dict[str, Any]]:
    """The lineage's saved samples, for the editor's picker."""
    return [
        {"id": sample.pk, "name": sample.name, "payload": sample.payload}
        for sample in MappingSample.objects.filter(lineage=mapping_set.lineage).order_by("name")
    ]


def editor_recent_messages(mapping_set: MappingSet, *, limit: int = 20) -> list[dict[str, Any]]:
    """Recent messages of the set's system and entity, as sample candidates; [] where the sync engine has none.

    Inbound mappings read a message's raw payload (what the system sent); outbound mappings read the
    canonical payload (what the hub sends on). The sync app's Message model is looked up at run time so the
    editor also works in installations (or checkouts) without it.
    """
    try:
        message_model = apps.get_model("sync", "Message")
    except LookupError:
        return []
    field = "raw_payload" if mapping_set.direction == Direction.INBOUND else "canonical_payload"
    try:
        for name in (field, "system", "entity", "received_at"):
            message_model._meta.get_field(name)
    except FieldDoesNotExist:
        return []
    rows = (
        message_model.objects.filter(system_id=mapping_set.system_id, entity=mapping_set.entity.name)
        .exclude(**{f"{field}__isnull": True})
        .order_by("-received_at", "-id")
        .values("id", "event_type", "received_at", field)[:limit]
    )
    return [
        {
            "id": row["id"],
            "name": f"#{row['id']} {row.get('event_type') or ''} {row['received_at']:%Y-%m-%d %H:%M}".strip(),
            "payload": row[field],
        }
        for row in rows
        if isinstance(row[field], dict)
    ]


def _schema_fields(
    node: Any, definitions: dict[str, Any], prefix: str, required: bool, trail: tuple[str, ...]
) -> list[dict[str, Any]]:
    if not isinstance(node, dict):
        return []
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name in trail:
            return []
        merged = {**(definitions.get(name) or {}), **{k: v for k, v in node.items() if k != "$ref"}}
        return _schema_fields(merged, definitions, prefix, required, (*trail, name))
    kind = node.get("type")
    if "enum" in node:
        kind = "enum"
    kind_text = "/".join(kind) if isinstance(kind, list) else str(kind or "any")
    fields: list[dict[str, Any]] = []
    if prefix:
        fields.append(
            {
                "path": prefix,
                "type": kind_text,
                "format": node.get("format", ""),
                "enum": node.get("enum") or [],
                "required": required,
                "sensitive": node.get("x-sensitive") is True,
                "description": node.get("description", ""),
            }
        )
    properties = node.get("properties") or {}
    needed = set(node.get("required") or [])
    for name, child in properties.items():
        path = f"{prefix}.{name}" if prefix else name
        fields.extend(_schema_fields(child, definitions, path, required and name in needed, trail))
    if isinstance(node.get("items"), dict) and prefix:
        fields.extend(_schema_fields(node["items"], definitions, f"{prefix}[*]", False, trail))
    return fields


def canonical_target_fields(mapping_set: MappingSet) -> list[dict[str, Any]]:
    """The published canonical schema's fields an inbound rule can target (path, type, format, enum, required).

    A nested field counts as required when it and every object above it are required. Outbound mappings
    target the other system's fields, which the hub has no schema for: [] (the editor then takes a typed path).
    """
    if mapping_set.direction != Direction.INBOUND:
        return []
    schema = mapping_set.entity.published_schema
    if schema is None:
        return []
    return _schema_fields(schema.json_schema, schema.json_schema.get("$defs") or {}, "", True, ())


def transform_catalogue() -> list[dict[str, Any]]:
    """Every registered transform with its category, summary and parameter schema, for the step forms."""
    from mappings.transforms import TRANSFORMS

    return [
        {
            "name": name,
            "category": getattr(spec, "category", ""),
            "summary": (getattr(spec, "doc", "") or "").strip().split("\n")[0],
            "params_schema": spec.params_schema,
        }
        for name, spec in sorted(TRANSFORMS.items())
    ]


def steps_readable(steps: Any) -> str:
    """Steps as people read them: `map_value (value_map: sf-stage) → upper`, never a Python repr."""
    if not isinstance(steps, list) or not steps:
        return "copied as is"
    parts = []
    for step in steps:
        if not isinstance(step, dict):
            parts.append(json.dumps(step, ensure_ascii=False))
            continue
        params = step.get("params") or {}
        details = ", ".join(f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in params.items())
        parts.append(f"{step.get('transform')} ({details})" if details else str(step.get("transform")))
    return " → ".join(parts)


def inherited_rows(mapping_set: MappingSet) -> list[dict[str, Any]]:
    """The parent's effective rules, readable: target, sources, steps in words, required, default, condition."""
    return [
        {
            "target_path": rule.target_path,
            "source_paths": ", ".join(rule.source_paths or []),
            "steps": steps_readable(rule.steps),
            "required": rule.required,
            "default": json.dumps(rule.default_value, ensure_ascii=False) if rule.has_default else "",
            "condition": (
                f"{rule.condition.get('path')} {rule.condition.get('op')} "
                f"{json.dumps(rule.condition.get('value'), ensure_ascii=False)}"
                if isinstance(rule.condition, dict)
                else ""
            ),
        }
        for rule in inherited_rules(mapping_set)
    ]
