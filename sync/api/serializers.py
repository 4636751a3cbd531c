"""API serializers of the sync app: messages, deliveries and their attempts, traces, file drops."""

from __future__ import annotations

from rest_framework import serializers

from sync.models import Delivery, DeliveryAttempt, FileDrop, Message


class DeliveryAttemptSerializer(serializers.ModelSerializer):
    """One call to a connected system: a delivery's attempt, or a workflow step's call (no delivery, no message)."""

    delivery = serializers.IntegerField(
        source="delivery_id", read_only=True, allow_null=True, help_text="Null for a workflow step's call."
    )
    message = serializers.IntegerField(
        source="delivery.message_id", read_only=True, allow_null=True, help_text="Null for a workflow step's call."
    )
    # The system called: a delivery's target, or the system a workflow step called (no delivery).
    target_system = serializers.CharField(
        source="system.slug",
        read_only=True,
        allow_null=True,
        help_text="Slug of the system called; null only for attempts recorded before the hub stored it.",
    )

    class Meta:
        model = DeliveryAttempt
        fields = [
            "id",
            "delivery",
            "message",
            "target_system",
            "number",
            "outcome",
            "status_code",
            "duration_ms",
            "error",
            "request_summary",
            "task_id",
            "correlation_id",
            "created_at",
        ]
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer):
    target_system = serializers.CharField(source="target_system.slug", read_only=True, default=None)

    class Meta:
        model = Delivery
        fields = [
            "id",
            "target_system",
            "status",
            "idempotency_key",
            "revision",
            "external_id",
            "attempts",
            "next_attempt_at",
            "last_error",
            "created_at",
            "delivered_at",
        ]
        read_only_fields = fields


MESSAGE_FIELDS = [
    "id",
    "system",
    "entity",
    "event_type",
    "direction",
    "status",
    "correlation_id",
    "idempotency_key",
    "canonical_id",
    "legal_entity",
    "mapping_set",
    "mapping_version",
    "attempts",
    "replay_count",
    "last_error",
    "received_at",
    "dispatched_at",
    "mapped_at",
    "validated_at",
    "held_at",
    "queued_at",
    "delivered_at",
    "failed_at",
]


class MessageSerializer(serializers.ModelSerializer):
    """A message in a list: status and stage timestamps, no payloads."""

    system = serializers.CharField(source="system.slug", read_only=True)
    legal_entity = serializers.CharField(
        source="legal_entity.code", read_only=True, allow_null=True, help_text="Null until the pipeline resolves it."
    )

    class Meta:
        model = Message
        fields = MESSAGE_FIELDS
        read_only_fields = fields


class MessageDetailSerializer(MessageSerializer):
    """One message with its payloads (blank once the retention pruned them) and its deliveries."""

    deliveries = DeliverySerializer(many=True, read_only=True)

    class Meta(MessageSerializer.Meta):
        fields = [*MESSAGE_FIELDS, "raw_payload", "canonical_payload", "notes", "deliveries"]
        read_only_fields = fields


class MessageReplaySerializer(serializers.Serializer):
    reason = serializers.CharField(help_text="Why; auditors read it next to the replay.")
    use_current_mapping = serializers.BooleanField(
        default=False, help_text="Map with the mapping version published now instead of the original one."
    )


class MessageReplayResultSerializer(serializers.Serializer):
    """The answer to a replay: the decision recorded and the message as it is now."""

    decision_id = serializers.IntegerField(help_text="The decision that records the replay (who, why, when).")
    message = MessageSerializer()


class TraceStepSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    stage = serializers.CharField()
    message_id = serializers.IntegerField()
    system = serializers.CharField()
    detail = serializers.DictField()


class FileDropSerializer(serializers.ModelSerializer):
    system = serializers.CharField(source="system.slug", read_only=True, default=None)
    uploaded_by = serializers.CharField(read_only=True, allow_null=True)

    class Meta:
        model = FileDrop
        fields = [
            "id",
            "system",
            "entity",
            "file_name",
            "sha256",
            "status",
            "rows_total",
            "rows_accepted",
            "rows_duplicate",
            "errors",
            "correlation_id",
            "uploaded_by",
            "created_at",
        ]
        read_only_fields = fields


class FileDropUploadSerializer(serializers.Serializer):
    system = serializers.SlugField(help_text="Slug of the connected system the file comes from.")
    entity = serializers.CharField(help_text="Canonical entity of the rows, e.g. time_entry.")
    file = serializers.FileField(help_text="A CSV file; the header row names the fields.")
