"""The connected-system admin: write-only secrets, connection test button, actions, and role limits."""

from __future__ import annotations

import pytest
from django.urls import reverse

from connectors.choices import SystemState
from connectors.models import ConnectedSystem
from connectors.tests.factories import ConnectedSystemFactory

pytestmark = pytest.mark.django_db

SECRET_KEY_VALUE = "admin-visible-never-7731"
SECRET_HOOK_VALUE = "hook-visible-never-7731"


def _form(system: ConnectedSystem | None = None, **overrides) -> dict:
    data = {
        "name": system.name if system else "CRM prod",
        "slug": system.slug if system else "crm-prod",
        "role": system.role if system else "crm",
        "connector_type": system.connector_type if system else "generic_rest",
        "base_url": system.base_url if system else "https://crm.example.com",
        "settings": '{"auth_mode": "api_key"}',
        "rate_limit_per_second": "10",
        "max_concurrency": "4",
        "credentials_input": "",
        "webhook_secret_input": "",
        "change_reason": "test change",
    }
    data.update(overrides)
    return data


def test_admin_creates_a_system_with_secrets_through_the_services(client_as):
    # given an integration admin
    client = client_as("integration_admin")
    # when a system is added with credentials and a webhook secret
    response = client.post(
        reverse("admin:connectors_connectedsystem_add"),
        _form(credentials_input=f'{{"api_key": "{SECRET_KEY_VALUE}"}}', webhook_secret_input=SECRET_HOOK_VALUE),
    )
    # then it is stored with encrypted secrets and the reason in history
    assert response.status_code == 302, response.content.decode()[:3000]
    system = ConnectedSystem.objects.get(slug="crm-prod")
    assert system.credentials == {"api_key": SECRET_KEY_VALUE}
    assert system.webhook_secret == SECRET_HOOK_VALUE
    assert system.credentials_updated_at is not None
    assert system.history.earliest().history_change_reason == "test change"


def test_change_page_never_renders_secrets_and_blank_keeps_them(client_as):
    # given a system with secrets
    system = ConnectedSystemFactory(credentials={"api_key": SECRET_KEY_VALUE}, webhook_secret=SECRET_HOOK_VALUE)
    client = client_as("integration_admin")
    url = reverse("admin:connectors_connectedsystem_change", args=[system.pk])
    # when the change page is shown
    html = client.get(url).content.decode()
    # then the secrets are not in it, but their status is, and the test button is there
    assert SECRET_KEY_VALUE not in html and SECRET_HOOK_VALUE not in html
    assert "set on" in html
    assert "Test connection" in html
    # when the form is saved with the secret fields left blank
    response = client.post(url, _form(system, name="Renamed"))
    # then the secrets are kept
    assert response.status_code == 302, response.content.decode()[:3000]
    system.refresh_from_db()
    assert system.name == "Renamed"
    assert system.credentials == {"api_key": SECRET_KEY_VALUE}
    assert system.webhook_secret == SECRET_HOOK_VALUE


def test_clear_checkboxes_remove_the_secrets(client_as):
    system = ConnectedSystemFactory(credentials={"api_key": SECRET_KEY_VALUE}, webhook_secret=SECRET_HOOK_VALUE)
    client = client_as("integration_admin")
    url = reverse("admin:connectors_connectedsystem_change", args=[system.pk])
    response = client.post(url, _form(system, clear_credentials="on", clear_webhook_secret="on"))
    assert response.status_code == 302
    system.refresh_from_db()
    assert system.credentials == {} and system.webhook_secret == ""
    assert "not set" in client.get(url).content.decode()


def test_admin_form_shows_settings_errors_by_field_and_refuses_secrets_in_settings(client_as):
    client = client_as("integration_admin")
    response = client.post(
        reverse("admin:connectors_connectedsystem_add"),
        _form(settings='{"auth_mode": "api_key", "api_key": "leaked-in-settings"}'),
    )
    assert response.status_code == 200
    assert "put api_key in the credentials" in response.content.decode()
    response = client.post(reverse("admin:connectors_connectedsystem_add"), _form(settings='{"auth_mode": "magic"}'))
    assert "settings.auth_mode" in response.content.decode()
    assert not ConnectedSystem.objects.exists()


def test_history_page_does_not_show_secrets(client_as):
    system = ConnectedSystemFactory(credentials={"api_key": SECRET_KEY_VALUE}, webhook_secret=SECRET_HOOK_VALUE)
    client = client_as("auditor")
    html = client.get(reverse("admin:connectors_connectedsystem_history", args=[system.pk])).content.decode()
    assert SECRET_KEY_VALUE not in html and SECRET_HOOK_VALUE not in html


def test_test_connection_button_reports_the_result_as_a_message(client_as, local_server):
    # given a healthy system
    local_server.route("GET", "/health", 200, {"ok": True})
    system = ConnectedSystemFactory(base_url=local_server.url)
    client = client_as("integration_admin")
    # when the button is pressed
    response = client.post(reverse("admin:connectors_connectedsystem_test_connection", args=[system.pk]), follow=True)
    # then the change page shows the outcome
    assert "connection OK" in response.content.decode()


