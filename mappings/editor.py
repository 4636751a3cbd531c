"""The mapping editor's core: preview of unsaved rules, saving a whole rules table, and what the page reads.

The browser editor and the API both call these; they never save while previewing. A preview compiles
the edited rules in memory (the set's own rules as typed, plus the rules it inherits from its parent and
does not override), so an analyst sees the effect of a change before it is stored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import transaction

from integrationhub.errors import HubConflictError, HubValidationError
from mappings.choices import Direction, MappingStatus
from mappings.compiler import MappingDefinitionError, MappingSpec, RuleSpec, compile_mapping, rule_validate
from mappings.models import FieldRule, MappingSample, MappingSet, ValueMap
from mappings.paths import MISSING
from mappings.runtime import effective_rules, rule_spec, value_maps_load, xrefs_resolve
from mappings.services import PublishReport, field_rule_save

RULE_FIELDS = ("target_path", "source_paths", "steps", "required", "has_default", "default_value", "condition", "notes")


@dataclass(frozen=True)
class RuleRow:
    """One row of the editor's rules table, parsed: the rule's fields, or the problems that stop it parsing."""

    index: int
    id: int | None
    fields: dict[str, Any]
    problems: list[str]


def _json_text(text: Any, *, label: str, problems: list[str], empty: Any) -> Any:
    if not isinstance(text, str):
        return text
    if not text.strip():
        return empty
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(f"{label} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).")
        return empty


def rule_row_parse(*, index: int, row: Any) -> RuleRow:
    """Parse one row as the editor sends it: JSON columns may arrive as text (steps, default, condition).

    Source paths may be a JSON list or comma-separated text. An empty default means "no default"; a default
    that is not JSON is taken as text, so `GBP` works as well as `"GBP"`.
    """
    if not isinstance(row, dict):
        return RuleRow(index=index, id=None, fields={}, problems=["A rule row must be a JSON object."])
    problems: list[str] = []
    sources = row.get("source_paths", [])
    if isinstance(sources, str):
        text = sources.strip()
        if text.startswith("["):
            sources = _json_text(text, label="Source paths", problems=problems, empty=[])
        else:
            sources = [part.strip() for part in text.split(",") if part.strip()]
    steps = _json_text(row.get("steps", []), label="Steps", problems=problems, empty=[])
    condition = _json_text(row.get("condition"), label="Condition", problems=problems, empty=None)
    if "default" in row:  # the editor's single "default" box: empty means none
        raw = row["default"]
        has_default = not (raw is None or (isinstance(raw, str) and not raw.strip()))
        default_value: Any = None
        if has_default and isinstance(raw, str):
            try:
                default_value = json.loads(raw)
            except json.JSONDecodeError:
                default_value = raw.strip()
        elif has_default:
            default_value = raw
    else:
        has_default = bool(row.get("has_default", False))
        default_value = row.get("default_value")
    raw_id = row.get("id")
    try:
        rule_id = int(raw_id) if raw_id not in (None, "") else None
    except (TypeError, ValueError):
        rule_id = None
        problems.append(f"Unknown rule id {raw_id!r}.")
    fields = {
        "target_path": str(row.get("target_path") or "").strip(),
        "source_paths": sources,
        "steps": steps,
        "required": bool(row.get("required", False)),
        "has_default": has_default,
        "default_value": default_value,
        "condition": condition or None,
        "notes": str(row.get("notes") or "")[:300],
    }
    return RuleRow(index=index, id=rule_id, fields=fields, problems=problems)


def rule_rows_parse(rows: Any) -> list[RuleRow]:
    if not isinstance(rows, list):
        raise HubValidationError(
            "The rules must be a list of rule rows.", errors=[{"field": "rules", "message": "expected a list"}]
        )
    return [rule_row_parse(index=index, row=row) for index, row in enumerate(rows)]


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


# --- small writes the API needs that have no service yet (candidates for services.py) ----------------------


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


def value_map_users(name: str) -> list[MappingSet]:
    """Draft and published mapping sets with a map_value step naming the value map."""
    from mappings.runtime import value_map_names_used

    sets = MappingSet.objects.exclude(status=MappingStatus.RETIRED).prefetch_related("rules")
    return [mapping_set for mapping_set in sets if name in value_map_names_used(list(mapping_set.rules.all()))]


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

    users = value_map_users(value_map.name)
    if users:
        raise HubConflictError(
            f"Value map {value_map.name} is used by {', '.join(str(m) for m in users)}; remove those steps first."
        )
    with transaction.atomic():
        value_map._change_reason = "value map deleted"  # type: ignore[attr-defined]
        value_map.delete()
        transaction.on_commit(mapping_cache_invalidate)
