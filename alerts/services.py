"""Exception alerts: rules are evaluated on a schedule, each alert is created once (its dedupe key) and sent with
retries: chat posts through the hub's transport (pause, circuit, rate budget, timeout, attempt row, correlation
id) like any outbound call, emails through Django's email backend. Every alert sent or given up is audited."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from operator import methodcaller
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from alerts.choices import AlertCadence, AlertChannel, AlertKind, AlertStatus, AlertTrigger
from alerts.connector_plugins import ALERT_ENTITY
from alerts.models import Alert, AlertRule
from alerts.selectors import (
    alert_item_link,
    alerts_due,
    group_emails,
    rule_due_items,
    rule_escalation_items,
    rule_sla_hours,
)
from exception_queue.models import ExceptionItem
from integrationhub.audit import AuditAction, audit_record
from sync import transport
from sync.choices import AttemptOutcome

logger = logging.getLogger(__name__)

# A failed send is tried again after 1, 2, 4, 8 minutes (capped at an hour), then given up and shown as failed.
MAX_ATTEMPTS = 5
FIRST_RETRY_SECONDS = 60
MAX_RETRY_SECONDS = 3600
# A sender holds an alert this long; a sender that died mid-send leaves it to the next run after that.
SEND_LEASE_SECONDS = 120


@dataclass(frozen=True)
class AlertRunResult:
    created: int
    sent: int
    failed: int
    retrying: int


def _audience(rule: AlertRule, kind: str) -> str:
    if kind == AlertKind.ESCALATION:
        return rule.escalate_group.name if rule.escalate_group else ""
    names = [
        rule.notify_group.name if rule.notify_group else "",
        rule.notify_user.get_username() if rule.notify_user else "",
    ]
    return ", ".join(name for name in names if name)


def _emails(rule: AlertRule, kind: str) -> list[str]:
    if kind == AlertKind.ESCALATION:
        return group_emails(rule.escalate_group_id)
    emails = group_emails(rule.notify_group_id)
    if rule.notify_user is not None and rule.notify_user.is_active and rule.notify_user.email:
        emails.append(rule.notify_user.email)
    return sorted(set(emails))


def _item_text(rule: AlertRule, item: ExceptionItem, *, now: datetime.datetime) -> str:
    waited = (now - item.created_at).total_seconds() / 3600
    facts = [item.get_category_display()]
    if item.flow:
        facts.append(item.get_flow_display())
    if item.legal_entity is not None:
        facts.append(item.legal_entity.code)
    if item.amount is not None:
        facts.append(f"{item.amount:,.2f} {item.currency}".strip())
    return (
        f"{' · '.join(facts)}\n{item.reason[:500]}\n"
        f"Open for {waited:.1f} h (SLA {rule_sla_hours(rule):g} h). Rule: {rule.name}."
    )


def _item_subject(kind: str, rule: AlertRule, item: ExceptionItem) -> str:
    what = {
        AlertKind.ESCALATION: "escalated, still open past its SLA",
        AlertKind.ITEM: "past its SLA" if rule.trigger == AlertTrigger.PAST_SLA else "opened",
    }[AlertKind(kind)]
    return f"Exception item #{item.pk} {what}: {item.get_category_display()}"[:300]


def _new_alerts(
    rule: AlertRule, *, kind: str, key: str, subject: str, body: str, item: ExceptionItem | None
) -> list[Alert]:
    alerts = []
    correlation = ""
    if item is not None and item.message_id is not None:
        correlation = str(getattr(item.message, "correlation_id", "") or "")
    if rule.by_email:
        emails = _emails(rule, kind)
        alerts.append(
            Alert(
                rule=rule,
                item=item,
                kind=kind,
                channel=AlertChannel.EMAIL,
                recipients=", ".join(emails),
                audience=_audience(rule, kind)[:150],
                dedupe_key=f"{key}:email"[:200],
                subject=subject,
                body=body,
                correlation_id=correlation[:64],
            )
        )
    if rule.chat_system is not None:
        alerts.append(
            Alert(
                rule=rule,
                item=item,
                kind=kind,
                channel=AlertChannel.CHAT,
                recipients=rule.chat_system.slug,
                audience=(_audience(rule, kind) or rule.chat_system.name)[:150],
                dedupe_key=f"{key}:chat"[:200],
                subject=subject,
                body=body,
                correlation_id=correlation[:64],
            )
        )
    return alerts


def _alerted_items(rule: AlertRule, kind: str) -> QuerySet[Alert, Any]:
    return Alert.objects.filter(rule=rule, kind=kind, item__isnull=False).values("item_id")


def _rule_alerts(rule: AlertRule, *, now: datetime.datetime) -> list[Alert]:
    """The alerts a rule calls for now; the dedupe keys make creating one already made a no-op."""
    alerts: list[Alert] = []
    if rule.cadence == AlertCadence.EACH:
        due = rule_due_items(rule, now=now).exclude(pk__in=_alerted_items(rule, AlertKind.ITEM))
        for item in due.select_related("legal_entity", "message").order_by("created_at", "pk")[:500]:
            alerts += _new_alerts(
                rule,
                kind=AlertKind.ITEM,
                key=f"rule-{rule.pk}:item-{item.pk}",
                subject=_item_subject(AlertKind.ITEM, rule, item),
                body=_item_text(rule, item, now=now) + f"\n{alert_item_link(item)}",
                item=item,
            )
    elif now.hour >= rule.digest_hour:
        items = list(rule_due_items(rule, now=now).select_related("legal_entity").order_by("created_at", "pk")[:200])
        if items:
            lines = [
                f"#{item.pk} {_item_text(rule, item, now=now).splitlines()[0]}: {item.reason[:120]}" for item in items
            ]
            alerts += _new_alerts(
                rule,
                kind=AlertKind.DIGEST,
                key=f"rule-{rule.pk}:digest-{now.date().isoformat()}",
                subject=f"Daily digest: {len(items)} open exception item(s) for {rule.name}"[:300],
                body="\n".join(lines) + f"\n{alert_item_link(None)}",
                item=None,
            )
    escalations = rule_escalation_items(rule, now=now).exclude(pk__in=_alerted_items(rule, AlertKind.ESCALATION))
    for item in escalations.select_related("legal_entity", "message").order_by("created_at", "pk")[:500]:
        alerts += _new_alerts(
            rule,
            kind=AlertKind.ESCALATION,
            key=f"rule-{rule.pk}:escalation-{item.pk}",
            subject=_item_subject(AlertKind.ESCALATION, rule, item),
            body=_item_text(rule, item, now=now) + f"\n{alert_item_link(item)}",
            item=item,
        )
    return alerts


def alert_rules_evaluate(*, now: datetime.datetime | None = None, rules: Iterable[AlertRule] | None = None) -> int:
    """Create the alerts every active rule calls for now, each at most once. Returns how many were created."""
    now = now or timezone.now()
    if rules is None:
        rules = AlertRule.objects.filter(active=True).select_related(
            "notify_group", "notify_user", "escalate_group", "chat_system"
        )
    created = 0
    for rule in rules:
        alerts = _rule_alerts(rule, now=now)
        if not alerts:
            continue
        keys = [alert.dedupe_key for alert in alerts]
        existing = set(Alert.objects.filter(dedupe_key__in=keys).values_list("dedupe_key", flat=True))
        # Two evaluations at once may both see a key as new: the unique key keeps the second one out.
        fresh = [alert for alert in alerts if alert.dedupe_key not in existing]
        for alert in fresh:
            alert.created_at = alert.next_attempt_at = now
        Alert.objects.bulk_create(fresh, ignore_conflicts=True)
        created += Alert.objects.filter(dedupe_key__in=keys).exclude(dedupe_key__in=existing).count()
    return created


def _claim(alert: Alert, *, now: datetime.datetime) -> bool:
    """Take an alert for one send: a lease on its next attempt, so a second sender (or one after a crash before
    the lease ends) leaves it alone."""
    lease_end = now + datetime.timedelta(seconds=SEND_LEASE_SECONDS)
    return bool(
        Alert.objects.filter(pk=alert.pk, status=AlertStatus.PENDING, next_attempt_at=alert.next_attempt_at).update(
            next_attempt_at=lease_end
        )
    )


def _send_email(alert: Alert) -> None:
    recipients = [address.strip() for address in alert.recipients.split(",") if address.strip()]
    if not recipients:
        raise _NoRecipientError(
            f"No one to email for rule '{alert.rule.name}': {alert.audience or 'nobody'} has no active member with an "
            "email address. Add an address to the users, or choose another group, person or a chat webhook."
        )
    EmailMessage(
        subject=f"[Integration Hub] {alert.subject}",
        body=alert.body,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=recipients,
        headers={"X-Hub-Alert-Key": alert.dedupe_key},
    ).send(fail_silently=False)


def _send_chat(alert: Alert) -> None:
    system = alert.rule.chat_system
    if system is None:
        raise _NoRecipientError(
            f"Rule '{alert.rule.name}' no longer has a chat webhook system: choose one on the rule, or turn chat off."
        )
    payload = {"title": alert.subject, "text": alert.body, "link": alert_item_link(alert.item)}
    transport.connector_call(
        system,
        "upsert",
        methodcaller("upsert", ALERT_ENTITY, payload, alert.dedupe_key),
        correlation_id=alert.correlation_id,
        entity=ALERT_ENTITY,
        key=alert.dedupe_key,
    )


class _NoRecipientError(Exception):
    """An alert that can never be sent as configured: retrying would not help, a person must change the rule."""


def _retryable(error: Exception) -> bool:
    if isinstance(error, _NoRecipientError):
        return False
    if isinstance(error, OSError):  # SMTP and socket errors: the mail server may be back later
        return True
    return transport.outcome_of_error(error, "upsert").outcome == AttemptOutcome.RETRYABLE_ERROR


def alert_send(alert: Alert, *, now: datetime.datetime | None = None) -> str:
    """Send one claimed alert; its status after the attempt (sent, pending for a retry, or failed)."""
    now = now or timezone.now()
    error: Exception | None = None
    try:
        if alert.channel == AlertChannel.EMAIL:
            _send_email(alert)
        else:
            _send_chat(alert)
    except Exception as exc:  # noqa: BLE001 - recorded on the alert, retried or given up below
        error = exc
    if isinstance(error, transport.SystemUnavailableError):
        # Paused, circuit open or rate budget spent: the call was never made, so it does not use up an attempt.
        alert.last_error = error.detail[:2000]
        alert.next_attempt_at = now + datetime.timedelta(seconds=max(1.0, float(error.retry_after or 0)))
        alert.save(update_fields=["last_error", "next_attempt_at"])
        return alert.status
    alert.attempts += 1
    if error is None:
        alert.status, alert.sent_at, alert.last_error = AlertStatus.SENT, timezone.now(), ""
    else:
        alert.last_error = (getattr(error, "detail", None) or str(error) or type(error).__name__)[:2000]
        if _retryable(error) and alert.attempts < MAX_ATTEMPTS:
            delay = min(FIRST_RETRY_SECONDS * 2 ** (alert.attempts - 1), MAX_RETRY_SECONDS)
            alert.next_attempt_at = now + datetime.timedelta(seconds=delay)
        else:
            alert.status = AlertStatus.FAILED
    with transaction.atomic():
        alert.save(update_fields=["attempts", "status", "sent_at", "last_error", "next_attempt_at"])
        if alert.status != AlertStatus.PENDING:
            _alert_audit(alert)
    return alert.status


def _alert_audit(alert: Alert) -> None:
    sent = alert.status == AlertStatus.SENT
    audit_record(
        action=AuditAction.ALERT_SENT if sent else AuditAction.ALERT_FAILED,
        object_type="alerts.alert",
        object_id=alert.pk,
        summary=(
            f"{alert.get_kind_display()} alert by {alert.get_channel_display().lower()} to "
            f"{alert.audience or alert.recipients}"
            + ("" if sent else f" failed after {alert.attempts} attempt(s): {alert.last_error[:200]}")
        )[:500],
        details={
            "rule": alert.rule.name,
            "item": alert.item_id,
            "channel": alert.channel,
            "recipients": alert.recipients[:500],
            "attempts": alert.attempts,
        },
        correlation_id=alert.correlation_id,
    )


def alerts_send_due(*, now: datetime.datetime | None = None) -> AlertRunResult:
    """Send every pending alert that is due; each one claimed first, so two senders never send one twice."""
    now = now or timezone.now()
    sent = failed = retrying = 0
    for alert in alerts_due(now=now):
        if not _claim(alert, now=now):
            continue
        status = alert_send(alert, now=now)
        sent += status == AlertStatus.SENT
        failed += status == AlertStatus.FAILED
        retrying += status == AlertStatus.PENDING
    return AlertRunResult(created=0, sent=sent, failed=failed, retrying=retrying)


def alerts_run(*, now: datetime.datetime | None = None) -> AlertRunResult:
    """One scheduled run: evaluate the rules, then send what is due."""
    now = now or timezone.now()
    created = alert_rules_evaluate(now=now)
    result = alerts_send_due(now=now)
    if created or result.sent or result.failed:
        logger.info(
            "exception alerts",
            extra={
                "alerts_created": created,
                "alerts_sent": result.sent,
                "alerts_failed": result.failed,
                "alerts_retrying": result.retrying,
            },
        )
    return AlertRunResult(created=created, sent=result.sent, failed=result.failed, retrying=result.retrying)
