"""Batch sync benchmark: approved time entries from the sandbox PSA to the sandbox ERP through the batch path.

`python -m bench batch` seeds 100,000 approved time entries in the sandbox PSA's table, serves the sandbox
with a real gunicorn, and runs the engine's batch path (sync.batch, started by its Celery task on a real
worker) on PostgreSQL + Redis: page by page (500 entries) through the compiled mapping, the six
time-entry rules with per-page lookups, bulk message writes, and delivery to the sandbox ERP in batches
of 500 with one idempotency key per entry. The figure is entries/s from the task's start to the last
entry delivered. The baseline in the same run is PostgreSQL COPY of the same 100,000 rows into a plain
table. Target: at least 0.25x COPY. The worker's peak memory is the VmHWM of its pool process.
It also measures the ceiling the two sandbox systems set by themselves: the same entries read from the PSA
and posted to the ERP through the connectors with no engine in between (`_sandbox_ceiling`).

`python -m bench batch --memory` runs 10,000 then 1,000,000 entries (fresh database, server and worker
each) and prints the ratio of the worker's peak memory (target: at most 1.2x: pages are streamed, the
whole set is never held).

Environment: BENCH_DATABASE_URL (a PostgreSQL server URL; default postgres://postgres@127.0.0.1:5432/postgres)
where it creates and drops its own database, BENCH_REDIS_URL (default redis://127.0.0.1:6379/15; the bench
flushes that Redis database before and after), BENCH_ENTRIES (default 100000). Everything it starts it stops.
"""

from __future__ import annotations

import datetime
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
ENTRIES = int(os.environ.get("BENCH_ENTRIES", "100000"))
PAGE = 500
TARGET_RATIO = 0.25
MEMORY_TARGET = 1.2
MEMORY_SIZES = tuple(int(size) for size in os.environ.get("BENCH_MEMORY_SIZES", "10000,1000000").split(","))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def _with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(_with_db(_server_url(), "postgres").replace("postgres://", "postgresql://", 1)) as conn:
        conn.autocommit = True
        conn.execute(sql)


def _redis_flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


@dataclass
class Stack:
    """The bench's own database, Redis database, sandbox server and Celery worker."""

    database: str
    database_url: str
    redis_url: str
    var_dir: str
    server: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None
    port: int = 0

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "HUB_VAR_DIR": self.var_dir,
            "LOG_LEVEL": "WARNING",
            "DEBUG": "0",
            **extra,
        }


_VAR_DIR: list[str] = []


def _var_dir() -> str:
    """One var directory per bench process: the field encryption key generated there must stay the same for
    every stack, since this process keeps the key it read first."""
    if not _VAR_DIR:
        _VAR_DIR.append(tempfile.mkdtemp(prefix="bench-batch-"))
    return _VAR_DIR[0]


@contextmanager
def stack() -> Iterator[Stack]:
    """Create the database (migrated), point this process at it, and tear everything down afterwards."""
    name = f"bench_batch_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
    _admin(f'CREATE DATABASE "{name}"')
    current = Stack(
        database=name,
        database_url=_with_db(_server_url(), name),
        redis_url=redis_url,
        var_dir=_var_dir(),
    )
    _redis_flush(redis_url)
    os.environ.update(current.env())
    try:
        yield current
    finally:
        for process in (current.worker, current.server):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        from django.db import connections

        connections.close_all()
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        _redis_flush(redis_url)


