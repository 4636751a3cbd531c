"""The connectors API: write-only secrets, actions, connector types and role limits."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from connectors.choices import SystemState
from connectors.models import ConnectedSystem
from connectors.tests.factories import ConnectedSystemFactory
from governance.models import LegalEntity

pytestmark = pytest.mark.django_db

API_KEY = "api-secret-never-shown-5150"
HOOK = "hook-secret-never-shown-5150"


def _payload(**overrides):
    data = {
        "name": "Harvest prod",
        "slug": "harvest-prod",
        "role": "psa",
        "connector_type": "harvest_psa",
        "base_url": "https://api.harvestapp.com",
        "settings": {"account_id": "998877"},
        "credentials": {"access_token": API_KEY},
        "webhook_secret": HOOK,
    }
    data.update(overrides)
    return data


def test_create_via_api_stores_secrets_and_never_returns_them(client_as):
    # given an integration admin and a legal entity
    LegalEntity.objects.create(
        code="UK01", name="UK Ltd", country="GB", base_currency="GBP", tax_jurisdiction="GB", region="emea"
    )
    client = client_as("integration_admin")
    # when a system is created with secrets
    response = client.post(
        "/api/v1/systems/",
        _payload(legal_entities=["UK01"]),
        content_type="application/json",
        HTTP_X_CHANGE_REASON="onboarding Harvest",
    )
    # then the answer says they are set without showing them
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["has_credentials"] and body["has_webhook_secret"]
    assert body["credentials_updated_at"]
    assert body["legal_entities"] == ["UK01"]
    assert "credentials" not in body and "webhook_secret" not in body
    # and list and detail never contain them either
    for url in ("/api/v1/systems/", "/api/v1/systems/harvest-prod/"):
        text = client.get(url).content.decode()
        assert API_KEY not in text and HOOK not in text
    system = ConnectedSystem.objects.get(slug="harvest-prod")
    assert system.credentials == {"access_token": API_KEY}
    assert system.history.earliest().history_change_reason == "onboarding Harvest"


def test_secrets_are_absent_from_the_history_tables(client_as):
    # given a system created and then given new credentials through the API
    client = client_as("integration_admin")
    client.post("/api/v1/systems/", _payload(), content_type="application/json")
    client.patch(
        "/api/v1/systems/harvest-prod/",
        {"credentials": {"access_token": API_KEY + "-v2"}},
        content_type="application/json",
    )
    # when every history row is read raw
    system = ConnectedSystem.objects.get(slug="harvest-prod")
    table = system.history.model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")
        columns = [c[0] for c in cursor.description]
        rows = cursor.fetchall()
    # then there are no secret columns and no secret values, but the change time is recorded
    assert "credentials" not in columns and "webhook_secret" not in columns
    assert len(rows) >= 2
    dumped = json.dumps(rows, default=str)
    assert API_KEY not in dumped and HOOK not in dumped
    assert system.history.first().credentials_updated_at is not None


def test_invalid_settings_come_back_as_problem_json_naming_the_field(client_as):
    client = client_as("integration_admin")
    response = client.post(
        "/api/v1/systems/", _payload(settings={"account_id": "not-a-number"}), content_type="application/json"
    )
    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "settings.account_id"
    assert not ConnectedSystem.objects.exists()


def test_secret_in_settings_is_rejected_by_the_api(client_as):
    client = client_as("integration_admin")
    response = client.post(
        "/api/v1/systems/",
        _payload(settings={"account_id": "1", "access_token": "oops"}),
        content_type="application/json",
    )
    assert response.status_code == 422
    assert "credentials" in response.json()["detail"]
    assert "oops" not in response.content.decode()


def test_patch_without_secrets_keeps_them_and_empty_values_clear_them(client_as):
    client = client_as("integration_admin")
    client.post("/api/v1/systems/", _payload(), content_type="application/json")
    client.patch("/api/v1/systems/harvest-prod/", {"name": "Harvest"}, content_type="application/json")
    assert ConnectedSystem.objects.get(slug="harvest-prod").credentials == {"access_token": API_KEY}
    response = client.patch(
        "/api/v1/systems/harvest-prod/", {"credentials": {}, "webhook_secret": ""}, content_type="application/json"
    )
    assert response.json()["has_credentials"] is False
    assert response.json()["has_webhook_secret"] is False


def test_actions_test_connection_pause_and_resume(client_as, local_server):
    local_server.route("GET", "/health", 200, {"ok": True})
    ConnectedSystemFactory(slug="crm", base_url=local_server.url)
    client = client_as("integration_admin")
    tested = client.post("/api/v1/systems/crm/test-connection/")
    assert tested.status_code == 200
    assert tested.json()["ok"] is True and tested.json()["status_code"] == 200
    assert client.post("/api/v1/systems/crm/pause/").json()["state"] == SystemState.PAUSED
    assert client.post("/api/v1/systems/crm/resume/").json()["state"] == SystemState.ACTIVE


def test_connector_types_lists_specs(client_as):
    client = client_as("auditor")
    response = client.get("/api/v1/connector-types/")
    assert response.status_code == 200
    specs = {spec["name"]: spec for spec in response.json()}
    assert specs["tryton_erp"]["sensitive_parameters"] == ["password", "user"]
    assert {"health_check", "upsert", "fetch_changes"} <= set(specs["tryton_erp"]["capabilities"])
    assert specs["generic_rest"]["parameter_schema"]["properties"]["pagination"]
    assert client.get("/api/v1/connector-types/salesforce_crm/").json()["role_hint"] == "crm"
    assert client.get("/api/v1/connector-types/nope/").status_code == 404


def test_analyst_can_read_but_not_change_a_system_through_the_api(client_as):
    # given a system with credentials and an analyst
    ConnectedSystemFactory(slug="erp", name="ERP", credentials={"api_key": API_KEY})
    client = client_as("analyst")
    # when the analyst reads it, the credentials are not there
    detail = client.get("/api/v1/systems/erp/")
    assert detail.status_code == 200 and API_KEY not in detail.content.decode()
    # when the analyst tries to change, pause, test or create
    attempts = [
        client.patch(
            "/api/v1/systems/erp/", {"name": "Mine", "credentials": {"api_key": "x"}}, content_type="application/json"
        ),
        client.post("/api/v1/systems/erp/pause/"),
        client.post("/api/v1/systems/erp/test-connection/"),
        client.post("/api/v1/systems/", _payload(), content_type="application/json"),
    ]
    # then each is forbidden and nothing changed
    assert [r.status_code for r in attempts] == [403, 403, 403, 403]
    system = ConnectedSystem.objects.get(slug="erp")
    assert (system.name, system.state, system.credentials) == ("ERP", SystemState.ACTIVE, {"api_key": API_KEY})
    assert ConnectedSystem.objects.count() == 1
