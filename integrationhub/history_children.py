"""Rows edited with their parent (rate-card lines, field rules, value-map entries) in the parent's history.

A child row has a history of its own, but an auditor reads the parent: "the rate card changed". Each version of a
parent therefore stands for the state of its children until the parent's next version (inline rows are saved
just after the parent in the same request, so "as of the parent's save" would miss them). Comparing two parent
versions compares its children as of the end of each version's window: added, removed and changed rows, field by
field. The change feed names a child row's parent and links to the parent's compare of the version it belongs to.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.db import models
from django.db.models import Q
from django.utils import timezone
from simple_history.utils import get_history_manager_for_model

from integrationhub.history import ChildChange, FieldChange, history_changes

ONE_MICROSECOND = datetime.timedelta(microseconds=1)


@dataclass(frozen=True)
class HistoryChild:
    """A kind of row edited with its parent: the group's label, the child model, its foreign key to the parent and
    the field that names a row for people."""

    parent: str
    label: str
    model: str
    parent_field: str
    row_label_field: str

    @property
    def parent_model(self) -> type[models.Model]:
        return apps.get_model(self.parent)

    @property
    def child_model(self) -> type[models.Model]:
        return apps.get_model(self.model)


HISTORY_CHILDREN: tuple[HistoryChild, ...] = (
    HistoryChild("governance.RateCard", "Rate-card lines", "governance.RateCardLine", "rate_card", "role"),
    HistoryChild("mappings.MappingSet", "Field rules", "mappings.FieldRule", "mapping_set", "target_path"),
    HistoryChild("mappings.ValueMap", "Value-map entries", "mappings.ValueMapEntry", "value_map", "source_value"),
)


def history_children_of(model: type[models.Model]) -> list[HistoryChild]:
    label = model._meta.label_lower
    return [child for child in HISTORY_CHILDREN if child.parent.lower() == label]


def history_parent_of(model: type[models.Model]) -> HistoryChild | None:
    label = model._meta.label_lower
    return next((child for child in HISTORY_CHILDREN if child.model.lower() == label), None)


def version_window_end(record: Any) -> datetime.datetime:
    """Until when a parent version stands: just before the record's next version, or now for the latest one."""
    model = record.instance_type
    manager = get_history_manager_for_model(model)
    pk_name = model._meta.pk.attname
    later = (
        manager.filter(**{pk_name: getattr(record, pk_name)})
        .filter(
            Q(history_date__gt=record.history_date)
            | Q(history_date=record.history_date, history_id__gt=record.history_id)
        )
        .order_by("history_date", "history_id")
        .values_list("history_date", flat=True)
        .first()
    )
    return later - ONE_MICROSECOND if later is not None else timezone.now()


def _children_as_of(child: HistoryChild, parent_pk: Any, when: datetime.datetime) -> dict[Any, Any]:
    """The parent's child rows as they stood at `when`: the latest history row of each, deleted ones left out."""
    model = child.child_model
    pk_name = model._meta.pk.attname
    rows = (
        get_history_manager_for_model(model)
        .filter(**{f"{child.parent_field}_id": parent_pk, "history_date__lte": when})
        .order_by(pk_name, "-history_date", "-history_id")
    )
    latest: dict[Any, Any] = {}
    for row in rows:
        latest.setdefault(getattr(row, pk_name), row)
    return {pk: row for pk, row in latest.items() if row.history_type != "-"}


def _row_label(child: HistoryChild, row: Any) -> str:
    return str(getattr(row, child.row_label_field, "") or f"#{row.pk}")


def history_child_changes(*, model: type[models.Model], old_record: Any, new_record: Any) -> list[ChildChange]:
    """Child rows added, removed or changed between two versions of a parent (each version's window end)."""
    children = history_children_of(model)
    if not children:
        return []
    pk_name = model._meta.pk.attname
    parent_pk = getattr(new_record, pk_name)
    old_end, new_end = version_window_end(old_record), version_window_end(new_record)
    result: list[ChildChange] = []
    for child in children:
        before, after = _children_as_of(child, parent_pk, old_end), _children_as_of(child, parent_pk, new_end)
        hidden = {child.parent_field, child.child_model._meta.pk.name}
        for pk in sorted(set(before) | set(after), key=lambda key: _row_label(child, after.get(key) or before[key])):
            old, new = before.get(pk), after.get(pk)
            if old is None:
                result.append(
                    ChildChange(child.label, _row_label(child, new), "added", _all_fields(child, new, hidden))
                )
            elif new is None:
                result.append(ChildChange(child.label, _row_label(child, old), "removed"))
            elif old.history_id != new.history_id:
                changes = [
                    change
                    for change in history_changes(
                        model_admin_or_model=child.child_model, old_record=old, new_record=new
                    )
                    if change.name not in hidden
                ]
                if changes:
                    result.append(ChildChange(child.label, _row_label(child, new), "changed", changes))
    return result


def _all_fields(child: HistoryChild, row: Any, hidden: set[str]) -> list[FieldChange]:
    """An added row's values, shown as changes from nothing."""
    from integrationhub.history import EMPTY_VALUE, _render_value, history_secret_fields

    secret = history_secret_fields(model_admin_or_model=child.child_model) | hidden
    fields = []
    for model_field in child.child_model._meta.concrete_fields:
        if model_field.name in secret:
            continue
        value = getattr(row, model_field.name, None)
        fields.append(
            FieldChange(
                name=model_field.name,
                verbose_name=str(model_field.verbose_name).capitalize(),
                old=EMPTY_VALUE,
                new=_render_value(model_field, value),
            )
        )
    return fields


def parent_version_of(child: HistoryChild, row: Any) -> tuple[Any, Any] | None:
    """The parent version a child's history row belongs to (the parent's latest version saved at or before it)
    and the version before that one: the pair the parent's compare page shows it in."""
    parent_model = child.parent_model
    manager = get_history_manager_for_model(parent_model)
    pk_name = parent_model._meta.pk.attname
    parent_pk = getattr(row, f"{child.parent_field}_id")
    versions = list(
        manager.filter(**{pk_name: parent_pk, "history_date__lte": row.history_date})
        .order_by("-history_date", "-history_id")
        .values_list("history_id", flat=True)[:2]
    )
    if not versions:
        return None
    return (versions[1] if len(versions) > 1 else None, versions[0])
