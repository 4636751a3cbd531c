"""Fixtures of the sync engine tests: a real local HTTP target with scripted faults, systems, mappings, routes."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from django.test import Client

from connectors.choices import SystemRole
from connectors.http import clients_close
from connectors.models import ConnectedSystem
from connectors.tests.contract_fixtures import PsaHarness, sandbox_harness
from governance.choices import Flow
from governance.models import SyncPolicy
from mappings.choices import Direction, MappingStatus
from mappings.models import CanonicalEntity, FieldRule, MappingSet
from mappings.runtime import mapping_cache_invalidate
from mappings.services import canonical_schema_edit, canonical_schema_file, canonical_schema_publish
from sandbox.webhooks import generate_webhook_secret, standard_webhook_headers
from sync.models import Route
from sync.tests.appending_target import appending_target  # noqa: F401  (a fixture of these tests)
from sync.tests.batch_flow import TimeFlow, time_flow_configure


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Target:
    """A target system on 127.0.0.1: stores records by id, remembers idempotency keys, and answers the next
    upserts from a script first (status, headers, delay) when one is set."""

    url: str = ""
    records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    script: list[dict[str, Any]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, *responses: dict[str, Any]) -> None:
        with self.lock:
            self.script.extend(responses)

    def upserts(self) -> list[Call]:
        return [call for call in self.calls if call.method == "POST"]

    def finds(self) -> list[Call]:
        return [call for call in self.calls if call.method == "GET" and "idempotency_key" in call.path]

    def record(self, entity: str, canonical_id: str) -> dict[str, Any] | None:
        return self.records.get(entity, {}).get(canonical_id)


def _handler(target: Target) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body are two writes: without this, Nagle holds the body for the client's delayed ACK.
        disable_nagle_algorithm = True

        def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            with target.lock:
                target.calls.append(Call("GET", self.path, dict(self.headers.items()), None))
                key = parse_qs(url.query).get("idempotency_key", [""])[0]
                external_id = target.keys.get(key)
            if url.path == "/health":
                self._reply(200, {"ok": True})
            elif external_id:
                self._reply(200, {"id": external_id})
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            payload = json.loads(raw or b"{}")
            entity = urlparse(self.path).path.rstrip("/").rsplit("/", 1)[-1]
            key = self.headers.get("Idempotency-Key", "")
            with target.lock:
                target.calls.append(Call("POST", self.path, dict(self.headers.items()), payload))
                scripted = target.script.pop(0) if target.script else None
            if scripted and scripted.get("store"):
                # The write lands, then the answer is slow: the caller may die before it reads it.
                with target.lock:
                    target.records.setdefault(entity, {})[str(payload.get("id"))] = payload
                    target.keys[key] = f"T-{entity}-{payload.get('id')}"
                time.sleep(scripted.get("delay", 0))
                self._reply(201, {"id": target.keys[key], "created": True})
                return
            if scripted:
                time.sleep(scripted.get("delay", 0))
                self._reply(scripted["status"], {"error": "scripted"}, scripted.get("headers"))
                return
            with target.lock:
                if key in target.keys:
                    self._reply(200, {"id": target.keys[key], "created": False})
                    return
                records = target.records.setdefault(entity, {})
                canonical_id = str(payload.get("id"))
                created = canonical_id not in records
                records[canonical_id] = payload
                external_id = f"T-{entity}-{canonical_id}"
                target.keys[key] = external_id
            self._reply(201 if created else 200, {"id": external_id, "created": created})

        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            payload = json.loads(self.rfile.read(length) if length else b"{}")
            parts = urlparse(self.path).path.strip("/").split("/")
            entity, external_id = parts[-2], parts[-1]
            with target.lock:
                target.calls.append(Call("PUT", self.path, dict(self.headers.items()), payload))
                records = target.records.setdefault(entity, {})
                canonical_id = external_id.removeprefix(f"T-{entity}-")
                found = canonical_id in records
                if found:
                    records[canonical_id] = payload
            if found:
                self._reply(200, {"id": external_id, "created": False})
            else:
                self._reply(404, {"error": "not found"})

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def target() -> Iterator[Target]:
    """A running target server; closed (with the pooled clients) after the test."""
    state = Target()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        clients_close()


def unique(prefix: str) -> str:
    # Unique slugs keep the shared cache's per-system keys (rate budget, breaker) apart between tests.
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def canonical_entity_install(name: str) -> CanonicalEntity:
    """One canonical entity with its shipped schema published (all 13 take a second per test)."""
    entity, _ = CanonicalEntity.objects.get_or_create(name=name)
    if entity.published_schema is None:
        draft = canonical_schema_edit(entity=entity, json_schema=canonical_schema_file(entity_name=name), user=None)
        canonical_schema_publish(schema=draft)
    return entity


@dataclass
class Flowset:
    """A source CRM with an inbound client mapping, a target with a route from it, and the flow's policy."""

    source: ConnectedSystem
    target_system: ConnectedSystem
    route: Route
    policy: SyncPolicy
    secret: str


