"""Admin of the mappings app: canonical entities and their schema versions.

A schema version is never overwritten: saving changed JSON makes a new draft version (through
canonical_schema_edit), and a version goes live only through the publish action, which checks it.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from integrationhub.admin_base import ChangeReasonForm, HubHistoryAdmin
from integrationhub.errors import HubError
from mappings.choices import SchemaStatus
from mappings.models import CanonicalEntity, CanonicalSchema
from mappings.services import canonical_schema_edit, canonical_schema_publish


class PrettyJSONField(forms.JSONField):
    """Shows the schema indented so it can be read and edited in a textarea."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False, cls=self.encoder)


class CanonicalSchemaForm(ChangeReasonForm):
    json_schema = PrettyJSONField(
        widget=forms.Textarea(attrs={"rows": 30, "cols": 100, "class": "vLargeTextField", "spellcheck": "false"}),
        help_text="Draft 2020-12 JSON Schema. Saving changed JSON creates a new draft version; publish it to use it.",
    )

    class Meta:
        model = CanonicalSchema
        fields = ["entity", "json_schema", "notes"]

    def clean_json_schema(self) -> Any:
        value = self.cleaned_data["json_schema"]
        if not isinstance(value, dict):
            raise forms.ValidationError("A schema must be a JSON object.")
        return value


def _publish(modeladmin: admin.ModelAdmin, request: HttpRequest, schemas: list[CanonicalSchema]) -> None:
    for schema in schemas:
        try:
            canonical_schema_publish(schema=schema, user=request.user)
        except HubError as exc:
            modeladmin.message_user(
                request, f"{schema.entity.name} v{schema.version} not published: {exc.detail}", messages.ERROR
            )
        else:
            modeladmin.message_user(request, f"Published {schema.entity.name} v{schema.version}.", messages.SUCCESS)


class CanonicalSchemaInline(admin.TabularInline):
    model = CanonicalSchema
    fields = ["version", "status", "notes", "created_by", "created_at", "published_at"]
    readonly_fields = ["version", "status", "notes", "created_by", "created_at", "published_at"]
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ["-version"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(CanonicalEntity)
class CanonicalEntityAdmin(HubHistoryAdmin):
    list_display = ["name", "published_version", "latest_version", "description"]
    search_fields = ["name", "description"]
    readonly_fields = ["name"]
    fields = ["name", "description"]
    inlines = [CanonicalSchemaInline]
    actions = ["publish_latest_draft"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[CanonicalEntity]:
        return super().get_queryset(request).prefetch_related("schemas")

    def has_add_permission(self, request: HttpRequest) -> bool:
        # The thirteen entities are installed by the hub; analysts version their schemas, not the list.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Published")
    def published_version(self, obj: CanonicalEntity) -> str:
        published = [s for s in obj.schemas.all() if s.status == SchemaStatus.PUBLISHED]
        return f"v{published[0].version}" if published else "-"

    @admin.display(description="Latest")
    def latest_version(self, obj: CanonicalEntity) -> str:
        versions = list(obj.schemas.all())
        if not versions:
            return "-"
        latest = max(versions, key=lambda s: s.version)
        return f"v{latest.version} ({latest.status})"

    @admin.action(description="Publish the latest draft", permissions=["change"])
    def publish_latest_draft(self, request: HttpRequest, queryset: QuerySet[CanonicalEntity]) -> None:
        drafts = []
        for entity in queryset:
            draft = entity.schemas.filter(status=SchemaStatus.DRAFT).order_by("-version").first()
            if draft is None:
                self.message_user(request, f"{entity.name}: no draft to publish.", messages.WARNING)
            else:
                drafts.append(draft)
        _publish(self, request, drafts)


@admin.register(CanonicalSchema)
class CanonicalSchemaAdmin(HubHistoryAdmin):
    form = CanonicalSchemaForm
    list_display = ["entity", "version", "status", "created_by", "created_at", "published_at"]
    list_filter = ["status", "entity"]
    search_fields = ["entity__name", "notes"]
    list_select_related = ["entity", "created_by"]
    actions = ["publish"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        readonly = ["version", "status", "created_by", "created_at", "published_at"]
        # The entity of an existing version never changes; a new version picks it.
        return ["entity", *readonly] if obj is not None else readonly

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["entity", "version", "status", "json_schema", "notes", "created_by", "created_at", "published_at"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Versions are the audit trail of the canonical model: retire them by publishing another.
        return False

    def save_model(self, request: HttpRequest, obj: CanonicalSchema, form: Any, change: bool) -> None:
        notes = form.cleaned_data.get("notes", "")
        reason = form.cleaned_data.get("change_reason") or ""
        if change and "json_schema" not in form.changed_data:
            # Only the notes changed: that is metadata, kept in place (history records it).
            obj._history_user = request.user  # type: ignore[attr-defined]
            obj._change_reason = reason or "notes changed"  # type: ignore[attr-defined]
            obj.save(update_fields=["notes"])
            return
        entity = obj.entity
        created = canonical_schema_edit(
            entity=entity, json_schema=form.cleaned_data["json_schema"], user=request.user, notes=notes or reason
        )
        if change:
            # The edited version stays as it was; the admin continues with the new draft.
            request._hub_new_schema = created  # type: ignore[attr-defined]
            obj.refresh_from_db()
            self.message_user(
                request,
                f"Saved as a new draft {entity.name} v{created.version}; v{obj.version} ({obj.status}) is unchanged. "
                "Publish the draft to put it in force.",
                messages.INFO,
            )
        else:
            obj.pk = created.pk
            obj.version = created.version
            obj._state.adding = False
            obj._state.db = created._state.db

    def response_change(self, request: HttpRequest, obj: CanonicalSchema) -> HttpResponse:
        created = getattr(request, "_hub_new_schema", None)
        if created is not None and "_continue" in request.POST:
            return HttpResponseRedirect(reverse("admin:mappings_canonicalschema_change", args=[created.pk]))
        return super().response_change(request, obj)

    @admin.action(description="Publish (checks the schema, retires the current version)", permissions=["change"])
    def publish(self, request: HttpRequest, queryset: QuerySet[CanonicalSchema]) -> None:
        _publish(self, request, list(queryset.select_related("entity")))
