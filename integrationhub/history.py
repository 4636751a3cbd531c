"""Selectors over simple-history rows: who changed a configuration record, when, why, and from what to what.

The admin's history list and compare page both read these, so the list summary and the field-by-field
diff always agree on which fields count and how values are shown. Secret fields never appear: they are
left out of the history tables (``excluded_fields``) and, in case a model forgets that, every encrypted
field is dropped here too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from django.contrib import admin
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone
from django.utils.text import capfirst
from simple_history.models import DeletedObject, HistoricalChanges
from simple_history.utils import get_history_manager_for_model, get_m2m_reverse_field_name

from integrationhub.crypto import EncryptedJSONField, EncryptedTextField
from integrationhub.errors import HubNotFoundError

EMPTY_VALUE = "—"
HISTORY_TYPE_LABELS = {"+": "created", "~": "changed", "-": "deleted"}


@dataclass(frozen=True)
class HistoryVersion:
    """One saved version of a record: who saved it, when, why, and whether it was a create, change or delete."""

    history_id: int
    history_date: datetime
    user: str
    reason: str
    history_type: str
    history_type_label: str
    object_repr: str


@dataclass(frozen=True)
class FieldChange:
    """One field that differs between two versions, with both values rendered for people."""

    name: str
    verbose_name: str
    old: str
    new: str


@dataclass(frozen=True)
class ChildChange:
    """A row edited with its parent (a rate-card line on its rate card) that was added, removed or changed between
    two versions of the parent."""

    group: str
    row: str
    action: str
    changes: list[FieldChange] = field(default_factory=list)


@dataclass(frozen=True)
class HistoryDiff:
    """The field-by-field difference between two versions of one record, and of the rows edited with it."""

    from_version: HistoryVersion
    to_version: HistoryVersion
    changes: list[FieldChange] = field(default_factory=list)
    child_changes: list[ChildChange] = field(default_factory=list)

    @property
    def changed_fields(self) -> list[str]:
        return [change.name for change in self.changes]


def _model_and_admin(model_admin_or_model: Any) -> tuple[type[models.Model], admin.ModelAdmin | None]:
    if isinstance(model_admin_or_model, admin.ModelAdmin):
        return model_admin_or_model.model, model_admin_or_model
    return model_admin_or_model, None


def history_secret_fields(*, model_admin_or_model: Any) -> set[str]:
    """Names of the fields of a model that must never be shown in its history."""
    model, model_admin = _model_and_admin(model_admin_or_model)
    history_model = get_history_manager_for_model(model).model
    secret = set(getattr(history_model, "_history_excluded_fields", None) or ())
    secret |= {f.name for f in model._meta.get_fields() if isinstance(f, EncryptedJSONField | EncryptedTextField)}
    secret |= set(getattr(model_admin, "history_diff_excluded_fields", ()) or ())
    return secret


def _user_label(record: HistoricalChanges) -> str:
    user = getattr(record, "history_user", None)
    if user is None:
        return "unknown (system or script)"
    return user.get_username()


def history_version(*, record: HistoricalChanges) -> HistoryVersion:
    """Who, when, why and what kind of change one history row records."""
    return HistoryVersion(
        history_id=record.history_id,
        history_date=record.history_date,
        user=_user_label(record),
        reason=record.history_change_reason or "",
        history_type=record.history_type,
        history_type_label=HISTORY_TYPE_LABELS.get(record.history_type, record.history_type),
        object_repr=str(record.history_object),
    )


def _render_value(model_field: Any, value: Any) -> str:
    """A field value as an auditor should read it: labels for choices, str() for related objects."""
    if isinstance(model_field, models.ManyToManyField):
        reverse_name = get_m2m_reverse_field_name(model_field)
        names = sorted(str(row.get(reverse_name) or EMPTY_VALUE) for row in value or [])
        return ", ".join(names) if names else EMPTY_VALUE
    if value is None or value == "":
        return EMPTY_VALUE
    if isinstance(value, models.Model | DeletedObject):
        return str(value)
    if getattr(model_field, "choices", None):
        return str(dict(model_field.flatchoices).get(value, value))
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, datetime):
        return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z") if timezone.is_aware(value) else str(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, cls=DjangoJSONEncoder)
    return str(value)


def history_changes(
    *, model_admin_or_model: Any, old_record: HistoricalChanges, new_record: HistoricalChanges
) -> list[FieldChange]:
    """The fields that differ from `old_record` to `new_record`, secret fields left out, in model field order."""
    model, _ = _model_and_admin(model_admin_or_model)
    delta = new_record.diff_against(
        old_record,
        excluded_fields=history_secret_fields(model_admin_or_model=model_admin_or_model),
        foreign_keys_are_objs=True,
    )
    order = {f.name: index for index, f in enumerate(model._meta.get_fields())}
    changes = []
    for change in sorted(delta.changes, key=lambda c: order.get(c.field, len(order))):
        model_field = model._meta.get_field(change.field)
        changes.append(
            FieldChange(
                name=change.field,
                verbose_name=capfirst(str(getattr(model_field, "verbose_name", change.field))),
                old=_render_value(model_field, change.old),
                new=_render_value(model_field, change.new),
            )
        )
    return changes


def history_diff(*, model_admin_or_model: Any, obj: Any, from_history_id: int, to_history_id: int) -> HistoryDiff:
    """Field-by-field diff of two versions of `obj`, with who, when and why for each version.

    `model_admin_or_model` is the record's ModelAdmin (its `history_diff_excluded_fields`, if any, are
    hidden too) or its model class. `obj` is the record, or the last historical instance of a deleted one.
    Raises HubNotFoundError if either history id is not a version of `obj`.
    """
    model, _ = _model_and_admin(model_admin_or_model)
    manager = get_history_manager_for_model(model)
    pk_name = model._meta.pk.attname
    rows = {
        row.history_id: row
        for row in manager.filter(**{pk_name: obj.pk, "history_id__in": [from_history_id, to_history_id]})
        .select_related("history_user")
        ._select_related_history_tracked_objs()
    }
    missing = [str(history_id) for history_id in (from_history_id, to_history_id) if history_id not in rows]
    if missing:
        raise HubNotFoundError(
            f"Version {', '.join(missing)} is not a version of {model._meta.verbose_name} {obj.pk}.",
            hint="Pick both versions from the record's history list.",
        )
    old_record, new_record = rows[from_history_id], rows[to_history_id]
    from integrationhub.history_children import history_child_changes

    return HistoryDiff(
        from_version=history_version(record=old_record),
        to_version=history_version(record=new_record),
        changes=history_changes(
            model_admin_or_model=model_admin_or_model, old_record=old_record, new_record=new_record
        ),
        child_changes=history_child_changes(model=model, old_record=old_record, new_record=new_record),
    )
