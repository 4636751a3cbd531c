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
