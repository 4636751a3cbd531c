"""Events end to end: signed webhooks → real gunicorn → stored once → mapped → validated → delivered over HTTP.

`python -m bench events` (or `make bench BENCH=events`) needs only the local PostgreSQL and Redis. It creates
two databases of its own, migrates the hub's, configures a CRM → target client flow, starts the processes a
deployment runs (the hub under gunicorn, a Celery worker, Celery beat with the one-second dispatcher, and a
small HTTP target that stores records by idempotency key) and stops them and drops the databases at the end.

Measured, in one run:
- baseline: a bare Django view that INSERTs one row per request (bench/baseline_urls.py), under the same
  gunicorn settings, fed the same signed requests;
- sustained rate: every event POSTed as fast as the hub accepts it; the clock stops when the last accepted
  message is delivered (the backlog drains), so the rate is delivered events/s;
- latency: at half that rate, received → delivered per message, p50 / p95 / p99;
- correctness: every accepted message delivered, nothing failed, every record stored once at the target.

Environment: BENCH_PG_URL (server, default postgres://postgres@127.0.0.1:5432), BENCH_REDIS_URL (a Redis
database the benchmark owns and flushes, default redis://127.0.0.1:6379/14), BENCH_EVENTS (default 6000),
BENCH_CONNECTIONS (8), BENCH_WEB_WORKERS (2), BENCH_WEB_THREADS (4), BENCH_WORKER_CONCURRENCY (2, the pipeline
worker), BENCH_DELIVERY_THREADS (8, the delivery worker),
BENCH_LATENCY_SECONDS (20), BENCH_INGEST_EVENTS (3000, the ingest-alone phase before the workers start).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HUB_DB = "bench_events_hub"
BASELINE_DB = "bench_events_baseline"
TARGET = 0.5
EVENT_TYPE = "client.updated"


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


@dataclass(frozen=True)
class Config:
    pg_url: str
    redis_url: str
    events: int
    connections: int
    web_workers: int
    web_threads: int
    worker_concurrency: int
    delivery_threads: int
    latency_seconds: int
    ingest_events: int

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            pg_url=os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/"),
            redis_url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
            events=_env_int("BENCH_EVENTS", 6000),
            connections=_env_int("BENCH_CONNECTIONS", 8),
            web_workers=_env_int("BENCH_WEB_WORKERS", 2),
            web_threads=_env_int("BENCH_WEB_THREADS", 4),
            worker_concurrency=_env_int("BENCH_WORKER_CONCURRENCY", 2),
            delivery_threads=_env_int("BENCH_DELIVERY_THREADS", 8),
            latency_seconds=_env_int("BENCH_LATENCY_SECONDS", 20),
            ingest_events=_env_int("BENCH_INGEST_EVENTS", 3000),
        )

    def database_url(self, name: str) -> str:
        parts = urlsplit(self.pg_url)
        return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


# --- databases, processes ---------------------------------------------------------------------------


def _databases_recreate(config: Config, names: Sequence[str], *, create: bool = True) -> None:
    import psycopg

    with psycopg.connect(config.database_url("postgres"), autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if create:
                conn.execute(f'CREATE DATABASE "{name}"')


def _redis_flush(config: Config) -> None:
    import redis

    redis.Redis.from_url(config.redis_url).flushdb()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Processes:
    """Child processes started by the benchmark, each in its own process group, stopped together."""

    log_dir: Path
    children: dict[str, subprocess.Popen[bytes]]

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        self.children[name] = subprocess.Popen(
            list(argv), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self, *names: str) -> None:
        for name in names or list(self.children):
            child = self.children.pop(name, None)
            if child is None or child.poll() is not None:
                continue
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()

    def check(self) -> None:
        for name, child in self.children.items():
            if child.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {child.returncode}:\n{tail}")


def _wait_http(url: str, processes: Processes, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processes.check()
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error status: the server answers
                return
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def _gunicorn(config: Config, app: str, port: int) -> list[str]:
    return [
        str(BIN / "gunicorn"),
        app,
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(config.web_workers),
        "--threads",
        str(config.web_threads),
        # A gthread worker takes at most as many keep-alive connections as it has threads, so the load's
        # connections spread over every worker instead of piling onto whichever accepts first.
        "--worker-connections",
        str(config.web_threads),
    ]


# --- load generator: asyncio, raw HTTP/1.1 keep-alive, pre-signed requests ----------------------------


def _signed_requests(secret: str, slug: str, payloads: Sequence[dict[str, Any]]) -> list[bytes]:
    from sandbox.webhooks import standard_webhook_headers

    now = int(time.time())
    requests = []
    for payload in payloads:
        body = json.dumps(payload).encode()
        headers = standard_webhook_headers(secret, f"msg_{uuid.uuid4().hex}", now, body.decode())
        lines = [
            f"POST /api/v1/inbound/{slug}/{EVENT_TYPE}/ HTTP/1.1",
            "Host: 127.0.0.1",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        requests.append(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return requests


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bool, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if " " not in lines[0]:
        raise RuntimeError(f"unexpected answer: {head[:300]!r}")
    status = int(lines[0].split(" ", 2)[1])
    length, close, chunked = 0, False, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            close = True
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if not chunked:
        return status, close, await reader.readexactly(length) if length else b""
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        body += (await reader.readexactly(size + 2))[:size]
        if size == 0:
            return status, close, body


async def _send(port: int, requests: Sequence[bytes], connections: int, rate: float | None) -> list[int]:
    """POST every request over `connections` keep-alive connections, as fast as possible or paced at `rate`/s."""
    statuses = [0] * len(requests)
    position = iter(range(len(requests)))
    started = time.perf_counter()

    async def worker() -> None:
        reader = writer = None
        for index in position:
            if rate:
                delay = started + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            for _ in range(3):
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    assert reader is not None
                    status, close, _ = await _exchange(reader, writer, requests[index])
                    statuses[index] = status
                    if close:
                        writer.close()
                        reader = writer = None
                    break
                except (ConnectionError, asyncio.IncompleteReadError):
                    reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return statuses


def load(port: int, requests: Sequence[bytes], connections: int, rate: float | None = None) -> tuple[float, list[int]]:
    """(seconds, statuses) of sending every request."""
    started = time.perf_counter()
    statuses = asyncio.run(_send(port, requests, connections, rate))
    return time.perf_counter() - started, statuses


# --- the flow under test ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Flow:
    slug: str
    secret: str


def flow_install(target_url: str) -> Flow:
    """CRM (signed webhooks) → client mapping → generic REST target, the client-master flow and its policy."""
    from connectors.choices import SystemRole
    from connectors.models import ConnectedSystem
    from governance.choices import Flow as FlowName
    from governance.models import SyncPolicy
    from mappings.choices import Direction, MappingStatus
    from mappings.models import CanonicalEntity, FieldRule, MappingSet
    from mappings.services import canonical_schema_edit, canonical_schema_file, canonical_schema_publish
    from sandbox.webhooks import generate_webhook_secret
    from sync.models import Route

    entity, _ = CanonicalEntity.objects.get_or_create(name="client")
    if entity.published_schema is None:
        draft = canonical_schema_edit(entity=entity, json_schema=canonical_schema_file(entity_name="client"), user=None)
        canonical_schema_publish(schema=draft)
    secret = generate_webhook_secret()
    source = ConnectedSystem.objects.create(
        name="Bench CRM",
        slug="bench-crm",
        role=SystemRole.CRM,
        connector_type="generic_rest",
        base_url="http://127.0.0.1:9",
        settings={"auth_mode": "none"},
        webhook_secret=secret,
        # The hub's default inbound budget (HUB_INBOUND_RATE) is below what this benchmark sends.
        inbound_rate="100000/s",
    )
    target = ConnectedSystem.objects.create(
        name="Bench target",
        slug="bench-target",
        role=SystemRole.ERP,
        connector_type="generic_rest",
        base_url=target_url,
        settings={
            "auth_mode": "none",
            "timeout_seconds": 5,
            "endpoints": {"client": {"path": "/records/client", "batch_path": "/records/client/batch"}},
        },
        rate_limit_per_second=100000,
        max_concurrency=16,  # as many keep-alive connections as the delivery threads may use at once
    )
    mapping = MappingSet.objects.create(
        name="Bench CRM client in", system=source, entity=entity, direction=Direction.INBOUND
    )
    rules = [("id", "Id"), ("name", "Name"), ("status", "Status"), ("updated_at", "UpdatedAt")]
    for position, (target_path, source_path) in enumerate(rules):
        FieldRule.objects.create(
            mapping_set=mapping, position=position, target_path=target_path, source_paths=[source_path]
        )
    MappingSet.objects.filter(pk=mapping.pk).update(status=MappingStatus.PUBLISHED)
    SyncPolicy.objects.create(
        name="Bench client master", flow=FlowName.CLIENT_MASTER, max_attempts=5, backoff_base_seconds=1
    )
    Route.objects.create(
        name="Bench CRM → target",
        source_system=source,
        entity="client",
        target_system=target,
        flow=FlowName.CLIENT_MASTER,
    )
    return Flow(slug=source.slug, secret=secret)


def payloads(prefix: str, count: int) -> list[dict[str, Any]]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return [
        {
            "Id": f"{prefix}-{index}",
            "Name": f"Client {prefix} {index} Ltd",
            "Status": "active",
            "UpdatedAt": stamp,
            "Industry": "Professional services",
            "BillingCity": "London",
            "Website": f"https://client-{index}.example.com",
        }
        for index in range(count)
    ]


def _last_message_id() -> int:
    from sync.models import Message

    return Message.objects.order_by("-id").values_list("id", flat=True).first() or 0


def drain(after_id: int, expected: int, timeout: float) -> None:
    """Wait until every message after `after_id` is delivered; fail on a failed one or on time out."""
    from django.db import connection
    from django.db.models import Count

    from sync.choices import MessageStatus
    from sync.models import Message

    deadline = time.monotonic() + timeout
    while True:
        rows = dict(Message.objects.filter(pk__gt=after_id).values_list("status").annotate(n=Count("id")).order_by())
        connection.close()
        delivered = rows.get(MessageStatus.DELIVERED, 0)
        stuck = {status: n for status, n in rows.items() if status in ("failed", "dead", "held")}
        if stuck:
            raise RuntimeError(f"messages failed or were held: {stuck}")
        if delivered >= expected:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {delivered} of {expected} messages delivered within {timeout} s: {rows}")
        time.sleep(0.2)


def delivered_window(after_id: int) -> tuple[float, list[float]]:
    """(latest delivered_at as a Unix time, received → delivered latencies in ms) of messages after `after_id`."""
    from sync.models import Message

    rows = [
        (received, delivered)
        for received, delivered in Message.objects.filter(pk__gt=after_id).values_list("received_at", "delivered_at")
        if delivered is not None  # drain() saw every one delivered
    ]
    last = max(delivered for _, delivered in rows).timestamp()
    return last, sorted((delivered - received).total_seconds() * 1000 for received, delivered in rows)


def _percentile(values: Sequence[float], share: float) -> float:
    return values[min(len(values) - 1, round(share * (len(values) - 1)))]


# --- the run ---------------------------------------------------------------------------------------


def run(config: Config) -> bool:
    """Runs in a child process whose Django settings point at the benchmark's own databases."""
    from django.core.management import call_command
    from django.db import connection

    from bench.common import django_setup, record_result

    django_setup()
    log_dir = Path(os.environ["HUB_VAR_DIR"]) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    processes = Processes(log_dir=log_dir, children={})
    env = dict(os.environ)
    try:
        call_command("migrate", verbosity=0, interactive=False)
        target_port, baseline_port, hub_port = _free_port(), _free_port(), _free_port()
        target_url = f"http://127.0.0.1:{target_port}"
        flow = flow_install(target_url)
        connection.close()
        processes.start("target", [sys.executable, "-m", "bench.target", "--port", str(target_port)], env)
        _wait_http(f"{target_url}/health", processes)

        # Baseline: the bare INSERT view under the same gunicorn settings, fed the same kind of requests.
        baseline_url = config.database_url(BASELINE_DB)
        import psycopg

        from bench.baseline_urls import TABLE_SQL

        with psycopg.connect(baseline_url, autocommit=True) as conn:
            conn.execute(TABLE_SQL)
        baseline_env = env | {
            "DJANGO_SETTINGS_MODULE": "bench.baseline_settings",
            "BENCH_BASELINE_DATABASE_URL": baseline_url,
        }

        def baseline_measure(tag: str) -> float:
            processes.start(
                "baseline", _gunicorn(config, "django.core.wsgi:get_wsgi_application()", baseline_port), baseline_env
            )
            try:
                _wait_http(f"http://127.0.0.1:{baseline_port}/", processes)
                warm = _signed_requests(flow.secret, flow.slug, payloads(f"warm-{tag}", 300))
                load(baseline_port, warm, config.connections)
                requests = _signed_requests(flow.secret, flow.slug, payloads(tag, config.events))
                seconds, statuses = load(baseline_port, requests, config.connections)
            finally:
                processes.stop("baseline")
            if any(status != 202 for status in statuses):
                raise RuntimeError(f"baseline answered {sorted(set(statuses))}")
            return config.events / seconds

        # Measured before and after the hub, and averaged: the machine's speed drifts during a run.
        baseline_before = baseline_measure("base")
        print(f"baseline (bare INSERT view) before the hub: {baseline_before:,.0f} req/s", flush=True)

        # The hub: web, worker (all queues), beat (the one-second dispatcher and the sweeper).
        processes.start("web", _gunicorn(config, "integrationhub.wsgi", hub_port), env)
        _wait_http(f"http://127.0.0.1:{hub_port}/healthz", processes)

        # The hub's ingest alone (web, PostgreSQL, Redis; no worker yet): what the web request costs by itself.
        load(hub_port, _signed_requests(flow.secret, flow.slug, payloads("warm-web", 300)), config.connections)
        alone_requests = _signed_requests(flow.secret, flow.slug, payloads("alone", config.ingest_events))
        alone_seconds, statuses = load(hub_port, alone_requests, config.connections)
        if any(status != 202 for status in statuses):
            raise RuntimeError(f"the hub answered {sorted(set(statuses))}")
        alone_rate = config.ingest_events / alone_seconds
        print(f"hub ingest alone: {alone_rate:,.0f} req/s", flush=True)
        # The pipeline queues on a prefork worker; deliveries, which mostly wait on the target and the
        # database, on a thread pool (the deployment the README recommends for delivery queues).
        celery = [str(BIN / "celery"), "-A", "integrationhub", "worker", "--loglevel", "WARNING"]
        processes.start(
            "worker",
            [
                *celery,
                "--queues",
                "inbound,replay,housekeeping",
                "--concurrency",
                str(config.worker_concurrency),
                "--hostname",
                "bench-pipeline@%h",
            ],
            env,
        )
        processes.start(
            "delivery-worker",
            [
                *celery,
                "--queues",
                "delivery",
                "--pool",
                "threads",
                "--concurrency",
                str(config.delivery_threads),
                "--hostname",
                "bench-delivery@%h",
            ],
            env,
        )
        processes.start(
            "beat",
            [
                str(BIN / "celery"),
                "-A",
                "integrationhub",
                "beat",
                "--loglevel",
                "WARNING",
                "--scheduler",
                "django_celery_beat.schedulers:DatabaseScheduler",
                "--schedule",
                str(Path(env["HUB_VAR_DIR"]) / "celerybeat-schedule"),
            ],
            env,
        )
        _wait_http(f"http://127.0.0.1:{hub_port}/healthz", processes)

        # Warm-up: every process has loaded its code, compiled the mapping and opened its connections; the
        # events of the ingest-alone phase are delivered first.
        drain(0, 300 + config.ingest_events, timeout=300)
        start_id = _last_message_id()
        load(hub_port, _signed_requests(flow.secret, flow.slug, payloads("warm", 300)), config.connections)
        drain(start_id, 300, timeout=120)

        # Sustained rate: as fast as the hub accepts; the clock stops at the last delivery.
        start_id = _last_message_id()
        requests = _signed_requests(flow.secret, flow.slug, payloads("max", config.events))
        started = time.time()
        ingest_seconds, statuses = load(hub_port, requests, config.connections)
        accepted = sum(1 for status in statuses if status == 202)
        if accepted != config.events:
            raise RuntimeError(f"the hub answered {sorted(set(statuses))}")
        drain(start_id, accepted, timeout=600)
        last_delivered, max_latencies = delivered_window(start_id)
        rate = accepted / (last_delivered - started)
        ingest_rate = accepted / ingest_seconds
        print(f"hub: {rate:,.0f} delivered events/s (ingest {ingest_rate:,.0f} req/s)", flush=True)

        # Latency at half that rate.
        half = rate / 2
        count = max(100, int(half * config.latency_seconds))
        start_id = _last_message_id()
        requests = _signed_requests(flow.secret, flow.slug, payloads("half", count))
        _, statuses = load(hub_port, requests, config.connections, rate=half)
        if any(status != 202 for status in statuses):
            raise RuntimeError(f"the hub answered {sorted(set(statuses))}")
        drain(start_id, count, timeout=600)
        _, latencies = delivered_window(start_id)
        p50, p95, p99 = (_percentile(latencies, share) for share in (0.5, 0.95, 0.99))

        # Every accepted event is one record at the target, none applied twice.
        with urllib.request.urlopen(f"{target_url}/_stats", timeout=5) as response:
            stats = json.load(response)
        expected = 600 + config.ingest_events + accepted + count
        if stats["records"] != expected:
            raise RuntimeError(f"the target stored {stats['records']} records for {expected} accepted events")
        processes.stop("web", "worker", "delivery-worker", "beat")
        baseline_after = baseline_measure("base-after")
        baseline_rate = (baseline_before + baseline_after) / 2
        print(f"baseline (bare INSERT view) after the hub: {baseline_after:,.0f} req/s", flush=True)
        ratio = rate / baseline_rate
        met = ratio >= TARGET
        lines = [
            f"pipeline: signed webhook → gunicorn ({config.web_workers} workers x {config.web_threads} threads, "
            f"{config.web_threads} connections per worker) → "
            f"message stored once → beat dispatcher → Celery worker (prefork -c{config.worker_concurrency}) maps, "
            f"validates, routes → delivery worker (threads -c{config.delivery_threads}) HTTP batch upsert to a "
            "local target (one call per delivery batch) → delivery attempts recorded; PostgreSQL + Redis",
            f"load: {config.events} events over {config.connections} keep-alive connections (asyncio), "
            "pre-signed (Standard Webhooks), after a 300-event warm-up",
            f"baseline, bare Django view + one INSERT, same gunicorn: {baseline_rate:,.0f} req/s (mean of "
            f"{baseline_before:,.0f} before and {baseline_after:,.0f} after the hub)",
            f"hub ingest alone, no worker running ({config.ingest_events} events): {alone_rate:,.0f} req/s "
            f"({alone_rate / baseline_rate:.2f}x the bare INSERT)",
            f"hub ingest while the pipeline runs (202 answered): {ingest_rate:,.0f} req/s",
            f"hub sustained, first POST → last delivery (backlog drained): {rate:,.0f} delivered events/s",
            f"latency received → delivered at {half:,.0f} events/s ({count} events): "
            f"p50 {p50:,.0f} ms, p95 {p95:,.0f} ms, p99 {p99:,.0f} ms; under full load p50 "
            f"{_percentile(max_latencies, 0.5):,.0f} ms",
            f"target: {stats['records']} records for {expected} accepted events, {stats['repeated']} repeated keys",
            f"ratio hub / bare INSERT: {ratio:.2f}x (target >= {TARGET}x)",
            "verdict: target met" if met else "verdict: TARGET MISSED",
        ]
        record_result("Events end to end (webhook → delivered)", lines)
        for line in lines:
            print(f"  {line}")
        print(f"events end to end: {rate:,.0f} delivered/s vs bare INSERT {baseline_rate:,.0f}/s, ratio {ratio:.2f}x")
        return met
    finally:
        processes.stop()
        connection.close()


