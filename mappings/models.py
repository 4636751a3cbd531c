"""Canonical entities and their versioned JSON Schemas."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from simple_history.models import HistoricalRecords

from mappings.choices import CanonicalEntityName, SchemaStatus


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
