"""A held activation's item says what the counterpart answered, so finance knows what to fix before Retry."""

from __future__ import annotations

import pytest

from exception_queue.choices import ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from governance.choices import Flow
from workflows.choices import STEP_CREATE_WORKSPACE, RunStatus
from workflows.models import WorkflowRun
from workflows.tests.conftest import wait_for
from workflows.tests.sandbox_data import account_create, opportunity_create

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_workspace_refused_by_the_naming_policy_holds_the_run_with_the_suites_own_answer(firm, live_celery_worker_db):
    # given an opportunity whose name uses a word the collaboration suite's naming policy blocks
    account = account_create("Adatum Corporation")
    opportunity = opportunity_create(account, "Adatum - Confidential carve-out advisory")

    def held() -> WorkflowRun | None:
        run = WorkflowRun.objects.filter(
            flow=Flow.OPPORTUNITY_TO_PROJECT, business_key=f"crm:opportunity:{opportunity.external_id}"
        ).first()
        return run if run is not None and run.status == RunStatus.HELD else None

    # when the saga runs, then it is held at create_workspace
    run = wait_for(held)
    assert run.current_step == STEP_CREATE_WORKSPACE
    item = ExceptionItem.objects.get(workflow_run=run, state=ExceptionState.OPEN)
    assert item.category == ExceptionCategory.ACTIVATION_HELD
    # and the item carries the suite's answer (its naming policy and the word), not only "HTTP 400"
    assert "HTTP 400" in item.reason
    assert "it answered:" in item.reason
    assert "a blocked word of the naming policy" in item.reason and "confidential" in item.reason
