"""Admin of the insights app: the leaders' KPI dashboard and the live progress of batch syncs.

Both are read-only admin pages in the admin's look: "KPI dashboard" (the figures of insights.selectors for a
time range, drawn with the vendored Chart.js) and "Batch progress" (running pulls and file drops, refreshed
every second from a JSON endpoint beside it).
"""

from __future__ import annotations

import datetime
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from insights import selectors
from insights.choices import PERM_VIEW_KPIS, KpiRange
from insights.formatting import duration_axis_unit
from insights.guide import leader_guide
from insights.models import BatchProgress, KpiDashboard
from integrationhub.scoping import OperationalScopeAdminMixin, request_entity_scope
from reconciliation.selectors import leakage_kpi, scope_of


class KpiRangeForm(forms.Form):
    """The dashboard's time-range selector: a preset, or a custom pair of dates (the end date included)."""

    range = forms.ChoiceField(choices=KpiRange.choices, initial=KpiRange.LAST_7D, required=False)
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def window(self, *, now: datetime.datetime | None = None) -> selectors.KpiWindow:
        """The KpiWindow the form asks for; the 7-day default when the form is empty or invalid."""
        data = self.cleaned_data if self.is_valid() else {}
        key = data.get("range") or KpiRange.LAST_7D
        start = end = None
        if key == KpiRange.CUSTOM and data.get("start") and data.get("end"):
            start = datetime.datetime.combine(data["start"], datetime.time.min, tzinfo=datetime.UTC)
            end = datetime.datetime.combine(data["end"], datetime.time.min, tzinfo=datetime.UTC)
            end += datetime.timedelta(days=1)
        return selectors.kpi_window_resolve(key=key, start=start, end=end, now=now)


def kpi_window_from_request(request: HttpRequest) -> tuple[KpiRangeForm, selectors.KpiWindow, str]:
    """The range form bound to the query string, its window, and an error to show (the 7-day view is used)."""
    form = KpiRangeForm(request.GET or None)
    try:
        return form, form.window(), ""
    except selectors.KpiRangeError as error:
        return form, selectors.kpi_window_resolve(key=KpiRange.LAST_7D), str(error)


@admin.register(KpiDashboard)
class KpiDashboardAdmin(admin.ModelAdmin):
    """The leaders' dashboard: a read-only page, open to holders of insights.view_kpis."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(PERM_VIEW_KPIS)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(PERM_VIEW_KPIS)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view(self.dashboard_view)
        guide = self.admin_site.admin_view(self.guide_view)
        return [
            path("", view, name="insights_kpidashboard_changelist"),
            path("guide/", guide, name="insights_kpidashboard_guide"),
        ]

    def guide_view(self, request: HttpRequest) -> HttpResponse:
        """docs/leader.md as a page: what each figure means, in which unit, read from which rows."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        title, body = leader_guide()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "guide": body,
            "dashboard_url": reverse("admin:insights_kpidashboard_changelist"),
        }
        return TemplateResponse(request, "insights/guide.html", context)

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        form, window, error = kpi_window_from_request(request)
        # Counted over the user's legal entities only: a regional lead sees their entities' figures.
        dashboard = selectors.kpi_dashboard_cached(window=window, scope=request_entity_scope(request))
        trend = dashboard["project_activation"]["trend"]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "KPI dashboard",
            "form": form,
            "range_error": error,
            "window": dashboard["range"],
            "kpis": dashboard,
            "api_url": reverse("kpi-list"),
            "guide_url": reverse("admin:insights_kpidashboard_guide"),
            # Leakage: what the last reconciliation of each entity and period could not explain (the user's entities).
            "leakage": leakage_kpi(scope=scope_of(request.user)),
            "reconciliation_url": reverse("hub-reconciliation"),
            # The activation chart's axis is drawn in the unit its largest median calls for (seconds to days).
            "activation_unit": duration_axis_unit(point["median_seconds"] for point in trend),
        }
        return TemplateResponse(request, "insights/dashboard.html", context)


@admin.register(BatchProgress)
class BatchProgressAdmin(OperationalScopeAdminMixin, admin.ModelAdmin):
    """Batch syncs as they run: the list refreshes itself every second from live.json (the batches of systems
    serving only the user's legal entities)."""

    list_display = ["id", "kind", "system", "entity", "label", "status", "done", "total", "failed", "started_at"]
    list_filter = ["kind", "status"]
    readonly_fields = [field.name for field in BatchProgress._meta.fields]
    change_list_template = "insights/batch_progress.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        live = path("live.json", self.admin_site.admin_view(self.live_view), name="insights_batchprogress_live")
        return [live, *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Batch progress",
            "batches": selectors.batch_progress_list(scope=request_entity_scope(request)),
            "live_url": reverse("admin:insights_batchprogress_live"),
            **(extra_context or {}),
        }
        return TemplateResponse(request, self.change_list_template, context)

    def live_view(self, request: HttpRequest) -> JsonResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return JsonResponse(
            {"now": timezone.now(), "batches": selectors.batch_progress_list(scope=request_entity_scope(request))}
        )