@pytest.fixture
def make_flow(request: pytest.FixtureRequest) -> Callable[..., Flowset]:
    """Build a client flow CRM → target; `target_url` points the target system at a Target server."""

    def make(
        target_url: str = "http://127.0.0.1:9",
        *,
        max_attempts: int = 5,
        backoff_base_seconds: int = 0,
        backoff_cap_seconds: int = 1,
        validation_rules: list[dict[str, Any]] | None = None,
        approval_threshold: Decimal | None = None,
        second_threshold: Decimal | None = None,
        entity: str = "client",
        rules: list[tuple[str, str]] | None = None,
    ) -> Flowset:
        canonical_entity_install(entity)
        secret = generate_webhook_secret()
        source = ConnectedSystem.objects.create(
            name=unique("CRM"),
            slug=unique("crm"),
            role=SystemRole.CRM,
            connector_type="generic_rest",
            base_url="http://127.0.0.1:9",
            settings={"auth_mode": "none"},
            webhook_secret=secret,
        )
        target_system = ConnectedSystem.objects.create(
            name=unique("Target"),
            slug=unique("target"),
            role=SystemRole.ERP,
            connector_type="sync_test_target",
            base_url=target_url,
            settings={"timeout_seconds": 5},
            rate_limit_per_second=Decimal("1000"),
        )
        mapping = MappingSet.objects.create(
            name=f"{source.slug} {entity} in",
            system=source,
            entity=CanonicalEntity.objects.get(name=entity),
            direction=Direction.INBOUND,
        )
        for position, (target_path, source_path) in enumerate(
            rules or [("id", "Id"), ("name", "Name"), ("status", "Status"), ("updated_at", "UpdatedAt")]
        ):
            FieldRule.objects.create(
                mapping_set=mapping, position=position, target_path=target_path, source_paths=[source_path]
            )
        MappingSet.objects.filter(pk=mapping.pk).update(status=MappingStatus.PUBLISHED)
        # Rolled-back tests reuse ids on SQLite; a new generation drops compiled mappings of earlier tests.
        mapping_cache_invalidate()
        policy = SyncPolicy.objects.create(
            name=unique("policy"),
            flow=Flow.CLIENT_MASTER,
            max_attempts=max_attempts,
            dead_letter_threshold=max_attempts,
            backoff_base_seconds=backoff_base_seconds,
            backoff_cap_seconds=backoff_cap_seconds,
            jitter=False,
            validation_rules=validation_rules or [],
            approval_threshold_amount=approval_threshold,
            second_approval_threshold_amount=second_threshold,
            approval_currency="GBP" if approval_threshold is not None else "",
        )
        route = Route.objects.create(
            name=f"{source.slug} → {target_system.slug}",
            source_system=source,
            entity=entity,
            target_system=target_system,
            flow=Flow.CLIENT_MASTER,
        )
        return Flowset(source, target_system, route, policy, secret)

    return make


def signed_post(
    client: Client,
    flow: Flowset,
    payload: Any,
    *,
    event_type: str = "client.updated",
    msg_id: str | None = None,
    timestamp: int | None = None,
    secret: str | None = None,
    body: str | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """POST a Standard-Webhooks-signed event to the hub's inbound endpoint."""
    text = body if body is not None else json.dumps(payload)
    signed = standard_webhook_headers(
        secret or flow.secret, msg_id or f"msg_{uuid.uuid4().hex}", timestamp or int(time.time()), text
    )
    return client.post(
        f"/api/v1/inbound/{flow.source.slug}/{event_type}/",
        data=text,
        content_type="application/json",
        headers={**signed, **(headers or {})},
    )


def client_record(canonical_id: str = "C-1", name: str = "Acme", updated_at: str = "2026-11-26T10:00:00Z") -> dict:
    return {"Id": canonical_id, "Name": name, "Status": "active", "UpdatedAt": updated_at}


def wait_for(predicate: Callable[[], bool], *, timeout: float = 30.0, tick: bool = True) -> None:
    """Run the dispatcher (as beat would, every 0.2 s here) until `predicate()` holds or time runs out."""
    from sync.services import sync_tick

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tick:
            sync_tick()
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"condition not met within {timeout} s")


# Pages of four PSA entries: several pages even with the demo's few approved entries.
TIME_PAGE_SIZE = 4


@pytest.fixture
def time_psa(request: pytest.FixtureRequest) -> PsaHarness:
    """The sandbox PSA and ERP over real HTTP, for the batch path of approved time."""
    harness = sandbox_harness("harvest_psa", request)
    assert isinstance(harness, PsaHarness)
    return harness


@pytest.fixture
def time_flow(time_psa: PsaHarness, request: pytest.FixtureRequest) -> TimeFlow:
    """The approved-time flow PSA → ERP configured against `time_psa`, with the demo people and project."""
    psa = time_psa
    from sandbox.models import SandboxRecord
    from sandbox.services import DEMO_PEOPLE, sandbox_demo_seed

    credentials = sandbox_demo_seed()
    users = {
        person.data["roles"][0]: int(person.external_id)
        for person in SandboxRecord.objects.filter(system="psa", object_type="users")
    }
    people = [(users[role], role, bill) for _, _, role, _, bill in DEMO_PEOPLE]
    psa_project = SandboxRecord.objects.get(system="psa", object_type="projects", data__code="NW-DATA-01")
    erp_project = SandboxRecord.objects.get(system="erp", object_type="projects", data__code="NW-DATA-01")
    request.addfinalizer(clients_close)
    return time_flow_configure(
        psa_url=f"{psa.server_url}/sandbox/psa/v2",
        erp_url=f"{psa.server_url}/sandbox/erp/api",
        credentials=credentials,
        people=people,
        projects=[(int(psa_project.external_id), int(erp_project.external_id))],
        batch_size=10,
        page_size=TIME_PAGE_SIZE,
    )
