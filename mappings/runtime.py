"""Running published mappings: building a MappingSpec from the database, and the per-process compile cache.

A compiled mapping is cached per process. Publishing, retiring or editing a value map bumps a
generation counter in the shared cache (Redis in production), and every process drops its compiled
mappings the next time it sees a newer generation, so a publish reaches every worker.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from django.core.cache import cache
from django.db.models import Q

from mappings.choices import Direction, MappingStatus
from mappings.compiler import CompiledMapping, MappingSpec, RuleSpec, XrefKey, compile_mapping
from mappings.models import FieldRule, MappingSet, ValueMap
from mappings.paths import MISSING
from mappings.transforms import ValueMapData

GENERATION_KEY = "mappings:generation"

_compiled: dict[int, CompiledMapping] = {}
_seen_generation: int | None = None


def mapping_generation() -> int:
    """The shared generation number; it changes whenever a published mapping or a value map changes."""
    value = cache.get(GENERATION_KEY)
    if value is None:
        cache.add(GENERATION_KEY, 1, timeout=None)
        value = cache.get(GENERATION_KEY, 1)
    return int(value)


def mapping_cache_invalidate() -> int:
    """Make every process recompile its mappings; returns the new generation."""
    try:
        return int(cache.incr(GENERATION_KEY))
    except ValueError:
        cache.add(GENERATION_KEY, 2, timeout=None)
        return int(cache.get(GENERATION_KEY, 2))


def effective_rules(mapping_set: MappingSet) -> list[FieldRule]:
    """The set's own rules plus its ancestors' rules that it does not override (by target path)."""
    chain: list[MappingSet] = []
    current: MappingSet | None = mapping_set
    while current is not None and current not in chain:
        chain.append(current)
        current = current.parent
    rules_by_target: dict[str, FieldRule] = {}
    order: list[str] = []
    # Oldest ancestor first, so each descendant's rule replaces the inherited one with the same target.
    for level in reversed(chain):
        for rule in level.rules.all():
            if rule.target_path not in rules_by_target:
                order.append(rule.target_path)
            rules_by_target[rule.target_path] = rule
    return [rules_by_target[target] for target in order]


def rule_spec(rule: FieldRule) -> RuleSpec:
    return RuleSpec(
        target=rule.target_path,
        sources=list(rule.source_paths or []),
        steps=list(rule.steps or []),
        required=rule.required,
        default=rule.default_value if rule.has_default else MISSING,
        condition=rule.condition or None,
    )


def value_map_names_used(rules: list[FieldRule]) -> set[str]:
    return {
        str((step.get("params") or {}).get("value_map"))
        for rule in rules
        for step in rule.steps or []
        if isinstance(step, dict) and step.get("transform") == "map_value"
    }


def value_maps_load(names: set[str]) -> dict[str, ValueMapData]:
    """Load the named value maps with all their entries in two queries."""
    maps = ValueMap.objects.filter(name__in=names).prefetch_related("entries")
    return {
        value_map.name: ValueMapData(
            name=value_map.name,
            entries={entry.source_value: entry.target_value for entry in value_map.entries.all()},
            unmapped=value_map.unmapped,
            default=value_map.default_value,
        )
        for value_map in maps
    }


def mapping_spec_build(mapping_set: MappingSet) -> MappingSpec:
    """The plain-data spec of a mapping set: effective rules, the value maps they use, the output schema."""
    rules = effective_rules(mapping_set)
    output_schema = None
    if mapping_set.direction == Direction.INBOUND:
        schema = mapping_set.entity.published_schema
        output_schema = schema.json_schema if schema else None
    return MappingSpec(
        label=f"{mapping_set.name} v{mapping_set.version}",
        rules=[rule_spec(rule) for rule in rules],
        value_maps=value_maps_load(value_map_names_used(rules)),
        output_schema=output_schema,
    )


def mapping_compile(mapping_set: MappingSet) -> CompiledMapping:
    """Compile without caching (drafts, previews, the publish gate)."""
    return compile_mapping(mapping_spec_build(mapping_set))


def compiled_mapping(mapping_set_id: int) -> CompiledMapping:
    """The compiled callable of a mapping set, compiled once per process and generation."""
    global _seen_generation
    generation = mapping_generation()
    if generation != _seen_generation:
        _compiled.clear()
        _seen_generation = generation
    compiled = _compiled.get(mapping_set_id)
    if compiled is None:
        mapping_set = MappingSet.objects.select_related("entity", "parent").get(pk=mapping_set_id)
        compiled = _compiled[mapping_set_id] = mapping_compile(mapping_set)
    return compiled


def published_mapping_set(
    *, system_id: int, entity_name: str, direction: str, legal_entity_id: int | None = None
) -> MappingSet | None:
    """The published set for a system, entity and direction: the regional one for the entity if any, else enterprise."""
    candidates = MappingSet.objects.filter(
        system_id=system_id, entity__name=entity_name, direction=direction, status=MappingStatus.PUBLISHED
    ).filter(Q(legal_entity_id=legal_entity_id) | Q(legal_entity__isnull=True))
    regional = [candidate for candidate in candidates if candidate.legal_entity_id == legal_entity_id]
    if legal_entity_id is not None and regional:
        return regional[0]
    return next((candidate for candidate in candidates if candidate.legal_entity_id is None), None)


def xrefs_resolve(keys: set[XrefKey]) -> Mapping[XrefKey, str]:
    """Canonical ids for (system slug, entity, external id) keys, in one query for the whole batch."""
    from sync.models import CrossReference

    if not keys:
        return {}
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for system, entity, external_id in keys:
        grouped[(system, entity)].append(external_id)
    condition = Q()
    for (system, entity), external_ids in grouped.items():
        condition |= Q(system__slug=system, entity=entity, external_id__in=external_ids)
    rows: Any = CrossReference.objects.filter(condition).values_list(
        "system__slug", "entity", "external_id", "canonical_id"
    )
    return {(system, entity, external_id): canonical_id for system, entity, external_id, canonical_id in rows}
