"""Tasks of the alerts app: thin wrappers around alerts.services."""

from __future__ import annotations

from celery import shared_task

from alerts import services


@shared_task(name="alerts.alerts_run_task", ignore_result=True)
def alerts_run_task() -> dict[str, int]:
    """Evaluate the alert rules and send what is due (beat runs it every minute)."""
    result = services.alerts_run()
    return {"created": result.created, "sent": result.sent, "failed": result.failed, "retrying": result.retrying}
