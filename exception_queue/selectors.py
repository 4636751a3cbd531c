"""Reads of the exception queue: filtered item lists, the queue page's rows, aging against the SLA, approvals,
and everything an item's page shows."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import Decision, ExceptionItem
from exception_queue.ports import item_detail_providers
from integrationhub.scoping import EntityScope, records_in_scope


def _scoped(queryset: QuerySet, scope: EntityScope | None) -> QuerySet:
    """`queryset` within `scope` (a user's or key's legal entities); None for the engine's own reads."""
    return queryset if scope is None else records_in_scope(queryset, scope=scope)


def exception_item_list(
    *,
    state: str | None = None,
    category: str | None = None,
    system_id: int | None = None,
    legal_entity_id: int | None = None,
    created_after: datetime.datetime | None = None,
    created_before: datetime.datetime | None = None,
    scope: EntityScope | None = None,
) -> QuerySet[ExceptionItem]:
    """Items within `scope` (if given) matching every given filter, newest first (the indexes cover state +
    category and system). The scope applies first: a legal-entity filter only narrows it."""
    items = _scoped(ExceptionItem.objects.select_related("message", "system", "legal_entity"), scope)
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


def open_item_counts_by_category(*, scope: EntityScope | None = None) -> list[dict[str, object]]:
    """Open items per category (within `scope`, if given), every category listed (zero included)."""
    counts = dict(
        _scoped(ExceptionItem.objects.all(), scope)
        .filter(state=ExceptionState.OPEN)
        .values_list("category")
        .annotate(n=Count("id"))
        .values_list("category", "n")
    )
    return [
        {"category": value, "label": label, "count": counts.get(value, 0)} for value, label in ExceptionCategory.choices
    ]


# --- the queue pages ------------------------------------------------------------------------------------

# Categories whose items come from mappings: analysts fix and replay these; everything else is finance's.
MAPPING_CATEGORIES = frozenset({ExceptionCategory.VALIDATION, ExceptionCategory.TARGET_REJECTED})
# What an analyst (who fixes but does not decide money) acts on: items that come from mappings, and duplicate
# suspects of the client master, which ask "is this the same client?", a data question, not a financial one.
# Analysts also link an unknown resource: it is a cross-reference they keep (Workflows → Resources).
ANALYST_CATEGORIES = MAPPING_CATEGORIES | {ExceptionCategory.DUPLICATE_SUSPECT, ExceptionCategory.UNKNOWN_RESOURCE}
DEFAULT_SLA_HOURS = 24.0
# Age buckets of the queue's "age" filter: (value, label, from hours, to hours).
AGE_BUCKETS = (
    ("lt4h", "Less than 4 hours", 0.0, 4.0),
    ("4h-1d", "4 to 24 hours", 4.0, 24.0),
    ("1d-3d", "1 to 3 days", 24.0, 72.0),
    ("gt3d", "More than 3 days", 72.0, None),
)


def exception_sla_hours() -> float:
    """Hours an open item may wait before it is overdue (setting HUB_EXCEPTION_SLA_HOURS, default 24)."""
    return float(getattr(settings, "HUB_EXCEPTION_SLA_HOURS", DEFAULT_SLA_HOURS))


@dataclass(frozen=True)
class AgingBadge:
    """How long an item has waited, against the SLA: ok, due soon (past half the SLA) or overdue."""

    level: str
    label: str
    hours: float


def exception_item_aging(*, item: ExceptionItem, now: datetime.datetime | None = None) -> AgingBadge:
    """The aging badge of one item; a closed item is measured until its last update."""
    now = now or timezone.now()
    end = now if item.state == ExceptionState.OPEN else (item.updated_at or now)
    hours = max(0.0, (end - item.created_at).total_seconds() / 3600)
    sla = exception_sla_hours()
    if item.state != ExceptionState.OPEN:
        level = "closed"
    elif hours >= sla:
        level = "overdue"
    elif hours >= sla / 2:
        level = "due-soon"
    else:
        level = "ok"
    if hours < 1:
        label = f"{int(hours * 60)} min"
    elif hours < 48:
        label = f"{int(hours)} h"
    else:
        label = f"{int(hours // 24)} d"
    return AgingBadge(level=level, label=label, hours=hours)


def exception_item_search(items: QuerySet[ExceptionItem], *, search: str) -> QuerySet[ExceptionItem]:
    """Items whose message correlation id or idempotency key, or whose external id, equals `search`
    (exact matches, so each one is an index lookup); "#12" or "12" also finds item 12."""
    search = search.strip()
    if not search:
        return items
    condition = Q(external_id=search) | Q(message__correlation_id=search) | Q(message__idempotency_key=search)
    number = search.lstrip("#")
    if number.isdigit():
        condition |= Q(pk=int(number))
    return items.filter(condition)


