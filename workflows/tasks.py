"""Tasks of the workflows app: thin, take ids, idempotent. Start them with integrationhub.dispatch."""

from __future__ import annotations

from celery import shared_task

from workflows import client_master, opportunity_to_project, time_expense

# --- milestone to billing, invoice status ----------------------------------------------------------------


@shared_task(
    bind=True,
    name="workflows.milestone_billing_advance_task",
    ignore_result=True,
    max_retries=8,
)
def milestone_billing_advance_task(self, run_id: int) -> str | None:  # type: ignore[no-untyped-def]
    """Carry a milestone billing run forward; a retryable error of a system retries with backoff."""
    from connectors.http import ConnectorError
    from workflows.milestone_billing import milestone_billing_advance, milestone_billing_give_up

    try:
        return milestone_billing_advance(run_id=run_id)
    except ConnectorError as exc:
        if not exc.retryable or self.request.retries >= self.max_retries:
            milestone_billing_give_up(run_id=run_id, error=exc.detail)
            return None
        countdown = exc.retry_after or min(300, 5 * 2**self.request.retries)
        raise self.retry(exc=exc, countdown=countdown) from exc


@shared_task(name="workflows.milestone_billing_pull_task", ignore_result=True)
def milestone_billing_pull_task(system_id: int) -> int:
    """Pull a PSA's changed milestones and start the runs of completed ones."""
    from connectors.models import ConnectedSystem
    from workflows.milestone_billing import milestone_billing_pull

    system = ConnectedSystem.objects.filter(pk=system_id).first()
    return milestone_billing_pull(system=system) if system is not None else 0


@shared_task(name="workflows.time_expense_postings_send_task", ignore_result=True)
def time_expense_postings_send_task(target_system_id: int) -> dict[str, int]:
    """Send a target's due time and expense lines (voids one by one, new lines batched per project)."""
    result = time_expense.time_expense_postings_send(target_system_id=target_system_id)
    return {"calls": result.calls, "posted": result.posted, "retrying": result.retrying, "failed": result.failed}


@shared_task(name="workflows.time_expense_postings_dispatch_task", ignore_result=True)
def time_expense_postings_dispatch_task() -> int:
    """Beat: enqueue a send for every target whose time and expense lines are due and whose batch window closed."""
    return time_expense.time_expense_postings_dispatch()


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
