"""Admin of the governance app: history with who and why on every screen, plus all-or-nothing import and export."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from import_export.admin import ImportExportMixin
from import_export.formats import base_formats

from governance import services
from governance.models import AccountingPeriod, LegalEntity, OwnershipRule, RateCard, RateCardLine, SyncPolicy
from governance.resources import LegalEntityResource, OwnershipRuleResource, RateCardResource, SyncPolicyResource
from integrationhub.admin_base import HubHistoryAdmin
from integrationhub.scoping import EntityScopedAdminMixin


def admin_change_reason(form: forms.ModelForm | None, *, change: bool) -> str:
    """The reason typed in the form's "Reason for change" field, or the same default HubHistoryAdmin uses."""
    reason = form.cleaned_data.get("change_reason") if form is not None and hasattr(form, "cleaned_data") else None
    return reason or ("changed in admin" if change else "created in admin")


class GovernanceAdmin(ImportExportMixin, HubHistoryAdmin):
    """HubHistoryAdmin (history, reason, compare) with import-export's import (dry-run diff, then confirm) and export.

    ImportExportMixin comes first so its change-list template (import/export buttons) and URLs wrap the
    history admin's; both chain to super(), so history and import-export stay available together.
    """

    formats = [base_formats.CSV, base_formats.XLSX, base_formats.JSON]

    def has_import_permission(self, request: HttpRequest) -> bool:
        # import-export allows import to anyone with admin access unless a setting says otherwise; an import
        # adds and changes rows, so it needs both permissions on the model (an auditor has neither).
        opts = self.model._meta
        return all(
            request.user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")
            for action in ("add", "change")
        )

    def has_export_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def process_result(self, result: Any, request: HttpRequest) -> HttpResponse:
        # The confirm step re-runs the import; if the data changed since the dry run and a row now fails,
        # everything was rolled back, and saying "imported" would be a lie.
        if result.has_errors() or result.has_validation_errors():
            rows = sorted({row.number for row in result.invalid_rows} | {number for number, _ in result.row_errors()})
            messages.error(
                request,
                f"Nothing was imported: rows {', '.join(map(str, rows)) or '(header)'} failed on the final run. "
                "Import the file again to see the errors.",
            )
            opts = self.model._meta
            return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        return super().process_result(result, request)


@admin.register(LegalEntity)
class LegalEntityAdmin(GovernanceAdmin):
    resource_classes = [LegalEntityResource]
    list_display = ["code", "name", "country", "base_currency", "region", "tax_jurisdiction", "updated_at"]
    list_filter = ["region", "country", "base_currency"]
    search_fields = ["code", "name", "tax_jurisdiction"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["code", "name", "country", "base_currency", "tax_jurisdiction", "region"]}),
        ("Timestamps", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]


@admin.register(OwnershipRule)
class OwnershipRuleAdmin(GovernanceAdmin):
    resource_classes = [OwnershipRuleResource]
    list_display = ["id", "entity", "fields_owned", "lifecycle_stage", "owning_system", "conflict_action", "updated_at"]
    list_display_links = ["id", "entity"]
    list_filter = ["entity", "owning_system", "conflict_action", "lifecycle_stage"]
    list_select_related = ["entity", "owning_system"]
    search_fields = ["entity__name", "owning_system__name", "owning_system__slug", "lifecycle_stage", "notes"]
    autocomplete_fields = ["owning_system"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["entity", "field_group", "lifecycle_stage", "owning_system", "conflict_action", "notes"]}),
        ("Timestamps", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    @admin.display(description="Fields")
    def fields_owned(self, obj: OwnershipRule) -> str:
        return ", ".join(obj.field_group) if obj.field_group else "all fields"


class RateCardLineInline(admin.TabularInline):
    model = RateCardLine
    extra = 1
    fields = ["role", "bill_rate", "cost_rate", "unit"]


@admin.register(RateCard)
class RateCardAdmin(EntityScopedAdminMixin, GovernanceAdmin):
    resource_classes = [RateCardResource]
    inlines = [RateCardLineInline]
    list_display = [
        "name",
        "legal_entity",
        "currency",
        "scope_display",
        "valid_from",
        "valid_to",
        "tolerance_percent",
        "line_count",
    ]
    list_filter = ["legal_entity", "currency", "valid_from"]
    list_select_related = ["legal_entity"]
    search_fields = ["name", "legal_entity__code", "client_ref", "contract_ref", "lines__role"]
    date_hierarchy = "valid_from"
    autocomplete_fields = ["legal_entity"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "legal_entity", "currency", "tolerance_percent"]}),
        ("Validity", {"fields": ["valid_from", "valid_to"]}),
        (
            "Override scope",
            {
                "fields": ["client_ref", "contract_ref"],
                "description": "Leave both empty for the legal entity's default card. A contract override also "
                "names its client.",
            },
        ),
        ("Timestamps", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[RateCard]:
        return super().get_queryset(request).prefetch_related("lines")

    @admin.display(description="Scope")
    def scope_display(self, obj: RateCard) -> str:
        return obj.scope

    @admin.display(description="Roles")
    def line_count(self, obj: RateCard) -> int:
        return len(obj.lines.all())

    def get_data_for_export(self, request: HttpRequest, queryset: QuerySet[RateCard], **kwargs: Any) -> Any:
        # The file has one row per line: export the lines of the cards the change list (or action) selected.
        lines = RateCardLine.objects.filter(rate_card__in=queryset).select_related("rate_card__legal_entity")
        return super().get_data_for_export(request, lines.order_by("rate_card_id", "role"), **kwargs)

    def save_formset(self, request: HttpRequest, form: forms.ModelForm, formset: Any, change: bool) -> None:
        # Lines get the card's reason and user too, so an auditor sees why a rate moved, not just that it did.
        reason = admin_change_reason(form, change=change)
        lines = formset.save(commit=False)
        for line in formset.deleted_objects:
            services._stamp(line, user=request.user, reason=reason)
            line.delete()
        for line in lines:
            services._stamp(line, user=request.user, reason=reason)
            line.save()
        formset.save_m2m()

    def delete_model(self, request: HttpRequest, obj: RateCard) -> None:
        services.rate_card_delete(rate_card=obj, user=request.user, reason="deleted in admin")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[RateCard]) -> None:
        for card in queryset:
            services.rate_card_delete(rate_card=card, user=request.user, reason="deleted in admin")


