"""Append-only audit: the one service that writes AuditEvent rows, the selectors that read them, and the
receivers that turn Django's auth signals (failed logins, group, permission, staff and superuser changes,
legal-entity scope changes) into audit events.

Every event carries who and from where: the request being served (bound by AuditContextMiddleware for the
browser, the API and the admin alike) gives the actor, the API key, the client address and the user agent
whenever the caller does not pass them. Auditing is not the pipeline, so model signals are fine here.
"""

from __future__ import annotations

import csv
import datetime
import io
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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
    ALL_ENTITIES_GRANTED = "entity_scope.all_granted", "All legal entities granted"
    ALL_ENTITIES_REVOKED = "entity_scope.all_revoked", "All legal entities revoked"
    SUPERUSER_CHANGED = "user.superuser_changed", "Superuser status changed"
    STAFF_CHANGED = "user.staff_changed", "Staff status changed"
    PERMISSIONS_CHANGED = "user.permissions_changed", "User permissions changed"
    PERIODIC_TASK_CREATED = "periodic_task.created", "Periodic task created"
    PERIODIC_TASK_CHANGED = "periodic_task.changed", "Periodic task changed"
    PERIODIC_TASK_ENABLED = "periodic_task.enabled", "Periodic task enabled"
    PERIODIC_TASK_DISABLED = "periodic_task.disabled", "Periodic task disabled"
    PERIODIC_TASK_RUN = "periodic_task.run", "Periodic task run by hand"
    RECONCILIATION_RUN_STARTED = "reconciliation.run_started", "Reconciliation run started"
    RECONCILIATION_EXPORTED = "reconciliation.exported", "Reconciliation rows exported"
    PERIODIC_TASK_DELETED = "periodic_task.deleted", "Periodic task deleted"
    BEAT_SCHEDULE_CREATED = "beat_schedule.created", "Beat schedule created"
    BEAT_SCHEDULE_CHANGED = "beat_schedule.changed", "Beat schedule changed"
    BEAT_SCHEDULE_DELETED = "beat_schedule.deleted", "Beat schedule deleted"
    POLL_SCHEDULE_CREATED = "poll_schedule.created", "Poll schedule created"
    POLL_SCHEDULE_CHANGED = "poll_schedule.changed", "Poll schedule changed"
    POLL_SCHEDULE_RUN = "poll_schedule.run", "Poll schedule run by hand"
    POLL_SCHEDULE_DELETED = "poll_schedule.deleted", "Poll schedule deleted"
    ALERT_SENT = "alert.sent", "Exception alert sent"
    ALERT_FAILED = "alert.failed", "Exception alert failed"
    CONFIG_HISTORY_EXPORTED = "config_history.exported", "Configuration history exported"


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
    "user_agent",
)

USER_AGENT_MAX = 300

# The request being served, for audit events written deep inside a service or a signal receiver.
_current_request: ContextVar[Any] = ContextVar("integrationhub_audit_request", default=None)


def audit_request_current() -> Any:
    """The request this thread or task is serving, or None (a worker, a shell, a management command)."""
    return _current_request.get()


@contextmanager
def audit_request_bound(request: Any) -> Iterator[None]:
    """Bind `request` as the source of the actor, key, address and user agent of audit events written inside."""
    token = _current_request.set(request)
    try:
        yield
    finally:
        _current_request.reset(token)


def _user_agent(request: Any) -> str:
    meta = getattr(request, "META", None) or {}
    return str(meta.get("HTTP_USER_AGENT", ""))[:USER_AGENT_MAX]


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
    user_agent: str | None = None,
    request: Any = None,
    legal_entity_id: int | None = None,
) -> AuditEvent:
    """Append one audit event. The actor, API key, IP and user agent not given are taken from `request`, else
    from the request being served (see AuditContextMiddleware); a worker's event has none of them.

    `legal_entity_id` is the entity of the record acted on (an exception item's, a message's): a user scoped to
    some entities sees only their entities' events; an event without one only users with every entity see.

    Never put a secret in `summary` or `details`: name what changed, not its value.
    """
    if request is None:
        request = audit_request_current()
    if request is not None:
        # DRF sets the Django request's user and auth once it authenticated (session or API key).
        request_user = getattr(request, "user", None)
        if actor is None and request_user is not None and getattr(request_user, "is_authenticated", False):
            actor = request_user
        auth = getattr(request, "auth", None)
        if api_key is None and isinstance(auth, ApiKey):
            api_key = auth
        ip = ip or client_ip(request)
        user_agent = user_agent if user_agent is not None else _user_agent(request)
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
        user_agent=(user_agent or "")[:USER_AGENT_MAX],
        legal_entity_id=legal_entity_id,
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
    request: Any = None,
) -> QuerySet[AuditEvent]:
    """Audit events, newest first, within the legal-entity scope of `request` when given (all of them without),
    filtered by actor username, action, object, time range and free text."""
    from integrationhub.scoping import records_in_scope

    events: QuerySet[AuditEvent] = AuditEvent.objects.all()
    if request is not None:
        events = records_in_scope(events, request=request)
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
                _csv_safe(event.user_agent),
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


