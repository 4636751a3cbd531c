"""A correction made within one second in the PSA ends in the ERP as exactly the corrected entry.

The PSA stamps a change to the second (Harvest's updated_at), so an entry unapproved, edited from 4.5 h to 3.5 h and
approved again within one second sends its withdrawal and its re-approval with the same version. Each scenario runs
on 20 fresh entries over the real pipeline: the sandbox PSA's signed webhooks to the hub's inbound endpoint (pytest's
live server), a real Celery worker, and an ERP that counts every line (the sandbox ERP, or a real Tryton).
"""

from __future__ import annotations

import datetime
import itertools
import time
import uuid
from collections import defaultdict
from decimal import Decimal

import pytest

from connectors.tests.tryton_fixtures import *  # noqa: F403
from exception_queue.models import ExceptionItem
from governance.choices import Trigger
from sandbox.models import SandboxRecord, SandboxSetting, SandboxWebhookDelivery
from sandbox.services import webhook_delivery_attempt
from sandbox.views.psa import render as psa_render
from sync.choices import MESSAGE_FINAL_STATUSES
from sync.models import Message
from sync.transport import connector_call
from workflows.choices import PostingKind, PostingStatus
from workflows.models import TimeExpensePosting
from workflows.tests.test_time_expense_tryton import _key_of, _timesheet_lines, _tryton_system
from workflows.tests.time_expense_fixtures import TODAY, TimeExpenseWorld, build_world, run_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("live_celery_worker_db"),
]

RUNS = 20
BEFORE, AFTER = 4.5, 3.5
SETTLE_SECONDS = 180

WITHDRAW, EDIT, REAPPROVE = "withdraw", "edit", "reapprove"
EVENTS = {WITHDRAW: "time_entry.unapproved", EDIT: "time_entry.updated", REAPPROVE: "time_entry.approved"}


def _second_begins() -> None:
    """Poll the clock until a second has just begun, so the three changes fall into one second of the PSA's
    updated_at (they take a few milliseconds)."""
    deadline = time.monotonic() + 5
    while time.time() % 1 > 0.2 and time.monotonic() < deadline:
        time.sleep(0.01)


def _entries_posted(world: TimeExpenseWorld, count: int) -> list[str]:
    # One entry a day of the current month (an open period), so the daily hours limit is not what is tested.
    first = TODAY.replace(day=1)
    entries = [
        world.time_entry(
            project=("alpha", "beta")[n % 2],
            hours=BEFORE,
            spent_date=(first + datetime.timedelta(days=n)).isoformat(),
        )
        for n in range(count)
    ]
    for entry in entries:
        world.approve(entry)
    run_until(
        lambda: (
            TimeExpensePosting.objects.filter(target_system=world.erp, status=PostingStatus.POSTED).count() == count
        ),
        timeout=SETTLE_SECONDS,
    )
    return entries


def _entry_key(world: TimeExpenseWorld, entry: str) -> str:
    return f"{world.psa.slug}:time_entry:{entry}"


def _settled(world: TimeExpenseWorld, entries: list[str], messages_each: int) -> bool:
    messages = Message.objects.filter(system=world.psa, canonical_id__in=entries)
    return (
        messages.count() == messages_each * len(entries)
        and not messages.exclude(status__in=MESSAGE_FINAL_STATUSES).exists()
        and not TimeExpensePosting.objects.filter(target_system=world.erp, status=PostingStatus.PENDING).exists()
    )


def _ledger_live(world: TimeExpenseWorld, entry: str) -> list[TimeExpensePosting]:
    """The entry's lines the ledger holds live in the ERP (not voided), every one of them posted."""
    rows = list(TimeExpensePosting.objects.filter(entry_key=_entry_key(world, entry), target_system=world.erp))
    assert all(row.status == PostingStatus.POSTED for row in rows), [(row.kind, row.status) for row in rows]
    voided = {row.reverses_id for row in rows if row.reverses_id}
    return [row for row in rows if row.kind != PostingKind.REVERSAL and row.pk not in voided]


