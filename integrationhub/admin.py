"""Admin of the project app: API keys (the key shown once on creation, revoke action), the read-only audit
log with CSV export, users' legal-entity scopes, two-factor devices, and django-celery-beat's screens with their
actions restricted to whoever may change the schedules and every change audited."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule
from django_otp.plugins.otp_totp.admin import TOTPDeviceAdmin as _OtpTOTPDeviceAdmin  # noqa: F401  (registers first)
from django_otp.plugins.otp_totp.models import TOTPDevice

from integrationhub import apikeys, audit, schedules, scoping, twofactor
from integrationhub.errors import HubError
from integrationhub.models import ApiKey, AuditEvent, UserLegalEntityScope
from integrationhub.scopes import SCOPE_CHOICES


class ApiKeyCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=SCOPE_CHOICES, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiKey
        fields = ["name", "owner", "scopes", "legal_entity", "all_entities", "expires_at"]

    def clean_expires_at(self) -> Any:
        value = self.cleaned_data.get("expires_at")
        if value is not None and value <= timezone.now():
            raise forms.ValidationError("The expiry must be in the future.")
        return value


API_KEY_FIELDS = (
    "name",
    "prefix",
    "owner",
    "scope_list",
    "legal_entity",
    "all_entities",
    "created_by",
    "created_at",
    "expires_at",
    "revoked_at",
    "revoked_by",
    "last_used_at",
    "status",
)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are created here or by `manage.py create_api_key`, never edited: revoke and create a new one."""

    list_display = ["name", "prefix", "owner", "scope_list", "legal_entity", "status", "expires_at", "last_used_at"]
    list_filter = ["revoked_at", "legal_entity"]
    search_fields = ["name", "prefix", "owner__username"]
    actions = ["revoke_selected"]
    readonly_fields = API_KEY_FIELDS
    fields = API_KEY_FIELDS

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
            kwargs["fields"] = ApiKeyCreateForm.Meta.fields
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ApiKeyCreateForm.Meta.fields if obj is None else self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            # Only an integration admin may give a key every legal entity.
            return () if scoping.can_grant_all_entities(request.user) else ("all_entities",)
        return self.readonly_fields

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "owner" and field is not None and field.queryset is not None:
            if not request.user.is_superuser:
                # A key acts as its owner: only a superuser may create one that acts as someone else.
                field.queryset = field.queryset.filter(pk=request.user.pk)
            field.initial = request.user.pk
        return field

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # No edit form for an existing key (it is immutable); the list's revoke action needs the permission.
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: the key's row stays for the audit trail

    def save_model(self, request: HttpRequest, obj: ApiKey, form: forms.ModelForm, change: bool) -> None:
        if change:
            raise PermissionDenied
        if obj.owner_id != request.user.pk and not request.user.is_superuser:
            raise PermissionDenied
        created = apikeys.api_key_create(
            name=obj.name,
            owner=obj.owner,
            scopes=form.cleaned_data["scopes"],
            created_by=request.user,
            legal_entity=obj.legal_entity,
            all_entities=obj.all_entities,
            expires_at=obj.expires_at,
            request=request,
        )
        obj.pk = created.api_key.pk
        obj.prefix = created.api_key.prefix
        obj._state.adding = False
        request._hub_new_api_key = created.key  # type: ignore[attr-defined]

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None) -> HttpResponse:
        # Rendered straight away, not redirected: the key must not travel through a message cookie or the session.
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "opts": self.model._meta,
            "api_key": obj,
            "key": getattr(request, "_hub_new_api_key", ""),
        }
        response = TemplateResponse(request, "admin/integrationhub/apikey/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke the selected API keys", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        for api_key in queryset:
            if api_key.revoked_at is None:
                apikeys.api_key_revoke(api_key=api_key, user=request.user, request=request)
                revoked += 1
        self.message_user(request, f"Revoked {revoked} API key(s).", messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(scoping.OperationalScopeAdminMixin, admin.ModelAdmin):
    """The append-only audit log: browse, filter, search and export; nobody adds, edits or deletes. A user scoped
    to some legal entities sees (and exports) only the events about their entities' records."""

    list_display = [
        "occurred_at",
        "actor_username",
        "api_key_prefix",
        "ip",
        "action",
        "object_type",
        "object_id",
        "summary",
    ]
    list_filter = ["action", "occurred_at", "object_type", "actor_username"]
    search_fields = ["summary", "actor_username", "object_id", "correlation_id", "ip", "user_agent"]
    date_hierarchy = "occurred_at"
    actions = ["export_csv"]
    list_per_page = 100
    show_full_result_count = False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Export the selected events as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[AuditEvent]) -> StreamingHttpResponse:
        response = StreamingHttpResponse(
            audit.audit_event_csv_rows(queryset.order_by("-occurred_at", "-id").iterator(chunk_size=2000)),
            content_type="text/csv; charset=utf-8",
        )
        response["Content-Disposition"] = 'attachment; filename="audit-events.csv"'
        return response


@admin.register(UserLegalEntityScope)
class UserLegalEntityScopeAdmin(admin.ModelAdmin):
    """Which legal entities a user works on: the entities listed, or every one with "all entities" (granted by
    integration admins only, audited). No entities and no flag grants none."""

    list_display = ["user", "all_entities", "entity_codes"]
    list_filter = ["all_entities"]
    search_fields = ["user__username", "legal_entities__code"]
    filter_horizontal = ["legal_entities"]
    fields = ["user", "all_entities", "legal_entities"]

    @admin.display(description="legal entities")
    def entity_codes(self, obj: UserLegalEntityScope) -> str:
        if obj.all_entities:
            return "all entities"
        return ", ".join(entity.code for entity in obj.legal_entities.all()) or "none"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return () if scoping.can_grant_all_entities(request.user) else ("all_entities",)

    def save_model(self, request: HttpRequest, obj: UserLegalEntityScope, form: Any, change: bool) -> None:
        # The form already hides the flag from others; this is the last line should a form be built another way.
        if "all_entities" in form.changed_data and not scoping.can_grant_all_entities(request.user):
            raise PermissionDenied("Only an integration admin may grant or revoke all legal entities.")
        super().save_model(request, obj, form, change)


# --- two-factor devices: list and reset, nothing else --------------------------------------------------------

if admin.site.is_registered(TOTPDevice):
    admin.site.unregister(TOTPDevice)


@admin.register(TOTPDevice)
class TOTPDeviceAdmin(admin.ModelAdmin):
    """Users' authenticators: who enrolled and when. Users enrol themselves (Two-factor page); an admin can
    only reset (delete) a device, e.g. after a lost phone, and every reset is audited."""

    list_display = ["user", "name", "confirmed", "created_at", "last_used_at"]
    list_filter = ["confirmed"]
    search_fields = ["user__username"]
    actions = ["reset_selected"]
    fields = ("user", "name", "confirmed", "created_at", "last_used_at")
    readonly_fields = fields

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # a reset goes through the audited action only
        return actions

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: TOTPDevice) -> None:
        twofactor.two_factor_reset(user=obj.user, by=request.user, reason="reset in the admin", request=request)

    @admin.action(description="Reset two-factor login of the selected users", permissions=["delete"])
    def reset_selected(self, request: HttpRequest, queryset: QuerySet[TOTPDevice]) -> None:
        users = {device.user for device in queryset.select_related("user")}
        for user in users:
            twofactor.two_factor_reset(user=user, by=request.user, reason="reset in the admin", request=request)
        self.message_user(
            request, f"Reset two-factor login of {len(users)} user(s); they set it up again at their next login."
        )


