"""The engine's rows: cross-references between canonical ids and external ids."""

from __future__ import annotations

from django.db import models


class CrossReference(models.Model):
    """Canonical id ↔ external id in one connected system: the basis of idempotent upserts and lookups."""

    entity = models.CharField(max_length=40, help_text="Canonical entity name, for example client.")
    canonical_id = models.CharField(max_length=100)
    system = models.ForeignKey("connectors.ConnectedSystem", on_delete=models.PROTECT, related_name="xrefs")
    external_id = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["system", "entity", "external_id"], name="unique_external_id_per_system"),
            models.UniqueConstraint(fields=["system", "entity", "canonical_id"], name="unique_canonical_id_per_system"),
        ]
        indexes = [models.Index(fields=["entity", "canonical_id"], name="xref_canonical_idx")]

    def __str__(self) -> str:
        return f"{self.entity} {self.canonical_id} = {self.system_id}:{self.external_id}"
