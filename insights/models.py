"""Models of the insights app: the live progress of batch syncs. KPIs themselves are selectors over the
engine's rows (messages, attempts, runs, exception items), never stored counters."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from insights.choices import BatchKind, BatchStatus


class BatchProgress(models.Model):
    """One batch sync (a scheduled pull or a file drop) as it runs: records done out of the total, and when."""

    kind = models.CharField(max_length=20, choices=BatchKind.choices)
    system = models.ForeignKey("connectors.ConnectedSystem", on_delete=models.CASCADE, related_name="batch_progress")
    entity = models.CharField(max_length=40)
    label = models.CharField(max_length=255, blank=True, help_text="The file name, or the schedule that ran.")
    status = models.CharField(max_length=20, choices=BatchStatus.choices, default=BatchStatus.RUNNING)
    total = models.PositiveIntegerField(null=True, blank=True, help_text="Records in the batch, when known up front.")
    done = models.PositiveIntegerField(default=0, help_text="Records handled (stored, or already stored before).")
    failed = models.PositiveIntegerField(default=0, help_text="Records refused.")
    pages = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        verbose_name = "batch progress"
        verbose_name_plural = "batch progress"
        permissions = [("view_kpis", "Can view the KPI dashboard and the KPI API")]
        indexes = [
            models.Index(fields=["-started_at", "-id"], name="batch_progress_recent_idx"),
            models.Index(fields=["status", "started_at"], name="batch_progress_status_idx"),
        ]

    def __str__(self) -> str:
        total = self.total if self.total is not None else "?"
        return f"{self.get_kind_display()} {self.entity} from {self.system_id}: {self.done}/{total} ({self.status})"


class KpiDashboard(BatchProgress):
    """The leaders' KPI dashboard's place in the admin (a proxy: it stores nothing of its own)."""

    class Meta:
        proxy = True
        verbose_name = "KPI dashboard"
        verbose_name_plural = "KPI dashboard"
