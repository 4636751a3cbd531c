"""A persisted run of one of the five workflows and each of its steps: the rows sagas, KPIs and traces read."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from governance.choices import Flow
from workflows.choices import DirectorySource, RunStatus, StepStatus


class WorkflowRun(models.Model):
    """One execution of a flow for one business key (an opportunity, a time entry, a milestone, an account)."""

    flow = models.CharField(max_length=40, choices=Flow.choices)
    business_key = models.CharField(
        max_length=200, help_text="What the run is about in its source system, for example crm:opportunity:006A1."
    )
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.RUNNING)
    current_step = models.CharField(max_length=60, blank=True)
    legal_entity = models.ForeignKey(
        "governance.LegalEntity", on_delete=models.PROTECT, null=True, blank=True, related_name="workflow_runs"
    )
    message = models.ForeignKey(
        "sync.Message",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="workflow_runs",
        help_text="The message that started the run.",
    )
    correlation_id = models.CharField(max_length=64, blank=True, db_index=True)
    context = models.JSONField(
        default=dict, blank=True, help_text="The run's inputs and what each step produced (external ids)."
    )
    amount = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    triggered_at = models.DateTimeField(
        default=timezone.now,
        help_text="When the business event happened in the source (closed-won, approval, milestone completion): "
        "the start of the flow's KPI.",
    )
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [models.UniqueConstraint(fields=["flow", "business_key"], name="unique_run_per_business_key")]
        indexes = [
            models.Index(fields=["flow", "status"], name="run_flow_status_idx"),
            models.Index(fields=["flow", "finished_at"], name="run_flow_finished_idx"),
            models.Index(fields=["status", "started_at"], name="run_status_started_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_flow_display()} {self.business_key} ({self.status})"

    @property
    def duration_seconds(self) -> float | None:
        """Seconds from the business trigger to the end of the run (the flow's KPI), None while it runs."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.triggered_at).total_seconds()


class WorkflowStep(models.Model):
    """One step of a run, with its state, timing, attempts, error and result (external ids it produced)."""

    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=60)
    position = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=20, choices=StepStatus.choices, default=StepStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)
    compensated_at = models.DateTimeField(null=True, blank=True)
    compensation_note = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "position"]
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="unique_step_per_run")]

    def __str__(self) -> str:
        return f"{self.run_id}:{self.position} {self.name} ({self.status})"


class ClientDirectoryEntry(models.Model):
    """A client the duplicate check compares new accounts with: one known to the hub, or one an ERP or PSA listed.

    The normalised keys are indexed, so a check reads a small blocked candidate set (same first name token,
    same domain or same tax id) and scores only those; it never scans every client.
    """

    source_key = models.CharField(
        max_length=260, unique=True, help_text="hub:<canonical id>, or <system slug>:<external id> for a listed record."
    )
    source = models.CharField(max_length=10, choices=DirectorySource.choices)
    canonical_id = models.CharField(max_length=100, blank=True, db_index=True)
    system = models.ForeignKey(
        "connectors.ConnectedSystem", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    external_id = models.CharField(max_length=200, blank=True)
    name = models.CharField(max_length=255)
    name_key = models.CharField(max_length=255, db_index=True, help_text="Lower case, no punctuation or legal suffix.")
    block_key = models.CharField(max_length=60, db_index=True, help_text="First token of the normalised name.")
    domain = models.CharField(max_length=255, blank=True, db_index=True)
    tax_id = models.CharField(max_length=60, blank=True, db_index=True)
    legal_entity = models.ForeignKey(
        "governance.LegalEntity", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    linked_to = models.CharField(
        max_length=100, blank=True, help_text="Canonical id of the client this one was linked to as a duplicate."
    )
    duplicate_cleared = models.BooleanField(
        default=False, help_text="A person decided this client is new: it is not checked for duplicates again."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name_key", "id"]
        verbose_name_plural = "client directory entries"

    def __str__(self) -> str:
        return f"{self.name} ({self.source_key})"


class ClientDirectorySource(models.Model):
    """Where the directory's last read of one ERP or PSA's clients stopped (that connector's change cursor)."""

    system = models.OneToOneField("connectors.ConnectedSystem", on_delete=models.CASCADE, related_name="+")
    cursor = models.TextField(blank=True)
    refreshed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"client directory of {self.system_id}"


class FinanceNotification(models.Model):
    """A note to finance that a project was activated (or needs them); listed in the admin for finance users."""

    workflow_run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="notifications")
    legal_entity = models.ForeignKey(
        "governance.LegalEntity", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    subject = models.CharField(max_length=255)
    body = models.TextField()
    project_number = models.CharField(max_length=60, blank=True, db_index=True)
    amount = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    emailed_to = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["workflow_run", "subject"], name="unique_notification_per_run")]

    def __str__(self) -> str:
        return self.subject
