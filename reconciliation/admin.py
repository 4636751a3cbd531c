"""Admin of the reconciliation: runs, read-only (the page at /admin/reconciliation/ is where people work)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from reconciliation.models import ReconciliationRun
from reconciliation.selectors import in_scope, scope_of


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(admin.ModelAdmin):
    """Every run with its outcome; finance starts runs from the reconciliation page, not here."""

    list_display = [
        "id",
        "legal_entity",
        "period",
        "status",
        "trigger",
        "started_by",
        "created_at",
        "finished_at",
        "differences",
        "unexplained_amount",
        "failed_system",
    ]
    list_filter = ["status", "trigger", "legal_entity", "period"]
    search_fields = ["=correlation_id", "error", "period"]
    readonly_fields = [field.name for field in ReconciliationRun._meta.fields]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ReconciliationRun]:
        # Another entity's run answers 404 like a missing one.
        return in_scope(
            super().get_queryset(request).select_related("legal_entity", "failed_system"), scope_of(request.user)
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