# --- beat schedules: django-celery-beat's screens, with permissioned actions and audited changes --------------------
# Its own admin offers enable/disable/toggle/run to anyone who can open the list (view-only roles included) and
# writes no audit event. These subclasses keep its forms and lists; every change goes through
# integrationhub.schedules, which checks the permission and audits it.


class AuditedBeatAdminMixin(admin.ModelAdmin):
    """Saves and deletes of beat records go through integrationhub.schedules (permission checked, audited)."""

    def save_model(self, request: HttpRequest, obj: Any, form: forms.ModelForm, change: bool) -> None:
        schedules.beat_record_save(
            obj=obj, created=not change, changed_fields=form.changed_data, user=request.user, request=request
        )

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        schedules.beat_records_delete(objs=[obj], user=request.user, request=request)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        schedules.beat_records_delete(objs=list(queryset), user=request.user, request=request)


class PeriodicTaskAdmin(AuditedBeatAdminMixin, beat_admin.PeriodicTaskAdmin):
    """Beat entries: enabling, disabling, toggling and running need the change permission (integration admins)."""

    actions = ("enable_tasks", "disable_tasks", "toggle_tasks", "run_tasks")

    @admin.action(description="Enable selected tasks", permissions=["change"])
    def enable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        count = schedules.periodic_tasks_set_enabled(tasks=queryset, enabled=True, user=request.user, request=request)
        self.message_user(request, f"{count} task(s) enabled.", messages.SUCCESS)

    @admin.action(description="Disable selected tasks", permissions=["change"])
    def disable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        count = schedules.periodic_tasks_set_enabled(tasks=queryset, enabled=False, user=request.user, request=request)
        self.message_user(request, f"{count} task(s) disabled.", messages.SUCCESS)

    @admin.action(description="Toggle activity of selected tasks", permissions=["change"])
    def toggle_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        count = schedules.periodic_tasks_toggle(tasks=queryset, user=request.user, request=request)
        self.message_user(request, f"{count} task(s) toggled.", messages.SUCCESS)

    @admin.action(description="Run selected tasks", permissions=["change"])
    def run_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        try:
            count = schedules.periodic_tasks_run(tasks=queryset, user=request.user, request=request)
        except HubError as exc:
            self.message_user(request, exc.detail, messages.ERROR)
            return
        self.message_user(request, f"{count} task(s) queued.", messages.SUCCESS)


class ClockedScheduleAdmin(AuditedBeatAdminMixin, beat_admin.ClockedScheduleAdmin):
    """Beat's clocked schedules: changed by integration admins only, each change audited."""


class CrontabScheduleAdmin(AuditedBeatAdminMixin, beat_admin.CrontabScheduleAdmin):
    """Beat's crontab schedules: changed by integration admins only, each change audited."""


class IntervalScheduleAdmin(AuditedBeatAdminMixin, beat_admin.IntervalScheduleAdmin):
    """Beat's interval schedules: changed by integration admins only, each change audited."""


class SolarScheduleAdmin(AuditedBeatAdminMixin, beat_admin.SolarScheduleAdmin):
    """Beat's solar schedules: changed by integration admins only, each change audited."""


for _model, _model_admin in (
    (PeriodicTask, PeriodicTaskAdmin),
    (ClockedSchedule, ClockedScheduleAdmin),
    (CrontabSchedule, CrontabScheduleAdmin),
    (IntervalSchedule, IntervalScheduleAdmin),
    (SolarSchedule, SolarScheduleAdmin),
):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
    admin.site.register(_model, _model_admin)
