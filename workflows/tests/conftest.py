"""Fixtures of the workflow tests: a firm wired to the sandbox systems over real HTTP (pytest's live_server)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from connectors.http import clients_close
from connectors.models import ConnectedSystem
from connectors.services import connected_system_create
from governance.models import LegalEntity, RateCard
from governance.services import rate_card_save
from mappings.runtime import mapping_cache_invalidate
from sandbox import services as sandbox_services
from sandbox.choices import SandboxSystem
from workflows.setup import crm_inbound_mapping_ensure, workflow_policies_ensure

CRM_CLIENT_ID = "wf-crm-client"
CRM_CLIENT_SECRET = "wf-crm-secret-123"
PSA_TOKEN = "wf-psa-token"
PSA_ACCOUNT = "880011"
COLLAB_TOKEN = "wf-collab-token"
ERP_KEY = "wf-erp-key"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Firm:
    """The hub's side of a small firm: one legal entity and its CRM, PSA, collaboration suite and ERP."""

    url: str
    entity: LegalEntity
    crm: ConnectedSystem
    psa: ConnectedSystem
    collab: ConnectedSystem
    erp: ConnectedSystem
    systems: dict[str, ConnectedSystem] = field(default_factory=dict)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def sandbox_configure(*, webhook_url: str = "") -> None:
    """Every sandbox system accepting the test credentials; the CRM sends closed-won to `webhook_url`."""
    values: dict[str, dict[str, Any]] = {
        SandboxSystem.CRM: {
            "client_id": CRM_CLIENT_ID,
            "client_secret": CRM_CLIENT_SECRET,
            "webhook_secret": WEBHOOK_SECRET,
            "webhook_url": webhook_url,
        },
        SandboxSystem.PSA: {"api_token": PSA_TOKEN, "account_id": PSA_ACCOUNT},
        SandboxSystem.COLLAB: {"api_token": COLLAB_TOKEN},
        SandboxSystem.ERP: {"api_token": ERP_KEY},
    }
    for system, fields in values.items():
        setting = sandbox_services.sandbox_setting_ensure(system=system)
        for name, value in fields.items():
            setattr(setting, name, value)
        sandbox_services.sandbox_setting_save(setting=setting, reason="test")


def firm_build(url: str, *, code: str = "US01", currency: str = "USD", country: str = "US") -> Firm:
    """Systems, legal entity, rate card, CRM mappings and flow policies, all against the sandbox at `url`."""
    clients_close()
    sandbox_services.fault_profile_cache_clear()
    entity = LegalEntity.objects.filter(code=code).first() or LegalEntity.objects.create(
        code=code,
        name=f"Firm {code}",
        country=country,
        base_currency=currency,
        tax_jurisdiction=f"{country}-NY" if country == "US" else country,
        region="americas",
    )
    if not RateCard.objects.filter(legal_entity=entity, currency=currency).exists():
        rate_card_save(
            rate_card=RateCard(
                name=f"{code} rates",
                legal_entity=entity,
                currency=currency,
                valid_from=date(2020, 1, 1),
                tolerance_percent=Decimal("2"),
            ),
            lines=[{"role": "Consultant", "bill_rate": 200, "cost_rate": 80, "unit": "hour"}],
            reason="test",
        )
    specs = {
        "crm": (
            "crm",
            "salesforce_crm",
            "/sandbox/crm",
            {"api_version": "v60.0", "external_id_field": "Hub_Id__c"},
            {"client_id": CRM_CLIENT_ID, "client_secret": CRM_CLIENT_SECRET},
        ),
        "psa": ("psa", "harvest_psa", "/sandbox/psa/v2", {"account_id": PSA_ACCOUNT}, {"access_token": PSA_TOKEN}),
        "collab": (
            "collaboration",
            "collaboration_suite",
            "/sandbox/collab/v1.0",
            {"auth_mode": "bearer"},
            {"bearer_token": COLLAB_TOKEN},
        ),
        "erp": ("erp", "sandbox_erp", "/sandbox/erp/api", {"company_code": code}, {"api_key": ERP_KEY}),
    }
    systems = {}
    for key, (role, connector_type, path, settings, credentials) in specs.items():
        slug = unique(key)
        systems[key] = connected_system_create(
            name=slug,
            slug=slug,
            role=role,
            connector_type=connector_type,
            base_url=f"{url}{path}",
            settings=settings,
            legal_entities=[entity],
            rate_limit_per_second=Decimal("1000"),
            credentials=credentials,
            reason="test",
        )
    from connectors.services import connected_system_set_secrets

    connected_system_set_secrets(system=systems["crm"], webhook_secret=WEBHOOK_SECRET, reason="test")
    for entity_name in ("client", "opportunity"):
        crm_inbound_mapping_ensure(crm=systems["crm"], entity_name=entity_name)
    workflow_policies_ensure()
    mapping_cache_invalidate()
    sandbox_configure(webhook_url=f"{url}/api/v1/inbound/{systems['crm'].slug}/opportunity.closed_won/")
    return Firm(url, entity, systems["crm"], systems["psa"], systems["collab"], systems["erp"], systems)


@pytest.fixture
def firm(live_server, transactional_db) -> Firm:
    return firm_build(live_server.url)


@pytest.fixture(autouse=True)
def _fresh_fault_cache():
    sandbox_services.fault_profile_cache_clear()
    yield
    sandbox_services.fault_profile_cache_clear()


def wait_for(predicate: Callable[[], Any], *, timeout: float = 60.0) -> Any:
    """Tick the dispatcher (as beat does) until `predicate()` is truthy; returns its value."""
    from sync.services import sync_tick

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sync_tick()
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"condition not met within {timeout} s")


def faults_set(system: str, **values: Any) -> None:
    """Switch a sandbox system's fault profile (values empty: back to normal)."""
    profile = sandbox_services.fault_profile_ensure(system=system)
    profile.enabled = bool(values)
    for name, value in values.items():
        setattr(profile, name, value)
    sandbox_services.fault_profile_save(profile=profile, reason="test")
    sandbox_services.fault_profile_cache_clear()
