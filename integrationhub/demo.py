"""Demo users for each role, used by `make run` and the tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from integrationhub import roles
from integrationhub.models import UserLegalEntityScope


@dataclass(frozen=True)
class DemoLogin:
    username: str
    password: str
    role: str


DEMO_LOGINS = (
    DemoLogin("admin", "admin-demo", "superuser"),
    DemoLogin("ops", "ops-demo", roles.INTEGRATION_ADMIN),
    DemoLogin("analyst", "analyst-demo", roles.ANALYST),
    DemoLogin("finance", "finance-demo", roles.FINANCE_APPROVER),
    DemoLogin("finance2", "finance2-demo", roles.FINANCE_APPROVER),
    DemoLogin("auditor", "auditor-demo", roles.AUDITOR),
    DemoLogin("leader", "leader-demo", roles.LEADER),
)


@transaction.atomic
def demo_users_ensure() -> list[DemoLogin]:
    """Create (or reset) one staff user per role with a known password; returns the logins."""
    roles.roles_sync()
    user_model = get_user_model()
    for login in DEMO_LOGINS:
        user, _ = user_model.objects.get_or_create(username=login.username)
        user.is_staff = True
        user.is_superuser = login.role == "superuser"
        user.email = f"{login.username}@demo.integrationhub.local"
        user.set_password(login.password)
        user.save()
        if login.role in roles.ROLES:
            user.groups.set([Group.objects.get(name=login.role)])
            # The demo firm's people work across its three entities: every one, granted explicitly (audited).
            scope, _ = UserLegalEntityScope.objects.get_or_create(user=user)
            if not scope.all_entities:
                scope.all_entities = True
                scope.save()
    return list(DEMO_LOGINS)


@dataclass(frozen=True)
class DemoSetupResult:
    summary: list[str]
    logins: list[DemoLogin]


# The address `run_hub` binds by default; the demo uses it when neither HUB_PUBLIC_URL nor a bind says otherwise.
DEFAULT_BIND = "127.0.0.1:8000"
DEMO_BASE_URL = f"http://{DEFAULT_BIND}"
DEMO_REASON = "demo firm set-up"
# Where `make tryton` serves the local Tryton, and the database start.sh makes for the demo.
LOCAL_TRYTON_URL = "http://127.0.0.1:8011"
LOCAL_TRYTON_DATABASE = "hub"
# Paths under the hub of the demo's sandbox systems (slug → path); their base URLs follow the hub's address.
SANDBOX_PATHS = {
    "crm": "/sandbox/crm",
    "psa": "/sandbox/psa/v2",
    "collab": "/sandbox/collab/v1.0",
    "erp-us": "/sandbox/erp/api",
    "erp-de": "/sandbox/erp/api",
    "analytics": "/sandbox/analytics",
}
CLOSED_WON_PATH = "/api/v1/inbound/crm/opportunity.closed_won/"


def demo_public_url(*, bind: str | None = None) -> str:
    """The address the demo's sandbox systems and webhook targets use: HUB_PUBLIC_URL when set, else the address
    the hub is bound to (`run_hub --bind`, 127.0.0.1:8000 by default)."""
    from django.conf import settings

    configured = str(getattr(settings, "HUB_PUBLIC_URL", "") or "").strip().rstrip("/")
    return configured or f"http://{bind or DEFAULT_BIND}"


LEGAL_ENTITIES = [
    # code, name, country, currency, tax jurisdiction, region
    ("US01", "Northwind Advisory Inc.", "US", "USD", "US-NY", "americas"),
    ("UK01", "Northwind Advisory Ltd", "GB", "GBP", "GB", "emea"),
    ("DE01", "Northwind Advisory GmbH", "DE", "EUR", "DE-BY", "emea"),
]

# Bill and cost rates per hour by role and entity (in the entity's currency).
RATES = {
    "US01": {
        "Partner": (650, 280),
        "Manager": (420, 170),
        "Senior Consultant": (310, 120),
        "Consultant": (240, 95),
        "Analyst": (170, 65),
    },
    "UK01": {
        "Partner": (520, 230),
        "Manager": (340, 140),
        "Senior Consultant": (250, 100),
        "Consultant": (195, 78),
        "Analyst": (140, 55),
    },
    "DE01": {
        "Partner": (590, 250),
        "Manager": (380, 155),
        "Senior Consultant": (280, 110),
        "Consultant": (215, 85),
        "Analyst": (155, 60),
    },
}


def demo_systems_spec(*, base_url: str | None = None) -> list[dict[str, Any]]:
    """The demo's connected systems: sandbox CRM, PSA, collaboration and ERPs (served by the hub at `base_url`,
    the hub's public address by default), Tryton's UK company for UK01, and analytics."""
    base = (base_url or demo_public_url()).rstrip("/")
    tryton = local_tryton_ids()
    return [
        {
            "name": "CRM (sandbox Salesforce)",
            "slug": "crm",
            "role": "crm",
            "connector_type": "salesforce_crm",
            "base_url": f"{base}{SANDBOX_PATHS['crm']}",
            "settings": {"api_version": "v60.0", "external_id_field": "Hub_Id__c", "health_path": "/whoami"},
            "entities": ["US01", "UK01", "DE01"],
        },
        {
            "name": "PSA (sandbox Harvest)",
            "slug": "psa",
            "role": "psa",
            "connector_type": "harvest_psa",
            "base_url": f"{base}{SANDBOX_PATHS['psa']}",
            "settings": {"account_id": "424242", "health_path": "/users/me"},
            "entities": ["US01", "UK01", "DE01"],
        },
        {
            "name": "Collaboration (sandbox Graph)",
            "slug": "collab",
            "role": "collaboration",
            "connector_type": "collaboration_suite",
            "base_url": f"{base}{SANDBOX_PATHS['collab']}",
            "settings": {"auth_mode": "bearer", "health_path": "/organization"},
            "entities": ["US01", "UK01", "DE01"],
        },
        {
            "name": "ERP - UK entity (Tryton)",
            "slug": "erp-uk",
            "role": "erp",
            "connector_type": "tryton_erp",
            "base_url": LOCAL_TRYTON_URL,
            "settings": tryton_erp_settings(tryton, "UK01"),
            "entities": ["UK01"],
        },
        {
            "name": "ERP - US entity (sandbox)",
            "slug": "erp-us",
            "role": "erp",
            "connector_type": "sandbox_erp",
            "base_url": f"{base}{SANDBOX_PATHS['erp-us']}",
            "settings": {"company_code": "US01", "health_path": "/clients"},
            "entities": ["US01"],
        },
        {
            "name": "ERP - DE entity (sandbox)",
            "slug": "erp-de",
            "role": "erp",
            "connector_type": "sandbox_erp",
            "base_url": f"{base}{SANDBOX_PATHS['erp-de']}",
            "settings": {"company_code": "DE01", "health_path": "/clients"},
            "entities": ["DE01"],
        },
        {
            "name": "Analytics warehouse",
            "slug": "analytics",
            "role": "analytics",
            "connector_type": "analytics_sink",
            "base_url": f"{base}{SANDBOX_PATHS['analytics']}",
            "settings": {"dataset": "northwind"},
            "entities": ["US01", "UK01", "DE01"],
        },
    ]


def _demo_legal_entities() -> dict[str, Any]:
    from governance.models import LegalEntity
    from governance.services import legal_entity_save

    entities = {}
    for code, name, country, currency, tax, region in LEGAL_ENTITIES:
        entity = LegalEntity.objects.filter(code=code).first() or legal_entity_save(
            legal_entity=LegalEntity(
                code=code, name=name, country=country, base_currency=currency, tax_jurisdiction=tax, region=region
            ),
            reason=DEMO_REASON,
        )
        entities[code] = entity
    return entities


def local_tryton_ids() -> dict[str, Any] | None:
    """The ids of the local Tryton's demo database (from `make tryton`: `.tryton/db/hub.ids.json`, else the
    template's `.tryton/ids.json`), or None when it is not installed."""
    from django.conf import settings

    folder = settings.BASE_DIR / ".tryton"
    for path in (folder / "db" / f"{LOCAL_TRYTON_DATABASE}.ids.json", folder / "ids.json"):
        if path.exists():
            return dict(json.loads(path.read_text()))
    return None