@contextmanager
def _bench_environment(config: Config) -> Iterator[dict[str, str]]:
    from cryptography.fernet import Fernet

    with tempfile.TemporaryDirectory(prefix="bench-events-") as var_dir:
        _databases_recreate(config, [HUB_DB, BASELINE_DB])
        _redis_flush(config)
        try:
            yield os.environ | {
                "DJANGO_SETTINGS_MODULE": "integrationhub.settings",
                "DATABASE_URL": config.database_url(HUB_DB),
                "REDIS_URL": config.redis_url,
                "CELERY_BROKER_URL": config.redis_url,
                "HUB_VAR_DIR": var_dir,
                "FIELD_ENCRYPTION_KEY": os.environ.get("FIELD_ENCRYPTION_KEY") or Fernet.generate_key().decode(),
                # JSON logs of every call would be written to a file nobody reads; warnings still are.
                "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
                "BENCH_EVENTS_CHILD": "1",
            }
        finally:
            if not os.environ.get("BENCH_KEEP"):  # BENCH_KEEP=1 keeps the databases to look into
                _databases_recreate(config, [HUB_DB, BASELINE_DB], create=False)
                _redis_flush(config)


def main() -> bool:
    config = Config.from_env()
    if os.environ.get("BENCH_EVENTS_CHILD"):
        return run(config)
    # A child process, so that its Django settings (the benchmark's databases) never mix with another benchmark's.
    with _bench_environment(config) as env:
        code = subprocess.call([sys.executable, "-m", "bench.events"], cwd=ROOT, env=env)
    return code == 0


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
