"""Tasks of the reconciliation app: thin, take ids, idempotent (a run already carried out is left alone)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="reconciliation.reconciliation_run_task", ignore_result=True)
def reconciliation_run_task(run_id: int) -> str:
    """Carry a queued reconciliation run out."""
    from reconciliation.services import reconciliation_run_execute

    return str(reconciliation_run_execute(run_id=run_id).status)


@shared_task(name="reconciliation.reconciliation_schedule_task", ignore_result=True)
def reconciliation_schedule_task() -> int:
    """Beat: queue this month's and last month's run of every entity with routes (a failed run is retried so)."""
    from reconciliation.services import reconciliation_schedule_tick

    return len(reconciliation_schedule_tick())
