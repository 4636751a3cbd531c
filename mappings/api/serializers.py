"""API serializers of the mappings app."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from connectors.models import ConnectedSystem
from governance.models import LegalEntity
from mappings.models import CanonicalEntity, CanonicalSchema, FieldRule, MappingSet, ValueMap


class CanonicalSchemaSerializer(serializers.ModelSerializer):
    """One schema version. Creating one makes a new draft; versions are never edited in place."""

    entity = serializers.SlugRelatedField(slug_field="name", queryset=CanonicalEntity.objects.all())
    created_by: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

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


# --- mapping sets, field rules and value maps ----------------------------------------------------------


class FieldRuleSerializer(serializers.ModelSerializer):
    """One rule: target ← source paths through ordered steps. Saved through field_rule_save (validated)."""

    mapping_set = serializers.PrimaryKeyRelatedField(queryset=MappingSet.objects.all())

    class Meta:
        model = FieldRule
        fields = [
            "id",
            "mapping_set",
            "position",
            "target_path",
            "source_paths",
            "steps",
            "required",
            "has_default",
            "default_value",
            "condition",
            "notes",
        ]
        # The model's clean() (through field_rule_save) checks the unique target with a clearer message.
        validators: list[Any] = []

    def validate_mapping_set(self, value: MappingSet) -> MappingSet:
        if self.instance is not None and value.pk != self.instance.mapping_set_id:
            raise serializers.ValidationError("A rule stays in its mapping set; create a rule in the other set.")
        return value


class NestedFieldRuleSerializer(FieldRuleSerializer):
    class Meta(FieldRuleSerializer.Meta):
        fields = [name for name in FieldRuleSerializer.Meta.fields if name != "mapping_set"]
        read_only_fields = fields


class MappingSetSerializer(serializers.ModelSerializer):
    """A mapping set version with its own rules (read-only here: write them at /field-rules/ or in the editor)."""

    system = serializers.SlugRelatedField(slug_field="slug", queryset=ConnectedSystem.objects.all())
    entity = serializers.SlugRelatedField(slug_field="name", queryset=CanonicalEntity.objects.all())
    legal_entity = serializers.SlugRelatedField(
        slug_field="code", queryset=LegalEntity.objects.all(), required=False, allow_null=True
    )
    # A field named like DRF's Field.parent attribute: the serializer metaclass takes it out of the class.
    parent = serializers.PrimaryKeyRelatedField(  # type: ignore[assignment]
        queryset=MappingSet.objects.all(), required=False, allow_null=True
    )
    created_by: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    published_by: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    rules = NestedFieldRuleSerializer(many=True, read_only=True)

    class Meta:
        model = MappingSet
        fields = [
            "id",
            "name",
            "system",
            "entity",
            "direction",
            "legal_entity",
            "parent",
            "lineage",
            "version",
            "status",
            "notes",
            "created_by",
            "created_at",
            "published_at",
            "published_by",
            "rules",
        ]
        read_only_fields = ["lineage", "version", "status", "created_at", "published_at"]
        validators: list[Any] = []


class MappingPreviewSerializer(serializers.Serializer):
    payload = serializers.JSONField(help_text="A sample record of the source system (a JSON object).")
    rules = serializers.JSONField(
        required=False,
        help_text="Optional: unsaved rules to try instead of the saved ones (the shape of /field-rules/).",
    )

    def validate_payload(self, value: Any) -> Any:
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        return value


class MappingPublishSerializer(serializers.Serializer):
    confirm = serializers.BooleanField(
        default=False, help_text="false: only the regression report; true: publish when every sample maps."
    )


class MappingSampleSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    payload = serializers.JSONField()


class ValueMapEntriesField(serializers.DictField):
    """The entries as {"source value": canonical value}: written as a whole table, read from the entry rows."""

    def get_attribute(self, instance: ValueMap) -> dict[str, Any]:
        return {entry.source_value: entry.target_value for entry in instance.entries.all()}


class ValueMapSerializer(serializers.ModelSerializer):
    """A lookup table; entries are {"source value": canonical value}. Saving one makes every worker recompile."""

    legal_entity = serializers.SlugRelatedField(
        slug_field="code", queryset=LegalEntity.objects.all(), required=False, allow_null=True
    )
    # Written as a whole table; read back from the rows (to_representation).
    entries = ValueMapEntriesField(child=serializers.JSONField(), required=False)

    class Meta:
        model = ValueMap
        fields = ["id", "name", "description", "unmapped", "default_value", "legal_entity", "entries", "updated_at"]
        read_only_fields = ["updated_at"]

    def to_representation(self, instance: ValueMap) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["entries"] = {entry.source_value: entry.target_value for entry in instance.entries.all()}
        return data

    def validate_entries(self, value: dict[str, Any]) -> dict[str, Any]:
        too_long = [key for key in value if len(key) > 200]
        if too_long:
            raise serializers.ValidationError(f"Source values are at most 200 characters: {too_long[0][:40]}…")
        return value
