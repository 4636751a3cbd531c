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


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never renders a value: typed secrets are not sent back to the browser after an error."""

    def format_value(self, value: Any) -> str | None:
        return None


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
        label="Advanced settings (JSON)",
        help_text="The settings the fields above do not cover (lists and objects), validated against the "
        "connector's parameter schema; a field above wins over the same key here. Secrets go in the credentials.",
    )
    credentials_input = forms.JSONField(
        label="New credentials",
        required=False,
        widget=WriteOnlyTextarea(attrs={"rows": 4, "cols": 80, "autocomplete": "off"}),
        help_text='Advanced: the whole credentials object as JSON, such as {"api_key": "…"}, replacing the current '
        "one. Write-only: it is encrypted, never shown again, and not shown back after an error. Leave blank to "
        "keep the current credentials (or set single ones in the fields above).",
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

        # The generated fields start from the stored settings (or the schema's defaults on a new system), and the
        # advanced box shows only what they do not cover, so a key is edited in one place.
        stored = dict(self.instance.settings or {}) if self.instance and self.instance.pk else {}
        generated = [name[len(SETTING_PREFIX) :] for name in self.fields if name.startswith(SETTING_PREFIX)]
        for name in generated:
            field = self.fields[SETTING_PREFIX + name]
            connector_type = str(getattr(self, "schema_connector_type", ""))
            default = (
                registry.get(connector_type).parameter_schema["properties"][name].get("default")
                if connector_type in registry
                else None
            )
            self.initial.setdefault(SETTING_PREFIX + name, stored.get(name, default))
            field.widget.attrs.setdefault("data-setting", name)
            if self.is_bound and self._omitted(SETTING_PREFIX + name):
                # A script that posts the settings as JSON only (no field of its own) keeps working.
                field.required = False
        if generated and "settings" in self.fields:
            self.initial["settings"] = {key: value for key, value in stored.items() if key not in generated}

    def _omitted(self, name: str) -> bool:
        return bool(self.fields[name].widget.value_omitted_from_data(self.data, self.files, self.add_prefix(name)))

    def _merged_settings(self, cleaned: dict[str, Any]) -> dict[str, Any]:
        settings = dict(cleaned.get("settings") or {})
        for name, value in list(cleaned.items()):
            if not name.startswith(SETTING_PREFIX) or self._omitted(name):
                continue
            key = name[len(SETTING_PREFIX) :]
            if value in (None, ""):
                settings.pop(key, None)
            else:
                settings[key] = value
        return settings

    def _merged_credentials(self, cleaned: dict[str, Any]) -> Any:
        typed = {
            name[len(CREDENTIAL_PREFIX) :]: value
            for name, value in cleaned.items()
            if name.startswith(CREDENTIAL_PREFIX) and value
        }
        whole = cleaned.get("credentials_input")
        if not typed:
            return whole
        if whole not in (None, "", {}):
            self.add_error(
                "credentials_input",
                "Either set single credentials in the fields above or the whole object here, not both.",
            )
            return whole
        # Single credentials change those keys and keep the others already stored.
        current = dict(self.instance.credentials or {}) if self.instance and self.instance.pk else {}
        return {**current, **typed}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        connector_type = cleaned.get("connector_type")
        if not connector_type:
            return cleaned
        if any(name.startswith(CREDENTIAL_PREFIX) for name in self.fields):
            cleaned["credentials_input"] = self._merged_credentials(cleaned)
        if "settings" in self.fields:
            settings = self._merged_settings(cleaned)
            cleaned["settings"] = settings
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


# --- fields generated from the connector's settings schema --------------------------------------------------

SETTING_PREFIX = "setting__"
CREDENTIAL_PREFIX = "credential__"
SCALAR_TYPES = ("string", "integer", "number", "boolean")


def _schema_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind is None and "enum" in schema:
        return "enum"
    return str(kind or "")


def generated_setting_names(connector_type: str) -> list[str]:
    """The connector's scalar settings, each shown as a form field of its own (objects and lists stay in the
    advanced JSON box)."""
    if connector_type not in registry:
        return []
    properties = registry.get(connector_type).parameter_schema.get("properties", {})
    return [name for name, schema in properties.items() if _schema_type(schema) in (*SCALAR_TYPES, "enum")]


def _label(name: str, schema: dict[str, Any]) -> str:
    return str(schema.get("title") or name.replace("_", " ").capitalize())


def _setting_field(name: str, schema: dict[str, Any], *, required: bool) -> forms.Field:
    kind = _schema_type(schema)
    options: dict[str, Any] = {
        "label": _label(name, schema),
        "required": required and kind != "boolean",
        "help_text": schema.get("description", "") + (f" Default: {schema['default']}." if "default" in schema else ""),
    }
    if "enum" in schema:
        choices = [(str(value), str(value)) for value in schema["enum"]]
        return forms.TypedChoiceField(choices=[("", "---------"), *choices] if not required else choices, **options)
    if kind == "boolean":
        return forms.NullBooleanField(**options)
    if kind == "integer":
        return forms.IntegerField(min_value=schema.get("minimum"), max_value=schema.get("maximum"), **options)
    if kind == "number":
        return forms.FloatField(min_value=schema.get("minimum"), max_value=schema.get("maximum"), **options)
    return forms.CharField(max_length=schema.get("maxLength"), **options)


def connected_system_form_for(connector_type: str) -> type[ConnectedSystemAdminForm]:
    """The admin form of a system of `connector_type`: one labelled field per scalar setting (with its help text,
    default and required mark from the connector's schema) and one write-only field per credential."""
    if connector_type not in registry:
        return ConnectedSystemAdminForm
    cls = registry.get(connector_type)
    schema = cls.parameter_schema
    required = set(schema.get("required", []))
    attrs: dict[str, Any] = {"schema_connector_type": connector_type}
    for name in generated_setting_names(connector_type):
        attrs[SETTING_PREFIX + name] = _setting_field(name, schema["properties"][name], required=name in required)
    for name in sorted(cls.sensitive_parameters):
        attrs[CREDENTIAL_PREFIX + name] = forms.CharField(
            label=f"New {name.replace('_', ' ')}",
            required=False,
            strip=False,
            widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
            help_text="Write-only: encrypted, never shown again. Blank keeps the current value.",
        )
    return type(f"ConnectedSystemAdminForm_{connector_type}", (ConnectedSystemAdminForm,), attrs)
