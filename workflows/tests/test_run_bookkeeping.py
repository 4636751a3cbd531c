"""Run and step bookkeeping shared by the workflows."""

from __future__ import annotations

import pytest

from exception_queue.choices import ExceptionCategory
from governance.choices import Flow
from workflows.choices import RunStatus, StepStatus
from workflows.services import (
    workflow_run_finish,
    workflow_run_hold,
    workflow_run_start,
    workflow_step_begin,
    workflow_step_done,
    workflow_step_fail,
)

pytestmark = pytest.mark.django_db


def test_a_repeated_trigger_returns_the_same_run():
    # given a run started for an opportunity
    run, created = workflow_run_start(flow=Flow.OPPORTUNITY_TO_PROJECT, business_key="crm:opportunity:1")
    # when the same trigger arrives again
    again, created_again = workflow_run_start(flow=Flow.OPPORTUNITY_TO_PROJECT, business_key="crm:opportunity:1")
    # then it is the same run and only the first created it
    assert (created, created_again, again.pk) == (True, False, run.pk)


def test_steps_record_attempts_results_and_a_hold_opens_an_item_naming_the_step():
    # given a run with one step done and one failed
    run, _ = workflow_run_start(flow=Flow.OPPORTUNITY_TO_PROJECT, business_key="crm:opportunity:2")
    workflow_step_done(step=workflow_step_begin(run=run, name="create_erp_project", position=3), result={"erp": "P1"})
    failing = workflow_step_begin(run=run, name="create_workspace", position=5)
    workflow_step_fail(step=failing, error="collaboration answered 503")
    # when the run is held at the failed step
    item = workflow_run_hold(
        run=run, category=ExceptionCategory.ACTIVATION_HELD, reason="collaboration answered 503", step=failing.name
    )
    # then the run is held, its context keeps the ERP id, and the item points at the run and the step
    run.refresh_from_db()
    assert (run.status, run.current_step, run.context) == (RunStatus.HELD, "create_workspace", {"erp": "P1"})
    assert (item.workflow_run_id, item.step, item.flow) == (run.pk, "create_workspace", Flow.OPPORTUNITY_TO_PROJECT)
    # and a retry counts a second attempt
    assert workflow_step_begin(run=run, name="create_workspace", position=5).attempts == 2
    assert run.steps.get(name="create_erp_project").status == StepStatus.DONE


def test_finishing_needs_a_final_status_and_records_the_duration():
    # given a running run
    run, _ = workflow_run_start(flow=Flow.MILESTONE_BILLING, business_key="psa:milestone:9")
    # when finished with a non-final status, then it is refused
    with pytest.raises(ValueError, match="not a final run status"):
        workflow_run_finish(run=run, status=RunStatus.HELD)
    # when completed, then it has a duration from its trigger
    workflow_run_finish(run=run)
    assert run.status == RunStatus.COMPLETED and run.duration_seconds is not None and run.duration_seconds >= 0
