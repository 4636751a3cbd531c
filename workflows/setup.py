"""Configuration the client-master and opportunity-to-project flows start from: the CRM's inbound mappings of
accounts and opportunities (Salesforce shape, webhook envelope or pulled record alike) and the flows' policies.

Analysts own these records afterwards (Mappings → Mapping sets, Governance → Sync policies); the functions
below only create what is missing, so running them again never overwrites an analyst's change.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from connectors.models import ConnectedSystem
from governance.choices import Flow, Trigger
from governance.models import SyncPolicy
from governance.services import sync_policy_save
from mappings.choices import Direction, MappingStatus
from mappings.models import CanonicalEntity, FieldRule, MappingSet
from mappings.services import (
    canonical_schema_edit,
    canonical_schema_file,
    canonical_schema_publish,
    field_rule_save,
    mapping_set_create,
    mapping_set_publish,
)
from workflows.client_master import DUPLICATE_RULE

# Salesforce's standard stages → the canonical opportunity stage.
STAGES = [
    ("Prospecting", "prospecting"),
    ("Qualification", "qualification"),
    ("Needs Analysis", "qualification"),
    ("Value Proposition", "proposal"),
    ("Id. Decision Makers", "qualification"),
    ("Perception Analysis", "qualification"),
    ("Proposal/Price Quote", "proposal"),
    ("Negotiation/Review", "negotiation"),
    ("Closed Won", "closed_won"),
    ("Closed Lost", "closed_lost"),
]
ACCOUNT_TYPES = [("Customer", "active"), ("Prospect", "prospect"), ("Former Customer", "inactive")]


def _both(field: str) -> list[str]:
    # A webhook carries the record under "data"; a pull reads the record itself.
    return [f"data.{field}", field]


def _rule(target: str, field: str, *steps: dict[str, Any], required: bool = False, default: Any = None) -> dict:
    return {
        "target_path": target,
        "source_paths": _both(field),
        "steps": [{"transform": "coalesce"}, *steps],
        "required": required,
        "default": default,
    }


CLIENT_RULES = [
    _rule("id", "Id", required=True),
    _rule("name", "Name", {"transform": "trim"}, required=True),
    _rule(
        "status",
        "Type",
        {
            "transform": "case",
            "params": {"cases": [{"when": w, "then": t} for w, t in ACCOUNT_TYPES], "default": "active"},
        },
        default="active",
    ),
    _rule("website", "Website"),
    _rule("registration_number", "Tax_Id__c"),
    _rule("billing_currency", "CurrencyIsoCode"),
    _rule("contracting_legal_entity_code", "Legal_Entity__c"),
    _rule("updated_at", "LastModifiedDate", {"transform": "parse_date", "params": {"output": "datetime"}}),
]
OPPORTUNITY_RULES = [
    _rule("id", "Id", required=True),
    _rule("name", "Name", required=True),
    _rule("client.client_id", "AccountId", required=True),
    _rule(
        "stage",
        "StageName",
        {
            "transform": "case",
            "params": {"cases": [{"when": w, "then": t} for w, t in STAGES], "default": "qualification"},
        },
        required=True,
    ),
    _rule("amount", "Amount"),
    _rule("currency", "CurrencyIsoCode", required=True),
    _rule("close_date", "CloseDate"),
    _rule("billing_method", "Billing_Type__c"),
    _rule("legal_entity_code", "Legal_Entity__c"),
    _rule("project_template", "Project_Template__c"),
    _rule("custom_fields.contract_number", "Contract_Number__c"),
    _rule("tax.jurisdiction", "Tax_Jurisdiction__c"),
    _rule("updated_at", "LastModifiedDate", {"transform": "parse_date", "params": {"output": "datetime"}}),
]


def canonical_entity_ready(*, name: str) -> CanonicalEntity:
    """The canonical entity `name` with its shipped schema published (installed when missing)."""
    entity, _ = CanonicalEntity.objects.get_or_create(name=name)
    if entity.published_schema is None:
        draft = canonical_schema_edit(entity=entity, json_schema=canonical_schema_file(entity_name=name), user=None)
        canonical_schema_publish(schema=draft)
    return entity


@transaction.atomic
def crm_inbound_mapping_ensure(*, crm: ConnectedSystem, entity_name: str, user: Any = None) -> MappingSet:
    """The CRM's published inbound mapping of `entity_name` (client or opportunity), created when it has none."""
    entity = canonical_entity_ready(name=entity_name)
    existing = (
        MappingSet.objects.filter(system=crm, entity=entity, direction=Direction.INBOUND, legal_entity__isnull=True)
        .order_by("-version")
        .first()
    )
    if existing is not None and existing.status != MappingStatus.DRAFT:
        return existing
    mapping_set = existing or mapping_set_create(
        name=f"{crm.name}: {entity_name} in",
        system=crm,
        entity=entity,
        direction=Direction.INBOUND,
        notes="Salesforce records, from the closed-won webhook's envelope (data.*) or a pull.",
        user=user,
    )
    if not mapping_set.rules.exists():
        specs = CLIENT_RULES if entity_name == "client" else OPPORTUNITY_RULES
        for position, spec in enumerate(specs):
            field_rule_save(
                rule=FieldRule(
                    mapping_set=mapping_set,
                    position=position,
                    target_path=spec["target_path"],
                    source_paths=spec["source_paths"],
                    steps=spec["steps"],
                    required=spec["required"],
                    has_default=spec["default"] is not None,
                    default_value=spec["default"],
                ),
                user=user,
                reason="workflow set-up",
            )
    mapping_set_publish(mapping_set=mapping_set, user=user, confirm=True)
    mapping_set.refresh_from_db()
    return mapping_set


def workflow_policies_ensure(*, name_threshold: int = 90, reason: str = "workflow set-up") -> list[SyncPolicy]:
    """The enterprise-wide sync policies of both flows; an existing client-master policy gets the duplicate-check
    entry added when it lacks one (its other settings stay as the analyst left them)."""
    policies = []
    duplicate_entry = {
        "rule": DUPLICATE_RULE,
        "params": {"name_threshold": name_threshold, "match_domain": True, "match_tax_id": True},
    }
    for flow, name in ((Flow.CLIENT_MASTER, "Client master"), (Flow.OPPORTUNITY_TO_PROJECT, "Opportunity to project")):
        policy = SyncPolicy.objects.filter(flow=flow, legal_entity__isnull=True).order_by("id").first()
        if policy is None:
            policy = SyncPolicy(
                name=name, flow=flow, trigger=Trigger.EVENT, batch_size=1 if flow != Flow.CLIENT_MASTER else 50
            )
            if SyncPolicy.objects.filter(name=name).exists():
                policy.name = f"{name} ({flow})"
        elif flow != Flow.CLIENT_MASTER or any(
            isinstance(e, dict) and e.get("rule") == DUPLICATE_RULE for e in policy.validation_rules or []
        ):
            policies.append(policy)
            continue
        if flow == Flow.CLIENT_MASTER:
            policy.validation_rules = [*(policy.validation_rules or []), duplicate_entry]
        policies.append(sync_policy_save(policy=policy, reason=reason))
    return policies
