"""Scheduled pulls: reading a system's changes page by page from a persisted cursor.

Each page's records are stored (once per record version, `pull_idempotency_key`) in the transaction that moves
the cursor, so a crash resumes with no gap and no duplicate; a lease per (system, entity), renewed each page,
keeps two runs apart and expires when a run is killed. Poll schedules keep their beat entries in step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from operator import methodcaller
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from connectors.choices import SystemState
from connectors.http import ConnectorError
from connectors.models import ConnectedSystem
from integrationhub.errors import HubError, HubValidationError
from mappings.choices import CanonicalEntityName
from sync import progress, transport
from sync.choices import PULL_EVENT_ACTION, PollOutcome
from sync.ingest import messages_store_batch
from sync.models import PollCursor, PollSchedule
from sync.policy import sweep_after_seconds

logger = logging.getLogger(__name__)


# Fields that carry a record's version, first present wins; without one the record's content is its version.
VERSION_FIELDS = ("updated_at", "updatedAt", "LastModifiedDate", "write_date", "modified", "version", "_version")


def poll_lease_seconds() -> float:
    """How long a pull holds its cursor without a heartbeat: each page renews it, so a run killed mid-way
    releases the cursor within the sweeper period and the next run (or the sweeper) continues it."""
    return sweep_after_seconds()


@dataclass
class PollLease:
    """A pull's exclusive hold on one (system, entity) cursor, kept alive page by page."""

    key: str
    token: str

    def renew(self) -> None:
        if cache.get(self.key) == self.token:
            cache.touch(self.key, poll_lease_seconds())

    def release(self) -> None:
        if cache.get(self.key) == self.token:
            cache.delete(self.key)


def poll_lease_take(*, system_id: int, entity: str) -> PollLease | None:
    """The lease on the cursor of (system, entity), or None while another live run holds it."""
    lease = PollLease(f"hub:poll:{system_id}:{entity}", uuid.uuid4().hex)
    return lease if cache.add(lease.key, lease.token, timeout=poll_lease_seconds()) else None


@dataclass(frozen=True)
class PollResult:
    """What one run of a poller did: pages read, messages stored, records already stored, and why it stopped."""

    system: str
    entity: str
    pages: int
    stored: int
    duplicates: int
    outcome: str
    error: str = ""
    cursor: str = ""


def record_version(record: Mapping[str, Any]) -> str:
    """The version of a pulled record: its change timestamp or version field, else a hash of its content, so a
    re-pulled unchanged record has the same key and a changed one a new key."""
    for name in VERSION_FIELDS:
        value = record.get(name)
        if value not in (None, ""):
            return str(value)
    content = json.dumps(record, sort_keys=True, default=str).encode()
    return "sha256:" + hashlib.sha256(content).hexdigest()[:32]


def pull_idempotency_key(*, entity: str, record: Mapping[str, Any]) -> str:
    """pull:<entity>:<external id>:<version>; unique per system by the Message constraint. Too long: hashed."""
    external_id = str(record.get("id") or record.get("external_id") or "")
    if not external_id:
        # A source without ids (a bare CSV row): the content identifies the record.
        external_id = "content-" + hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()
    key = f"pull:{entity}:{external_id}:{record_version(record)}"
    if len(key) > 200:
        key = f"pull:{entity}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return key


def poll_page_store(
    *, poll_cursor: PollCursor, entity: str, records: list[dict[str, Any]], next_cursor: str
) -> tuple[int, int]:
    """Store one pulled page and move the cursor past it, in one transaction: both or neither."""
    with transaction.atomic():
        stored, duplicates = messages_store_batch(
            system=poll_cursor.system,
            entity=entity,
            event_type=f"{entity}.{PULL_EVENT_ACTION}",
            keyed_records=[(pull_idempotency_key(entity=entity, record=record), record) for record in records],
        )
        PollCursor.objects.filter(pk=poll_cursor.pk).update(
            cursor=next_cursor,
            records_stored=F("records_stored") + stored,
            updated_at=timezone.now(),
        )
    poll_cursor.cursor = next_cursor
    return stored, duplicates


def _poll_finish(poll_cursor: PollCursor, result: PollResult) -> PollResult:
    PollCursor.objects.filter(pk=poll_cursor.pk).update(
        last_run_at=timezone.now(), last_outcome=result.outcome, last_error=result.error[:2000]
    )
    log = logger.warning if result.outcome == PollOutcome.ERROR else logger.info
    log(
        "poll run %s",
        result.outcome,
        extra={"system": result.system, "entity": result.entity, "pages": result.pages, "stored": result.stored},
    )
    return result


