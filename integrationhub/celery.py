"""The Celery application. Workers and beat start with `celery -A integrationhub ...`."""

import os

from celery import Celery
from celery.signals import before_task_publish, task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integrationhub.settings")

app = Celery("integrationhub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@before_task_publish.connect
def _carry_correlation_id(headers: dict | None = None, **_: object) -> None:
    # A task published while serving a request carries that request's correlation id to the worker.
    from integrationhub.logging import current_correlation_id

    correlation_id = current_correlation_id()
    if headers is not None and correlation_id and "correlation_id" not in headers:
        headers["correlation_id"] = correlation_id


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(**_: object) -> None:
    # A worker keeps its database connection between tasks; Django checks one only around a web request. A
    # connection the server dropped (a restart, a failover, pg_terminate_backend) would fail every later task,
    # so each task starts and ends the way a request does: dead or expired connections are closed. A task run
    # in the caller's process (eager, inside the caller's transaction) leaves the caller's connection alone.
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


@task_prerun.connect
def _bind_correlation_id(task=None, **_: object) -> None:
    from integrationhub.logging import bind_correlation_id

    request = getattr(task, "request", None)
    bind_correlation_id(getattr(request, "correlation_id", None) if request else None)


@task_postrun.connect
def _unbind_correlation_id(**_: object) -> None:
    from integrationhub.logging import bind_correlation_id

    bind_correlation_id(None)
