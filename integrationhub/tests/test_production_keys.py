"""With DEBUG off on a database named by DATABASE_URL, the hub does not start without a real SECRET_KEY and
FIELD_ENCRYPTION_KEY, and says which variables to set and how to generate them."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from integrationhub.production_keys import EMBEDDED_SECRET_KEY, production_key_problems

REPO = Path(__file__).resolve().parents[2]
REAL_SECRET_KEY = secrets.token_urlsafe(50)
REAL_FERNET_KEY = base64.urlsafe_b64encode(os.urandom(32)).decode()
# Never connected to: the settings refuse before anything opens a connection.
PRODUCTION_DATABASE = "postgres://hub:pw@127.0.0.1:1/hub"
KEY_VARIABLES = ("SECRET_KEY", "FIELD_ENCRYPTION_KEY", "DEBUG", "DATABASE_URL", "DJANGO_ALLOW_ASYNC_UNSAFE")


def environment(tmp_path: Path, **variables: str) -> dict[str, str]:
    """This process's environment without the key variables (the suite sets its own), plus `variables`."""
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}
    return {**env, "HUB_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "integrationhub.settings", **variables}


def import_settings(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import integrationhub.settings"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("secret_key", "field_key", "expected"),
    [
        ("", "", ["SECRET_KEY is not set", "FIELD_ENCRYPTION_KEY is not set"]),
        (EMBEDDED_SECRET_KEY, REAL_FERNET_KEY, ["SECRET_KEY is a public development default"]),
        ("change-me", "change-me", ["SECRET_KEY is a public", "FIELD_ENCRYPTION_KEY is a public"]),
        (REAL_SECRET_KEY, f"{REAL_FERNET_KEY},change-me", ["FIELD_ENCRYPTION_KEY is a public"]),
        (REAL_SECRET_KEY, f"{REAL_FERNET_KEY},not-a-key", ["FIELD_ENCRYPTION_KEY's key #2 is not a Fernet key"]),
        ("  ", " , ", ["SECRET_KEY is not set", "FIELD_ENCRYPTION_KEY is not set"]),
        (REAL_SECRET_KEY, REAL_FERNET_KEY, []),
    ],
)
def test_production_key_problems_name_each_missing_or_public_key(secret_key, field_key, expected):
    problems = production_key_problems(secret_key=secret_key, field_encryption_key=field_key)
    assert len(problems) == len(expected)
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start)


@pytest.mark.parametrize(
    "keys",
    [
        {},
        {"SECRET_KEY": EMBEDDED_SECRET_KEY, "FIELD_ENCRYPTION_KEY": REAL_FERNET_KEY},
        {"SECRET_KEY": REAL_SECRET_KEY},
        {"SECRET_KEY": "change-me", "FIELD_ENCRYPTION_KEY": "change-me"},  # .env.example as copied
    ],
    ids=["none", "development-secret-key", "no-encryption-key", "env-example-placeholders"],
)
def test_settings_refuse_a_production_run_without_real_keys_and_say_how_to_make_them(tmp_path, keys):
    # given DEBUG off, a PostgreSQL DATABASE_URL, and a key missing or public
    env = environment(tmp_path, DEBUG="false", DATABASE_URL=PRODUCTION_DATABASE, **keys)
    # when a process loads the settings
    result = import_settings(env)
    # then it stops with an error naming both variables and the commands that generate them
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "The hub will not start" in result.stderr
    for text in ("SECRET_KEY", "FIELD_ENCRYPTION_KEY", "secrets.token_urlsafe(50)", "Fernet.generate_key().decode()"):
        assert text in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize(
    "variables",
    [
        {"DEBUG": "false", "DATABASE_URL": PRODUCTION_DATABASE, "SECRET_KEY": REAL_SECRET_KEY},
        {"DEBUG": "false"},  # the embedded SQLite default: a first run on a bare machine
        {"DEBUG": "true", "DATABASE_URL": PRODUCTION_DATABASE},  # a development machine
    ],
    ids=["real-keys", "embedded-default", "debug"],
)
def test_settings_load_with_real_keys_on_the_embedded_default_or_with_debug(tmp_path, variables):
    if "SECRET_KEY" in variables:
        variables = {**variables, "FIELD_ENCRYPTION_KEY": f"{REAL_FERNET_KEY},{REAL_FERNET_KEY}"}
    result = import_settings(environment(tmp_path, **variables))
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        ["gunicorn", "integrationhub.wsgi", "--bind", "127.0.0.1:0", "--workers", "1"],
        ["celery", "-A", "integrationhub", "worker", "--queues", "housekeeping", "--concurrency", "1"],
        ["celery", "-A", "integrationhub", "beat", "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"],
    ],
    ids=["gunicorn", "worker", "beat"],
)
def test_gunicorn_the_worker_and_beat_exit_at_start_without_real_keys(tmp_path, command):
    # given the production commands of docker-compose.yml, with DEBUG off, a DATABASE_URL and no keys
    env = environment(tmp_path, DEBUG="false", DATABASE_URL=PRODUCTION_DATABASE, REDIS_URL="redis://127.0.0.1:1/0")
    executable = str(Path(sys.executable).with_name(command[0]))
    # when one starts
    process = subprocess.Popen(
        [executable, *command[1:]],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if process.poll() is None:
        process.kill()
    output, _ = process.communicate(timeout=30)
    # then it exits by itself, with an error, before serving or consuming anything, and says why
    assert process.returncode not in (None, 0, -9), output[-2000:]
    assert "The hub will not start" in output and "FIELD_ENCRYPTION_KEY" in output, output[-2000:]