def test_pause_and_resume_actions(client_as):
    system = ConnectedSystemFactory()
    client = client_as("integration_admin")
    changelist = reverse("admin:connectors_connectedsystem_changelist")
    client.post(changelist, {"action": "pause", "_selected_action": [system.pk]})
    assert ConnectedSystem.objects.get(pk=system.pk).state == SystemState.PAUSED
    client.post(changelist, {"action": "resume", "_selected_action": [system.pk]})
    assert ConnectedSystem.objects.get(pk=system.pk).state == SystemState.ACTIVE


def test_changelist_lists_systems_with_filters(client_as):
    ConnectedSystemFactory(name="ERP UK", base_url="https://erp-uk.example.com")
    html = client_as("auditor").get(reverse("admin:connectors_connectedsystem_changelist") + "?q=erp-uk").content
    assert b"ERP UK" in html


def test_analyst_cannot_change_a_system_in_the_admin(client_as, local_server):
    # given a system and an analyst (view-only on connectors)
    system = ConnectedSystemFactory(name="Original", credentials={"api_key": SECRET_KEY_VALUE})
    client = client_as("analyst")
    url = reverse("admin:connectors_connectedsystem_change", args=[system.pk])
    # when the analyst views it, the secret is not shown and there is no test button
    html = client.get(url).content.decode()
    assert SECRET_KEY_VALUE not in html
    assert "Test connection" not in html
    # when the analyst posts a change, pauses it or tests it
    response = client.post(url, _form(system, name="Hacked", credentials_input='{"api_key": "mine"}'))
    changelist = reverse("admin:connectors_connectedsystem_changelist")
    client.post(changelist, {"action": "pause", "_selected_action": [system.pk]})
    test = client.post(reverse("admin:connectors_connectedsystem_test_connection", args=[system.pk]))
    # then each is refused and nothing changed
    assert response.status_code == 403
    assert test.status_code == 403
    stored = ConnectedSystem.objects.get(pk=system.pk)
    assert stored.name == "Original"
    assert stored.state == SystemState.ACTIVE
    assert stored.credentials == {"api_key": SECRET_KEY_VALUE}


def test_the_form_has_a_field_per_setting_from_the_connector_schema_and_saves_them(client_as):
    # given an integration admin adding a generic REST system
    client = client_as("integration_admin")
    add = reverse("admin:connectors_connectedsystem_add") + "?connector_type=generic_rest"
    html = client.get(add).content.decode()
    # then each scalar setting is a labelled field with its help text and default, the required one marked
    assert 'name="setting__auth_mode"' in html and 'name="setting__health_path"' in html
    assert 'class="required" for="id_setting__auth_mode"' in html
    assert "Path the connection test GETs" in html and "Default: /health." in html
    # and each secret of the connector is a write-only field of its own
    assert 'name="credential__api_key"' in html and 'type="password"' in html
    # when the form is posted with fields only (no JSON typed)
    data = _form(settings="{}")
    data.update(
        {"setting__auth_mode": "bearer", "setting__timeout_seconds": "7.5", "credential__bearer_token": "tok-1"}
    )
    response = client.post(add, data)
    # then the settings and the credential are stored
    assert response.status_code == 302, response.content.decode()[:3000]
    system = ConnectedSystem.objects.get(slug="crm-prod")
    assert system.settings == {"auth_mode": "bearer", "timeout_seconds": 7.5}
    assert system.credentials == {"bearer_token": "tok-1"}
    # when one credential changes on the change page, the others stay
    url = reverse("admin:connectors_connectedsystem_change", args=[system.pk])
    assert client.get(url).content.decode().count('value="bearer" selected') == 1
    change = _form(system, settings="{}")
    change.update({"setting__auth_mode": "bearer", "credential__api_key": "key-2"})
    assert client.post(url, change).status_code == 302
    system.refresh_from_db()
    assert system.credentials == {"bearer_token": "tok-1", "api_key": "key-2"}
    assert "timeout_seconds" not in system.settings  # posted empty: back to the connector's default


def test_typed_credentials_are_never_sent_back_after_an_error(client_as):
    client = client_as("integration_admin")
    add = reverse("admin:connectors_connectedsystem_add") + "?connector_type=generic_rest"
    data = _form(settings='{"auth_mode": "magic"}', credentials_input='{"api_key": "typed-secret-5512"}')
    data["credential__bearer_token"] = "typed-token-5512"
    response = client.post(add, data)
    assert response.status_code == 200
    html = response.content.decode()
    assert "settings.auth_mode" in html
    assert "typed-secret-5512" not in html and "typed-token-5512" not in html
    assert not ConnectedSystem.objects.exists()


def test_a_reason_longer_than_history_keeps_is_refused_with_a_message_not_cut(client_as):
    client = client_as("integration_admin")
    add = reverse("admin:connectors_connectedsystem_add")
    html = client.get(add).content.decode()
    assert 'name="change_reason"' in html and 'maxlength="100"' not in html  # the browser would cut it silently
    long_reason = "CHG-1234 " + "x" * 120
    response = client.post(add, _form(change_reason=long_reason))
    assert response.status_code == 200
    assert "The reason is 129 characters long; history keeps at most 100" in response.content.decode()
    assert not ConnectedSystem.objects.exists()
