"""The change feed: recent changes across every history-tracked configuration model, newest first.

Each model's history table is read with the same filters and at most one page's worth of rows (plus the
offset), then the rows are merged by date. A row knows its previous version of the same record (a subquery,
not a query per row), so the feed links straight to the field-by-field compare page of the change.
"""

from __future__ import annotations

import csv
import datetime
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db import models
from django.db.models import Count, OuterRef, Q, Subquery
from django.urls import NoReverseMatch, reverse
from django.utils.text import capfirst
from simple_history.exceptions import NotHistoricalModelError
from simple_history.models import registered_models
from simple_history.utils import get_history_manager_for_model

from integrationhub.history import HISTORY_TYPE_LABELS
from integrationhub.history_children import history_parent_of, parent_version_of

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
    # The record's version number (1 = created); for a row edited with a parent, the parent's version it is in.
    version: int | None = None
    # For a row edited with a parent (a rate-card line): the parent, as "Rate card UK standard".
    parent_label: str = ""
    previous_id: int | None = None


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
        version = (
            history_model.objects.filter(**{pk_name: OuterRef(pk_name)})
            .filter(
                Q(history_date__lt=OuterRef("history_date"))
                | Q(history_date=OuterRef("history_date"), history_id__lte=OuterRef("history_id"))
            )
            .order_by()
            .values(pk_name)
            .annotate(count=Count("history_id"))
            .values("count")
        )
        queryset = history_model.objects.select_related("history_user").annotate(
            previous_id=Subquery(previous), hub_version=Subquery(version)
        )
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
    history_url = _url("admin:{}_{}_history".format(*info), object_id)
    version, parent_label = row.hub_version, ""
    child = history_parent_of(model)
    if child is not None:
        # A row edited with its parent: read it in the parent's history, in the parent version it belongs to.
        parent_model = child.parent_model
        parent_id = getattr(row, f"{child.parent_field}_id")
        parent_info = (parent_model._meta.app_label, parent_model._meta.model_name)
        parent = get_history_manager_for_model(parent_model).filter(**{parent_model._meta.pk.attname: parent_id})
        latest = parent.order_by("-history_date", "-history_id").first()
        parent_label = (
            f"{capfirst(str(parent_model._meta.verbose_name))} {latest.history_object if latest else parent_id}"
        )
        history_url = _url("admin:{}_{}_history".format(*parent_info), parent_id)
        pair = parent_version_of(child, row)
        compare = None
        version = None
        if pair is not None:
            previous_parent, this_parent = pair
            version = parent.filter(history_id__lte=this_parent).count()
            if previous_parent is not None:
                compare = _url(
                    "admin:{}_{}_history_compare".format(*parent_info),
                    parent_id,
                    query=f"?from={previous_parent}&to={this_parent}",
                )
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
        history_url=history_url,
        compare_url=compare,
        version=version,
        parent_label=parent_label,
        previous_id=row.previous_id,
    )


EXPORT_LIMIT = 20_000
EXPORT_PAGE = 500
CSV_HEADER = (
    "when",
    "who",
    "record_type",
    "parent",
    "record",
    "record_id",
    "version",
    "change",
    "why",
    "field",
    "old_value",
    "new_value",
)


def _entry_changes(entry: FeedEntry) -> list[tuple[str, str, str]]:
    """(field, old, new) of one feed entry against the record's version before it; one empty row when none."""
    from django.apps import apps

    from integrationhub.history import history_changes

    if entry.previous_id is None:
        return [("", "", "")]
    model = apps.get_model(entry.model_label)
    manager = get_history_manager_for_model(model)
    rows = {row.history_id: row for row in manager.filter(history_id__in=[entry.previous_id, entry.history_id])}
    if len(rows) < 2:
        return [("", "", "")]
    changes = history_changes(
        model_admin_or_model=model, old_record=rows[entry.previous_id], new_record=rows[entry.history_id]
    )
    return [(change.verbose_name, change.old, change.new) for change in changes] or [("", "", "")]


def history_feed_csv_rows(
    *,
    viewer: Any,
    username: str | None = None,
    model_label: str | None = None,
    since: datetime.date | datetime.datetime | None = None,
    until: datetime.date | datetime.datetime | None = None,
) -> Iterator[str]:
    """The filtered feed as CSV lines (newest first, at most EXPORT_LIMIT changes): one line per changed field,
    formula-like cells defused for spreadsheets."""
    from integrationhub.audit import _csv_safe

    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(values: Iterable[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([_csv_safe(str(value)) for value in values])
        return buffer.getvalue()

    yield line(CSV_HEADER)
    offset = 0
    while offset < EXPORT_LIMIT:
        entries, has_more = history_feed(
            viewer=viewer,
            username=username,
            model_label=model_label,
            since=since,
            until=until,
            offset=offset,
            limit=EXPORT_PAGE,
        )
        for entry in entries:
            for field_name, old, new in _entry_changes(entry):
                yield line(
                    (
                        entry.history_date.isoformat(),
                        entry.user,
                        entry.model_name,
                        entry.parent_label,
                        entry.object_label,
                        entry.object_id,
                        entry.version or "",
                        entry.history_type_label,
                        entry.reason,
                        field_name,
                        old,
                        new,
                    )
                )
        offset += EXPORT_PAGE
        if not has_more:
            break