def tryton_erp_settings(ids: Mapping[str, Any] | None, legal_entity: str) -> dict[str, Any]:
    """A tryton_erp system's settings for the company of `legal_entity` (its product, payment term and payment
    method): what a system needs to create projects, invoices and expenses there. Without the local Tryton's ids,
    only the database and the first company."""
    company = ((ids or {}).get("companies") or {}).get(legal_entity)
    if not company:
        return {"database": LOCAL_TRYTON_DATABASE, "company_id": int((ids or {}).get("company") or 1)}
    return {
        "database": LOCAL_TRYTON_DATABASE,
        "company_id": company["company"],
        "product_id": company["product"],
        "payment_term_id": company["payment_term"],
        "payment_method_id": company["payment_method"],
        "timeout_seconds": 30,
    }


def local_tryton_credentials() -> dict[str, Any] | None:
    """The local Tryton's API user and UK company (from `make tryton`), or None when it is not installed."""
    from django.conf import settings

    folder = settings.BASE_DIR / ".tryton"
    ids = local_tryton_ids()
    if not (folder / "hub.pass").exists() or ids is None:
        return None
    return {
        "user": ids.get("hub_login", "hub"),
        "password": (folder / "hub.pass").read_text().strip(),
        "company_id": tryton_erp_settings(ids, "UK01")["company_id"],
    }


