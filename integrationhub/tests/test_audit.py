"""The append-only audit: what writes events, that nothing can change or delete them, and auditors' access."""

from __future__ import annotations

import csv
import io
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import DatabaseError, connection, transaction
from django.test import Client

from connectors.tests.factories import ConnectedSystemFactory
from integrationhub.audit import AuditAction, audit_record, credentials_changed
from integrationhub.models import AuditEvent, AuditImmutableError

pytestmark = pytest.mark.django_db


@pytest.fixture
def event():
    return audit_record(
        action=AuditAction.MESSAGE_REPLAYED, object_type="sync.message", object_id=7, summary="replayed"
    )


# --- immutability -------------------------------------------------------------------------------------------


def test_saving_an_existing_event_raises_and_nothing_changes(event):
    event.summary = "rewritten"
    with pytest.raises(AuditImmutableError):
        event.save()
    assert AuditEvent.objects.get().summary == "replayed"


def test_deleting_events_through_the_orm_raises(event):
    with pytest.raises(AuditImmutableError):
        event.delete()
    with pytest.raises(AuditImmutableError):
        AuditEvent.objects.all().delete()
    with pytest.raises(AuditImmutableError):
        AuditEvent.objects.filter(pk=event.pk).update(summary="rewritten")
    assert AuditEvent.objects.get().summary == "replayed"


def test_raw_sql_update_is_refused_by_the_database_trigger(event):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE integrationhub_auditevent SET summary = 'rewritten' WHERE id = %s", [event.pk])
    assert AuditEvent.objects.get().summary == "replayed"


def test_raw_sql_delete_is_refused_by_the_database_trigger(event):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM integrationhub_auditevent WHERE id = %s", [event.pk])
    assert AuditEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_committed_event_survives_and_the_test_flush_still_empties_the_database():
    # given a committed event (the flush after this test must lift the SQLite trigger to empty the table)
    audit_record(action=AuditAction.LOGIN_FAILED, summary="committed")

    # then a raw delete outside any test transaction is refused too
    with pytest.raises(DatabaseError), connection.cursor() as cursor:
        cursor.execute("DELETE FROM integrationhub_auditevent")
    assert AuditEvent.objects.filter(summary="committed").count() == 1


# --- what writes events -------------------------------------------------------------------------------------


def test_failed_admin_login_is_audited_with_username_and_ip_but_no_password(make_role_user):
    alice = f"alice-{uuid.uuid4().hex[:8]}"
    make_role_user("analyst", username=alice)
    response = Client(REMOTE_ADDR="10.1.2.3").post(
        "/admin/login/", {"username": alice, "password": "wrong-password-987"}
    )
    assert response.status_code == 200  # the form again, with an error
    event = AuditEvent.objects.get(action=AuditAction.LOGIN_FAILED)
    assert (event.object_id, event.ip) == (alice, "10.1.2.3")
    assert "wrong-password-987" not in str(event.details) + event.summary


def test_repeated_failed_logins_lock_that_username_and_address_out(make_role_user, settings):
    # given a lockout after 3 failures
    # (a fresh username: the lockout lives in the shared cache, which outlives the test database)
    settings.HUB_LOGIN_MAX_FAILURES = 3
    bob = f"bob-{uuid.uuid4().hex[:8]}"
    make_role_user("analyst", username=bob)
    attacker = Client(REMOTE_ADDR="10.9.9.9")
    for _ in range(3):
        attacker.post("/admin/login/", {"username": bob, "password": "guess-1234567"})

    # when the right password is tried from the same address, and from another
    locked = attacker.post("/admin/login/", {"username": bob, "password": "test-password-123"})
    elsewhere = Client(REMOTE_ADDR="10.0.0.5").post("/admin/login/", {"username": bob, "password": "test-password-123"})

    # then the locked address stays out, the user elsewhere gets in, and the lockout is audited once
    assert locked.status_code == 200 and "_auth_user_id" not in attacker.session
    assert elsewhere.status_code == 302
    assert AuditEvent.objects.filter(action=AuditAction.LOGIN_LOCKED, object_id=bob).count() == 1
    assert AuditEvent.objects.filter(action=AuditAction.LOGIN_FAILED, object_id=bob).count() == 4


def test_role_changes_are_audited_both_ways(make_role_user, django_user_model):
    # given a user with no role
    user = django_user_model.objects.create_user(username="carol", password="x-password-123")
    analyst = Group.objects.get_or_create(name="analyst")[0]
    finance = Group.objects.get_or_create(name="finance_approver")[0]

    # when roles are added from either side and removed
    user.groups.add(analyst)
    finance.user_set.add(user)
    user.groups.remove(analyst)
    user.groups.clear()

    # then each change is one event naming the user and the roles
    summaries = list(
        AuditEvent.objects.filter(action=AuditAction.ROLE_CHANGED, object_id=str(user.pk))
        .order_by("id")
        .values_list("summary", flat=True)
    )
    assert summaries == [
        "Roles added for 'carol': analyst",
        "Roles added for 'carol': finance_approver",
        "Roles removed for 'carol': analyst",
        "Roles removed for 'carol': finance_approver",
    ]


