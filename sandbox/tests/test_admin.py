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
