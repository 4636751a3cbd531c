"""Services of the insights app: the progress rows of batch syncs (scheduled pulls and file drops).

The sync services call these at the start of a batch, after each stored page and at the end. Each call is a
short write of its own, outside the batch's page transaction, so the progress page sees it at once.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.db.models import F
from django.utils import timezone

from insights.choices import BatchKind, BatchStatus
from insights.models import BatchProgress

# What a poll run's outcome (sync.choices.PollOutcome, kept on its cursor) means for its progress row.
POLL_OUTCOME_STATUS = {
    "complete": BatchStatus.COMPLETED,
    "page_limit": BatchStatus.STOPPED,
    "rate_limited": BatchStatus.STOPPED,
    "skipped": BatchStatus.STOPPED,
    "error": BatchStatus.FAILED,
}


def batch_progress_start(
    *, kind: str, system: Any, entity: str, total: int | None = None, label: str = ""
) -> BatchProgress:
    """Record that a batch sync started (total records if known up front)."""
    now = timezone.now()
    progress = BatchProgress(
        kind=kind,
        system=system,
        entity=entity,
        label=label[:255],
        total=total,
        status=BatchStatus.RUNNING,
        started_at=now,
        updated_at=now,
    )
    progress.full_clean()
    progress.save()
    return progress


def batch_progress_advance(*, progress_id: int, done: int = 0, failed: int = 0, pages: int = 0) -> None:
    """Add the records just handled to a running batch (one UPDATE, safe against concurrent advances)."""
    BatchProgress.objects.filter(pk=progress_id).update(
        done=F("done") + done, failed=F("failed") + failed, pages=F("pages") + pages, updated_at=timezone.now()
    )


def batch_progress_finish(
    *,
    progress_id: int,
    status: str = BatchStatus.COMPLETED,
    error: str = "",
    done: int | None = None,
    failed: int | None = None,
    total: int | None = None,
) -> None:
    """Close a batch with its final status (and final counts, when the caller knows them)."""
    now = timezone.now()
    fields: dict[str, Any] = {"status": status, "error": error[:2000], "finished_at": now, "updated_at": now}
    for name, value in (("done", done), ("failed", failed), ("total", total)):
        if value is not None:
            fields[name] = value
    BatchProgress.objects.filter(pk=progress_id).update(**fields)


def poll_progress_start(*, system: Any, entity: str) -> BatchProgress:
    """A scheduled pull starts: its total is not known until the source has no more pages."""
    return batch_progress_start(kind=BatchKind.POLL, system=system, entity=entity, label=f"pull {entity}")


def poll_progress_finish(*, progress_id: int, poll_cursor_id: int) -> None:
    """Close a pull's progress from the outcome its run left on the poll cursor (an outcome older than the run,
    or none, means the run stopped on an unexpected error)."""
    from sync.models import PollCursor

    progress = BatchProgress.objects.filter(pk=progress_id).only("started_at", "done", "failed").first()
    cursor = PollCursor.objects.filter(pk=poll_cursor_id).only("last_run_at", "last_outcome", "last_error").first()
    if progress is None:
        return
    ran: datetime.datetime | None = cursor.last_run_at if cursor else None
    if cursor is None or ran is None or ran < progress.started_at:
        stopped = "The pull stopped on an unexpected error; the next run resumes from the cursor."
        batch_progress_finish(progress_id=progress_id, status=BatchStatus.FAILED, error=stopped)
        return
    status = POLL_OUTCOME_STATUS.get(cursor.last_outcome, BatchStatus.COMPLETED)
    # A pull that reached the end knows its total: every record it handled.
    total = progress.done + progress.failed if status == BatchStatus.COMPLETED else None
    batch_progress_finish(progress_id=progress_id, status=status, error=cursor.last_error, total=total)
