import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.slow
def test_run_hub_on_the_embedded_default_is_ready_with_a_live_worker_within_15_seconds(tmp_path):
    # given a fresh var/ and no DATABASE_URL / REDIS_URL: SQLite and the filesystem broker, and no keys (a bare
    # machine: the embedded default needs neither SECRET_KEY nor FIELD_ENCRYPTION_KEY)
    unset = {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "SECRET_KEY", "FIELD_ENCRYPTION_KEY"}
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(HUB_VAR_DIR=str(tmp_path / "var"), DJANGO_SETTINGS_MODULE="integrationhub.settings")
    manage = [sys.executable, str(REPO / "manage.py")]
    subprocess.run([*manage, "migrate", "--no-input"], env=env, check=True, capture_output=True, cwd=REPO)
    subprocess.run([*manage, "collectstatic", "--no-input"], env=env, check=True, capture_output=True, cwd=REPO)
    port = _free_port()

    # when web, worker and beat start together
    hub = subprocess.Popen(
        [*manage, "run_hub", "--bind", f"127.0.0.1:{port}", "--web-workers", "1", "--worker-concurrency", "1"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started = time.monotonic()
    try:
        ready_after = None
        body: dict = {}
        while time.monotonic() - started < 30:
            try:
                status, body = _get_json(f"http://127.0.0.1:{port}/readyz")
            except OSError:  # not listening yet, refused, or slow to answer while starting
                status = 0
            if status == 200:
                ready_after = time.monotonic() - started
                break
            time.sleep(0.5)
        admin_status = urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=10).status

        # then the admin answers and /readyz reports a live worker within 15 s
        assert ready_after is not None, f"/readyz never became ready: {body}"
        assert ready_after < 15, f"ready only after {ready_after:.1f}s"
        assert body["parts"]["database"]["vendor"] == "sqlite"
        assert body["parts"]["broker"]["transport"] == "filesystem"
        assert body["parts"]["worker"]["workers"]
        assert admin_status == 200
    finally:
        # and Ctrl-C stops all three
        hub.send_signal(signal.SIGINT)
        output, _ = hub.communicate(timeout=60)
    assert "all stopped" in output, output[-2000:]
    assert hub.returncode == 0
