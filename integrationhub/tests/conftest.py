"""Fixtures of the security tests: API keys with chosen scopes, and a client that sends them."""

from __future__ import annotations

import datetime
from collections.abc import Callable

import pytest
from django.test import Client
from django.utils import timezone

from integrationhub.apikeys import api_key_create


@pytest.fixture
def make_api_key(make_role_user) -> Callable[..., tuple[object, str]]:
    """make_api_key(role, scopes, **options) → (ApiKey, key): a key owned by a new user of that role."""
    counter = {"n": 0}

    def make(role: str = "integration_admin", scopes=("config:read",), *, owner=None, **options):
        counter["n"] += 1
        owner = owner or make_role_user(role, username=f"{role}-key-owner-{counter['n']}")
        if options.get("expires_in") is not None:
            options["expires_at"] = timezone.now() + datetime.timedelta(seconds=options.pop("expires_in"))
        options.pop("expires_in", None)
        if options.get("legal_entity") is None:
            # An enterprise-wide key unless the test restricts it (created server-side, as by the shell).
            options.setdefault("all_entities", True)
        created = api_key_create(name=f"test key {counter['n']}", owner=owner, scopes=list(scopes), **options)
        return created.api_key, created.key

    return make


@pytest.fixture
def key_client() -> Callable[[str], Client]:
    """A client that sends `Authorization: Api-Key <key>` on every request (no session)."""

    def make(key: str, *, header: str = "authorization") -> Client:
        if header == "authorization":
            return Client(HTTP_AUTHORIZATION=f"Api-Key {key}")
        return Client(HTTP_X_API_KEY=key)

    return make
