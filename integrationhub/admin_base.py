"""Admin building blocks shared by every configuration screen: history with who, when and why."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.core.validators import MaxLengthValidator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.text import capfirst
from simple_history.admin import SimpleHistoryAdmin
from simple_history.models import HistoricalChanges
from simple_history.utils import get_history_manager_for_model

from integrationhub.errors import HubNotFoundError
from integrationhub.history import history_changes, history_diff
from integrationhub.history_children import history_child_changes

CHANGE_REASON_MAX_LENGTH = 100  # simple-history's history_change_reason column
CHANGE_REASON_HELP = "Why this change? Auditors see this next to the field-by-field diff."


class ChangeReasonForm(forms.ModelForm):
    """Adds a required "reason for change" to every configuration form; it is stored in the history row."""

    # No max_length: that would put maxlength on the input and the browser would cut a longer reason silently;
    # the validator refuses it with a message instead (history's reason column holds 100 characters).
    change_reason = forms.CharField(
        label="Reason for change",
        required=True,
        help_text=f"{CHANGE_REASON_HELP} At most {CHANGE_REASON_MAX_LENGTH} characters.",
        validators=[
            MaxLengthValidator(
                CHANGE_REASON_MAX_LENGTH,
                message="The reason is %(show_value)d characters long; history keeps at most %(limit_value)d. "
                "Shorten it (a ticket number and a few words are enough).",
            )
        ],
        widget=forms.TextInput(attrs={"size": 80}),
    )


class HubHistoryAdmin(SimpleHistoryAdmin):
    """ModelAdmin with simple-history, a required change reason, a version compare page and read-only history
    for view-only users (auditors): they see who, when, why and what changed, but never a revert."""

    form = ChangeReasonForm
    object_history_template = "admin/hub/object_history.html"
    object_history_list_template = "admin/hub/object_history_list.html"
    history_compare_template = "admin/hub/history_compare.html"
    # Extra field names to hide from history on top of the model's excluded (secret) fields.
    history_diff_excluded_fields: Sequence[str] = ()

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        can_edit = self.has_change_permission(request, obj) if obj is not None else self.has_add_permission(request)
        if not can_edit:
            # A view-only user (auditor) saves nothing, so an empty "Reason for change: None" row is only noise.
            return [
                (title, {**options, "fields": [f for f in options.get("fields", ()) if f != "change_reason"]})
                for title, options in fieldsets
                if [f for f in options.get("fields", ()) if f != "change_reason"]
            ]
        # Declared fieldsets omit the form-only field; append it so the reason is always asked for.
        names = {name for _, options in fieldsets for name in options.get("fields", ())}
        if "change_reason" not in names:
            fieldsets = [*fieldsets, ("Change", {"fields": ["change_reason"]})]
        return fieldsets

    def save_model(self, request: HttpRequest, obj: Any, form: forms.ModelForm, change: bool) -> None:
        reason = form.cleaned_data.get("change_reason") if hasattr(form, "cleaned_data") else None
        obj._change_reason = reason or ("created in admin" if not change else "changed in admin")
        super().save_model(request, obj, form, change)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        obj._change_reason = "deleted in admin"
        super().delete_model(request, obj)

    # --- history: compare page, changed-fields summary, no revert for view-only users ---------------------

    def get_urls(self) -> list[Any]:
        info = self.model._meta.app_label, self.model._meta.model_name
        compare = path(
            "<path:object_id>/history/compare/",
            self.admin_site.admin_view(self.history_compare_view),
            name="{}_{}_history_compare".format(*info),
        )
        # First: simple-history's "<pk>/history/<version>/" pattern would otherwise take "compare" as a version.
        return [compare, *super().get_urls()]

    def history_view(self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None) -> Any:
        info = self.admin_site.name, self.model._meta.app_label, self.model._meta.model_name
        context = {
            "compare_url": reverse("{}:{}_{}_history_compare".format(*info), args=[object_id]),
            **(extra_context or {}),
        }
        return super().history_view(request, object_id, extra_context=context)

    def set_history_delta_changes(
        self, request: HttpRequest, historical_records: Sequence[HistoricalChanges], foreign_keys_are_objs: bool = True
    ) -> None:
        """Give each row on the page its changes against the version before it (from the shared selector)."""
        records = list(historical_records)
        for index, record in enumerate(records):
            # The oldest row on a page has its predecessor on the next page (or none when it was the creation).
            previous = records[index + 1] if index + 1 < len(records) else record.prev_record
            record.hub_previous_history_id = previous.history_id if previous else None
            if previous is None:
                record.history_delta_changes = []
                record.hub_changed_fields = []
                continue
            changes = history_changes(model_admin_or_model=self, old_record=previous, new_record=record)
            record.history_delta_changes = [{"field": c.verbose_name, "old": c.old, "new": c.new} for c in changes]
            record.hub_changed_fields = [c.verbose_name for c in changes]
            # Rows edited with this record (rate-card lines, field rules, value-map entries) count as its changes.
            for child in history_child_changes(model=self.model, old_record=previous, new_record=record):
                name = f"{child.group} '{child.row}'"
                if child.action == "changed":
                    record.history_delta_changes += [
                        {"field": f"{name}: {c.verbose_name}", "old": c.old, "new": c.new} for c in child.changes
                    ]
                else:
                    record.history_delta_changes.append({"field": name, "old": "", "new": child.action})
                record.hub_changed_fields.append(f"{name} {child.action}")

    def _history_object(self, request: HttpRequest, object_id: str) -> Any:
        """The live object, or the last historical instance of a deleted one (as simple-history's view does)."""
        pk_name = self.model._meta.pk.attname
        try:
            return self.get_queryset(request).get(**{pk_name: object_id})
        except (self.model.DoesNotExist, ValueError):
            history = get_history_manager_for_model(self.model)
            record = history.filter(**{pk_name: object_id}).order_by("history_date").last()
            if record is None:
                raise Http404 from None
            return record.instance

    def history_compare_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Field-by-field diff of two versions picked on the history page (?from=<history id>&to=<history id>)."""
        request.current_app = self.admin_site.name
        object_id = unquote(object_id)
        obj = self._history_object(request, object_id)
        if not self.has_view_history_or_change_history_permission(request, obj):
            raise PermissionDenied
        opts = self.model._meta
        info = self.admin_site.name, opts.app_label, opts.model_name
        history_url = reverse("{}:{}_{}_history".format(*info), args=[object_id])
        try:
            from_id, to_id = int(request.GET["from"]), int(request.GET["to"])
        except (KeyError, ValueError):
            messages.error(request, "Pick a 'from' and a 'to' version to compare.")
            return HttpResponseRedirect(history_url)
        try:
            diff = history_diff(model_admin_or_model=self, obj=obj, from_history_id=from_id, to_history_id=to_id)
        except HubNotFoundError as error:
            raise Http404(error.detail) from error
        context = {
            **self.admin_site.each_context(request),
            "title": f"Compare versions: {obj}",
            "subtitle": None,
            "opts": opts,
            "app_label": opts.app_label,
            "module_name": capfirst(str(opts.verbose_name_plural)),
            "object": obj,
            "diff": diff,
            "versions": [("From", diff.from_version), ("To", diff.to_version)],
            "history_url": history_url,
            "same_version": from_id == to_id,
        }
        return TemplateResponse(request, self.history_compare_template, context)

    def history_form_view(
        self, request: HttpRequest, object_id: str, version_id: str, extra_context: dict[str, Any] | None = None
    ) -> Any:
        """Simple-history's per-version page is its revert form: only for users who may change the record.

        Simple-history lets anyone with view permission open it and, on POST, saves the form: a view-only
        user could revert a record. The compare page is the read-only way to look at old versions.
        """
        history = get_history_manager_for_model(self.model)
        pk_name = self.model._meta.pk.attname
        record = get_object_or_404(history.model, **{pk_name: unquote(object_id), "history_id": version_id})
        obj = record.instance
        if not self.has_change_history_permission(request, obj):
            raise PermissionDenied
        if request.method == "POST" and self.revert_disabled(request, obj):
            raise PermissionDenied
        return super().history_form_view(request, object_id, version_id, extra_context)


admin.site.site_header = "Integration Hub"
admin.site.site_title = "Integration Hub"
admin.site.index_title = "Systems, mappings, governance and operations"
