"""Connected systems: one instance of another application, with its connector, settings and encrypted secrets."""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models
from simple_history.models import HistoricalRecords

from connectors.choices import SystemRole, SystemState
from integrationhub.crypto import EncryptedJSONField, EncryptedTextField
from integrationhub.throttling import validate_rate

# Secrets are never copied into history rows: a history table is read by auditors.
SECRET_FIELDS = ["credentials", "webhook_secret"]


class ConnectedSystem(models.Model):
    """One instance of an application the hub talks to, such as "Salesforce prod" or "ERP - UK entity"."""

    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=60, unique=True, help_text="Used in webhook URLs: /api/v1/inbound/<slug>/…")
    role = models.CharField(max_length=20, choices=SystemRole.choices)
    connector_type = models.CharField(max_length=60, help_text="A connector from the connector registry.")
    base_url = models.URLField(max_length=500)
    settings = models.JSONField(default=dict, blank=True, help_text="Validated against the connector's parameters.")
    legal_entities = models.ManyToManyField("governance.LegalEntity", blank=True, related_name="systems")
    rate_limit_per_second = models.DecimalField(
        max_digits=8, decimal_places=2, default=Decimal("10"), validators=[MinValueValidator(Decimal("0.01"))]
    )
    max_concurrency = models.PositiveIntegerField(default=4, validators=[MinValueValidator(1)])
    inbound_rate = models.CharField(
        max_length=20,
        blank=True,
        default="",
        validators=[validate_rate],
        help_text=(
            "Inbound events accepted from this system per period, e.g. 50/s or 1200/min; more are answered 429 "
            "with Retry-After. Empty: the hub's default (HUB_INBOUND_RATE, 200/s)."
        ),
    )
    state = models.CharField(max_length=20, choices=SystemState.choices, default=SystemState.ACTIVE)
    credentials = EncryptedJSONField(blank=True, default=dict)
    webhook_secret = EncryptedTextField(blank=True, default="")
    credentials_updated_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords(excluded_fields=SECRET_FIELDS, m2m_fields=[legal_entities])

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def has_credentials(self) -> bool:
        return bool(self.credentials)

    @property
    def has_webhook_secret(self) -> bool:
        return bool(self.webhook_secret)
