"""Workflow 2 end to end: the sandbox PSA and ERP over real HTTP (`live_server`), a real Celery worker."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from exception_queue.choices import ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from governance.choices import Trigger
from governance.services import sync_policy_run
from sync.choices import MessageStatus
from sync.models import Message
from workflows.choices import PostingKind, PostingStatus
from workflows.models import TimeExpensePosting
from workflows.selectors import time_to_erp_latencies
from workflows.tests.time_expense_fixtures import build_world, run_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("live_celery_worker_db")]


def _posted(world) -> int:
    return TimeExpensePosting.objects.filter(target_system=world.erp, status=PostingStatus.POSTED).count()


def test_approved_entries_sent_by_the_psa_webhook_are_posted_once(request):
    # given a PSA that sends its approval webhooks to the hub, and three entries on two projects
    world = build_world(request, trigger=Trigger.EVENT)
    world.webhooks_on()
    entries = [
        world.time_entry(project="alpha"),
        world.time_entry(project="alpha", hours=3),
        world.time_entry(project="beta"),
    ]
    started = timezone.now()

    # when the entries are approved in the PSA
    for entry in entries:
        world.approve(entry)
    run_until(lambda: _posted(world) == 3)

    # then each entry is one line in the ERP, on its project, at the rate card's rate
    lines = world.erp_lines()
    assert len(lines) == 3
    assert sorted(line.data["source_ref"].rsplit(":", 1)[-1] for line in lines) == sorted(entries)
    by_project = {line.data["project_id"] for line in lines}
    assert by_project == {int(world.erp_projects["alpha"].external_id), int(world.erp_projects["beta"].external_id)}
    assert {line.data["bill_rate"] for line in lines} == {"160.00"}
    # and every message of the flow is delivered, with the approval time as its source timestamp
    messages = Message.objects.filter(system=world.psa)
    assert {m.flow for m in messages} == {"time_expense_to_erp"}
    run_until(lambda: all(m.status == MessageStatus.DELIVERED for m in Message.objects.filter(system=world.psa)))
    latencies = time_to_erp_latencies(
        delivered_from=started, delivered_to=timezone.now() + datetime.timedelta(seconds=1)
    )
    assert len(latencies) == 3
    assert all(0 <= row.latency_seconds < 120 for row in latencies)
    assert not ExceptionItem.objects.exists()


def test_a_scheduled_run_pulls_approved_entries_and_batches_them_per_project(request):
    # given a scheduled policy and approved entries (no webhooks): three on alpha, two on beta, one not approved
    world = build_world(request, trigger=Trigger.SCHEDULE)
    alpha = [world.time_entry(project="alpha", hours=h) for h in (1, 2, 3)]
    beta = [world.time_entry(project="beta", hours=h) for h in (1, 2)]
    draft = world.time_entry(project="beta", hours=4)
    for entry in alpha + beta:
        world.approve(entry)

    # when the policy's schedule fires
    result = sync_policy_run(policy_id=world.policy.pk)
    assert result.started
    run_until(lambda: _posted(world) == 5)

    # then one ERP call per project carried its lines, and the draft entry is not posted
    lines = world.erp_lines()
    assert len(lines) == 5
    batches = {}
    for line in lines:
        batches.setdefault(line.data["project_id"], set()).add(line.data["batch"])
    assert all(len(ids) == 1 for ids in batches.values()), batches
    assert len({next(iter(ids)) for ids in batches.values()}) == 2
    assert not any(line.data["source_ref"].endswith(f":{draft}") for line in lines)

    # and a second run, after one entry changed nothing but its note's timestamp, posts nothing more
    ours = Message.objects.filter(system=world.psa, canonical_id__in=alpha + beta)
    run_until(lambda: not ours.exclude(status=MessageStatus.DELIVERED).exists())
    world.unapprove(alpha[0])
    world.approve(alpha[0])
    sync_policy_run(policy_id=world.policy.pk)
    run_until(lambda: ours.count() == 6 and not ours.exclude(status=MessageStatus.DELIVERED).exists())
    assert len(world.erp_lines()) == 5
    assert TimeExpensePosting.objects.filter(kind=PostingKind.POST).count() == 5


def _finance_user(username: str = "finance"):
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user(username=username, password="x-finance-pass")
    from integrationhub.models import UserLegalEntityScope

    user.user_permissions.add(
        Permission.objects.get(codename="decide_exceptionitem"), Permission.objects.get(codename="fix_exceptionitem")
    )
    # Finance of every entity: items are decided within the decider's legal-entity scope.
    UserLegalEntityScope.objects.create(user=user, all_entities=True)
    return User.objects.get(pk=user.pk)


def test_an_entry_at_the_wrong_rate_waits_in_the_queue_until_finance_overrides_it_and_is_posted_once(request):
    # given a project whose PSA rate (175) is not the rate card's (160 for a consultant)
    from exception_queue.actions import item_action_perform, item_actions_available

    world = build_world(request, trigger=Trigger.EVENT)
    world.webhooks_on()
    from sandbox.services import record_update

    record_update(record=world.projects["alpha"], changes={"hourly_rate": 175.0})
    entry = world.time_entry(project="alpha", hours=2)

    # when the entry is approved
    world.approve(entry)
    run_until(lambda: ExceptionItem.objects.filter(category=ExceptionCategory.POLICY).exists())

    # then it waits in the queue with the rule, the expected and the actual rate, and nothing is in the ERP
    item = ExceptionItem.objects.get(category=ExceptionCategory.POLICY)
    assert item.flow == "time_expense_to_erp"
    assert item.external_id == entry
    [failure] = item.failed_rules
    assert failure["rule"] == "rate_matches_card"
    assert failure["field"] == "rate"
    assert failure["expected"] == "160.00"
    assert str(failure["actual"]).startswith("175")
    assert world.erp_lines() == []

    # when finance approves an override
    finance = _finance_user()
    assert "override" in [action.action for action in item_actions_available(item=item, user=finance)]
    item_action_perform(item=item, action="override", user=finance, reason="Negotiated rate agreed with the client")
    run_until(lambda: _posted(world) == 1)

    # then the entry is posted once, at its own rate, and the override is audited
    [line] = world.erp_lines()
    assert line.data["bill_rate"] == "175.00"
    item.refresh_from_db()
    assert item.state == ExceptionState.APPROVED
    assert item.decisions.get().action == "override"
    from integrationhub.models import AuditEvent

    assert AuditEvent.objects.filter(object_id=str(item.pk)).exists()

    # and replaying the delivered message posts nothing more
    from sync.services import message_replay

    message = item.message
    run_until(lambda: Message.objects.get(pk=message.pk).status == MessageStatus.DELIVERED)
    replays = Message.objects.get(pk=message.pk).replay_count
    message_replay(message=message)
    run_until(
        lambda: (
            Message.objects.get(pk=message.pk).replay_count == replays + 1
            and Message.objects.get(pk=message.pk).status == MessageStatus.DELIVERED
        )
    )
    assert len(world.erp_lines()) == 1


def test_a_withdrawn_entry_is_reversed_and_duplicate_webhooks_post_nothing_twice(request):
    # given an approved entry posted to the ERP through the PSA's webhook
    from sandbox.models import SandboxWebhookDelivery
    from sandbox.services import webhook_delivery_create

    world = build_world(request, trigger=Trigger.EVENT)
    world.webhooks_on()
    entry = world.time_entry(project="alpha", hours=4)
    world.approve(entry)
    run_until(lambda: _posted(world) == 1)

    # when the PSA sends the approval again (a duplicate webhook with a new id)
    from sandbox.models import SandboxRecord

    record = SandboxRecord.objects.get(system="psa", object_type="time_entries", external_id=entry)
    webhook_delivery_create(event_type="time_entry.approved", record=record)
    run_until(
        lambda: (
            Message.objects.filter(system=world.psa, canonical_id=entry).count() == 2
            and not Message.objects.filter(system=world.psa, canonical_id=entry)
            .exclude(status=MessageStatus.DELIVERED)
            .exists()
        )
    )

    # then nothing more is posted
    assert len(world.erp_lines()) == 1
    assert SandboxWebhookDelivery.objects.filter(event_type="time_entry.approved").count() == 2

    # when the approval is withdrawn in the PSA
    world.unapprove(entry)
    run_until(
        lambda: TimeExpensePosting.objects.filter(kind=PostingKind.REVERSAL, status=PostingStatus.POSTED).exists()
    )

    # then the ERP holds the line and its reversal, which cancel out
    lines = world.erp_lines()
    assert len(lines) == 2
    original, reversal = lines
    assert original.data["status"] == "reversed"
    assert reversal.data["reverses_id"] == int(original.external_id)
    assert sum(float(line.data["hours"]) for line in lines) == 0

    # and the withdrawal sent again reverses nothing more
    webhook_delivery_create(event_type="time_entry.unapproved", record=SandboxRecord.objects.get(pk=record.pk))
    run_until(
        lambda: (
            not Message.objects.filter(system=world.psa, canonical_id=entry)
            .exclude(status=MessageStatus.DELIVERED)
            .exists()
            and Message.objects.filter(system=world.psa, canonical_id=entry).count() == 4
        )
    )
    assert len(world.erp_lines()) == 2
    assert TimeExpensePosting.objects.filter(kind=PostingKind.REVERSAL).count() == 1


def test_an_entry_corrected_after_posting_is_adjusted_by_the_difference(request):
    # given a scheduled policy and an approved entry of 2 hours, posted
    world = build_world(request, trigger=Trigger.SCHEDULE)
    entry = world.time_entry(project="beta", hours=2)
    world.approve(entry)
    sync_policy_run(policy_id=world.policy.pk)
    run_until(lambda: _posted(world) == 1)

    # when the entry is unapproved, corrected to 5 hours and approved again before the next run
    world.unapprove(entry)
    world.edit(entry, hours=5.0)
    world.approve(entry)
    sync_policy_run(policy_id=world.policy.pk)
    run_until(lambda: _posted(world) == 2)

    # then the ERP got an adjustment line of the 3 hours' difference, and holds 5 hours for the entry
    lines = world.erp_lines(data__source_ref__endswith=f":{entry}")
    assert [line.data["hours"] for line in lines] == ["2.00", "3.00"]
    assert TimeExpensePosting.objects.filter(kind=PostingKind.ADJUSTMENT, hours=3).count() == 1

    # and a further run with no change posts nothing
    sync_policy_run(policy_id=world.policy.pk)
    run_until(
        lambda: (
            not Message.objects.filter(system=world.psa, canonical_id=entry)
            .exclude(status=MessageStatus.DELIVERED)
            .exists()
        )
    )
    assert len(world.erp_lines(data__source_ref__endswith=f":{entry}")) == 2


def test_an_expense_without_a_receipt_waits_and_one_with_a_receipt_is_posted_with_its_amount(request):
    # given an expense above the receipt threshold without a receipt, and one with a receipt
    world = build_world(request, trigger=Trigger.EVENT, receipt_above=25)
    world.webhooks_on()
    missing = world.expense(amount=180.0)
    with_receipt = world.expense(amount=85.5, receipt_url="https://files.example/r/85.pdf")

    # when both are approved
    world.approve(missing, object_type="expenses")
    world.approve(with_receipt, object_type="expenses")
    run_until(lambda: _posted(world) == 1 and ExceptionItem.objects.filter(category=ExceptionCategory.POLICY).exists())

    # then the one with the receipt is in the ERP with its amount, and the other waits for finance
    [line] = world.erp_lines()
    assert (line.data["kind"], line.data["amount"], line.data["hours"]) == ("expense", "85.50", "0.00")
    item = ExceptionItem.objects.get(category=ExceptionCategory.POLICY)
    assert item.external_id == missing
    assert [(rule["rule"], rule["field"], rule["expected"], rule["actual"]) for rule in item.failed_rules] == [
        ("receipt_required_above", "receipt_url", "a receipt", None)
    ]
    assert not TimeExpensePosting.objects.filter(entry_key__endswith=f":expense:{missing}").exists()


def test_lines_the_erp_stored_but_whose_answer_was_lost_are_not_posted_again(request):
    # given an ERP that stores every write but loses its answer (as if the worker died after the call)
    from sandbox.services import fault_profile_ensure, fault_profile_reset, fault_profile_save

    world = build_world(request, trigger=Trigger.EVENT)
    world.webhooks_on()
    profile = fault_profile_ensure(system="erp")
    profile.enabled = True
    profile.accept_then_fail_every_nth = 1
    fault_profile_save(profile=profile, reason="test: lost answers")
    entries = [world.time_entry(project="alpha", hours=1), world.time_entry(project="alpha", hours=2)]

    # when the entries are approved and the first batch call's answer is lost
    for entry in entries:
        world.approve(entry)
    run_until(
        lambda: (
            TimeExpensePosting.objects.filter(status=PostingStatus.PENDING, attempts__gte=1).count() == 2
            and len(world.erp_lines()) == 2
        )
    )
    assert TimeExpensePosting.objects.filter(status=PostingStatus.POSTED).count() == 0

    # and the ERP answers again
    fault_profile_reset(system="erp", reason="test: answers back")
    run_until(lambda: _posted(world) == 2)

    # then the retry found the stored lines by their keys: each entry is in the ERP once
    lines = world.erp_lines()
    assert len(lines) == 2
    assert sorted(line.data["hours"] for line in lines) == ["1.00", "2.00"]
    assert set(TimeExpensePosting.objects.values_list("external_id", flat=True)) == {line.external_id for line in lines}


def test_a_line_the_erp_refused_is_posted_once_when_finance_replays_it_after_the_fix(request):
    # given an ERP project that is closed in the ERP (the hub still has its cross-reference)
    from exception_queue.services import exception_item_replay
    from sandbox.services import record_update

    world = build_world(request, trigger=Trigger.EVENT)
    world.webhooks_on()
    record_update(record=world.erp_projects["beta"], changes={"status": "closed"})
    entry = world.time_entry(project="beta", hours=6)

    # when the entry is approved
    world.approve(entry)
    run_until(lambda: ExceptionItem.objects.filter(category=ExceptionCategory.TARGET_REJECTED).exists())

    # then the ERP's refusal waits for a person and nothing is in the ERP
    item = ExceptionItem.objects.get(category=ExceptionCategory.TARGET_REJECTED)
    assert item.flow == "time_expense_to_erp"
    assert world.erp_lines() == []
    assert TimeExpensePosting.objects.get().status == PostingStatus.FAILED

    # when the project is reopened in the ERP and finance replays the item
    record_update(record=world.erp_projects["beta"], changes={"status": "active"})
    exception_item_replay(item=item, user=_finance_user(), reason="Project reopened in the ERP")
    run_until(
        lambda: _posted(world) == 1 and item.message.__class__.objects.get(pk=item.message_id).status == "delivered"
    )

    # then the entry is in the ERP once, by the same line
    assert len(world.erp_lines()) == 1
    assert TimeExpensePosting.objects.count() == 1
