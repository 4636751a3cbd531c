"""Reading settings from the environment, with the embedded default when a variable is unset."""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import dj_database_url

TRUE_WORDS = {"1", "true", "yes", "on"}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in TRUE_WORDS


def env_list(name: str, default: str = "") -> list[str]:
    return [part.strip() for part in os.environ.get(name, default).split(",") if part.strip()]


def database_config(*, database_url: str, var_dir: Path) -> dict[str, Any]:
    """Return Django's DATABASES["default"] for DATABASE_URL, or the embedded SQLite when it is empty."""
    if database_url:
        config: dict[str, Any] = dict(dj_database_url.parse(database_url, conn_max_age=60, conn_health_checks=True))
        if config["ENGINE"] == "django.db.backends.sqlite3":
            config["OPTIONS"] = sqlite_options()
        return config
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(var_dir / "hub.sqlite3"),
        "OPTIONS": sqlite_options(),
        "TEST": {"NAME": str(var_dir / "test-hub.sqlite3")},
    }


def sqlite_options() -> dict[str, Any]:
    # WAL lets the web process read while a worker writes; the busy timeout and IMMEDIATE
    # transactions make concurrent writers queue for the lock instead of failing with
    # "database is locked" halfway through a transaction.
    return {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
    }


def broker_config(*, broker_url: str, var_dir: Path) -> tuple[str, dict[str, Any]]:
    """Return the Celery broker URL and transport options: Redis when configured, else the filesystem transport."""
    if broker_url:
        return broker_url, {"visibility_timeout": 3600}
    folder = var_dir / "broker"
    queue_dir = folder / "queue"
    control_dir = folder / "control"
    for directory in (queue_dir, control_dir):
        directory.mkdir(parents=True, exist_ok=True)
    # One folder in and out: every process on this machine both publishes and consumes.
    return "filesystem://", {
        "data_folder_in": str(queue_dir),
        "data_folder_out": str(queue_dir),
        "control_folder": str(control_dir),
    }


def throwaway_keys_setdefault(environ: MutableMapping[str, str]) -> None:
    """Give a throwaway run (the test suite, a benchmark) its own random SECRET_KEY and FIELD_ENCRYPTION_KEY when
    they are unset, in `environ` so that the processes it starts share them.

    With DATABASE_URL set and DEBUG off the hub refuses to start without real keys (production_keys); such a run
    is a deployment too, one whose data is thrown away, so random keys made for it are real keys.
    """
    if not environ.get("SECRET_KEY", "").strip():
        environ["SECRET_KEY"] = secrets.token_urlsafe(50)
    if not environ.get("FIELD_ENCRYPTION_KEY", "").strip():
        # What Fernet.generate_key() returns, without importing cryptography this early.
        environ["FIELD_ENCRYPTION_KEY"] = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
