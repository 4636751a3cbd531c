"""The one way to start a Celery task: after the surrounding transaction commits."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from django.db import transaction

logger = logging.getLogger(__name__)


def enqueue_on_commit(task: Task, *args: Any, queue: str | None = None, **kwargs: Any) -> None:
    """Publish `task` once the current transaction commits, so a worker never sees uncommitted rows."""
    options: dict[str, Any] = {}
    if queue:
        options["queue"] = queue

    def publish() -> None:
        task.apply_async(args=args, kwargs=kwargs, **options)
        logger.debug("task published", extra={"task": task.name, "queue": queue})

    transaction.on_commit(publish)
