"""Admin building blocks shared by every configuration screen: history with who, when and why."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from simple_history.admin import SimpleHistoryAdmin

CHANGE_REASON_HELP = "Why this change? Auditors see this next to the field-by-field diff."


class ChangeReasonForm(forms.ModelForm):
    """Adds a required "reason for change" to every configuration form; it is stored in the history row."""

    change_reason = forms.CharField(
        label="Reason for change", max_length=100, required=True, help_text=CHANGE_REASON_HELP
    )


class HubHistoryAdmin(SimpleHistoryAdmin):
    """ModelAdmin with simple-history, a required change reason and history visible to view-only users."""

    form = ChangeReasonForm

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        # Declared fieldsets omit the form-only field; append it so the reason is always asked for.
        names = {name for _, options in fieldsets for name in options.get("fields", ())}
        if "change_reason" not in names and self.has_change_permission(request, obj):
            fieldsets = [*fieldsets, ("Change", {"fields": ["change_reason"]})]
        return fieldsets

    def save_model(self, request: HttpRequest, obj: Any, form: forms.ModelForm, change: bool) -> None:
        reason = form.cleaned_data.get("change_reason") if hasattr(form, "cleaned_data") else None
        obj._change_reason = reason or ("created in admin" if not change else "changed in admin")
        super().save_model(request, obj, form, change)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        obj._change_reason = "deleted in admin"
        super().delete_model(request, obj)


admin.site.site_header = "Integration Hub"
admin.site.site_title = "Integration Hub"
admin.site.index_title = "Systems, mappings, governance and operations"