def on_user_permissions_changed(
    sender: Any, instance: Any, action: str, reverse: bool, model: Any, pk_set: set[int] | None, **kwargs: Any
) -> None:
    """User.user_permissions changed: audit the permissions granted to or taken from a user directly."""
    if action not in ("post_add", "post_remove", "pre_clear"):
        return
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    def label(permission: Any) -> str:
        return f"{permission.content_type.app_label}.{permission.codename}"

    if action == "pre_clear":
        verb = "removed"
        if reverse:
            pairs = [(user, [label(instance)]) for user in instance.user_set.all()]
        else:
            pairs = [(instance, [label(p) for p in instance.user_permissions.select_related("content_type")])]
    else:
        verb = "granted" if action == "post_add" else "removed"
        if reverse:  # permission.user_set.add(users)
            users = get_user_model().objects.filter(pk__in=pk_set or ())
            pairs = [(user, [label(instance)]) for user in users]
        else:
            permissions = Permission.objects.filter(pk__in=pk_set or ()).select_related("content_type")
            pairs = [(instance, [label(p) for p in permissions])]
    for user, labels in pairs:
        if not labels:
            continue
        audit_record(
            action=AuditAction.PERMISSIONS_CHANGED,
            object_type="auth.user",
            object_id=user.pk,
            summary=f"Permissions {verb} for '{user.get_username()}': {', '.join(sorted(labels))}"[:500],
            details={"user": user.get_username(), verb: sorted(labels)},
        )


# The account flags that widen what a user may do; a change of either is audited.
USER_FLAGS = {"is_superuser": AuditAction.SUPERUSER_CHANGED, "is_staff": AuditAction.STAFF_CHANGED}


def _flags_untouched(update_fields: Iterable[str] | None) -> bool:
    # A save of named fields only (the login's last_login) cannot change a flag: no extra query for it.
    return update_fields is not None and not set(update_fields) & set(USER_FLAGS)


