"""API serializers of the mappings app."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from mappings.models import CanonicalEntity, CanonicalSchema


class CanonicalSchemaSerializer(serializers.ModelSerializer):
    """One schema version. Creating one makes a new draft; versions are never edited in place."""

    entity = serializers.SlugRelatedField(slug_field="name", queryset=CanonicalEntity.objects.all())
    created_by: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = CanonicalSchema
        fields = [
            "id",
            "entity",
            "version",
            "status",
            "json_schema",
            "notes",
            "created_by",
            "created_at",
            "published_at",
        ]
        read_only_fields = ["version", "status", "created_by", "created_at", "published_at"]

    def validate_json_schema(self, value: Any) -> Any:
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        return value


class CanonicalEntitySerializer(serializers.ModelSerializer):
    published_version = serializers.SerializerMethodField()
    versions = serializers.SerializerMethodField()

    class Meta:
        model = CanonicalEntity
        fields = ["id", "name", "description", "published_version", "versions"]

    def _schemas(self, obj: CanonicalEntity) -> list[CanonicalSchema]:
        return sorted(obj.schemas.all(), key=lambda s: -s.version)

    def get_published_version(self, obj: CanonicalEntity) -> int | None:
        return next((s.version for s in self._schemas(obj) if s.status == "published"), None)

    def get_versions(self, obj: CanonicalEntity) -> list[dict[str, Any]]:
        return [{"id": s.pk, "version": s.version, "status": s.status} for s in self._schemas(obj)]


class PayloadValidationSerializer(serializers.Serializer):
    payload = serializers.JSONField(help_text="A canonical record to check against the published schema.")
