"""The batch path reaches the PSA and the ERP only through the transport: each page read and each posting
call passes its gate (pause, circuit breaker, the shared rate budget), obeys the sync policy's timeout, carries
the page's correlation id and leaves an attempt row naming the system called. And no module but the transport
(and the connectors themselves) builds a connector.

The sandbox PSA and ERP answer over real HTTP, four entries a page; the PSA's or the ERP's latency is raised
through the sandbox's fault control where a test needs a slow counterpart."""

from __future__ import annotations

import ast
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from connectors.models import ConnectedSystem
from connectors.services import connected_system_pause, connected_system_resume
from sandbox.models import SandboxRecord
from sync import batch, circuit, transport
from sync.batch import time_entries_batch_pull
from sync.choices import AttemptOutcome, DeliveryStatus, MessageStatus, PollOutcome
from sync.models import Delivery, DeliveryAttempt, Message, PollCursor
from sync.tests.test_batch import _approved_ids, _erp_control

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(django_settings.BASE_DIR)
# The edge builds connectors (and its tests do); the transport is the one module of the hub that asks it for one.
# The benchmarks' counterpart ceilings time the connectors with no hub between them, on purpose.
ALLOWED = ("connectors/", "sync/transport.py", "bench/")


def _page_reads(system: ConnectedSystem):
    return DeliveryAttempt.objects.filter(
        system=system, delivery__isnull=True, request_summary__operation=transport.FETCH_CHANGES
    )


def _erp_entries() -> Counter:
    rows = SandboxRecord.objects.filter(system="erp", object_type="time-entries", deleted=False)
    return Counter(str(data.get("source_ref")) for data in rows.values_list("data", flat=True))


def _python_files() -> list[Path]:
    """The repository's Python files (tracked ones when git can say, so an unrelated scratch file never
    counts), without the virtualenv."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        listed = [str(path.relative_to(ROOT)) for path in ROOT.rglob("*.py") if ".venv" not in path.parts]
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def _connector_builders(path: Path) -> list[int]:
    """Lines of `path` that call or import `connector_for`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(alias.name == "connector_for" for alias in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call):
            function = node.func
            name = function.id if isinstance(function, ast.Name) else getattr(function, "attr", "")
            if name == "connector_for":
                lines.append(node.lineno)
    return lines


def test_no_module_but_the_transport_builds_a_connector():
    # given every Python file of the hub outside the edge, the transport and the benchmarks
    files = [path for path in _python_files() if not str(path.relative_to(ROOT)).startswith(ALLOWED)]
    assert len(files) > 100, "the walk found too few files to prove anything"
    # then none of them imports or calls connector_for: they hand the transport a system instead
    offenders = {str(path.relative_to(ROOT)): lines for path in files if (lines := _connector_builders(path))}
    assert not offenders, f"connector_for used outside sync/transport.py and connectors/: {offenders}"


def test_the_guard_sees_a_connector_built_outside_the_transport(tmp_path):
    # given a module that builds a connector itself, one imported under another name, and one that does not
    direct = tmp_path / "direct.py"
    direct.write_text("from connectors.registry import connector_for\n\nconnector_for(system).upsert()\n")
    qualified = tmp_path / "qualified.py"
    qualified.write_text("from connectors import registry\n\nregistry.connector_for(system)\n")
    clean = tmp_path / "clean.py"
    clean.write_text("from sync import transport\n\ntransport.record_deliver(system, 'client', call)\n")
    # then the guard names the lines of the first two and nothing of the third
    assert _connector_builders(direct) == [1, 3]
    assert _connector_builders(qualified) == [3]
    assert _connector_builders(clean) == []


def test_each_page_read_and_each_posting_leaves_an_attempt_row_with_the_system_and_the_page_correlation_id(
    time_psa, time_flow
):
    # given the PSA's approved entries over several pages
    expected = _approved_ids(time_psa)
    # when the batch path runs
    result = time_entries_batch_pull(route_id=time_flow.route.pk)
    assert result.outcome == PollOutcome.COMPLETE and set(_erp_entries()) == expected
    # then each page read is one attempt row naming the PSA, a success, with the correlation id its page's
    # messages carry
    reads = list(_page_reads(time_flow.psa).order_by("pk"))
    assert len(reads) == result.pages > 2
    assert {read.outcome for read in reads} == {AttemptOutcome.DELIVERED}
    assert all(read.request_summary["entity"] == "time_entry" for read in reads)
    page_ids = set(Message.objects.filter(system=time_flow.psa).values_list("correlation_id", flat=True))
    assert page_ids <= {read.correlation_id for read in reads}
    # and each entry's posting is one attempt row naming the ERP, with its message's correlation id
    postings = DeliveryAttempt.objects.filter(delivery__route=time_flow.route)
    assert postings.count() == len(expected)
    assert set(postings.values_list("system_id", flat=True)) == {time_flow.erp.pk}
    assert all(
        correlation_id and correlation_id == message_correlation_id
        for correlation_id, message_correlation_id in postings.values_list(
            "correlation_id", "delivery__message__correlation_id"
        )
    )


