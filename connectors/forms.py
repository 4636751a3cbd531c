"""Admin form of a connected system: connector type from the registry, write-only secrets."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from connectors.models import ConnectedSystem
from connectors.registry import registry
from connectors.services import connected_system_credentials_validate, connected_system_settings_validate
from integrationhub.admin_base import ChangeReasonForm
from integrationhub.errors import HubValidationError


class PrettyJSONField(forms.JSONField):
    """A JSON textarea that shows its value indented, so a settings object is readable and editable."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, cls=self.encoder)


class ConnectedSystemAdminForm(ChangeReasonForm):
    """The model's secret columns are not form fields at all, so they can never be rendered back.

    New secrets come in through `credentials_input` / `webhook_secret_input`; blank keeps the stored
    value and the "clear" boxes remove it.
    """

    connector_type = forms.ChoiceField(choices=(), help_text="A connector from the connector registry.")
    settings = PrettyJSONField(
        required=False,
        initial=dict,
        widget=forms.Textarea(attrs={"rows": 10, "cols": 80, "class": "vLargeTextField"}),
        help_text="Validated against the connector's parameter schema. Secrets go in the credentials below.",
    )
    credentials_input = forms.JSONField(
        label="New credentials",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80, "autocomplete": "off"}),
        help_text='A JSON object such as {"api_key": "…"}. Write-only: it is encrypted and never shown again. '
        "Leave blank to keep the current credentials.",
    )
    clear_credentials = forms.BooleanField(label="Clear credentials", required=False)
    webhook_secret_input = forms.CharField(
        label="New webhook secret",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave blank to keep the current secret.",
    )
    clear_webhook_secret = forms.BooleanField(label="Clear webhook secret", required=False)

    class Meta:
        model = ConnectedSystem
        exclude = ["credentials", "webhook_secret", "credentials_updated_at"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "connector_type" in self.fields:
            choices = list(registry.choices())
            current = self.instance.connector_type if self.instance and self.instance.pk else ""
            if current and current not in registry:
                # Keep an unregistered type visible so the admin sees what is stored and can change it.
                choices.append((current, f"{current} (not registered)"))
            self.fields["connector_type"].choices = [("", "---------"), *choices]  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        connector_type = cleaned.get("connector_type")
        if not connector_type:
            return cleaned
        if "settings" in self.fields:
            settings = cleaned.get("settings")
            cleaned["settings"] = settings = settings if settings is not None else {}
            try:
                connected_system_settings_validate(connector_type=connector_type, settings=settings)
            except HubValidationError as exc:
                self.add_error("settings", exc.detail)
        credentials = cleaned.get("credentials_input")
        if credentials not in (None, "", {}):
            if cleaned.get("clear_credentials"):
                self.add_error("clear_credentials", "Either enter new credentials or clear them, not both.")
            try:
                connected_system_credentials_validate(connector_type=connector_type, credentials=credentials)
            except HubValidationError as exc:
                self.add_error("credentials_input", exc.detail)
        if cleaned.get("webhook_secret_input") and cleaned.get("clear_webhook_secret"):
            self.add_error("clear_webhook_secret", "Either enter a new webhook secret or clear it, not both.")
        return cleaned

    def secret_changes(self) -> dict[str, Any]:
        """The keyword arguments for connected_system_set_secrets from this form."""
        credentials = self.cleaned_data.get("credentials_input")
        return {
            "credentials": credentials if credentials not in (None, "", {}) else None,
            "webhook_secret": self.cleaned_data.get("webhook_secret_input") or None,
            "clear_credentials": bool(self.cleaned_data.get("clear_credentials")),
            "clear_webhook_secret": bool(self.cleaned_data.get("clear_webhook_secret")),
        }