def _django(current: Stack) -> None:
    """Django in this process, on the bench database (settings read the environment once)."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "integrationhub.settings"
    import django
    from django.conf import settings
    from django.db import connections

    django.setup()
    # A second stack in the same process (--memory): the same settings, pointed at the new database.
    connections.close_all()
    settings.DATABASES["default"]["NAME"] = current.database
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _start_server(current: Stack) -> None:
    from sandbox.management.commands.run_sandbox import STANDALONE_SETTINGS, sandbox_server_argv

    current.port = _free_port()
    argv = sandbox_server_argv(host="127.0.0.1", port=current.port, workers=2, threads=2)
    argv = argv[: argv.index("--access-logfile")]
    current.server = subprocess.Popen(
        argv,
        env=current.env(DJANGO_SETTINGS_MODULE=STANDALONE_SETTINGS),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{current.port}/sandbox/psa/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit("the sandbox server did not answer within 60 s")


def _start_worker(current: Stack) -> None:
    from integrationhub.celery import app
    from sync.batch import BATCH_QUEUE

    hostname = f"bench-batch-{uuid.uuid4().hex[:6]}@%h"
    current.worker = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("celery")),
            *("-A", "integrationhub", "worker", "--queues", BATCH_QUEUE, "--concurrency", "1"),
            *("--hostname", hostname, "--loglevel", "WARNING", "--without-mingle", "--without-gossip"),
        ],
        env=current.env(),
        cwd=REPO,
        start_new_session=True,
    )
    expected = hostname.replace("%h", "")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(name.startswith(expected) for reply in app.control.ping(timeout=1.0) for name in reply):
            return
    raise SystemExit("the Celery worker did not answer a ping within 60 s")


def _pool_peak_kb(worker: subprocess.Popen) -> int:
    """The largest VmHWM (peak resident set) among the worker's pool processes."""
    peaks = []
    for task in Path(f"/proc/{worker.pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]))
    if not peaks:
        raise SystemExit("the worker has no pool process to measure")
    return max(peaks)


def _seed(count: int, port: int) -> tuple[Any, dict[str, Any]]:
    """The sandbox's demo records, `count` approved time entries in the PSA's table, and the flow's config."""
    from django.db import connection, transaction

    from sandbox.models import SandboxRecord
    from sandbox.services import DEMO_PEOPLE, sandbox_demo_seed
    from sync.tests.batch_flow import ALLOWED_COST_CODES, time_flow_configure

    credentials = sandbox_demo_seed()
    users = {
        person.data["roles"][0]: int(person.external_id)
        for person in SandboxRecord.objects.filter(system="psa", object_type="users")
    }
    people = [(users[role], role, bill) for _, _, role, _, bill in DEMO_PEOPLE]
    psa_project = SandboxRecord.objects.get(system="psa", object_type="projects", data__code="NW-DATA-01")
    erp_project = SandboxRecord.objects.get(system="erp", object_type="projects", data__code="NW-DATA-01")
    # The demo's own entries are not part of the measured set.
    SandboxRecord.objects.filter(system="psa", object_type="time_entries").delete()
    rng = random.Random(7)
    today = datetime.date.today()
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    manager = users["Manager"]
    chunk = 10_000
    for start in range(0, count, chunk):
        rows = []
        for number in range(start, min(count, start + chunk)):
            user_id, role, _ = people[number % len(people)]
            rows.append(
                SandboxRecord(
                    system="psa",
                    object_type="time_entries",
                    external_id=f"tmp-{number}",
                    data={
                        "user_id": user_id,
                        "project_id": int(psa_project.external_id),
                        "task_id": 1,
                        "spent_date": (today - datetime.timedelta(days=rng.randint(1, 40))).isoformat(),
                        "hours": rng.choice([1.0, 2.5, 4.0, 7.5, 8.0]),
                        "notes": f"Data platform work, entry {number}",
                        "billable": True,
                        "role": role,
                        "cost_code": rng.choice(ALLOWED_COST_CODES),
                        "approval_status": "approved",
                        "approved_at": now.isoformat(),
                        "approved_by_id": manager,
                        "is_closed": True,
                    },
                    idempotency_key="",
                    created_at=now,
                    updated_at=now,
                )
            )
        with transaction.atomic():
            SandboxRecord.objects.bulk_create(rows)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE sandbox_sandboxrecord SET external_id = id::text WHERE external_id LIKE 'tmp-%%'"
            " AND system = 'psa' AND object_type = 'time_entries'"
        )
        cursor.execute("ANALYZE sandbox_sandboxrecord")
    base = f"http://127.0.0.1:{port}/sandbox"
    flow = time_flow_configure(
        psa_url=f"{base}/psa/v2",
        erp_url=f"{base}/erp/api",
        credentials=credentials,
        people=people,
        projects=[(int(psa_project.external_id), int(erp_project.external_id))],
        batch_size=PAGE,
        page_size=PAGE,
    )
    return flow, {"people": len(people)}


