"""Admin of resources: each PSA person with the ERP employee that books their time, per ERP and legal entity."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest

from connectors.choices import SystemRole
from governance.admin import GovernanceAdmin, admin_change_reason
from integrationhub.scoping import EntityScopedAdminMixin, entity_editable
from workflows.models import ResourceLink
from workflows.resource_links import resource_link_delete, resource_link_save, resource_links_list
from workflows.resources import ResourceLinkResource


@admin.register(ResourceLink)
class ResourceLinkAdmin(EntityScopedAdminMixin, GovernanceAdmin):
    """PSA people and their ERP employees: searchable, filterable, imported and exported, with history; saving
    a link posts the entries that waited for it."""

    resource_classes = [ResourceLinkResource]
    list_display = [
        "person_display",
        "psa_system",
        "erp_system",
        "legal_entity_display",
        "employee_ref",
        "employee_name",
        "updated_at",
    ]
    list_display_links = ["person_display"]
    # Only the systems and entities resources use: every connected system would be noise in the filters.
    list_filter = [
        ("erp_system", admin.RelatedOnlyFieldListFilter),
        ("legal_entity", admin.RelatedOnlyFieldListFilter),
        ("psa_system", admin.RelatedOnlyFieldListFilter),
    ]
    list_select_related = ["psa_system", "erp_system", "legal_entity"]
    search_fields = ["person_ref", "person_name", "employee_ref", "employee_name", "notes"]
    autocomplete_fields = ["legal_entity"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        ("Person in the PSA", {"fields": ["psa_system", "person_ref", "person_name"]}),
        (
            "Employee in the ERP",
            {
                "fields": ["erp_system", "legal_entity", "employee_ref", "employee_name"],
                "description": "Time and expense lines of this person are booked to this employee. Leave the legal "
                "entity empty to use the employee for every legal entity the ERP serves.",
            },
        ),
        (None, {"fields": ["notes"]}),
        ("Timestamps", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ResourceLink]:
        scoped = super().get_queryset(request)
        return resource_links_list().filter(pk__in=scoped.values("pk"))

    @admin.display(description="Person", ordering="person_name")
    def person_display(self, obj: ResourceLink) -> str:
        return f"{obj.person_name} ({obj.person_ref})" if obj.person_name else obj.person_ref

    @admin.display(description="Legal entity", ordering="legal_entity__code")
    def legal_entity_display(self, obj: ResourceLink) -> str:
        return obj.legal_entity.code if obj.legal_entity is not None else "every entity of the ERP"

    def save_model(self, request: HttpRequest, obj: ResourceLink, form: forms.ModelForm, change: bool) -> None:
        if not entity_editable(request.user, obj.legal_entity_id):
            raise PermissionDenied("Your legal-entity scope does not let you save this resource.")
        resource_link_save(link=obj, user=request.user, reason=admin_change_reason(form, change=change))

    def delete_model(self, request: HttpRequest, obj: ResourceLink) -> None:
        resource_link_delete(link=obj, user=request.user, reason="deleted in admin")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ResourceLink]) -> None:
        for link in queryset:
            resource_link_delete(link=link, user=request.user, reason="deleted in admin")

    def formfield_for_foreignkey(self, db_field: Any, request: Any, **kwargs: Any) -> Any:
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        roles = {"psa_system": SystemRole.PSA, "erp_system": SystemRole.ERP}
        if db_field.name in roles and field is not None:
            field.queryset = field.queryset.filter(role=roles[db_field.name])
        return field
