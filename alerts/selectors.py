"""Reads of the alerts app: which open items a rule matches now, and the alerts an item produced."""

from __future__ import annotations

import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from alerts.choices import AlertStatus, AlertTrigger
from alerts.models import Alert, AlertRule
from exception_queue.choices import ExceptionState
from exception_queue.models import ExceptionItem
from exception_queue.selectors import exception_sla_hours


def rule_sla_hours(rule: AlertRule) -> float:
    """The rule's own SLA, else the hub's (HUB_EXCEPTION_SLA_HOURS)."""
    return float(rule.sla_hours) if rule.sla_hours is not None else exception_sla_hours()


def rule_matching_items(rule: AlertRule) -> QuerySet[ExceptionItem]:
    """Open items of the rule's category, flow, legal entity and minimum amount (an empty criterion matches all)."""
    items = ExceptionItem.objects.filter(state=ExceptionState.OPEN)
    if rule.category:
        items = items.filter(category=rule.category)
    if rule.flow:
        items = items.filter(flow=rule.flow)
    if rule.legal_entity_id is not None:
        items = items.filter(legal_entity_id=rule.legal_entity_id)
    if rule.min_amount is not None:
        items = items.filter(amount__gte=rule.min_amount)
    return items


def rule_due_items(rule: AlertRule, *, now: datetime.datetime) -> QuerySet[ExceptionItem]:
    """Matching items the rule alerts about now: every open one (trigger "opened"), or those past the SLA."""
    items = rule_matching_items(rule)
    if rule.trigger == AlertTrigger.PAST_SLA:
        items = items.filter(created_at__lte=now - datetime.timedelta(hours=rule_sla_hours(rule)))
    return items


def rule_escalation_items(rule: AlertRule, *, now: datetime.datetime) -> QuerySet[ExceptionItem]:
    """Matching items still open `escalate_after_hours` past the SLA (none when the rule has no escalation)."""
    if rule.escalate_group_id is None or rule.escalate_after_hours is None:
        return ExceptionItem.objects.none()
    waited = datetime.timedelta(hours=rule_sla_hours(rule) + float(rule.escalate_after_hours))
    return rule_matching_items(rule).filter(created_at__lte=now - waited)


def group_emails(group_id: int | None) -> list[str]:
    """The email addresses of a group's active members."""
    if group_id is None:
        return []
    users = get_user_model().objects.filter(groups__id=group_id, is_active=True).exclude(email="")
    return sorted(set(users.values_list("email", flat=True)))


def alerts_due(*, now: datetime.datetime, limit: int = 200) -> list[Alert]:
    """Pending alerts whose next attempt is due, oldest first."""
    return list(
        Alert.objects.filter(status=AlertStatus.PENDING, next_attempt_at__lte=now)
        .select_related("rule", "rule__chat_system", "item")
        .order_by("next_attempt_at", "pk")[:limit]
    )


def item_alerts(item: ExceptionItem) -> list[Alert]:
    """Every alert an item produced, newest first (shown on the item: "alerted finance-uk at 09:12")."""
    return list(Alert.objects.filter(item=item).select_related("rule").order_by("-created_at", "-pk"))


def alert_item_link(item: ExceptionItem | None) -> str:
    """The item's page, absolute when the hub knows the address it is served on (HUB_PUBLIC_URL)."""
    from django.urls import reverse

    if item is None:
        path = reverse("admin:exception_queue_exceptionitem_changelist")
    else:
        path = reverse("admin:exception_queue_exceptionitem_change", args=[item.pk])
    base = str(getattr(settings, "HUB_PUBLIC_URL", "") or "").rstrip("/")
    return f"{base}{path}"
