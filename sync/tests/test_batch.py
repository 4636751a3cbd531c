"""The batch path of approved time: the sandbox PSA and ERP over real HTTP (live_server), pages of four
entries, and the ERP posted in batches; the last test runs it in a real Celery worker."""

from __future__ import annotations

from collections import Counter

import pytest

from connectors.tests.contract_fixtures import PsaHarness
from exception_queue.choices import ExceptionCategory
from exception_queue.models import ExceptionItem
from governance.choices import Flow
from sandbox.models import SandboxRecord
from sync.batch import time_entries_batch_pull
from sync.choices import AttemptOutcome, DeliveryStatus, MessageStatus, PollOutcome
from sync.models import CrossReference, Delivery, DeliveryAttempt, Message, PollCursor
from sync.tests.batch_flow import TimeFlow
from sync.tests.conftest import TIME_PAGE_SIZE

PAGE_SIZE = TIME_PAGE_SIZE


@pytest.fixture
def psa(time_psa: PsaHarness) -> PsaHarness:
    return time_psa


@pytest.fixture
def flow(time_flow: TimeFlow) -> TimeFlow:
    return time_flow


def _erp_entries() -> Counter:
    """How many ERP time entries carry each PSA entry id (source_ref)."""
    rows = SandboxRecord.objects.filter(system="erp", object_type="time-entries", deleted=False)
    return Counter(str(data.get("source_ref")) for data in rows.values_list("data", flat=True))


def _approved_ids(psa: PsaHarness) -> set[str]:
    return {r.external_id for r in psa.records("time_entries") if r.data.get("approval_status") == "approved"}


def _erp_control(psa: PsaHarness, method: str, system: str = "erp", **faults) -> None:
    import httpx

    from connectors.tests.contract_fixtures import CONTROL_TOKEN

    response = httpx.request(
        method,
        f"{psa.server_url}/sandbox/{system}/_faults",
        json={"enabled": True, **faults} if method == "PUT" else None,
        headers={"X-Sandbox-Control-Token": CONTROL_TOKEN},
        timeout=10,
    )
    assert response.status_code == 200, response.text


@pytest.mark.django_db(transaction=True)
def test_the_batch_path_posts_each_approved_entry_once_and_a_rerun_posts_nothing(psa, flow):
    # given the PSA's approved time entries (several pages) and an ERP that has none of them
    expected = _approved_ids(psa)
    assert len(expected) > PAGE_SIZE * 2
    assert not _erp_entries()
    # when the batch path runs
    result = time_entries_batch_pull(route_id=flow.route.pk)
    # then every entry reached the ERP exactly once, in batches, with one idempotency key each
    posted = _erp_entries()
    assert result.outcome == PollOutcome.COMPLETE
    assert set(posted) == expected and set(posted.values()) == {1}
    assert result.delivered == len(expected) and result.failed == 0
    messages = Message.objects.filter(system=flow.psa)
    assert messages.count() == len(expected)
    assert set(messages.values_list("status", "flow")) == {(MessageStatus.DELIVERED, Flow.TIME_EXPENSE_TO_ERP)}
    assert not messages.filter(source_timestamp__isnull=True).exists(), "the KPIs need the approval time"
    deliveries = Delivery.objects.filter(route=flow.route)
    assert set(deliveries.values_list("status", flat=True)) == {DeliveryStatus.DELIVERED}
    assert len(set(deliveries.values_list("idempotency_key", flat=True))) == len(expected)
    attempts = DeliveryAttempt.objects.filter(delivery__route=flow.route)
    assert attempts.count() == len(expected)
    assert {a["batch_size"] for a in attempts.values_list("request_summary", flat=True)} <= set(range(1, PAGE_SIZE + 1))
    assert CrossReference.objects.filter(system=flow.erp, entity="time_entry").count() == len(expected)
    # when the same pages are read again (the cursor back at the start) and the batch path runs again
    PollCursor.objects.filter(system=flow.psa, entity="time_entry").update(cursor="")
    again = time_entries_batch_pull(route_id=flow.route.pk)
    # then nothing is stored or posted a second time
    assert (again.stored, again.duplicates, again.delivered, again.already_applied) == (0, len(expected), 0, 0)
    assert _erp_entries() == posted
    assert DeliveryAttempt.objects.filter(delivery__route=flow.route).count() == len(expected)


