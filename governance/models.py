"""Governance records: legal entities, ownership rules, rate cards and sync policies."""

from __future__ import annotations

import re
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from simple_history.models import HistoricalRecords

from governance.choices import ConflictAction, ErpPeriodState, Flow, PeriodStatus, RateUnit, Region, Trigger

currency_code = RegexValidator(r"^[A-Z]{3}$", "Use a three-letter ISO 4217 code in capitals, for example USD.")
country_code = RegexValidator(r"^[A-Z]{2}$", "Use a two-letter ISO 3166 code in capitals, for example GB.")
entity_code = RegexValidator(r"^[A-Z0-9][A-Z0-9_-]{1,19}$", "Use 2-20 capitals, digits, '-' or '_', for example UK01.")
FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


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
        return f"{self.code} – {self.name}"  # noqa: RUF001 - the dash is typographic on purpose


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
        return (
            f"{self.entity_id and self.entity.name}: {fields}{stage} → {self.owning_system_id and self.owning_system}"
        )

    def clean(self) -> None:
        # Runs for admin forms, the API and imports alike, so an ambiguous system of record never gets stored.
        from governance.selectors import ownership_rule_conflicts

        self.lifecycle_stage = (self.lifecycle_stage or "").strip()
        fields = self.field_group
        if fields in (None, ""):
            fields = self.field_group = []
        if not isinstance(fields, list) or not all(isinstance(path, str) for path in fields):
            raise ValidationError({"field_group": 'List field paths, for example ["billing", "status"].'})
        self.field_group = fields = [path.strip() for path in fields]
        bad = [path for path in fields if not FIELD_PATH.match(path)]
        if bad:
            raise ValidationError(
                {
                    "field_group": (
                        f"{', '.join(map(repr, bad))} is not a field path; use dotted names like billing.method."
                    )
                }
            )
        if len(set(fields)) != len(fields):
            raise ValidationError({"field_group": "Each field path may be listed once; remove the duplicates."})
        conflicts = ownership_rule_conflicts(rule=self)
        if conflicts:
            me = f"this rule ({self})" if not self.pk else f"rule #{self.pk} ({self})"
            raise ValidationError(
                {
                    "field_group": [
                        f"Conflicts with rule #{c.rule.pk} ({c.rule}): both {me} and it claim {', '.join(c.fields)} "
                        f"at {'stage ' + repr(self.lifecycle_stage) if self.lifecycle_stage else 'every stage'}. "
                        "Remove the overlapping fields from one of the two rules, or give one a lifecycle stage."
                        for c in conflicts
                    ]
                }
            )


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

    def clean(self) -> None:
        # Runs for admin forms, the API and imports alike: two cards of one scope must never both apply on a day.
        from governance.selectors import rate_card_overlapping

        self.client_ref = (self.client_ref or "").strip()
        self.contract_ref = (self.contract_ref or "").strip()
        errors: dict[str, str] = {}
        if self.valid_from and self.valid_to and self.valid_to < self.valid_from:
            errors["valid_to"] = "The card must end on or after its first day; correct valid_to or valid_from."
        if self.contract_ref and not self.client_ref:
            errors["client_ref"] = "A contract override belongs to one client: fill in the client id of the contract."
        if errors:
            raise ValidationError(errors)
        if not (self.legal_entity_id and self.currency and self.valid_from):
            return  # the field errors for the missing values are reported on their own
        other = rate_card_overlapping(rate_card=self).first()
        if other is not None:
            raise ValidationError(
                {
                    "valid_from": (
                        f"Overlaps rate card #{other.pk} '{other.name}', valid {other.validity}, which has the same "
                        f"legal entity, currency {self.currency} and scope ({self.scope}). End one card the day "
                        "before the other starts, or change this card's dates."
                    )
                }
            )

    @property
    def validity(self) -> str:
        return f"{self.valid_from} to {self.valid_to or 'open-ended'}"

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

    def clean(self) -> None:
        from governance.rules import rule_entries_validate
        from governance.services import cron_validate

        errors: dict[str, list[str]] = {}
        self.cron = " ".join((self.cron or "").split())
        if self.trigger == Trigger.SCHEDULE and not self.cron:
            errors["cron"] = [
                "A scheduled policy needs a cron expression (minute hour day-of-month month day-of-week, UTC), "
                "for example '*/15 * * * *'."
            ]
        elif self.cron:
            problem = cron_validate(expression=self.cron)
            if problem:
                errors["cron"] = [problem]
        first, second = self.approval_threshold_amount, self.second_approval_threshold_amount
        if second is not None and first is None:
            errors["approval_threshold_amount"] = ["Set the first approval threshold before a second one."]
        elif first is not None and second is not None and second < first:
            errors["second_approval_threshold_amount"] = [
                f"The second approval threshold must be at least the first ({first}); raise it or clear it."
            ]
        if (first is not None or second is not None) and not self.approval_currency:
            errors["approval_currency"] = ["Give the currency of the approval thresholds, for example USD."]
        base, cap = self.backoff_base_seconds, self.backoff_cap_seconds
        if base is not None and cap is not None and cap < base:
            errors["backoff_cap_seconds"] = ["The backoff cap must be at least the base backoff; raise it."]
        rule_problems = rule_entries_validate(self.validation_rules if self.validation_rules is not None else [])
        if rule_problems:
            errors["validation_rules"] = rule_problems
        if errors:
            raise ValidationError(errors)


