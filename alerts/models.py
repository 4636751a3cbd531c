"""Alert rules (which exception items reach whom, how and when) and the alerts they produced."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone
from simple_history.models import HistoricalRecords

from alerts.choices import AlertCadence, AlertChannel, AlertKind, AlertStatus, AlertTrigger
from exception_queue.choices import ExceptionCategory
from governance.choices import Flow

CHAT_WEBHOOK_CONNECTOR = "chat_webhook"


class AlertRule(models.Model):
    """Open exception items that match (category, flow, legal entity, amount) alert a group or a person by email
    and/or a chat webhook: when they open or once they pass their SLA, one by one or as a daily digest; still open
    `escalate_after_hours` past the SLA, they alert the escalation group as well."""

    name = models.CharField(max_length=100, unique=True)
    active = models.BooleanField(default=True)
    category = models.CharField(
        max_length=30, choices=ExceptionCategory.choices, blank=True, help_text="Empty: every category."
    )
    flow = models.CharField(max_length=40, choices=Flow.choices, blank=True, help_text="Empty: every flow.")
    legal_entity = models.ForeignKey(
        "governance.LegalEntity",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="alert_rules",
        help_text="Empty: every legal entity.",
    )
    min_amount = models.DecimalField(
        max_digits=14,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Only items of at least this amount (items without an amount never match). Empty: any.",
    )
    trigger = models.CharField(max_length=20, choices=AlertTrigger.choices, default=AlertTrigger.PAST_SLA)
    sla_hours = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Hours an item may wait before it is past its SLA. Empty: the hub's HUB_EXCEPTION_SLA_HOURS.",
    )
    cadence = models.CharField(max_length=20, choices=AlertCadence.choices, default=AlertCadence.EACH)
    digest_hour = models.PositiveSmallIntegerField(
        default=8, help_text="Hour of the day (UTC, 0-23) the daily digest goes out.", validators=[MinValueValidator(0)]
    )
    notify_group = models.ForeignKey(
        "auth.Group", on_delete=models.SET_NULL, null=True, blank=True, related_name="+", help_text="Who is alerted."
    )
    notify_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="A person alerted (with or instead of a group).",
    )
    by_email = models.BooleanField(default=True, help_text="Email the group's members and the person.")
    chat_system = models.ForeignKey(
        "connectors.ConnectedSystem",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="alert_rules",
        limit_choices_to={"connector_type": CHAT_WEBHOOK_CONNECTOR},
        help_text="A connected system of type 'Chat webhook' (Slack- or Teams-compatible) posted to as well.",
    )
    escalate_group = models.ForeignKey("auth.Group", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    escalate_after_hours = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Hours past the SLA after which an item still open alerts the escalation group too.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if not self.by_email and self.chat_system_id is None:
            errors["by_email"] = "Choose at least one channel: email, a chat webhook system, or both."
        if self.by_email and self.notify_group_id is None and self.notify_user_id is None:
            errors["notify_group"] = "Email needs someone to write to: choose a group, a person, or both."
        if (self.escalate_group_id is None) != (self.escalate_after_hours is None):
            errors["escalate_group"] = "An escalation needs both a group and the hours past the SLA it waits."
        if self.cadence == AlertCadence.DAILY_DIGEST and self.digest_hour > 23:
            errors["digest_hour"] = "The digest hour is an hour of the day: 0 to 23."
        if errors:
            raise ValidationError(errors)


class Alert(models.Model):
    """One alert on one channel: for an item (when it opened or passed its SLA), an escalation, or a digest.
    The dedupe key makes it unique, so a rule evaluated again never alerts twice."""

    rule = models.ForeignKey(AlertRule, on_delete=models.PROTECT, related_name="alerts")
    item = models.ForeignKey(
        "exception_queue.ExceptionItem", on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts"
    )
    kind = models.CharField(max_length=20, choices=AlertKind.choices)
    channel = models.CharField(max_length=10, choices=AlertChannel.choices)
    recipients = models.TextField(blank=True, help_text="Who it went to: email addresses or the chat system.")
    audience = models.CharField(max_length=150, blank=True, help_text="The group or person, as shown on the item.")
    dedupe_key = models.CharField(max_length=200, unique=True)
    subject = models.CharField(max_length=300)
    body = models.TextField()
    status = models.CharField(max_length=10, choices=AlertStatus.choices, default=AlertStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    correlation_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="alert_due_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} alert by {self.get_channel_display()} ({self.get_status_display()})"
