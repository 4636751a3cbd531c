"""`manage.py run_sandbox` serves only the sandbox URLs, in its own gunicorn, against the same database and cache."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection

from sandbox.choices import SandboxSystem
from sandbox.management.commands.run_sandbox import sandbox_server_argv
from sandbox.tests.conftest import ERP_KEY, set_faults

MANAGE = Path(settings.BASE_DIR) / "manage.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url() -> str:
    """The URL of the test database this process uses, for the server subprocess."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def test_argv_is_gunicorn_on_the_requested_port():
    argv = sandbox_server_argv(host="127.0.0.1", port=8100, workers=1, threads=4)
    assert argv[0].endswith("gunicorn") and argv[1] == "integrationhub.wsgi"
    assert argv[argv.index("--bind") + 1] == "127.0.0.1:8100"


@pytest.mark.slow
def test_run_sandbox_serves_the_sandbox_only(transactional_db, sandbox_credentials):
    # given the sandbox server started on a free port against this test database
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url()}
    process = subprocess.Popen(
        [sys.executable, str(MANAGE), "run_sandbox", "--port", str(port), "--workers", "1", "--threads", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/sandbox/erp/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("run_sandbox did not answer within 30 s")
        # then the sandbox answers with the shared credentials, and the hub's own URLs are not there
        assert httpx.get(f"{base}/sandbox/erp/whoami", headers={"X-API-Key": ERP_KEY}).json()["system"] == "erp"
        assert httpx.get(f"{base}/sandbox/erp/whoami").status_code == 401
        assert httpx.get(f"{base}/admin/").status_code == 404
        assert httpx.get(f"{base}/healthz").status_code == 404
        # and a hang-up fault drops the connection under gunicorn too
        set_faults(SandboxSystem.ERP, timeout_seconds=0.05, timeout_action="hang_up")
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            httpx.get(f"{base}/sandbox/erp/health", timeout=5)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