def _run(flow: Any, count: int, *, timeout: float, worker: subprocess.Popen | None = None) -> float:
    """Start the batch task on the worker; seconds until its last run completed with nothing left open.

    The poll is two index lookups every half second (a COUNT over the growing message table would itself
    load the database); the delivered total is counted once a minute for the progress line and checked
    by `_verify` at the end.
    """
    from django.utils import timezone

    from sync.batch import BATCH_QUEUE
    from sync.choices import DELIVERY_OPEN_STATUSES, MessageStatus
    from sync.models import Delivery, Message, PollCursor
    from sync.tasks import time_entries_batch_pull_task

    delivered = Message.objects.filter(system=flow.psa, status=MessageStatus.DELIVERED)
    open_deliveries = Delivery.objects.filter(route=flow.route, status__in=list(DELIVERY_OPEN_STATUSES))
    cursors = PollCursor.objects.filter(system=flow.psa, entity="time_entry")
    enqueued_at = timezone.now()
    started = time.perf_counter()
    time_entries_batch_pull_task.apply_async(args=[flow.route.pk], queue=BATCH_QUEUE)
    deadline = time.monotonic() + timeout
    report = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if worker is not None and time.monotonic() >= report:
            report += 60
            print(
                f"  {delivered.count():,} delivered after {time.perf_counter() - started:.0f} s,"
                f" worker peak so far {_pool_peak_kb(worker) / 1024:,.0f} MiB",
                flush=True,
            )
        cursor = cursors.first()
        if cursor is None or cursor.last_run_at is None or cursor.last_run_at < enqueued_at:
            continue
        if cursor.last_outcome == "error":
            raise SystemExit(f"the batch pull stopped with an error: {cursor.last_error}")
        if cursor.last_outcome == "complete" and not open_deliveries.exists():
            seconds = time.perf_counter() - started
            if delivered.count() < count:
                raise SystemExit(f"the pull completed with {delivered.count()} of {count} entries delivered")
            return seconds
    raise SystemExit(f"only {delivered.count()} of {count} entries were delivered within {timeout:.0f} s")


def _verify(flow: Any, count: int) -> None:
    """Every entry is in the ERP exactly once, and a re-run of a page posts nothing."""
    from sandbox.models import SandboxRecord
    from sync.batch import time_entries_batch_pull
    from sync.models import DeliveryAttempt, PollCursor

    erp = SandboxRecord.objects.filter(system="erp", object_type="time-entries", deleted=False)
    total = erp.count()
    distinct = erp.values("data__source_ref").distinct().count()
    if total != count or distinct != count:
        raise SystemExit(f"the ERP holds {total} entries for {distinct} PSA entries; expected {count} each")
    # The postings' attempts (a re-run reads its page again, and that read is an attempt row of its own).
    postings = DeliveryAttempt.objects.filter(delivery__isnull=False)
    attempts = postings.count()
    PollCursor.objects.filter(system=flow.psa, entity="time_entry").update(cursor="")
    again = time_entries_batch_pull(route_id=flow.route.pk, max_pages=1)
    if again.stored or again.delivered or erp.count() != count or postings.count() != attempts:
        raise SystemExit(f"a re-run of the first page posted again: {again.as_dict()}")


def _sandbox_ceiling(flow: Any, count: int) -> float:
    """Seconds for the two sandbox systems alone to move the same entries, with no engine between them.

    The PSA's pages are read through the hub's PSA connector and each page goes to the ERP's batch endpoint
    through the hub's ERP connector, as the outbound payloads the run produced (looked up in memory, so
    mapping, rules and bookkeeping cost nothing), under fresh idempotency keys so the ERP stores every entry
    again. Reading page N+1 overlaps posting page N (two threads), as a pipelined engine would. This is
    the most any engine can reach through these HTTP counterparts on this machine.
    """
    from concurrent.futures import ThreadPoolExecutor

    from connectors.registry import connector_for
    from sync import transport
    from sync.models import Delivery

    outbound: dict[str, dict[str, Any]] = {
        str(source_id): payload
        for source_id, payload in Delivery.objects.filter(route=flow.route).values_list(
            "message__raw_payload__id", "outbound_payload"
        )
    }
    psa, erp = connector_for(flow.psa), connector_for(flow.erp)
    started = time.perf_counter()
    posted = 0
    with ThreadPoolExecutor(max_workers=1) as poster:
        pending = None
        cursor: str | None = None
        while True:
            batch = transport.changes_fetch(psa, "time_entry", cursor)
            items = [(outbound[str(record["id"])], f"ceiling-{record['id']}") for record in batch.records]
            if pending is not None:
                posted += sum(1 for result in pending.result() if not isinstance(result, Exception))
            pending = (
                poster.submit(transport.records_post_many, erp, "time_entry", items, may_exist=False) if items else None
            )
            cursor = batch.next_cursor
            if not batch.has_more:
                break
        if pending is not None:
            posted += sum(1 for result in pending.result() if not isinstance(result, Exception))
    seconds = time.perf_counter() - started
    if posted != count:
        raise SystemExit(f"the sandbox round trip stored {posted} of {count} entries")
    return seconds