class AccountingPeriod(models.Model):
    """One accounting period of a legal entity (usually a month), open or closed for posting time and expenses."""

    legal_entity = models.ForeignKey(LegalEntity, on_delete=models.PROTECT, related_name="accounting_periods")
    name = models.CharField(max_length=50, blank=True, help_text="For example 2026-11; defaults to the start month.")
    start_date = models.DateField()
    end_date = models.DateField(help_text="Last day of the period (inclusive).")
    status = models.CharField(max_length=10, choices=PeriodStatus.choices, default=PeriodStatus.OPEN)
    notes = models.TextField(blank=True)
    # Filled by the period pull: which ERP the period was read from, its id there, and the state it reported.
    source_system = models.ForeignKey(
        "connectors.ConnectedSystem",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="accounting_periods",
        help_text="The ERP this period was read from by the period pull (empty: kept by hand).",
    )
    external_id = models.CharField(max_length=100, blank=True, help_text="The period's id in that ERP.")
    erp_state = models.CharField(
        max_length=10,
        choices=ErpPeriodState.choices,
        blank=True,
        help_text="The period's state in the ERP at the last pull (closed or locked there: closed here).",
    )
    erp_synced_at = models.DateTimeField(null=True, blank=True, help_text="When the period pull last read it.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords(excluded_fields=["erp_synced_at"])

    class Meta:
        ordering = ["legal_entity__code", "-start_date"]
        indexes = [models.Index(fields=["legal_entity", "start_date"], name="period_entity_start_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["source_system", "external_id"],
                condition=~models.Q(external_id=""),
                name="unique_period_per_erp_id",
            )
        ]

    def __str__(self) -> str:
        code = self.legal_entity.code if self.legal_entity_id else "?"
        return f"{code} {self.name or self.start_date} ({self.status})"

    def clean(self) -> None:
        # Two periods of one entity must never both answer for a day, or "is it open?" has two answers.
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValidationError({"end_date": "The period must end on or after its first day; correct the dates."})
        if not self.name and self.start_date:
            self.name = self.start_date.strftime("%Y-%m")
        if self.status == PeriodStatus.OPEN and self.erp_state in (ErpPeriodState.CLOSED, ErpPeriodState.LOCKED):
            # The ERP is the book of record: the hub may close earlier than the ERP, never stay open after it.
            raise ValidationError(
                {
                    "status": f"The ERP holds this period {self.erp_state}; reopen it in the ERP first, and the next "
                    "period pull opens it here."
                }
            )
        if not (self.legal_entity_id and self.start_date and self.end_date):
            return
        overlapping = AccountingPeriod.objects.filter(
            legal_entity_id=self.legal_entity_id, start_date__lte=self.end_date, end_date__gte=self.start_date
        ).exclude(pk=self.pk)
        other = overlapping.first()
        if other is not None:
            raise ValidationError(
                {
                    "start_date": f"Overlaps period '{other.name}' ({other.start_date} to {other.end_date}) of the "
                    "same legal entity; end one period the day before the other starts."
                }
            )
