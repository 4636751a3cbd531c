"""Tasks of the connectors app: thin wrappers that take ids and call one service."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from connectors.models import ConnectedSystem
from connectors.services import connected_system_test_connection


@shared_task(name="connectors.connected_system_test_connection_task")
def connected_system_test_connection_task(system_id: int) -> dict[str, Any] | None:
    """Test a system's connection in the background (read-only, so safe to run twice)."""
    system = ConnectedSystem.objects.filter(pk=system_id).first()
    if system is None:
        return None
    result = connected_system_test_connection(system=system)
    return {"ok": result.ok, "status_code": result.status_code, "message": result.message}
