"""Liveness and readiness checks: the database, the broker and at least one live worker."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from integrationhub.celery import app as celery_app


def _timed(check) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    try:
        detail = check()
        part: dict[str, Any] = {"status": "ok", **(detail or {})}
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; the message tells which part
        part = {"status": "fail", "error": f"{type(exc).__name__}: {exc}"}
    part["ms"] = round((time.monotonic() - started) * 1000, 1)
    return part


def check_database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


def check_broker() -> dict[str, Any]:
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)
        transport = conn.transport_cls
    return {"transport": str(transport)}


def check_worker(timeout: float) -> dict[str, Any]:
    # limit=1 returns as soon as one worker answers instead of waiting out the whole timeout.
    replies = celery_app.control.ping(timeout=timeout, limit=1)
    if not replies:
        raise RuntimeError(
            f"no worker answered a ping within {timeout:g}s; "
            "start one with `make run` or `celery -A integrationhub worker`"
        )
    return {"workers": sorted(name for reply in replies for name in reply)}


def readiness_report() -> dict[str, Any]:
    """Each part's status, and the overall status: ok only when every part is ok."""
    parts = {
        "database": _timed(check_database),
        "broker": _timed(check_broker),
        "worker": _timed(lambda: check_worker(settings.HUB_READYZ_WORKER_TIMEOUT)),
    }
    status = "ok" if all(part["status"] == "ok" for part in parts.values()) else "fail"
    return {"status": status, "parts": parts}


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok", "parts": {"process": {"status": "ok"}}})


def readyz(request: HttpRequest) -> JsonResponse:
    report = readiness_report()
    return JsonResponse(report, status=200 if report["status"] == "ok" else 503)
