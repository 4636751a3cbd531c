"""What people do to the hub's schedules: beat entries (django-celery-beat's periodic tasks and their timings) and
scheduled pulls (sync poll schedules). Each service checks the permission itself, whatever screen called it, and
writes one audit event per record: disabling a beat entry stops part of the hub, so who did it must be on record.

The engine keeps its own beat entries in step (sync policies, poll schedules) through its services; this module is
only the door for a person's change, used by the admin.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django_celery_beat.models import PeriodicTask

from integrationhub.audit import AuditAction, audit_record
from integrationhub.errors import HubValidationError

PERM_CHANGE_PERIODIC_TASK = "django_celery_beat.change_periodictask"
PERM_CHANGE_POLL_SCHEDULE = "sync.change_pollschedule"
PERM_DELETE_POLL_SCHEDULE = "sync.delete_pollschedule"


def _require(user: Any, permission: str) -> None:
    if user is None or not user.has_perm(permission):
        raise PermissionDenied(f"This action needs the permission {permission}.")


def _label(obj: models.Model) -> str:
    return obj._meta.label_lower


def _periodic_task_audit(
    *, task: PeriodicTask, action: str, summary: str, user: Any, request: Any, **details: Any
) -> None:
    audit_record(
        action=action,
        actor=user,
        request=request,
        object_type="django_celery_beat.periodictask",
        object_id=task.pk,
        summary=summary,
        details={"name": task.name, "task": task.task, **details},
    )


# --- periodic tasks (beat entries) ----------------------------------------------------------------------------


@transaction.atomic
def periodic_tasks_set_enabled(*, tasks: Iterable[PeriodicTask], enabled: bool, user: Any, request: Any = None) -> int:
    """Enable or disable beat entries; one audit event per entry whose state changed. Returns that count."""
    _require(user, PERM_CHANGE_PERIODIC_TASK)
    changed = 0
    for task in PeriodicTask.objects.select_for_update().filter(pk__in=[t.pk for t in tasks]).order_by("pk"):
        if task.enabled == enabled:
            continue
        _periodic_task_set(task=task, enabled=enabled, user=user, request=request)
        changed += 1
    return changed


@transaction.atomic
def periodic_tasks_toggle(*, tasks: Iterable[PeriodicTask], user: Any, request: Any = None) -> int:
    """Flip each beat entry between enabled and disabled; one audit event each. Returns the count."""
    _require(user, PERM_CHANGE_PERIODIC_TASK)
    count = 0
    for task in PeriodicTask.objects.select_for_update().filter(pk__in=[t.pk for t in tasks]).order_by("pk"):
        _periodic_task_set(task=task, enabled=not task.enabled, user=user, request=request)
        count += 1
    return count


def _periodic_task_set(*, task: PeriodicTask, enabled: bool, user: Any, request: Any) -> None:
    task.enabled = enabled
    update_fields = ["enabled"]
    if not enabled:
        # As django-celery-beat's own action: a re-enabled entry starts afresh instead of catching up.
        task.last_run_at = None
        update_fields.append("last_run_at")
    # save(), not a queryset update: PeriodicTask.save() moves the change marker beat reloads its schedule on.
    task.save(update_fields=update_fields)
    verb = "enabled" if enabled else "disabled"
    _periodic_task_audit(
        task=task,
        action=AuditAction.PERIODIC_TASK_ENABLED if enabled else AuditAction.PERIODIC_TASK_DISABLED,
        summary=f"Periodic task '{task.name}' {verb}",
        user=user,
        request=request,
        enabled=enabled,
    )


@transaction.atomic
def periodic_tasks_run(*, tasks: Iterable[PeriodicTask], user: Any, request: Any = None) -> int:
    """Queue each beat entry's task once now, on the entry's queue, after the transaction commits; audited."""
    from integrationhub.celery import app
    from integrationhub.dispatch import enqueue_on_commit

    _require(user, PERM_CHANGE_PERIODIC_TASK)
    app.loader.import_default_modules()
    selected = list(PeriodicTask.objects.filter(pk__in=[t.pk for t in tasks]).order_by("pk"))
    unknown = sorted({task.task for task in selected if task.task not in app.tasks})
    if unknown:
        # Nothing is queued when one entry names a task the workers do not know.
        raise HubValidationError(f"Not a registered task: {', '.join(unknown)}. Nothing was queued.")
    for task in selected:
        try:
            args, kwargs = json.loads(task.args or "[]"), json.loads(task.kwargs or "{}")
        except ValueError as exc:
            raise HubValidationError(f"Periodic task '{task.name}' has arguments that are not JSON.") from exc
        enqueue_on_commit(app.tasks[task.task], *args, queue=task.queue or None, **kwargs)
        _periodic_task_audit(
            task=task,
            action=AuditAction.PERIODIC_TASK_RUN,
            summary=f"Periodic task '{task.name}' run by hand",
            user=user,
            request=request,
            queue=task.queue or "",
        )
    return len(selected)


# --- any beat record: periodic tasks and their interval, crontab, solar and clocked schedules ------------------


@transaction.atomic
def beat_record_save(
    *, obj: models.Model, created: bool, changed_fields: Iterable[str], user: Any, request: Any = None
) -> models.Model:
    """Save a periodic task or a beat schedule edited by a person, and audit which fields changed (not values)."""
    _require(user, f"django_celery_beat.{'add' if created else 'change'}_{obj._meta.model_name}")
    obj.save()
    fields = sorted(changed_fields)
    is_task = isinstance(obj, PeriodicTask)
    if is_task:
        action = AuditAction.PERIODIC_TASK_CREATED if created else AuditAction.PERIODIC_TASK_CHANGED
    else:
        action = AuditAction.BEAT_SCHEDULE_CREATED if created else AuditAction.BEAT_SCHEDULE_CHANGED
    audit_record(
        action=action,
        actor=user,
        request=request,
        object_type=_label(obj),
        object_id=obj.pk,
        summary=f"{obj._meta.verbose_name} '{obj}' {'created' if created else 'changed'}"
        + (f": {', '.join(fields)}" if fields and not created else ""),
        details={"fields": fields, **({"enabled": obj.enabled} if is_task else {})},  # type: ignore[attr-defined]
    )
    return obj


@transaction.atomic
def beat_records_delete(*, objs: Iterable[models.Model], user: Any, request: Any = None) -> int:
    """Delete periodic tasks or beat schedules, one audit event each (written before the row goes)."""
    count = 0
    for obj in objs:
        _require(user, f"django_celery_beat.delete_{obj._meta.model_name}")
        is_task = isinstance(obj, PeriodicTask)
        audit_record(
            action=AuditAction.PERIODIC_TASK_DELETED if is_task else AuditAction.BEAT_SCHEDULE_DELETED,
            actor=user,
            request=request,
            object_type=_label(obj),
            object_id=obj.pk,
            summary=f"{obj._meta.verbose_name} '{obj}' deleted",
            details={"name": str(obj)},
        )
        obj.delete()
        count += 1
    return count


# --- poll schedules (scheduled pulls) ----------------------------------------------------------------------------


@transaction.atomic
def poll_schedules_run_now(*, schedules: Iterable[Any], user: Any, request: Any = None) -> int:
    """Queue one pull of each schedule now (housekeeping queue, after commit); one audit event each."""
    from integrationhub.dispatch import enqueue_on_commit
    from sync.tasks import poll_run_task

    _require(user, PERM_CHANGE_POLL_SCHEDULE)
    count = 0
    for schedule in schedules:
        enqueue_on_commit(poll_run_task, schedule.pk, queue="housekeeping")
        audit_record(
            action=AuditAction.POLL_SCHEDULE_RUN,
            actor=user,
            request=request,
            object_type="sync.pollschedule",
            object_id=schedule.pk,
            summary=f"Pull of {schedule.entity} from system #{schedule.system_id} run by hand",
            details={"entity": schedule.entity, "system_id": schedule.system_id},
        )
        count += 1
    return count


@transaction.atomic
def poll_schedule_change(
    *, schedule: Any, changed_fields: Iterable[str], user: Any, reason: str, request: Any = None
) -> Any:
    """A person's save of a poll schedule: saved with its beat entry (sync's service), then audited."""
    from sync.services import poll_schedule_save

    created = schedule.pk is None
    _require(user, f"sync.{'add' if created else 'change'}_pollschedule")
    saved = poll_schedule_save(schedule=schedule, user=user, reason=reason)
    fields = sorted(changed_fields)
    audit_record(
        action=AuditAction.POLL_SCHEDULE_CREATED if created else AuditAction.POLL_SCHEDULE_CHANGED,
        actor=user,
        request=request,
        object_type="sync.pollschedule",
        object_id=saved.pk,
        summary=f"Poll schedule #{saved.pk} ({saved.entity}) {'created' if created else 'changed'}"
        + (f": {', '.join(fields)}" if fields and not created else ""),
        details={"fields": fields, "active": saved.active, "every_seconds": saved.every_seconds, "reason": reason},
    )
    return saved


@transaction.atomic
def poll_schedules_delete(*, schedules: Iterable[Any], user: Any, request: Any = None) -> int:
    """Delete poll schedules with their beat entries (sync's service), one audit event each."""
    from sync.services import poll_schedule_delete

    _require(user, PERM_DELETE_POLL_SCHEDULE)
    count = 0
    for schedule in schedules:
        audit_record(
            action=AuditAction.POLL_SCHEDULE_DELETED,
            actor=user,
            request=request,
            object_type="sync.pollschedule",
            object_id=schedule.pk,
            summary=f"Poll schedule #{schedule.pk} ({schedule.entity}) deleted",
            details={"entity": schedule.entity, "system_id": schedule.system_id},
        )
        poll_schedule_delete(schedule=schedule)
        count += 1
    return count
