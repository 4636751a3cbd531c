"""Governance records: legal entities, ownership rules, rate cards and sync policies."""

from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from simple_history.models import HistoricalRecords

from governance.choices import ConflictAction, Flow, RateUnit, Region, Trigger

currency_code = RegexValidator(r"^[A-Z]{3}$", "Use a three-letter ISO 4217 code in capitals, for example USD.")
country_code = RegexValidator(r"^[A-Z]{2}$", "Use a two-letter ISO 3166 code in capitals, for example GB.")
entity_code = RegexValidator(r"^[A-Z0-9][A-Z0-9_-]{1,19}$", "Use 2-20 capitals, digits, '-' or '_', for example UK01.")


class LegalEntity(models.Model):
    """A company of the firm that contracts, bills and books in one base currency."""

    code = models.CharField(max_length=20, unique=True, validators=[entity_code])
    name = models.CharField(max_length=200)
    country = models.CharField(max_length=2, validators=[country_code])
    base_currency = models.CharField(max_length=3, validators=[currency_code])
    tax_jurisdiction = models.CharField(max_length=100, help_text="For example US-NY, GB, DE-BY.")
    region = models.CharField(max_length=20, choices=Region.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["code"]
        verbose_name_plural = "legal entities"

    def __str__(self) -> str:
        return f"{self.code} – {self.name}"


class OwnershipRule(models.Model):
    """Which connected system is the system of record for an entity's fields (optionally at a lifecycle stage)."""

    entity = models.ForeignKey("mappings.CanonicalEntity", on_delete=models.PROTECT, related_name="ownership_rules")
    field_group = models.JSONField(
        default=list, blank=True, help_text="Canonical field paths this rule owns; leave empty for all fields."
    )
    lifecycle_stage = models.CharField(
        max_length=50, blank=True, help_text="Optional stage, for example 'posted'; empty applies at every stage."
    )
    owning_system = models.ForeignKey(
        "connectors.ConnectedSystem", on_delete=models.PROTECT, related_name="ownership_rules"
    )
    conflict_action = models.CharField(max_length=20, choices=ConflictAction.choices, default=ConflictAction.EXCEPTION)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["entity__name", "lifecycle_stage", "id"]

    def __str__(self) -> str:
        fields = ", ".join(self.field_group) if self.field_group else "all fields"
        stage = f" at stage '{self.lifecycle_stage}'" if self.lifecycle_stage else ""
        return f"{self.entity_id and self.entity.name}: {fields}{stage} → {self.owning_system_id and self.owning_system}"


class RateCard(models.Model):
    """Effective-dated bill and cost rates of one legal entity and currency, optionally for one client or contract."""

    name = models.CharField(max_length=200)
    legal_entity = models.ForeignKey(LegalEntity, on_delete=models.PROTECT, related_name="rate_cards")
    currency = models.CharField(max_length=3, validators=[currency_code])
    valid_from = models.DateField()
    valid_to = models.DateField(null=True, blank=True, help_text="Last day the card applies; empty means open-ended.")
    client_ref = models.CharField(max_length=100, blank=True, help_text="Canonical client id for a client override.")
    contract_ref = models.CharField(
        max_length=100, blank=True, help_text="Canonical contract id for a contract override."
    )
    tolerance_percent = models.DecimalField(
        max_digits=5, decimal_places=2, default=Decimal("0.00"), validators=[MinValueValidator(Decimal("0"))]
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["legal_entity__code", "currency", "-valid_from"]

    def __str__(self) -> str:
        return self.name

    @property
    def scope(self) -> str:
        if self.contract_ref:
            return f"contract {self.contract_ref}"
        if self.client_ref:
            return f"client {self.client_ref}"
        return "entity default"


class RateCardLine(models.Model):
    """One role's bill and cost rate on a rate card."""

    rate_card = models.ForeignKey(RateCard, on_delete=models.CASCADE, related_name="lines")
    role = models.CharField(max_length=100, help_text="Canonical role name, for example 'Senior Consultant'.")
    bill_rate = models.DecimalField(max_digits=12, decimal_places=2, validators=[MinValueValidator(Decimal("0"))])
    cost_rate = models.DecimalField(max_digits=12, decimal_places=2, validators=[MinValueValidator(Decimal("0"))])
    unit = models.CharField(max_length=10, choices=RateUnit.choices, default=RateUnit.HOUR)
    history = HistoricalRecords()

    class Meta:
        ordering = ["rate_card", "role"]
        constraints = [models.UniqueConstraint(fields=["rate_card", "role"], name="unique_role_per_rate_card")]

    def __str__(self) -> str:
        return f"{self.role}: {self.bill_rate}/{self.unit}"


class SyncPolicy(models.Model):
    """How one flow runs: trigger, batching, retries, validation rules, approval thresholds and dead-lettering."""

    name = models.CharField(max_length=200, unique=True)
    flow = models.CharField(max_length=40, choices=Flow.choices)
    legal_entity = models.ForeignKey(
        LegalEntity,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="sync_policies",
        help_text="Empty for the enterprise-wide policy of the flow.",
    )
    trigger = models.CharField(max_length=20, choices=Trigger.choices, default=Trigger.EVENT)
    cron = models.CharField(
        max_length=100, blank=True, help_text="Five-field cron expression (UTC), required when the trigger is schedule."
    )
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", on_delete=models.SET_NULL, null=True, blank=True, editable=False
    )
    batch_size = models.PositiveIntegerField(default=100, validators=[MinValueValidator(1)])
    max_attempts = models.PositiveIntegerField(default=5, validators=[MinValueValidator(1)])
    backoff_base_seconds = models.PositiveIntegerField(default=10)
    backoff_cap_seconds = models.PositiveIntegerField(default=3600)
    jitter = models.BooleanField(default=True, help_text="Spread retries randomly up to the computed backoff.")
    timeout_seconds = models.PositiveIntegerField(default=30, validators=[MinValueValidator(1)])
    rate_limit_per_second = models.DecimalField(
        max_digits=8, decimal_places=2, null=True, blank=True, help_text="Empty for the target system's own budget."
    )
    validation_rules = models.JSONField(
        default=list, blank=True, help_text='Named rules from the rule registry: [{"rule": "...", "params": {...}}].'
    )
    approval_threshold_amount = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    second_approval_threshold_amount = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    approval_currency = models.CharField(max_length=3, blank=True, validators=[currency_code])
    dead_letter_threshold = models.PositiveIntegerField(
        default=5, help_text="Failed attempts after which a message is dead-lettered."
    )
    ordering_key_path = models.CharField(
        max_length=200, blank=True, help_text="Canonical path whose value orders messages, for example project.id."
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords(excluded_fields=["periodic_task"])

    class Meta:
        ordering = ["flow", "name"]
        verbose_name_plural = "sync policies"

    def __str__(self) -> str:
        return self.name
