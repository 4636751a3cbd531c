"""Hub pages inside the admin: sign-in that lands each role on its own page, and the change feed."""

from __future__ import annotations

import datetime

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from integrationhub.history_feed import PAGE_SIZE, history_feed, history_tracked_models


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
    }
    return TemplateResponse(request, "admin/hub/change_history.html", context)