def poll_run(*, system: ConnectedSystem, entity: str, max_pages: int | None = None) -> PollResult:
    """Pull the changes of one entity from one system page by page, from the persisted cursor, within the
    system's rate budget. Each page's records are stored as inbound Messages (once per record version) in
    the same transaction that moves the cursor, so a crash at any point resumes with no gap and no duplicate.
    """
    if entity not in CanonicalEntityName.values:
        raise HubValidationError(f"{entity!r} is not a canonical entity.", errors=[{"field": "entity"}])
    poll_cursor, _ = PollCursor.objects.get_or_create(system=system, entity=entity)
    poll_cursor.system = system

    def result(outcome: str, pages: int = 0, stored: int = 0, duplicates: int = 0, error: str = "") -> PollResult:
        return PollResult(
            system.slug, entity, pages, stored, duplicates, outcome, error, cursor=poll_cursor.cursor or ""
        )

    if system.state == SystemState.PAUSED:
        return _poll_finish(poll_cursor, result(PollOutcome.SKIPPED, error="The system is paused."))
    # One run per (system, entity) at a time: two runs would fetch the same pages (harmless, keys dedupe,
    # but wasted calls against the budget). The lock expires, so a killed run never blocks the next one.
    lease = poll_lease_take(system_id=system.pk, entity=entity)
    if lease is None:
        return result(PollOutcome.SKIPPED, error="Another run of this poller is in progress.")
    pages = stored = duplicates = 0
    progress_id = progress.poll_start(system=system, entity=entity)
    try:
        while max_pages is None or pages < max_pages:
            lease.renew()
            cursor = poll_cursor.cursor or None
            try:
                # Through the transport: circuit, shared rate budget, correlation id, one attempt row per page.
                batch = transport.connector_call(
                    system,
                    "fetch_changes",
                    methodcaller("fetch_changes", entity, cursor),
                    entity=entity,
                    context={"flow": "pull", "cursor": cursor or ""},
                )
            except transport.SystemUnavailableError as exc:
                outcome = PollOutcome.RATE_LIMITED if exc.retry_after is not None else PollOutcome.SKIPPED
                return _poll_finish(poll_cursor, result(outcome, pages, stored, duplicates, error=str(exc.detail)))
            except (ConnectorError, HubError) as exc:
                return _poll_finish(
                    poll_cursor, result(PollOutcome.ERROR, pages, stored, duplicates, error=str(exc.detail))
                )
            page_stored, page_duplicates = poll_page_store(
                poll_cursor=poll_cursor,
                entity=entity,
                records=[dict(record) for record in batch.records],
                next_cursor=batch.next_cursor or "",
            )
            pages += 1
            stored += page_stored
            duplicates += page_duplicates
            progress.batch_advance(progress_id=progress_id, done=page_stored + page_duplicates, pages=1)
            if not batch.has_more:
                return _poll_finish(poll_cursor, result(PollOutcome.COMPLETE, pages, stored, duplicates))
        return _poll_finish(poll_cursor, result(PollOutcome.PAGE_LIMIT, pages, stored, duplicates))
    finally:
        lease.release()
        progress.poll_finish(progress_id=progress_id, poll_cursor_id=poll_cursor.pk)


def poll_schedule_run(*, schedule_id: int) -> PollResult | None:
    """Run the pull of one PollSchedule (what its beat entry calls); None when it no longer exists or is off."""
    schedule = PollSchedule.objects.select_related("system").filter(pk=schedule_id).first()
    if schedule is None or not schedule.active:
        return None
    return poll_run(system=schedule.system, entity=schedule.entity, max_pages=schedule.max_pages)


POLL_TASK = "sync.poll_run_task"


POLL_QUEUE = "housekeeping"


@transaction.atomic
def poll_schedule_save(*, schedule: PollSchedule, user: Any = None, reason: str = "") -> PollSchedule:
    """Validate and save a poll schedule, and keep its beat entry (an interval PeriodicTask) in step."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    if user is not None and getattr(user, "is_authenticated", False):
        schedule._history_user = user  # type: ignore[attr-defined]
    if reason:
        schedule._change_reason = reason[:100]  # type: ignore[attr-defined]
    schedule.full_clean()
    schedule.save()
    interval, _ = IntervalSchedule.objects.get_or_create(every=schedule.every_seconds, period="seconds")
    task = PeriodicTask.objects.filter(pk=schedule.periodic_task_id).first() or PeriodicTask()
    task.name = f"pull {schedule.entity} from {schedule.system.slug} (#{schedule.pk})"[:200]
    task.task = POLL_TASK
    task.interval = interval
    task.crontab = None
    task.args = json.dumps([schedule.pk])
    task.kwargs = "{}"
    task.queue = POLL_QUEUE
    task.exchange = POLL_QUEUE
    task.routing_key = POLL_QUEUE
    task.enabled = schedule.active
    # A run nobody started within its interval is obsolete: the next one resumes from the same cursor.
    task.expire_seconds = schedule.every_seconds
    task.description = f"Scheduled pull of {schedule.entity} from {schedule.system}."
    task.save()
    if schedule.periodic_task_id != task.pk:
        PollSchedule.objects.filter(pk=schedule.pk).update(periodic_task=task)
        schedule.periodic_task = task
    return schedule


@transaction.atomic
def poll_schedule_delete(*, schedule: PollSchedule) -> None:
    """Delete a poll schedule and its beat entry (the cursor stays: a new schedule resumes from it)."""
    task_id = schedule.periodic_task_id
    schedule.delete()
    if task_id:
        from django_celery_beat.models import PeriodicTask

        PeriodicTask.objects.filter(pk=task_id).delete()
