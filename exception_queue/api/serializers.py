"""API serializers of the exception_queue app: items, their decisions, and the bodies of the actions."""

from __future__ import annotations

from rest_framework import serializers

from exception_queue.choices import ExceptionCategory
from exception_queue.models import Decision, ExceptionItem


class DecisionSerializer(serializers.ModelSerializer):
    user = serializers.CharField(read_only=True, allow_null=True, help_text="Null for a decision the hub took.")

    class Meta:
        model = Decision
        fields = ["id", "action", "user", "reason", "payload_diff", "created_at"]
        read_only_fields = fields


ITEM_FIELDS = [
    "id",
    "category",
    "state",
    "reason",
    "suggested_action",
    "required_approvals",
    "message",
    "correlation_id",
    "delivery",
    "system",
    "legal_entity",
    "amount",
    "currency",
    "created_at",
    "updated_at",
]


class ExceptionItemSerializer(serializers.ModelSerializer):
    # Each can be absent: a workflow step's item has no message, a reconciliation item no system.
    system = serializers.CharField(source="system.slug", read_only=True, allow_null=True)
    legal_entity = serializers.CharField(source="legal_entity.code", read_only=True, allow_null=True)
    correlation_id = serializers.CharField(source="message.correlation_id", read_only=True, allow_null=True)

    class Meta:
        model = ExceptionItem
        fields = ITEM_FIELDS
        read_only_fields = fields


class ExceptionItemDetailSerializer(ExceptionItemSerializer):
    decisions = DecisionSerializer(many=True, read_only=True)

    class Meta(ExceptionItemSerializer.Meta):
        fields = [*ITEM_FIELDS, "payload_snapshot", "failed_rules", "decisions"]
        read_only_fields = fields


class DecisionRequestSerializer(serializers.Serializer):
    reason = serializers.CharField(help_text="Why; auditors read it next to the decision.")


class ReplayRequestSerializer(DecisionRequestSerializer):
    use_current_mapping = serializers.BooleanField(
        default=False, help_text="Map with the mapping version published now instead of the original one."
    )


class FixRequestSerializer(DecisionRequestSerializer):
    payload = serializers.JSONField(help_text="The corrected payload (canonical if the message was mapped).")

    def validate_payload(self, value: object) -> object:
        if not isinstance(value, dict):
            raise serializers.ValidationError("The corrected payload must be a JSON object.")
        return value


class BulkReplayRequestSerializer(ReplayRequestSerializer):
    category = serializers.ChoiceField(choices=ExceptionCategory.choices, required=False)
    system = serializers.SlugField(required=False, help_text="Connected system slug.")
    legal_entity = serializers.CharField(required=False, help_text="Legal entity code.")
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=500)


class BulkReplayResultSerializer(serializers.Serializer):
    replayed = serializers.IntegerField()


class ItemActionSerializer(serializers.Serializer):
    """One thing the caller may do with an open item now (from the action registry)."""

    action = serializers.CharField(help_text="The name to POST to `act/`.")
    # `label` and `help_text` are the API's field names; they shadow DRF's Field attributes of the same names.
    label = serializers.CharField()  # type: ignore[assignment]
    inputs = serializers.ListField(child=serializers.CharField(), help_text="Extra inputs the action takes.")
    choices = serializers.DictField(
        child=serializers.ListField(child=serializers.DictField()),
        help_text='Per input, the values to pick from ([{"value": ..., "label": ...}]); an input not listed is typed.',
    )
    help_text = serializers.CharField(allow_blank=True)  # type: ignore[assignment]
    dangerous = serializers.BooleanField(help_text="Cannot be undone (a rejection, a compensation).")


class ItemActRequestSerializer(DecisionRequestSerializer):
    action = serializers.CharField(help_text="One of the item's `actions/`, e.g. approve, retry_step, link_existing.")
    inputs = serializers.DictField(
        required=False, default=dict, help_text='The action\'s inputs by name, e.g. {"payload": {...}}.'
    )
