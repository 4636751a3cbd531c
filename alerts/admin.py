"""Admin of the alerts app: alert rules (history with who and why) and the alerts they sent (read-only)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from alerts.models import Alert, AlertRule
from integrationhub.admin_base import HubHistoryAdmin


@admin.register(AlertRule)
class AlertRuleAdmin(HubHistoryAdmin):
    list_display = (
        "name",
        "active",
        "category",
        "flow",
        "legal_entity",
        "min_amount",
        "trigger",
        "cadence",
        "notify_group",
        "notify_user",
        "by_email",
        "chat_system",
        "escalate_group",
    )
    list_filter = ("active", "trigger", "cadence", "category", "flow", "legal_entity", "by_email")
    search_fields = ("name", "notify_group__name", "notify_user__username", "chat_system__slug")
    autocomplete_fields = ()
    fieldsets = [
        (None, {"fields": ["name", "active"]}),
        ("Which items", {"fields": ["category", "flow", "legal_entity", "min_amount"]}),
        ("When", {"fields": ["trigger", "sla_hours", "cadence", "digest_hour"]}),
        ("Who and how", {"fields": ["notify_group", "notify_user", "by_email", "chat_system"]}),
        ("Escalation", {"fields": ["escalate_group", "escalate_after_hours"]}),
    ]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    """What was sent, to whom, when, and what failed: written by the alert runs only."""

    list_display = ("created_at", "kind", "channel", "audience", "item", "rule", "status", "attempts", "sent_at")
    list_filter = ("status", "channel", "kind", "rule")
    search_fields = ("subject", "recipients", "audience", "dedupe_key", "correlation_id", "item__id")
    date_hierarchy = "created_at"
    list_select_related = ("rule", "item")
    readonly_fields = [field.name for field in Alert._meta.fields]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
