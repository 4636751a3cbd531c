"""API serializers of the mappings app."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from connectors.models import ConnectedSystem
from governance.models import LegalEntity
from mappings.choices import UnmappedBehaviour
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


class PayloadValidationErrorSerializer(serializers.Serializer):
    path = serializers.CharField(help_text="Where in the payload, e.g. `$.lines[0].amount`.")
    message = serializers.CharField()
    keyword = serializers.CharField(help_text="The JSON Schema keyword that failed, e.g. `required`.")


class PayloadValidationResultSerializer(serializers.Serializer):
    """The answer of canonical-entities/{name}/validate/: whether the payload is valid, and why not."""

    valid = serializers.BooleanField()
    errors = PayloadValidationErrorSerializer(many=True)  # type: ignore[assignment]  # a field


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
    no_sample_reason = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=2000,
        help_text="Required to confirm when the mapping has no sample to replay: why publishing unchecked is safe.",
    )


class MappingSampleSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    payload = serializers.JSONField()


class MappingSampleSavedSerializer(MappingSampleSerializer):
    id = serializers.IntegerField()


class MappingErrorSerializer(serializers.Serializer):
    target = serializers.CharField(allow_blank=True, help_text="The target field the rule writes.")
    source = serializers.CharField(allow_blank=True, help_text="The source path it read, if any.")  # type: ignore[assignment]  # a field
    value = serializers.JSONField(allow_null=True, help_text="The value that could not be mapped.")
    message = serializers.CharField()


class MappingPreviewResultSerializer(serializers.Serializer):
    """The answer of a preview: the mapped record and the rules that failed."""

    output = serializers.JSONField(help_text="The mapped record (a JSON object).")
    errors = MappingErrorSerializer(many=True)  # type: ignore[assignment]  # a field


class PublishOutcomeSerializer(serializers.Serializer):
    sample = serializers.CharField(help_text="The saved sample's name.")
    output = serializers.JSONField(help_text="What this version makes of the sample.")
    errors = serializers.JSONField(help_text="Why the sample does not map, if it does not.")  # type: ignore[assignment]  # a field
    diff = serializers.JSONField(help_text="Per changed output path: the value before and after.")


class MappingPublishReportSerializer(serializers.Serializer):
    """The regression report of a publish: per saved sample the output diff or the blocking errors."""

    mapping_set = serializers.IntegerField()
    version = serializers.IntegerField()
    previous_version = serializers.IntegerField(allow_null=True)
    published = serializers.BooleanField()
    blocked = serializers.BooleanField()
    outcomes = PublishOutcomeSerializer(many=True)


class MappingExportRuleSerializer(serializers.Serializer):
    """One field rule of an export; the model's own validation runs again on import."""

    position = serializers.IntegerField()
    target_path = serializers.CharField()
    source_paths = serializers.ListField(child=serializers.CharField(allow_blank=True), required=False, default=list)
    steps = serializers.ListField(child=serializers.JSONField(), required=False, default=list)
    required = serializers.BooleanField(required=False, default=False)  # type: ignore[assignment]  # a field named "required"
    has_default = serializers.BooleanField(required=False, default=False)
    default_value = serializers.JSONField(required=False, allow_null=True, default=None)
    condition = serializers.JSONField(required=False, allow_null=True, default=None)
    notes = serializers.CharField(required=False, allow_blank=True, default="")


class MappingExportValueMapSerializer(serializers.Serializer):
    """A value map the exported rules use, with its whole table of entries."""

    name = serializers.SlugField(max_length=80)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    unmapped = serializers.ChoiceField(
        choices=UnmappedBehaviour.choices, required=False, default=UnmappedBehaviour.ERROR
    )
    default_value = serializers.JSONField(required=False, allow_null=True, default=None)
    entries = serializers.DictField(child=serializers.JSONField(), required=False, default=dict)

    def validate_entries(self, entries: dict[str, Any]) -> dict[str, Any]:
        too_long = [source for source in entries if len(source) > 200]
        if too_long:
            raise serializers.ValidationError(f"A source value is at most 200 characters: {too_long[0][:40]!r}….")
        return entries


class MappingExportSampleSerializer(serializers.Serializer):
    """A saved sample payload of the lineage; the publish gate replays it."""

    name = serializers.CharField(max_length=200)
    payload = serializers.JSONField()


class MappingSetExportSerializer(serializers.Serializer):
    """A mapping set as a portable JSON document (the format `import` takes)."""

    format = serializers.CharField()
    name = serializers.CharField()
    system = serializers.CharField(help_text="The connected system's slug.")
    entity = serializers.CharField()
    # The model field's own choices, so the schema shares one direction enum with the mapping sets.
    direction = serializers.ChoiceField(choices=MappingSet._meta.get_field("direction").choices or [])
    legal_entity = serializers.CharField(allow_null=True, required=False, default=None)
    parent = serializers.JSONField(allow_null=True, required=False, default=None)  # type: ignore[assignment]
    version = serializers.IntegerField(required=False)
    status = serializers.CharField(required=False)
    notes = serializers.CharField(allow_blank=True, required=False, default="")
    rules = MappingExportRuleSerializer(many=True)
    value_maps = MappingExportValueMapSerializer(many=True, required=False, default=list)
    samples = MappingExportSampleSerializer(many=True, required=False, default=list)


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
