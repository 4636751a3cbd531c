"""Canonical entities: the shipped schemas, installing them, versioned edits and publishing."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

from integrationhub.errors import HubNotFoundError, HubValidationError
from mappings.choices import CanonicalEntityName, SchemaStatus
from mappings.models import CanonicalEntity, CanonicalSchema
from mappings.selectors import canonical_payload_validate, canonical_schema_current
from mappings.services import (
    SCHEMA_DIR,
    canonical_entities_install,
    canonical_schema_edit,
    canonical_schema_publish,
)

VALID_PROJECT = {
    "id": "PRJ-1001",
    "code": "ACME-DT-01",
    "name": "ACME digital transformation",
    "client": {
        "client_id": "CLI-77",
        "client_name": "ACME Europe Ltd",
        "parent_client_id": "CLI-70",
        "ultimate_parent_id": "CLI-1",
        "ultimate_parent_name": "ACME Holdings",
    },
    "contract": {
        "contract_id": "CON-55",
        "type": "fixed_fee",
        "value": "250000.00",
        "currency": "GBP",
        "start_date": "2026-01-01",
        "end_date": "2026-12-31",
    },
    "billing_method": "fixed_fee",
    "delivery": {"model": "hybrid", "engagement_model": "project_based", "offshore_share_percent": 40},
    "tax": {"jurisdiction": "GB", "tax_code": "VAT20", "vat_id": "GB123456789", "reverse_charge": False},
    "legal_entity_code": "UK01",
    "currency": "GBP",
    "lifecycle_stage": "active",
    "dimensions": {"practice": "Technology", "industry": "Retail", "region": "emea", "cost_center": "UK-TECH"},
}


@pytest.mark.parametrize("name", CanonicalEntityName.values)
def test_every_shipped_schema_is_a_valid_draft_2020_12_schema(name):
    # given the file shipped for an entity
    schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    # when / then it passes the meta-schema and declares the draft, an id and required fields
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "id" in schema["required"]


def test_there_is_one_shipped_schema_per_canonical_entity():
    assert sorted(p.stem for p in SCHEMA_DIR.glob("*.json")) == sorted(CanonicalEntityName.values)


@pytest.mark.django_db
def test_install_creates_entities_and_publishes_v1_idempotently():
    # given an empty database
    # when the install runs twice
    first = canonical_entities_install()
    second = canonical_entities_install()
    # then the first run created 13 entities with a published v1 and the second changed nothing
    assert first == {"entities_created": 13, "schemas_published": 13, "unchanged": 0}
    assert second == {"entities_created": 0, "schemas_published": 0, "unchanged": 13}
    assert CanonicalSchema.objects.filter(status=SchemaStatus.PUBLISHED, version=1).count() == 13
    assert CanonicalSchema.objects.count() == 13


@pytest.mark.django_db
def test_a_realistic_project_payload_is_valid_and_errors_carry_json_paths():
    # given the installed schemas
    canonical_entities_install()
    # when a complete project is validated
    assert canonical_payload_validate(entity_name="project", payload=VALID_PROJECT) == []
    # and when one with a bad contract type and a missing client id is validated
    broken = json.loads(json.dumps(VALID_PROJECT))
    broken["contract"]["type"] = "cost_plus"
    del broken["client"]["client_id"]
    errors = canonical_payload_validate(entity_name="project", payload=broken)
    # then each error points at its place in the payload
    paths = {e["path"] for e in errors}
    assert "$.contract.type" in paths
    assert "$.client" in paths
    assert any("client_id" in e["message"] for e in errors)


@pytest.mark.django_db
def test_approved_time_entry_needs_approver_and_approval_time():
    canonical_entities_install()
    entry = {
        "id": "TE-1",
        "resource_id": "R-9",
        "role_id": "SC",
        "project_id": "PRJ-1001",
        "date": "2026-11-25",
        "hours": 7.5,
        "rate": "150.00",
        "currency": "GBP",
        "cost_code": "CONSULT",
        "billable": True,
        "approval_status": "approved",
        "legal_entity_code": "UK01",
    }
    errors = canonical_payload_validate(entity_name="time_entry", payload=entry)
    assert {e["keyword"] for e in errors} == {"required"}
    entry |= {"approved_at": "2026-11-26T09:00:00Z", "approver_id": "R-1"}
    assert canonical_payload_validate(entity_name="time_entry", payload=entry) == []
    assert canonical_payload_validate(entity_name="time_entry", payload=entry | {"hours": 30})[0]["path"] == "$.hours"


@pytest.mark.django_db
def test_validation_without_a_published_schema_is_not_found():
    CanonicalEntity.objects.create(name="client")
    with pytest.raises(HubNotFoundError):
        canonical_payload_validate(entity_name="client", payload={})


@pytest.mark.django_db
def test_edit_always_makes_a_new_draft_version(make_role_user):
    # given an installed entity with v1 published
    canonical_entities_install()
    entity = CanonicalEntity.objects.get(name="role")
    user = make_role_user("analyst")
    schema = dict(canonical_schema_current(entity_name="role").json_schema)
    schema["properties"] = {**schema["properties"], "seniority": {"type": "string"}}
    # when it is edited twice
    v2 = canonical_schema_edit(entity=entity, json_schema=schema, user=user, notes="add seniority")
    v3 = canonical_schema_edit(entity=entity, json_schema=schema, user=user, notes="again")
    # then each edit is a new draft and v1 stays published and unchanged
    assert (v2.version, v2.status, v3.version) == (2, SchemaStatus.DRAFT, 3)
    assert v2.created_by == user
    current = canonical_schema_current(entity_name="role")
    assert current.version == 1 and "seniority" not in current.json_schema["properties"]


@pytest.mark.django_db
def test_publish_retires_the_previous_version():
    canonical_entities_install()
    entity = CanonicalEntity.objects.get(name="payment")
    draft = canonical_schema_edit(
        entity=entity, json_schema=canonical_schema_current(entity_name="payment").json_schema
    )
    canonical_schema_publish(schema=draft)
    statuses = dict(entity.schemas.values_list("version", "status"))
    assert statuses == {1: SchemaStatus.RETIRED, 2: SchemaStatus.PUBLISHED}
    assert canonical_schema_current(entity_name="payment").published_at is not None


@pytest.mark.django_db
def test_publishing_an_invalid_schema_is_rejected_and_nothing_changes():
    # given v1 published and a draft whose property type is not a JSON Schema type
    canonical_entities_install()
    entity = CanonicalEntity.objects.get(name="invoice")
    bad = {"type": "object", "properties": {"total_amount": {"type": "money"}}}
    draft = canonical_schema_edit(entity=entity, json_schema=bad)
    # when it is published
    with pytest.raises(HubValidationError) as caught:
        canonical_schema_publish(schema=draft)
    # then the message names the failing path and keyword, and v1 stays in force
    assert "properties/total_amount/type" in caught.value.detail
    assert any(e["field"].startswith("json_schema/properties/total_amount/type") for e in caught.value.errors)
    statuses = dict(entity.schemas.values_list("version", "status"))
    assert statuses == {1: SchemaStatus.PUBLISHED, 2: SchemaStatus.DRAFT}
