"""The reconciliation page for finance and auditors (inside the admin's look): the last good result of each legal
entity and period in the user's scope, with filters, a drill-down to the entries and their trace, a CSV export of
the same rows, and "run now". Thin: the figures come from the selectors, a run from the service."""

from __future__ import annotations

import csv
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from governance.models import LegalEntity
from integrationhub.audit import AuditAction, audit_record
from integrationhub.errors import HubError
from reconciliation import selectors, services
from reconciliation.choices import RowKind
from reconciliation.models import ReconciliationRow
from reconciliation.selectors import Scope, in_scope, scope_of

CSV_COLUMNS = (
    "legal_entity",
    "period",
    "kind",
    "project",
    "project_name",
    "person",
    "person_name",
    "currency",
    *services.ROW_FIGURES,
    "queue_reasons",
    "exception_item",
    "run",
    "run_finished_at",
)


def _entities_in(scope: Scope) -> Any:
    entities = LegalEntity.objects.order_by("code")
    return entities if scope is None else entities.filter(pk__in=scope)


class RowFilterForm(forms.Form):
    """The page's filters; the CSV export takes the same query string."""

    legal_entity = forms.ModelChoiceField(queryset=LegalEntity.objects.none(), required=False, empty_label="All")
    period = forms.RegexField(regex=r"^\d{4}-\d{2}$", required=False, help_text="YYYY-MM")
    project = forms.CharField(required=False, max_length=100)
    person = forms.CharField(required=False, max_length=100)
    kind = forms.ChoiceField(choices=[("", "All"), *RowKind.choices], required=False)
    only_differences = forms.BooleanField(required=False, label="Only differences")

    def __init__(self, *args: Any, scope: Scope, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["legal_entity"].queryset = _entities_in(scope)  # type: ignore[attr-defined]

    def row_filters(self) -> selectors.RowFilters:
        data = self.cleaned_data if self.is_valid() else {}
        entity = data.get("legal_entity")
        return selectors.RowFilters(
            legal_entity_id=entity.pk if entity else None,
            period=data.get("period") or "",
            project=(data.get("project") or "").strip(),
            person=(data.get("person") or "").strip(),
            kind=data.get("kind") or "",
            only_differences=bool(data.get("only_differences")),
        )


class RunNowForm(forms.Form):
    legal_entity = forms.ModelChoiceField(queryset=LegalEntity.objects.none())
    period = forms.RegexField(regex=r"^\d{4}-\d{2}$", error_messages={"invalid": "Write the period as YYYY-MM."})

    def __init__(self, *args: Any, scope: Scope, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["legal_entity"].queryset = _entities_in(scope)  # type: ignore[attr-defined]


def _require_view(request: HttpRequest) -> Scope:
    if not request.user.has_perm(services.PERM_VIEW):
        raise PermissionDenied(f"The reconciliation needs the permission {services.PERM_VIEW}.")
    return scope_of(request.user)


def _rows_for(request: HttpRequest, scope: Scope) -> tuple[RowFilterForm, Any, list[Any]]:
    form = RowFilterForm(request.GET or None, scope=scope)
    filters = form.row_filters()
    runs = selectors.latest_good_runs(scope=scope, legal_entity_id=filters.legal_entity_id, period=filters.period)
    return form, selectors.row_list(scope=scope, runs=runs, filters=filters), runs


@require_GET
def reconciliation_view(request: HttpRequest) -> HttpResponse:
    """The last good result of each entity and period in scope, its rows (filtered), and the newest run's outcome."""
    scope = _require_view(request)
    form, rows, runs = _rows_for(request, scope)
    filters = form.row_filters()
    latest = {
        (run.legal_entity_id, run.period): run
        for run in selectors.latest_runs(scope=scope, legal_entity_id=filters.legal_entity_id, period=filters.period)
    }
    results = []
    shown_keys = set()
    for run in runs:
        shown_keys.add((run.legal_entity_id, run.period))
        newest = latest.get((run.legal_entity_id, run.period))
        results.append({"good": run, "newest": newest if newest is not None and newest.pk != run.pk else None})
    # A period whose runs all failed (or are still going) has no result yet: its newest run says why.
    pending = [run for key, run in latest.items() if key not in shown_keys]
    can_run = request.user.has_perm(services.PERM_RUN)
    today = timezone.localdate()
    context = {
        **admin.site.each_context(request),
        "title": "Reconciliation",
        "subtitle": None,
        "form": form,
        "rows": rows[:1000],
        "row_count": rows.count(),
        "results": results,
        "pending": pending,
        "can_run": can_run,
        "run_form": RunNowForm(
            scope=scope,
            initial={"period": filters.period or services.period_of(today), "legal_entity": filters.legal_entity_id},
        )
        if can_run
        else None,
        "export_url": f"{reverse('hub-reconciliation-export')}?{request.GET.urlencode()}",
        "api_url": reverse("reconciliation-run-list"),
    }
    return TemplateResponse(request, "reconciliation/page.html", context)


@require_GET
def reconciliation_row_view(request: HttpRequest, row_id: int) -> HttpResponse:
    """One row's entries: what the PSA approved, the ERP's lines, what waits in the queue (with reason and age)
    and the unexplained difference, each entry linked to its trace and message."""
    scope = _require_view(request)
    # Another entity's row answers 404, like a missing one: its existence is not disclosed.
    row = (
        in_scope(ReconciliationRow.objects.select_related("run", "legal_entity", "exception_item"), scope)
        .filter(pk=row_id)
        .first()
    )
    if row is None:
        raise Http404("No such reconciliation row.")
    context = {
        **admin.site.each_context(request),
        "title": f"Reconciliation {row.legal_entity.code} {row.period}",
        "subtitle": None,
        "row": row,
        "entries": row.entries,
        "can_trace": request.user.has_perm("sync.view_message"),
        "back_url": f"{reverse('hub-reconciliation')}?legal_entity={row.legal_entity_id}&period={row.period}",
    }
    return TemplateResponse(request, "reconciliation/row.html", context)


@require_GET
def reconciliation_export_view(request: HttpRequest) -> HttpResponse:
    """The page's rows (same filters) as CSV, audited."""
    scope = _require_view(request)
    _form, rows, _ = _rows_for(request, scope)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="reconciliation-{timezone.now():%Y%m%d-%H%M%S}.csv"'
    writer = csv.writer(response)
    writer.writerow(CSV_COLUMNS)
    count = 0
    for row in rows.iterator():
        writer.writerow(
            [
                row.legal_entity.code,
                row.period,
                row.kind,
                row.project,
                row.project_name,
                row.person,
                row.person_name,
                row.currency,
                *(getattr(row, name) for name in services.ROW_FIGURES),
                "; ".join(f"{reason.get('category')}: {reason.get('reason')}" for reason in row.queue_reasons),
                row.exception_item_id or "",
                row.run_id,
                row.run.finished_at.isoformat() if row.run.finished_at else "",
            ]
        )
        count += 1
    audit_record(
        action=AuditAction.RECONCILIATION_EXPORTED,
        request=request,
        object_type="reconciliation.reconciliationrow",
        summary=f"Reconciliation rows exported ({count})",
        details={"filters": dict(request.GET.items()), "rows": count},
    )
    return response


@require_POST
def reconciliation_run_now_view(request: HttpRequest) -> HttpResponse:
    """Queue a run of an entity's period now (audited by the service); back to the page with what happened."""
    scope = _require_view(request)
    if not request.user.has_perm(services.PERM_RUN):
        raise PermissionDenied(f"Running a reconciliation needs the permission {services.PERM_RUN}.")
    form = RunNowForm(request.POST, scope=scope)
    back = reverse("hub-reconciliation")
    if not form.is_valid():
        for field, errors in form.errors.items():
            messages.error(request, f"{field}: {' '.join(str(error) for error in errors)}")
        return HttpResponseRedirect(back)
    entity, period = form.cleaned_data["legal_entity"], form.cleaned_data["period"]
    try:
        run = services.reconciliation_run_start(legal_entity=entity, period=period, user=request.user, request=request)
    except HubError as exc:
        messages.error(request, f"{exc.detail} {exc.hint}".strip())
        return HttpResponseRedirect(back)
    messages.success(
        request,
        f"Reconciliation run #{run.pk} of {entity.code} {period} is {run.get_status_display().lower()}; "
        "reload the page in a moment for its result.",
    )
    return HttpResponseRedirect(f"{back}?legal_entity={entity.pk}&period={period}")
