"""API serializers of the connectors app.

Secrets are write-only: a response says whether credentials and a webhook secret are set and when they
last changed, never what they are.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from connectors.models import ConnectedSystem
from connectors.registry import registry
from governance.models import LegalEntity


class ConnectedSystemSerializer(serializers.ModelSerializer):
    legal_entities = serializers.SlugRelatedField(
        slug_field="code", queryset=LegalEntity.objects.all(), many=True, required=False
    )
    credentials = serializers.JSONField(
        write_only=True,
        required=False,
        help_text="Write-only JSON object of secret parameters. Omit to keep the current value; {} clears it.",
    )
    webhook_secret = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Write-only. Omit to keep the current value; an empty string clears it.",
    )
    has_credentials = serializers.BooleanField(read_only=True)
    has_webhook_secret = serializers.BooleanField(read_only=True)

    class Meta:
        model = ConnectedSystem
        fields = [
            "id",
            "name",
            "slug",
            "role",
            "connector_type",
            "base_url",
            "settings",
            "legal_entities",
            "rate_limit_per_second",
            "max_concurrency",
            "inbound_rate",
            "state",
            "credentials",
            "webhook_secret",
            "has_credentials",
            "has_webhook_secret",
            "credentials_updated_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["state", "credentials_updated_at", "created_at", "updated_at"]

    def validate_connector_type(self, value: str) -> str:
        if value not in registry:
            raise serializers.ValidationError(
                f"Unknown connector type '{value}'. Registered types: {', '.join(registry.names())}."
            )
        return value

    def validate_credentials(self, value: Any) -> Any:
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        return value


class ConnectorTypeSerializer(serializers.Serializer):
    """A registered connector type: what it needs in settings and credentials and what it can do."""

    name = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]
    role_hint = serializers.CharField()
    description = serializers.CharField()
    parameter_schema = serializers.JSONField()
    sensitive_parameters = serializers.ListField(child=serializers.CharField())
    capabilities = serializers.ListField(child=serializers.CharField())


class HealthResultSerializer(serializers.Serializer):
    """The outcome of a connection test."""

    ok = serializers.BooleanField()
    status_code = serializers.IntegerField(allow_null=True)
    duration_ms = serializers.FloatField()
    message = serializers.CharField()
    retryable = serializers.BooleanField(allow_null=True)
