"""Chaos: time and expense posting to the ERP survives the kill of every worker mid-way, with the default settings.

The sender of a target's lines holds a lease it renews before every ERP call (SENDER_LEASE_SECONDS, a minute). A
sender killed mid-call leaves its lines pending and its lease running; the dispatcher's beat entry (every 2 s)
starts the next sender once the lease has run out, and that sender resends the same idempotency keys, so the ERP
answers the lines it already stored instead of storing them twice.

The hub runs for real: the sandbox PSA and ERP over HTTP (pytest's live server), Celery worker processes on a
broker and cache of the test's own (sync/tests/chaos_harness.py), and beat played by the test.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections import Counter
from dataclasses import dataclass

import httpx
import pytest
from django.utils import timezone

from connectors.tests.contract_fixtures import CONTROL_TOKEN
from governance.choices import Trigger
from governance.services import sync_policy_run, sync_policy_save
from sandbox.models import SandboxRecord
from sync.models import Message
from sync.tests.chaos_harness import Beat, ChaosHub, chaos_hub_running
from workflows.choices import PostingStatus
from workflows.models import TimeExpensePosting, TimeExpenseSenderLease
from workflows.tasks import time_expense_postings_dispatch_task
from workflows.tests.time_expense_fixtures import TimeExpenseWorld, build_world
from workflows.time_expense import SENDER_LEASE_SECONDS

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ENTRIES = 30
# Two lines a call (the test's policy), so 30 lines take 15 calls and the kill can come between two of them.
BATCH_SIZE = 2
ERP_LATENCY_MS = 300
# What the test proves: posting is complete within two minutes of a worker coming back.
RESUME_SECONDS = 120
# Generous: a loaded two-core machine runs the worker's two processes, the live server and the sandbox here.
SETTLE_SECONDS = 180

# The dispatcher's beat entry as its migration installs it: (name, task, every N seconds) on the housekeeping
# queue, a tick expiring after max(5, N) seconds.
_BEAT_ENTRY = importlib.import_module("workflows.migrations.0003_time_expense_sender_beat").SCHEDULES[0]
DISPATCH_SECONDS = float(_BEAT_ENTRY[2])
DISPATCH_EXPIRES = max(5.0, DISPATCH_SECONDS)


@pytest.fixture
def chaos_hub(settings, tmp_path):
    """A broker and cache of the test's own and workers to kill, with the default sweeper settings (the chaos
    harness shortens them to seconds)."""
    requests_log = logging.getLogger("httpx")
    level = requests_log.level
    requests_log.setLevel(logging.WARNING)  # a line per ERP call otherwise
    try:
        with chaos_hub_running(settings, tmp_path) as hub:
            settings.HUB_SYNC_SWEEP_AFTER_SECONDS = 60
            del settings.HUB_SYNC_STUCK_DELIVERY_SECONDS  # back to its default: the sweep period + task limit
            yield hub
    finally:
        requests_log.setLevel(level)


@dataclass
class TimeExpenseBeat(Beat):
    """The chaos beat (the engine's dispatcher and sweeper) plus the time and expense dispatcher's beat entry at
    its real period: its task published on its queue with its expiry, for a worker to run."""

    last_dispatch: float = 0.0

    def once(self) -> None:
        super().once()
        if time.monotonic() - self.last_dispatch < DISPATCH_SECONDS:
            return
        self.last_dispatch = time.monotonic()
        try:
            time_expense_postings_dispatch_task.apply_async(queue="housekeeping", expires=DISPATCH_EXPIRES)
        except Exception as error:  # noqa: BLE001 - beat logs and carries on
            self.failures[type(error).__name__] += 1


def _erp_faults(world: TimeExpenseWorld, method: str, **faults: object) -> None:
    """Switch the sandbox ERP's fault profile through its control API (DELETE: back to normal)."""
    response = httpx.request(
        method,
        f"{world.server_url}/sandbox/erp/_faults",
        json={"enabled": True, **faults} if method == "PUT" else None,
        headers={"X-Sandbox-Control-Token": CONTROL_TOKEN},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def _erp_lines(world: TimeExpenseWorld) -> Counter:
    """How many live ERP time lines each PSA entry of this hub has (the sandbox's own demo lines left out)."""
    rows = SandboxRecord.objects.filter(
        system="erp", object_type="time-entries", deleted=False, data__source_ref__startswith=f"{world.psa.slug}:"
    )
    return Counter(str(data["source_ref"]).rsplit(":", 1)[-1] for data in rows.values_list("data", flat=True))


def _ledger(world: TimeExpenseWorld) -> Counter:
    """The ERP's lines in the hub's posting ledger, by status."""
    return Counter(TimeExpensePosting.objects.filter(target_system=world.erp).values_list("status", flat=True))


def _lease_left(world: TimeExpenseWorld) -> float:
    """Seconds until the ERP's sender lease runs out (0 when free)."""
    lease = TimeExpenseSenderLease.objects.filter(target_system=world.erp).exclude(holder="").first()
    return max(0.0, (lease.expires_at - timezone.now()).total_seconds()) if lease is not None else 0.0


def test_posting_resumes_within_two_minutes_after_every_worker_is_killed_mid_way(
    live_server, chaos_hub: ChaosHub, request
):
    # given a scheduled time and expense flow that posts two lines a call, 30 approved time entries on two
    # projects, an ERP that takes 0.3 s to answer each call, and a worker
    started = time.monotonic()
    world = build_world(request, trigger=Trigger.SCHEDULE)
    world.policy.batch_size = BATCH_SIZE
    sync_policy_save(policy=world.policy, reason="test: many ERP calls")
    # A quarter of an hour each, so the day's 30 entries stay within the daily limit rule.
    entries = [world.time_entry(project=("alpha", "beta")[n % 2], hours=0.25) for n in range(ENTRIES)]
    for entry in entries:
        world.approve(entry)
    _erp_faults(world, "PUT", latency_ms=ERP_LATENCY_MS)
    worker = chaos_hub.worker_start()
    beat = TimeExpenseBeat()

    # when the scheduled run pulls them and the worker posts them, slowly
    assert sync_policy_run(policy_id=world.policy.pk).started

    def mid_way() -> bool:
        in_erp = sum(_erp_lines(world).values())
        planned = sum(_ledger(world).values())
        return planned == ENTRIES and ENTRIES // 4 <= in_erp <= ENTRIES * 3 // 4 and _lease_left(world) > 0

    beat.until(mid_way, timeout=SETTLE_SECONDS, what="the worker a quarter of the way through the lines")
    # and the worker's whole process group is SIGKILLed, some lines in the ERP, some not, its lease running
    worker.kill()
    killed = time.monotonic()
    in_erp_at_kill = sum(_erp_lines(world).values())
    ledger_at_kill = _ledger(world)
    lease_at_kill = _lease_left(world)
    # and the ERP answers at once again, and a new worker starts, the test playing beat all along
    _erp_faults(world, "DELETE")
    chaos_hub.worker_start()
    restarted = time.monotonic()
    lease_at_restart = _lease_left(world)
    in_erp_at_restart = sum(_erp_lines(world).values())
    progress: list[float] = []

    def all_in_erp() -> bool:
        lines = _erp_lines(world)
        if not progress and sum(lines.values()) > in_erp_at_restart:
            progress.append(time.monotonic() - restarted)
        return set(lines) == set(entries)

    complete = beat.within(all_in_erp, timeout=RESUME_SECONDS)
    resumed_after = time.monotonic() - restarted
    # (the ledger catches up with the ERP's answers within the same two minutes)
    recorded = complete and beat.within(
        lambda: _ledger(world) == {PostingStatus.POSTED: ENTRIES}, timeout=max(1.0, RESUME_SECONDS - resumed_after)
    )

    # then the kill came mid-way: some lines in the ERP and some not, the killed sender's lease still running
    lines = _erp_lines(world)
    messages = Counter(Message.objects.filter(system=world.psa).values_list("status", flat=True))
    print(
        f"[chaos] time and expense sender killed mid-way: {ENTRIES} lines, {BATCH_SIZE} a call, ERP "
        f"{ERP_LATENCY_MS} ms a call; killed with {in_erp_at_kill} in the ERP (ledger {dict(ledger_at_kill)}), "
        f"{in_erp_at_restart} once the call in flight landed; lease left {lease_at_kill:.1f} s at the kill, "
        f"{lease_at_restart:.1f} s when the new worker answered ({restarted - killed:.1f} s after the kill); "
        f"first new line {progress[0] if progress else float('nan'):.1f} s and every line "
        f"{resumed_after:.1f} s after the new worker started; ledger {dict(_ledger(world))}; "
        f"messages {dict(messages)}; beats failed {dict(beat.failures)}; {time.monotonic() - started:.0f} s in all"
    )
    assert 0 < in_erp_at_kill < ENTRIES, in_erp_at_kill
    assert ledger_at_kill[PostingStatus.PENDING] > 0, ledger_at_kill
    assert lease_at_kill > 0 and SENDER_LEASE_SECONDS == 60
    # and within two minutes of the new worker's start every approved entry is in the ERP, exactly once
    assert complete, f"{len(lines)} of {ENTRIES} lines in the ERP {RESUME_SECONDS} s after the new worker started"
    assert set(lines) == set(entries)
    assert set(lines.values()) == {1}, {entry: count for entry, count in lines.items() if count != 1}
    # and the ledger records every line posted
    assert recorded, f"ledger {dict(_ledger(world))}"
