"""No secret leaves the API: every list (and system detail) endpoint of /api/v1/, read by a superuser, carries
no credential value, webhook secret, API key or key hash."""

from __future__ import annotations

import pytest
from django.test import Client

from connectors.models import ConnectedSystem
from connectors.tests.factories import ConnectedSystemFactory
from integrationhub.apikeys import api_key_create

pytestmark = pytest.mark.django_db

SECRETS = {
    "credential": "cred-VALUE-7f3a9c1e",
    "password": "pw-VALUE-0b4d2e88",
    "webhook": "whsec-VALUE-55aa10cc",
}


def list_paths(client: Client) -> list[str]:
    """Every GET path of /api/v1/ in the schema that needs no path parameter."""
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    return sorted(
        path
        for path, operations in schema["paths"].items()
        if path.startswith("/api/v1/") and "get" in operations and "{" not in path
    )


def test_no_api_response_carries_a_secret(make_role_user):
    # given systems with credentials and a webhook secret, and an API key
    system = ConnectedSystemFactory(
        slug="erp-secret",
        credentials={"api_key": SECRETS["credential"], "password": SECRETS["password"]},
        webhook_secret=SECRETS["webhook"],
    )
    ConnectedSystemFactory(slug="crm-secret", credentials={"api_key": SECRETS["credential"] + "-2"})
    superuser = make_role_user("superuser", username="root")
    created = api_key_create(name="leak probe", owner=superuser, scopes=["config:read"])
    forbidden = [*SECRETS.values(), created.key, created.api_key.hashed_key]
    stored = ConnectedSystem.objects.get(pk=system.pk)
    assert stored.credentials["api_key"] == SECRETS["credential"]  # the secrets really are set

    # when a superuser reads every list endpoint and the systems' details
    client = Client()
    client.force_login(superuser)
    paths = list_paths(client)
    assert {"/api/v1/systems/", "/api/v1/api-keys/", "/api/v1/audit-events/"} <= set(paths)
    responses = {path: client.get(path) for path in paths}
    responses["/api/v1/systems/erp-secret/"] = client.get("/api/v1/systems/erp-secret/")
    responses["export"] = client.get("/api/v1/audit-events/export/")

    # then none carries a secret, and the systems say only that credentials are set
    for path, response in responses.items():
        assert response.status_code < 500, (path, response.status_code)
        text = (
            b"".join(response.streaming_content) if getattr(response, "streaming", False) else response.content
        ).decode()
        for secret in forbidden:
            assert secret not in text, f"{path} leaks a secret"
    detail = responses["/api/v1/systems/erp-secret/"].json()
    assert detail["has_credentials"] is True and detail["has_webhook_secret"] is True
