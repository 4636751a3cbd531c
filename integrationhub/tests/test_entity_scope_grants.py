"""What a legal-entity scope grants: nothing without entities, every entity only by an explicit flag that only
integration admins set (audited); the upgrade keeps old empty scopes enterprise-wide; records of a failed mapping
still get their entity from the project or the source system; an undeclared model is refused, not shown."""

from __future__ import annotations

import importlib

import pytest
from django.contrib.auth import get_user_model
from django.db.models import Q

from connectors.tests.factories import ConnectedSystemFactory
from exception_queue.choices import ExceptionCategory
from exception_queue.services import exception_item_open
from governance.tests.factories import LegalEntityFactory
from integrationhub.apikeys import api_key_create
from integrationhub.audit import AuditAction
from integrationhub.errors import HubValidationError
from integrationhub.models import ApiKey, AuditEvent, UserLegalEntityScope
from integrationhub.scoping import (
    EVERY_ENTITY,
    EntityScope,
    entity_scope_for,
    operational_scope_register,
    records_in_scope,
    user_entity_scope,
)
from sync.models import CrossReference, Message, Route

pytestmark = pytest.mark.django_db


def test_no_scope_row_or_an_empty_one_grants_no_entity_and_superusers_have_all():
    user_model = get_user_model()
    unscoped = user_model.objects.create_user(username="unscoped")
    empty = user_model.objects.create_user(username="empty")
    UserLegalEntityScope.objects.create(user=empty)
    root = user_model.objects.create_superuser(username="root", password="x-test-password-1")

    assert user_entity_scope(unscoped) == EntityScope(all_entities=False)
    assert user_entity_scope(empty) == EntityScope(all_entities=False)
    assert user_entity_scope(root) == EVERY_ENTITY


def test_an_api_key_never_reaches_beyond_its_owner(make_role_user):
    uk, us = LegalEntityFactory(code="UK01"), LegalEntityFactory(code="US01")
    owner = make_role_user("integration_admin", username="uk-owner")
    owner.legal_entity_scope.all_entities = False
    owner.legal_entity_scope.save()
    owner.legal_entity_scope.legal_entities.set([uk])
    us_key = api_key_create(name="us", owner=owner, scopes=["messages:read"], legal_entity=us).api_key
    wide_key = api_key_create(
        name="wide", owner=owner, scopes=["messages:read"], all_entities=True, created_by=owner
    ).api_key

    assert entity_scope_for(owner, us_key) == EntityScope(all_entities=False)  # US01 is not the owner's
    assert entity_scope_for(owner, wide_key) == EntityScope(all_entities=False, entity_ids=frozenset({uk.pk}))


def test_only_an_integration_admin_may_give_a_key_all_entities(make_role_user):
    analyst = make_role_user("analyst", username="an-analyst")
    with pytest.raises(HubValidationError) as refused:
        api_key_create(name="wide", owner=analyst, scopes=["config:read"], all_entities=True, created_by=analyst)
    assert refused.value.errors == [{"field": "all_entities", "message": "Only an integration admin may grant it."}]
    assert not ApiKey.objects.filter(name="wide").exists()
    assert not AuditEvent.objects.filter(action=AuditAction.ALL_ENTITIES_GRANTED).exists()


def test_granting_and_revoking_all_entities_in_the_admin_is_audited_and_reserved_to_integration_admins(
    make_role_user, client
):
    target = get_user_model().objects.create_user(username="regional", is_staff=True)
    scope = UserLegalEntityScope.objects.create(user=target)
    auditor = make_role_user("auditor", username="an-auditor")
    admin = make_role_user("integration_admin", username="an-admin")
    url = f"/admin/integrationhub/userlegalentityscope/{scope.pk}/change/"

    # the auditor may look but the flag is read-only (and saving is refused by the role)
    client.force_login(auditor)
    page = client.get(url)
    assert page.status_code == 200 and 'name="all_entities"' not in page.content.decode()
    assert client.post(url, {"user": target.pk, "all_entities": "on"}).status_code == 403

    # the integration admin grants it, then revokes it: two audit events naming who and for whom
    client.force_login(admin)
    granted = client.post(url, {"user": target.pk, "all_entities": "on"})
    revoked = client.post(url, {"user": target.pk})
    assert (granted.status_code, revoked.status_code) == (302, 302)
    events = list(
        AuditEvent.objects.filter(action__in=[AuditAction.ALL_ENTITIES_GRANTED, AuditAction.ALL_ENTITIES_REVOKED])
        .order_by("id")
        .values_list("action", "actor_username", "object_id")
    )
    assert events == [
        (AuditAction.ALL_ENTITIES_GRANTED, "an-admin", str(target.pk)),
        (AuditAction.ALL_ENTITIES_REVOKED, "an-admin", str(target.pk)),
    ]


