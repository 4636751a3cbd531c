"""Each role logs in to the admin: what it can reach, what it cannot, and that refused writes change nothing."""

import pytest
from django.apps import apps

from integrationhub import roles

VIEW, EDIT, NONE = "view", "edit", "none"

# model → expected access per role, following the table in DESIGN.md.
ACCESS = {
    "governance.legalentity": {"auditor": VIEW, "analyst": VIEW, "finance_approver": VIEW, "integration_admin": EDIT},
    "governance.ratecard": {"auditor": VIEW, "analyst": EDIT, "finance_approver": VIEW, "integration_admin": EDIT},
    "governance.ownershiprule": {"auditor": VIEW, "analyst": EDIT, "finance_approver": VIEW, "integration_admin": EDIT},
    "governance.syncpolicy": {"auditor": VIEW, "analyst": EDIT, "finance_approver": VIEW, "integration_admin": EDIT},
    "workflows.resourcelink": {"auditor": VIEW, "analyst": EDIT, "finance_approver": VIEW, "integration_admin": EDIT},
    "connectors.connectedsystem": {
        "auditor": VIEW,
        "analyst": VIEW,
        "finance_approver": VIEW,
        "integration_admin": EDIT,
    },
    "mappings.canonicalschema": {"auditor": VIEW, "analyst": EDIT, "finance_approver": VIEW, "integration_admin": EDIT},
    "django_celery_beat.periodictask": {
        "auditor": VIEW,
        "analyst": VIEW,
        "finance_approver": VIEW,
        "integration_admin": EDIT,
    },
    "auth.user": {"auditor": NONE, "analyst": NONE, "finance_approver": NONE, "integration_admin": NONE},
}
CASES = [(model, role, access) for model, by_role in ACCESS.items() for role, access in by_role.items()]


def admin_url(model_label: str, page: str) -> str:
    app_label, model_name = model_label.split(".")
    return f"/admin/{app_label}/{model_name}/{page}"


@pytest.mark.parametrize("role", roles.ROLES)
def test_every_role_reaches_the_admin_index(client_as, role):
    response = client_as(role).get("/admin/")
    assert response.status_code == 200


@pytest.mark.parametrize(("model_label", "role", "access"), CASES)
def test_role_reaches_exactly_what_its_permissions_allow(client_as, model_label, role, access):
    # given a user of the role, logged in to the admin
    client = client_as(role)
    model = apps.get_model(model_label)
    before = model.objects.count()

    # when it opens the list and the add form
    listing = client.get(admin_url(model_label, ""))
    add_form = client.get(admin_url(model_label, "add/"))

    # then it sees the list only with view rights and the form only with edit rights
    assert listing.status_code == (403 if access == NONE else 200)
    assert add_form.status_code == (200 if access == EDIT else 403)

    if access != EDIT:
        # and a write it is not allowed is refused, leaving the table as it was
        refused = client.post(admin_url(model_label, "add/"), {"name": "x", "code": "ZZ01", "change_reason": "try"})
        assert refused.status_code == 403
        assert model.objects.count() == before


def test_integration_admin_creates_a_legal_entity_the_auditor_cannot_change_it(client_as):
    from governance.models import LegalEntity

    # given an integration admin who creates a legal entity through the admin form
    created = client_as("integration_admin").post(
        admin_url("governance.legalentity", "add/"),
        {
            "code": "FR01",
            "name": "Example Conseil SAS",
            "country": "FR",
            "base_currency": "EUR",
            "tax_jurisdiction": "FR",
            "region": "emea",
            "change_reason": "new French entity",
        },
    )
    assert created.status_code == 302, created.content[:2000]
    entity = LegalEntity.objects.get(code="FR01")
    assert entity.history.first().history_change_reason == "new French entity"

    # when an auditor tries to rename it and to delete it
    auditor = client_as("auditor")
    change = auditor.post(
        admin_url("governance.legalentity", f"{entity.pk}/change/"),
        {
            "code": "FR01",
            "name": "Renamed",
            "country": "FR",
            "base_currency": "EUR",
            "tax_jurisdiction": "FR",
            "region": "emea",
            "change_reason": "x",
        },
    )
    delete = auditor.post(admin_url("governance.legalentity", f"{entity.pk}/delete/"), {"post": "yes"})

    # then both are refused and the record is untouched
    assert change.status_code == 403
    assert delete.status_code == 403
    entity.refresh_from_db()
    assert entity.name == "Example Conseil SAS"
    assert entity.history.count() == 1


def test_role_permissions_follow_the_role_table(db):
    from django.contrib.auth.models import Group

    roles.roles_sync()
    codenames = {
        role: set(Group.objects.get(name=role).permissions.values_list("codename", flat=True)) for role in roles.ROLES
    }
    assert codenames["auditor"] and all(code.startswith("view_") for code in codenames["auditor"])
    assert {"change_ratecard", "change_syncpolicy", "change_ownershiprule"} <= codenames["analyst"]
    assert "change_connectedsystem" not in codenames["analyst"]
    assert "change_legalentity" not in codenames["analyst"]
    # (finance adds decisions, and starts a reconciliation run by hand: "run now")
    assert not {code for code in codenames["finance_approver"] if code.startswith(("add_", "delete_"))} - {
        "add_decision",
        "add_reconciliationrun",
    }
    assert {"change_connectedsystem", "add_legalentity", "change_periodictask"} <= codenames["integration_admin"]


def test_integration_admins_read_the_exception_queue_and_finance_decides(db):
    from django.contrib.auth.models import Group

    # given the role groups brought in line with the role table
    roles.roles_sync()
    codenames = {
        role: set(Group.objects.get(name=role).permissions.values_list("codename", flat=True)) for role in roles.ROLES
    }
    decisions = {"decide_exceptionitem", "fix_exceptionitem", "change_exceptionitem", "add_decision"}
    # then integration admins keep read access but hold none of the decision permissions (segregation of duties)
    assert {"view_exceptionitem", "view_decision"} <= codenames["integration_admin"]
    assert not decisions & codenames["integration_admin"]
    # and finance approvers hold them
    assert decisions <= codenames["finance_approver"]
