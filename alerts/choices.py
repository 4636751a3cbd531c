"""Fixed vocabularies of the alerts app."""

from django.db import models


class AlertTrigger(models.TextChoices):
    OPENED = "opened", "As soon as a matching item opens"
    PAST_SLA = "past_sla", "When a matching item passes its SLA"


class AlertCadence(models.TextChoices):
    EACH = "each", "One alert per item"
    DAILY_DIGEST = "daily_digest", "One daily digest of the open items"


class AlertKind(models.TextChoices):
    ITEM = "item", "Item"
    ESCALATION = "escalation", "Escalation"
    DIGEST = "digest", "Daily digest"


class AlertChannel(models.TextChoices):
    EMAIL = "email", "Email"
    CHAT = "chat", "Chat webhook"


class AlertStatus(models.TextChoices):
    PENDING = "pending", "Waiting to be sent"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed (no more attempts)"


class ChatFlavour(models.TextChoices):
    SLACK = "slack", "Slack-compatible ({'text': …})"
    TEAMS = "teams", "Microsoft Teams-compatible (MessageCard)"