def _sandbox_erp_live(world: TimeExpenseWorld) -> dict[str, list[SandboxRecord]]:
    """The sandbox ERP's lines of each entry that count: neither reversed nor a reversal."""
    lines: dict[str, list[SandboxRecord]] = defaultdict(list)
    for line in world.erp_lines():
        if line.data.get("status") != "reversed" and not line.data.get("reverses_id"):
            lines[str(line.data["source_ref"]).rsplit(":", 1)[-1]].append(line)
    return lines


def _assert_sandbox_erp_holds_the_corrections(world: TimeExpenseWorld, entries: list[str]) -> None:
    live = _sandbox_erp_live(world)
    all_lines: dict[str, Decimal] = defaultdict(Decimal)
    for line in world.erp_lines():
        all_lines[str(line.data["source_ref"]).rsplit(":", 1)[-1]] += Decimal(str(line.data["hours"]))
    wrong = {}
    for entry in entries:
        hours = sorted(Decimal(str(line.data["hours"])) for line in live[entry])
        # Either the correction came as a difference on the original line, or the original was reversed and the
        # corrected entry posted anew: the ERP holds 3.5 h of the entry either way, and nothing else.
        if hours not in ([Decimal("3.50")], [Decimal("-1.00"), Decimal("4.50")]) or all_lines[entry] != Decimal("3.50"):
            wrong[entry] = (hours, all_lines[entry])
        ledger = _ledger_live(world, entry)
        if {row.external_id for row in ledger} != {line.external_id for line in live[entry]}:
            wrong[entry] = ("ledger", [(row.kind, row.hours, row.external_id) for row in ledger])
    assert not wrong, f"{len(wrong)} of {len(entries)} corrections wrong in the ERP: {wrong}"


def _assert_finished_cleanly(world: TimeExpenseWorld, entries: list[str]) -> None:
    assert not ExceptionItem.objects.exists(), list(ExceptionItem.objects.values_list("category", "reason"))
    assert not Message.objects.filter(system=world.psa, canonical_id__in=entries, status="queued").exists()


def _tied(world: TimeExpenseWorld, entries: list[str]) -> int:
    """How many entries sent their withdrawal and their re-approval with the same version (updated_at)."""
    tied = 0
    for entry in entries:
        messages = Message.objects.filter(system=world.psa, canonical_id=entry).order_by("pk")
        withdrawals = {m.raw_payload["updated_at"] for m in messages.filter(event_type=EVENTS[WITHDRAW])}
        reapproval = messages.filter(event_type=EVENTS[REAPPROVE]).last()
        tied += reapproval is not None and withdrawals == {reapproval.raw_payload["updated_at"]}
    return tied


def test_a_correction_within_one_second_posts_exactly_the_corrected_entry_20_times(request):
    # given a PSA that sends its approval webhooks, and 20 entries of 4.5 h, each posted to the sandbox ERP
    world = build_world(request, trigger=Trigger.EVENT)
    world.webhooks_on()
    entries = _entries_posted(world, RUNS)

    # when each entry is unapproved, edited to 3.5 h and approved again within one second
    for entry in entries:
        _second_begins()
        world.unapprove(entry)
        world.edit(entry, hours=AFTER)
        world.approve(entry)
    run_until(lambda: _settled(world, entries, 3), timeout=SETTLE_SECONDS)

    # then the withdrawal and the re-approval carried the same version every time
    assert _tied(world, entries) == RUNS
    # and the ERP holds exactly 3.5 h of each entry, as the ledger says
    _assert_sandbox_erp_holds_the_corrections(world, entries)
    _assert_finished_cleanly(world, entries)


