"""Resources: PSA people linked to their ERP employees, in the admin, the API and imports, scoped and audited."""

from __future__ import annotations

import pytest
from django.urls import reverse

from connectors.choices import SystemRole
from connectors.models import ConnectedSystem
from governance.models import LegalEntity
from governance.services import governance_import
from integrationhub.models import AuditEvent, UserLegalEntityScope
from workflows.models import ResourceLink
from workflows.resource_links import AUDIT_LINK_SAVED, resource_link_for, resource_link_save

pytestmark = pytest.mark.django_db

HEADER = "psa_system,person_ref,person_name,erp_system,legal_entity,employee_ref,employee_name,notes\n"


def _system(slug: str, role: str, *entities: LegalEntity) -> ConnectedSystem:
    system = ConnectedSystem.objects.create(
        name=slug,
        slug=slug,
        role=role,
        connector_type="sandbox_erp" if role == SystemRole.ERP else "harvest_psa",
        base_url="http://127.0.0.1:9/",
    )
    system.legal_entities.add(*entities)
    return system


@pytest.fixture
def world():
    uk = LegalEntity.objects.create(code="UK01", name="UK", country="GB", base_currency="GBP", region="emea")
    us = LegalEntity.objects.create(code="US01", name="US", country="US", base_currency="USD", region="americas")
    psa = _system("psa", SystemRole.PSA, uk, us)
    erp_uk = _system("erp-uk", SystemRole.ERP, uk)
    erp_us = _system("erp-us", SystemRole.ERP, us)
    return {"uk": uk, "us": us, "psa": psa, "erp_uk": erp_uk, "erp_us": erp_us}


def _link(world, person: str, name: str, erp: str, employee: str, entity: str | None = None) -> ResourceLink:
    return resource_link_save(
        link=ResourceLink(
            psa_system=world["psa"],
            person_ref=person,
            person_name=name,
            erp_system=world[erp],
            legal_entity=world[entity] if entity else None,
            employee_ref=employee,
        ),
        reason="test",
    )


def _scope_to(user, *entities: LegalEntity) -> None:
    scope, _ = UserLegalEntityScope.objects.get_or_create(user=user)
    scope.all_entities = False
    scope.save()
    scope.legal_entities.set(entities)


def test_the_entity_link_wins_over_the_erp_wide_one_and_none_is_found_for_another_erp(world):
    # given an ERP-wide link and a UK01 link of the same person in the same ERP
    _link(world, "4010", "Alice Hartley", "erp_uk", "7")
    _link(world, "4010", "Alice Hartley", "erp_uk", "9", entity="uk")

    # then the UK01 entry books to 9, an entry without entity to 7, and the US ERP knows no employee
    kwargs = {"psa_system_id": world["psa"].pk, "person_ref": "4010"}
    assert (
        resource_link_for(**kwargs, erp_system_id=world["erp_uk"].pk, legal_entity_id=world["uk"].pk).employee_ref
        == "9"
    )
    assert resource_link_for(**kwargs, erp_system_id=world["erp_uk"].pk, legal_entity_id=None).employee_ref == "7"
    assert resource_link_for(**kwargs, erp_system_id=world["erp_us"].pk, legal_entity_id=world["us"].pk) is None


def test_admin_lists_searches_and_filters_people_and_an_analyst_saves_one_with_history_and_audit(
    world, make_role_user, client
):
    # given three linked people and an analyst
    _link(world, "4010", "Alice Hartley", "erp_uk", "2", entity="uk")
    _link(world, "4011", "Ben Okafor", "erp_uk", "3", entity="uk")
    _link(world, "4011", "Ben Okafor", "erp_us", "E-311", entity="us")
    analyst = make_role_user("analyst")
    client.force_login(analyst)
    url = reverse("admin:workflows_resourcelink_changelist")

    # when the analyst searches and filters the list
    searched = client.get(url, {"q": "okafor"})
    filtered = client.get(url, {"erp_system__id__exact": world["erp_us"].pk})

    # then the search finds Ben's two links, the filter the US ERP's one
    assert searched.status_code == 200
    assert searched.content.decode().count("Ben Okafor (4011)") == 2
    assert "Alice Hartley" not in searched.content.decode()
    assert filtered.content.decode().count("Ben Okafor (4011)") == 1 and "E-311" in filtered.content.decode()

    # when the analyst links Chloe in the admin form with a reason
    response = client.post(
        reverse("admin:workflows_resourcelink_add"),
        {
            "psa_system": world["psa"].pk,
            "person_ref": "4012",
            "person_name": "Chloe Martin",
            "erp_system": world["erp_uk"].pk,
            "legal_entity": world["uk"].pk,
            "employee_ref": "4",
            "employee_name": "Chloe Martin",
            "notes": "",
            "change_reason": "new joiner",
        },
    )

    # then the link is stored, its history names the analyst and the reason, and the audit trail has it
    assert response.status_code == 302, response.content.decode()[:2000]
    link = ResourceLink.objects.get(person_ref="4012")
    (history,) = link.history.all()
    assert (history.history_user, history.history_change_reason) == (analyst, "new joiner")
    event = AuditEvent.objects.filter(action=AUDIT_LINK_SAVED, object_id=str(link.pk)).get()
    assert event.actor_id == analyst.pk and "employee 4" in event.summary


