"""The chaos tests' hub: its own broker and cache, worker processes that can be killed and started again, a
beat played by the test, a webhook sender over real HTTP, and the checks that nothing was lost or duplicated.

The hub under test keeps its database (the test database) but gets a broker and a cache of its own: a private
`redis-server` on a free port when the suite runs on Redis, else a private folder for the filesystem broker
and the file cache (the embedded default). So no other worker of the session (live_celery_worker_db) takes its
tasks, its workers are the only ones a test kills, and Redis can be stopped without touching anyone else's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings

from connectors.webhooks import standard_webhook_headers
from sync.choices import MESSAGE_FINAL_STATUSES, MessageStatus
from sync.models import Delivery, DeliveryAttempt, Message, PollCursor
from sync.tests.appending_target import AppendingTarget

WORKER_START_SECONDS = 90.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def worker_database_url() -> str:
    """The URL of the test database (the runner renamed NAME in place), for processes the test starts."""
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{database['NAME']}"
    user = database.get("USER") or ""
    password = f":{database['PASSWORD']}" if database.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = database.get("HOST") or "127.0.0.1"
    port = f":{database['PORT']}" if database.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{database['NAME']}"


def on_postgresql() -> bool:
    return settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


def on_redis() -> bool:
    """The suite runs with Redis as broker and cache (REDIS_URL set), not the embedded default."""
    return bool(getattr(settings, "REDIS_URL", ""))


# --- a private Redis --------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    """A redis-server of our own on a free port, without persistence: stopping it loses what it held, as a
    restarted Redis without a volume does."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        options = {"port": str(self.port), "bind": "127.0.0.1", "save": "", "appendonly": "no", "daemonize": "no"}
        self.process = subprocess.Popen(
            [binary, *(part for name, value in options.items() for part in (f"--{name}", value))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.answers():
                return
            assert self.process.poll() is None, f"redis-server exited with {self.process.returncode}"
            time.sleep(0.05)
        raise AssertionError("the private redis-server did not answer within 30 s")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """Gone at once, and everything it held with it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


# --- the hub's broker and cache for this test --------------------------------------------------------------


@contextmanager
def celery_broker(url: str, options: dict[str, Any]) -> Iterator[None]:
    """Publish (and ping) through `url` from this process for the duration; the app's pools are made anew."""
    from integrationhub.celery import app

    previous = (app.conf.broker_url, app.conf.broker_transport_options)

    def switch(to_url: str, to_options: dict[str, Any]) -> None:
        from kombu import pools

        if app._pool is not None:
            app._pool.force_close_all()
        app._pool = None
        if "amqp" in app.__dict__:
            app.amqp._producer_pool = None
        # kombu keeps producer and connection pools per connection in process-wide registries: a pool closed
        # here would be handed out again to the next publisher of the same broker ("Acquire on closed pool").
        pools.reset()
        app.conf.broker_url = to_url
        app.conf.broker_transport_options = to_options

    switch(url, options)
    try:
        yield
    finally:
        switch(*previous)


@dataclass
class Worker:
    """One `celery worker` process (with its pool processes, a process group of their own)."""

    process: subprocess.Popen
    hostname: str
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL to the whole group: the main process and its pool processes die mid-whatever."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if not self.alive():
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class ChaosHub:
    """The hub of one chaos test: its broker and cache (Redis of its own, or a folder of its own), the
    environment its workers start with, and the workers started so far."""

    folder: Path
    redis: RedisServer | None
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)

    def worker_start(self, *, concurrency: int = 2) -> Worker:
        """Start a worker on every hub queue and wait until it answers a ping."""
        from integrationhub.celery import app

        hostname = f"chaos-{uuid.uuid4().hex[:8]}"
        log = self.folder / f"{hostname}.log"
        command = [str(Path(sys.executable).with_name("celery")), "-A", "integrationhub", "worker"]
        command += ["--queues", ",".join(settings.HUB_QUEUES), "--concurrency", str(concurrency)]
        command += ["--hostname", f"{hostname}@%h", "--loglevel", "WARNING", "--without-mingle", "--without-gossip"]
        process = subprocess.Popen(
            command,
            env=self.env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = Worker(process, hostname, log)
        self.workers.append(worker)
        deadline = time.monotonic() + WORKER_START_SECONDS
        while time.monotonic() < deadline:
            assert worker.alive(), f"the chaos worker exited with {process.returncode}:\n{worker.log_tail()}"
            try:
                replies = app.control.ping(timeout=1.0)
            except Exception:  # noqa: BLE001 - the broker may be starting too; asked again
                replies = []
                time.sleep(0.5)
            if any(name.startswith(f"{hostname}@") for reply in replies for name in reply):
                return worker
        worker.kill()
        raise AssertionError(f"the chaos worker did not answer a ping within {WORKER_START_SECONDS} s")

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


@contextmanager
def chaos_hub_running(settings_fixture: Any, folder: Path) -> Iterator[ChaosHub]:
    """Point this process's cache and broker, and the workers' environment, at a broker and cache of the
    test's own; the sweeper period short (beat is the test's loop). Undone at the end, workers stopped."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "integrationhub.settings",
        "DATABASE_URL": worker_database_url(),
        "HUB_TEST_CONNECTORS": "1",
        "HUB_CIRCUIT_FAILURE_THRESHOLD": "3",
        "HUB_CIRCUIT_OPEN_SECONDS": "2",
    }
    env.pop("CELERY_BROKER_URL", None)
    redis: RedisServer | None = None
    if on_redis() and not shutil.which("redis-server"):
        pytest.skip("the chaos tests run a Redis of their own, and redis-server is not installed")
    if on_redis():
        redis = RedisServer()
        redis.start()
        env["REDIS_URL"] = redis.url
        # The production settings' bounded waits, so that a Redis that is gone fails a call in seconds.
        cache = {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis.url,
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 5},
        }
        broker_url, broker_options = redis.url, {"visibility_timeout": 3600}
    else:
        env.pop("REDIS_URL", None)
        # The embedded default's layout (integrationhub.env.broker_config) under a folder of our own.
        env["HUB_VAR_DIR"] = str(folder)
        queue, control = folder / "broker" / "queue", folder / "broker" / "control"
        for directory in (queue, control):
            directory.mkdir(parents=True, exist_ok=True)
        cache = {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(folder / "cache")}
        broker_url = "filesystem://"
        broker_options = {"data_folder_in": str(queue), "data_folder_out": str(queue), "control_folder": str(control)}
    settings_fixture.CACHES = {"default": cache}
    # The sweeper re-dispatches what a lost task left after 5 s instead of a minute; a delivery left in flight
    # counts as stuck after 30 s (longer than any call of these tests: the explicit advance in the kill test).
    settings_fixture.HUB_SYNC_SWEEP_AFTER_SECONDS = 5
    settings_fixture.HUB_SYNC_STUCK_DELIVERY_SECONDS = 30
    hub = ChaosHub(folder=folder, redis=redis, env=env)
    try:
        with celery_broker(broker_url, broker_options):
            yield hub
    finally:
        hub.stop()
        if redis is not None:
            redis.kill()


# --- beat, played by the test --------------------------------------------------------------------------------


@dataclass
class Beat:
    """The dispatcher every 0.2 s and the sweeper every second, as beat runs them (faster). A beat that fails
    (Redis or the database away) is counted and the next one tries again, as under beat."""

    failures: Counter = field(default_factory=Counter)
    last_sweep: float = 0.0

    def once(self) -> None:
        from sync.services import sync_sweep, sync_tick

        try:
            sync_tick()
            if time.monotonic() - self.last_sweep >= 1.0:
                self.last_sweep = time.monotonic()
                sync_sweep()
        except Exception as error:  # noqa: BLE001 - beat logs and carries on
            self.failures[type(error).__name__] += 1

    def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.once()
            time.sleep(0.2)

    def within(self, predicate: Callable[[], bool], *, timeout: float) -> bool:
        """Beat until `predicate()` holds (True) or `timeout` seconds have passed (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.once()
            if predicate():
                return True
            time.sleep(0.2)
        return False

    def until(self, predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Beat until `predicate()` holds; AssertionError naming `what` at the deadline."""
        assert self.within(predicate, timeout=timeout), f"{what}: not within {timeout:.0f} s"


# --- the sender -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    canonical_id: str
    version: int

    @property
    def name(self) -> str:
        return f"{self.canonical_id} v{self.version}"

    def record(self) -> dict[str, Any]:
        minutes = self.version * 10
        return {
            "Id": self.canonical_id,
            "Name": self.name,
            "Status": "active",
            "UpdatedAt": f"2026-11-26T{10 + minutes // 60:02d}:{minutes % 60:02d}:00Z",
        }


@dataclass
class Sent:
    event: Event
    webhook_id: str
    status: int | None  # None: no answer (the connection failed)
    error: str = ""


@dataclass
class Sender:
    """Signs and POSTs events to the hub's inbound endpoint over HTTP, each with its own webhook-id, and keeps
    every answer."""

    base_url: str
    source_slug: str
    secret: str
    sent: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, client: httpx.Client, event: Event) -> Sent:
        body = json.dumps(event.record())
        webhook_id = f"msg_{uuid.uuid4().hex}"
        headers = {
            **standard_webhook_headers(self.secret, webhook_id, int(time.time()), body),
            "Content-Type": "application/json",
        }
        try:
            response = client.post(
                f"{self.base_url}/api/v1/inbound/{self.source_slug}/client.updated/", content=body, headers=headers
            )
            sent = Sent(event, webhook_id, response.status_code, "" if response.is_success else response.text[:300])
        except httpx.HTTPError as error:
            sent = Sent(event, webhook_id, None, f"{type(error).__name__}: {error}")
        with self.lock:
            self.sent.append(sent)
        return sent

    def send_all(self, events: Iterable[Event], *, threads: int = 4) -> None:
        """Send as fast as `threads` senders go."""
        with httpx.Client(timeout=20) as client, ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda event: self.send(client, event), events))

    def send_paced(self, events: list[Event], *, per_second: float) -> threading.Thread:
        """Send at a steady pace from a thread of its own (started, returned for join)."""

        def run() -> None:
            started = time.monotonic()
            with httpx.Client(timeout=20) as client:
                for position, event in enumerate(events):
                    pause = started + position / per_second - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    self.send(client, event)

        thread = threading.Thread(target=run, name="chaos-sender", daemon=True)
        thread.start()
        return thread

    def statuses(self) -> Counter:
        return Counter(sent.status for sent in self.sent)

    def refusals(self, limit: int = 3) -> list[str]:
        """The first few answers other than 2xx, as status and body."""
        return [f"{s.status}: {s.error}" for s in self.sent if not (s.status and 200 <= s.status < 300)][:limit]


# --- the checks ------------------------------------------------------------------------------------------------


def stored_keys(source_id: int) -> set[str]:
    return set(Message.objects.filter(system_id=source_id).values_list("idempotency_key", flat=True))


def all_settled(source_id: int) -> bool:
    return not Message.objects.filter(system_id=source_id).exclude(status__in=MESSAGE_FINAL_STATUSES).exists()


@dataclass
class Outcome:
    """What the scenario came to, for the assertions and the report line."""

    sent: int
    answered: Counter
    stored: int
    refused_but_stored: list[str]
    accepted_not_stored: list[str]
    statuses: Counter
    expected: dict[str, str]
    at_target: dict[str, list[str]]
    creates: int
    updates: int

    @property
    def lost(self) -> list[str]:
        return sorted(cid for cid in self.expected if cid not in self.at_target)

    @property
    def duplicated(self) -> dict[str, int]:
        return {cid: len(names) for cid, names in self.at_target.items() if len(names) > 1}

    @property
    def not_newest(self) -> dict[str, tuple[list[str], str]]:
        return {
            cid: (names, self.expected[cid])
            for cid, names in self.at_target.items()
            if cid in self.expected and names != [self.expected[cid]]
        }

    @property
    def unexpected(self) -> list[str]:
        return sorted(cid for cid in self.at_target if cid not in self.expected)

    def summary(self, title: str, seconds: float) -> str:
        answered = ", ".join(
            f"{status or 'no answer'}: {count}" for status, count in sorted(self.answered.items(), key=str)
        )
        return (
            f"[chaos] {title}: {self.sent} events sent ({answered}); {self.stored} stored; "
            f"{len(self.at_target)} records at the target ({self.creates} creates, {self.updates} updates); "
            f"lost {len(self.lost)}, duplicated {len(self.duplicated)}, not newest {len(self.not_newest)}, "
            f"5xx stored {len(self.refused_but_stored)}, 2xx not stored {len(self.accepted_not_stored)}; "
            f"{seconds:.0f} s"
        )


def outcome_of(sender: Sender, source_id: int, target: AppendingTarget) -> Outcome:
    """Compare what was sent, what the hub stored and what the target holds."""
    messages = list(Message.objects.filter(system_id=source_id).values("idempotency_key", "raw_payload", "status"))
    keys = {message["idempotency_key"] for message in messages}
    expected: dict[str, tuple[str, str]] = {}
    for message in messages:
        payload = message["raw_payload"] or {}
        newest = expected.get(payload["Id"])
        if newest is None or payload["UpdatedAt"] > newest[0]:
            expected[payload["Id"]] = (payload["UpdatedAt"], payload["Name"])
    at_target = {
        cid: [str(record.get("name")) for record in records] for cid, records in target.by_canonical_id().items()
    }
    return Outcome(
        sent=len(sender.sent),
        answered=sender.statuses(),
        stored=len(messages),
        refused_but_stored=[s.webhook_id for s in sender.sent if s.status and s.status >= 500 and s.webhook_id in keys],
        accepted_not_stored=[
            s.webhook_id for s in sender.sent if s.status and 200 <= s.status < 300 and s.webhook_id not in keys
        ],
        statuses=Counter(m["status"] for m in messages),
        expected={cid: name for cid, (_, name) in expected.items()},
        at_target=at_target,
        creates=target.creates,
        updates=target.updates,
    )


def assert_nothing_lost_or_duplicated(outcome: Outcome) -> None:
    """Every stored record at the target exactly once, at its newest stored version, every message done."""
    done = {MessageStatus.DELIVERED, MessageStatus.SKIPPED_STALE}
    not_done = {status: count for status, count in outcome.statuses.items() if status not in done}
    assert not not_done, f"messages not delivered: {not_done}"
    assert not outcome.lost, f"{len(outcome.lost)} records lost, e.g. {outcome.lost[:5]}"
    assert not outcome.duplicated, (
        f"{len(outcome.duplicated)} records duplicated: {dict(list(outcome.duplicated.items())[:5])}"
    )
    assert not outcome.unexpected, f"records at the target the hub never stored: {outcome.unexpected[:5]}"
    not_newest = dict(list(outcome.not_newest.items())[:5])
    assert not outcome.not_newest, f"{len(outcome.not_newest)} records not at their newest version, e.g. {not_newest}"
    assert outcome.creates == len(outcome.at_target), "the target was asked to create more records than it holds"


def assert_stored_iff_accepted(outcome: Outcome) -> None:
    """Every event answered 2xx is stored; none answered 5xx is."""
    assert not outcome.accepted_not_stored, f"answered 2xx but not stored: {outcome.accepted_not_stored[:5]}"
    assert not outcome.refused_but_stored, f"answered 5xx but stored: {outcome.refused_but_stored[:5]}"


def entries_report(*, source: Any, canonical_ids: Iterable[str]) -> str:
    """Where each record of `source` stands in the hub, one line each: its messages (status, stage times), their
    deliveries (status, attempts, due and dispatch times, last error) and attempt rows, and the pull cursors of
    the source; so that a failed check says which records are missing and what state they were left in."""
    lines = []
    for canonical_id in sorted(canonical_ids):
        messages = list(Message.objects.filter(system=source, canonical_id=canonical_id).order_by("pk"))
        if not messages:
            lines.append(f"  {canonical_id}: no message stored")
        for message in messages:
            lines.append(
                f"  {canonical_id}: message #{message.pk} {message.status} (received {message.received_at:%H:%M:%S}, "
                f"queued {message.queued_at and f'{message.queued_at:%H:%M:%S}'}) error={message.last_error[:120]!r}"
            )
            deliveries = list(Delivery.objects.filter(message=message).order_by("pk"))
            if not deliveries:
                lines.append("    no delivery")
            for delivery in deliveries:
                attempts = [
                    f"#{a.number} {a.outcome} {a.status_code or ''} {a.created_at:%H:%M:%S}".strip()
                    for a in DeliveryAttempt.objects.filter(delivery=delivery).order_by("number")
                ]
                lines.append(
                    f"    delivery #{delivery.pk} {delivery.status} attempts={delivery.attempts} "
                    f"lookup_first={delivery.lookup_first} next_attempt_at={delivery.next_attempt_at} "
                    f"dispatched_at={delivery.dispatched_at} updated_at={delivery.updated_at} "
                    f"error={delivery.last_error[:120]!r} attempt rows={attempts or 'none'}"
                )
    for cursor in PollCursor.objects.filter(system=source):
        lines.append(
            f"  cursor {cursor.entity}: {cursor.last_outcome} at {cursor.cursor!r}, stored {cursor.records_stored}, "
            f"updated {cursor.updated_at}, error={cursor.last_error[:200]!r}"
        )
    return "\n".join(lines)
