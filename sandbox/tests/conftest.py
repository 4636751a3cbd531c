"""Fixtures of the sandbox tests: known credentials per system, authenticated clients, a clean fault cache."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from sandbox import services
from sandbox.choices import SandboxSystem

CRM_CLIENT_ID = "test-crm-client"
CRM_CLIENT_SECRET = "test-crm-secret-123"
PSA_TOKEN = "test-psa-token"
PSA_ACCOUNT = "777001"
COLLAB_TOKEN = "test-collab-token"
ERP_KEY = "test-erp-key"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CONTROL_TOKEN = "test-control-token"

CRM_DATA = "/sandbox/crm/services/data/v60.0"


@pytest.fixture(autouse=True)
def _fresh_fault_cache():
    # Cached fault profiles outlive a test's rolled-back rows; forget them on both sides of every test.
    services.fault_profile_cache_clear()
    yield
    services.fault_profile_cache_clear()


@pytest.fixture
def sandbox_credentials(db) -> dict[str, Any]:
    """Every sandbox system configured with the known test credentials above."""
    values = {
        SandboxSystem.CRM: {
            "client_id": CRM_CLIENT_ID,
            "client_secret": CRM_CLIENT_SECRET,
            "webhook_secret": WEBHOOK_SECRET,
            "page_size": 200,
        },
        SandboxSystem.PSA: {"api_token": PSA_TOKEN, "account_id": PSA_ACCOUNT, "page_size": 100},
        SandboxSystem.COLLAB: {"api_token": COLLAB_TOKEN, "client_id": "collab-app", "client_secret": "collab-secret"},
        SandboxSystem.ERP: {"api_token": ERP_KEY, "page_size": 100},
    }
    for system, fields in values.items():
        setting = services.sandbox_setting_ensure(system=system)
        for name, value in fields.items():
            setattr(setting, name, value)
        services.sandbox_setting_save(setting=setting, reason="test")
    return values


@pytest.fixture
def crm_client(sandbox_credentials) -> Client:
    """A test client carrying a bearer token from the CRM's token endpoint."""
    client = Client()
    response = client.post(
        "/sandbox/crm/services/oauth2/token",
        {"grant_type": "client_credentials", "client_id": CRM_CLIENT_ID, "client_secret": CRM_CLIENT_SECRET},
    )
    assert response.status_code == 200, response.content
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {response.json()['access_token']}"
    return client


@pytest.fixture
def psa_client(sandbox_credentials) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {PSA_TOKEN}", HTTP_HARVEST_ACCOUNT_ID=PSA_ACCOUNT)


@pytest.fixture
def collab_client(sandbox_credentials) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {COLLAB_TOKEN}")


@pytest.fixture
def erp_client(sandbox_credentials) -> Client:
    return Client(HTTP_X_API_KEY=ERP_KEY)


@pytest.fixture
def control_token(settings) -> str:
    settings.SANDBOX_CONTROL_TOKEN = CONTROL_TOKEN
    return CONTROL_TOKEN


def set_faults(system: str, **fields: Any):
    """Save an enabled fault profile for `system` through the service (the counters restart)."""
    profile = services.fault_profile_ensure(system=system)
    profile.enabled = True
    for name, value in fields.items():
        setattr(profile, name, value)
    return services.fault_profile_save(profile=profile, reason="test")
