"""The time and expense demo: seeded on the demo firm, it posts entries to the ERP and leaves three for finance
(two policy items and one entry in a closed accounting period)."""

from __future__ import annotations

import pytest

from connectors.models import ConnectedSystem
from exception_queue.choices import ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from governance.choices import Flow
from governance.models import SyncPolicy
from governance.services import sync_policy_run
from sandbox.models import SandboxRecord, SandboxSetting
from sync.models import Message
from workflows.demo_time_expense import seed_time_expense_demo
from workflows.models import TimeExpensePosting
from workflows.tests.time_expense_fixtures import run_until

HELD = (ExceptionCategory.POLICY, ExceptionCategory.CLOSED_PERIOD)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("live_celery_worker_db")]


def test_the_demo_posts_its_approved_entries_and_leaves_three_policy_exceptions(live_server):
    # given the demo firm with the time and expense demo seeded, its PSA and ERP served by this test's server
    demo = seed_time_expense_demo(base_url=live_server.url)
    ConnectedSystem.objects.filter(slug="psa").update(base_url=f"{live_server.url}/sandbox/psa/v2")
    ConnectedSystem.objects.filter(slug="erp-us").update(base_url=f"{live_server.url}/sandbox/erp/api")
    policy = SyncPolicy.objects.get(flow=Flow.TIME_EXPENSE_TO_ERP, legal_entity__isnull=True)
    assert policy.trigger == "schedule" and policy.periodic_task is not None
    setting = SandboxSetting.objects.get(system="psa")
    assert setting.webhook_url == f"{live_server.url}/api/v1/inbound/psa/{{event_type}}/"
    approved_in_psa = SandboxRecord.objects.filter(
        system="psa", object_type__in=["time_entries", "expenses"], data__approval_status="approved"
    ).count()

    # when the scheduled policy runs (as beat would) and the worker processes what it pulled
    sync_policy_run(policy_id=policy.pk)
    run_until(
        lambda: (
            ExceptionItem.objects.filter(category__in=HELD).count() == 3
            and not Message.objects.filter(flow=Flow.TIME_EXPENSE_TO_ERP, status__in=["received", "queued"]).exists()
        ),
        timeout=120,
    )

    # then three entries wait for finance, one per expected rule; the closed period's as a closed-period item
    items = ExceptionItem.objects.filter(category__in=HELD, state=ExceptionState.OPEN)
    assert sorted(rule["rule"] for item in items for rule in item.failed_rules) == sorted(demo.expected_exceptions)
    assert [rule["rule"] for rule in items.get(category=ExceptionCategory.CLOSED_PERIOD).failed_rules] == [
        "period_open"
    ]
    # and every other approved entry is in the ERP, once
    posted = TimeExpensePosting.objects.filter(status="posted")
    assert posted.count() == approved_in_psa - 3
    lines = SandboxRecord.objects.filter(system="erp", object_type="time-entries", data__source_ref__startswith="psa:")
    assert lines.count() == posted.count()
    assert len({line.data["source_ref"] for line in lines}) == lines.count()

    # when the demo is seeded again and the policy runs again
    again = seed_time_expense_demo(base_url=live_server.url)
    ConnectedSystem.objects.filter(slug="psa").update(base_url=f"{live_server.url}/sandbox/psa/v2")
    ConnectedSystem.objects.filter(slug="erp-us").update(base_url=f"{live_server.url}/sandbox/erp/api")
    sync_policy_run(policy_id=policy.pk)
    run_until(
        lambda: not Message.objects.filter(flow=Flow.TIME_EXPENSE_TO_ERP, status__in=["received", "queued"]).exists()
    )

    # then nothing doubles
    assert again.approved_entries == demo.approved_entries
    assert lines.count() == posted.count() == approved_in_psa - 3
    assert ExceptionItem.objects.filter(category__in=HELD).count() == 3
    # and each line is booked to its person's employee (the demo's resources) with the PSA's note as description
    assert {line.data.get("employee_id", "")[:4] for line in lines} == {"EMP-"}
    entity = {"time_entries": "time_entry", "expenses": "expense"}
    notes = {
        f"psa:{entity[record.object_type]}:{record.external_id}": record.data.get("notes") or ""
        for record in SandboxRecord.objects.filter(system="psa", object_type__in=list(entity))
    }
    assert all((line.data.get("description") or "") == notes[line.data["source_ref"]] for line in lines)
    assert any(line.data["description"].startswith("Demo entry ") for line in lines)