def _copy_baseline() -> float:
    """Seconds for PostgreSQL COPY of the same PSA rows (id, payload) into a plain table, committed."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, data::text FROM sandbox_sandboxrecord WHERE system = 'psa' AND object_type = 'time_entries'"
        )
        rows = cursor.fetchall()
        cursor.execute("CREATE TABLE bench_copy (id bigint, data jsonb)")
    raw = connection.connection
    started = time.perf_counter()
    with raw.cursor() as cursor, cursor.copy("COPY bench_copy (id, data) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    raw.commit()
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM bench_copy")
        copied = cursor.fetchone()[0]
    if copied != len(rows):
        raise SystemExit(f"COPY stored {copied} of {len(rows)} rows")
    return seconds


@dataclass
class Measured:
    entries: int
    seconds: float
    peak_kb: int
    copy_seconds: float | None = None
    ceiling_seconds: float | None = None


def measure(count: int, *, with_copy: bool, timeout: float) -> Measured:
    with stack() as current:
        _django(current)
        _start_server(current)
        seed_started = time.perf_counter()
        flow, _ = _seed(count, current.port)
        print(f"  seeded {count:,} approved entries in {time.perf_counter() - seed_started:.0f} s", flush=True)
        _start_worker(current)
        assert current.worker is not None
        seconds = _run(flow, count, timeout=timeout, worker=current.worker)
        peak_kb = _pool_peak_kb(current.worker)
        _verify(flow, count)
        ceiling_seconds = _sandbox_ceiling(flow, count) if with_copy else None
        copy_seconds = _copy_baseline() if with_copy else None
        return Measured(count, seconds, peak_kb, copy_seconds, ceiling_seconds)


def main_rate() -> bool:
    from bench.common import record_result

    print(f"batch: {ENTRIES:,} entries PSA -> ERP through the batch path ...", flush=True)
    result = measure(ENTRIES, with_copy=True, timeout=3600)
    assert result.copy_seconds is not None
    rate = ENTRIES / result.seconds
    copy_rate = ENTRIES / result.copy_seconds
    assert result.ceiling_seconds is not None
    ceiling_rate = ENTRIES / result.ceiling_seconds
    ratio = rate / copy_rate
    ok = ratio >= TARGET_RATIO
    lines = [
        f"entries: {ENTRIES:,} approved time entries, PSA pages of {PAGE}, ERP batches of {PAGE}, one Celery worker"
        " (prefork, concurrency 1), sandbox on gunicorn (2 workers x 2 threads), PostgreSQL + Redis",
        f"batch path (map, 6 rules, bulk store, batched delivery, verified once each): {rate:,.0f} entries/s"
        f" ({result.seconds:.1f} s)",
        f"baseline PostgreSQL COPY of the same rows: {copy_rate:,.0f} rows/s ({result.copy_seconds:.2f} s)",
        f"ratio batch / COPY: {ratio:.3f}x (target >= {TARGET_RATIO}x)",
        f"ceiling, the sandbox PSA and ERP alone (pages read and posted unchanged through the connectors, no"
        f" engine, reads overlapping posts): {ceiling_rate:,.0f} entries/s ({ceiling_rate / copy_rate:.3f}x COPY;"
        f" the batch path reaches {rate / ceiling_rate:.2f}x of it)",
        f"worker peak memory (VmHWM of the pool process): {result.peak_kb / 1024:,.0f} MiB",
        f"machine load average (1/5/15 min) at the end: {' / '.join(f'{v:.1f}' for v in os.getloadavg())}",
        f"verdict: {'target met' if ok else 'TARGET MISSED'}",
    ]
    if not ok:
        lines.append(
            "what limits it: COPY writes one row per entry; the batch path writes five durable rows with JSON per"
            " entry (the message with its raw and canonical payloads, the delivery with its outbound payload, the"
            " attempt, the cross-reference, and the ERP's own entry behind one more HTTP hop and its JSON"
            " rendering), and runs the compiled mapping with its canonical-schema check, the six rules and the"
            " outbound mapping in Python; the worker, the sandbox's gunicorn and PostgreSQL share the 2 cores."
            " `python -m bench batch --profile` splits the time by phase (recorded below when run)"
        )
    print(
        f"batch: {rate:,.0f} entries/s, COPY {copy_rate:,.0f} rows/s -> {ratio:.3f}x;"
        f" worker peak {result.peak_kb / 1024:,.0f} MiB",
        flush=True,
    )
    record_result(f"Batch sync ({ENTRIES:,} time entries PSA to ERP)", lines)
    return ok


def main_memory() -> bool:
    from bench.common import record_result

    results = []
    for count in MEMORY_SIZES:
        print(f"batch --memory: {count:,} entries ...", flush=True)
        results.append(measure(count, with_copy=False, timeout=6 * 3600))
        last = results[-1]
        print(f"  {count:,}: {last.seconds:.0f} s, worker peak {last.peak_kb / 1024:,.0f} MiB", flush=True)
    small, large = results
    ratio = large.peak_kb / small.peak_kb
    ok = ratio <= MEMORY_TARGET
    lines = [
        *(
            f"{m.entries:,} entries: worker peak {m.peak_kb / 1024:,.0f} MiB (VmHWM of the pool process),"
            f" {m.entries / m.seconds:,.0f} entries/s"
            for m in results
        ),
        f"machine load average (1/5/15 min) at the end: {' / '.join(f'{v:.1f}' for v in os.getloadavg())}",
        f"ratio peak {large.entries:,} / {small.entries:,}: {ratio:.2f}x (target <= {MEMORY_TARGET}x)",
        f"verdict: {'target met' if ok else 'TARGET MISSED'}",
    ]
    print(f"batch --memory: peak {small.peak_kb / 1024:,.0f} -> {large.peak_kb / 1024:,.0f} MiB = {ratio:.2f}x")
    record_result(f"Batch sync worker memory ({small.entries:,} vs {large.entries:,} entries)", lines)
    return ok


PROFILE_ENTRIES = int(os.environ.get("BENCH_PROFILE_ENTRIES", "5000"))
PHASES = {
    "main thread waits for a helper (the page read ahead, or the ERP's answer)": (
        "concurrent.futures",
        "Future",
        "result",
    ),
    "helper thread: fetch a PSA page (HTTP; the sandbox renders 500 entries)": (
        "connectors.builtin",
        "HarvestPsaConnector",
        "fetch_changes",
    ),
    "map + rules + outbound payloads (page_evaluate)": ("sync.batch", None, "page_evaluate"),
    "store messages, items, deliveries, cursor (page_store)": ("sync.batch", None, "page_store"),
    "helper thread: post a batch to the ERP (HTTP; the sandbox stores 500 entries)": (
        "connectors.builtin",
        "SandboxErpConnector",
        "upsert_many",
    ),
    "record attempts, deliveries, messages, xrefs (_record_batch)": ("sync.batch", None, "_record_batch"),
    "claim deliveries (_claim)": ("sync.batch", None, "_claim"),
}


def _phase_timers() -> dict[str, float]:
    """Wrap the batch path's phases with timers (in this process only); returns the live totals."""
    import functools
    import importlib

    totals = dict.fromkeys(PHASES, 0.0)
    for label, (module_name, class_name, name) in PHASES.items():
        owner: Any = importlib.import_module(module_name)
        if class_name:
            owner = getattr(owner, class_name)
        original = getattr(owner, name)

        def wrapper(*args: Any, _original: Any = original, _label: str = label, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                totals[_label] += time.perf_counter() - started

        setattr(owner, name, functools.wraps(original)(wrapper))
    return totals


def main_profile() -> bool:
    """Where the time goes: the batch path run in this process over BENCH_PROFILE_ENTRIES entries, split by
    phase, with a pyinstrument profile of the hub's side."""
    from pyinstrument import Profiler

    from bench.common import record_result

    with stack() as current:
        _django(current)
        _start_server(current)
        flow, _ = _seed(PROFILE_ENTRIES, current.port)
        from sync.batch import time_entries_batch_pull

        totals = _phase_timers()
        profiler = Profiler(interval=0.005)
        started = time.perf_counter()
        profiler.start()
        result = time_entries_batch_pull(route_id=flow.route.pk, seconds=3600)
        profiler.stop()
        seconds = time.perf_counter() - started
        _verify(flow, PROFILE_ENTRIES)
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    print(text[:20000])
    lines = [
        f"profile: {PROFILE_ENTRIES:,} entries in this process (no Celery), {seconds:.1f} s"
        f" = {result.delivered / seconds:,.0f} entries/s; share of the run per phase (the helper threads' HTTP"
        " calls overlap the main thread's phases, so the shares add up to more than the run):",
        *(
            f"{label}: {total / seconds:.0%} ({total / PROFILE_ENTRIES * 1000:.2f} ms/entry)"
            for label, total in totals.items()
        ),
    ]
    for line in lines:
        print(line)
    record_result(f"Batch sync profile ({PROFILE_ENTRIES:,} entries, in process)", lines)
    return True


def main(argv: list[str] | None = None) -> bool:
    args = sys.argv if argv is None else argv
    # A SIGTERM (Ctrl-C's cousin) still stops the server and worker and drops the database.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if "--profile" in args:
        return main_profile()
    return main_memory() if "--memory" in args else main_rate()


if __name__ == "__main__":
    raise SystemExit(0 if main(sys.argv[1:]) else 1)
