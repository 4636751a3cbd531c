"""Sync policies: validation, the beat schedule kept in step, and the scheduled run."""

from __future__ import annotations

import json
import logging
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from governance import flows, services, tasks
from governance.choices import Flow, Trigger
from governance.models import SyncPolicy
from governance.tests.factories import SyncPolicyFactory, policy_periodic_tasks

pytestmark = pytest.mark.django_db


def scheduled(**fields) -> SyncPolicy:
    return SyncPolicy(
        name="Nightly time", flow=Flow.TIME_EXPENSE_TO_ERP, trigger=Trigger.SCHEDULE, cron="0 2 * * 1-5", **fields
    )


def errors_of(policy: SyncPolicy) -> dict:
    with pytest.raises(ValidationError) as caught:
        policy.full_clean()
    return caught.value.message_dict


def test_schedule_trigger_needs_a_cron_expression():
    policy = scheduled()
    policy.cron = ""
    assert "cron expression" in errors_of(policy)["cron"][0]


@pytest.mark.parametrize(
    ("cron", "part"),
    [
        ("0 2 * *", "five fields"),
        ("61 * * * *", "minute"),
        ("0 25 * * *", "hour"),
        ("0 0 32 * *", "day of month"),
        ("0 0 * 13 *", "month"),
        ("0 0 * * 8", "day of week"),
        ("*/0 * * * *", "minute"),
    ],
)
def test_invalid_cron_is_rejected_naming_the_part(cron, part):
    policy = scheduled()
    policy.cron = cron
    assert part in errors_of(policy)["cron"][0]


@pytest.mark.parametrize("cron", ["*/15 * * * *", "0 2 * * 1-5", "30 6 1,15 * *", "0 0 * * sun"])
def test_valid_cron_is_accepted(cron):
    policy = scheduled()
    policy.cron = cron
    policy.full_clean()


def test_second_threshold_must_not_be_below_the_first_and_thresholds_need_a_currency():
    errors = errors_of(
        SyncPolicy(
            name="p",
            flow=Flow.MILESTONE_BILLING,
            approval_threshold_amount=Decimal("10000"),
            second_approval_threshold_amount=Decimal("5000"),
        )
    )
    assert "second_approval_threshold_amount" in errors and "approval_currency" in errors
    only_second = SyncPolicy(
        name="q", flow=Flow.MILESTONE_BILLING, second_approval_threshold_amount=1, approval_currency="USD"
    )
    assert "approval_threshold_amount" in errors_of(only_second)


def test_validation_rules_are_checked_against_the_registry():
    policy = SyncPolicy(
        name="p",
        flow=Flow.TIME_EXPENSE_TO_ERP,
        validation_rules=[{"rule": "entry_approved"}, {"rule": "cost_code_allowed", "params": {"allowed_codes": []}}],
    )
    messages = errors_of(policy)["validation_rules"]
    assert len(messages) == 1 and "validation_rules[1]" in messages[0] and "params.allowed_codes" in messages[0]


def test_saving_a_scheduled_policy_creates_its_periodic_task():
    # when
    policy = services.sync_policy_save(policy=scheduled())

    # then
    task = policy_periodic_tasks().get(pk=SyncPolicy.objects.get(pk=policy.pk).periodic_task_id)
    assert task.task == "governance.tasks.sync_policy_run_task"
    assert json.loads(task.args) == [policy.pk] and task.queue == "housekeeping" and task.enabled
    cron = task.crontab
    assert (cron.minute, cron.hour, cron.day_of_month, cron.month_of_year, cron.day_of_week) == (
        "0",
        "2",
        "*",
        "*",
        "1-5",
    )
    assert policy.history.count() == 1  # linking the task must not add a second history row


