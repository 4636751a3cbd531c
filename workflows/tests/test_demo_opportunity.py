"""The opportunity and client demo: seeded on the demo firm, it activates some, holds one and waits on a duplicate."""

from __future__ import annotations

import pytest
from django.db.models import Value
from django.db.models.functions import Replace

from connectors.http import clients_close
from connectors.models import ConnectedSystem
from exception_queue.actions import item_action_perform
from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from governance.choices import Flow
from governance.models import SyncPolicy
from integrationhub.demo import DEMO_BASE_URL, demo_setup
from sandbox import services as sandbox_services
from sandbox.choices import SandboxSystem
from workflows.choices import RunStatus
from workflows.client_master import DUPLICATE_RULE
from workflows.demo_opportunity import OPPORTUNITIES, seed_opportunity_and_client_demo
from workflows.models import WorkflowRun
from workflows.tests.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _runs() -> list[WorkflowRun]:
    return list(WorkflowRun.objects.filter(flow=Flow.OPPORTUNITY_TO_PROJECT))


def _all_settled() -> bool:
    runs = _runs()
    return len(runs) == len(OPPORTUNITIES) and all(run.status != RunStatus.RUNNING for run in runs)


def test_the_demo_activates_three_holds_one_at_the_workspace_and_waits_on_a_duplicate(
    live_server, live_celery_worker_db, make_role_user
):
    # given the demo firm, its systems pointed at this test's server instead of 127.0.0.1:8000
    demo_setup()
    ConnectedSystem.objects.update(base_url=Replace("base_url", Value(DEMO_BASE_URL), Value(live_server.url)))
    setting = sandbox_services.sandbox_setting_ensure(system=SandboxSystem.CRM)
    setting.webhook_url = setting.webhook_url.replace(DEMO_BASE_URL, live_server.url)
    sandbox_services.sandbox_setting_save(setting=setting, reason="test")
    clients_close()

    # when the flows' demo is seeded and the worker runs
    summary = seed_opportunity_and_client_demo()
    wait_for(_all_settled, timeout=120)

    # then the flows are configured: the client-master policy checks duplicates
    policy = SyncPolicy.objects.get(flow=Flow.CLIENT_MASTER, legal_entity__isnull=True)
    assert any(entry["rule"] == DUPLICATE_RULE for entry in policy.validation_rules)
    # and three opportunities activated fully, one is held at create_workspace, one waits at ensure_client
    runs = {run.context["opportunity"]["name"]: run for run in _runs()}
    completed = sorted(name for name, run in runs.items() if run.status == RunStatus.COMPLETED)
    assert len(completed) == 3, {name: (run.status, run.last_error) for name, run in runs.items()}
    held = runs["Adatum - Confidential carve-out advisory"]
    assert (held.status, held.current_step) == (RunStatus.HELD, "create_workspace")
    assert ExceptionItem.objects.filter(
        workflow_run=held, category=ExceptionCategory.ACTIVATION_HELD, state=ExceptionState.OPEN
    ).exists()
    waiting = runs["Northwind - Contract analytics"]
    assert (waiting.status, waiting.current_step) == (RunStatus.HELD, "ensure_client")
    suspect = ExceptionItem.objects.get(category=ExceptionCategory.DUPLICATE_SUSPECT, state=ExceptionState.OPEN)
    assert "Northwind Legal LLP" in {rule["name"] for rule in suspect.failed_rules}
    assert "won now: 5" in summary[-1]

    # when the demo is seeded again, then nothing is won twice
    assert "won now: 0" in seed_opportunity_and_client_demo()[-1]

    # when an analyst links the suspect to the ERP's existing client
    erp_candidate = next(rule for rule in suspect.failed_rules if rule["system"] == "erp-us")
    item_action_perform(
        item=suspect,
        action=DecisionAction.LINK_EXISTING,
        user=make_role_user("analyst"),
        reason="the same law firm",
        candidate=erp_candidate["candidate"],
    )

    # then the waiting activation resumes and completes on that ERP client
    def resumed() -> WorkflowRun | None:
        waiting.refresh_from_db()
        return waiting if waiting.status not in (RunStatus.HELD, RunStatus.RUNNING) else None

    assert wait_for(resumed).status == RunStatus.COMPLETED, waiting.last_error
    assert waiting.context["erp_client_id"] == erp_candidate["external_id"]