@pytest.mark.django_db(transaction=True)
def test_a_failing_rule_sends_that_entry_to_the_queue_and_the_rest_of_its_page_is_delivered(psa, flow):
    # given one approved entry with a cost code the policy does not allow
    from sandbox.services import record_update

    expected = _approved_ids(psa)
    bad = psa.records("time_entries").order_by("id")[1]
    record_update(record=bad, changes={"cost_code": "PERSONAL"})
    # when the batch path runs
    result = time_entries_batch_pull(route_id=flow.route.pk)
    # then that entry waits in the exception queue with its reason, and was NOT posted
    message = Message.objects.get(system=flow.psa, raw_payload__id=str(bad.external_id))
    assert message.status == MessageStatus.FAILED
    item = ExceptionItem.objects.get(message=message)
    assert item.category == ExceptionCategory.POLICY
    assert item.flow == Flow.TIME_EXPENSE_TO_ERP
    assert [rule["rule"] for rule in item.failed_rules] == ["cost_code_allowed"]
    assert "PERSONAL" in item.reason
    assert not Delivery.objects.filter(message=message).exists()
    posted = _erp_entries()
    assert bad.external_id not in posted
    # and the other entries of its page, and of every other page, were delivered once each
    assert set(posted) == expected - {bad.external_id} and set(posted.values()) == {1}
    assert (result.failed, result.delivered) == (1, len(expected) - 1)
    assert ExceptionItem.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_next_page_is_read_and_stored_while_the_erp_answers_the_last_batch(psa, flow, monkeypatch):
    import time

    from sync import batch

    calls: list[tuple[float, float]] = []
    stores: list[float] = []
    send, store = batch._send, batch.page_store

    def timed_send(*args, **kwargs):
        started = time.monotonic()
        try:
            return send(*args, **kwargs)
        finally:
            calls.append((started, time.monotonic()))

    def timed_store(**kwargs):
        stores.append(time.monotonic())
        return store(**kwargs)

    monkeypatch.setattr(batch, "_send", timed_send)
    monkeypatch.setattr(batch, "page_store", timed_store)
    # given an ERP that takes 300 ms to answer each batch
    expected = _approved_ids(psa)
    _erp_control(psa, "PUT", latency_ms=300)
    try:
        # when the batch path runs over several pages
        result = time_entries_batch_pull(route_id=flow.route.pk)
    finally:
        _erp_control(psa, "DELETE")
    # then each batch's ERP call was still running when the next page was stored
    assert len(calls) >= 2
    overlapped = [stored for stored in stores if any(start < stored < end for start, end in calls)]
    assert len(overlapped) >= len(calls) - 1, (calls, stores)
    # and every entry was posted once and recorded, the last batch's too
    posted = _erp_entries()
    assert set(posted) == expected and set(posted.values()) == {1}
    assert result.outcome == PollOutcome.COMPLETE and result.delivered == len(expected)
    deliveries = Delivery.objects.filter(route=flow.route)
    assert set(deliveries.values_list("status", flat=True)) == {DeliveryStatus.DELIVERED}
    # with each attempt's duration the ERP's answer time, not the time until the caller recorded it
    durations = DeliveryAttempt.objects.filter(delivery__route=flow.route).values_list("duration_ms", flat=True)
    longest_call_ms = max(end - start for start, end in calls) * 1000
    assert all(300 <= duration <= longest_call_ms + 5 for duration in durations), (list(durations), longest_call_ms)


