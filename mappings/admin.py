"""Admin of the mappings app: canonical entities and schemas, value maps, mapping sets and field rules.

A schema version is never overwritten: saving changed JSON makes a new draft version (through
canonical_schema_edit), and a version goes live only through the publish action, which checks it.
Mapping sets follow the same idea: only a draft is edited (in the mapping editor, linked from the list
and the change page); published and retired versions are read-only, and "Create draft" makes the next one.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from integrationhub.admin_base import ChangeReasonForm, HubHistoryAdmin
from integrationhub.errors import HubError
from integrationhub.scoping import EntityScopedAdminMixin
from mappings import views
from mappings.choices import MappingStatus, SchemaStatus
from mappings.forms import FieldRuleForm, MappingSetForm, ValueMapEntryForm, ValueMapForm
from mappings.models import CanonicalEntity, CanonicalSchema, FieldRule, MappingSet, ValueMap, ValueMapEntry
from mappings.runtime import mapping_cache_invalidate
from mappings.selectors import value_map_users
from mappings.services import (
    canonical_schema_edit,
    canonical_schema_publish,
    field_rule_save,
    mapping_set_create,
    mapping_set_create_draft,
    mapping_set_export,
    mapping_set_retire,
)


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


# --- value maps ------------------------------------------------------------------------------------------


class ValueMapEntryInline(admin.TabularInline):
    model = ValueMapEntry
    form = ValueMapEntryForm
    extra = 1


@admin.register(ValueMap)
class ValueMapAdmin(EntityScopedAdminMixin, HubHistoryAdmin):
    form = ValueMapForm
    list_display = ["name", "unmapped", "legal_entity", "entry_count", "updated_at"]
    list_filter = ["unmapped", "legal_entity"]
    search_fields = ["name", "description", "entries__source_value"]
    list_select_related = ["legal_entity"]
    inlines = [ValueMapEntryInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ValueMap]:
        return super().get_queryset(request).annotate(entry_total=Count("entries"))

    @admin.display(description="Entries", ordering="entry_total")
    def entry_count(self, obj: ValueMap) -> int:
        return getattr(obj, "entry_total", 0)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # Published mappings read value maps at compile time: make every worker recompile.
        transaction.on_commit(mapping_cache_invalidate)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A map that a draft or published mapping still uses would break it at the next compile.
        return super().has_delete_permission(request, obj) and (obj is None or not value_map_users(obj.name))

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # bulk delete would skip the in-use check
        return actions

    def delete_model(self, request: HttpRequest, obj: ValueMap) -> None:
        super().delete_model(request, obj)
        transaction.on_commit(mapping_cache_invalidate)


# --- mapping sets and field rules --------------------------------------------------------------------------


class FieldRuleInline(admin.TabularInline):
    """The set's own rules, read-only here: they are edited (with a live preview) in the mapping editor."""

    model = FieldRule
    fields = ("position", "target_path", "source_paths", "steps", "required", "has_default", "default_value")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    verbose_name_plural = "Field rules (edit them in the mapping editor)"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _editable(obj: MappingSet | None) -> bool:
    return obj is None or obj.status == MappingStatus.DRAFT


