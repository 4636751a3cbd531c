"""Admin of the sandbox app: fault profiles and settings (with history and a reason), records and webhook logs."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from integrationhub.admin_base import ChangeReasonForm, HubHistoryAdmin
from sandbox import services
from sandbox.models import SECRET_FIELDS, SandboxFaultProfile, SandboxRecord, SandboxSetting, SandboxWebhookDelivery


@admin.register(SandboxFaultProfile)
class SandboxFaultProfileAdmin(HubHistoryAdmin):
    """Make a sandbox system slow, flaky, rate limited or unreachable; "reset" turns every fault off."""

    list_display = (
        "system",
        "enabled",
        "latency_ms",
        "error_rate",
        "error_every_nth",
        "rate_limit_every_nth",
        "rate_limit_requests",
        "burst_5xx",
        "timeout_seconds",
        "accept_then_fail_every_nth",
        "updated_at",
    )
    list_filter = ("enabled",)
    actions = ["reset_faults"]
    fieldsets = (
        (None, {"fields": ("system", "enabled")}),
        ("Latency", {"fields": ("latency_ms",)}),
        (
            "Errors",
            {
                "fields": ("error_status", "error_every_nth", "error_rate", "seed"),
                "description": "Every Nth request is deterministic; the rate draws from a generator seeded with "
                "the seed and the request number, so the same seed fails the same requests.",
            },
        ),
        (
            "Rate limit (429)",
            {"fields": ("rate_limit_every_nth", "rate_limit_requests", "rate_limit_window_seconds")},
        ),
        ("5xx burst", {"fields": ("burst_5xx", "retry_after_seconds")}),
        ("Timeout", {"fields": ("timeout_seconds", "timeout_action")}),
        ("Accept then fail", {"fields": ("accept_then_fail_every_nth", "accept_then_fail_mode")}),
    )

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        reason = form.cleaned_data.get("change_reason") or ("changed in admin" if change else "created in admin")
        services.fault_profile_save(profile=obj, user=request.user, reason=reason)

    @admin.action(description="Reset: turn every fault off", permissions=["change"])
    def reset_faults(self, request: HttpRequest, queryset: QuerySet[SandboxFaultProfile]) -> None:
        for profile in queryset:
            services.fault_profile_reset(system=profile.system, user=request.user, reason="reset in admin")
        messages.success(request, f"Reset {queryset.count()} fault profile(s); the systems behave again.")


def _clear_field(name: str) -> str:
    return f"clear_{name}"


def _model_field(name: str) -> Any:
    return SandboxSetting._meta.get_field(name)


def _secret_field(name: str) -> forms.CharField:
    model_field = _model_field(name)
    return forms.CharField(
        label=str(model_field.verbose_name).capitalize(),
        max_length=model_field.max_length,
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )


class SandboxSettingForm(ChangeReasonForm):
    """The sandbox setting with write-only secrets, like the hub's own credentials: a secret is never rendered
    back into the page; a blank field keeps the current value and the "clear" box removes it."""

    client_secret = _secret_field("client_secret")
    clear_client_secret = forms.BooleanField(label="Clear client secret", required=False)
    api_token = _secret_field("api_token")
    clear_api_token = forms.BooleanField(label="Clear API token", required=False)
    webhook_secret = _secret_field("webhook_secret")
    clear_webhook_secret = forms.BooleanField(label="Clear webhook secret", required=False)

    class Meta:
        model = SandboxSetting
        fields = "__all__"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._current = {name: getattr(self.instance, name, "") or "" for name in SECRET_FIELDS}
        for name in SECRET_FIELDS:
            # A secret is never sent back to the browser, not even as the form's initial value.
            self.initial.pop(name, None)
            if name in self.fields:
                state = "a value is set" if self._current[name] else "no value is set"
                help_text = _model_field(name).help_text
                self.fields[
                    name
                ].help_text = f"{help_text} Write-only ({state}): never shown. Leave blank to keep the current value."

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for name in SECRET_FIELDS:
            if name not in self.fields:
                continue
            clear = cleaned.get(_clear_field(name))
            if cleaned.get(name) and clear:
                self.add_error(_clear_field(name), "Either enter a new value or clear it, not both.")
            elif clear:
                cleaned[name] = ""
            elif not cleaned.get(name):
                cleaned[name] = self._current[name]
        return cleaned


@admin.register(SandboxSetting)
class SandboxSettingAdmin(HubHistoryAdmin):
    """Credentials each sandbox system accepts, its page size and (CRM) where its webhooks go."""

    form = SandboxSettingForm
    list_display = ("system", "client_id", "account_id", "page_size", "webhook_url", "updated_at")

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = list(super().get_fields(request, obj))
        clears = {_clear_field(name) for name in SECRET_FIELDS}
        # View-only users (analysts, auditors) never see the secrets the sandbox accepts, not even the boxes.
        if not self.has_change_permission(request, obj):
            return [f for f in fields if f not in SECRET_FIELDS and f not in clears]
        # Each "clear" box right after its secret.
        ordered: list[str] = []
        for name in (f for f in fields if f not in clears):
            ordered.append(name)
            if name in SECRET_FIELDS:
                ordered.append(_clear_field(name))
        return ordered

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        reason = form.cleaned_data.get("change_reason") or ("changed in admin" if change else "created in admin")
        services.sandbox_setting_save(setting=obj, user=request.user, reason=reason)


@admin.register(SandboxRecord)
class SandboxRecordAdmin(admin.ModelAdmin):
    """The simulated systems' data, read-only: change it through the systems' APIs."""

    list_display = ("external_id", "system", "object_type", "updated_at", "deleted")
    list_filter = ("system", "object_type", "deleted")
    search_fields = ("external_id", "idempotency_key")
    readonly_fields = ("system", "object_type", "external_id", "data", "idempotency_key", "created_at", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SandboxWebhookDelivery)
class SandboxWebhookDeliveryAdmin(admin.ModelAdmin):
    """Every webhook the sandbox CRM sent: status, HTTP code, error and each attempt."""

    list_display = ("created_at", "event_type", "msg_id", "status", "status_code", "attempts", "url")
    list_filter = ("status", "event_type")
    search_fields = ("msg_id", "record_external_id")
    readonly_fields = [f.name for f in SandboxWebhookDelivery._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
