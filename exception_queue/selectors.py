"""Reads of the exception queue: filtered item lists and an item's decision log."""

from __future__ import annotations

import datetime

from django.db.models import Count, QuerySet

from exception_queue.models import Decision, ExceptionItem


def exception_item_list(
    *,
    state: str | None = None,
    category: str | None = None,
    system_id: int | None = None,
    legal_entity_id: int | None = None,
    created_after: datetime.datetime | None = None,
    created_before: datetime.datetime | None = None,
) -> QuerySet[ExceptionItem]:
    """Items matching every given filter, newest first (the indexes cover state + category and system)."""
    items = ExceptionItem.objects.select_related("message", "system", "legal_entity")
    if state:
        items = items.filter(state=state)
    if category:
        items = items.filter(category=category)
    if system_id:
        items = items.filter(system_id=system_id)
    if legal_entity_id:
        items = items.filter(legal_entity_id=legal_entity_id)
    if created_after:
        items = items.filter(created_at__gte=created_after)
    if created_before:
        items = items.filter(created_at__lt=created_before)
    return items.order_by("-created_at", "-id")


def decision_list(*, item_id: int) -> QuerySet[Decision]:
    """The decisions on one item, oldest first."""
    return Decision.objects.select_related("user").filter(item_id=item_id).order_by("created_at", "id")


def open_item_counts_by_category() -> list[dict[str, object]]:
    """Open items per category, every category listed (zero included): [{category, label, count}]."""
    from exception_queue.choices import ExceptionCategory, ExceptionState

    counts = dict(
        ExceptionItem.objects.filter(state=ExceptionState.OPEN)
        .values_list("category")
        .annotate(n=Count("id"))
        .values_list("category", "n")
    )
    return [
        {"category": value, "label": label, "count": counts.get(value, 0)} for value, label in ExceptionCategory.choices
    ]