def test_admin_refuses_an_erp_that_does_not_serve_the_legal_entity_naming_the_field(world, make_role_user, client):
    # given an integration admin
    client.force_login(make_role_user("integration_admin"))

    # when they link a person to the UK ERP for the US entity
    response = client.post(
        reverse("admin:workflows_resourcelink_add"),
        {
            "psa_system": world["psa"].pk,
            "person_ref": "4010",
            "erp_system": world["erp_uk"].pk,
            "legal_entity": world["us"].pk,
            "employee_ref": "2",
            "change_reason": "typo",
        },
    )

    # then the form says which field is wrong and why, and nothing is stored
    assert response.status_code == 200
    assert "erp-uk does not serve US01; it serves UK01." in response.content.decode()
    assert not ResourceLink.objects.exists()


def test_finance_and_auditors_read_resources_but_cannot_change_them(world, make_role_user, client):
    _link(world, "4010", "Alice Hartley", "erp_uk", "2", entity="uk")
    for role in ("finance_approver", "auditor"):
        client.force_login(make_role_user(role))
        assert client.get(reverse("admin:workflows_resourcelink_changelist")).status_code == 200
        assert client.get(reverse("admin:workflows_resourcelink_add")).status_code == 403


def test_api_follows_the_roles_and_the_legal_entity_scope(world, make_role_user, client):
    # given a UK link and a US link
    _link(world, "4010", "Alice Hartley", "erp_uk", "2", entity="uk")
    _link(world, "4011", "Ben Okafor", "erp_us", "E-311", entity="us")
    url = "/api/v1/resources/"
    body = {
        "psa_system": "psa",
        "person_ref": "4012",
        "person_name": "Chloe Martin",
        "erp_system": "erp-uk",
        "legal_entity": "UK01",
        "employee_ref": "4",
    }

    # when finance reads and tries to write
    client.force_login(make_role_user("finance_approver"))
    listed = client.get(url, {"erp_system": "erp-uk"})
    refused = client.post(url, body, content_type="application/json")

    # then finance reads (filtered by ERP) but cannot write
    assert listed.status_code == 200
    assert [row["person_ref"] for row in listed.json()["results"]] == ["4010"]
    assert refused.status_code == 403

    # when an analyst scoped to UK01 writes a UK link, then a US one, and lists everything
    analyst = make_role_user("analyst")
    _scope_to(analyst, world["uk"])
    client.force_login(analyst)
    created = client.post(url, body, content_type="application/json", HTTP_X_CHANGE_REASON="new joiner")
    foreign = client.post(
        url,
        {**body, "person_ref": "4013", "erp_system": "erp-us", "legal_entity": "US01"},
        content_type="application/json",
    )
    mine = client.get(url)

    # then the UK link is stored with its reason, the US one is refused, and only UK links are listed
    assert created.status_code == 201, created.content
    assert ResourceLink.objects.get(person_ref="4012").history.get().history_change_reason == "new joiner"
    assert foreign.status_code == 403
    assert sorted(row["person_ref"] for row in mine.json()["results"]) == ["4010", "4012"]

    # when the analyst sends a link whose ERP does not serve its legal entity
    wrong = client.post(
        url,
        {**body, "person_ref": "4014", "legal_entity": "UK01", "erp_system": "erp-us"},
        content_type="application/json",
    )

    # then the answer names the field
    assert wrong.status_code == 400
    assert "legal_entity" in wrong.content.decode()


def test_an_import_with_one_bad_row_names_the_row_and_field_and_stores_nothing(world, make_role_user):
    # given a file whose third row names an ERP that does not exist and whose fourth an entity the ERP does not serve
    analyst = make_role_user("analyst")
    data = (
        HEADER
        + "psa,4010,Alice Hartley,erp-uk,UK01,2,Alice Hartley,\n"
        + "psa,4011,Ben Okafor,erp-uk,,3,Ben Okafor,\n"
        + "psa,4012,Chloe Martin,erp-xx,UK01,4,Chloe Martin,\n"
        + "psa,4013,Diego Alvarez,erp-uk,US01,5,Diego Alvarez,\n"
    ).encode()

    # when it is imported
    report = governance_import(resource_name="resources", data=data, format="csv", user=analyst, dry_run=False)

    # then rows 3 and 4 are named with their column, and nothing of the file is stored
    by_row = {(error.row, error.field): error.message for error in report.errors}
    assert "erp-xx" in by_row[(3, "erp_system")]
    assert "does not serve US01" in by_row[(4, "legal_entity")]
    assert {row for row, _ in by_row} == {3, 4}
    assert not ResourceLink.objects.exists()
    assert not ResourceLink.history.exists()

    # when the good rows are imported alone, and then again
    good = (
        HEADER + "psa,4010,Alice Hartley,erp-uk,UK01,2,Alice Hartley,\npsa,4011,Ben Okafor,erp-uk,,3,Ben Okafor,\n"
    ).encode()
    first = governance_import(
        resource_name="resources", data=good, format="csv", user=analyst, dry_run=False, file_name="people.csv"
    )
    again = governance_import(resource_name="resources", data=good, format="csv", user=analyst, dry_run=False)

    # then both are stored once (the ERP-wide one too), with the file in their history, and a re-import skips them
    assert not first.errors and (first.new, again.new, again.skipped) == (2, 0, 2)
    assert ResourceLink.objects.count() == 2
    ben = ResourceLink.objects.get(person_ref="4011")
    assert ben.legal_entity is None
    assert ben.history.get().history_change_reason == "import of people.csv"