def _demo_sandbox_secrets(systems: dict[str, Any], base_url: str) -> None:
    """Seed the sandbox systems and give the hub their credentials (and the CRM's webhook secret), generated for
    this install."""
    from connectors.services import connected_system_set_secrets
    from sandbox.services import sandbox_demo_seed

    seeded = sandbox_demo_seed(webhook_url=f"{base_url}{CLOSED_WON_PATH}")
    secrets: dict[str, dict[str, Any]] = {
        "crm": {
            "credentials": {"client_id": seeded["crm"]["client_id"], "client_secret": seeded["crm"]["client_secret"]},
            "webhook_secret": seeded["crm"]["webhook_secret"],
        },
        "psa": {"credentials": {"access_token": seeded["psa"]["api_token"]}},
        "collab": {"credentials": {"bearer_token": seeded["collab"]["api_token"]}},
        "erp-us": {"credentials": {"api_key": seeded["erp"]["api_token"]}},
        "erp-de": {"credentials": {"api_key": seeded["erp"]["api_token"]}},
    }
    for slug, values in secrets.items():
        system = systems[slug]
        stale = system.credentials != values["credentials"] or (
            "webhook_secret" in values and system.webhook_secret != values["webhook_secret"]
        )
        if not system.has_credentials or stale:
            connected_system_set_secrets(system=system, reason="demo: sandbox credentials", **values)


def _demo_systems(entities: dict[str, Any], base_url: str) -> dict[str, Any]:
    from connectors.models import ConnectedSystem
    from connectors.services import connected_system_create, connected_system_set_secrets, connected_system_update

    systems = {}
    for spec in demo_systems_spec(base_url=base_url):
        system = ConnectedSystem.objects.filter(slug=spec["slug"]).first() or connected_system_create(
            name=spec["name"],
            slug=spec["slug"],
            role=spec["role"],
            connector_type=spec["connector_type"],
            base_url=spec["base_url"],
            settings=spec["settings"],
            legal_entities=[entities[code] for code in spec["entities"]],
            reason=DEMO_REASON,
        )
        stale = system.settings.get("company_id") != spec["settings"].get("company_id") or not system.settings.get(
            "product_id"
        )
        if spec["connector_type"] == "tryton_erp" and "product_id" in spec["settings"] and stale:
            # The local Tryton was installed (or gained its companies) after the demo's first set-up.
            system = connected_system_update(
                system=system, data={"settings": spec["settings"]}, reason="demo: the UK entity's Tryton company"
            )
        systems[spec["slug"]] = system
    _demo_sandbox_secrets(systems, base_url)
    demo_addresses_follow(base_url=base_url)
    tryton = local_tryton_credentials()
    if tryton and not systems["erp-uk"].has_credentials:
        connected_system_set_secrets(
            system=systems["erp-uk"],
            credentials={"user": tryton["user"], "password": tryton["password"]},
            reason="demo: local Tryton API user",
        )
    return systems


