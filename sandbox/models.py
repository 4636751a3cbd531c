"""Models of the sandbox app: the simulated systems' records, credentials, fault profiles and webhook deliveries."""

from __future__ import annotations

import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from simple_history.models import HistoricalRecords

from sandbox.choices import AcceptThenFailMode, SandboxSystem, TimeoutAction, WebhookDeliveryStatus

SECRET_FIELDS = ["client_secret", "api_token", "webhook_secret"]


class SandboxRecord(models.Model):
    """One object of a simulated system (an Account, a time entry, a group...), its payload in `data`.

    One table for every system keeps paging and updated-since logic in one place; `(updated_at, external_id)`
    is the stable keyset order the CRM and ERP page on, and `id` the order the PSA pages on.
    """

    system = models.CharField(max_length=10, choices=SandboxSystem.choices)
    object_type = models.CharField(max_length=40)
    external_id = models.CharField(max_length=64, help_text="The id the simulated system shows to its clients.")
    data = models.JSONField(default=dict, blank=True)
    idempotency_key = models.CharField(max_length=200, blank=True)
    # Set by the services, truncated to milliseconds so the timestamps shown equal the ones stored.
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    deleted = models.BooleanField(default=False)

    class Meta:
        ordering = ["system", "object_type", "id"]
        constraints = [
            models.UniqueConstraint(fields=["system", "object_type", "external_id"], name="sandbox_record_external_id"),
            models.UniqueConstraint(
                fields=["system", "object_type", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="sandbox_record_idempotency_key",
            ),
        ]
        indexes = [
            models.Index(fields=["system", "object_type", "updated_at", "external_id"], name="sandbox_rec_updated"),
        ]

    def __str__(self) -> str:
        return f"{self.system}:{self.object_type}:{self.external_id}"


class SandboxSetting(models.Model):
    """The configuration of one simulated system: the credentials it accepts, its page size and its webhook target."""

    system = models.CharField(max_length=10, choices=SandboxSystem.choices, unique=True)
    client_id = models.CharField(max_length=200, blank=True, help_text="OAuth2 client id (CRM, collaboration).")
    client_secret = models.CharField(max_length=200, blank=True, help_text="OAuth2 client secret.")
    api_token = models.CharField(
        max_length=200, blank=True, help_text="Static bearer token (PSA, collaboration) or API key (ERP)."
    )
    account_id = models.CharField(max_length=50, blank=True, help_text="Harvest-Account-Id the PSA expects.")
    token_ttl_seconds = models.PositiveIntegerField(default=7200, help_text="Lifetime of issued OAuth2 tokens.")
    page_size = models.PositiveIntegerField(
        default=200, validators=[MinValueValidator(1), MaxValueValidator(2000)], help_text="Default page size."
    )
    webhook_url = models.URLField(blank=True, help_text="Where the CRM sends signed closed-won webhooks.")
    webhook_secret = models.CharField(max_length=200, blank=True, help_text="Standard Webhooks secret, whsec_...")
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords(excluded_fields=SECRET_FIELDS)

    class Meta:
        ordering = ["system"]

    def __str__(self) -> str:
        return f"Sandbox {self.get_system_display()}"


class SandboxAccessToken(models.Model):
    """An OAuth2 access token a simulated system issued from its token endpoint."""

    system = models.CharField(max_length=10, choices=SandboxSystem.choices)
    token = models.CharField(max_length=120, unique=True)
    client_id = models.CharField(max_length=200)
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-issued_at"]

    def __str__(self) -> str:
        return f"{self.system} token for {self.client_id} (expires {self.expires_at:%Y-%m-%d %H:%M})"


class SandboxFaultProfile(models.Model):
    """How a simulated system misbehaves: latency, errors, rate limits, 5xx bursts, timeouts, accept-then-fail.

    Counters ("every Nth request", burst budget, rate window) live in Django's cache under `generation`,
    which every save renews, so a changed profile starts counting from zero in every process.
    """

    system = models.CharField(max_length=10, choices=SandboxSystem.choices, unique=True)
    enabled = models.BooleanField(default=False, help_text="Off: the system behaves perfectly, whatever is below.")
    latency_ms = models.PositiveIntegerField(default=0, help_text="Added to every answer, in milliseconds.")
    error_rate = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of requests (0..1) answered with the error status; drawn from a seeded generator.",
    )
    error_every_nth = models.PositiveIntegerField(
        default=0, help_text="Answer every Nth request with the error status (0 = off). Deterministic."
    )
    error_status = models.PositiveIntegerField(
        default=500, validators=[MinValueValidator(400), MaxValueValidator(599)], help_text="Status of an error."
    )
    seed = models.IntegerField(default=0, help_text="Seed of the error-rate generator: same seed, same failures.")
    rate_limit_every_nth = models.PositiveIntegerField(
        default=0, help_text="Answer every Nth request with 429 (0 = off)."
    )
    rate_limit_requests = models.PositiveIntegerField(
        default=0, help_text="Allow this many requests per window, then 429 (0 = off)."
    )
    rate_limit_window_seconds = models.PositiveIntegerField(default=60, validators=[MinValueValidator(1)])
    retry_after_seconds = models.PositiveIntegerField(default=1, help_text="Retry-After sent with a 429 or 503.")
    burst_5xx = models.PositiveIntegerField(
        default=0, help_text="The next N requests after saving fail with 503, then the system recovers."
    )
    timeout_seconds = models.FloatField(
        default=0.0, validators=[MinValueValidator(0.0)], help_text="Sleep this long before answering (0 = off)."
    )
    timeout_action = models.CharField(max_length=10, choices=TimeoutAction.choices, default=TimeoutAction.ANSWER)
    accept_then_fail_every_nth = models.PositiveIntegerField(
        default=0, help_text="Store every Nth write, but fail its answer so the client does not know (0 = off)."
    )
    accept_then_fail_mode = models.CharField(
        max_length=10, choices=AcceptThenFailMode.choices, default=AcceptThenFailMode.BAD_GATEWAY
    )
    generation = models.CharField(max_length=32, default="", editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords(excluded_fields=["generation"])

    class Meta:
        ordering = ["system"]

    def __str__(self) -> str:
        return f"Faults of {self.get_system_display()} ({'on' if self.enabled else 'off'})"

    def renew_generation(self) -> None:
        self.generation = uuid.uuid4().hex


class SandboxWebhookDelivery(models.Model):
    """One webhook the sandbox CRM sent (or tried to send) to the hub, with the outcome of each attempt."""

    system = models.CharField(max_length=10, choices=SandboxSystem.choices, default=SandboxSystem.CRM)
    event_type = models.CharField(max_length=100)
    msg_id = models.CharField(max_length=64, unique=True, help_text="webhook-id: the same on every retry.")
    record_external_id = models.CharField(max_length=64, blank=True)
    url = models.URLField()
    payload = models.JSONField(default=dict)
    status = models.CharField(
        max_length=10, choices=WebhookDeliveryStatus.choices, default=WebhookDeliveryStatus.PENDING, db_index=True
    )
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    attempt_log = models.JSONField(default=list, blank=True, help_text="Each attempt: time, status, error, ms.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "sandbox webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event_type} {self.msg_id} → {self.status}"
