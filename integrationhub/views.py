"""Hub pages inside the admin: sign-in that lands each role on its own page, and the change feed."""

from __future__ import annotations

import datetime
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.template.response import TemplateResponse
from django.utils import timezone

from integrationhub.audit import AuditAction, audit_record
from integrationhub.history_feed import PAGE_SIZE, history_feed, history_feed_csv_rows, history_tracked_models


def _day_start(value: str) -> datetime.datetime | None:
    """The start of the day `value` (YYYY-MM-DD) in the hub's time zone, or None when it is not a date."""
    try:
        day = datetime.date.fromisoformat(value) if value else None
    except ValueError:
        return None
    return timezone.make_aware(datetime.datetime.combine(day, datetime.time.min)) if day else None


def change_history_view(request: HttpRequest) -> HttpResponse:
    """Recent changes across every history-tracked configuration model, by user, record type and date."""
    models = history_tracked_models(viewer=request.user)
    if not models:
        raise PermissionDenied
    username = request.GET.get("user", "").strip()
    model_label = request.GET.get("type", "").strip()
    since, until = _day_start(request.GET.get("since", "")), _day_start(request.GET.get("until", ""))
    try:
        page = max(1, int(request.GET.get("page", "1")))
    except ValueError:
        page = 1
    entries, has_more = history_feed(
        viewer=request.user,
        username=username or None,
        model_label=model_label or None,
        since=since,
        until=until + datetime.timedelta(days=1) if until else None,  # "until" includes that whole day
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    query = request.GET.copy()
    query.pop("page", None)
    base = query.urlencode()
    context = {
        **admin.site.each_context(request),
        "title": "Change history",
        "subtitle": None,
        "entries": entries,
        "page": page,
        "previous_url": f"?{base}&page={page - 1}" if page > 1 else None,
        "next_url": f"?{base}&page={page + 1}" if has_more else None,
        "types": [(m._meta.label_lower, str(m._meta.verbose_name).capitalize()) for m in models],
        "users": list(
            get_user_model().objects.filter(is_staff=True).order_by("username").values_list("username", flat=True)
        ),
        "selected": {
            "user": username,
            "type": model_label,
            "since": request.GET.get("since", ""),
            "until": request.GET.get("until", ""),
        },
        "can_read_audit": request.user.has_perm("integrationhub.view_auditevent"),
        "export_query": base,
    }
    return TemplateResponse(request, "admin/hub/change_history.html", context)


def change_history_csv_view(request: HttpRequest) -> HttpResponseBase:
    """The change feed with the page's filters as CSV: one row per changed field (old and new value), audited."""
    if not history_tracked_models(viewer=request.user):
        raise PermissionDenied
    filters = _feed_filters(request)
    if isinstance(filters, str):
        return HttpResponse(filters, status=400, content_type="text/plain; charset=utf-8")
    rows = history_feed_csv_rows(viewer=request.user, **filters)
    response = StreamingHttpResponse(rows, content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="configuration-history-{stamp}.csv"'
    audit_record(
        action=AuditAction.CONFIG_HISTORY_EXPORTED,
        request=request,
        object_type="configuration history",
        summary="Configuration history exported as CSV",
        details={key: str(value) for key, value in filters.items() if value},
    )
    return response


def _feed_filters(request: HttpRequest) -> dict[str, Any] | str:
    """The feed's filters from the query string, or what is wrong with them."""
    since_text, until_text = request.GET.get("since", "").strip(), request.GET.get("until", "").strip()
    since, until = _day_start(since_text), _day_start(until_text)
    for name, text, value in (("since", since_text, since), ("until", until_text, until)):
        if text and value is None:
            return f"'{name}' must be a date as YYYY-MM-DD (got '{text}'); fix the filter and export again."
    return {
        "username": request.GET.get("user", "").strip() or None,
        "model_label": request.GET.get("type", "").strip() or None,
        "since": since,
        "until": until + datetime.timedelta(days=1) if until else None,
    }
