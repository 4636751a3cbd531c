"""Dashboard benchmark: the leaders' KPI dashboard and the exception-queue list over 1,000,000 messages.

Loads 1,000,000 messages spread over 90 days (with their deliveries and attempts), workflow runs and their
steps, and exception items into a separate PostgreSQL benchmark database (INSERT ... SELECT generate_series,
in the database itself, in time order as a running hub writes them: ids grow with time), then measures the
server time of the KPI dashboard and of the exception-queue list,
each the median of 10 requests through the Django test client (in process: the whole request, middleware and
template included, no network), with the query count of each. The dashboard is measured computed on every
request (the default 7-day range, and the 90-day range) and as served (its figures reused for 60 s, the
default HUB_KPI_CACHE_SECONDS). Target: under 500 ms each for the served dashboard and the exception-queue list.
The data is loaded once; later runs reuse it (HUB_BENCH_RELOAD=1 reloads). HUB_BENCH_PROFILE=1 also profiles
one dashboard request with pyinstrument.

    python -m bench dashboard
    HUB_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/hub_bench_dashboard python -m bench dashboard
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import record_result

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/hub_bench_dashboard"
MESSAGES = 1_000_000
DAYS = 90
OPPORTUNITY_RUNS = 25_000
MILESTONE_RUNS = 15_000
EXCEPTION_ITEMS = 25_000
REQUESTS = 10
TARGET_MS = 500.0
MARKER = "bench-"

# (flow, entity, source system slug, target system slug, share of the messages)
FLOWS = [
    ("time_expense_to_erp", "time_entry", "bench-psa", "bench-erp-uk", 0.40),
    ("client_master", "client", "bench-crm", "bench-erp-us", 0.20),
    ("opportunity_to_project", "opportunity", "bench-crm", "bench-erp-uk", 0.15),
    ("milestone_billing", "milestone", "bench-psa", "bench-erp-us", 0.15),
    ("invoice_status", "invoice", "bench-erp-uk", "bench-crm", 0.10),
]
SYSTEMS = [
    ("bench-crm", "Bench CRM", "crm"),
    ("bench-psa", "Bench PSA", "psa"),
    ("bench-erp-uk", "Bench ERP UK", "erp"),
    ("bench-erp-us", "Bench ERP US", "erp"),
]
STEPS = ["validate", "create_erp_project", "create_psa_project", "create_workspace", "release_staffing", "notify"]


def database_url() -> str:
    return os.environ.get("HUB_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)


def database_ensure(url: str) -> None:
    """Create the benchmark database if it does not exist yet (never touches any other database)."""
    import psycopg
    from psycopg import sql

    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _case(column: str, pairs: list[tuple[float, str]], default: str) -> str:
    """CASE WHEN column < bound THEN value ... ELSE default END for cumulative shares."""
    parts = " ".join(f"WHEN {column} < {bound:.4f} THEN {value}" for bound, value in pairs)
    return f"CASE {parts} ELSE {default} END"


def load(systems: dict[str, int]) -> dict[str, float]:
    """Insert the benchmark rows in the database itself; returns seconds per table."""
    from django.db import connection

    timings: dict[str, float] = {}
    bounds = []
    total = 0.0
    for flow, entity, source, target, share in FLOWS:
        total += share
        bounds.append((total, flow, entity, systems[source], systems[target]))
    flow_case = _case("r_flow", [(b, f"'{flow}'") for b, flow, *_ in bounds[:-1]], f"'{bounds[-1][1]}'")
    entity_case = _case("r_flow", [(b, f"'{entity}'") for b, _, entity, *_ in bounds[:-1]], f"'{bounds[-1][2]}'")
    source_case = _case("r_flow", [(b, str(source)) for b, _, _, source, _ in bounds[:-1]], str(bounds[-1][3]))
    target_case = " ".join(f"WHEN '{flow}' THEN {target}" for _, flow, _, _, target in bounds)
    status_case = _case(
        "r_status",
        [(0.93, "'delivered'"), (0.95, "'failed'"), (0.96, "'dead'"), (0.97, "'held'"), (0.98, "'received'")],
        "'queued'",
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(0.42)")
        started = time.perf_counter()
        cursor.execute(
            f"""
            INSERT INTO sync_message (system_id, entity, event_type, direction, idempotency_key, correlation_id,
                canonical_id, status, ordering_key, flow, attempts, last_error, notes, replay_count, received_at,
                updated_at, source_timestamp, mapped_at, validated_at, queued_at, delivered_at, failed_at)
            SELECT source, entity, entity || '.changed', 'inbound', '{MARKER}' || g, md5(g::text), 'c' || g, status,
                '', flow, 1, '', '[]'::jsonb, 0, received, received,
                received - interval '1 second' * (300 + 86400 * random()),
                received + interval '1 second', received + interval '2 second', received + interval '3 second',
                CASE WHEN status = 'delivered' THEN received + interval '1 second' * (4 + 900 * random() ^ 3) END,
                CASE WHEN status IN ('failed', 'dead') THEN received + interval '5 second' END
            FROM (
                SELECT g, {flow_case} AS flow, {entity_case} AS entity, {source_case} AS source,
                    {status_case} AS status,
                    now() - interval '1 second' * ({DAYS} * 86400 * random()) AS received
                FROM (SELECT g, random() AS r_flow, random() AS r_status
                      FROM generate_series(1, {MESSAGES}) AS g) AS draws
            ) AS rows
            ORDER BY received
            """
        )
        timings["messages"] = time.perf_counter() - started

        started = time.perf_counter()
        cursor.execute(
            f"""
            INSERT INTO sync_delivery (message_id, target_system_id, status, idempotency_key, revision, lookup_first,
                external_id, attempts, last_error, created_at, updated_at, delivered_at)
            SELECT m.id, CASE m.flow {target_case} END, m.status, 'bench-d-' || m.id, 0, false, 'x' || m.id,
                1, '', m.queued_at, m.queued_at, m.delivered_at
            FROM sync_message m
            WHERE m.idempotency_key LIKE '{MARKER}%' AND m.status IN ('delivered', 'failed', 'dead')
            ORDER BY m.id
            """
        )
        timings["deliveries"] = time.perf_counter() - started

        started = time.perf_counter()
        cursor.execute(
            """
            INSERT INTO sync_deliveryattempt (delivery_id, number, request_summary, status_code, duration_ms, outcome,
                error, task_id, correlation_id, created_at)
            SELECT d.id, 1, '{}'::jsonb, CASE WHEN d.status = 'delivered' THEN 200 ELSE 503 END, 20 + 200 * random(),
                CASE WHEN d.status = 'delivered' THEN 'delivered'
                     WHEN d.status = 'failed' THEN 'terminal_error' ELSE 'retryable_error' END,
                '', '', '', coalesce(d.delivered_at, d.created_at)
            FROM sync_delivery d WHERE d.idempotency_key LIKE 'bench-d-%'
            UNION ALL
            SELECT d.id, 2, '{}'::jsonb, 503, 20 + 200 * random(), 'retryable_error', '', '', '',
                d.created_at + interval '1 second'
            FROM sync_delivery d WHERE d.idempotency_key LIKE 'bench-d-%' AND d.id % 10 = 0
            ORDER BY 10
            """
        )
        timings["attempts"] = time.perf_counter() - started

        started = time.perf_counter()
        cursor.execute(
            f"""
            INSERT INTO workflows_workflowrun (flow, business_key, status, current_step, correlation_id, context,
                currency, triggered_at, started_at, finished_at, last_error, attempts, updated_at)
            SELECT 'opportunity_to_project', 'bench:opportunity:' || g,
                CASE WHEN g % 20 = 0 THEN 'held' ELSE 'completed' END, 'notify', md5(g::text), '{{}}'::jsonb, 'GBP',
                t, t, CASE WHEN g % 20 = 0 THEN NULL ELSE t + interval '1 second' * (300 + 259200 * random() ^ 2) END,
                '', 1, t
            FROM (SELECT g, now() - interval '1 second' * ({DAYS} * 86400 * random()) AS t
                  FROM generate_series(1, {OPPORTUNITY_RUNS}) AS g) AS runs
            UNION ALL
            SELECT 'milestone_billing', 'bench:milestone:' || g,
                CASE WHEN g % 10 = 0 THEN 'awaiting_approval' ELSE 'completed' END, 'create_billing_event',
                md5(g::text), '{{}}'::jsonb, 'USD', t, t,
                CASE WHEN g % 10 = 0 THEN NULL ELSE t + interval '1 second' * (3600 + 432000 * random()) END, '', 1, t
            FROM (SELECT g, now() - interval '1 second' * ({DAYS} * 86400 * random()) AS t
                  FROM generate_series(1, {MILESTONE_RUNS}) AS g) AS runs
            """
        )
        steps = ", ".join(f"('{name}', {position})" for position, name in enumerate(STEPS, start=1))
        cursor.execute(
            f"""
            INSERT INTO workflows_workflowstep (run_id, name, position, status, attempts, started_at, finished_at,
                error, result, compensation_note)
            SELECT r.id, s.name, s.position, CASE WHEN r.finished_at IS NULL AND s.position >= 5 THEN 'pending'
                ELSE 'done' END, 1, r.started_at,
                CASE WHEN r.finished_at IS NULL AND s.position >= 5 THEN NULL
                     ELSE r.triggered_at + (r.finished_at - r.triggered_at) * s.position / {len(STEPS)} END,
                '', '{{}}'::jsonb, ''
            FROM workflows_workflowrun r CROSS JOIN (VALUES {steps}) AS s(name, position)
            WHERE r.flow = 'opportunity_to_project' AND r.business_key LIKE 'bench:%'
            """
        )
        timings["runs and steps"] = time.perf_counter() - started

        started = time.perf_counter()
        categories = [
            "validation",
            "policy",
            "ownership_conflict",
            "duplicate_suspect",
            "target_rejected",
            "dead_letter",
            "approval_required",
            "activation_held",
        ]
        category_array = "ARRAY[" + ", ".join(f"'{c}'" for c in categories) + "]"
        flow_array = "ARRAY[" + ", ".join(f"'{flow}'" for flow, *_ in FLOWS) + "]"
        cursor.execute(
            f"""
            INSERT INTO exception_queue_exceptionitem (category, state, reason, failed_rules, suggested_action,
                required_approvals, currency, flow, step, external_id, created_at, updated_at, system_id)
            SELECT ({category_array})[1 + g % {len(categories)}],
                CASE WHEN g % 7 = 0 THEN 'open' ELSE 'resolved' END,
                'Benchmark item ' || g, '[]'::jsonb, '', 1, '', ({flow_array})[1 + g % {len(FLOWS)}], '',
                'EXT-' || g, t, t, {systems["bench-psa"]}
            FROM (SELECT g, now() - interval '1 second' * ({DAYS} * 86400 * random()) AS t
                  FROM generate_series(1, {EXCEPTION_ITEMS}) AS g) AS items
            ORDER BY t
            """
        )
        timings["exception items"] = time.perf_counter() - started
    return timings


def systems_ensure() -> dict[str, int]:
    from connectors.models import ConnectedSystem

    ids = {}
    for slug, name, role in SYSTEMS:
        system = ConnectedSystem.objects.filter(slug=slug).first()
        if system is None:
            system = ConnectedSystem(
                slug=slug,
                name=name,
                role=role,
                connector_type="generic_rest",
                base_url="http://127.0.0.1:9",
                settings={"auth_mode": "api_key"},
                credentials={"api_key": "bench-api-key-0001"},
            )
            system.save()
        ids[slug] = system.pk
    return ids


def vacuum_analyze() -> None:
    """VACUUM ANALYZE the loaded tables: fresh statistics, and a visibility map for index-only scans."""
    import psycopg

    with psycopg.connect(database_url(), autocommit=True) as connection:
        for table in (
            "sync_message",
            "sync_delivery",
            "sync_deliveryattempt",
            "workflows_workflowrun",
            "workflows_workflowstep",
            "exception_queue_exceptionitem",
        ):
            connection.execute(f"VACUUM ANALYZE {table}")


def measure(client: Any, url: str) -> tuple[float, int, int]:
    """(median ms of REQUESTS requests, query count, status) after one warm-up request."""
    from django.db import connection

    client.get(url)
    statements: list[str] = []

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append(sql)
        return execute(sql, params, many, context)

    # A wrapper on the connection object survives the reconnect each request starts with (CONN_MAX_AGE = 0).
    with connection.execute_wrapper(count):
        response = client.get(url)
    times = []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        client.get(url)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), len(statements), response.status_code


def profile(client: Any, url: str) -> None:
    """HUB_BENCH_PROFILE=1: one request computed from scratch under pyinstrument; the call tree is printed and
    written as HTML into HUB_VAR_DIR (the slow parts show as the SQL cursor calls of one selector)."""
    from django.conf import settings
    from pyinstrument import Profiler

    settings.HUB_KPI_CACHE_SECONDS = 0
    profiler = Profiler(interval=0.001)
    with profiler:
        client.get(url)
    print(profiler.output_text(unicode=True, color=False, show_all=False))
    target = os.path.join(os.environ.get("HUB_VAR_DIR", "/tmp"), "dashboard-profile.html")
    with open(target, "w") as out:
        out.write(profiler.output_html())
    print(f"profile written to {target}")


def run() -> bool:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from sync.models import Message

    url = database_url()
    call_command("migrate", verbosity=0)
    # Production static storage (hashed manifest), as the pages are served there.
    call_command("collectstatic", interactive=False, verbosity=0)
    systems = systems_ensure()
    loaded = Message.objects.filter(idempotency_key__startswith=MARKER).count()
    load_lines: list[str] = []
    if loaded != MESSAGES or os.environ.get("HUB_BENCH_RELOAD") == "1":
        if loaded:
            print(f"reloading: found {loaded} benchmark messages, expected {MESSAGES}")
            from django.db import connection

            with connection.cursor() as cursor:
                cursor.execute(
                    "TRUNCATE sync_deliveryattempt, sync_delivery, workflows_workflowstep, "
                    "exception_queue_decision, exception_queue_exceptionitem, workflows_workflowrun, "
                    "sync_followupevent, sync_orderingwatermark, sync_message CASCADE"
                )
        print(f"loading {MESSAGES:,} messages over {DAYS} days into {url.rpartition('/')[2]} ...", flush=True)
        started = time.perf_counter()
        timings = load(systems)
        vacuum_analyze()
        elapsed = time.perf_counter() - started
        load_lines.append(
            f"load: {elapsed:.0f} s in the database (INSERT ... SELECT generate_series, then VACUUM ANALYZE): "
            + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items())
        )
        print(load_lines[-1], flush=True)
    counts = {
        "messages": Message.objects.count(),
    }
    from exception_queue.models import ExceptionItem
    from sync.models import DeliveryAttempt
    from workflows.models import WorkflowRun, WorkflowStep

    counts["attempts"] = DeliveryAttempt.objects.count()
    counts["runs"] = WorkflowRun.objects.count()
    counts["steps"] = WorkflowStep.objects.count()
    counts["exception items"] = ExceptionItem.objects.count()

    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(username="bench-leader", defaults={"is_staff": True})
    user.is_staff = True
    user.is_superuser = True
    user.save()
    client = Client()
    client.force_login(user)

    from django.conf import settings
    from django.core.cache import cache

    cold = "KPI dashboard (7 days, default), computed on each request"
    served = "KPI dashboard (7 days, default), as served (figures reused for 60 s)"
    queue = "exception-queue list"
    pages = {
        cold: ("/admin/insights/kpidashboard/", 0),
        "KPI dashboard (90 days), computed on each request": ("/admin/insights/kpidashboard/?range=90d", 0),
        served: ("/admin/insights/kpidashboard/", 60),
        queue: ("/admin/exception_queue/exceptionitem/", 0),
    }
    results = {}
    for name, (page, cache_seconds) in pages.items():
        settings.HUB_KPI_CACHE_SECONDS = cache_seconds
        cache.clear()
        median_ms, queries, status = measure(client, page)
        if status != 200:
            print(f"{name}: HTTP {status}")
            return False
        results[name] = (median_ms, queries)
        print(f"{name}: median {median_ms:.0f} ms of {REQUESTS}, {queries} queries", flush=True)

    if os.environ.get("HUB_BENCH_PROFILE") == "1":
        profile(client, pages[cold][0])

    worst = max(results[served][0], results[queue][0])
    met = worst < TARGET_MS
    ratio = worst / TARGET_MS
    cold_ratio = results[cold][0] / TARGET_MS
    load_average = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    summary = (
        "dashboard: "
        + ", ".join(f"{name} {ms:.0f} ms ({queries} q)" for name, (ms, queries) in results.items())
        + f"; computed on each request {cold_ratio:.2f}x the target; load {load_average}; ratio {ratio:.2f}"
    )
    record_result(
        f"KPI dashboard and exception queue over {counts['messages']:,} messages",
        [
            "rows: " + ", ".join(f"{name} {count:,}" for name, count in counts.items()) + f" over {DAYS} days",
            *load_lines,
            *(
                f"{name}: median {ms:.0f} ms server time of {REQUESTS} requests (Django test client), {queries} queries"
                for name, (ms, queries) in results.items()
            ),
            f"ratio as served / target: {ratio:.2f}x (the slower of the dashboard as served and the exception-queue "
            f"list; target < {TARGET_MS:.0f} ms each)",
            f"ratio computed on each request / target: {cold_ratio:.2f}x",
            f"machine load during the run (1/5/15 min load average on 2 cores, shared): {load_average}",
            f"verdict: {'target met' if met else 'TARGET MISSED'} as served; computed on each request the "
            f"7-day dashboard {'meets' if cold_ratio < 1 else 'misses'} it",
        ],
    )
    print(summary)
    return met


def main() -> bool:
    """Run in a process of its own: the benchmark database must be the one Django is set up with."""
    from django.conf import settings

    if settings.configured:
        env = {**os.environ, "HUB_BENCH_DASHBOARD_CHILD": "1"}
        return subprocess.run([sys.executable, "-m", "bench.dashboard"], env=env, check=False).returncode == 0
    url = database_url()
    if not url.startswith("postgres"):
        print("the dashboard benchmark needs PostgreSQL: set HUB_BENCH_DATABASE_URL=postgres://...")
        return False
    database_ensure(url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("HUB_VAR_DIR", str(REPO / "var" / "bench-dashboard"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integrationhub.settings")
    import django

    django.setup()
    return run()


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
