"""Harnesses of the connector contract suite: one per connector, each bound to a real counterpart.

A harness knows how to build its connected system (real HTTP to the sandbox systems served by pytest's
`live_server`, a real Tryton, or a real folder), which entity to upsert and fetch, how to count the
records carrying a key *in the counterpart itself* (never through the connector under test), how to
seed records, and how to make the counterpart fail (the sandbox's fault switches over its control
API, or a scripted local server for what the counterpart cannot produce).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.base import Connector
from connectors.choices import SystemRole
from connectors.models import ConnectedSystem
from connectors.registry import connector_for

CONTROL_TOKEN = "contract-control-token"
PAGE_SIZE = 4
PAGES = 3
CLIENT_TIMEOUT = 0.5
SLOW_ANSWER = 1.5
RETRY_AFTER = 7
_numbers = itertools.count(1)


def new_key(prefix: str = "ctr") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class Harness:
    """What the contract tests need to know about one connector and its counterpart."""

    name: str
    connector_type: str
    role: str
    base_url: str
    settings: dict[str, Any]
    credentials: dict[str, Any]
    wrong_credentials: dict[str, Any] = field(default_factory=dict)
    entity: str = ""
    fetch_entity: str = ""
    saved: bool = True
    system: ConnectedSystem | None = None

    # -- systems and connectors --

    def make_system(self, *, credentials: dict[str, Any] | None = None, **settings: Any) -> ConnectedSystem:
        number = next(_numbers)
        fields = {
            "name": f"{self.name} {number}",
            "slug": f"{self.name.replace('_', '-')}-{number}",
            "role": self.role,
            "connector_type": self.connector_type,
            "base_url": self.base_url,
            "settings": {**self.settings, **settings},
        }
        if self.saved:
            from connectors.services import connected_system_create

            # Through the service, so the settings are validated against the connector's schema.
            return connected_system_create(**fields, credentials=credentials or self.credentials, reason="contract")
        system = ConnectedSystem(**fields, max_concurrency=4)
        system.credentials = credentials or self.credentials
        return system

    def connector(self, **settings: Any) -> Connector:
        if settings:
            return connector_for(self.make_system(**settings))
        if self.system is None:
            self.system = self.make_system()
        return connector_for(self.system)

    # -- per counterpart (overridden) --

    def payload(self, key: str) -> dict[str, Any]:
        raise NotImplementedError

    def count(self, key: str) -> int:
        """How many live records of the upsert entity carry the payload of `key`, read in the counterpart."""
        raise NotImplementedError

    def seed(self, count: int) -> None:
        raise NotImplementedError

    def all_ids(self) -> set[str]:
        """Every record of the fetch entity, read in the counterpart."""
        raise NotImplementedError

    def record_id(self, record: dict[str, Any]) -> str:
        return str(record["id"])

    def warm(self, connector: Connector) -> None:
        """Make the calls that precede the one under test (a token), so a fault hits the call itself."""
        connector.health_check()

    def probe(self, connector: Connector) -> Any:
        """A read that must fail when the counterpart fails (404 included, unlike `find`)."""
        return connector.fetch_changes(self.fetch_entity, None)

    @contextlib.contextmanager
    def failing(self, **faults: Any) -> Iterator[Connector]:
        raise NotImplementedError
        yield

    def secrets(self) -> list[str]:
        return [str(v) for v in [*self.credentials.values(), *self.wrong_credentials.values()] if len(str(v)) >= 6]


# --- the sandbox systems --------------------------------------------------------------------------------


@dataclass
class SandboxHarness(Harness):
    sandbox: str = ""
    server_url: str = ""

    def control(self, method: str, **faults: Any) -> None:
        response = httpx.request(
            method,
            f"{self.server_url}/sandbox/{self.sandbox}/_faults",
            json={"enabled": True, **faults} if method == "PUT" else None,
            headers={"X-Sandbox-Control-Token": CONTROL_TOKEN},
            timeout=10,
        )
        assert response.status_code == 200, response.text

    @contextlib.contextmanager
    def failing(self, **faults: Any) -> Iterator[Connector]:
        """The harness's connector while the sandbox misbehaves as `faults` say (reset afterwards)."""
        settings = {"timeout_seconds": CLIENT_TIMEOUT} if faults.get("timeout_seconds") else {}
        connector = self.connector(**settings)
        self.warm(connector)
        self.control("PUT", **faults)
        try:
            yield connector
        finally:
            if faults.get("timeout_seconds"):
                time.sleep(faults["timeout_seconds"])  # let the sandbox finish its sleep before the reset
            self.control("DELETE")

    def secrets(self) -> list[str]:
        from sandbox.models import SandboxAccessToken

        issued = list(SandboxAccessToken.objects.values_list("token", flat=True))
        return [*super().secrets(), *issued]

    def records(self, object_type: str, **filters: Any) -> Any:
        from sandbox.models import SandboxRecord

        return SandboxRecord.objects.filter(system=self.sandbox, object_type=object_type, deleted=False, **filters)