@admin.register(MappingSet)
class MappingSetAdmin(EntityScopedAdminMixin, HubHistoryAdmin):
    form = MappingSetForm
    change_form_template = "mappings/admin/mappingset_change_form.html"
    change_list_template = "mappings/admin/mappingset_change_list.html"
    list_display = [
        "name",
        "system",
        "entity",
        "direction",
        "legal_entity",
        "version",
        "status",
        "published_at",
        "editor_link",
    ]
    list_filter = ["status", "direction", "entity", "system", "legal_entity"]
    search_fields = ["name", "notes", "system__name", "system__slug", "entity__name"]
    list_select_related = ["system", "entity", "legal_entity"]
    inlines = [FieldRuleInline]
    actions = ["create_draft", "retire", "export_json"]
    metadata_fields = ["version", "status", "lineage", "created_by", "created_at", "published_at", "published_by"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = ["name", "system", "entity", "direction", "legal_entity", "parent", "notes"]
        return fields if obj is None else [*fields, *self.metadata_fields]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        # The lineage (system, entity, direction, legal entity) ties the versions together: fixed once created.
        return ["system", "entity", "direction", "legal_entity", *self.metadata_fields]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Published and retired versions are the record of what ran: read-only, edited through a new draft.
        return super().has_change_permission(request, obj) and _editable(obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and _editable(obj)

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)
        # Bulk delete would reach published versions; a draft is deleted from its own page.
        actions.pop("delete_selected", None)
        return actions

    @admin.display(description="Editor")
    def editor_link(self, obj: MappingSet) -> str:
        url = reverse("admin:mappings_mappingset_editor", args=[obj.pk])
        label = "Edit rules" if obj.status == MappingStatus.DRAFT else "Open"
        return format_html('<a class="mapping-editor-link" href="{}">{}</a>', url, label)

    def save_model(self, request: HttpRequest, obj: MappingSet, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        data = form.cleaned_data
        created = mapping_set_create(
            name=data["name"],
            system=data["system"],
            entity=data["entity"],
            direction=data["direction"],
            legal_entity=data.get("legal_entity"),
            parent=data.get("parent"),
            notes=data.get("notes", ""),
            user=request.user,
        )
        reason = form.cleaned_data.get("change_reason")
        if reason:
            # mapping_set_create records a fixed "mapping created"; keep the analyst's own words for auditors.
            MappingSet.history.filter(id=created.pk).update(history_change_reason=reason[:100])
        obj.pk = created.pk
        obj.version = created.version
        obj.lineage = created.lineage
        obj._state.adding = False
        obj._state.db = created._state.db

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        obj = kwargs.get("obj")
        if obj is not None and obj.pk:
            context["editor_url"] = reverse("admin:mappings_mappingset_editor", args=[obj.pk])
            context["export_url"] = reverse("admin:mappings_mappingset_export", args=[obj.pk])
            context["can_create_draft"] = obj.status != MappingStatus.DRAFT and super().has_change_permission(
                request, obj
            )
            context["create_draft_url"] = reverse("admin:mappings_mappingset_editor_create_draft", args=[obj.pk])
        return super().render_change_form(request, context, *args, **kwargs)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        context = {"can_import": self.has_add_permission(request), **(extra_context or {})}
        return super().changelist_view(request, extra_context=context)

    # --- actions: thin calls into the services ---------------------------------------------------------

    @admin.action(description="Create draft (the next version, to edit)", permissions=["change"])
    def create_draft(self, request: HttpRequest, queryset: QuerySet[MappingSet]) -> None:
        for mapping_set in queryset:
            draft = mapping_set_create_draft(mapping_set=mapping_set, user=request.user)
            url = reverse("admin:mappings_mappingset_editor", args=[draft.pk])
            self.message_user(
                request, format_html('Draft ready: <a href="{}">{}</a>.', url, str(draft)), messages.SUCCESS
            )

    @admin.action(description="Retire", permissions=["change"])
    def retire(self, request: HttpRequest, queryset: QuerySet[MappingSet]) -> None:
        for mapping_set in queryset:
            mapping_set_retire(mapping_set=mapping_set, user=request.user)
        self.message_user(request, f"Retired {queryset.count()} mapping set(s).", messages.SUCCESS)

    @admin.action(description="Export JSON", permissions=["view"])
    def export_json(self, request: HttpRequest, queryset: QuerySet[MappingSet]) -> HttpResponse:
        exports = [mapping_set_export(mapping_set=mapping_set) for mapping_set in queryset]
        data: Any = exports[0] if len(exports) == 1 else exports
        filename = views.export_filename(queryset[0]) if len(exports) == 1 else "mapping-sets.json"
        return views.json_download(data, filename=filename)

    # --- the editor, import and export pages -----------------------------------------------------------

    def get_urls(self) -> list[Any]:
        def wrap(view: Any) -> Any:
            def bound(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                return view(request, *args, model_admin=self, **kwargs)

            bound.__name__ = view.__name__
            return self.admin_site.admin_view(bound)

        editor = "<path:object_id>/editor/"
        custom = [
            path("import/", wrap(views.mapping_set_import_view), name="mappings_mappingset_import"),
            path("<path:object_id>/export/", wrap(views.mapping_set_export_view), name="mappings_mappingset_export"),
            path(editor, wrap(views.mapping_editor), name="mappings_mappingset_editor"),
            path(f"{editor}preview/", wrap(views.mapping_editor_preview), name="mappings_mappingset_editor_preview"),
            path(f"{editor}rules/", wrap(views.mapping_editor_rules_save), name="mappings_mappingset_editor_rules"),
            path(f"{editor}sample/", wrap(views.mapping_editor_sample_save), name="mappings_mappingset_editor_sample"),
            path(f"{editor}publish/", wrap(views.mapping_editor_publish), name="mappings_mappingset_editor_publish"),
            path(
                f"{editor}create-draft/",
                wrap(views.mapping_editor_create_draft),
                name="mappings_mappingset_editor_create_draft",
            ),
        ]
        return custom + super().get_urls()

    def can_edit(self, request: HttpRequest, obj: MappingSet) -> bool:
        """Whether the user may change this set's rules (the change permission, and the set is a draft)."""
        return self.has_change_permission(request, obj)


@admin.register(FieldRule)
class FieldRuleAdmin(EntityScopedAdminMixin, HubHistoryAdmin):
    entity_scope_field = "mapping_set__legal_entity"
    """Single rules with their history (who changed which rule, when, why); the editor is the usual way in."""

    form = FieldRuleForm
    list_display = ["target_path", "sources", "mapping_set", "position", "required"]
    list_filter = ["mapping_set__status", "mapping_set__system", "mapping_set__entity", "required"]
    search_fields = ["target_path", "notes", "mapping_set__name"]
    list_select_related = ["mapping_set"]

    @admin.display(description="Source paths")
    def sources(self, obj: FieldRule) -> str:
        return ", ".join(obj.source_paths or [])

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["mapping_set"] if obj is not None else []

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "mapping_set":
            kwargs["queryset"] = MappingSet.objects.filter(status=MappingStatus.DRAFT)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and (obj is None or _editable(obj.mapping_set))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and (obj is None or _editable(obj.mapping_set))

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def save_model(self, request: HttpRequest, obj: FieldRule, form: Any, change: bool) -> None:
        reason = form.cleaned_data.get("change_reason") or (
            "rule changed in admin" if change else "rule added in admin"
        )
        field_rule_save(rule=obj, user=request.user, reason=reason)