def exception_item_queue(
    *,
    state: str | None = None,
    category: str | None = None,
    system_id: int | None = None,
    legal_entity_id: int | None = None,
    flow: str | None = None,
    amount_min: Decimal | None = None,
    amount_max: Decimal | None = None,
    age: str | None = None,
    search: str | None = None,
    now: datetime.datetime | None = None,
    scope: EntityScope | None = None,
) -> QuerySet[ExceptionItem]:
    """The queue screen's rows: every filter of the page, with what each row shows joined or annotated
    (system, legal entity, message, requester, approvals given) so a page costs a fixed number of queries."""
    items = exception_item_list(
        state=state, category=category, system_id=system_id, legal_entity_id=legal_entity_id, scope=scope
    ).select_related("requested_by", "workflow_run")
    if flow:
        items = items.filter(flow=flow)
    if amount_min is not None:
        items = items.filter(amount__gte=amount_min)
    if amount_max is not None:
        items = items.filter(amount__lte=amount_max)
    if age:
        items = exception_items_by_age(items, age=age, now=now)
    if search:
        items = exception_item_search(items, search=search)
    # A correlated subquery, not a JOIN + GROUP BY: the database counts approvals only for the rows of the page.
    approvals = (
        Decision.objects.filter(item=OuterRef("pk"), action=DecisionAction.APPROVE)
        .order_by()
        .values("item")
        .annotate(n=Count("id"))
        .values("n")
    )
    return items.annotate(approvals_given=Coalesce(Subquery(approvals), 0))


def exception_items_by_age(
    items: QuerySet[ExceptionItem], *, age: str, now: datetime.datetime | None = None
) -> QuerySet[ExceptionItem]:
    """Items in one age bucket (AGE_BUCKETS), or past the SLA for age="overdue"."""
    now = now or timezone.now()
    if age == "overdue":
        return items.filter(state=ExceptionState.OPEN, created_at__lte=now - timedelta(hours=exception_sla_hours()))
    for value, _label, low, high in AGE_BUCKETS:
        if value == age:
            items = items.filter(created_at__lte=now - timedelta(hours=low))
            if high is not None:
                items = items.filter(created_at__gt=now - timedelta(hours=high))
            return items
    return items


@dataclass(frozen=True)
class ApprovalSummary:
    """Approvals an approval item has: "1 of 2", and who gave them."""

    required: int
    given: int
    approvers: list[str]

    @property
    def label(self) -> str:
        return f"{self.given} of {self.required} approval{'s' if self.required != 1 else ''}"


def exception_item_approvals(*, item: ExceptionItem, decisions: list[Decision] | None = None) -> ApprovalSummary:
    """The approvals given on `item` (from its decisions, loaded once by the caller when it has them)."""
    rows = decisions if decisions is not None else list(decision_list(item_id=item.pk))
    approvers = [d.user.get_username() if d.user else "unknown" for d in rows if d.action == DecisionAction.APPROVE]
    return ApprovalSummary(required=item.required_approvals, given=len(approvers), approvers=approvers)


def exception_item_actions_for(*, item: ExceptionItem, user: Any) -> list[Any]:
    """What `user` may do with `item` on the pages: the registry's actions, except that somebody who does not
    decide (an analyst) only fixes and replays items that come from mappings, and decides duplicate suspects."""
    from exception_queue.actions import item_actions_available
    from exception_queue.services import PERM_DECIDE

    actions = item_actions_available(item=item, user=user)
    if not user.has_perm(PERM_DECIDE) and item.category not in ANALYST_CATEGORIES:
        return []
    return actions


@dataclass
class ExceptionItemDetail:
    """Everything the item page shows: the item, its decisions and approvals, the message trace, the records
    linked to it through cross-references, and the workflow run it holds."""

    item: ExceptionItem
    decisions: list[Decision]
    approvals: ApprovalSummary
    aging: AgingBadge
    trace: list[Any] = field(default_factory=list)
    cross_references: list[Any] = field(default_factory=list)
    deliveries: list[Any] = field(default_factory=list)
    workflow_run: Any = None
    workflow_steps: list[Any] = field(default_factory=list)
    # The reader's legal-entity scope: the providers show only what it covers (the trace's other rows, say).
    scope: EntityScope | None = None


def exception_item_detail(*, item_id: int, scope: EntityScope | None = None) -> ExceptionItemDetail | None:
    """One item with what its page shows, or None when there is no such item (or it is outside `scope`)."""
    item = (
        _scoped(ExceptionItem.objects.all(), scope)
        .select_related(
            "message__system", "message__mapping_set", "system", "legal_entity", "requested_by", "workflow_run"
        )
        .filter(pk=item_id)
        .first()
    )
    if item is None:
        return None
    decisions = list(decision_list(item_id=item.pk))
    detail = ExceptionItemDetail(
        item=item,
        decisions=decisions,
        approvals=exception_item_approvals(item=item, decisions=decisions),
        aging=exception_item_aging(item=item),
        scope=scope,
    )
    # The trace, the deliveries and the record's ids elsewhere come from the apps that own them.
    for provide in item_detail_providers():
        provide(detail)
    run = item.workflow_run
    if run is not None:
        detail.workflow_run = run
        detail.workflow_steps = list(run.steps.order_by("position", "id"))
    return detail
