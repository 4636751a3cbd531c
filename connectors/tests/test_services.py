"""Connected-system services: validation against the connector, secrets, state and connection tests."""

from __future__ import annotations

import json
import logging

import pytest

from connectors.choices import SystemRole, SystemState
from connectors.models import ConnectedSystem
from connectors.services import (
    connected_system_create,
    connected_system_pause,
    connected_system_resume,
    connected_system_set_secrets,
    connected_system_test_connection,
    connected_system_update,
)
from connectors.tests.factories import ConnectedSystemFactory
from integrationhub.errors import HubNotFoundError, HubValidationError

pytestmark = pytest.mark.django_db


def _create(**overrides):
    fields = {
        "name": "PSA prod",
        "slug": "psa-prod",
        "role": SystemRole.PSA,
        "connector_type": "generic_rest",
        "base_url": "https://psa.example.com",
        "settings": {"auth_mode": "api_key", "endpoints": {"project": {"path": "/v1/projects"}}},
    }
    fields.update(overrides)
    return connected_system_create(**fields)


def test_create_validates_settings_against_the_connector_schema_and_names_the_field():
    # given settings whose nested endpoint path does not start with "/"
    bad = {"auth_mode": "api_key", "endpoints": {"project": {"path": "v1/projects"}}}
    # when the system is created
    with pytest.raises(HubValidationError) as caught:
        _create(settings=bad)
    # then the error names the field path and nothing was stored
    assert "settings.endpoints.project.path" in caught.value.detail
    assert caught.value.errors[0]["field"] == "settings.endpoints.project.path"
    assert not ConnectedSystem.objects.exists()


def test_wrong_enum_and_missing_required_settings_are_named():
    # given a tryton system without a company id and a generic one with a bad pagination style
    with pytest.raises(HubValidationError) as tryton:
        _create(connector_type="tryton_erp", role=SystemRole.ERP, settings={"database": "hub"})
    with pytest.raises(HubValidationError) as generic:
        _create(settings={"auth_mode": "api_key", "pagination": {"style": "pages"}})
    # then each error says which field is wrong
    assert "company_id" in tryton.value.detail
    assert "settings.pagination.style" in generic.value.detail


def test_oauth2_without_token_url_is_rejected():
    with pytest.raises(HubValidationError, match="token_url"):
        _create(settings={"auth_mode": "oauth2"})


def test_a_sensitive_key_in_settings_is_rejected_with_a_pointer_to_credentials():
    # given an API key typed into the settings
    with pytest.raises(HubValidationError) as caught:
        _create(settings={"auth_mode": "api_key", "api_key": "oops-plain-text"})
    # then it is refused, the message says to use the credentials, and the secret is not echoed
    assert "credentials" in caught.value.detail
    assert caught.value.errors[0]["field"] == "settings.api_key"
    assert "oops-plain-text" not in json.dumps(caught.value.errors) + caught.value.detail
    assert not ConnectedSystem.objects.exists()


def test_unknown_connector_type_is_rejected():
    with pytest.raises(HubNotFoundError, match="no_such_type"):
        _create(connector_type="no_such_type")


def test_update_revalidates_settings_and_keeps_the_row_unchanged_on_error():
    # given a valid system
    system = _create()
    # when an update puts an invalid value in
    with pytest.raises(HubValidationError, match=r"settings\.timeout_seconds"):
        connected_system_update(system=system, data={"settings": {"auth_mode": "api_key", "timeout_seconds": -1}})
    # then the stored settings are the old ones
    assert ConnectedSystem.objects.get(pk=system.pk).settings["endpoints"]["project"]["path"] == "/v1/projects"


def test_update_refuses_secrets_and_state():
    system = _create()
    with pytest.raises(HubValidationError, match="credentials"):
        connected_system_update(system=system, data={"credentials": {"api_key": "x"}})


