"""Append-only audit: the one service that writes AuditEvent rows, the selectors that read them, and the
receivers that turn Django's auth signals (failed logins, group changes) into audit events."""

from __future__ import annotations

import csv
import datetime
import io
from collections.abc import Iterable, Iterator
from typing import Any

from django.db import models
from django.db.models import Q, QuerySet

from integrationhub.authentication import client_ip
from integrationhub.logging import current_correlation_id
from integrationhub.models import ApiKey, AuditEvent


class AuditAction(models.TextChoices):
    """Every action the audit records. Other apps call audit_record(action=AuditAction.X, ...)."""

    API_KEY_CREATED = "api_key.created", "API key created"
    API_KEY_REVOKED = "api_key.revoked", "API key revoked"
    API_KEY_AUTH_FAILED = "auth.api_key_failed", "API key refused"
    LOGIN_FAILED = "auth.login_failed", "Login failed"
    LOGIN_LOCKED = "auth.login_locked", "Login locked out"
    TWO_FACTOR_ENROLLED = "auth.two_factor_enrolled", "Two-factor login enrolled"
    TWO_FACTOR_RESET = "auth.two_factor_reset", "Two-factor login reset"
    ROLE_CHANGED = "role.changed", "Role changed"
    CREDENTIALS_CHANGED = "credentials.changed", "Credentials changed"
    EXCEPTION_APPROVED = "exception.approved", "Exception approved"
    EXCEPTION_REJECTED = "exception.rejected", "Exception rejected"
    EXCEPTION_OVERRIDDEN = "exception.overridden", "Exception overridden"
    EXCEPTION_FIXED = "exception.fixed", "Exception fixed"
    MESSAGE_REPLAYED = "message.replayed", "Message replayed"
    WORKFLOW_STEP_RETRIED = "workflow.step_retried", "Workflow step retried"
    WORKFLOW_COMPENSATED = "workflow.compensated", "Workflow compensated"
    WORKFLOW_CANCELLED = "workflow.cancelled", "Workflow cancelled"
    DUPLICATE_LINKED = "duplicate.linked", "Duplicate linked to an existing record"
    DUPLICATE_CREATED = "duplicate.created_new", "Duplicate suspect created as a new record"
    ENTITY_SCOPE_CHANGED = "entity_scope.changed", "Legal-entity scope changed"
    PERIODIC_TASK_CREATED = "periodic_task.created", "Periodic task created"
    PERIODIC_TASK_CHANGED = "periodic_task.changed", "Periodic task changed"
    PERIODIC_TASK_ENABLED = "periodic_task.enabled", "Periodic task enabled"
    PERIODIC_TASK_DISABLED = "periodic_task.disabled", "Periodic task disabled"
    PERIODIC_TASK_RUN = "periodic_task.run", "Periodic task run by hand"
    PERIODIC_TASK_DELETED = "periodic_task.deleted", "Periodic task deleted"
    BEAT_SCHEDULE_CREATED = "beat_schedule.created", "Beat schedule created"
    BEAT_SCHEDULE_CHANGED = "beat_schedule.changed", "Beat schedule changed"
    BEAT_SCHEDULE_DELETED = "beat_schedule.deleted", "Beat schedule deleted"
    POLL_SCHEDULE_CREATED = "poll_schedule.created", "Poll schedule created"
    POLL_SCHEDULE_CHANGED = "poll_schedule.changed", "Poll schedule changed"
    POLL_SCHEDULE_RUN = "poll_schedule.run", "Poll schedule run by hand"
    POLL_SCHEDULE_DELETED = "poll_schedule.deleted", "Poll schedule deleted"


CSV_COLUMNS = (
    "id",
    "occurred_at",
    "actor_username",
    "actor_id",
    "api_key_prefix",
    "action",
    "object_type",
    "object_id",
    "summary",
    "details",
    "correlation_id",
    "ip",
)


def audit_record(
    *,
    action: str,
    actor: Any = None,
    api_key: ApiKey | None = None,
    object_type: str = "",
    object_id: Any = "",
    summary: str = "",
    details: dict[str, Any] | None = None,
    correlation_id: str | None = None,
    ip: str | None = None,
    request: Any = None,
) -> AuditEvent:
    """Append one audit event. Pass `request` to take the actor, API key and IP from it.

    Never put a secret in `summary` or `details`: name what changed, not its value.
    """
    if request is not None:
        request_user = getattr(request, "user", None)
        if actor is None and request_user is not None and request_user.is_authenticated:
            actor = request_user
        auth = getattr(request, "auth", None)
        if api_key is None and isinstance(auth, ApiKey):
            api_key = auth
        ip = ip or client_ip(request)
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    event = AuditEvent(
        actor_id=actor.pk if actor is not None else None,
        actor_username=actor.get_username() if actor is not None else "",
        api_key_id=api_key.pk if api_key is not None else None,
        api_key_prefix=api_key.prefix if api_key is not None else "",
        action=str(action),
        object_type=object_type[:100],
        object_id=str(object_id or "")[:100],
        summary=summary[:500],
        details=details or {},
        correlation_id=(correlation_id or current_correlation_id() or "")[:64],
        ip=ip,
    )
    event.full_clean()
    event.save()
    return event


# --- selectors ------------------------------------------------------------------------------------------