@admin.register(SyncPolicy)
class SyncPolicyAdmin(GovernanceAdmin):
    resource_classes = [SyncPolicyResource]
    list_display = ["name", "flow", "legal_entity", "trigger", "cron", "active", "schedule_enabled", "updated_at"]
    list_filter = ["flow", "trigger", "active", "legal_entity"]
    list_select_related = ["legal_entity", "periodic_task"]
    search_fields = ["name", "legal_entity__code", "cron"]
    autocomplete_fields = ["legal_entity"]
    readonly_fields = ["periodic_task", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "flow", "legal_entity", "active"]}),
        ("Trigger", {"fields": ["trigger", "cron", "periodic_task"]}),
        (
            "Delivery",
            {
                "fields": [
                    "batch_size",
                    "max_attempts",
                    "backoff_base_seconds",
                    "backoff_cap_seconds",
                    "jitter",
                    "timeout_seconds",
                    "rate_limit_per_second",
                    "dead_letter_threshold",
                    "ordering_key_path",
                ]
            },
        ),
        ("Validation", {"fields": ["validation_rules"]}),
        (
            "Approval",
            {"fields": ["approval_threshold_amount", "second_approval_threshold_amount", "approval_currency"]},
        ),
        ("Timestamps", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    @admin.display(description="Scheduled", boolean=True)
    def schedule_enabled(self, obj: SyncPolicy) -> bool | None:
        return obj.periodic_task.enabled if obj.periodic_task else None

    def save_model(self, request: HttpRequest, obj: SyncPolicy, form: forms.ModelForm, change: bool) -> None:
        # Through the service so the beat schedule follows the policy (trigger, cron, active).
        services.sync_policy_save(policy=obj, user=request.user, reason=admin_change_reason(form, change=change))

    def delete_model(self, request: HttpRequest, obj: SyncPolicy) -> None:
        services.sync_policy_delete(policy=obj, user=request.user, reason="deleted in admin")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[SyncPolicy]) -> None:
        for policy in queryset:
            services.sync_policy_delete(policy=policy, user=request.user, reason="deleted in admin")


@admin.register(AccountingPeriod)
class AccountingPeriodAdmin(EntityScopedAdminMixin, HubHistoryAdmin):
    """The period calendar per legal entity: finance opens and closes periods, the period pull brings the ERPs'
    states; every change keeps its history, and the list shows who made the last one (a person, or the pull)."""

    list_display = ("name", "entity_code", "dates", "status", "erp_state", "source_system", "last_changed_by")
    list_filter = ("status", "erp_state", "legal_entity", "source_system")
    search_fields = ("name", "legal_entity__code", "notes", "external_id")
    ordering = ("legal_entity__code", "-start_date")
    readonly_fields = ("source_system", "external_id", "erp_state", "erp_synced_at", "created_at", "updated_at")
    fieldsets = [
        (None, {"fields": ["legal_entity", "name", "start_date", "end_date", "status", "notes"]}),
        ("From the ERP (period pull)", {"fields": ["source_system", "external_id", "erp_state", "erp_synced_at"]}),
        ("Timestamps", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AccountingPeriod]:
        latest = AccountingPeriod.history.filter(id=OuterRef("pk")).order_by("-history_date", "-history_id")
        return (
            super()
            .get_queryset(request)
            .select_related("legal_entity", "source_system")
            .annotate(
                last_changed_username=Subquery(latest.values("history_user__username")[:1]),
                last_changed_reason=Subquery(latest.values("history_change_reason")[:1]),
            )
        )

    @admin.display(description="Legal entity", ordering="legal_entity__code")
    def entity_code(self, obj: AccountingPeriod) -> str:
        return obj.legal_entity.code

    @admin.display(description="Dates", ordering="start_date")
    def dates(self, obj: AccountingPeriod) -> str:
        return f"{obj.start_date:%Y-%m-%d} to {obj.end_date:%Y-%m-%d}"

    @admin.display(description="Last changed by")
    def last_changed_by(self, obj: AccountingPeriod) -> str:
        # The pull saves with no user: its changes are the system's, named by the reason it records.
        who = getattr(obj, "last_changed_username", None) or "system"
        reason = getattr(obj, "last_changed_reason", None) or ""
        return format_html("{}<br><small>{}</small>", who, reason) if reason else who

    def save_model(self, request: HttpRequest, obj: AccountingPeriod, form: forms.ModelForm, change: bool) -> None:
        # Through the service: the overlap check runs under the legal entity's lock, and the user is recorded.
        services.accounting_period_save(period=obj, user=request.user, reason=admin_change_reason(form, change=change))
