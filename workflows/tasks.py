"""Celery tasks of the workflows: thin, take a run id, idempotent (a run that is not running is left alone)."""

from __future__ import annotations

from celery import shared_task

from workflows import client_master, opportunity_to_project


@shared_task(name="workflows.opportunity_to_project_run_task", ignore_result=True)
def opportunity_to_project_run_task(run_id: int) -> str | None:
    """Carry an opportunity-to-project run on from its first step that is not done."""
    return opportunity_to_project.opportunity_to_project_run(run_id=run_id)


@shared_task(name="workflows.opportunity_to_project_compensate_task", ignore_result=True)
def opportunity_to_project_compensate_task(run_id: int) -> str | None:
    """Undo what a held opportunity-to-project run created, in reverse."""
    return opportunity_to_project.opportunity_to_project_compensate(run_id=run_id)


@shared_task(bind=True, name="workflows.client_master_run_task", ignore_result=True, max_retries=20)
def client_master_run_task(self, run_id: int) -> str | None:  # type: ignore[no-untyped-def]
    """Create or update an account's client in the ERP and the PSA; while another worker has the run, again
    in a few seconds (so the latest record of the account is never skipped)."""
    try:
        result = client_master.client_master_run(run_id=run_id)
    except client_master.RunBusyError as exc:
        raise self.retry(countdown=3, exc=exc) from exc
    return None if result is None else result.canonical_id
