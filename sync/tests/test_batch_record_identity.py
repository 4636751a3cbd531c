"""The batch path of approved time against an ERP that does not de-duplicate: every entry is created once,
a corrected entry updates the line it created, and a batch whose answer was lost is looked up before it is
sent again."""

from __future__ import annotations

import datetime
from collections import Counter

import pytest

from connectors.tests.contract_fixtures import PsaHarness
from sync.batch import time_entries_batch_pull
from sync.choices import DeliveryStatus
from sync.models import CrossReference, Delivery
from sync.tests.appending_target import AppendingTarget
from sync.tests.batch_flow import TimeFlow
from sync.tests.test_batch import _approved_ids

pytestmark = pytest.mark.django_db(transaction=True)


def _to_appending_erp(flow: TimeFlow, target: AppendingTarget) -> None:
    settings = target.settings("time_entry", batch=True)
    flow.erp.connector_type = "generic_rest"
    flow.erp.base_url = target.url
    flow.erp.settings = settings
    flow.erp.save()


def _lines(target: AppendingTarget) -> Counter:
    """How many ERP lines carry each PSA entry id."""
    return Counter(str(record.get("source_ref")) for record in target.records.values())


def test_a_corrected_entry_updates_its_line_and_nothing_is_created_twice(
    time_psa: PsaHarness, time_flow: TimeFlow, appending_target: AppendingTarget
):
    # given an ERP that appends every line it is given, and the PSA's approved entries posted there
    from sandbox.services import record_update

    psa, flow = time_psa, time_flow
    _to_appending_erp(flow, appending_target)
    expected = _approved_ids(psa)
    first = time_entries_batch_pull(route_id=flow.route.pk)
    assert first.delivered == len(expected)
    assert set(_lines(appending_target)) == expected and set(_lines(appending_target).values()) == {1}
    # when two approved entries are corrected in the PSA and the batch path runs again
    corrected = [r for r in psa.records("time_entries").order_by("id") if r.external_id in expected][:2]
    # (changed after every other entry: the demo seed dates some entries ahead of the clock, and a PSA's change
    # is seen by its newer updated_at)
    newest = max(r.updated_at for r in psa.records("time_entries"))
    for record in corrected:
        record_update(record=record, changes={"hours": 1.25, "notes": "corrected"})
        type(record).objects.filter(pk=record.pk).update(updated_at=newest + datetime.timedelta(seconds=1))
    time_entries_batch_pull(route_id=flow.route.pk)
    # then each corrected entry's line was updated in place: still one line per entry, no new create
    lines = _lines(appending_target)
    assert set(lines) == expected and set(lines.values()) == {1}, "an entry was posted twice"
    assert (appending_target.creates, appending_target.updates) == (len(expected), 2)
    by_ref = {str(r.get("source_ref")): r for r in appending_target.records.values()}
    assert {str(by_ref[r.external_id]["hours"]) for r in corrected} == {"1.25"}
    assert CrossReference.objects.filter(system=flow.erp, entity="time_entry").count() == len(expected)


def test_a_batch_whose_answer_was_lost_is_looked_up_before_it_is_sent_again(
    time_psa: PsaHarness, time_flow: TimeFlow, appending_target: AppendingTarget
):
    # given an ERP that stores the first batch it is given but answers 503, as if the answer was lost
    psa, flow = time_psa, time_flow
    _to_appending_erp(flow, appending_target)
    expected = _approved_ids(psa)
    appending_target.fail_next({"accept_then_fail": True})
    first = time_entries_batch_pull(route_id=flow.route.pk, max_pages=1)
    assert first.retrying > 0 and appending_target.creates == first.retrying
    # when the batch path runs again and sends the waiting page once more
    Delivery.objects.filter(route=flow.route, status=DeliveryStatus.RETRYING).update(next_attempt_at=None)
    time_entries_batch_pull(route_id=flow.route.pk)
    # then the lines the lost answer left are found by key: each entry is in the ERP once
    lines = _lines(appending_target)
    assert set(lines) == expected and set(lines.values()) == {1}, "an entry was posted twice"
    assert appending_target.creates == len(expected)
    assert set(Delivery.objects.filter(route=flow.route).values_list("status", flat=True)) == {DeliveryStatus.DELIVERED}