def test_the_upgrade_keeps_empty_scopes_unscoped_users_and_entity_less_keys_enterprise_wide(make_role_user):
    # given what an older release stored: an empty scope row, a user with no row, a key with no legal entity,
    # and a regional user and key that must stay regional
    user_model = get_user_model()
    uk = LegalEntityFactory(code="UK01")
    empty = user_model.objects.create_user(username="old-empty")
    UserLegalEntityScope.objects.bulk_create([UserLegalEntityScope(user=empty)])
    no_row = user_model.objects.create_user(username="old-no-row")
    regional = user_model.objects.create_user(username="old-regional")
    UserLegalEntityScope.objects.bulk_create([UserLegalEntityScope(user=regional)])
    UserLegalEntityScope.objects.get(user=regional).legal_entities.set([uk])
    owner = make_role_user("integration_admin", username="old-owner")
    old_key = api_key_create(name="old", owner=owner, scopes=["messages:read"]).api_key
    uk_key = api_key_create(name="uk", owner=owner, scopes=["messages:read"], legal_entity=uk).api_key

    # when the data migration runs
    migration = importlib.import_module("integrationhub.migrations.0004_all_entities_flag")
    from django.apps import apps

    migration.keep_enterprise_wide_reach(apps, None)

    # then the old meanings hold, and every grant is in the audit log
    assert UserLegalEntityScope.objects.get(user=empty).all_entities is True
    assert UserLegalEntityScope.objects.get(user=no_row).all_entities is True
    assert UserLegalEntityScope.objects.get(user=regional).all_entities is False
    assert ApiKey.objects.get(pk=old_key.pk).all_entities is True
    assert ApiKey.objects.get(pk=uk_key.pk).all_entities is False
    upgraded = AuditEvent.objects.filter(action=AuditAction.ALL_ENTITIES_GRANTED, details__upgrade=True)
    assert sorted(upgraded.values_list("object_id", flat=True)) == sorted(
        [str(empty.pk), str(no_row.pk), str(old_key.pk)]
    )


def test_a_failed_psa_entry_takes_its_entity_from_its_project_and_a_single_entity_system_from_itself():
    uk, us = LegalEntityFactory(code="UK01"), LegalEntityFactory(code="US01")
    psa = ConnectedSystemFactory(slug="psa-global")
    psa.legal_entities.set([uk, us])  # a shared PSA: the system alone cannot tell
    # an earlier entry of project 42 mapped and so is known to be UK01's
    Message.objects.create(
        system=psa,
        entity="time_entry",
        event_type="time_entry.approved",
        idempotency_key="earlier",
        correlation_id="c-earlier",
        raw_payload={"id": "t-1", "project_id": 42},
        legal_entity=uk,
    )
    failed = Message.objects.create(
        system=psa,
        entity="time_entry",
        event_type="time_entry.approved",
        idempotency_key="failed",
        correlation_id="c-failed",
        raw_payload={"id": "t-2", "project_id": 42, "approver": None},
    )
    # a contract known through the PSA's cross-reference to the contract's own message (US01)
    CrossReference.objects.create(system=psa, entity="contract", canonical_id="contract-7", external_id="C-7")
    Message.objects.create(
        system=psa,
        entity="contract",
        event_type="contract.signed",
        idempotency_key="contract",
        correlation_id="c-contract",
        canonical_id="contract-7",
        legal_entity=us,
    )
    by_contract = Message.objects.create(
        system=psa,
        entity="expense",
        event_type="expense.approved",
        idempotency_key="by-contract",
        correlation_id="c-by-contract",
        raw_payload={"id": "e-1", "contract_id": "C-7"},
    )
    nowhere = Message.objects.create(
        system=psa,
        entity="time_entry",
        event_type="time_entry.approved",
        idempotency_key="nowhere",
        correlation_id="c-nowhere",
        raw_payload={"id": "t-3", "project_id": 99},
    )
    uk_only = ConnectedSystemFactory(slug="psa-uk")
    uk_only.legal_entities.set([uk])
    single = Message.objects.create(
        system=uk_only,
        entity="time_entry",
        event_type="time_entry.approved",
        idempotency_key="single",
        correlation_id="c-single",
        raw_payload={"id": "t-4"},
    )

    def open_for(message):
        return exception_item_open(
            category=ExceptionCategory.VALIDATION, reason="approver missing", message=message, system=message.system
        )

    items = {
        name: open_for(message)
        for name, message in {"project": failed, "contract": by_contract, "nowhere": nowhere, "single": single}.items()
    }

    assert items["project"].legal_entity_id == uk.pk
    assert items["contract"].legal_entity_id == us.pk
    assert items["single"].legal_entity_id == uk.pk
    assert items["nowhere"].legal_entity_id is None  # truly unknown: only users with every entity see it
    failed.refresh_from_db()
    assert failed.legal_entity_id == uk.pk  # the message is scoped too
    uk_scope = EntityScope(all_entities=False, entity_ids=frozenset({uk.pk}))
    visible = records_in_scope(Message.objects.filter(Q(pk=nowhere.pk) | Q(pk=failed.pk)), scope=uk_scope)
    assert list(visible) == [failed]