def test_a_psa_paused_mid_run_stops_the_page_reads_and_resuming_continues_from_the_cursor(
    time_psa, time_flow, monkeypatch
):
    # given a person who pauses the PSA while the run stores its first page
    expected = _approved_ids(time_psa)
    store = batch.page_store
    stored_pages = []

    def store_then_pause(**kwargs):
        rows = store(**kwargs)
        stored_pages.append(kwargs["next_cursor"])
        if len(stored_pages) == 1:
            connected_system_pause(system=ConnectedSystem.objects.get(pk=time_flow.psa.pk), reason="PSA maintenance")
        return rows

    monkeypatch.setattr(batch, "page_store", store_then_pause)
    # when the batch path runs
    result = time_entries_batch_pull(route_id=time_flow.route.pk)
    # then it stopped as paused, with no page read after the one already in flight when the pause came
    assert result.outcome == PollOutcome.SKIPPED and "paused" in result.error
    reads = _page_reads(time_flow.psa).count()
    assert reads == result.pages <= 2
    assert len(_erp_entries()) < len(expected)
    cursor = PollCursor.objects.get(system=time_flow.psa, entity="time_entry")
    assert cursor.cursor == stored_pages[-1]
    # when the PSA is resumed and the path runs again
    monkeypatch.undo()
    connected_system_resume(system=ConnectedSystem.objects.get(pk=time_flow.psa.pk))
    again = time_entries_batch_pull(route_id=time_flow.route.pk)
    # then it read on from the cursor and every approved entry is in the ERP once
    assert again.outcome == PollOutcome.COMPLETE
    assert set(_erp_entries()) == expected and set(_erp_entries().values()) == {1}


def test_an_open_psa_circuit_holds_the_page_reads_without_a_call(time_psa, time_flow, settings):
    # given a PSA whose circuit is open after failures of other calls
    settings.HUB_CIRCUIT_FAILURE_THRESHOLD = 1
    psa = ConnectedSystem.objects.get(pk=time_flow.psa.pk)
    circuit.circuit_record_failure(system=psa)
    assert ConnectedSystem.objects.get(pk=psa.pk).state == "circuit_open"
    # when the batch path runs
    result = time_entries_batch_pull(route_id=time_flow.route.pk)
    # then no page was read (no attempt row, no message, the cursor where it was) and the run says why
    assert result.outcome == PollOutcome.SKIPPED and "circuit" in result.error
    assert result.pages == 0 and not _page_reads(psa).exists()
    assert not Message.objects.filter(system=psa).exists()
    assert PollCursor.objects.get(system=psa, entity="time_entry").cursor == ""
    # when the circuit closes, the next run reads every page
    circuit.circuit_record_success(system=ConnectedSystem.objects.get(pk=psa.pk))
    assert time_entries_batch_pull(route_id=time_flow.route.pk).outcome == PollOutcome.COMPLETE
    assert set(_erp_entries()) == _approved_ids(time_psa)


def test_an_open_erp_circuit_holds_the_postings_without_a_call(time_psa, time_flow, settings):
    # given an ERP whose circuit is open
    settings.HUB_CIRCUIT_FAILURE_THRESHOLD = 1
    settings.HUB_CIRCUIT_OPEN_SECONDS = 600
    circuit.circuit_record_failure(system=ConnectedSystem.objects.get(pk=time_flow.erp.pk))
    # when the batch path runs
    result = time_entries_batch_pull(route_id=time_flow.route.pk)
    # then the pages were read and stored, but nothing was posted: every delivery waits, its attempt not
    # counted, until the circuit lets a probe through
    assert result.outcome == PollOutcome.COMPLETE and result.stored > 0
    assert not _erp_entries()
    deliveries = Delivery.objects.filter(route=time_flow.route)
    assert set(deliveries.values_list("status", "attempts")) == {(DeliveryStatus.RETRYING, 0)}
    assert not deliveries.filter(next_attempt_at__isnull=True).exists()
    assert not DeliveryAttempt.objects.filter(system=time_flow.erp).exists()


def test_the_sync_policy_timeout_bounds_the_page_reads(time_psa, time_flow):
    # given a PSA that answers in 3 s, well within its own timeout (60 s), and a sync policy of 1 s
    time_flow.policy.timeout_seconds = 1
    time_flow.policy.save()
    _erp_control(time_psa, "PUT", system="psa", latency_ms=3000)
    try:
        # when the batch path runs
        result = time_entries_batch_pull(route_id=time_flow.route.pk)
    finally:
        _erp_control(time_psa, "DELETE", system="psa")
    # then the page read gave up after the policy's second: a retryable failure on record, nothing stored
    assert result.outcome == PollOutcome.ERROR and result.pages == 0
    (read,) = _page_reads(time_flow.psa)
    assert read.outcome == AttemptOutcome.RETRYABLE_ERROR and (read.duration_ms or 0) < 2500, (read.outcome, read.error)
    assert not Message.objects.filter(system=time_flow.psa).exists()


def test_the_sync_policy_timeout_bounds_the_postings(time_psa, time_flow):
    # given an ERP that answers in 3 s and a sync policy of 1 s
    time_flow.policy.timeout_seconds = 1
    time_flow.policy.save()
    _erp_control(time_psa, "PUT", system="erp", latency_ms=3000)
    try:
        # when the batch path runs one page
        result = time_entries_batch_pull(route_id=time_flow.route.pk, max_pages=1)
    finally:
        _erp_control(time_psa, "DELETE", system="erp")
    # then its posting gave up after the policy's second: each entry's attempt a retryable failure naming the
    # ERP, its delivery due again, its message not delivered
    assert result.pages == 1 and result.retrying > 0 and result.delivered == 0
    postings = DeliveryAttempt.objects.filter(delivery__route=time_flow.route)
    assert postings.count() == result.retrying
    assert set(postings.values_list("outcome", "system_id")) == {(AttemptOutcome.RETRYABLE_ERROR, time_flow.erp.pk)}
    assert all((duration or 0) < 2500 for duration in postings.values_list("duration_ms", flat=True))
    assert set(Delivery.objects.filter(route=time_flow.route).values_list("status", flat=True)) == {
        DeliveryStatus.RETRYING
    }
    assert not Message.objects.filter(system=time_flow.psa, status=MessageStatus.DELIVERED).exists()
