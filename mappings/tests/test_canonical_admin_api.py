"""Canonical entities in the admin and the API: edits make versions, publishing checks first."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from mappings.choices import SchemaStatus
from mappings.models import CanonicalEntity, CanonicalSchema
from mappings.services import canonical_entities_install

pytestmark = pytest.mark.django_db


def test_editing_a_published_schema_in_the_admin_creates_a_new_draft(client_as):
    # given the installed schemas and an analyst
    canonical_entities_install()
    v1 = CanonicalSchema.objects.get(entity__name="contact", version=1)
    client = client_as("analyst")
    edited = dict(v1.json_schema, title="Contact (edited)")
    # when the analyst saves changed JSON on the published version
    response = client.post(
        reverse("admin:mappings_canonicalschema_change", args=[v1.pk]),
        {"json_schema": json.dumps(edited), "notes": v1.notes, "change_reason": "rename title"},
    )
    # then v1 is untouched and v2 is a draft with the new JSON
    assert response.status_code == 302, response.content.decode()[:2000]
    v1.refresh_from_db()
    assert v1.status == SchemaStatus.PUBLISHED and v1.json_schema["title"] == "Contact"
    v2 = CanonicalSchema.objects.get(entity__name="contact", version=2)
    assert v2.status == SchemaStatus.DRAFT and v2.json_schema["title"] == "Contact (edited)"


def test_admin_publish_action_publishes_or_reports_the_error(client_as):
    canonical_entities_install()
    entity = CanonicalEntity.objects.get(name="role")
    good = CanonicalSchema.objects.create(entity=entity, version=2, json_schema={"type": "object"})
    bad = CanonicalSchema.objects.create(entity=entity, version=3, json_schema={"type": 5})
    client = client_as("analyst")
    changelist = reverse("admin:mappings_canonicalschema_changelist")
    response = client.post(changelist, {"action": "publish", "_selected_action": [bad.pk]}, follow=True)
    assert "not published" in response.content.decode()
    assert CanonicalSchema.objects.get(pk=bad.pk).status == SchemaStatus.DRAFT
    client.post(changelist, {"action": "publish", "_selected_action": [good.pk]})
    assert CanonicalSchema.objects.get(pk=good.pk).status == SchemaStatus.PUBLISHED


def test_entity_admin_shows_versions_inline(client_as):
    canonical_entities_install()
    entity = CanonicalEntity.objects.get(name="project")
    html = client_as("auditor").get(reverse("admin:mappings_canonicalentity_change", args=[entity.pk])).content
    assert b"published" in html


def test_api_lists_entities_creates_a_draft_and_publishes_it(client_as):
    canonical_entities_install()
    client = client_as("analyst")
    entities = client.get("/api/v1/canonical-entities/").json()["results"]
    assert len(entities) == 13 and all(e["published_version"] == 1 for e in entities)
    created = client.post(
        "/api/v1/canonical-schemas/",
        {"entity": "role", "json_schema": {"type": "object", "required": ["id"]}, "notes": "slim"},
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    assert (created.json()["version"], created.json()["status"]) == (2, "draft")
    published = client.post(f"/api/v1/canonical-schemas/{created.json()['id']}/publish/")
    assert published.status_code == 200 and published.json()["status"] == "published"
    assert client.get("/api/v1/canonical-entities/role/").json()["published_version"] == 2


def test_api_publish_of_an_invalid_schema_is_422_and_changes_nothing(client_as):
    canonical_entities_install()
    client = client_as("analyst")
    created = client.post(
        "/api/v1/canonical-schemas/",
        {"entity": "role", "json_schema": {"type": "object", "properties": {"x": {"minLength": -1}}}},
        content_type="application/json",
    ).json()
    response = client.post(f"/api/v1/canonical-schemas/{created['id']}/publish/")
    assert response.status_code == 422
    assert "properties/x/minLength" in response.json()["detail"]
    assert CanonicalSchema.objects.get(entity__name="role", status=SchemaStatus.PUBLISHED).version == 1


def test_api_validates_a_payload_against_the_published_schema(client_as):
    canonical_entities_install()
    response = client_as("auditor").post(
        "/api/v1/canonical-entities/payment/validate/",
        {
            "payload": {
                "id": "PAY-1",
                "invoice_id": "INV-1",
                "amount": "10.00",
                "currency": "usd",
                "payment_date": "2026-11-26",
                "status": "received",
            }
        },
        content_type="application/json",
    )
    assert response.status_code == 200
    assert response.json()["valid"] is False
    assert response.json()["errors"][0]["path"] == "$.currency"


def test_auditor_cannot_create_or_publish_schemas(client_as):
    canonical_entities_install()
    client = client_as("auditor")
    draft = CanonicalSchema.objects.create(
        entity=CanonicalEntity.objects.get(name="role"), version=2, json_schema={"type": "object"}
    )
    created = client.post(
        "/api/v1/canonical-schemas/", {"entity": "role", "json_schema": {}}, content_type="application/json"
    )
    published = client.post(f"/api/v1/canonical-schemas/{draft.pk}/publish/")
    assert (created.status_code, published.status_code) == (403, 403)
    assert CanonicalSchema.objects.get(pk=draft.pk).status == SchemaStatus.DRAFT
    assert CanonicalSchema.objects.filter(entity__name="role").count() == 2
