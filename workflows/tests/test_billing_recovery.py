"""Milestone billing when systems fail: a write the ERP stored but answered with an error, a refused billing
event fixed at the source and retried, and retries that run out. The billing event is never created twice."""

from __future__ import annotations

import pytest

from connectors.http import ConnectorError
from exception_queue.actions import item_action_perform
from exception_queue.choices import ExceptionCategory, ExceptionState
from sandbox.choices import SandboxSystem
from sandbox.models import SandboxFaultProfile
from sandbox.services import fault_profile_cache_clear, fault_profile_ensure, fault_profile_save, record_update
from workflows.choices import RunStatus, StepStatus
from workflows.milestone_billing import milestone_billing_advance, milestone_billing_give_up, milestone_billing_request
from workflows.tests.billing_support import (
    billing_events,
    billing_world,
    contract_make,
    milestone_make,
    runs_driven_by_the_test,
    user_named,
)


@pytest.fixture
def billing(live_server):
    return billing_world(live_server)


@pytest.fixture
def driven(monkeypatch):
    return runs_driven_by_the_test(monkeypatch)


@pytest.fixture
def erp_faults():
    """Switch faults of the sandbox ERP on; they are reset after the test."""

    def switch(**faults) -> SandboxFaultProfile:
        profile = fault_profile_ensure(system=SandboxSystem.ERP)
        defaults = SandboxFaultProfile(system=SandboxSystem.ERP)
        for name in ("accept_then_fail_every_nth", "error_every_nth", "error_status", "enabled", "retry_after_seconds"):
            setattr(profile, name, faults.get(name, getattr(defaults, name)))
        return fault_profile_save(profile=profile, reason="test")

    yield switch
    switch()
    fault_profile_cache_clear()


@pytest.mark.django_db(transaction=True)
def test_a_billing_event_the_erp_stored_but_answered_with_an_error_is_not_created_again(billing, erp_faults, driven):
    # given a 10,000 milestone, and an ERP that stores every write but answers 502
    psa_project, _ = contract_make("AF-10")
    milestone = milestone_make(psa_project, 10000.0)
    run = milestone_billing_request(system=billing["psa"], milestone_id=milestone.external_id, user=user_named("ops"))
    erp_faults(enabled=True, accept_then_fail_every_nth=1)
    # when the run bills, then the call fails as retryable, but the event was stored
    with pytest.raises(ConnectorError):
        milestone_billing_advance(run_id=run.pk)
    assert len(billing_events(run.business_key)) == 1
    assert run.steps.get(name="create_billing_event").status == StepStatus.FAILED
    # when the task retries
    erp_faults()
    milestone_billing_advance(run_id=run.pk)
    # then the stored event is found by its key and nothing is created twice
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED
    assert len(billing_events(run.business_key)) == 1
    step = run.steps.get(name="create_billing_event")
    assert (step.attempts, step.result["billing_event_created"]) == (2, False)


@pytest.mark.django_db(transaction=True)
def test_a_refused_billing_event_holds_the_run_and_a_retry_after_the_fix_bills_once(billing, driven):
    # given a milestone whose ERP project is closed (the ERP refuses postings to it)
    psa_project, erp_project = contract_make("CL-20")
    milestone = milestone_make(psa_project, 20000.0)
    record_update(record=erp_project, changes={"status": "closed"})
    run = milestone_billing_request(system=billing["psa"], milestone_id=milestone.external_id, user=user_named("ops"))
    # when the run bills
    milestone_billing_advance(run_id=run.pk)
    # then it is held on a target-rejected item and nothing is billed
    run.refresh_from_db()
    item = run.exception_items.get()
    assert (run.status, item.category, item.step) == (
        RunStatus.HELD,
        ExceptionCategory.TARGET_REJECTED,
        "create_billing_event",
    )
    assert not billing_events(run.business_key)
    # when the project is reopened and finance retries the step
    erp_project.refresh_from_db()
    record_update(record=erp_project, changes={"status": "active"})
    item_action_perform(item=item, action="retry_step", user=user_named("finance"), reason="project reopened")
    milestone_billing_advance(run_id=run.pk)
    # then the run completes with one billing event, and the decision is on record
    run.refresh_from_db()
    item.refresh_from_db()
    assert run.status == RunStatus.COMPLETED and len(billing_events(run.business_key)) == 1
    assert item.state == ExceptionState.RESOLVED and item.decisions.get().action == "retry_step"


@pytest.mark.django_db(transaction=True)
def test_when_the_retries_run_out_the_run_is_held_for_a_person(billing, erp_faults, driven):
    # given an ERP answering 503 to everything
    psa_project, _ = contract_make("GU-30")
    milestone = milestone_make(psa_project, 30000.0)
    run = milestone_billing_request(system=billing["psa"], milestone_id=milestone.external_id, user=user_named("ops"))
    erp_faults(enabled=True, error_every_nth=1, error_status=503)
    with pytest.raises(ConnectorError):
        milestone_billing_advance(run_id=run.pk)
    # when the task gives up
    milestone_billing_give_up(run_id=run.pk, error="ERP answered 503")
    # then the run is held at the failed step on a dead-letter item, and nothing was billed
    run.refresh_from_db()
    item = run.exception_items.get()
    assert (run.status, item.category) == (RunStatus.HELD, ExceptionCategory.DEAD_LETTER)
    assert item.step == "check_eligibility"
    assert not billing_events(run.business_key)
