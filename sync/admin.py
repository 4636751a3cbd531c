"""Admin of the sync app: routes are configuration (with history); messages and attempts are read-only logs."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from integrationhub.admin_base import HubHistoryAdmin
from sync.models import CrossReference, Delivery, DeliveryAttempt, Message, PollCursor, Route


class ReadOnlyLogAdmin(admin.ModelAdmin):
    """Operational rows are written by the engine only: people read them, never edit them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Route)
class RouteAdmin(HubHistoryAdmin):
    list_display = ["name", "source_system", "entity", "target_system", "legal_entity", "flow", "active"]
    list_filter = ["active", "entity", "flow"]
    search_fields = ["name"]


class DeliveryInline(admin.TabularInline):
    model = Delivery
    fields = ("target_system", "status", "attempts", "next_attempt_at", "external_id", "last_error")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Message)
class MessageAdmin(ReadOnlyLogAdmin):
    list_display = ["id", "event_type", "system", "status", "correlation_id", "attempts", "received_at"]
    list_filter = ["status", "entity", "system"]
    search_fields = ["=correlation_id", "=idempotency_key", "=canonical_id"]
    date_hierarchy = "received_at"
    inlines = [DeliveryInline]
    actions = ["replay_messages"]

    @admin.action(description="Replay the selected messages (looked up at the target first: no duplicates)")
    def replay_messages(self, request: HttpRequest, queryset: Any) -> None:
        from exception_queue.services import message_replay_request

        for message in queryset:
            message_replay_request(message=message, user=request.user, reason="Replayed from the admin")
        self.message_user(request, f"{queryset.count()} message(s) queued for replay.", messages.SUCCESS)

    def has_replay_messages_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("sync.change_message")


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ("number", "outcome", "status_code", "duration_ms", "error", "task_id", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyLogAdmin):
    list_display = ["id", "message", "target_system", "status", "attempts", "next_attempt_at", "delivered_at"]
    list_filter = ["status", "target_system"]
    search_fields = ["=idempotency_key", "=external_id"]
    inlines = [DeliveryAttemptInline]


@admin.register(CrossReference)
class CrossReferenceAdmin(ReadOnlyLogAdmin):
    list_display = ["entity", "canonical_id", "system", "external_id", "updated_at"]
    list_filter = ["entity", "system"]
    search_fields = ["=canonical_id", "=external_id"]


@admin.register(PollCursor)
class PollCursorAdmin(ReadOnlyLogAdmin):
    list_display = ["system", "entity", "cursor", "updated_at"]