@dataclass
class ErpHarness(SandboxHarness):
    def payload(self, key: str) -> dict[str, Any]:
        return {"name": f"Client {key}", "external_ref": key, "currency": "USD"}

    def count(self, key: str) -> int:
        return self.records("clients", data__external_ref=key).count()

    def seed(self, count: int) -> None:
        from sandbox.services import record_create

        for number in range(count):
            record_create(
                system="erp", object_type="clients", data={"name": f"Seeded {number}", "legal_entity": "US01"}
            )

    def all_ids(self) -> set[str]:
        return {r.external_id for r in self.records("clients")}


@dataclass
class PsaHarness(SandboxHarness):
    def payload(self, key: str) -> dict[str, Any]:
        return {"name": f"Client {key}", "external_reference": key, "currency": "USD"}

    def count(self, key: str) -> int:
        return self.records("clients", data__external_reference=key).count()

    def seed(self, count: int) -> None:
        from sandbox.services import record_create

        entry = self.records("time_entries").first()
        for number in range(count):
            record_create(system="psa", object_type="time_entries", data={**entry.data, "notes": f"Seeded {number}"})

    def all_ids(self) -> set[str]:
        return {r.external_id for r in self.records("time_entries")}


@dataclass
class CrmHarness(SandboxHarness):
    def payload(self, key: str) -> dict[str, Any]:
        return {"Name": f"Account {key}", "Description": key, "Industry": "Legal"}

    def count(self, key: str) -> int:
        return self.records("Account", data__Description=key).count()

    def seed(self, count: int) -> None:
        from sandbox.services import crm_record_save

        for number in range(count):
            crm_record_save(object_type="Account", data={"Name": f"Seeded {number}"}, notify=False)

    def all_ids(self) -> set[str]:
        return {r.external_id for r in self.records("Account")}


@dataclass
class CollabHarness(SandboxHarness):
    def payload(self, key: str) -> dict[str, Any]:
        return {"name": f"Workspace {key}", "code": key[:20]}

    def count(self, key: str) -> int:
        return self.records("groups", data__displayName=f"Workspace {key}").count()

    def probe(self, connector: Connector) -> Any:
        group = self.records("groups").first()
        return connector.get("project", group.external_id)


# --- Tryton ---------------------------------------------------------------------------------------------