def audit_event_list(
    *,
    actor: str | None = None,
    action: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    since: datetime.datetime | datetime.date | None = None,
    until: datetime.datetime | datetime.date | None = None,
    search: str | None = None,
) -> QuerySet[AuditEvent]:
    """Audit events, newest first, filtered by actor username, action, object, time range and free text."""
    events = AuditEvent.objects.all()
    if actor:
        events = events.filter(actor_username=actor)
    if action:
        events = events.filter(action=action)
    if object_type:
        events = events.filter(object_type=object_type)
    if object_id:
        events = events.filter(object_id=object_id)
    if since:
        events = events.filter(occurred_at__gte=since)
    if until:
        events = events.filter(occurred_at__lt=until)
    if search:
        events = events.filter(
            Q(summary__icontains=search)
            | Q(actor_username__icontains=search)
            | Q(object_id__icontains=search)
            | Q(correlation_id=search)
        )
    return events.order_by("-occurred_at", "-id")


def audit_event_csv_rows(events: Iterable[AuditEvent]) -> Iterator[str]:
    """The events as CSV text, one chunk per row (header first), for a streaming response."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield flush()
    for event in events:
        writer.writerow(
            [
                event.pk,
                event.occurred_at.isoformat(),
                event.actor_username,
                event.actor_id or "",
                event.api_key_prefix,
                event.action,
                event.object_type,
                event.object_id,
                _csv_safe(event.summary),
                _csv_safe(_json(event.details)),
                event.correlation_id,
                event.ip or "",
            ]
        )
        yield flush()


def _json(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, default=str)


def _csv_safe(text: str) -> str:
    # A cell starting with = + - @ runs as a formula in a spreadsheet (CSV injection): prefix a quote.
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# --- signal receivers (connected in IntegrationhubConfig.ready) -------------------------------------------


def on_user_login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    """Failed admin login: count it towards the lockout and audit it (with the username tried, not the password)."""
    from integrationhub.authentication import login_failure_register

    username = str(credentials.get("username") or "")[:150]
    ip = client_ip(request) if request is not None else None
    locked = login_failure_register(username=username, ip=ip)
    audit_record(
        action=AuditAction.LOGIN_FAILED,
        object_type="auth.user",
        object_id=username,
        summary=f"Failed login for '{username}'",
        ip=ip,
    )
    if locked:
        audit_record(
            action=AuditAction.LOGIN_LOCKED,
            object_type="auth.user",
            object_id=username,
            summary=f"Login for '{username}' from {ip or 'unknown address'} locked after repeated failures",
            ip=ip,
        )


def on_user_logged_in(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    """A successful login clears the failure count of that username and address."""
    from integrationhub.authentication import login_failures_clear

    if user is not None:
        login_failures_clear(username=user.get_username(), ip=client_ip(request) if request is not None else None)


def on_user_groups_changed(
    sender: Any, instance: Any, action: str, reverse: bool, model: Any, pk_set: set[int] | None, **kwargs: Any
) -> None:
    """User.groups changed (admin, shell or code): audit which roles were added or removed for whom."""
    if action not in ("post_add", "post_remove", "pre_clear"):
        return
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    if action == "pre_clear":
        # After a clear the removed groups are gone: read them before.
        if reverse:
            pairs = [(user, [instance.name]) for user in instance.user_set.all()]
        else:
            pairs = [(instance, list(instance.groups.values_list("name", flat=True)))]
        verb = "removed"
    else:
        verb = "added" if action == "post_add" else "removed"
        if reverse:  # group.user_set.add(users)
            users = get_user_model().objects.filter(pk__in=pk_set or ())
            pairs = [(user, [instance.name]) for user in users]
        else:
            names = list(Group.objects.filter(pk__in=pk_set or ()).values_list("name", flat=True))
            pairs = [(instance, names)]
    for user, group_names in pairs:
        if not group_names:
            continue
        audit_record(
            action=AuditAction.ROLE_CHANGED,
            object_type="auth.user",
            object_id=user.pk,
            summary=f"Roles {verb} for '{user.get_username()}': {', '.join(sorted(group_names))}",
            details={"user": user.get_username(), verb: sorted(group_names)},
        )


def credentials_changed(*, system: Any, changed: list[str], user: Any = None) -> AuditEvent:
    """Audit a connected system's secret change: which secret parameters changed and who changed them, never values."""
    return audit_record(
        action=AuditAction.CREDENTIALS_CHANGED,
        actor=user,
        object_type="connectors.connectedsystem",
        object_id=getattr(system, "slug", "") or getattr(system, "pk", ""),
        summary=f"Secrets changed on '{getattr(system, 'slug', system)}': {', '.join(changed)}",
        details={"fields": list(changed)},
    )


def connect_receivers() -> None:
    """Wire the auth signals to the audit; idempotent (dispatch uids)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.signals import user_logged_in, user_login_failed
    from django.db.models.signals import m2m_changed

    user_login_failed.connect(on_user_login_failed, dispatch_uid="integrationhub.audit.login_failed")
    user_logged_in.connect(on_user_logged_in, dispatch_uid="integrationhub.audit.logged_in")
    m2m_changed.connect(
        on_user_groups_changed,
        sender=get_user_model().groups.through,
        dispatch_uid="integrationhub.audit.groups_changed",
    )


# SQLite triggers, the same as migration 0002 installs; the flush command lifts them while it empties the
# database (PostgreSQL's flush uses TRUNCATE, which row triggers do not see).
SQLITE_TRIGGERS = {
    "integrationhub_auditevent_no_update": (
        "CREATE TRIGGER IF NOT EXISTS integrationhub_auditevent_no_update BEFORE UPDATE ON integrationhub_auditevent "
        "BEGIN SELECT RAISE(ABORT, 'integrationhub_auditevent is append-only: UPDATE refused'); END"
    ),
    "integrationhub_auditevent_no_delete": (
        "CREATE TRIGGER IF NOT EXISTS integrationhub_auditevent_no_delete BEFORE DELETE ON integrationhub_auditevent "
        "BEGIN SELECT RAISE(ABORT, 'integrationhub_auditevent is append-only: DELETE refused'); END"
    ),
}
