"""The demo follows the address the hub is served on, and each install has secrets of its own."""

from __future__ import annotations

from django.core.management import call_command

from connectors.models import ConnectedSystem
from integrationhub.demo import SANDBOX_PATHS, demo_setup
from sandbox.choices import SandboxSystem
from sandbox.models import SandboxSetting
from sandbox.services import FORMER_DEMO_SECRETS, sandbox_setting_ensure, sandbox_setting_save

OTHER = "http://127.0.0.1:8123"


def _addresses() -> list[str]:
    """Every address the demo configured: its sandbox systems' base URLs and the sandboxes' webhook targets."""
    systems = list(ConnectedSystem.objects.filter(slug__in=SANDBOX_PATHS).values_list("base_url", flat=True))
    hooks = [s.webhook_url for s in SandboxSetting.objects.exclude(webhook_url="")]
    return systems + hooks


def test_the_demo_follows_the_port_run_hub_binds_and_hub_public_url(db, settings, monkeypatch):
    # given the demo set up for the default address, with the PSA's approval webhooks pointed at it
    settings.HUB_PUBLIC_URL = ""
    demo_setup()
    psa = sandbox_setting_ensure(system=SandboxSystem.PSA)
    psa.webhook_url = "http://127.0.0.1:8000/api/v1/inbound/psa/{event_type}/"
    sandbox_setting_save(setting=psa, reason="test")
    assert all(url.startswith("http://127.0.0.1:8000/") for url in _addresses())
    # when the hub is started on another port (its processes are not started here)
    monkeypatch.setattr("integrationhub.management.commands.run_hub.hub_processes", lambda **kwargs: [])
    monkeypatch.setattr("integrationhub.management.commands.run_hub.run_together", lambda processes, write: 0)
    call_command("run_hub", bind="127.0.0.1:8123")
    # then every sandbox system and webhook target of the demo uses that port, none the default one
    addresses = _addresses()
    assert len(addresses) == len(SANDBOX_PATHS) + 2
    assert all(url.startswith(f"{OTHER}/") for url in addresses), addresses
    assert ConnectedSystem.objects.get(slug="crm").base_url == f"{OTHER}/sandbox/crm"
    assert sandbox_setting_ensure(system=SandboxSystem.CRM).webhook_url == (
        f"{OTHER}/api/v1/inbound/crm/opportunity.closed_won/"
    )
    # and a system an admin pointed elsewhere is left alone
    ConnectedSystem.objects.filter(slug="erp-us").update(base_url="https://erp.example.com/api")
    # when the hub is published behind HUB_PUBLIC_URL and the demo is set up again
    settings.HUB_PUBLIC_URL = "https://hub.example.com/"
    demo_setup()
    # then the demo's addresses follow it
    assert ConnectedSystem.objects.get(slug="psa").base_url == "https://hub.example.com/sandbox/psa/v2"
    assert ConnectedSystem.objects.get(slug="erp-us").base_url == "https://erp.example.com/api"
    assert all(url.startswith("https://hub.example.com/") for url in _addresses() if "erp.example.com" not in url), (
        _addresses()
    )


def _secrets() -> dict[str, str]:
    crm = sandbox_setting_ensure(system=SandboxSystem.CRM)
    return {
        "crm client secret": crm.client_secret,
        "crm webhook secret": crm.webhook_secret,
        "psa token": sandbox_setting_ensure(system=SandboxSystem.PSA).api_token,
        "collab token": sandbox_setting_ensure(system=SandboxSystem.COLLAB).api_token,
        "erp token": sandbox_setting_ensure(system=SandboxSystem.ERP).api_token,
    }


def test_two_installs_get_different_demo_secrets_and_the_hub_holds_its_own(db):
    # given one install of the demo
    demo_setup()
    first = _secrets()
    assert all(value and value not in FORMER_DEMO_SECRETS for value in first.values()), first
    # then the hub's systems hold exactly the sandboxes' secrets, and setting the demo up again keeps them
    assert ConnectedSystem.objects.get(slug="crm").webhook_secret == first["crm webhook secret"]
    assert ConnectedSystem.objects.get(slug="erp-us").credentials == {"api_key": first["erp token"]}
    demo_setup()
    assert _secrets() == first
    # when a second install is made (its sandboxes start empty, or still carry the secrets every install shared)
    SandboxSetting.objects.all().delete()
    legacy = sandbox_setting_ensure(system=SandboxSystem.PSA)
    legacy.api_token = "sandbox-psa-demo-token"
    sandbox_setting_save(setting=legacy, reason="test: an install from before")
    demo_setup()
    # then none of its secrets is the first install's or a shared one, and the hub follows them
    second = _secrets()
    assert all(second[name] != first[name] for name in first), (first, second)
    assert all(value not in FORMER_DEMO_SECRETS for value in second.values())
    assert ConnectedSystem.objects.get(slug="psa").credentials == {"access_token": second["psa token"]}
    assert ConnectedSystem.objects.get(slug="crm").webhook_secret == second["crm webhook secret"]
