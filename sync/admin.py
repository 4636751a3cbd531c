"""Admin of the sync app: routes are configuration (with history); messages and attempts are read-only logs."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from connectors.models import ConnectedSystem
from integrationhub.admin_base import HubHistoryAdmin
from integrationhub.errors import HubError
from integrationhub.scoping import NO_ENTITY, OperationalScopeAdminMixin, request_entity_scope, systems_in_scope
from mappings.choices import CanonicalEntityName
from sync.models import (
    CrossReference,
    Delivery,
    DeliveryAttempt,
    FileDrop,
    Message,
    PollCursor,
    PollSchedule,
    Route,
)


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
class MessageAdmin(OperationalScopeAdminMixin, ReadOnlyLogAdmin):
    """Messages, read-only: search by correlation id or a record's id (at the source or a target); the detail
    page shows the deliveries and the full trace (every stage, attempt and decision, in order)."""

    list_display = ["id", "event_type", "system", "status", "correlation_id", "attempts", "received_at"]
    list_filter = ["status", "direction", "entity", "system"]
    search_fields = ["=correlation_id", "=idempotency_key", "=canonical_id", "=deliveries__external_id"]
    search_help_text = "Correlation id, idempotency key, or a record's id at its source or at a target."
    date_hierarchy = "received_at"
    list_select_related = ["system"]
    readonly_fields = ["trace"]
    inlines = [DeliveryInline]
    actions = ["replay_messages"]

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        message = super().get_object(request, object_id, from_field)
        if message is not None:
            # The trace column has no request: it reads the viewer's scope from the message (none if unset).
            message.hub_entity_scope = request_entity_scope(request)
        return message

    def get_search_results(self, request: HttpRequest, queryset: Any, search_term: str) -> tuple[Any, bool]:
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if term:
            # The source's own id inside the raw payload (before mapping gives a canonical id).
            results = results | queryset.filter(raw_payload__id=term)
            may_have_duplicates = True
        return results, may_have_duplicates

    @admin.display(description="Trace")
    def trace(self, obj: Message) -> str:
        from django.utils.html import format_html, format_html_join

        from sync.selectors import message_trace

        steps = message_trace(correlation_id=obj.correlation_id, scope=getattr(obj, "hub_entity_scope", NO_ENTITY))
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>#{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    step.at.isoformat(timespec="milliseconds"),
                    step.stage,
                    step.message_id,
                    step.system,
                    ", ".join(f"{k}={v}" for k, v in step.detail.items() if v not in (None, "")),
                )
                for step in steps
            ),
        )
        return format_html(
            '<table class="hub-trace"><thead><tr><th>At</th><th>Stage</th><th>Message</th><th>System</th>'
            "<th>Detail</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.action(
        description="Replay the selected messages (looked up at the target first: no duplicates)",
        permissions=["replay_messages"],
    )
    def replay_messages(self, request: HttpRequest, queryset: Any) -> None:
        from exception_queue.services import message_replay_request

        # The queryset comes from get_queryset (the user's scope); the service checks each message's entity again.
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
class DeliveryAdmin(OperationalScopeAdminMixin, ReadOnlyLogAdmin):
    list_display = ["id", "message", "target_system", "status", "attempts", "next_attempt_at", "delivered_at"]
    list_filter = ["status", "target_system"]
    search_fields = ["=idempotency_key", "=external_id"]
    inlines = [DeliveryAttemptInline]


@admin.register(CrossReference)
class CrossReferenceAdmin(OperationalScopeAdminMixin, ReadOnlyLogAdmin):
    list_display = ["entity", "canonical_id", "system", "external_id", "updated_at"]
    list_filter = ["entity", "system"]
    search_fields = ["=canonical_id", "=external_id"]


@admin.register(PollCursor)
class PollCursorAdmin(OperationalScopeAdminMixin, ReadOnlyLogAdmin):
    list_display = ["system", "entity", "last_outcome", "last_run_at", "records_stored", "last_error", "updated_at"]
    list_filter = ["last_outcome", "entity", "system"]


@admin.register(PollSchedule)
class PollScheduleAdmin(HubHistoryAdmin):
    """Scheduled pulls; saving, deleting and "run now" go through integrationhub.schedules (permission, audit)."""

    list_display = ["system", "entity", "every_seconds", "max_pages", "active", "updated_at"]
    list_filter = ["active", "entity", "system"]
    actions = ["run_now"]

    def save_model(self, request: HttpRequest, obj: PollSchedule, form: Any, change: bool) -> None:
        from integrationhub.schedules import poll_schedule_change

        poll_schedule_change(
            schedule=obj,
            changed_fields=[name for name in form.changed_data if name != "change_reason"],
            user=request.user,
            reason=form.cleaned_data.get("change_reason", ""),
            request=request,
        )

    def delete_model(self, request: HttpRequest, obj: PollSchedule) -> None:
        from integrationhub.schedules import poll_schedules_delete

        poll_schedules_delete(schedules=[obj], user=request.user, request=request)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        # The bulk delete too: each schedule's beat entry goes with it, and each deletion is audited.
        from integrationhub.schedules import poll_schedules_delete

        poll_schedules_delete(schedules=list(queryset), user=request.user, request=request)

    @admin.action(description="Run the selected pulls now (on the housekeeping queue)", permissions=["change"])
    def run_now(self, request: HttpRequest, queryset: Any) -> None:
        from integrationhub.schedules import poll_schedules_run_now

        count = poll_schedules_run_now(schedules=queryset, user=request.user, request=request)
        self.message_user(request, f"{count} pull(s) queued.", messages.SUCCESS)


class FileDropUploadForm(forms.Form):
    system = forms.ModelChoiceField(queryset=ConnectedSystem.objects.order_by("name"), to_field_name="slug")
    entity = forms.ChoiceField(choices=CanonicalEntityName.choices, initial=CanonicalEntityName.TIME_ENTRY)
    file = forms.FileField(help_text="CSV, UTF-8, with a header row.")


@admin.register(FileDrop)
class FileDropAdmin(OperationalScopeAdminMixin, ReadOnlyLogAdmin):
    """Uploaded CSV files and their row reports; "Upload file" stores a new one (Sync → File drops)."""

    list_display = ["id", "file_name", "system", "entity", "status", "rows_total", "rows_accepted", "created_at"]
    list_filter = ["status", "entity", "system"]
    search_fields = ["file_name", "=sha256", "=correlation_id"]
    readonly_fields = [field.name for field in FileDrop._meta.fields]

    def get_urls(self) -> list[Any]:
        upload = path("upload/", self.admin_site.admin_view(self.upload_view), name="sync_filedrop_upload")
        return [upload, *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        context = {**(extra_context or {}), "can_upload": request.user.has_perm("sync.add_filedrop")}
        return super().changelist_view(request, extra_context=context)

    @staticmethod
    def _scope_systems(request: HttpRequest, form: forms.Form) -> None:
        # Only systems of the user's legal entities are offered (and accepted: a forged choice is not valid).
        field = form.fields["system"]
        field.queryset = systems_in_scope(field.queryset, request_entity_scope(request))  # type: ignore[attr-defined]

    def upload_view(self, request: HttpRequest) -> HttpResponse:
        from sync.services import file_drop_ingest

        if not request.user.has_perm("sync.add_filedrop"):
            raise PermissionDenied
        drop = None
        if request.method == "POST":
            form = FileDropUploadForm(request.POST, request.FILES)
            self._scope_systems(request, form)
            if form.is_valid():
                upload = form.cleaned_data["file"]
                try:
                    drop = file_drop_ingest(
                        system=form.cleaned_data["system"],
                        entity=form.cleaned_data["entity"],
                        file_name=upload.name or "upload.csv",
                        content=upload.read(),
                        user=request.user,
                    )
                except HubError as exc:
                    form.add_error(None, exc.detail)
        else:
            form = FileDropUploadForm()
            self._scope_systems(request, form)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Upload file",
            "form": form,
            "drop": drop,
        }
        return TemplateResponse(request, "admin/sync/filedrop/upload.html", context)
