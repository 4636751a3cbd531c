"""Tasks of the workflows app: thin, take ids, idempotent. Start them with integrationhub.dispatch."""

from __future__ import annotations

from celery import shared_task

from workflows import time_expense


@shared_task(name="workflows.time_expense_postings_send_task", ignore_result=True)
def time_expense_postings_send_task(target_system_id: int) -> dict[str, int]:
    """Send a target's due time and expense lines (voids one by one, new lines batched per project)."""
    result = time_expense.time_expense_postings_send(target_system_id=target_system_id)
    return {"calls": result.calls, "posted": result.posted, "retrying": result.retrying, "failed": result.failed}


@shared_task(name="workflows.time_expense_postings_dispatch_task", ignore_result=True)
def time_expense_postings_dispatch_task() -> int:
    """Beat: enqueue a send for every target whose time and expense lines are due and whose batch window closed."""
    return time_expense.time_expense_postings_dispatch()
