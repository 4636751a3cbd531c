"""The engine's rows: messages, deliveries and their attempts, routes, cross-references, ordering and cursors."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone
from simple_history.models import HistoricalRecords

from governance.choices import Flow
from mappings.choices import CanonicalEntityName
from sync.choices import (
    AttemptOutcome,
    DeliveryStatus,
    FileDropStatus,
    FollowUpStatus,
    MessageDirection,
    MessageStatus,
)


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


class Message(models.Model):
    """One unit of work (an event or one record of a batch), stored once and timestamped at every stage."""

    system = models.ForeignKey(
        "connectors.ConnectedSystem",
        on_delete=models.PROTECT,
        related_name="messages",
        help_text="The source system the message came from.",
        # The unique (system, idempotency_key) index serves lookups by system; one index less to maintain on
        # every insert and update of the busiest table.
        db_index=False,
    )
    entity = models.CharField(max_length=40, help_text="Canonical entity name, for example client.")
    event_type = models.CharField(max_length=100, help_text="For example client.updated.")
    direction = models.CharField(max_length=10, choices=MessageDirection.choices, default=MessageDirection.INBOUND)
    idempotency_key = models.CharField(max_length=200)
    correlation_id = models.CharField(max_length=64, db_index=True)
    raw_payload = models.JSONField(null=True, blank=True, help_text="As received; pruned after the retention period.")
    canonical_payload = models.JSONField(null=True, blank=True)
    canonical_id = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=20, choices=MessageStatus.choices, default=MessageStatus.RECEIVED)
    mapping_set = models.ForeignKey(
        "mappings.MappingSet", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    mapping_version = models.PositiveIntegerField(null=True, blank=True)
    legal_entity = models.ForeignKey(
        "governance.LegalEntity", on_delete=models.PROTECT, null=True, blank=True, related_name="messages"
    )
    ordering_key = models.CharField(max_length=200, blank=True, help_text="Messages with one key apply in order.")
    flow = models.CharField(
        max_length=40, choices=Flow.choices, blank=True, help_text="The flow of the route or policy that took it."
    )
    source_timestamp = models.DateTimeField(null=True, blank=True)
    source_sequence = models.BigIntegerField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Delivery attempts over all targets.")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    notes = models.JSONField(default=list, blank=True, help_text="Ownership conflicts ignored, routing remarks.")
    approved_at = models.DateTimeField(null=True, blank=True)
    replay_count = models.PositiveIntegerField(default=0)
    received_at = models.DateTimeField(default=timezone.now)
    dispatched_at = models.DateTimeField(null=True, blank=True, help_text="Handed to a worker by the dispatcher.")
    mapped_at = models.DateTimeField(null=True, blank=True)
    validated_at = models.DateTimeField(null=True, blank=True)
    held_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["system", "idempotency_key"], name="unique_message_idempotency_key")
        ]
        indexes = [
            # The dispatcher and the sweeper: received messages, in id order. dispatched_at is left out on purpose:
            # with no index on it (and room on the page, see migration 0011) the dispatcher's UPDATE of it is a
            # HOT update that touches none of the table's indexes.
            models.Index(fields=["id"], name="message_received_idx", condition=models.Q(status="received")),
            models.Index(fields=["status", "received_at"], name="message_status_idx"),
            models.Index(fields=["entity", "ordering_key"], name="message_ordering_idx"),
            models.Index(fields=["flow", "received_at"], name="message_flow_received_idx"),
            # KPIs: throughput per flow and approved-time-to-ERP latency read delivered messages of a flow in a
            # time range; the third column lets PostgreSQL answer from the index alone.
            models.Index(fields=["flow", "delivered_at", "source_timestamp"], name="message_flow_delivered_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.event_type} from {self.system_id} ({self.status})"


class Route(models.Model):
    """Where messages of one source system and entity go: a target system and its outbound mapping."""

    name = models.CharField(max_length=200)
    source_system = models.ForeignKey("connectors.ConnectedSystem", on_delete=models.PROTECT, related_name="routes_out")
    entity = models.CharField(max_length=40, help_text="Canonical entity name, for example client.")
    event_types = models.JSONField(
        default=list, blank=True, help_text='Only these event types, for example ["client.updated"]; empty for all.'
    )
    legal_entity = models.ForeignKey(
        "governance.LegalEntity",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="routes",
        help_text="Only messages of this legal entity; empty for all.",
    )
    target_system = models.ForeignKey("connectors.ConnectedSystem", on_delete=models.PROTECT, related_name="routes_in")
    outbound_mapping_set = models.ForeignKey(
        "mappings.MappingSet",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty: the target's published outbound mapping, or the canonical record as is when it has none.",
    )
    flow = models.CharField(
        max_length=40, choices=Flow.choices, blank=True, help_text="The flow whose sync policy applies."
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["source_system__name", "entity", "target_system__name"]
        indexes = [models.Index(fields=["source_system", "entity", "active"], name="route_lookup_idx")]

    def __str__(self) -> str:
        return self.name


class Delivery(models.Model):
    """One message going to one target system: its status, external id and idempotency key."""

    # No index of their own: the unique (message, target_system) and the (target_system, status) indexes lead
    # with them, and every index costs each insert and update of a delivery.
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    target_system = models.ForeignKey(
        "connectors.ConnectedSystem", on_delete=models.PROTECT, related_name="deliveries", db_index=False
    )
    route = models.ForeignKey(Route, on_delete=models.SET_NULL, null=True, blank=True, related_name="deliveries")
    status = models.CharField(max_length=20, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    idempotency_key = models.CharField(max_length=200, unique=True)
    revision = models.PositiveIntegerField(default=0, help_text="Bumped when an edited payload is replayed.")
    lookup_first = models.BooleanField(
        default=False, help_text="The request may already be at the target: look it up before sending."
    )
    mapping_set = models.ForeignKey(
        "mappings.MappingSet", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    outbound_payload = models.JSONField(null=True, blank=True)
    external_id = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "deliveries"
        constraints = [models.UniqueConstraint(fields=["message", "target_system"], name="unique_delivery_per_target")]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="delivery_due_idx"),
            models.Index(fields=["target_system", "status"], name="delivery_target_idx"),
            # KPIs and /metrics: attempts are counted per target system through their delivery; this lets the
            # join read the delivery's target from the index alone.
            models.Index(fields=["id", "target_system"], name="delivery_id_target_idx"),
        ]

    def __str__(self) -> str:
        return f"message #{self.message_id} → {self.target_system_id} ({self.status})"


class DeliveryAttempt(models.Model):
    """One call to a target system (append-only): what was sent, what came back and how long it took."""

    # The (delivery, number) index leads with it. Empty for a workflow step's call, which has no delivery: its
    # flow, run and step are in the request summary, and the correlation id ties it to the run's trace.
    delivery = models.ForeignKey(
        Delivery, on_delete=models.CASCADE, related_name="attempts_log", db_index=False, null=True, blank=True
    )
    # The system called: every outbound call has an attempt row, whichever path made it (KPIs, /metrics).
    system = models.ForeignKey(
        "connectors.ConnectedSystem", on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )
    number = models.PositiveIntegerField()
    request_summary = models.JSONField(default=dict, blank=True)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    outcome = models.CharField(max_length=20, choices=AttemptOutcome.choices)
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=100, blank=True)
    correlation_id = models.CharField(max_length=64, blank=True, db_index=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["delivery", "number"]
        indexes = [
            models.Index(fields=["delivery", "number"], name="attempt_delivery_idx"),
            # KPIs and /metrics: attempt outcomes in a time range, per system called.
            models.Index(fields=["created_at", "outcome", "system"], name="attempt_created_system_idx"),
        ]

    def __str__(self) -> str:
        if self.delivery_id is None:
            return f"call {self.number} to system #{self.system_id}: {self.outcome}"
        return f"attempt {self.number} of delivery #{self.delivery_id}: {self.outcome}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # A delivery's attempt is a call to the delivery's target (bulk writers set `system` themselves).
        if self.system_id is None and self.delivery_id is not None:
            self.system_id = Delivery.objects.filter(pk=self.delivery_id).values_list("target_system_id", flat=True)[0]
        super().save(*args, **kwargs)


class OrderingWatermark(models.Model):
    """The newest source position applied for one record (entity, key) at one target: older updates are skipped."""

    target_system = models.ForeignKey("connectors.ConnectedSystem", on_delete=models.CASCADE, related_name="+")
    entity = models.CharField(max_length=40)
    ordering_key = models.CharField(max_length=200)
    source_timestamp = models.DateTimeField(null=True, blank=True)
    source_sequence = models.BigIntegerField(null=True, blank=True)
    message = models.ForeignKey(Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["target_system", "entity", "ordering_key"], name="unique_watermark_per_record"
            )
        ]

    def __str__(self) -> str:
        return f"{self.entity} {self.ordering_key} @ {self.target_system_id}: {self.source_timestamp}"


class PollCursor(models.Model):
    """The watermark of a scheduled pull per (system, entity); it moves only after a page is stored."""

    system = models.ForeignKey("connectors.ConnectedSystem", on_delete=models.CASCADE, related_name="poll_cursors")
    entity = models.CharField(max_length=40)
    cursor = models.TextField(blank=True, help_text="Opaque to the hub: the connector's resume position.")
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=20, blank=True)
    last_error = models.TextField(blank=True)
    records_stored = models.PositiveBigIntegerField(default=0, help_text="Messages stored by pulls, all runs.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["system", "entity"], name="unique_cursor_per_system_entity")]

    def __str__(self) -> str:
        return f"{self.system_id} {self.entity}: {self.cursor or '(start)'}"


class PollSchedule(models.Model):
    """A scheduled pull of one entity from one system: its beat entry runs `poll_run` every N seconds."""

    system = models.ForeignKey("connectors.ConnectedSystem", on_delete=models.CASCADE, related_name="poll_schedules")
    entity = models.CharField(max_length=40, choices=CanonicalEntityName.choices)
    every_seconds = models.PositiveIntegerField(
        default=300, validators=[MinValueValidator(5)], help_text="How often the pull runs."
    )
    max_pages = models.PositiveIntegerField(
        null=True, blank=True, help_text="Pages per run at most (empty: until the source has no more)."
    )
    active = models.BooleanField(default=True)
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", on_delete=models.SET_NULL, null=True, blank=True, editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords(excluded_fields=["periodic_task"])

    class Meta:
        ordering = ["system__name", "entity"]
        constraints = [models.UniqueConstraint(fields=["system", "entity"], name="unique_poll_schedule")]

    def __str__(self) -> str:
        return f"pull {self.entity} from {self.system_id} every {self.every_seconds} s"


class FileDrop(models.Model):
    """One uploaded CSV file (append-only): what it held, how many rows were stored, and each row's errors."""

    system = models.ForeignKey("connectors.ConnectedSystem", on_delete=models.PROTECT, related_name="file_drops")
    entity = models.CharField(max_length=40, choices=CanonicalEntityName.choices)
    file_name = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64, help_text="Of the file's bytes: the same file twice stores nothing.")
    status = models.CharField(max_length=20, choices=FileDropStatus.choices)
    rows_total = models.PositiveIntegerField(default=0)
    rows_accepted = models.PositiveIntegerField(default=0, help_text="Rows stored as new messages.")
    rows_duplicate = models.PositiveIntegerField(default=0, help_text="Valid rows already stored before.")
    errors = models.JSONField(default=list, blank=True, help_text="[{row, field, message}]; row 1 is the header.")
    correlation_id = models.CharField(max_length=64, db_index=True)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["system", "sha256"], name="file_drop_hash_idx")]

    def __str__(self) -> str:
        return f"{self.file_name} ({self.status}, {self.rows_accepted}/{self.rows_total} rows)"


class FollowUpEvent(models.Model):
    """A follow-up event (sync.message.delivered, ...) stored in the transaction that caused it (an outbox
    row), then handed by the dispatcher to the subscribers; durable across crashes, retried on failure."""

    name = models.CharField(max_length=100)
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="follow_up_events")
    sequence = models.PositiveIntegerField(default=0, help_text="The message's replay count when emitted.")
    status = models.CharField(max_length=20, choices=FollowUpStatus.choices, default=FollowUpStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["name", "message", "sequence"], name="unique_follow_up_per_run")]
        indexes = [
            models.Index(
                fields=["next_attempt_at", "id"], name="follow_up_due_idx", condition=models.Q(status="pending")
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} of message #{self.message_id} ({self.status})"
