"""Admin of the workflows app: runs with their steps (read-only; people act through the exception queue),
finance notifications, and the client directory the duplicate check reads."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from workflows.models import ClientDirectoryEntry, FinanceNotification, WorkflowRun, WorkflowStep


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
class WorkflowRunAdmin(ReadOnlyAdmin):
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
class FinanceNotificationAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "subject", "project_number", "legal_entity", "amount", "currency"]
    list_filter = ["legal_entity"]
    search_fields = ["subject", "project_number"]
    readonly_fields = [field.name for field in FinanceNotification._meta.fields]


@admin.register(ClientDirectoryEntry)
class ClientDirectoryEntryAdmin(ReadOnlyAdmin):
    list_display = ["name", "source", "canonical_id", "system", "external_id", "domain", "tax_id", "linked_to"]
    list_filter = ["source", "system", "duplicate_cleared"]
    search_fields = ["name", "name_key", "=canonical_id", "=external_id", "=domain", "=tax_id"]
    readonly_fields = [field.name for field in ClientDirectoryEntry._meta.fields]