def test_an_entry_corrected_within_the_second_it_was_approved_posts_exactly_the_corrected_entry_20_times(request):
    # given a PSA that sends its approval webhooks, and 20 entries of 4.5 h
    world = build_world(request, trigger=Trigger.EVENT)
    world.webhooks_on()
    first = TODAY.replace(day=1)
    entries = [
        world.time_entry(
            project=("alpha", "beta")[n % 2], hours=BEFORE, spent_date=(first + datetime.timedelta(days=n)).isoformat()
        )
        for n in range(RUNS)
    ]

    # when each is approved, then unapproved, edited to 3.5 h and approved again, all within one second (the first
    # approval and the correction carry the same version)
    for entry in entries:
        _second_begins()
        world.approve(entry)
        world.unapprove(entry)
        world.edit(entry, hours=AFTER)
        world.approve(entry)
    run_until(lambda: _settled(world, entries, 3), timeout=SETTLE_SECONDS)

    # then the ERP holds exactly 3.5 h of each entry, as the ledger says
    assert _tied(world, entries) == RUNS
    live = _sandbox_erp_live(world)
    wrong = {}
    for entry in entries:
        hours = sorted(Decimal(str(line.data["hours"])) for line in live[entry])
        if sum(hours, Decimal(0)) != Decimal("3.50"):
            wrong[entry] = hours
        elif {row.external_id for row in _ledger_live(world, entry)} != {line.external_id for line in live[entry]}:
            wrong[entry] = ("ledger", hours)
    assert not wrong, f"{len(wrong)} of {RUNS} corrections wrong in the ERP: {wrong}"
    _assert_finished_cleanly(world, entries)


def _snapshot(world: TimeExpenseWorld, entry: str, event: str) -> SandboxWebhookDelivery:
    """The webhook the PSA would send now for `entry`: its record as the API renders it, signed when sent."""
    record = SandboxRecord.objects.get(system="psa", object_type="time_entries", external_id=entry)
    return SandboxWebhookDelivery.objects.create(
        system="psa",
        event_type=event,
        msg_id=f"msg_{uuid.uuid4().hex}",
        record_external_id=entry,
        url=f"{world.server_url}/api/v1/inbound/{world.psa.slug}/{event}/",
        payload={**psa_render(record), "deleted": record.deleted},
    )


def _correct_and_send_in_order(world: TimeExpenseWorld, entries: list[str], order: tuple[str, ...]) -> None:
    """Withdraw, edit and re-approve each entry within one second, then send the three events in `order`."""
    SandboxSetting.objects.filter(system="psa").update(webhook_url="")  # the test sends them, in its order
    for entry in entries:
        _second_begins()
        world.unapprove(entry)
        events = {WITHDRAW: _snapshot(world, entry, EVENTS[WITHDRAW])}
        world.edit(entry, hours=AFTER)
        events[EDIT] = _snapshot(world, entry, EVENTS[EDIT])
        world.approve(entry)
        events[REAPPROVE] = _snapshot(world, entry, EVENTS[REAPPROVE])
        for name in order:
            outcome = webhook_delivery_attempt(delivery_id=events[name].pk, final=True)
            assert outcome.delivered, outcome.error


ORDERS = list(itertools.permutations((WITHDRAW, EDIT, REAPPROVE)))


@pytest.mark.parametrize("order", ORDERS, ids=["-".join(order) for order in ORDERS])
def test_a_correction_within_one_second_whose_events_arrive_in_any_order_posts_the_corrected_entry(request, order):
    # given 20 entries of 4.5 h, each posted to the sandbox ERP through the PSA's webhook
    world = build_world(request, trigger=Trigger.EVENT)
    world.webhooks_on()
    entries = _entries_posted(world, RUNS)

    # when each is withdrawn, edited to 3.5 h and approved again within one second, and the three events reach
    # the hub in this order
    _correct_and_send_in_order(world, entries, order)
    run_until(lambda: _settled(world, entries, 4), timeout=SETTLE_SECONDS)

    # then the ERP holds exactly 3.5 h of each entry, as the ledger says
    assert _tied(world, entries) == RUNS
    _assert_sandbox_erp_holds_the_corrections(world, entries)
    _assert_finished_cleanly(world, entries)


