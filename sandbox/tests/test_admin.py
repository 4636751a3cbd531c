"""The sandbox admin: fault profiles are saved through the service (counting restarts), and reset in one action."""

from __future__ import annotations

import pytest
from django.test import Client

from sandbox.models import SandboxFaultProfile, SandboxSetting
from sandbox.tests.conftest import set_faults

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _plain_static_storage(settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def form_data(profile: SandboxFaultProfile, **changes) -> dict:
    data = {
        "system": profile.system,
        "enabled": "on",
        "latency_ms": 0,
        "error_rate": 0,
        "error_every_nth": 0,
        "error_status": 500,
        "seed": 0,
        "rate_limit_every_nth": 0,
        "rate_limit_requests": 0,
        "rate_limit_window_seconds": 60,
        "retry_after_seconds": 1,
        "burst_5xx": 0,
        "timeout_seconds": 0,
        "timeout_action": "answer",
        "accept_then_fail_every_nth": 0,
        "accept_then_fail_mode": "502",
        "change_reason": "test in admin",
    }
    data.update(changes)
    return data


def test_admin_save_applies_at_once_and_keeps_the_reason(client_as):
    profile = set_faults("erp")
    admin = client_as("integration_admin")
    generation = profile.generation
    # when a burst is set in the admin
    response = admin.post(f"/admin/sandbox/sandboxfaultprofile/{profile.pk}/change/", form_data(profile, burst_5xx=1))
    # then it is saved through the service: new generation, the reason in history, applied on the next request
    assert response.status_code == 302, response.content[:2000]
    profile.refresh_from_db()
    assert profile.burst_5xx == 1 and profile.generation != generation
    assert profile.history.first().history_change_reason == "test in admin"
    assert [Client().get("/sandbox/erp/health").status_code for _ in range(2)] == [503, 200]


def test_reset_action_turns_every_fault_off(client_as):
    profile = set_faults("erp", error_every_nth=1, latency_ms=5)
    admin = client_as("integration_admin")
    response = admin.post(
        "/admin/sandbox/sandboxfaultprofile/", {"action": "reset_faults", "_selected_action": [profile.pk]}
    )
    assert response.status_code == 302
    profile.refresh_from_db()
    assert (profile.enabled, profile.error_every_nth, profile.latency_ms) == (False, 0, 0)
    assert Client().get("/sandbox/erp/health").status_code == 200


def test_auditors_see_settings_without_secrets(client_as):
    from sandbox import services

    setting = services.sandbox_setting_ensure(system="crm")
    page = client_as("auditor").get(f"/admin/sandbox/sandboxsetting/{setting.pk}/change/")
    assert page.status_code == 200
    assert setting.client_secret not in page.content.decode()
    assert "client_secret" not in {f.name for f in SandboxSetting.history.model._meta.get_fields()}


def setting_data(setting: SandboxSetting, **changes) -> dict:
    data = {
        "system": setting.system,
        "client_id": setting.client_id,
        "client_secret": "",
        "api_token": "",
        "account_id": setting.account_id,
        "token_ttl_seconds": setting.token_ttl_seconds,
        "page_size": setting.page_size,
        "webhook_url": setting.webhook_url,
        "webhook_secret": "",
        "change_reason": "test in admin",
    }
    data.update(changes)
    return data


def test_sandbox_secrets_are_write_only_in_the_admin(client_as):
    from sandbox import services

    # given the CRM's setting with a client secret and a webhook secret
    setting = services.sandbox_setting_ensure(system="crm")
    setting.client_secret, setting.webhook_secret = "crm-client-secret-123", "whsec_c2VjcmV0LXZhbHVl"
    setting.save()
    admin = client_as("integration_admin")
    url = f"/admin/sandbox/sandboxsetting/{setting.pk}/change/"
    # when an integration admin opens it, then neither secret is in the page, but that each is set is
    page = admin.get(url).content.decode()
    assert "crm-client-secret-123" not in page and "whsec_c2VjcmV0LXZhbHVl" not in page
    assert 'type="password"' in page and "a value is set" in page
    # when the form is saved with the secret fields blank, then the secrets are kept
    response = admin.post(url, setting_data(setting, page_size=50))
    assert response.status_code == 302, response.content[:3000]
    setting.refresh_from_db()
    assert (setting.page_size, setting.client_secret, setting.webhook_secret) == (
        50,
        "crm-client-secret-123",
        "whsec_c2VjcmV0LXZhbHVl",
    )
    # when a new client secret is typed and the webhook secret cleared, then that is what is stored
    response = admin.post(url, setting_data(setting, client_secret="rotated-secret", clear_webhook_secret="on"))
    assert response.status_code == 302, response.content[:3000]
    setting.refresh_from_db()
    assert (setting.client_secret, setting.webhook_secret) == ("rotated-secret", "")


def test_a_new_value_and_clear_together_are_refused(client_as):
    from sandbox import services

    setting = services.sandbox_setting_ensure(system="psa")
    before = setting.api_token
    admin = client_as("integration_admin")
    response = admin.post(
        f"/admin/sandbox/sandboxsetting/{setting.pk}/change/",
        setting_data(setting, api_token="new-token", clear_api_token="on"),
    )
    assert response.status_code == 200
    assert "Either enter a new value or clear it, not both." in response.content.decode()
    setting.refresh_from_db()
    assert setting.api_token == before
