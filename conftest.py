"""Shared pytest fixtures: users per role and Django test clients logged in as them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client

from integrationhub import roles


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
def live_celery_worker():
    """A real Celery worker process on every hub queue, using this suite's broker settings; stopped at the end."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import uuid
    from pathlib import Path

    from django.conf import settings

    from integrationhub.celery import app

    hostname = f"test-{uuid.uuid4().hex[:8]}@%h"
    celery_bin = Path(sys.executable).with_name("celery")
    process = subprocess.Popen(
        [
            str(celery_bin),
            "-A",
            "integrationhub",
            "worker",
            "--queues",
            ",".join(settings.HUB_QUEUES),
            "--concurrency",
            "1",
            "--hostname",
            hostname,
            "--loglevel",
            "WARNING",
        ],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "integrationhub.settings"},
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