@pytest.mark.django_db(transaction=True)
def test_a_run_stopped_by_the_psa_still_records_the_batch_it_had_in_flight(psa, flow):
    # given a PSA that fails every second request (the page read ahead) and an ERP slow to answer
    expected = _approved_ids(psa)
    _erp_control(psa, "PUT", latency_ms=200)
    _erp_control(psa, "PUT", system="psa", error_every_nth=2, error_status=503)
    try:
        # when the batch path runs
        first = time_entries_batch_pull(route_id=flow.route.pk)
    finally:
        _erp_control(psa, "DELETE")
        _erp_control(psa, "DELETE", system="psa")
    # then it stops with the PSA's error, and the first page's batch, in flight then, is recorded delivered
    assert first.outcome == PollOutcome.ERROR and "503" in first.error
    assert first.pages == 1 and first.delivered == first.stored > 0
    deliveries = Delivery.objects.filter(route=flow.route)
    assert set(deliveries.values_list("status", flat=True)) == {DeliveryStatus.DELIVERED}
    assert sum(_erp_entries().values()) == first.delivered
    # when the PSA is healthy again and the batch path runs
    second = time_entries_batch_pull(route_id=flow.route.pk)
    # then it goes on from the stored page: every entry posted once
    posted = _erp_entries()
    assert second.outcome == PollOutcome.COMPLETE
    assert set(posted) == expected and set(posted.values()) == {1}
    assert first.delivered + second.delivered == len(expected)


@pytest.mark.django_db(transaction=True)
def test_a_page_for_a_paused_erp_is_stored_held_with_no_attempt_counted(psa, flow):
    from connectors.services import connected_system_pause

    # given the ERP paused by an operator
    connected_system_pause(system=flow.erp, reason="month-end close")
    flow.route.target_system.refresh_from_db()
    # when the batch path reads a page
    result = time_entries_batch_pull(route_id=flow.route.pk, max_pages=1)
    # then the page's deliveries wait, held, with no attempt counted and nothing sent
    deliveries = Delivery.objects.filter(route=flow.route)
    assert result.stored == PAGE_SIZE and deliveries.count() == PAGE_SIZE
    assert set(deliveries.values_list("status", "attempts")) == {(DeliveryStatus.HELD, 0)}
    assert not DeliveryAttempt.objects.filter(delivery__route=flow.route).exists() and not _erp_entries()


@pytest.mark.django_db(transaction=True)
def test_a_run_that_dies_after_storing_a_page_leaves_it_to_the_sweeper_and_nothing_is_posted_twice(
    psa, flow, monkeypatch
):
    import datetime

    from django.utils import timezone

    from sync import batch
    from sync.services import deliveries_send, sync_sweep

    send = batch._send

    def post_then_die(*args, **kwargs):
        send(*args, **kwargs)
        raise RuntimeError("worker killed after the ERP stored the batch")

    # given a run that dies once the ERP has stored its first page, before it records anything
    monkeypatch.setattr(batch, "_send", post_then_die)
    with pytest.raises(RuntimeError):
        time_entries_batch_pull(route_id=flow.route.pk, max_pages=1)
    monkeypatch.setattr(batch, "_send", send)
    deliveries = Delivery.objects.filter(route=flow.route)
    assert set(deliveries.values_list("status", "attempts")) == {(DeliveryStatus.DELIVERING, 1)}
    assert sum(_erp_entries().values()) == PAGE_SIZE
    # when the sweeper finds them in flight past the stuck time and the delivery worker sends them
    swept = sync_sweep(now=timezone.now() + datetime.timedelta(days=1))
    assert swept["deliveries"] == PAGE_SIZE
    counts = deliveries_send(delivery_ids=list(deliveries.values_list("pk", flat=True)))
    # then the ERP's entries are found by their keys: each recorded as applied, none posted twice
    assert counts == {DeliveryStatus.DELIVERED: PAGE_SIZE}
    assert set(deliveries.values_list("status", flat=True)) == {DeliveryStatus.DELIVERED}
    outcomes = set(DeliveryAttempt.objects.filter(delivery__route=flow.route).values_list("outcome", flat=True))
    assert outcomes == {AttemptOutcome.ALREADY_APPLIED}
    posted = _erp_entries()
    assert sum(posted.values()) == PAGE_SIZE and set(posted.values()) == {1}


