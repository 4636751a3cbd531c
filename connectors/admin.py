"""Admin of the connectors app: connected systems with write-only secrets, connection tests, pause and resume."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.formats import date_format
from django.utils.timezone import localtime

from connectors.base import HealthResult
from connectors.forms import (
    CREDENTIAL_PREFIX,
    SETTING_PREFIX,
    ConnectedSystemAdminForm,
    connected_system_form_for,
    generated_setting_names,
)
from connectors.models import ConnectedSystem
from connectors.services import (
    UPDATABLE_FIELDS,
    connected_system_create,
    connected_system_pause,
    connected_system_resume,
    connected_system_set_secrets,
    connected_system_test_connection,
    connected_system_update,
)
from integrationhub.admin_base import HubHistoryAdmin


def _secret_status(is_set: bool, when: Any) -> str:
    if not is_set:
        return "not set"
    return f"set on {date_format(localtime(when), 'DATETIME_FORMAT')}" if when else "set"


def _report(modeladmin: admin.ModelAdmin, request: HttpRequest, system: ConnectedSystem, result: HealthResult) -> None:
    level = messages.SUCCESS if result.ok else messages.ERROR
    status = f"HTTP {result.status_code}" if result.status_code else "no answer"
    outcome = "OK" if result.ok else "FAILED"
    modeladmin.message_user(
        request, f"{system.name}: connection {outcome} ({status}, {result.duration_ms} ms) - {result.message}", level
    )


@admin.register(ConnectedSystem)
class ConnectedSystemAdmin(HubHistoryAdmin):
    form = ConnectedSystemAdminForm
    change_form_template = "admin/connectors/connectedsystem/change_form.html"
    list_display = ["name", "role", "connector_type", "state", "legal_entity_codes", "base_url"]
    list_filter = ["role", "state", "connector_type", "legal_entities"]
    search_fields = ["name", "slug", "base_url"]
    prepopulated_fields = {"slug": ("name",)}
    filter_horizontal = ["legal_entities"]
    readonly_fields = ["state", "credentials_status", "webhook_secret_status", "created_at", "updated_at"]
    actions = ["test_connection", "pause", "resume"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "role", "connector_type", "base_url", "state", "legal_entities"]}),
        ("Connector settings", {"fields": ["settings", "rate_limit_per_second", "max_concurrency", "inbound_rate"]}),
        (
            "Secrets (write-only)",
            {
                "fields": [
                    "credentials_status",
                    "credentials_input",
                    "clear_credentials",
                    "webhook_secret_status",
                    "webhook_secret_input",
                    "clear_webhook_secret",
                ],
                "description": "Stored encrypted and never displayed. Blank fields keep the current values.",
            },
        ),
        ("Timestamps", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    def _connector_type(self, request: HttpRequest, obj: ConnectedSystem | None) -> str:
        """The type whose settings the form shows: the one posted, the one picked on the add page
        (?connector_type=…), else the system's own."""
        return str(
            request.POST.get("connector_type")
            or request.GET.get("connector_type")
            or (obj.connector_type if obj is not None else "")
        )

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        kwargs["form"] = connected_system_form_for(self._connector_type(request, obj))
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        connector_type = self._connector_type(request, obj)
        generated = [SETTING_PREFIX + name for name in generated_setting_names(connector_type)]
        credentials = [
            name for name in connected_system_form_for(connector_type).base_fields if name.startswith(CREDENTIAL_PREFIX)
        ]
        fieldsets = []
        for title, options in super().get_fieldsets(request, obj):
            fields = list(options.get("fields", ()))
            if "settings" in fields:
                fields = [*generated, *fields]
            if "credentials_input" in fields:
                at = fields.index("credentials_input")
                fields = [*fields[:at], *credentials, *fields[at:]]
            fieldsets.append((title, {**options, "fields": fields}))
        return fieldsets

    def get_queryset(self, request: HttpRequest) -> QuerySet[ConnectedSystem]:
        return super().get_queryset(request).prefetch_related("legal_entities")

    @admin.display(description="Legal entities")
    def legal_entity_codes(self, obj: ConnectedSystem) -> str:
        return ", ".join(entity.code for entity in obj.legal_entities.all()) or "-"

    @admin.display(description="Credentials")
    def credentials_status(self, obj: ConnectedSystem) -> str:
        return _secret_status(obj.has_credentials, obj.credentials_updated_at)

    @admin.display(description="Webhook secret")
    def webhook_secret_status(self, obj: ConnectedSystem) -> str:
        return _secret_status(obj.has_webhook_secret, obj.credentials_updated_at)

    def save_model(self, request: HttpRequest, obj: ConnectedSystem, form: Any, change: bool) -> None:
        # The form validated everything; the services do the write, so the admin and the API behave the same.
        reason = form.cleaned_data.get("change_reason") or ("changed in admin" if change else "created in admin")
        secrets = form.secret_changes()
        if change:
            changed = set(form.changed_data)
            if any(name.startswith(SETTING_PREFIX) for name in changed):
                changed.add("settings")  # a generated setting field is a key of the settings object
            data = {name: form.cleaned_data[name] for name in changed if name in form.cleaned_data}
            data = {k: v for k, v in data.items() if k in UPDATABLE_FIELDS}
            if data:
                connected_system_update(system=obj, data=data, user=request.user, reason=reason)
            connected_system_set_secrets(system=obj, user=request.user, reason=reason, **secrets)
        else:
            created = connected_system_create(
                name=obj.name,
                slug=obj.slug,
                role=obj.role,
                connector_type=obj.connector_type,
                base_url=obj.base_url,
                settings=obj.settings,
                rate_limit_per_second=obj.rate_limit_per_second,
                max_concurrency=obj.max_concurrency,
                inbound_rate=obj.inbound_rate,
                credentials=secrets["credentials"],
                webhook_secret=secrets["webhook_secret"],
                user=request.user,
                reason=reason,
            )
            # The admin keeps working with `obj` (legal entities, log entry, redirect): make it the stored row.
            for field in ConnectedSystem._meta.concrete_fields:
                setattr(obj, field.attname, getattr(created, field.attname))
            obj._state.adding = False
            obj._state.db = created._state.db

    # --- actions --------------------------------------------------------------------------------

    @admin.action(description="Test connection", permissions=["change"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[ConnectedSystem]) -> None:
        for system in queryset:
            _report(self, request, system, connected_system_test_connection(system=system))

    @admin.action(description="Pause (stop all traffic)", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[ConnectedSystem]) -> None:
        for system in queryset:
            connected_system_pause(system=system, user=request.user, reason="paused in admin")
        self.message_user(request, f"Paused {queryset.count()} system(s).", messages.SUCCESS)

    @admin.action(description="Resume", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[ConnectedSystem]) -> None:
        for system in queryset:
            connected_system_resume(system=system, user=request.user, reason="resumed in admin")
        self.message_user(request, f"Resumed {queryset.count()} system(s).", messages.SUCCESS)

    # --- the "Test connection" button on the change page ----------------------------------------

    def get_urls(self) -> list[Any]:
        custom = [
            path(
                "<path:object_id>/test-connection/",
                self.admin_site.admin_view(self.test_connection_view),
                name="connectors_connectedsystem_test_connection",
            )
        ]
        return custom + super().get_urls()

    def test_connection_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST only: runs the health check and shows the outcome as a message on the change page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        system = get_object_or_404(ConnectedSystem, pk=object_id)
        if not self.has_change_permission(request, system):
            raise PermissionDenied
        _report(self, request, system, connected_system_test_connection(system=system))
        return HttpResponseRedirect(reverse("admin:connectors_connectedsystem_change", args=[system.pk]))

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        obj = kwargs.get("obj")
        context["can_test_connection"] = bool(obj and obj.pk and self.has_change_permission(request, obj))
        return super().render_change_form(request, context, *args, **kwargs)
