"""Reconciliation runs: what the PSA approved against what the ERP holds, per legal entity, period, project and
person, with the figures and rows of each run kept so the last good result stays visible."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.utils import timezone

from reconciliation.choices import RowKind, RunStatus, RunTrigger

ZERO = Decimal("0")


def _money() -> models.DecimalField:
    return models.DecimalField(max_digits=16, decimal_places=2, default=ZERO)


class ReconciliationRun(models.Model):
    """One reconciliation of a legal entity's period: who or what started it, when, its outcome and figures."""

    legal_entity = models.ForeignKey("governance.LegalEntity", on_delete=models.PROTECT, related_name="+")
    period = models.CharField(max_length=7, help_text="The accounting period reconciled: a month, YYYY-MM.")
    period_start = models.DateField()
    period_end = models.DateField()
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED)
    trigger = models.CharField(max_length=20, choices=RunTrigger.choices, default=RunTrigger.SCHEDULE)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    correlation_id = models.CharField(max_length=64, blank=True, db_index=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    failed_system = models.ForeignKey(
        "connectors.ConnectedSystem",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The system that could not be read, for a failed run.",
    )
    error = models.TextField(blank=True)
    systems = models.JSONField(default=list, blank=True, help_text="[{psa, erp}] slugs of the pairs reconciled.")
    figures = models.JSONField(default=dict, blank=True, help_text="Totals of the run (see docs/finance.md).")
    differences = models.PositiveIntegerField(default=0)
    unexplained_amount = _money()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["legal_entity", "period", "status", "-finished_at"], name="recon_run_idx")]

    def __str__(self) -> str:
        return f"Reconciliation #{self.pk} {self.period} ({self.status})"


class ReconciliationRow(models.Model):
    """One (kind, project, person) of a run: approved, posted, queued, withdrawn and the unexplained difference,
    with the entries behind it for the drill-down."""

    run = models.ForeignKey(ReconciliationRun, on_delete=models.CASCADE, related_name="rows")
    legal_entity = models.ForeignKey("governance.LegalEntity", on_delete=models.PROTECT, related_name="+")
    period = models.CharField(max_length=7)
    kind = models.CharField(max_length=20, choices=RowKind.choices)
    project = models.CharField(max_length=100, help_text="The project's id in the PSA (canonical).")
    project_name = models.CharField(max_length=255, blank=True)
    person = models.CharField(max_length=100, blank=True, help_text="The person's id in the PSA (canonical).")
    person_name = models.CharField(max_length=255, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    approved_hours = _money()
    approved_amount = _money()
    posted_hours = _money()
    posted_amount = _money()
    reversed_amount = _money()
    queued_hours = _money()
    queued_amount = _money()
    withdrawn_hours = _money()
    withdrawn_amount = _money()
    unexplained_hours = _money()
    unexplained_amount = _money()
    queue_reasons = models.JSONField(default=list, blank=True, help_text="[{item, category, reason, since}]")
    entries = models.JSONField(default=list, blank=True, help_text="The entries of the row and their figures.")
    exception_item = models.ForeignKey(
        "exception_queue.ExceptionItem", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["run", "kind", "project", "person", "id"]
        indexes = [models.Index(fields=["run", "kind", "project", "person"], name="recon_row_idx")]

    def __str__(self) -> str:
        return f"{self.period} {self.kind} {self.project}/{self.person}"

    @property
    def difference_key(self) -> str:
        """The one exception item of this difference is found again by this key (its external_id)."""
        return f"recon:{self.legal_entity_id}:{self.period}:{self.kind}:{self.project}:{self.person}"[:200]

    @property
    def has_difference(self) -> bool:
        return self.unexplained_amount != 0 or self.unexplained_hours != 0
