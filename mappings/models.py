"""Canonical entities and their versioned JSON Schemas; mapping sets, field rules and value maps."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from simple_history.models import HistoricalRecords

from mappings.choices import (
    CanonicalEntityName,
    Direction,
    MappingStatus,
    SampleOrigin,
    SchemaStatus,
    UnmappedBehaviour,
)
from mappings.compiler import RuleSpec as RuleSpecForModel


class CanonicalEntity(models.Model):
    """A kind of business record every flow passes through (client, project, time entry, ...)."""

    name = models.CharField(max_length=40, unique=True, choices=CanonicalEntityName.choices)
    description = models.TextField(blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "canonical entities"

    def __str__(self) -> str:
        return self.name

    @property
    def published_schema(self) -> CanonicalSchema | None:
        return self.schemas.filter(status=SchemaStatus.PUBLISHED).order_by("-version").first()


class CanonicalSchema(models.Model):
    """One version of an entity's JSON Schema. Edits make a new draft version; publishing retires the previous one."""

    entity = models.ForeignKey(CanonicalEntity, on_delete=models.CASCADE, related_name="schemas")
    version = models.PositiveIntegerField()
    json_schema = models.JSONField()
    status = models.CharField(max_length=20, choices=SchemaStatus.choices, default=SchemaStatus.DRAFT)
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["entity__name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["entity", "version"], name="unique_schema_version"),
            models.UniqueConstraint(
                fields=["entity"],
                condition=models.Q(status="published"),
                name="one_published_schema_per_entity",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.entity.name} v{self.version} ({self.status})"


class ValueMap(models.Model):
    """An editable lookup table used by the map_value transform (for example CRM stage → canonical status)."""

    name = models.SlugField(max_length=80, unique=True, help_text="Referenced by map_value steps.")
    description = models.TextField(blank=True)
    unmapped = models.CharField(max_length=20, choices=UnmappedBehaviour.choices, default=UnmappedBehaviour.ERROR)
    default_value = models.JSONField(null=True, blank=True, help_text="Used for unmapped values when so configured.")
    legal_entity = models.ForeignKey(
        "governance.LegalEntity",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="value_maps",
        help_text="Empty for an enterprise-wide map.",
    )
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ValueMapEntry(models.Model):
    """One source value and the canonical value it becomes."""

    value_map = models.ForeignKey(ValueMap, on_delete=models.CASCADE, related_name="entries")
    source_value = models.CharField(max_length=200)
    target_value = models.JSONField()
    history = HistoricalRecords()

    class Meta:
        ordering = ["value_map", "source_value"]
        verbose_name_plural = "value map entries"
        constraints = [
            models.UniqueConstraint(fields=["value_map", "source_value"], name="unique_source_value_per_map")
        ]

    def __str__(self) -> str:
        return f"{self.source_value} → {self.target_value}"


class MappingSet(models.Model):
    """Field rules for one system, entity and direction; versioned draft → published → retired.

    All versions of one mapping share a lineage (system, entity, direction, legal entity); at most one
    version of a lineage is published at a time.
    """

    name = models.CharField(max_length=200)
    system = models.ForeignKey("connectors.ConnectedSystem", on_delete=models.PROTECT, related_name="mapping_sets")
    entity = models.ForeignKey(CanonicalEntity, on_delete=models.PROTECT, related_name="mapping_sets")
    direction = models.CharField(max_length=10, choices=Direction.choices)
    legal_entity = models.ForeignKey(
        "governance.LegalEntity",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="mapping_sets",
        help_text="Empty for an enterprise mapping; set for a regional mapping.",
    )
    parent = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="children",
        help_text="A regional mapping inherits every rule of its parent and overrides the ones it names.",
    )
    lineage = models.CharField(max_length=100, editable=False, db_index=True)
    version = models.PositiveIntegerField(default=1, editable=False)
    status = models.CharField(max_length=20, choices=MappingStatus.choices, default=MappingStatus.DRAFT)
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True, editable=False)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    published_without_samples_reason = models.TextField(
        blank=True,
        editable=False,
        help_text="Why this version was published with no sample to replay (written by the publisher).",
    )
    history = HistoricalRecords()

    class Meta:
        ordering = ["system__name", "entity__name", "direction", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["lineage", "version"], name="unique_mapping_version"),
            models.UniqueConstraint(
                fields=["lineage"], condition=models.Q(status="published"), name="one_published_mapping_per_lineage"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version} ({self.status})"

    def save(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        # The lineage is derived, never typed: it is what ties the versions of one mapping together.
        self.lineage = self.lineage_for(
            system_id=self.system_id,
            entity_id=self.entity_id,
            direction=self.direction,
            legal_entity_id=self.legal_entity_id,
        )
        super().save(*args, **kwargs)

    @staticmethod
    def lineage_for(*, system_id: int, entity_id: int, direction: str, legal_entity_id: int | None) -> str:
        return f"{system_id}:{entity_id}:{direction}:{legal_entity_id or '-'}"


class FieldRule(models.Model):
    """Target field ← source path(s) through ordered transform steps; optional required, default and condition."""

    mapping_set = models.ForeignKey(MappingSet, on_delete=models.CASCADE, related_name="rules")
    position = models.PositiveIntegerField(default=0)
    target_path = models.CharField(max_length=300, help_text="For example project.client.id or lines[*].amount.")
    source_paths = models.JSONField(default=list, help_text='One or more source paths, for example ["Account.Id"].')
    steps = models.JSONField(
        default=list, blank=True, help_text='Ordered transforms: [{"transform": "trim", "params": {}}].'
    )
    required = models.BooleanField(default=False)
    has_default = models.BooleanField(default=False)
    default_value = models.JSONField(null=True, blank=True)
    condition = models.JSONField(
        null=True, blank=True, help_text='Optional: {"path": "StageName", "op": "equals", "value": "Closed Won"}.'
    )
    notes = models.CharField(max_length=300, blank=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["mapping_set", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["mapping_set", "target_path"], name="unique_target_per_mapping_set")
        ]

    def __str__(self) -> str:
        return f"{self.target_path} ← {', '.join(self.source_paths or [])}"

    def clean(self) -> None:
        # Rules are checked when saved (admin, API, import alike), never first when a message runs.
        from mappings.compiler import rule_validate
        from mappings.paths import MISSING

        if not isinstance(self.source_paths, list) or not all(isinstance(p, str) for p in self.source_paths):
            raise ValidationError({"source_paths": 'List the source paths, for example ["Account.Id"].'})
        if not isinstance(self.steps, list):
            raise ValidationError({"steps": 'Steps are a list, for example [{"transform": "trim"}].'})
        problems = rule_validate(
            RuleSpecForModel(
                target=self.target_path,
                sources=self.source_paths,
                steps=self.steps,
                required=self.required,
                default=self.default_value if self.has_default else MISSING,
                condition=self.condition or None,
            ),
            value_map_names=set(ValueMap.objects.values_list("name", flat=True)),
        )
        if problems:
            raise ValidationError({"steps": problems})
        if self.mapping_set_id and self.mapping_set.status != MappingStatus.DRAFT:
            raise ValidationError(
                f"{self.mapping_set} is {self.mapping_set.status}; edit a new draft version instead (Create draft)."
            )


class MappingSample(models.Model):
    """A sample payload of a mapping lineage; every sample must map cleanly before a version is published.

    Analysts save samples by name; the pipeline keeps the most recent real payloads that mapped cleanly
    (captured, bounded by HUB_MAPPING_SAMPLES_KEPT, sensitive fields masked) so the gate always replays real data.
    """

    lineage = models.CharField(max_length=100, db_index=True)
    name = models.CharField(max_length=200)
    payload = models.JSONField()
    origin = models.CharField(max_length=20, choices=SampleOrigin.choices, default=SampleOrigin.SAVED)
    message_id = models.BigIntegerField(null=True, blank=True, help_text="The message a captured sample came from.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["lineage", "name"]
        constraints = [models.UniqueConstraint(fields=["lineage", "name"], name="unique_sample_name_per_lineage")]

    def __str__(self) -> str:
        return self.name
