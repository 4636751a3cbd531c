"""Admin of the workflows app."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from exception_queue.models import ExceptionItem
from integrationhub.scoping import OperationalScopeAdminMixin
from sync.admin import ReadOnlyLogAdmin
from workflows.models import (
    ClientDirectoryEntry,
    FinanceNotification,
    MilestoneBillingRun,
    TimeExpensePosting,
    WorkflowRun,
    WorkflowStep,
)

# --- milestone to billing ---------------------------------------------------------------------------------


class MilestoneBillingStepInline(admin.TabularInline):
    model = WorkflowStep
    fields = ("position", "name", "status", "attempts", "started_at", "finished_at", "error", "result")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class MilestoneBillingItemInline(admin.TabularInline):
    model = ExceptionItem
    fk_name = "workflow_run"
    fields = ("item_link", "category", "state", "step", "required_approvals", "reason", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name = "exception item"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Item")
    def item_link(self, item: ExceptionItem) -> str:
        url = reverse("admin:exception_queue_exceptionitem_change", args=[item.pk])
        return format_html('<a href="{}">#{}</a>', url, item.pk)


RUN_FIELDS = (
    "flow",
    "business_key",
    "status",
    "current_step",
    "legal_entity",
    "amount",
    "currency",
    "triggered_at",
    "started_at",
    "finished_at",
    "latency",
    "last_error",
    "context",
)


@admin.register(MilestoneBillingRun)
class MilestoneBillingRunAdmin(OperationalScopeAdminMixin, admin.ModelAdmin):
    """Milestone billing runs, read-only: where each milestone stands (checks, approval, billing event,
    published), the items that hold it, and its milestone-to-billing latency."""

    list_display = [
        "business_key",
        "status",
        "current_step",
        "amount",
        "currency",
        "legal_entity",
        "triggered_at",
        "finished_at",
        "latency",
    ]
    list_filter = ["status", "legal_entity"]
    search_fields = ["=business_key", "=correlation_id"]
    date_hierarchy = "triggered_at"
    list_select_related = ["legal_entity"]
    readonly_fields = RUN_FIELDS
    fields = RUN_FIELDS
    inlines = [MilestoneBillingStepInline, MilestoneBillingItemInline]

    @admin.display(description="Latency (s)")
    def latency(self, run: MilestoneBillingRun) -> str:
        seconds = run.duration_seconds
        return "" if seconds is None else f"{seconds:.1f}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(TimeExpensePosting)
class TimeExpensePostingAdmin(OperationalScopeAdminMixin, ReadOnlyLogAdmin):
    """The posting ledger of time and expense: what was posted to which ERP, corrected and reversed (read-only)."""

    list_display = (
        "entry_key",
        "version",
        "kind",
        "status",
        "target_system",
        "project_ref",
        "hours",
        "amount",
        "currency",
        "external_id",
        "posted_at",
    )
    list_filter = ("status", "kind", "entity", "target_system")
    search_fields = ("entry_key", "external_id", "idempotency_key", "project_ref")
    list_select_related = ("target_system",)
    raw_id_fields = ("message", "reverses")
    date_hierarchy = "created_at"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the flows only: shown, never added, edited or deleted here."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class WorkflowStepInline(admin.TabularInline):
    model = WorkflowStep
    fields = (
        "position",
        "name",
        "status",
        "attempts",
        "started_at",
        "finished_at",
        "error",
        "result",
        "compensated_at",
        "compensation_note",
    )
    readonly_fields = fields
    ordering = ("position",)
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WorkflowRun)
class WorkflowRunAdmin(OperationalScopeAdminMixin, ReadOnlyAdmin):
    list_display = [
        "id",
        "flow",
        "business_key",
        "status",
        "current_step",
        "legal_entity",
        "amount",
        "currency",
        "triggered_at",
        "finished_at",
    ]
    list_filter = ["flow", "status", "legal_entity"]
    search_fields = ["business_key", "=correlation_id"]
    readonly_fields = [field.name for field in WorkflowRun._meta.fields]
    date_hierarchy = "started_at"
    inlines = [WorkflowStepInline]
    list_select_related = ["legal_entity"]


@admin.register(FinanceNotification)
class FinanceNotificationAdmin(OperationalScopeAdminMixin, ReadOnlyAdmin):
    list_display = ["created_at", "subject", "project_number", "legal_entity", "amount", "currency"]
    list_filter = ["legal_entity"]
    search_fields = ["subject", "project_number"]
    readonly_fields = [field.name for field in FinanceNotification._meta.fields]


@admin.register(ClientDirectoryEntry)
class ClientDirectoryEntryAdmin(OperationalScopeAdminMixin, ReadOnlyAdmin):
    list_display = ["name", "source", "canonical_id", "system", "external_id", "domain", "tax_id", "linked_to"]
    list_filter = ["source", "system", "duplicate_cleared"]
    search_fields = ["name", "name_key", "=canonical_id", "=external_id", "=domain", "=tax_id"]
    readonly_fields = [field.name for field in ClientDirectoryEntry._meta.fields]


# Resources (PSA person ↔ ERP employee) have their own module: configuration, unlike the run logs above.
from workflows import admin_resources  # noqa: E402,F401
