"""Exception items (held and failed work that needs a person) and the append-only log of decisions on them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from governance.choices import Flow


class ExceptionItem(models.Model):
    """A message or workflow step that needs a person: why, with what payload, and what to do about it."""

    category = models.CharField(max_length=30, choices=ExceptionCategory.choices)
    state = models.CharField(max_length=20, choices=ExceptionState.choices, default=ExceptionState.OPEN)
    reason = models.TextField()
    payload_snapshot = models.JSONField(null=True, blank=True)
    failed_rules = models.JSONField(
        default=list, blank=True, help_text="[{rule, field, expected, actual, message}] from validation."
    )
    suggested_action = models.TextField(blank=True)
    required_approvals = models.PositiveSmallIntegerField(
        default=1, help_text="Two above the policy's second threshold: two different approvers."
    )
    message = models.ForeignKey(
        "sync.Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="exception_items"
    )
    delivery = models.ForeignKey(
        "sync.Delivery", on_delete=models.SET_NULL, null=True, blank=True, related_name="exception_items"
    )
    amount = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    legal_entity = models.ForeignKey(
        "governance.LegalEntity", on_delete=models.PROTECT, null=True, blank=True, related_name="exception_items"
    )
    system = models.ForeignKey(
        "connectors.ConnectedSystem", on_delete=models.PROTECT, null=True, blank=True, related_name="exception_items"
    )
    flow = models.CharField(max_length=40, choices=Flow.choices, blank=True)
    workflow_run = models.ForeignKey(
        "workflows.WorkflowRun",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="exception_items",
        help_text="The workflow run held by this item, for workflow exceptions.",
    )
    step = models.CharField(max_length=60, blank=True, help_text="The workflow step the item holds, if any.")
    external_id = models.CharField(
        max_length=200, blank=True, db_index=True, help_text="The record's id in its source system, for search."
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Who asked for the approval; they may not approve their own item.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("decide_exceptionitem", "Can approve or reject exception items"),
            ("fix_exceptionitem", "Can edit the payload of exception items and replay them"),
        ]
        indexes = [
            # The queue screen: open items by category, newest first; and per system / legal entity.
            models.Index(fields=["state", "category", "-created_at"], name="exception_queue_idx"),
            models.Index(fields=["system", "state"], name="exception_system_idx"),
            models.Index(fields=["legal_entity", "state"], name="exception_entity_idx"),
            models.Index(fields=["flow", "state"], name="exception_flow_idx"),
            models.Index(fields=["state", "-created_at"], name="exception_state_created_idx"),
            # KPIs: items created in a time range by flow and category; the unfiltered queue list, newest first.
            models.Index(fields=["created_at", "flow", "category"], name="exception_kpi_idx"),
            models.Index(fields=["-created_at", "-id"], name="exception_newest_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.category} ({self.state})"


class Decision(models.Model):
    """One action a person took on an exception item (append-only): who, when, why and what changed."""

    item = models.ForeignKey(ExceptionItem, on_delete=models.PROTECT, null=True, blank=True, related_name="decisions")
    # Set for actions on a message without an exception item (replaying a delivered message).
    message = models.ForeignKey(
        "sync.Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="decisions"
    )
    action = models.CharField(max_length=20, choices=DecisionAction.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+")
    reason = models.TextField()
    payload_diff = models.JSONField(default=list, blank=True, help_text="[{path, before, after}] for edits.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["item", "created_at", "id"]
        indexes = [models.Index(fields=["item", "created_at"], name="decision_item_idx")]

    def __str__(self) -> str:
        return f"{self.action} on item #{self.item_id} / message #{self.message_id} by {self.user_id}"