def _demo_rate_cards(entities: dict[str, Any]) -> int:
    from governance.models import RateCard
    from governance.services import rate_card_save

    created = 0
    for code, roles_rates in RATES.items():
        entity = entities[code]
        lines = [
            {"role": role, "bill_rate": bill, "cost_rate": cost, "unit": "hour"}
            for role, (bill, cost) in roles_rates.items()
        ]
        name = f"{code} standard rates {date.today().year}"
        if not RateCard.objects.filter(name=name).exists():
            card = RateCard(
                name=name,
                legal_entity=entity,
                currency=entity.base_currency,
                valid_from=date(date.today().year, 1, 1),
                tolerance_percent=Decimal("2.00"),
            )
            rate_card_save(rate_card=card, lines=lines, reason=DEMO_REASON)
            created += 1
    # One client override: a negotiated discount for a key UK client.
    override_name = f"UK01 Contoso Retail negotiated rates {date.today().year}"
    if not RateCard.objects.filter(name=override_name).exists():
        card = RateCard(
            name=override_name,
            legal_entity=entities["UK01"],
            currency="GBP",
            valid_from=date(date.today().year, 1, 1),
            client_ref="client-contoso-retail",
            tolerance_percent=Decimal("1.00"),
        )
        rate_card_save(
            rate_card=card,
            lines=[
                {"role": "Manager", "bill_rate": 310, "cost_rate": 140, "unit": "hour"},
                {"role": "Senior Consultant", "bill_rate": 230, "cost_rate": 100, "unit": "hour"},
            ],
            reason=DEMO_REASON,
        )
        created += 1
    return created


def _demo_ownership(systems: dict[str, Any]) -> int:
    from governance.models import OwnershipRule
    from governance.services import ownership_rule_save
    from mappings.models import CanonicalEntity

    wanted = [
        # entity, fields (empty = all), stage, owning system, conflict action
        ("client", [], "", "crm", "exception"),
        ("project", ["contract", "billing_method", "tax", "budget", "rate_card_id"], "", "erp-uk", "exception"),
        ("project", ["project_manager_id", "engagement_partner_id", "delivery"], "", "psa", "ignore"),
        ("time_entry", [], "", "psa", "exception"),
        ("time_entry", [], "posted", "erp-uk", "exception"),
    ]
    created = 0
    for entity_name, fields, stage, system_slug, action in wanted:
        entity = CanonicalEntity.objects.get(name=entity_name)
        exists = OwnershipRule.objects.filter(entity=entity, lifecycle_stage=stage, owning_system=systems[system_slug])
        if exists.exists():
            continue
        ownership_rule_save(
            rule=OwnershipRule(
                entity=entity,
                field_group=fields,
                lifecycle_stage=stage,
                owning_system=systems[system_slug],
                conflict_action=action,
                notes="demo: system of record",
            ),
            reason=DEMO_REASON,
        )
        created += 1
    return created


def _demo_policies() -> int:
    from governance.models import SyncPolicy
    from governance.services import sync_policy_save

    policies = [
        {
            "name": "Opportunity to project",
            "flow": "opportunity_to_project",
            "trigger": "event",
            "batch_size": 1,
            "max_attempts": 5,
            "validation_rules": [
                {"rule": "required_fields", "params": {"paths": ["legal_entity_code", "billing_method", "currency"]}}
            ],
            "ordering_key_path": "id",
        },
        {
            "name": "Approved time to ERP",
            "flow": "time_expense_to_erp",
            "trigger": "schedule",
            "cron": "*/15 * * * *",
            "batch_size": 500,
            "max_attempts": 8,
            "validation_rules": [
                {"rule": "entry_approved", "params": {}},
                {"rule": "rate_matches_card", "params": {}},
                {"rule": "cost_code_allowed", "params": {"allowed_codes": ["BILL", "NONBILL", "TRAVEL"]}},
                {"rule": "project_active_in_erp", "params": {}},
                {"rule": "resource_known", "params": {}},
                {"rule": "period_open", "params": {}},
            ],
            "ordering_key_path": "id",
            "dead_letter_threshold": 8,
        },
        {
            "name": "Milestone to billing",
            "flow": "milestone_billing",
            "trigger": "event",
            "batch_size": 1,
            "approval_threshold_amount": Decimal("50000"),
            "second_approval_threshold_amount": Decimal("250000"),
            "approval_currency": "USD",
            "validation_rules": [
                {"rule": "amount_within_contract_remaining", "params": {}},
                {"rule": "not_billed_before", "params": {}},
                {"rule": "client_accepted", "params": {}},
            ],
            "ordering_key_path": "id",
        },
        {
            "name": "Invoice status to CRM",
            "flow": "invoice_status",
            "trigger": "schedule",
            "cron": "*/5 * * * *",
            "batch_size": 200,
            "ordering_key_path": "id",
        },
        {
            "name": "Client master",
            "flow": "client_master",
            "trigger": "event",
            "batch_size": 50,
            "ordering_key_path": "id",
        },
    ]
    created = 0
    for data in policies:
        if SyncPolicy.objects.filter(name=data["name"]).exists():
            continue
        sync_policy_save(policy=SyncPolicy(**data), reason=DEMO_REASON)
        created += 1
    return created


