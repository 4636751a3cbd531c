"""Pytest fixtures for the real local Tryton: build it if needed, serve a fresh copy of the template.

The session fixture runs tryton/setup.sh (about a second when .tryton/ is ready, a minute or two on
a bare checkout), then tryton/start.sh with its own run directory, database name and a free port, so
a test session never touches the developer's `hub` database or a server on :8011. Import the
fixtures into a test module with `from connectors.tests.tryton_fixtures import *  # noqa: F403`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connectors.choices import SystemRole
from connectors.http import clients_close
from connectors.models import ConnectedSystem
from connectors.tryton import TrytonConnector, sessions_clear

REPO = Path(__file__).resolve().parents[2]
TRYTON_DIR = REPO / "tryton"
SETUP_TIMEOUT_SECONDS = 900
TEST_DATABASE = "hub_test"


@dataclass(frozen=True)
class TrytonServer:
    """A running trytond serving a fresh copy of the template database."""

    url: str
    database: str
    ids: dict[str, Any]
    hub_login: str
    hub_password: str = ""
    run_dir: Path = Path()

    def __repr__(self) -> str:
        return f"<TrytonServer {self.url}/{self.database}>"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(script: str, env: dict[str, str], timeout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(TRYTON_DIR / script)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def tryton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrytonServer]:
    """Set up Tryton if needed and start a server on a free port against a fresh copy of the template."""
    home = Path(os.environ.get("TRYTON_HOME") or REPO / ".tryton")
    env = {**os.environ, "TRYTON_HOME": str(home)}
    setup = _run("setup.sh", env, SETUP_TIMEOUT_SECONDS)
    if setup.returncode != 0:
        pytest.fail(f"tryton/setup.sh failed ({setup.returncode}):\n{setup.stdout}\n{setup.stderr}", pytrace=False)

    run_dir = tmp_path_factory.mktemp("tryton-run")
    port = _free_port()
    env.update(TRYTON_RUN_DIR=str(run_dir), TRYTON_PORT=str(port), TRYTON_DB=TEST_DATABASE, TRYTON_SKIP_SETUP="1")
    start = _run("start.sh", env, 180)
    if start.returncode != 0:
        log = run_dir / "trytond.log"
        tail = log.read_text()[-3000:] if log.exists() else ""
        pytest.fail(f"tryton/start.sh failed:\n{start.stdout}\n{start.stderr}\n{tail}", pytrace=False)
    ids = json.loads((home / "ids.json").read_text())
    try:
        yield TrytonServer(
            url=f"http://127.0.0.1:{port}",
            database=TEST_DATABASE,
            ids=ids,
            hub_login=ids.get("hub_login", "hub"),
            hub_password=(home / "hub.pass").read_text().strip(),
            run_dir=run_dir,
        )
    finally:
        _run("stop.sh", env, 60)
        clients_close()
        sessions_clear()


@pytest.fixture
def make_tryton_system(tryton_server: TrytonServer) -> Callable[..., ConnectedSystem]:
    """An unsaved ConnectedSystem pointing at the test server (the connector needs no hub database)."""

    def make(**settings: Any) -> ConnectedSystem:
        ids = tryton_server.ids
        base = {
            "database": tryton_server.database,
            "company_id": ids["company"],
            "product_id": ids["product"],
            "payment_term_id": ids["payment_term"],
            "payment_method_id": ids["payment_method"],
            "timeout_seconds": 30,
        }
        return ConnectedSystem(
            name=f"Tryton {uuid.uuid4().hex[:6]}",
            slug=f"tryton-{uuid.uuid4().hex[:8]}",
            role=SystemRole.ERP,
            connector_type="tryton_erp",
            base_url=tryton_server.url,
            settings={**base, **settings},
            max_concurrency=4,
        )

    return make


@pytest.fixture
def tryton_connector(
    tryton_server: TrytonServer, make_tryton_system: Callable[..., ConnectedSystem]
) -> Iterator[TrytonConnector]:
    """A TrytonConnector logged in as the non-admin `hub` user, so access rights are really checked."""
    connector = TrytonConnector(
        system=make_tryton_system(),
        credentials={"user": tryton_server.hub_login, "password": tryton_server.hub_password},
    )
    yield connector
    sessions_clear()