def on_user_pre_save(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    """Remember the stored flags of a user about to be saved, for on_user_saved to compare."""
    if _flags_untouched(kwargs.get("update_fields")):
        return
    if raw or instance.pk is None:
        instance._audit_flags_before = {}
        return
    stored = sender._default_manager.filter(pk=instance.pk).values(*USER_FLAGS).first()
    instance._audit_flags_before = stored or {}


def on_user_saved(sender: Any, instance: Any, created: bool, raw: bool = False, **kwargs: Any) -> None:
    """A user saved with is_superuser or is_staff changed (or created with either set): audit it."""
    if raw or _flags_untouched(kwargs.get("update_fields")):
        return
    before = getattr(instance, "_audit_flags_before", {})
    for flag, action in USER_FLAGS.items():
        now = bool(getattr(instance, flag, False))
        was = bool(before.get(flag, False)) if not created else False
        if now == was:
            continue
        verb = "granted" if now else "revoked"
        audit_record(
            action=action,
            object_type="auth.user",
            object_id=instance.pk,
            summary=f"{flag.removeprefix('is_').capitalize()} status {verb} for '{instance.get_username()}'",
            details={"user": instance.get_username(), "field": flag, "from": was, "to": now, "created": created},
        )
    instance._audit_flags_before = {flag: getattr(instance, flag, False) for flag in USER_FLAGS}


def _entity_codes(scope: Any) -> list[str]:
    return sorted(scope.legal_entities.values_list("code", flat=True))


def on_entity_scope_changed(
    sender: Any, instance: Any, action: str, reverse: bool, model: Any, pk_set: set[int] | None, **kwargs: Any
) -> None:
    """A user's legal-entity scope gained or lost entities: audit the entities and what the scope is now."""
    from governance.models import LegalEntity
    from integrationhub.models import UserLegalEntityScope

    if action not in ("post_add", "post_remove", "post_clear"):
        return
    if reverse:  # entity.<reverse>.add(scopes): rare, but audited the same way
        scopes = list(UserLegalEntityScope.objects.filter(pk__in=pk_set or ()).select_related("user"))
        changed = [instance.code]
    else:
        scopes = [instance]
        changed = sorted(LegalEntity.objects.filter(pk__in=pk_set or ()).values_list("code", flat=True))
    verb = {"post_add": "added", "post_remove": "removed", "post_clear": "cleared"}[action]
    for scope in scopes:
        codes = _entity_codes(scope)
        audit_record(
            action=AuditAction.ENTITY_SCOPE_CHANGED,
            object_type="auth.user",
            object_id=scope.user_id,
            summary=(
                f"Legal entities {verb} for '{scope.user.get_username()}': {', '.join(changed) or 'all'}; "
                f"scope now {'all entities' if scope.all_entities else ', '.join(codes) or 'no entities'}"
            )[:500],
            details={"user": scope.user.get_username(), verb: changed, "scope": codes},
        )


def on_entity_scope_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A user's scope row removed: the user has no legal entity from now on (if the user still exists)."""
    user = getattr(instance, "user", None)
    username = user.get_username() if user is not None else str(instance.user_id)
    audit_record(
        action=AuditAction.ENTITY_SCOPE_CHANGED,
        object_type="auth.user",
        object_id=instance.user_id,
        summary=f"Legal-entity scope removed for '{username}': no entities",
        details={"user": username, "scope": [], "removed": True},
    )


def on_entity_scope_pre_save(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    """Remember whether the stored scope had every entity, for on_entity_scope_saved to compare."""
    stored = None if raw or instance.pk is None else sender._default_manager.filter(pk=instance.pk).first()
    instance._audit_all_entities_before = bool(stored.all_entities) if stored is not None else False


def on_entity_scope_saved(sender: Any, instance: Any, created: bool, raw: bool = False, **kwargs: Any) -> None:
    """A scope's all-entities flag set or cleared (admin, shell, migration of a later row): audit who and for whom."""
    if raw:
        return
    was = getattr(instance, "_audit_all_entities_before", False)
    now = bool(instance.all_entities)
    if now == was:
        return
    username = instance.user.get_username()
    audit_record(
        action=AuditAction.ALL_ENTITIES_GRANTED if now else AuditAction.ALL_ENTITIES_REVOKED,
        object_type="auth.user",
        object_id=instance.user_id,
        summary=f"All legal entities {'granted to' if now else 'revoked from'} '{username}'",
        details={"user": username, "field": "all_entities", "from": was, "to": now},
    )
    instance._audit_all_entities_before = now


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
    from django.db.models.signals import post_delete, post_save, pre_save

    from integrationhub.models import UserLegalEntityScope

    user_model = get_user_model()
    m2m_changed.connect(
        on_user_groups_changed,
        sender=user_model.groups.through,
        dispatch_uid="integrationhub.audit.groups_changed",
    )
    m2m_changed.connect(
        on_user_permissions_changed,
        sender=user_model.user_permissions.through,
        dispatch_uid="integrationhub.audit.permissions_changed",
    )
    pre_save.connect(on_user_pre_save, sender=user_model, dispatch_uid="integrationhub.audit.user_pre_save")
    post_save.connect(on_user_saved, sender=user_model, dispatch_uid="integrationhub.audit.user_saved")
    m2m_changed.connect(
        on_entity_scope_changed,
        sender=UserLegalEntityScope.legal_entities.through,
        dispatch_uid="integrationhub.audit.entity_scope_changed",
    )
    post_delete.connect(
        on_entity_scope_deleted, sender=UserLegalEntityScope, dispatch_uid="integrationhub.audit.entity_scope_deleted"
    )
    pre_save.connect(
        on_entity_scope_pre_save, sender=UserLegalEntityScope, dispatch_uid="integrationhub.audit.entity_scope_pre_save"
    )
    post_save.connect(
        on_entity_scope_saved, sender=UserLegalEntityScope, dispatch_uid="integrationhub.audit.entity_scope_saved"
    )


# PostgreSQL's statement trigger that refuses TRUNCATE of the audit table (migration 0003).
POSTGRES_TRUNCATE_TRIGGER = "integrationhub_auditevent_no_truncate"

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
