"""Admin of the exception queue: read the items and their decisions (the working UI is a later issue)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from exception_queue.models import Decision, ExceptionItem


class DecisionInline(admin.TabularInline):
    model = Decision
    fields = ("created_at", "action", "user", "reason", "payload_diff")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ExceptionItem)
class ExceptionItemAdmin(admin.ModelAdmin):
    list_display = ["id", "category", "state", "system", "legal_entity", "amount", "currency", "created_at"]
    list_filter = ["state", "category", "system", "legal_entity"]
    # Both are nullable, so the admin's default select_related() skips them: one query per row without this.
    list_select_related = ["system", "legal_entity"]
    search_fields = ["reason", "=message__correlation_id"]
    readonly_fields = [field.name for field in ExceptionItem._meta.fields]
    inlines = [DecisionInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        from exception_queue.selectors import open_item_counts_by_category

        context = {**(extra_context or {}), "category_counts": open_item_counts_by_category()}
        return super().changelist_view(request, extra_context=context)


@admin.register(Decision)
class DecisionAdmin(admin.ModelAdmin):
    list_display = ["created_at", "action", "item", "message", "user"]
    list_filter = ["action"]
    readonly_fields = [field.name for field in Decision._meta.fields]

    # Decisions are the audit log: written by the services only, never edited or deleted.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
