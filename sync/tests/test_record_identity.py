"""Record identity against a target that does not de-duplicate: the first delivery of a record creates it,
every later one updates the record the cross-reference names, a lost answer is resolved by a look-up, a
target that cannot update gets an exception item instead of a second record, and a record deleted at the
target is re-created or skipped only by a person's decision."""

from __future__ import annotations

import datetime

import pytest

from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import ExceptionItem
from sync.choices import AttemptOutcome, DeliveryStatus, MessageStatus
from sync.models import CrossReference, Delivery, DeliveryAttempt, Message
from sync.services import deliveries_send, delivery_send, message_process
from sync.tests.appending_target import AppendingTarget
from sync.tests.conftest import client_record, signed_post

pytestmark = pytest.mark.django_db

RECORDS = 100
BASE = datetime.datetime(2026, 11, 26, 10, 0, tzinfo=datetime.UTC)


def _at(minutes: float) -> str:
    return (BASE + datetime.timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _flow(make_flow, target: AppendingTarget, **settings):
    flow = make_flow(target.url)
    flow.target_system.connector_type = "generic_rest"
    flow.target_system.settings = target.settings(**settings)
    flow.target_system.save()
    return flow


def _queue(client, flow, record: dict) -> int:
    """Ingest and process one record; its delivery's id."""
    response = signed_post(client, flow, record)
    assert response.status_code == 202, response.content
    message_id = response.json()["message_id"]
    message_process(message_id=message_id)
    return Delivery.objects.get(message_id=message_id).pk


# Each record: created (v1), then updated newer-then-older twice. The older ones are stale and skipped; the
# newest (v3) is what the target must hold.
VERSIONS = [("v1", 0), ("v2", 10), ("v1b", 5), ("v3", 20), ("v2b", 15)]


def _assert_newest_once(target: AppendingTarget, flow, prefix: str) -> None:
    stored = target.by_canonical_id()
    assert len(stored) == RECORDS
    assert all(len(records) == 1 for records in stored.values()), "a record was created twice"
    assert {records[0]["name"] for records in stored.values()} == {f"{prefix} v3"}
    assert target.creates == RECORDS
    assert CrossReference.objects.filter(system=flow.target_system).count() == RECORDS


def test_updates_of_delivered_records_update_them_in_place_one_by_one(client, make_flow, appending_target):
    # given a target that appends every create, and 100 clients created there one delivery at a time
    flow = _flow(make_flow, appending_target)
    for name, minutes in VERSIONS[:1]:
        for n in range(RECORDS):
            delivery_send(delivery_id=_queue(client, flow, client_record(f"R-{n}", f"Acme {name}", _at(minutes))))
    assert appending_target.creates == RECORDS
    # when each is updated newer-then-older twice, each delivery sent on its own
    for name, minutes in VERSIONS[1:]:
        for n in range(RECORDS):
            delivery_send(delivery_id=_queue(client, flow, client_record(f"R-{n}", f"Acme {name}", _at(minutes))))
    # then the target holds each record once, at its newest version, changed by updates only
    _assert_newest_once(appending_target, flow, "Acme")
    assert appending_target.updates == 2 * RECORDS
    operations = DeliveryAttempt.objects.filter(delivery__target_system=flow.target_system).values_list(
        "request_summary__operation", flat=True
    )
    assert sorted(set(operations)) == ["update", "upsert"]
    assert Delivery.objects.filter(status=DeliveryStatus.SKIPPED_STALE).count() == 2 * RECORDS


def test_updates_sent_in_delivery_batches_update_in_place_and_skip_the_older(client, make_flow, appending_target):
    # given a target with a batch endpoint that appends every item it is given
    flow = _flow(make_flow, appending_target, batch=True)
    # when 100 clients are created in one delivery batch, then updated newer-then-older twice in batches
    for name, minutes in VERSIONS[:1]:
        ids = [_queue(client, flow, client_record(f"R-{n}", f"Acme {name}", _at(minutes))) for n in range(RECORDS)]
        deliveries_send(delivery_ids=ids)
    for round_versions in (VERSIONS[1:3], VERSIONS[3:5]):
        ids = [
            _queue(client, flow, client_record(f"R-{n}", f"Acme {name}", _at(minutes)))
            for name, minutes in round_versions
            for n in range(RECORDS)
        ]
        deliveries_send(delivery_ids=ids)
    # then each record exists once at its newest version; the updates went as updates
    _assert_newest_once(appending_target, flow, "Acme")
    assert appending_target.updates == 2 * RECORDS
    assert not Delivery.objects.filter(status__in=[DeliveryStatus.FAILED, DeliveryStatus.DEAD]).exists()


def test_a_create_whose_answer_was_lost_is_found_and_then_updated_not_created_again(
    client, make_flow, appending_target
):
    # given a target that stores the first create and then fails its answer (the hub sees a 503)
    flow = _flow(make_flow, appending_target)
    appending_target.fail_next({"accept_then_fail": True})
    first = _queue(client, flow, client_record("L-1", "Lost v1", _at(0)))
    assert delivery_send(delivery_id=first) == DeliveryStatus.RETRYING
    # when the retry goes out, and then a newer version of the record
    assert delivery_send(delivery_id=first) == DeliveryStatus.DELIVERED
    delivery_send(delivery_id=_queue(client, flow, client_record("L-1", "Lost v2", _at(5))))
    # then the retry found the record by its key, and the newer version updated it: one record, newest
    assert appending_target.creates == 1
    (records,) = appending_target.by_canonical_id().values()
    assert [record["name"] for record in records] == ["Lost v2"]
    outcomes = list(
        DeliveryAttempt.objects.filter(delivery_id=first).order_by("number").values_list("outcome", flat=True)
    )
    assert outcomes == [AttemptOutcome.RETRYABLE_ERROR, AttemptOutcome.ALREADY_APPLIED]


def test_a_record_whose_create_landed_but_went_dead_is_found_by_the_next_delivery(client, make_flow, appending_target):
    # given a flow that gives up after one attempt, and a create that landed but answered 503
    flow = make_flow(appending_target.url, max_attempts=1)
    flow.target_system.connector_type = "generic_rest"
    flow.target_system.settings = appending_target.settings()
    flow.target_system.save()
    appending_target.fail_next({"accept_then_fail": True})
    first = _queue(client, flow, client_record("D-1", "Dead v1", _at(0)))
    assert delivery_send(delivery_id=first) == DeliveryStatus.DEAD
    assert not CrossReference.objects.filter(system=flow.target_system).exists()
    # when a newer version of the record is delivered
    assert delivery_send(delivery_id=_queue(client, flow, client_record("D-1", "Dead v2", _at(5)))) == "delivered"
    # then the record the dead delivery left is found by that delivery's key and updated: still one record
    assert appending_target.creates == 1
    (records,) = appending_target.by_canonical_id().values()
    assert [record["name"] for record in records] == ["Dead v2"]


def test_a_target_that_cannot_update_gets_an_exception_item_not_a_second_record(client, make_flow, appending_target):
    # given a target whose client endpoint cannot update, and a client created there
    flow = _flow(make_flow, appending_target, update_method="none")
    delivery_send(delivery_id=_queue(client, flow, client_record("N-1", "Fixed v1", _at(0))))
    # when a newer version of it is delivered
    second = _queue(client, flow, client_record("N-1", "Fixed v2", _at(5)))
    assert delivery_send(delivery_id=second) == DeliveryStatus.FAILED
    # then nothing was created or changed at the target, and a person is asked to correct it there
    assert (appending_target.creates, appending_target.updates) == (1, 0)
    item = ExceptionItem.objects.get(delivery_id=second)
    assert item.category == ExceptionCategory.TARGET_REJECTED
    assert "cannot change" in item.reason and "did not create a second one" in item.reason


def test_a_record_deleted_at_the_target_is_re_created_or_skipped_only_by_a_person(
    client, make_flow, appending_target, make_role_user
):
    # given two clients delivered, then deleted at the target by someone there
    from exception_queue.actions import item_action_perform, item_actions_available

    flow = _flow(make_flow, appending_target)
    for name in ("G-1", "G-2"):
        delivery_send(delivery_id=_queue(client, flow, client_record(name, f"{name} v1", _at(0))))
    appending_target.records.clear()
    # when newer versions of both are delivered
    items = []
    for name in ("G-1", "G-2"):
        delivery_id = _queue(client, flow, client_record(name, f"{name} v2", _at(5)))
        assert delivery_send(delivery_id=delivery_id) == DeliveryStatus.FAILED
        items.append(ExceptionItem.objects.get(delivery_id=delivery_id))
    # then nothing was re-created silently: each is an item offering re-create and skip
    assert appending_target.creates == 2 and not appending_target.records
    finance = make_role_user("finance_approver")
    assert all(item.category == ExceptionCategory.TARGET_RECORD_GONE for item in items)
    offered = {action.action for action in item_actions_available(item=items[0], user=finance)}
    assert {DecisionAction.RECREATE, DecisionAction.SKIP} <= offered and DecisionAction.REPLAY not in offered
    # when finance re-creates the first and skips the second
    item_action_perform(item=items[0], action=DecisionAction.RECREATE, user=finance, reason="Deleted by mistake")
    message_process(message_id=items[0].message_id)
    delivery_send(delivery_id=items[0].delivery_id)
    item_action_perform(item=items[1], action=DecisionAction.SKIP, user=finance, reason="Closed account")
    # then the first exists again (once, newest version, linked), the second stays gone
    assert [r["name"] for r in appending_target.records.values()] == ["G-1 v2"]
    new_id = str(next(iter(appending_target.records)))
    assert CrossReference.objects.get(system=flow.target_system, canonical_id="G-1").external_id == new_id
    assert Message.objects.get(pk=items[1].message_id).status == MessageStatus.FAILED
    items[1].refresh_from_db()
    assert items[1].state == ExceptionState.RESOLVED


def _run_path(client, make_flow, target: AppendingTarget, *, batched: bool) -> dict:
    """The same records through one path: created, updated newer-then-older, one refused by the target (422)
    and one whose create fails retryably (503); what the target, the attempts, the items and messages hold."""
    flow = _flow(make_flow, target)
    rounds = [[(f"E-{n}", f"E v1 {n}", _at(0)) for n in range(6)], [(f"E-{n}", f"E v2 {n}", _at(10)) for n in range(3)]]
    rounds.append([(f"E-{n}", f"E old {n}", _at(5)) for n in range(3)])
    for number, records in enumerate(rounds):
        if number == 0:
            # the fifth create is refused, the sixth fails retryably, in the order the path sends them
            target.fail_next(*([{}] * 4), {"status": 422}, {"status": 503})
        ids = [_queue(client, flow, client_record(cid, name, at)) for cid, name, at in records]
        if batched:
            deliveries_send(delivery_ids=ids)
        else:
            for delivery_id in ids:
                delivery_send(delivery_id=delivery_id)
    messages = Message.objects.filter(system=flow.source).order_by("pk")
    attempts = DeliveryAttempt.objects.filter(delivery__message__system=flow.source).order_by("delivery_id", "number")
    return {
        "target": sorted((r["id"], r["name"]) for r in target.records.values()),
        "counts": (target.creates, target.updates),
        "attempts": [(a.outcome, a.request_summary["operation"], a.status_code) for a in attempts],
        "items": sorted(
            ExceptionItem.objects.filter(message__system=flow.source).values_list("category", "message__canonical_id")
        ),
        "messages": [(m.canonical_id, m.status) for m in messages],
    }


def test_the_per_record_and_the_batch_paths_end_in_the_same_state(client, make_flow):
    # given two targets that append every create, and the same records for each
    from sync.tests.appending_target import appending_target_running

    with appending_target_running() as one, appending_target_running() as other:
        # when one receives them delivery by delivery and the other in delivery batches
        per_record = _run_path(client, make_flow, one, batched=False)
        batched = _run_path(client, make_flow, other, batched=True)
    # then targets, attempts, exception items and message states are the same
    assert per_record == batched
    assert per_record["counts"] == (4, 3)  # E-4 refused, E-5 waiting for its retry
    assert ("target_rejected", "E-4") in per_record["items"]