def demo_addresses_follow(*, base_url: str) -> list[str]:
    """Point the demo's sandbox systems and the sandboxes' webhook targets at the hub's address `base_url`, so a
    hub served elsewhere (another port, a second install on the machine) sends its calls, with their credentials,
    to itself. Systems an admin pointed somewhere else than a sandbox path are left alone. Returns the slugs
    changed."""
    from connectors.models import ConnectedSystem
    from connectors.services import connected_system_update
    from sandbox.choices import SandboxSystem
    from sandbox.services import sandbox_setting_ensure, sandbox_setting_save

    base = base_url.rstrip("/")
    changed = []
    for system in ConnectedSystem.objects.filter(slug__in=SANDBOX_PATHS).order_by("slug"):
        path = SANDBOX_PATHS[system.slug]
        wanted = f"{base}{path}"
        if system.base_url.rstrip("/") != wanted and system.base_url.rstrip("/").endswith(path):
            connected_system_update(system=system, data={"base_url": wanted}, reason=f"demo: the hub is at {base}")
            changed.append(system.slug)
    targets = {SandboxSystem.CRM: CLOSED_WON_PATH, SandboxSystem.PSA: "/api/v1/inbound/psa/{event_type}/"}
    for sandbox_system, path in targets.items():
        setting = sandbox_setting_ensure(system=sandbox_system)
        if setting.webhook_url and setting.webhook_url != f"{base}{path}" and setting.webhook_url.endswith(path):
            setting.webhook_url = f"{base}{path}"
            sandbox_setting_save(setting=setting, reason=f"demo: the hub is at {base}")
            changed.append(f"sandbox-{sandbox_system}")
    return changed


@transaction.atomic
def demo_data_load(*, base_url: str | None = None) -> list[str]:
    """The demo firm: legal entities, systems, canonical schemas, rate cards, ownership and policies (idempotent);
    its sandbox systems at `base_url` (the hub's public address by default)."""
    from mappings.services import canonical_entities_install

    base_url = (base_url or demo_public_url()).rstrip("/")
    schemas = canonical_entities_install()
    entities = _demo_legal_entities()
    systems = _demo_systems(entities, base_url)
    cards = _demo_rate_cards(entities)
    rules = _demo_ownership(systems)
    policies = _demo_policies()
    return [
        f"canonical entities: {schemas}",
        f"legal entities: {', '.join(entities)}",
        f"connected systems: {', '.join(systems)}",
        f"rate cards created: {cards}, ownership rules created: {rules}, sync policies created: {policies}",
    ]


def demo_setup(*, workflows: bool = False, base_url: str | None = None) -> DemoSetupResult:
    """Everything `make run` needs: the demo firm's records, the demo users and, with `workflows`, the five
    workflows seeded across the sandbox systems (and Tryton when it is installed), all at `base_url` (the hub's
    public address by default)."""
    summary = demo_data_load(base_url=base_url)
    logins = demo_users_ensure()
    if workflows:
        from workflows.demo import workflows_demo_seed

        summary += workflows_demo_seed(base_url=base_url)
    return DemoSetupResult(summary=summary, logins=logins)