def test_set_secrets_stores_replaces_and_clears_and_logs_without_values(caplog):
    # given a system without secrets
    system = _create()
    assert system.credentials_updated_at is None
    caplog.set_level(logging.INFO)
    # when credentials and a webhook secret are set
    changed = connected_system_set_secrets(
        system=system, credentials={"api_key": "first-key-123456"}, webhook_secret="whsec-abcdef"
    )
    # then both are stored and the time is recorded
    stored = ConnectedSystem.objects.get(pk=system.pk)
    assert changed == ["credentials", "webhook_secret"]
    assert stored.credentials == {"api_key": "first-key-123456"}
    assert stored.webhook_secret == "whsec-abcdef"
    assert stored.credentials_updated_at is not None
    # and when None is passed nothing changes; when cleared they are removed
    assert connected_system_set_secrets(system=stored) == []
    connected_system_set_secrets(system=stored, clear_credentials=True, clear_webhook_secret=True)
    stored.refresh_from_db()
    assert stored.credentials == {} and stored.webhook_secret == ""
    # and the log says what changed for which system, never the values
    records = [r for r in caplog.records if r.getMessage() == "credentials changed"]
    assert records and all(r.system == "psa-prod" for r in records)
    everything = caplog.text + json.dumps([vars(r) for r in caplog.records], default=str)
    assert "first-key-123456" not in everything
    assert "whsec-abcdef" not in everything


def test_credentials_with_keys_the_connector_does_not_know_are_rejected():
    system = _create()
    with pytest.raises(HubValidationError, match=r"credentials\.apikey"):
        connected_system_set_secrets(system=system, credentials={"apikey": "typo"})


def test_pause_and_resume_are_idempotent():
    # given an active system
    system = _create()
    # when paused twice and resumed
    connected_system_pause(system=system)
    connected_system_pause(system=system)
    assert ConnectedSystem.objects.get(pk=system.pk).state == SystemState.PAUSED
    connected_system_resume(system=system)
    # then it is active again, with one history row per actual change
    assert ConnectedSystem.objects.get(pk=system.pk).state == SystemState.ACTIVE
    states = list(system.history.order_by("history_id").values_list("state", flat=True))
    assert states == ["active", "paused", "active"]


def test_health_check_ok_against_a_real_http_server(local_server):
    # given a server answering /status with 200 and a system pointing at it
    local_server.route("GET", "/status", 200, {"status": "up"})
    system = ConnectedSystemFactory(
        base_url=local_server.url, settings={"auth_mode": "api_key", "health_path": "/status"}
    )
    # when the connection is tested
    result = connected_system_test_connection(system=system)
    # then it is ok and the API key went in the header
    assert result.ok, result.message
    assert result.status_code == 200
    assert result.duration_ms >= 0
    assert local_server.requests[-1].headers["X-API-Key"] == "factory-api-key-0001"


def test_health_check_500_is_reported_as_retryable(local_server):
    # given a server whose health endpoint fails with 500 (default path /health)
    local_server.route("GET", "/health", 500, {"error": "db down"})
    system = ConnectedSystemFactory(base_url=local_server.url)
    # when the connection is tested
    result = connected_system_test_connection(system=system)
    # then the failure is reported (not raised) and classified as retryable
    assert not result.ok
    assert result.status_code == 500
    assert result.retryable is True
    assert "retryable" in result.message


def test_health_check_404_is_terminal(local_server):
    system = ConnectedSystemFactory(base_url=local_server.url, settings={"auth_mode": "none"}, credentials={})
    result = connected_system_test_connection(system=system)
    assert (result.ok, result.status_code, result.retryable) == (False, 404, False)


def test_unreachable_system_is_reported_as_retryable():
    system = ConnectedSystemFactory(base_url="http://127.0.0.1:9")
    result = connected_system_test_connection(system=system)
    assert not result.ok and result.retryable and result.status_code is None


def test_harvest_health_check_sends_bearer_and_account_headers(local_server):
    local_server.route("GET", "/health", 200, {})
    system = ConnectedSystemFactory(
        connector_type="harvest_psa",
        base_url=local_server.url,
        settings={"account_id": "12345", "contact_email": "ops@example.com"},
        credentials={"access_token": "harvest-token-1"},
    )
    assert connected_system_test_connection(system=system).ok
    headers = local_server.requests[-1].headers
    assert headers["Authorization"] == "Bearer harvest-token-1"
    assert headers["Harvest-Account-Id"] == "12345"
    assert "ops@example.com" in headers["User-Agent"]