def test_changing_cron_updates_and_deactivating_disables_the_same_task():
    # given
    policy = services.sync_policy_save(policy=scheduled())
    task_id = policy.periodic_task_id

    # when
    policy.cron = "*/30 * * * *"
    services.sync_policy_save(policy=policy)

    # then
    task = policy_periodic_tasks().get(pk=task_id)
    assert (task.crontab.minute, task.crontab.hour) == ("*/30", "*") and task.enabled
    assert policy_periodic_tasks().count() == 1

    # when
    policy.active = False
    services.sync_policy_save(policy=policy)

    # then
    assert policy_periodic_tasks().get(pk=task_id).enabled is False


def test_switching_to_event_trigger_deletes_the_task_and_back_creates_one():
    # given
    policy = services.sync_policy_save(policy=scheduled())

    # when
    policy.trigger = Trigger.EVENT
    services.sync_policy_save(policy=policy)

    # then
    assert policy_periodic_tasks().count() == 0 and SyncPolicy.objects.get(pk=policy.pk).periodic_task_id is None

    # when
    policy.trigger = Trigger.SCHEDULE
    services.sync_policy_save(policy=policy)

    # then
    assert policy_periodic_tasks().filter(pk=SyncPolicy.objects.get(pk=policy.pk).periodic_task_id).exists()


def test_event_policy_has_no_task():
    services.sync_policy_save(policy=SyncPolicy(name="events", flow=Flow.CLIENT_MASTER))
    assert policy_periodic_tasks().count() == 0


def test_invalid_policy_leaves_no_task_behind():
    with pytest.raises(ValidationError):
        services.sync_policy_save(policy=scheduled(approval_threshold_amount=Decimal("5")))
    assert policy_periodic_tasks().count() == 0 and SyncPolicy.objects.count() == 0


def test_deleting_a_policy_deletes_its_task():
    policy = services.sync_policy_save(policy=scheduled())
    services.sync_policy_delete(policy=policy, reason="no longer needed")
    assert policy_periodic_tasks().count() == 0 and SyncPolicy.objects.count() == 0
    assert SyncPolicy.history.filter(history_type="-").get().history_change_reason == "no longer needed"


@pytest.fixture
def flow_runners_restored():
    """The flows' real runners (registered by the workflows at start-up) come back after a test replaces them."""
    saved = dict(flows._RUNNERS)
    yield
    flows._RUNNERS.clear()
    flows._RUNNERS.update(saved)


def test_run_without_a_registered_runner_logs_a_warning_and_says_so(caplog, flow_runners_restored):
    # given
    policy = SyncPolicyFactory(flow=Flow.INVOICE_STATUS)
    flows.flow_runner_unregister(Flow.INVOICE_STATUS)

    # when
    with caplog.at_level(logging.WARNING, logger="governance.services"):
        result = services.sync_policy_run(policy_id=policy.pk)

    # then
    assert result.status == flows.FlowRunStatus.NO_RUNNER and not result.started
    assert "invoice_status" in result.detail
    assert any("invoice_status" in record.getMessage() for record in caplog.records)


def test_run_calls_the_registered_runner_with_the_policy(flow_runners_restored):
    # given
    policy = SyncPolicyFactory(flow=Flow.CLIENT_MASTER)
    seen = []
    flows.flow_runner_unregister(Flow.CLIENT_MASTER)

    @flows.register_flow_runner(Flow.CLIENT_MASTER)
    def runner(p):
        seen.append(p.pk)
        return "ran"

    # when
    try:
        result = tasks.sync_policy_run_task(policy.pk)
    finally:
        flows.flow_runner_unregister(Flow.CLIENT_MASTER)

    # then
    assert seen == [policy.pk] and result["status"] == "started"


def test_run_of_a_deleted_or_inactive_policy_does_nothing():
    assert services.sync_policy_run(policy_id=999_999).status == flows.FlowRunStatus.POLICY_MISSING
    inactive = SyncPolicyFactory(active=False)
    assert services.sync_policy_run(policy_id=inactive.pk).status == flows.FlowRunStatus.POLICY_INACTIVE


def test_task_name_matches_the_periodic_task():
    assert tasks.sync_policy_run_task.name == services.SYNC_POLICY_TASK