@dataclass
class TrytonHarness(Harness):
    server: Any = None
    local_server: Any = None
    _make: Callable[..., ConnectedSystem] | None = None

    def make_system(self, *, credentials: dict[str, Any] | None = None, **settings: Any) -> ConnectedSystem:
        assert self._make is not None
        system = self._make(**{**self.settings, **settings})
        if "base_url" in settings:
            system.base_url = settings["base_url"]
        system.settings.pop("base_url", None)
        system.credentials = credentials or self.credentials
        return system

    def _search(self, domain: list[Any]) -> list[dict[str, Any]]:
        return self.connector().client.search_read("party.party", domain, ["id"])  # type: ignore[attr-defined]

    def payload(self, key: str) -> dict[str, Any]:
        return {"name": f"Party {key}"}

    def count(self, key: str) -> int:
        return len(self._search([("name", "=", f"Party {key}")]))

    def seed(self, count: int) -> None:
        connector = self.connector()
        for number in range(count):
            key = new_key("seed")
            connector.upsert("client", {"name": f"Seeded {number} {key}"}, key)

    def all_ids(self) -> set[str]:
        return {str(row["id"]) for row in self._search([])}

    def warm(self, connector: Connector) -> None:
        pass

    @contextlib.contextmanager
    def failing(self, **faults: Any) -> Iterator[Connector]:
        """A Tryton connector whose server answers as `faults` say: Tryton cannot be told to fail, so a
        scripted local server stands in for it (status codes, Retry-After, a slow answer)."""
        server = self.local_server
        status = int(faults.get("error_status") or (429 if faults.get("rate_limit_every_nth") else 0))
        if faults.get("burst_5xx"):
            status = 503
        headers = {"Retry-After": str(faults.get("retry_after_seconds", RETRY_AFTER))} if status in (429, 503) else {}
        slow = float(faults.get("timeout_seconds") or 0)

        def respond(_request: Any) -> tuple[int, Any, dict[str, str]]:
            if slow:
                time.sleep(slow)
                return 200, {"id": 1, "result": None}, {}
            return status, {"error": "scripted"}, headers

        for path in (f"/{self.server.database}/rpc/", "/rpc/"):
            server.route_fn("POST", path, respond)
        settings: dict[str, Any] = {"base_url": server.url}
        if slow:
            settings["timeout_seconds"] = CLIENT_TIMEOUT
        yield connector_for(self.make_system(**settings))

    @contextlib.contextmanager
    def accepting_then_failing(self) -> Iterator[tuple[Connector, Callable[[], None]]]:
        """A connector talking to Tryton through a proxy that forwards every call and loses the answer of
        a create (the record is stored, the hub hears 502); the returned function heals the proxy."""
        server = self.local_server
        target = f"{self.server.url}"
        state = {"fail": True}

        def forward(request: Any) -> tuple[int, Any, dict[str, str]]:
            headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "content-type")}
            answer = httpx.post(f"{target}{request.path}", content=request.body, headers=headers, timeout=30)
            method = json.loads(request.body or b"{}").get("method", "")
            if state["fail"] and method.endswith(".create"):
                return 502, {"error": "lost answer"}, {}
            return answer.status_code, answer.json(), {}

        for path in (f"/{self.server.database}/rpc/", "/rpc/"):
            server.route_fn("POST", path, forward)
        yield connector_for(self.make_system(base_url=server.url)), lambda: state.update(fail=False)

    def secrets(self) -> list[str]:
        from connectors import tryton

        sessions = [session.key for session in tryton._sessions.values()]
        return [*super().secrets(), *sessions]


# --- the CSV drop -----------------------------------------------------------------------------------------