@pytest.mark.django_db(transaction=True)
def test_a_page_failing_at_the_erp_is_retried_without_duplicates(psa, flow):
    # given an ERP that stores each batch but answers 502, as if the answer was lost on the way back
    expected = _approved_ids(psa)
    _erp_control(psa, "PUT", accept_then_fail_every_nth=1)
    try:
        first = time_entries_batch_pull(route_id=flow.route.pk, max_pages=1)
    finally:
        _erp_control(psa, "DELETE")
    # then the page's deliveries wait for a retry, though the ERP holds the entries already
    waiting = Delivery.objects.filter(route=flow.route, status=DeliveryStatus.RETRYING)
    assert first.retrying == PAGE_SIZE and waiting.count() == PAGE_SIZE
    assert sum(_erp_entries().values()) == PAGE_SIZE
    assert set(Message.objects.filter(system=flow.psa).values_list("status", flat=True)) == {MessageStatus.DELIVERING}
    # when the ERP is healthy again and the batch path runs
    second = time_entries_batch_pull(route_id=flow.route.pk)
    # then the failed page is sent again with the same keys and the ERP answers with what it has: no duplicate
    posted = _erp_entries()
    assert set(posted) == expected and set(posted.values()) == {1}, "an entry was posted twice"
    assert second.already_applied == PAGE_SIZE
    assert second.delivered == len(expected) - PAGE_SIZE
    outcomes = Counter(DeliveryAttempt.objects.filter(delivery__route=flow.route).values_list("outcome", flat=True))
    assert outcomes[AttemptOutcome.RETRYABLE_ERROR] == PAGE_SIZE
    assert outcomes[AttemptOutcome.ALREADY_APPLIED] == PAGE_SIZE
    assert set(Message.objects.filter(system=flow.psa).values_list("status", flat=True)) == {MessageStatus.DELIVERED}


@pytest.mark.django_db(transaction=True)
def test_an_entry_the_erp_refuses_goes_to_the_queue_and_the_rest_of_the_batch_is_posted(psa, flow):
    # given one entry on a PSA project the ERP knows but has closed
    from sandbox.services import record_create, record_update

    closed = record_create(
        system="erp",
        object_type="projects",
        data={"client_id": 1, "name": "Closed", "legal_entity": "US01", "status": "closed", "code": "OLD-01"},
    )[0]
    psa_project = psa.records("projects").first()
    other = record_create(system="psa", object_type="projects", data={**psa_project.data, "code": "OLD-01"})[0]
    CrossReference.objects.create(
        entity="project", canonical_id=other.external_id, system=flow.erp, external_id=closed.external_id
    )
    bad = psa.records("time_entries").order_by("id")[0]
    record_update(record=bad, changes={"project_id": int(other.external_id)})
    expected = _approved_ids(psa)
    # when the batch path runs
    result = time_entries_batch_pull(route_id=flow.route.pk)
    # then the ERP's refusal of that entry is in the queue, and every other entry was posted once
    delivery = Delivery.objects.get(route=flow.route, message__raw_payload__id=str(bad.external_id))
    assert delivery.status == DeliveryStatus.FAILED
    item = ExceptionItem.objects.get(delivery=delivery)
    assert item.category == ExceptionCategory.TARGET_REJECTED and "closed" in item.reason
    assert delivery.message.status == MessageStatus.FAILED
    posted = _erp_entries()
    assert set(posted) == expected - {bad.external_id} and set(posted.values()) == {1}
    assert result.rejected == 1


