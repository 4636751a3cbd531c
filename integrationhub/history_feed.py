"""The change feed: recent changes across every history-tracked configuration model, newest first.

Each model's history table is read with the same filters and at most one page's worth of rows (plus the
offset), then the rows are merged by date. A row knows its previous version of the same record (a subquery,
not a query per row), so the feed links straight to the field-by-field compare page of the change.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from django.db import models
from django.db.models import OuterRef, Q, Subquery
from django.urls import NoReverseMatch, reverse
from django.utils.text import capfirst
from simple_history.exceptions import NotHistoricalModelError
from simple_history.models import registered_models
from simple_history.utils import get_history_manager_for_model

from integrationhub.history import HISTORY_TYPE_LABELS

LABEL_FIELDS = ("name", "slug", "code", "target_path", "role", "source_value", "label")
PAGE_SIZE = 50


@dataclass(frozen=True)
class FeedEntry:
    """One saved version in the feed: when, who, why, which record, and where to read the diff."""

    history_id: int
    history_date: datetime.datetime
    user: str
    reason: str
    history_type: str
    history_type_label: str
    model_label: str
    model_name: str
    object_id: str
    object_label: str
    history_url: str | None
    compare_url: str | None


def history_tracked_models(*, viewer: Any = None) -> list[type[models.Model]]:
    """Configuration models with a history table that `viewer` (if given) may view (rows of models edited inline,
    such as rate-card lines, are listed too; they link to no page of their own)."""
    tracked = []
    for model in registered_models.values():
        try:
            get_history_manager_for_model(model)
        except NotHistoricalModelError:  # an m2m through table: its changes show on the owning record
            continue
        if viewer is not None and not viewer.has_perm(f"{model._meta.app_label}.view_{model._meta.model_name}"):
            continue
        tracked.append(model)
    return sorted(tracked, key=lambda m: str(m._meta.verbose_name))


def _url(name: str, *args: Any, query: str = "") -> str | None:
    try:
        return reverse(name, args=args) + query
    except NoReverseMatch:
        return None


def history_feed(
    *,
    viewer: Any = None,
    username: str | None = None,
    model_label: str | None = None,
    since: datetime.date | datetime.datetime | None = None,
    until: datetime.date | datetime.datetime | None = None,
    offset: int = 0,
    limit: int = PAGE_SIZE,
) -> tuple[list[FeedEntry], bool]:
    """One page of changes (newest first) by user, record type ("app_label.model") and date range;
    returns the entries and whether an older page exists."""
    wanted = offset + limit + 1
    rows: list[tuple[type[models.Model], Any]] = []
    for model in history_tracked_models(viewer=viewer):
        if model_label and model._meta.label_lower != model_label.lower():
            continue
        history_model = get_history_manager_for_model(model).model
        pk_name = model._meta.pk.attname
        previous = (
            history_model.objects.filter(**{pk_name: OuterRef(pk_name)})
            .filter(
                Q(history_date__lt=OuterRef("history_date"))
                | Q(history_date=OuterRef("history_date"), history_id__lt=OuterRef("history_id"))
            )
            .order_by("-history_date", "-history_id")
            .values("history_id")[:1]
        )
        queryset = history_model.objects.select_related("history_user").annotate(previous_id=Subquery(previous))
        if username:
            queryset = queryset.filter(history_user__username=username)
        if since:
            queryset = queryset.filter(history_date__gte=since)
        if until:
            queryset = queryset.filter(history_date__lt=until)
        rows.extend((model, row) for row in queryset.order_by("-history_date", "-history_id")[:wanted])
    rows.sort(key=lambda pair: (pair[1].history_date, pair[1].history_id), reverse=True)
    page = rows[offset : offset + limit]
    return [_entry(model, row) for model, row in page], len(rows) > offset + limit


def _entry(model: type[models.Model], row: Any) -> FeedEntry:
    opts = model._meta
    object_id = str(getattr(row, opts.pk.attname))
    label_field = next((name for name in LABEL_FIELDS if hasattr(row, name) and getattr(row, name)), None)
    object_label = f"{getattr(row, label_field)}" if label_field else f"#{object_id}"
    info = (opts.app_label, opts.model_name)
    compare = None
    if row.previous_id is not None:
        compare = _url(
            "admin:{}_{}_history_compare".format(*info), object_id, query=f"?from={row.previous_id}&to={row.history_id}"
        )
    user = row.history_user.get_username() if row.history_user else "unknown (system or script)"
    return FeedEntry(
        history_id=row.history_id,
        history_date=row.history_date,
        user=user,
        reason=row.history_change_reason or "",
        history_type=row.history_type,
        history_type_label=HISTORY_TYPE_LABELS.get(row.history_type, row.history_type),
        model_label=opts.label_lower,
        model_name=capfirst(str(opts.verbose_name)),
        object_id=object_id,
        object_label=object_label,
        history_url=_url("admin:{}_{}_history".format(*info), object_id),
        compare_url=compare,
    )
