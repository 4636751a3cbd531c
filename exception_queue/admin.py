"""Admin of the exception queue: finance's working list (filters, search, counts, aging against the SLA,
bulk replay or reject after a confirmation page) and the item page (payload, failed rules, trace, related
records, workflow run, decisions, and the actions the registry offers the user)."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.db.models import F, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from exception_queue import views
from exception_queue.models import Decision, ExceptionItem
from exception_queue.selectors import (
    AGE_BUCKETS,
    exception_item_aging,
    exception_item_queue,
    exception_item_search,
    exception_items_by_age,
)
from exception_queue.services import PERM_DECIDE, PERM_FIX
from integrationhub.scoping import OperationalScopeAdminMixin, request_entity_scope

AMOUNT_BUCKETS = (
    ("lt1k", "Below 1,000", None, Decimal("1000")),
    ("1k-10k", "1,000 to 10,000", Decimal("1000"), Decimal("10000")),
    ("10k-100k", "10,000 to 100,000", Decimal("10000"), Decimal("100000")),
    ("gte100k", "100,000 and more", Decimal("100000"), None),
)


class AmountFilter(admin.SimpleListFilter):
    """Amount ranges; any other range goes in the page's from/to boxes (amount__gte / amount__lte)."""

    title = "amount"
    parameter_name = "amount_range"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, label) for value, label, _low, _high in AMOUNT_BUCKETS]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ExceptionItem]) -> QuerySet[ExceptionItem]:
        for value, _label, low, high in AMOUNT_BUCKETS:
            if self.value() == value:
                if low is not None:
                    queryset = queryset.filter(amount__gte=low)
                if high is not None:
                    queryset = queryset.filter(amount__lt=high)
        return queryset


class AgeFilter(admin.SimpleListFilter):
    """How long items have waited; "past the SLA" uses HUB_EXCEPTION_SLA_HOURS."""

    title = "age"
    parameter_name = "age"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("overdue", "Past the SLA"), *[(value, label) for value, label, _low, _high in AGE_BUCKETS]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ExceptionItem]) -> QuerySet[ExceptionItem]:
        if self.value():
            return exception_items_by_age(queryset, age=str(self.value()))
        return queryset


@admin.register(ExceptionItem)
class ExceptionItemAdmin(OperationalScopeAdminMixin, admin.ModelAdmin):
    """The queue: only the items of the user's legal entities; another entity's item answers 404."""

    list_display = [
        "item_link",
        "category",
        "state",
        "short_reason",
        "system",
        "flow",
        "legal_entity",
        "amount_display",
        "approvals",
        "age_badge",
    ]
    list_display_links = None
    list_filter = ["state", "category", "flow", ("system", admin.RelatedOnlyFieldListFilter), "legal_entity"]
    list_filter += [AmountFilter, AgeFilter]
    search_fields = ["=external_id"]  # the search itself is exception_item_search (exact ids)
    search_help_text = "A correlation id, an idempotency key, an external id, or #item number."
    sortable_by = ["item_link", "category", "state", "amount_display", "age_badge", "system", "legal_entity", "flow"]
    list_per_page = 50
    show_full_result_count = False
    actions = ["bulk_replay", "bulk_reject"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ExceptionItem]:
        return exception_item_queue(scope=request_entity_scope(request))

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ExceptionItem], search_term: str
    ) -> tuple[QuerySet[ExceptionItem], bool]:
        return exception_item_search(queryset, search=search_term), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_fix_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(PERM_FIX)

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(PERM_DECIDE)

    # --- columns ---------------------------------------------------------------------------------------

    @admin.display(description="item", ordering="id")
    def item_link(self, obj: ExceptionItem) -> str:
        url = reverse("admin:exception_queue_exceptionitem_change", args=[obj.pk])
        return format_html('<a class="item-link" href="{}">#{}</a>', url, obj.pk)

    @admin.display(description="reason")
    def short_reason(self, obj: ExceptionItem) -> str:
        return obj.reason if len(obj.reason) <= 60 else obj.reason[:59] + "…"

    # Items without an amount sort as the smallest on every database (PostgreSQL puts NULL first when descending).
    @admin.display(description="amount", ordering=F("amount").asc(nulls_first=True))
    def amount_display(self, obj: ExceptionItem) -> str:
        return f"{obj.amount:,.2f} {obj.currency}".strip() if obj.amount is not None else "—"

    @admin.display(description="approvals")
    def approvals(self, obj: ExceptionItem) -> str:
        if obj.category != "approval_required":
            return "—"
        given = getattr(obj, "approvals_given", 0)
        return f"{given} of {obj.required_approvals}"

    @admin.display(description="age", ordering="created_at")
    def age_badge(self, obj: ExceptionItem) -> str:
        badge = exception_item_aging(item=obj, now=self._now)
        return format_html(
            '<span class="hub-badge age-{}" title="{} h">{}</span>', badge.level, f"{badge.hours:.1f}", badge.label
        )

    # --- pages -----------------------------------------------------------------------------------------

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        from exception_queue.selectors import exception_sla_hours, open_item_counts_by_category

        self._now = timezone.now()
        context = {
            **(extra_context or {}),
            "category_counts": open_item_counts_by_category(scope=request_entity_scope(request)),
            "sla_hours": exception_sla_hours(),
            "amount_gte": request.GET.get("amount__gte", ""),
            "amount_lte": request.GET.get("amount__lte", ""),
        }
        return super().changelist_view(request, extra_context=context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return views.item_detail_view(request, self, object_id)

    def get_urls(self) -> list[Any]:
        info = self.model._meta.app_label, self.model._meta.model_name
        act = path(
            "<int:object_id>/act/",
            self.admin_site.admin_view(lambda request, object_id: views.item_action_view(request, self, object_id)),
            name="{}_{}_act".format(*info),
        )
        return [act, *super().get_urls()]

    # --- bulk actions, each after a confirmation page ----------------------------------------------------

    @admin.action(description="Replay the selected items…", permissions=["fix"])
    def bulk_replay(self, request: HttpRequest, queryset: QuerySet[ExceptionItem]) -> HttpResponse | None:
        return views.bulk_action_view(request, self, queryset, action="replay")

    @admin.action(description="Reject the selected items…", permissions=["decide"])
    def bulk_reject(self, request: HttpRequest, queryset: QuerySet[ExceptionItem]) -> HttpResponse | None:
        return views.bulk_action_view(request, self, queryset, action="reject")

    _now: datetime.datetime | None = None


@admin.register(Decision)
class DecisionAdmin(OperationalScopeAdminMixin, admin.ModelAdmin):
    """Decisions on the items and messages of the user's legal entities."""

    list_display = ["created_at", "action", "item", "message", "user"]
    list_filter = ["action"]
    list_select_related = ["item", "message", "user"]
    readonly_fields = [field.name for field in Decision._meta.fields]

    # Decisions are the audit log: written by the services only, never edited or deleted.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
