"""Tasks of the workflows app: thin, take ids, idempotent. Start them with integrationhub.dispatch.

A step that failed retryably is tried again after the delay of its flow's sync policy, as many times as the
policy allows (`workflow_retry_delay`); then the flow's give-up holds the run for a person. The count is this
task's own retries, so a person's retry of a held run starts with the policy's full budget again.
"""

from __future__ import annotations

from celery import shared_task

from connectors.http import ConnectorError
from workflows import client_master, opportunity_to_project, time_expense
from workflows.services import workflow_retry_delay

# How often a client-master run waits for another worker carrying the same run out, 3 s apart.
BUSY_RETRIES = 20

# --- milestone to billing, invoice status ----------------------------------------------------------------


# The policy bounds the retries (max_attempts), so Celery's own bound is off.
@shared_task(bind=True, name="workflows.milestone_billing_advance_task", ignore_result=True, max_retries=None)
def milestone_billing_advance_task(self, run_id: int) -> str | None:  # type: ignore[no-untyped-def]
    """Carry a milestone billing run forward; a retryable error of a system retries after the policy's delay."""
    from workflows.milestone_billing import milestone_billing_advance, milestone_billing_give_up

    try:
        return milestone_billing_advance(run_id=run_id)
    except ConnectorError as exc:
        delay = workflow_retry_delay(run_id=run_id, attempt=self.request.retries + 1, error=exc)
        if delay is None:
            milestone_billing_give_up(run_id=run_id, error=exc.detail)
            return None
        raise self.retry(exc=exc, countdown=delay) from exc


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


@shared_task(bind=True, name="workflows.opportunity_to_project_run_task", ignore_result=True, max_retries=None)
def opportunity_to_project_run_task(self, run_id: int) -> str | None:  # type: ignore[no-untyped-def]
    """Carry an opportunity-to-project run on from its first step that is not done; a step that failed
    retryably runs again after the policy's delay, and the run is held once the policy's attempts are spent."""
    try:
        return opportunity_to_project.opportunity_to_project_run(run_id=run_id)
    except ConnectorError as exc:
        delay = workflow_retry_delay(run_id=run_id, attempt=self.request.retries + 1, error=exc)
        if delay is None:
            opportunity_to_project.opportunity_to_project_give_up(run_id=run_id, error=exc)
            return None
        raise self.retry(exc=exc, countdown=delay) from exc


@shared_task(name="workflows.opportunity_to_project_compensate_task", ignore_result=True)
def opportunity_to_project_compensate_task(run_id: int) -> str | None:
    """Undo what a held opportunity-to-project run created, in reverse."""
    return opportunity_to_project.opportunity_to_project_compensate(run_id=run_id)


@shared_task(bind=True, name="workflows.client_master_run_task", ignore_result=True, max_retries=None)
def client_master_run_task(self, run_id: int) -> str | None:  # type: ignore[no-untyped-def]
    """Create or update an account's client in the ERP and the PSA; while another worker has the run, again
    in a few seconds (so the latest record of the account is never skipped); after a retryable failure of a
    system, again after the policy's delay, and held once the policy's attempts are spent."""
    try:
        result = client_master.client_master_run(run_id=run_id)
    except client_master.RunBusyError as exc:
        raise self.retry(countdown=3, exc=exc, max_retries=BUSY_RETRIES) from exc
    except ConnectorError as exc:
        delay = workflow_retry_delay(run_id=run_id, attempt=self.request.retries + 1, error=exc)
        if delay is None:
            client_master.client_master_give_up(run_id=run_id, error=exc)
            return None
        raise self.retry(exc=exc, countdown=delay) from exc
    return None if result is None else result.canonical_id


# --- demo: the UK entity on the local Tryton ----------------------------------------------------------------

DEMO_UK_FOLLOWUP_SECONDS = 5
DEMO_UK_FOLLOWUP_TRIES = 120  # ten minutes of waiting for the UK activation


@shared_task(name="workflows.demo_uk_followup_task", ignore_result=True)
def demo_uk_followup_task(attempt: int) -> str:
    """Once the demo's UK activation completed, log its time, expense and milestone and pull them; until then,
    look again in a few seconds (for ten minutes at most). A held or compensated activation stops it: the
    exception queue says why."""
    from workflows.choices import RunStatus
    from workflows.demo_uk import uk_delivery_seed

    result = uk_delivery_seed()
    waiting = result.state in ("not started", RunStatus.RUNNING, RunStatus.COMPENSATING)
    if waiting and attempt < DEMO_UK_FOLLOWUP_TRIES:
        demo_uk_followup_task.apply_async((attempt + 1,), countdown=DEMO_UK_FOLLOWUP_SECONDS, queue="delivery")
    return str(result.state)