def test_credentials_change_is_audited_by_name_never_by_value(make_role_user):
    system = ConnectedSystemFactory(slug="erp", credentials={"api_key": "s3cr3t-value"})
    admin = make_role_user("integration_admin")
    credentials_changed(system=system, changed=["credentials.api_key"], user=admin)
    event = AuditEvent.objects.get(action=AuditAction.CREDENTIALS_CHANGED)
    assert event.actor_username == admin.username and event.object_id == "erp"
    assert "s3cr3t-value" not in event.summary + str(event.details)


def test_audit_record_takes_actor_key_and_ip_from_the_request(make_api_key, rf):
    api_key, _ = make_api_key("finance_approver", scopes=["exceptions:decide"])
    request = rf.post("/", REMOTE_ADDR="192.0.2.10")
    request.user = api_key.owner
    request.auth = api_key
    event = audit_record(action=AuditAction.EXCEPTION_APPROVED, request=request, object_type="exception_queue.item")
    assert (event.actor_username, event.api_key_prefix, event.ip) == (
        api_key.owner.username,
        api_key.prefix,
        "192.0.2.10",
    )


# --- auditors browse and export -----------------------------------------------------------------------------


def test_auditor_browses_filters_and_exports_the_audit_in_the_admin(client_as):
    # given events of two actions
    audit_record(action=AuditAction.MESSAGE_REPLAYED, object_id="m-1", summary="=HYPERLINK(evil)")
    audit_record(action=AuditAction.EXCEPTION_REJECTED, object_id="x-1", summary="rejected x-1")
    client = client_as("auditor")

    # when the auditor lists, filters, searches and exports
    listing = client.get("/admin/integrationhub/auditevent/")
    filtered = client.get("/admin/integrationhub/auditevent/", {"action__exact": "exception.rejected"})
    searched = client.get("/admin/integrationhub/auditevent/", {"q": "m-1"})
    selected = [e.pk for e in AuditEvent.objects.filter(action__in=["message.replayed", "exception.rejected"])]
    export = client.post("/admin/integrationhub/auditevent/", {"action": "export_csv", "_selected_action": selected})

    # then each works, and the CSV carries the rows with formulas defused
    assert listing.status_code == 200 and "rejected x-1" in listing.content.decode()
    assert "rejected x-1" in filtered.content.decode() and "HYPERLINK" not in filtered.content.decode()
    assert "m-1" in searched.content.decode() and "rejected x-1" not in searched.content.decode()
    assert export.status_code == 200 and export["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert {r["action"] for r in rows} == {"message.replayed", "exception.rejected"}
    assert next(r for r in rows if r["object_id"] == "m-1")["summary"] == "'=HYPERLINK(evil)"


def test_auditor_cannot_add_change_or_delete_events_in_the_admin(client_as, event):
    client = client_as("auditor")
    assert client.get("/admin/integrationhub/auditevent/add/").status_code == 403
    assert client.post(f"/admin/integrationhub/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert client.get(f"/admin/integrationhub/auditevent/{event.pk}/change/").status_code == 200  # view only
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_superuser_cannot_delete_events_in_the_admin_either(client_as, event):
    client = client_as("superuser")
    assert client.post(f"/admin/integrationhub/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()


@pytest.mark.parametrize("role", ["analyst", "finance_approver"])
def test_other_roles_do_not_see_the_audit(client_as, role, event):
    client = client_as(role)
    assert client.get("/admin/integrationhub/auditevent/").status_code == 403
    assert client.get("/api/v1/audit-events/").status_code == 403


def test_auditor_reads_filters_and_exports_the_audit_through_the_api(client_as):
    audit_record(action=AuditAction.MESSAGE_REPLAYED, object_id="m-1", summary="replayed m-1")
    audit_record(action=AuditAction.EXCEPTION_REJECTED, object_id="x-1", summary="rejected x-1")
    client = client_as("auditor")

    listing = client.get("/api/v1/audit-events/", {"action": "exception.rejected"})
    export = client.get("/api/v1/audit-events/export/", {"action": "message.replayed"})

    assert listing.status_code == 200 and [e["object_id"] for e in listing.json()["results"]] == ["x-1"]
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert [r["object_id"] for r in rows] == ["m-1"]


def test_an_audit_read_key_reads_the_audit_and_a_config_key_does_not(make_api_key, key_client, event):
    _, audit_key = make_api_key("auditor", scopes=["audit:read"])
    _, config_key = make_api_key("auditor", scopes=["config:read"])
    assert key_client(audit_key).get("/api/v1/audit-events/").status_code == 200
    assert key_client(config_key).get("/api/v1/audit-events/").status_code == 403


# --- request context: who and from where, on every event ----------------------------------------------------


def test_an_admin_change_records_the_actor_ip_and_user_agent(client_as, settings):
    from governance.tests.factories import LegalEntityFactory

    # given a superuser behind the trusted proxy, and a regional user without a scope yet
    settings.HUB_TRUSTED_PROXIES = ["127.0.0.1"]
    admin = client_as("superuser")
    regional = get_user_model().objects.create_user(username="regional-user")
    entity = LegalEntityFactory(code="UK01")
    # when the superuser limits the user to one legal entity in the admin
    response = admin.post(
        "/admin/integrationhub/userlegalentityscope/add/",
        {"user": regional.pk, "legal_entities": [entity.pk]},
        HTTP_USER_AGENT="Mozilla/5.0 (audit test)",
        HTTP_X_FORWARDED_FOR="203.0.113.9",
    )
    # then the scope change is audited with who, the client's address (through the proxy) and the user agent
    assert response.status_code == 302, response.content[:2000]
    event = AuditEvent.objects.get(action=AuditAction.ENTITY_SCOPE_CHANGED)
    assert (event.actor_username, event.ip, event.user_agent) == (
        "superuser-user",
        "203.0.113.9",
        "Mozilla/5.0 (audit test)",
    )
    assert event.object_id == str(regional.pk)
    assert event.details["scope"] == ["UK01"]


def test_removing_a_scope_leaves_the_user_no_entity_and_is_audited(django_user_model):
    from governance.tests.factories import LegalEntityFactory
    from integrationhub.models import UserLegalEntityScope

    user = django_user_model.objects.create_user(username="scoped")
    scope = UserLegalEntityScope.objects.create(user=user)
    scope.legal_entities.add(LegalEntityFactory(code="DE01"), LegalEntityFactory(code="US01"))
    scope.legal_entities.remove(*scope.legal_entities.filter(code="DE01"))
    scope.delete()
    summaries = list(
        AuditEvent.objects.filter(action=AuditAction.ENTITY_SCOPE_CHANGED)
        .order_by("id")
        .values_list("summary", flat=True)
    )
    assert summaries == [
        "Legal entities added for 'scoped': DE01, US01; scope now DE01, US01",
        "Legal entities removed for 'scoped': DE01; scope now US01",
        "Legal-entity scope removed for 'scoped': no entities",
    ]


def test_an_event_outside_a_request_has_no_address_or_user_agent():
    event = audit_record(action=AuditAction.MESSAGE_REPLAYED, summary="worker")
    assert (event.actor_id, event.api_key_prefix, event.ip, event.user_agent) == (None, "", None, "")


# --- privilege changes ---------------------------------------------------------------------------------------


def test_granting_and_revoking_superuser_writes_an_event(django_user_model):
    # given a plain user
    user = django_user_model.objects.create_user(username="promoted")
    assert not AuditEvent.objects.filter(object_id=str(user.pk)).exists()
    # when superuser status is granted, then revoked
    user.is_superuser = True
    user.save()
    user.is_superuser = False
    user.save()
    # then each change is one event, from and to
    events = AuditEvent.objects.filter(action=AuditAction.SUPERUSER_CHANGED, object_id=str(user.pk)).order_by("id")
    assert [(e.details["from"], e.details["to"]) for e in events] == [(False, True), (True, False)]
    assert events[0].summary == "Superuser status granted for 'promoted'"


def test_staff_flag_changes_are_audited_and_a_login_writes_no_flag_event(django_user_model):
    user = django_user_model.objects.create_user(username="staffer", is_staff=True, password="pw-123456789")
    assert AuditEvent.objects.filter(action=AuditAction.STAFF_CHANGED, object_id=str(user.pk)).count() == 1
    # a save of named fields other than the flags (the login's last_login) does not look at them
    user.save(update_fields=["last_login"])
    user.is_staff = False
    user.save(update_fields=["is_staff"])
    events = AuditEvent.objects.filter(action=AuditAction.STAFF_CHANGED, object_id=str(user.pk)).order_by("id")
    assert [e.details["to"] for e in events] == [True, False]


def test_direct_permission_grants_are_audited(django_user_model):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(username="direct")
    permission = Permission.objects.get(codename="change_message", content_type__app_label="sync")
    user.user_permissions.add(permission)
    user.user_permissions.clear()
    events = AuditEvent.objects.filter(action=AuditAction.PERMISSIONS_CHANGED, object_id=str(user.pk)).order_by("id")
    assert [e.summary for e in events] == [
        "Permissions granted for 'direct': sync.change_message",
        "Permissions removed for 'direct': sync.change_message",
    ]


# --- TRUNCATE -------------------------------------------------------------------------------------------------


def test_truncate_of_the_audit_table_is_refused_on_postgresql(event):
    if connection.vendor != "postgresql":
        pytest.skip("TRUNCATE is PostgreSQL's; SQLite has none, and its DELETE trigger refuses emptying the table")
    with (
        pytest.raises(DatabaseError, match="append-only: TRUNCATE refused"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("TRUNCATE integrationhub_auditevent")
    assert AuditEvent.objects.filter(pk=event.pk).exists()