def test_a_model_without_a_declared_path_is_refused_to_a_scoped_reader_and_declaring_it_scopes_it():
    uk = LegalEntityFactory(code="UK01")
    scoped = EntityScope(all_entities=False, entity_ids=frozenset({uk.pk}))
    with pytest.raises(LookupError, match="operational_scope_register"):
        records_in_scope(Route.objects.all(), scope=scoped)
    assert records_in_scope(Route.objects.all(), scope=EVERY_ENTITY).model is Route

    from integrationhub.scoping import OPERATIONAL_SCOPE_PATHS

    try:
        operational_scope_register("sync.route", "legal_entity")
        query = str(records_in_scope(Route.objects.all(), scope=scoped).query)
        assert f'"sync_route"."legal_entity_id" IN ({uk.pk})' in query
    finally:
        OPERATIONAL_SCOPE_PATHS.pop("sync.route", None)


def test_metrics_count_every_entity_so_a_key_of_one_entity_is_refused(client, make_role_user):
    uk = LegalEntityFactory(code="UK01")
    owner = make_role_user("leader", username="a-leader")
    uk_key = api_key_create(name="uk scraper", owner=owner, scopes=["kpis:read"], legal_entity=uk)
    wide_key = api_key_create(name="scraper", owner=owner, scopes=["kpis:read"], all_entities=True)

    outside = "203.0.113.50"
    refused = client.get("/metrics", REMOTE_ADDR=outside, HTTP_AUTHORIZATION=f"Api-Key {uk_key.key}")
    allowed = client.get("/metrics", REMOTE_ADDR=outside, HTTP_AUTHORIZATION=f"Api-Key {wide_key.key}")

    assert refused.status_code == 403 and b"hub_messages" not in refused.content
    assert b"/api/v1/kpis/" in refused.content
    assert allowed.status_code == 200 and b"hub_messages" in allowed.content


def test_a_file_cannot_be_dropped_into_another_entitys_system(make_role_user, client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from sync.models import FileDrop

    uk, us = LegalEntityFactory(code="UK01"), LegalEntityFactory(code="US01")
    ConnectedSystemFactory(slug="psa-us").legal_entities.set([us])
    ConnectedSystemFactory(slug="psa-uk").legal_entities.set([uk])
    user = make_role_user("integration_admin", username="uk-ops")
    user.legal_entity_scope.all_entities = False
    user.legal_entity_scope.save()
    user.legal_entity_scope.legal_entities.set([uk])
    client.force_login(user)

    def upload(url, system):
        csv_file = SimpleUploadedFile("entries.csv", b"id,hours\nT-1,8\n", content_type="text/csv")
        return client.post(url, {"system": system, "entity": "time_entry", "file": csv_file})

    api = upload("/api/v1/file-drops/", "psa-us")
    page = upload("/admin/sync/filedrop/upload/", "psa-us")
    offered = client.get("/admin/sync/filedrop/upload/").context["form"].fields["system"].queryset

    assert api.status_code == 422 and api.json()["errors"] == [{"field": "system", "message": "Unknown system."}]
    assert page.status_code == 200 and "Select a valid choice" in page.content.decode()
    assert [system.slug for system in offered] == ["psa-uk"]
    assert not FileDrop.objects.exists()
