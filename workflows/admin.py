"""Admin of the workflows app."""

from __future__ import annotations

from django.contrib import admin

from sync.admin import ReadOnlyLogAdmin
from workflows.models import TimeExpensePosting


@admin.register(TimeExpensePosting)
class TimeExpensePostingAdmin(ReadOnlyLogAdmin):
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
