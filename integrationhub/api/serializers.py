"""API serializers of the project app: API keys (the key itself only in the creation answer) and audit events."""

from __future__ import annotations

from rest_framework import serializers

from governance.models import LegalEntity
from integrationhub.models import ApiKey, AuditEvent
from integrationhub.scopes import ALL_SCOPES


class ApiKeySerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True, default=None)
    legal_entity: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="code", read_only=True, allow_null=True
    )
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ALL_SCOPES), read_only=True)
    status = serializers.ChoiceField(choices=["active", "expired", "revoked"], read_only=True)

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "scopes",
            "legal_entity",
            "all_entities",
            "owner",
            "created_by",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "status",
        ]
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer):
    """What a new key needs; it acts as the user who creates it."""

    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ALL_SCOPES), allow_empty=False)
    legal_entity = serializers.SlugRelatedField(
        slug_field="code", queryset=LegalEntity.objects.all(), required=False, allow_null=True
    )
    all_entities = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Every legal entity you may see (integration admins only). Without it or a legal_entity, the key "
        "reads no entity's operational data.",
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The full key. Shown only in this answer: store it now.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "occurred_at",
            "actor_id",
            "actor_username",
            "api_key_prefix",
            "action",
            "object_type",
            "object_id",
            "summary",
            "details",
            "correlation_id",
            "ip",
            "user_agent",
        ]
        read_only_fields = fields
