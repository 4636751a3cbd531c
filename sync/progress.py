"""Progress of the engine's long runs (scheduled pulls, file drops), reported to whoever shows it.

The engine sits below insights, which reads the engine's rows for KPIs and traces, so the engine does not
import insights: insights registers its progress service here at start-up (InsightsConfig.ready). Without
one registered (a process that only ingests, say), progress is simply not recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProgressService:
    """The functions a progress store offers: each keyword-only, as insights.services defines them."""

    start: Callable[..., Any]
    advance: Callable[..., None]
    finish: Callable[..., None]
    poll_start: Callable[..., Any]
    poll_finish: Callable[..., None]


_service: list[ProgressService] = []


def progress_service_register(service: ProgressService) -> None:
    """Make `service` the store of progress (a second registration replaces the first)."""
    _service[:] = [service]


def batch_start(*, kind: str, system: Any, entity: str, total: int | None = None, label: str = "") -> int | None:
    """A batch started; the id its later reports name (None when no store is registered)."""
    if not _service:
        return None
    return int(_service[0].start(kind=kind, system=system, entity=entity, total=total, label=label).pk)


def batch_advance(*, progress_id: int | None, done: int = 0, failed: int = 0, pages: int = 0) -> None:
    if _service and progress_id is not None:
        _service[0].advance(progress_id=progress_id, done=done, failed=failed, pages=pages)


def batch_finish(*, progress_id: int | None, **fields: Any) -> None:
    if _service and progress_id is not None:
        _service[0].finish(progress_id=progress_id, **fields)


def poll_start(*, system: Any, entity: str) -> int | None:
    if not _service:
        return None
    return int(_service[0].poll_start(system=system, entity=entity).pk)


def poll_finish(*, progress_id: int | None, poll_cursor_id: int) -> None:
    if _service and progress_id is not None:
        _service[0].poll_finish(progress_id=progress_id, poll_cursor_id=poll_cursor_id)
