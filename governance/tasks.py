"""Tasks of the governance app: thin Celery entry points over the services."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from celery import shared_task

from governance import services


@shared_task(name="governance.tasks.sync_policy_run_task", ignore_result=True)
def sync_policy_run_task(policy_id: int) -> dict[str, Any]:
    """Run a scheduled sync policy's flow (started by beat from the policy's PeriodicTask)."""
    result = services.sync_policy_run(policy_id=policy_id)
    # The outcome may not be JSON-serialisable; the runner persists its own rows anyway.
    return {key: value for key, value in asdict(result).items() if key != "outcome"}


@shared_task(name="governance.tasks.accounting_periods_pull_task", ignore_result=True)
def accounting_periods_pull_task() -> list[dict[str, Any]]:
    """Read every ERP's accounting periods into the period calendar (started by beat every 15 minutes)."""
    from governance import period_pull

    return [result.as_dict() for result in period_pull.accounting_periods_pull_all()]
