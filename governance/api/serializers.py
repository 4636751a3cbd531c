"""API serializers of the governance app.

Serializers only parse and render: model validation (clean()) runs in the services the views call, and
its errors come back as problem+json with the field names.
"""

from __future__ import annotations

from rest_framework import serializers

from connectors.models import ConnectedSystem
from governance.models import LegalEntity, OwnershipRule, RateCard, RateCardLine, SyncPolicy
from mappings.models import CanonicalEntity


class LegalEntitySerializer(serializers.ModelSerializer):
    class Meta:
        model = LegalEntity
        fields = [
            "id",
            "code",
            "name",
            "country",
            "base_currency",
            "tax_jurisdiction",
            "region",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]


class OwnershipRuleSerializer(serializers.ModelSerializer):
    entity = serializers.SlugRelatedField(slug_field="name", queryset=CanonicalEntity.objects.all())
    owning_system = serializers.SlugRelatedField(slug_field="slug", queryset=ConnectedSystem.objects.all())
    field_group = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, help_text="Field paths; empty for all fields."
    )
    description = serializers.CharField(source="__str__", read_only=True)

    class Meta:
        model = OwnershipRule
        fields = [
            "id",
            "entity",
            "field_group",
            "lifecycle_stage",
            "owning_system",
            "conflict_action",
            "notes",
            "description",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]


class RateCardLineSerializer(serializers.ModelSerializer):
    class Meta:
        model = RateCardLine
        fields = ["id", "role", "bill_rate", "cost_rate", "unit"]
        read_only_fields = ["id"]


class RateCardSerializer(serializers.ModelSerializer):
    legal_entity = serializers.SlugRelatedField(slug_field="code", queryset=LegalEntity.objects.all())
    lines = RateCardLineSerializer(
        many=True, required=False, help_text="The card's lines; when sent, they replace the card's lines (by role)."
    )
    scope = serializers.CharField(read_only=True)

    class Meta:
        model = RateCard
        fields = [
            "id",
            "name",
            "legal_entity",
            "currency",
            "valid_from",
            "valid_to",
            "client_ref",
            "contract_ref",
            "tolerance_percent",
            "scope",
            "lines",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]


class RateQuoteSerializer(serializers.Serializer):
    """The answer of /rate-cards/lookup/."""

    bill_rate = serializers.DecimalField(max_digits=12, decimal_places=2)
    cost_rate = serializers.DecimalField(max_digits=12, decimal_places=2)
    unit = serializers.CharField()
    currency = serializers.CharField()
    tolerance_percent = serializers.DecimalField(max_digits=5, decimal_places=2)
    rate_card_id = serializers.IntegerField()
    rate_card_name = serializers.CharField()
    scope = serializers.CharField()


class SyncPolicySerializer(serializers.ModelSerializer):
    legal_entity = serializers.SlugRelatedField(
        slug_field="code", queryset=LegalEntity.objects.all(), allow_null=True, required=False
    )
    periodic_task: serializers.PrimaryKeyRelatedField = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True
    )
    # A list of {"rule", "params"}; null is refused here rather than by the database.
    validation_rules = serializers.ListField(child=serializers.DictField(), required=False, allow_empty=True)

    class Meta:
        model = SyncPolicy
        fields = [
            "id",
            "name",
            "flow",
            "legal_entity",
            "trigger",
            "cron",
            "periodic_task",
            "batch_size",
            "max_attempts",
            "backoff_base_seconds",
            "backoff_cap_seconds",
            "jitter",
            "timeout_seconds",
            "rate_limit_per_second",
            "validation_rules",
            "approval_threshold_amount",
            "second_approval_threshold_amount",
            "approval_currency",
            "dead_letter_threshold",
            "ordering_key_path",
            "active",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]
