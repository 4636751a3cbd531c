"""Shared pytest fixtures: users per role and Django test clients logged in as them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client

from integrationhub import roles
from integrationhub.models import UserLegalEntityScope


def pytest_configure(config) -> None:
    from django.conf import settings

    # Tests do not run collectstatic, so the hashed-manifest storage of production has no manifest;
    # plain storage serves the same files from the app folders (and the live server finds them there).
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def make_role_user(db) -> Callable[..., object]:
    """Create a staff user in one role group (or a superuser for role="superuser")."""

    def make(role: str, username: str | None = None):
        roles.roles_sync()
        user = get_user_model().objects.create_user(
            username=username or f"{role}-user", password="test-password-123", is_staff=True
        )
        if role == "superuser":
            user.is_superuser = True
            user.save()
        else:
            user.groups.add(Group.objects.get(name=role))
            # Every legal entity, as an enterprise-wide user; a test narrows it by setting the scope's entities.
            # bulk_create: no audit event of the grant, so tests that count audit events see only their own.
            UserLegalEntityScope.objects.bulk_create([UserLegalEntityScope(user=user, all_entities=True)])
        return user

    return make


@pytest.fixture
def client_as(make_role_user) -> Callable[[str], Client]:
    """A Django test client logged in as a new user of the given role."""

    def login(role: str) -> Client:
        client = Client()
        client.force_login(make_role_user(role))
        return client

    return login


@pytest.fixture(scope="session")
def live_celery_worker_db(django_db_setup, django_db_blocker):
    """A real Celery worker process on every hub queue that uses this suite's test database (for tests marked
    django_db(transaction=True), whose rows are committed), with the tests-only connector types registered.

    One worker per session: two would compete for the same queues.
    """
    import os
    import signal
    import subprocess
    import sys
    import time
    import uuid
    from pathlib import Path

    from django.conf import settings

    from integrationhub.celery import app

    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        database_url = f"sqlite:///{database['NAME']}"
    else:
        # The test runner renamed NAME to the test database in place.
        user = database.get("USER") or ""
        password = f":{database['PASSWORD']}" if database.get("PASSWORD") else ""
        auth = f"{user}{password}@" if user else ""
        host = database.get("HOST") or "127.0.0.1"
        port = f":{database['PORT']}" if database.get("PORT") else ""
        database_url = f"postgres://{auth}{host}{port}/{database['NAME']}"
    hostname = f"testdb-{uuid.uuid4().hex[:8]}@%h"
    celery_bin = Path(sys.executable).with_name("celery")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "integrationhub.settings",
        "DATABASE_URL": database_url,
        "HUB_TEST_CONNECTORS": "1",
        # Short breaker periods so the circuit tests run in seconds.
        "HUB_CIRCUIT_FAILURE_THRESHOLD": os.environ.get("HUB_CIRCUIT_FAILURE_THRESHOLD", "3"),
        "HUB_CIRCUIT_OPEN_SECONDS": os.environ.get("HUB_CIRCUIT_OPEN_SECONDS", "2"),
    }
    process = subprocess.Popen(
        [
            str(celery_bin),
            "-A",
            "integrationhub",
            "worker",
            "--queues",
            ",".join(settings.HUB_QUEUES),
            "--concurrency",
            "2",
            "--hostname",
            hostname,
            "--loglevel",
            "WARNING",
        ],
        env=env,
        start_new_session=True,
    )
    expected = hostname.replace("%h", "")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=1.0)
        if any(name.startswith(expected) for reply in replies for name in reply):
            break
        if process.poll() is not None:
            raise RuntimeError(f"the test Celery worker exited with code {process.returncode}")
    else:
        process.kill()
        raise RuntimeError("the test Celery worker did not answer a ping within 60 s")
    yield process
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def live_celery_worker(live_celery_worker_db):
    """The session's real worker, for tests that only need one to answer (health, pings)."""
    return live_celery_worker_db
