"""Scheduled pulls: page by page from the persisted cursor, each page stored with its cursor move.

The PSA is the sandbox Harvest served by `live_server` (real HTTP, the demo credentials); the crash is a
store step that raises on the third page, as a killed worker would stop there.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
from django_celery_beat.models import PeriodicTask

from connectors.choices import SystemState
from connectors.tests.contract_fixtures import PsaHarness, sandbox_harness
from sync import polling
from sync.choices import MessageStatus, PollOutcome
from sync.models import Message, PollCursor, PollSchedule
from sync.services import poll_run, poll_schedule_save, pull_idempotency_key

PAGE_SIZE = 4


@pytest.fixture
def psa(request) -> PsaHarness:
    harness = sandbox_harness("harvest_psa", request)
    assert isinstance(harness, PsaHarness)
    harness.seed(PAGE_SIZE * 3 + 1)
    return harness


def _system(psa: PsaHarness):
    system = psa.make_system(page_size=PAGE_SIZE)
    system.rate_limit_per_second = Decimal("100")
    system.save(update_fields=["rate_limit_per_second"])
    return system


def _pulled_ids(system) -> list[str]:
    return [
        str(payload["id"]) for payload in Message.objects.filter(system=system).values_list("raw_payload", flat=True)
    ]


@pytest.mark.django_db(transaction=True)
def test_a_pull_resumed_after_a_crash_has_no_gap_and_no_duplicate(psa, monkeypatch):
    # given a PSA with more than three pages of time entries, and a store step that dies on the third page
    system = _system(psa)
    expected = psa.all_ids()
    assert len(expected) > PAGE_SIZE * 3
    real_store = polling.poll_page_store
    calls = {"n": 0}

    def crashing_store(**kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("worker killed while storing page 3")
        return real_store(**kwargs)

    monkeypatch.setattr(polling, "poll_page_store", crashing_store)
    # when the pull runs and crashes
    with pytest.raises(RuntimeError):
        poll_run(system=system, entity="time_entry")
    # then exactly the two stored pages are there, and the cursor points after page 2
    assert Message.objects.filter(system=system).count() == PAGE_SIZE * 2
    assert json.loads(PollCursor.objects.get(system=system, entity="time_entry").cursor)["page"] == 3
    # when the next run resumes with a healthy store
    monkeypatch.setattr(polling, "poll_page_store", real_store)
    result = poll_run(system=system, entity="time_entry")
    # then every record is stored exactly once, none missing, as inbound messages waiting for the dispatcher
    ids = _pulled_ids(system)
    assert result.outcome == PollOutcome.COMPLETE
    assert len(ids) == len(set(ids)), "a record was stored twice"
    assert set(ids) == expected, "a record is missing"
    messages = Message.objects.filter(system=system)
    assert set(messages.values_list("status", flat=True)) == {MessageStatus.RECEIVED}
    assert set(messages.values_list("event_type", flat=True)) == {"time_entry.changed"}
    assert not messages.filter(dispatched_at__isnull=False).exists()


@pytest.mark.django_db(transaction=True)
def test_an_unchanged_record_pulled_again_is_not_stored_twice_but_a_changed_one_is(psa):
    # given a completed pull
    system = _system(psa)
    first = poll_run(system=system, entity="time_entry")
    count = Message.objects.filter(system=system).count()
    # when one entry changes at the source and the next pass runs (Harvest's updated_since is inclusive,
    # so the newest unchanged entries come again too)
    from sandbox.services import record_update

    time.sleep(1.1)  # Harvest's updated_at has whole seconds: the change must land in a later second
    entry = psa.records("time_entries").order_by("-id").first()
    record_update(record=entry, changes={"notes": "changed"})
    second = poll_run(system=system, entity="time_entry")
    # then only the changed entry is stored again, as a new version
    assert first.stored == count
    assert second.stored == 1
    assert Message.objects.filter(system=system).count() == count + 1
    assert Message.objects.filter(system=system, raw_payload__id=str(entry.external_id)).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_page_limit_stops_the_run_and_the_next_run_continues(psa):
    # given a PSA with more than three pages
    system = _system(psa)
    # when a run is limited to one page, twice
    first = poll_run(system=system, entity="time_entry", max_pages=1)
    second = poll_run(system=system, entity="time_entry", max_pages=1)
    # then each stored one page, the second the next one
    assert (first.outcome, first.stored) == (PollOutcome.PAGE_LIMIT, PAGE_SIZE)
    assert (second.outcome, second.stored) == (PollOutcome.PAGE_LIMIT, PAGE_SIZE)
    assert len(set(_pulled_ids(system))) == PAGE_SIZE * 2


@pytest.mark.django_db(transaction=True)
def test_a_failing_source_leaves_the_cursor_where_it_was(psa):
    # given a pull that stored one page
    system = _system(psa)
    poll_run(system=system, entity="time_entry", max_pages=1)
    cursor = PollCursor.objects.get(system=system, entity="time_entry").cursor
    # when the PSA answers 500 to the next page
    psa.control("PUT", error_every_nth=1, error_status=500)
    try:
        result = poll_run(system=system, entity="time_entry")
    finally:
        psa.control("DELETE")
    # then the run stops with the error recorded, nothing new is stored and the cursor did not move
    row = PollCursor.objects.get(system=system, entity="time_entry")
    assert result.outcome == PollOutcome.ERROR
    assert row.cursor == cursor
    assert row.last_outcome == PollOutcome.ERROR and "500" in row.last_error
    assert Message.objects.filter(system=system).count() == PAGE_SIZE


@pytest.mark.django_db
def test_a_paused_system_is_not_polled(make_flow):
    # given a paused source system
    flow = make_flow()
    flow.source.state = SystemState.PAUSED
    flow.source.save()
    # when its poller runs
    result = poll_run(system=flow.source, entity="client")
    # then it is skipped and nothing is stored
    assert result.outcome == PollOutcome.SKIPPED
    assert not Message.objects.exists()


def test_the_pull_key_names_entity_id_and_version_and_falls_back_to_the_content():
    # given two versions of a record, and a record without a version field
    old = {"id": "7", "updated_at": "2026-01-01T00:00:00Z", "hours": 1}
    new = {**old, "updated_at": "2026-01-02T00:00:00Z"}
    bare = {"id": "8", "hours": 1}
    # when their keys are made
    # then the version is part of the key, and a bare record is keyed by its content
    assert pull_idempotency_key(entity="time_entry", record=old) == "pull:time_entry:7:2026-01-01T00:00:00Z"
    assert pull_idempotency_key(entity="time_entry", record=new) != pull_idempotency_key(
        entity="time_entry", record=old
    )
    assert pull_idempotency_key(entity="time_entry", record=bare) == pull_idempotency_key(
        entity="time_entry", record=dict(bare)
    )
    assert pull_idempotency_key(entity="time_entry", record=bare) != pull_idempotency_key(
        entity="time_entry", record={**bare, "hours": 2}
    )


@pytest.mark.django_db
def test_a_poll_schedule_gets_a_beat_entry_on_the_housekeeping_queue(make_flow):
    # given a source system
    flow = make_flow()
    # when a schedule is saved, then switched off
    schedule = poll_schedule_save(schedule=PollSchedule(system=flow.source, entity="client", every_seconds=60))
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    # then beat runs the poll task with the schedule's id every 60 s on housekeeping
    assert (task.task, json.loads(task.args), task.queue) == ("sync.poll_run_task", [schedule.pk], "housekeeping")
    assert (task.interval.every, task.interval.period, task.enabled) == (60, "seconds", True)
    schedule.active = False
    poll_schedule_save(schedule=schedule)
    assert PeriodicTask.objects.get(pk=task.pk).enabled is False