# --- the real Tryton: no negative lines, so a decrease voids the line (deletes it) and posts the entry again ---


def _tryton_world(request, tryton_server) -> tuple[TimeExpenseWorld, dict[str, str]]:
    tryton = _tryton_system(tryton_server)
    client = connector_call(
        tryton,
        "upsert",
        lambda connector: connector.upsert("client", {"name": f"Acme {uuid.uuid4().hex[:6]}"}, uuid.uuid4().hex),
    )
    projects: dict[str, str] = {}

    def make_project(key: str) -> str:
        payload = {"name": f"Project {key} {uuid.uuid4().hex[:6]}", "client_id": client.external_id}
        project = connector_call(
            tryton, "upsert", lambda connector: connector.upsert("project", payload, f"p-{uuid.uuid4().hex}")
        )
        projects[key] = project.external_id
        return project.external_id

    world = build_world(request, trigger=Trigger.EVENT, erp=tryton, make_erp_project=make_project)
    world.webhooks_on()
    return world, projects


def _assert_tryton_holds_the_corrections(world: TimeExpenseWorld, projects: dict[str, str], entries: list[str]):
    keys = dict(TimeExpensePosting.objects.filter(target_system=world.erp).values_list("idempotency_key", "entry_key"))
    lines: dict[str, list[float]] = defaultdict(list)
    for project in ("alpha", "beta"):
        for line in connector_call(world.erp, "search_read", lambda c, p=projects[project]: _timesheet_lines(c, p)):
            key = _key_of(str(line["description"]))
            lines[keys[key].rsplit(":", 1)[-1]].append(line["duration"].total_seconds() / 3600)
    wrong = {entry: lines[entry] for entry in entries if lines[entry] != [AFTER]}
    assert not wrong, f"{len(wrong)} of {len(entries)} corrections wrong in Tryton: {wrong}"
    for entry in entries:
        [live] = _ledger_live(world, entry)
        assert live.hours == Decimal("3.50")


@pytest.mark.tryton
def test_a_correction_within_one_second_leaves_exactly_the_corrected_line_in_tryton_20_times(request, tryton_server):
    # given a real Tryton and 20 entries of 4.5 h, each posted through the PSA's webhook
    world, projects = _tryton_world(request, tryton_server)
    entries = _entries_posted(world, RUNS)

    # when each entry is unapproved, edited to 3.5 h and approved again within one second
    for entry in entries:
        _second_begins()
        world.unapprove(entry)
        world.edit(entry, hours=AFTER)
        world.approve(entry)
    run_until(lambda: _settled(world, entries, 3), timeout=SETTLE_SECONDS)

    # then Tryton holds one line of 3.5 h for each entry
    assert _tied(world, entries) == RUNS
    _assert_tryton_holds_the_corrections(world, projects, entries)
    _assert_finished_cleanly(world, entries)


@pytest.mark.tryton
@pytest.mark.parametrize("order", [(REAPPROVE, WITHDRAW, EDIT), (EDIT, WITHDRAW, REAPPROVE)], ids="-".join)
def test_a_correction_within_one_second_out_of_order_leaves_exactly_the_corrected_line_in_tryton(
    request, tryton_server, order
):
    # given a real Tryton and 20 entries of 4.5 h, each posted through the PSA's webhook
    world, projects = _tryton_world(request, tryton_server)
    entries = _entries_posted(world, RUNS)

    # when each is withdrawn, edited and approved again within one second, its events reaching the hub in this order
    _correct_and_send_in_order(world, entries, order)
    run_until(lambda: _settled(world, entries, 4), timeout=SETTLE_SECONDS)

    # then Tryton holds one line of 3.5 h for each entry
    assert _tied(world, entries) == RUNS
    _assert_tryton_holds_the_corrections(world, projects, entries)
    _assert_finished_cleanly(world, entries)