@dataclass
class CsvHarness(Harness):
    folder: Path = Path()

    def seed(self, count: int) -> None:
        # Rows spread over three files, so pages cross file boundaries.
        per_file = -(-count // 3)
        written = 0
        for number in range(3):
            rows = min(per_file, count - written)
            lines = ["id,name,hours"] + [f"E-{number}-{row},Entry {row},{row % 8 + 0.5}" for row in range(rows)]
            (self.folder / f"2025010{number + 1}-time.csv").write_text("\n".join(lines) + "\n")
            written += rows

    def all_ids(self) -> set[str]:
        ids = set()
        for path in self.folder.glob("*.csv"):
            for row_number, line in enumerate(path.read_text().splitlines()[1:], start=2):
                if line.strip():
                    ids.add(f"{path.name}:{row_number}")
        return ids

    def record_id(self, record: dict[str, Any]) -> str:
        return f"{record['_file']}:{record['_row']}"


# --- building a harness -----------------------------------------------------------------------------------


def sandbox_harness(name: str, request: pytest.FixtureRequest) -> Harness:
    from sandbox.services import fault_profile_cache_clear, sandbox_demo_seed

    live_server = request.getfixturevalue("live_server")
    # The environment, not the `settings` fixture: overriding settings here loses the live server's test database.
    request.getfixturevalue("monkeypatch").setenv("SANDBOX_CONTROL_TOKEN", CONTROL_TOKEN)
    fault_profile_cache_clear()
    request.addfinalizer(fault_profile_cache_clear)
    demo = sandbox_demo_seed()
    url = live_server.url
    if name == "salesforce_crm":
        return CrmHarness(
            name=name,
            connector_type=name,
            role=SystemRole.CRM,
            base_url=f"{url}/sandbox/crm",
            settings={
                "api_version": "v60.0",
                "external_id_field": "Hub_Id__c",
                "health_path": "/whoami",
                "page_size": PAGE_SIZE,
            },
            credentials={"client_id": demo["crm"]["client_id"], "client_secret": demo["crm"]["client_secret"]},
            wrong_credentials={"client_id": demo["crm"]["client_id"], "client_secret": "not-the-crm-secret-42"},
            entity="client",
            fetch_entity="client",
            sandbox="crm",
            server_url=url,
        )
    if name == "harvest_psa":
        return PsaHarness(
            name=name,
            connector_type=name,
            role=SystemRole.PSA,
            base_url=f"{url}/sandbox/psa/v2",
            settings={"account_id": demo["psa"]["account_id"], "health_path": "/users/me", "page_size": PAGE_SIZE},
            credentials={"access_token": demo["psa"]["api_token"]},
            wrong_credentials={"access_token": "not-the-psa-token-42"},
            entity="client",
            fetch_entity="time_entry",
            sandbox="psa",
            server_url=url,
        )
    if name == "collaboration_suite":
        return CollabHarness(
            name=name,
            connector_type=name,
            role=SystemRole.COLLABORATION,
            base_url=f"{url}/sandbox/collab/v1.0",
            settings={
                "auth_mode": "oauth2",
                "token_url": f"{url}{demo['collab']['token_path']}",
                "health_path": "/organization",
            },
            credentials={"client_id": demo["collab"]["client_id"], "client_secret": demo["collab"]["client_secret"]},
            wrong_credentials={"client_id": demo["collab"]["client_id"], "client_secret": "not-the-collab-secret-42"},
            entity="project",
            sandbox="collab",
            server_url=url,
        )
    erp = {
        "role": SystemRole.ERP,
        "base_url": f"{url}/sandbox/erp/api",
        "credentials": {"api_key": demo["erp"]["api_token"]},
        "wrong_credentials": {"api_key": "not-the-erp-key-42"},
        "entity": "client",
        "fetch_entity": "client",
        "sandbox": "erp",
        "server_url": url,
    }
    if name == "sandbox_erp":
        settings = {"company_code": "US01", "health_path": "/clients", "page_size": PAGE_SIZE}
        return ErpHarness(name=name, connector_type=name, settings=settings, **erp)
    if name == "generic_rest":
        settings = {
            "auth_mode": "api_key",
            "api_key_header": "X-API-Key",
            "health_path": "/clients?limit=1",
            "endpoints": {
                "client": {
                    "path": "/clients",
                    "lookup_param": "idempotency_key",
                    "results_path": "results",
                    "updated_field": "updated_at",
                }
            },
            "pagination": {
                "style": "cursor",
                "page_size": PAGE_SIZE,
                "limit_param": "limit",
                "cursor_param": "cursor",
                "next_cursor_path": "next_cursor",
                "has_more_path": "has_more",
            },
        }
        harness = ErpHarness(name=name, connector_type=name, settings=settings, **erp)
        # The generic connector sends no legal entity of its own: the payload carries it.
        harness.payload = lambda key: {**ErpHarness.payload(harness, key), "legal_entity": "US01"}  # type: ignore[method-assign]
        return harness
    raise ValueError(name)


def tryton_harness(request: pytest.FixtureRequest) -> Harness:
    server = request.getfixturevalue("tryton_server")
    harness = TrytonHarness(
        name="tryton_erp",
        connector_type="tryton_erp",
        role=SystemRole.ERP,
        base_url=server.url,
        settings={"page_size": PAGE_SIZE},
        credentials={"user": server.hub_login, "password": server.hub_password},
        # Another user than the suite's: Tryton slows down every later login of a user after a failed one.
        wrong_credentials={"user": "admin", "password": "not-the-admin-password-42"},
        entity="client",
        fetch_entity="client",
        saved=False,
        server=server,
        local_server=request.getfixturevalue("local_server"),
    )
    harness._make = request.getfixturevalue("make_tryton_system")
    request.addfinalizer(_tryton_sessions_clear)
    return harness


def _tryton_sessions_clear() -> None:
    from connectors.tryton import sessions_clear

    sessions_clear()


def csv_harness(request: pytest.FixtureRequest) -> Harness:
    tmp_path = request.getfixturevalue("tmp_path")
    request.getfixturevalue("settings").HUB_CSV_DROP_ROOT = str(tmp_path)
    folder = tmp_path / "legacy"
    folder.mkdir()
    return CsvHarness(
        name="csv_drop",
        connector_type="csv_drop",
        role=SystemRole.PSA,
        base_url="http://legacy.invalid/",
        settings={"folder": "legacy", "page_size": PAGE_SIZE},
        credentials={},
        fetch_entity="time_entry",
        saved=False,
        folder=folder,
    )


@pytest.fixture
def harness(request: pytest.FixtureRequest) -> Harness:
    """The contract harness named by the test's parameter."""
    from django.core.cache import cache

    name = request.param
    if name == "tryton_erp":
        return tryton_harness(request)
    if name == "csv_drop":
        return csv_harness(request)
    cache.clear()  # OAuth2 tokens cached by an earlier test name rows that test's flush removed
    return sandbox_harness(name, request)