@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_runs_the_batch_path_from_its_task(psa, flow, live_celery_worker_db):
    # given the flow, and a real worker on the hub's queues
    import time

    from integrationhub.dispatch import enqueue_on_commit
    from sync.batch import BATCH_QUEUE
    from sync.tasks import time_entries_batch_pull_task

    expected = _approved_ids(psa)
    # when the task is enqueued
    enqueue_on_commit(time_entries_batch_pull_task, flow.route.pk, queue=BATCH_QUEUE)
    deadline = time.monotonic() + 60
    delivered = Message.objects.filter(system=flow.psa, status=MessageStatus.DELIVERED)
    while time.monotonic() < deadline and delivered.count() < len(expected):
        time.sleep(0.3)
    # then the worker posted every approved entry once
    posted = _erp_entries()
    assert delivered.count() == len(expected)
    assert set(posted) == expected and set(posted.values()) == {1}


@pytest.mark.django_db
def test_the_page_rate_lookup_answers_like_rate_for_without_a_query_per_entry(django_assert_max_num_queries):
    # given an entity default card, a client override card, and a card that ended before some dates
    import datetime
    from decimal import Decimal

    from governance.selectors import rate_for, rate_lookup_preload
    from governance.tests.factories import LegalEntityFactory, RateCardFactory, RateCardLineFactory

    entity = LegalEntityFactory(code="GB01")
    old = RateCardFactory(
        legal_entity=entity, valid_from=datetime.date(2025, 1, 1), valid_to=datetime.date(2025, 12, 31)
    )
    RateCardLineFactory(rate_card=old, role="Manager", bill_rate=Decimal("120.00"))
    default = RateCardFactory(legal_entity=entity, valid_from=datetime.date(2026, 1, 1))
    RateCardLineFactory(rate_card=default, role="Manager", bill_rate=Decimal("150.00"))
    RateCardLineFactory(rate_card=default, role="Analyst", bill_rate=Decimal("80.00"))
    client = RateCardFactory(legal_entity=entity, valid_from=datetime.date(2026, 1, 1), client_ref="C-9")
    RateCardLineFactory(rate_card=client, role="Manager", bill_rate=Decimal("140.00"))
    asks = [
        {"role": role, "on_date": on_date, "client": client_ref}
        for role in ("Manager", "Analyst")
        for on_date in (datetime.date(2025, 6, 1), datetime.date(2026, 3, 1))
        for client_ref in (None, "C-9")
    ]
    expected = {}
    for ask in asks:
        try:
            expected[tuple(ask.values())] = rate_for(legal_entity="GB01", **ask)
        except Exception as exc:  # noqa: BLE001 - the error itself is compared
            expected[tuple(ask.values())] = type(exc)
    # when a page's lookup is loaded once and asked the same questions
    with django_assert_max_num_queries(2):
        lookup = rate_lookup_preload(
            legal_entity_codes={"GB01"},
            roles={"Manager", "Analyst"},
            first_date=datetime.date(2026, 1, 1),
            last_date=datetime.date(2026, 12, 31),
        )
    # then inside the loaded dates it answers exactly like rate_for, without a query
    with django_assert_max_num_queries(0):
        inside = {
            tuple(ask.values()): lookup(legal_entity="GB01", **ask) for ask in asks if ask["on_date"].year == 2026
        }
    assert inside == {key: value for key, value in expected.items() if key[1].year == 2026}
    assert inside[("Manager", datetime.date(2026, 3, 1), "C-9")].bill_rate == Decimal("140.00")
    # and outside them it asks rate_for, so the answer is still the same
    assert (
        lookup(legal_entity="GB01", role="Manager", on_date=datetime.date(2025, 6, 1))
        == expected[("Manager", datetime.date(2025, 6, 1), None)]
    )
