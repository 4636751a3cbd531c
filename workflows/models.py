"""A persisted run of one of the five workflows and each of its steps: the rows sagas, KPIs and traces read."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from simple_history.models import HistoricalRecords

from governance.choices import Flow
from workflows.choices import DirectorySource, PostingKind, PostingStatus, RunStatus, StepStatus


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
        # KPIs: project activation reads the release_staffing steps finished in a time range.
        indexes = [models.Index(fields=["name", "finished_at"], name="step_name_finished_idx")]

    def __str__(self) -> str:
        return f"{self.run_id}:{self.position} {self.name} ({self.status})"


# --- milestone to billing ---------------------------------------------------------------------------------


class MilestoneBillingRunManager(models.Manager["MilestoneBillingRun"]):
    def get_queryset(self) -> models.QuerySet[MilestoneBillingRun]:
        return super().get_queryset().filter(flow="milestone_billing")


class MilestoneBillingRun(WorkflowRun):
    """The runs of the milestone-to-billing flow (a proxy of WorkflowRun): the page finance reads."""

    objects = MilestoneBillingRunManager()  # type: ignore[misc]

    class Meta:
        proxy = True
        verbose_name = "milestone billing run"


class TimeExpensePosting(models.Model):
    """One line the hub posts (or posted) to an ERP for a time entry or expense: the ledger that makes every
    entry version post exactly once, and that corrections are computed against (post, adjustment, reversal)."""

    entry_key = models.CharField(
        max_length=200, help_text="The entry in its source: <source system slug>:<entity>:<source id>."
    )
    entity = models.CharField(max_length=40, help_text="time_entry or expense.")
    version = models.PositiveIntegerField(help_text="1 for the first posting of the entry, then one per correction.")
    kind = models.CharField(max_length=20, choices=PostingKind.choices)
    status = models.CharField(max_length=20, choices=PostingStatus.choices, default=PostingStatus.PENDING)
    target_system = models.ForeignKey("connectors.ConnectedSystem", on_delete=models.PROTECT, related_name="+")
    message = models.ForeignKey(
        "sync.Message",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="time_expense_postings",
        help_text="The message whose version of the entry this line posts.",
    )
    source_version = models.CharField(
        max_length=100, help_text="The entry's version in its source (updated_at), so a duplicate is recognised."
    )
    project_ref = models.CharField(max_length=100, help_text="The project's id in the ERP: lines are batched by it.")
    hours = models.DecimalField(max_digits=10, decimal_places=2, default=0, help_text="Hours this line adds.")
    amount = models.DecimalField(max_digits=14, decimal_places=2, default=0, help_text="Amount this line adds.")
    currency = models.CharField(max_length=3, blank=True)
    payload = models.JSONField(default=dict, help_text="What is sent to the ERP.")
    idempotency_key = models.CharField(max_length=200, unique=True, help_text="Sent with the line; the ERP dedupes.")
    reverses = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="+", help_text="The line it voids."
    )
    external_id = models.CharField(max_length=200, blank=True, help_text="The line's id in the ERP.")
    attempts = models.PositiveIntegerField(default=0)
    send_after = models.DateTimeField(
        default=timezone.now, help_text="Batch window: the target's lines are sent once none is still waiting."
    )
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="Retry time after a transient failure.")
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    posted_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["entry_key", "version"]
        constraints = [
            models.UniqueConstraint(fields=["entry_key", "target_system", "version"], name="unique_posting_version"),
        ]
        indexes = [
            models.Index(fields=["status", "target_system", "project_ref"], name="posting_due_idx"),
            models.Index(fields=["entry_key", "status"], name="posting_entry_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.entry_key} v{self.version} {self.kind} ({self.status})"


class TimeExpenseSenderLease(models.Model):
    """Which sender posts a target's time and expense lines now. The sender renews it before every call; one
    that was killed stops renewing, and its lease runs out within a minute for the next sender to take over."""

    target_system = models.OneToOneField("connectors.ConnectedSystem", on_delete=models.CASCADE, related_name="+")
    holder = models.CharField(max_length=200, blank=True, help_text="The sender holding it: host, process, send.")
    heartbeat_at = models.DateTimeField(default=timezone.now, help_text="When the holder last renewed it.")
    expires_at = models.DateTimeField(default=timezone.now, help_text="Free for another sender from this time on.")

    def __str__(self) -> str:
        return f"time and expense sender of {self.target_system_id}: {self.holder or 'free'}"


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


class ResourceLink(models.Model):
    """The cross-reference of a person: a PSA person ↔ the employee that books their time in one ERP (for one
    legal entity, or for every legal entity the ERP serves when none is given). Time and expense lines are
    booked to this employee, never to a default one."""

    psa_system = models.ForeignKey(
        "connectors.ConnectedSystem",
        on_delete=models.PROTECT,
        related_name="resource_links_as_psa",
        help_text="The PSA the person works in.",
    )
    person_ref = models.CharField(
        max_length=200, help_text="The person's id in the PSA (the time entry's resource_id), for example 4010."
    )
    person_name = models.CharField(max_length=200, blank=True)
    erp_system = models.ForeignKey(
        "connectors.ConnectedSystem",
        on_delete=models.PROTECT,
        related_name="resource_links_as_erp",
        help_text="The ERP the person's time is posted to.",
    )
    legal_entity = models.ForeignKey(
        "governance.LegalEntity",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="resource_links",
        help_text="The legal entity this employee books for; empty: every legal entity the ERP serves.",
    )
    employee_ref = models.CharField(
        max_length=100, help_text="The employee's id in the ERP (Tryton: the company.employee id)."
    )
    employee_name = models.CharField(max_length=200, blank=True)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["psa_system__slug", "person_name", "person_ref", "erp_system__slug"]
        verbose_name = "resource"
        verbose_name_plural = "resources"
        constraints = [
            models.UniqueConstraint(
                fields=["psa_system", "person_ref", "erp_system", "legal_entity"],
                name="unique_resource_link_per_entity",
            ),
            # NULL is distinct in a unique index: one enterprise-level link per person and ERP needs its own.
            models.UniqueConstraint(
                fields=["psa_system", "person_ref", "erp_system"],
                condition=models.Q(legal_entity__isnull=True),
                name="unique_resource_link_enterprise",
            ),
        ]

    def __str__(self) -> str:
        person = self.person_name or self.person_ref
        return f"{person} → employee {self.employee_ref} in {self.erp_system.slug if self.erp_system_id else '?'}"

    def clean(self) -> None:
        from connectors.choices import SystemRole

        errors: dict[str, str] = {}
        self.person_ref = (self.person_ref or "").strip()
        self.employee_ref = (self.employee_ref or "").strip()
        if self.psa_system_id and self.psa_system.role != SystemRole.PSA:
            errors["psa_system"] = f"{self.psa_system.slug} is not a PSA; choose the system the person works in."
        if self.erp_system_id and self.erp_system.role != SystemRole.ERP:
            errors["erp_system"] = f"{self.erp_system.slug} is not an ERP; choose the system time is posted to."
        elif self.erp_system_id and self.legal_entity is not None:
            served = set(self.erp_system.legal_entities.values_list("pk", flat=True))
            if served and self.legal_entity.pk not in served:
                codes = ", ".join(sorted(self.erp_system.legal_entities.values_list("code", flat=True)))
                errors["legal_entity"] = (
                    f"{self.erp_system.slug} does not serve {self.legal_entity.code}; it serves {codes}."
                )
        if errors:
            raise ValidationError(errors)
