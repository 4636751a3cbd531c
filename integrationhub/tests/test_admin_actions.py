"""Every admin action of every registered model, classified: which role gets it on the list page.

A read-only role (auditor, leader) must never get an action that changes or starts anything. A model or an
action registered later fails `test_every_registered_admin_action_is_classified` until it is added below.
"""

from __future__ import annotations

import pytest
from django.contrib import admin

from integrationhub import roles

AUDITOR, LEADER, ANALYST, FINANCE, ADMIN, SUPER = (
    roles.AUDITOR,
    roles.LEADER,
    roles.ANALYST,
    roles.FINANCE_APPROVER,
    roles.INTEGRATION_ADMIN,
    "superuser",
)
ROLE_USERS = (*roles.ROLES, SUPER)
NOBODY: frozenset[str] = frozenset()
ADMINS = frozenset({ADMIN, SUPER})
SUPERUSER = frozenset({SUPER})
CONFIG_EDITORS = frozenset({ANALYST, ADMIN, SUPER})  # mappings and the analyst's governance records

# model label → action name → the roles that get it. NOBODY: declared, but every user is refused it (the model
# admin forbids deletes, or drops the bulk delete in get_actions because it would skip a check).
EXPECTED_ACTIONS: dict[str, dict[str, frozenset[str]]] = {
    "alerts.alert": {"delete_selected": NOBODY},
    "alerts.alertrule": {"delete_selected": ADMINS},
    "auth.group": {"delete_selected": SUPERUSER},
    "auth.user": {"delete_selected": SUPERUSER},
    "connectors.connectedsystem": {
        "delete_selected": ADMINS,
        "test_connection": ADMINS,
        "pause": ADMINS,
        "resume": ADMINS,
    },
    "django_celery_beat.clockedschedule": {"delete_selected": ADMINS},
    "django_celery_beat.crontabschedule": {"delete_selected": ADMINS},
    "django_celery_beat.intervalschedule": {"delete_selected": ADMINS},
    "django_celery_beat.solarschedule": {"delete_selected": ADMINS},
    "django_celery_beat.periodictask": {
        "delete_selected": ADMINS,
        "enable_tasks": ADMINS,
        "disable_tasks": ADMINS,
        "toggle_tasks": ADMINS,
        "run_tasks": ADMINS,
    },
    "exception_queue.decision": {"delete_selected": NOBODY},
    # Segregation of duties: the integration admin reads the queue but neither replays nor rejects.
    "exception_queue.exceptionitem": {
        "delete_selected": NOBODY,
        "bulk_replay": frozenset({ANALYST, FINANCE, SUPER}),
        "bulk_reject": frozenset({FINANCE, SUPER}),
    },
    "governance.accountingperiod": {"delete_selected": ADMINS},
    "governance.legalentity": {"delete_selected": ADMINS},
    "governance.ownershiprule": {"delete_selected": CONFIG_EDITORS},
    "governance.ratecard": {"delete_selected": CONFIG_EDITORS},
    "governance.syncpolicy": {"delete_selected": CONFIG_EDITORS},
    "insights.batchprogress": {"delete_selected": NOBODY},
    "insights.kpidashboard": {"delete_selected": NOBODY},
    "integrationhub.apikey": {"delete_selected": NOBODY, "revoke_selected": ADMINS},
    "integrationhub.auditevent": {"delete_selected": NOBODY, "export_csv": frozenset({AUDITOR, ADMIN, SUPER})},
    "integrationhub.userlegalentityscope": {"delete_selected": ADMINS},
    "mappings.canonicalentity": {"delete_selected": NOBODY, "publish_latest_draft": CONFIG_EDITORS},
    "mappings.canonicalschema": {"delete_selected": NOBODY, "publish": CONFIG_EDITORS},
    "mappings.fieldrule": {"delete_selected": NOBODY},
    "mappings.mappingset": {
        "delete_selected": NOBODY,
        "create_draft": CONFIG_EDITORS,
        "retire": CONFIG_EDITORS,
        "export_json": frozenset({AUDITOR, ANALYST, FINANCE, ADMIN, SUPER}),
    },
    "mappings.valuemap": {"delete_selected": NOBODY},
    "otp_totp.totpdevice": {"delete_selected": NOBODY, "reset_selected": SUPERUSER},
    "reconciliation.reconciliationrun": {"delete_selected": NOBODY},
    "sandbox.sandboxfaultprofile": {"delete_selected": ADMINS, "reset_faults": ADMINS},
    "sandbox.sandboxrecord": {"delete_selected": ADMINS},
    "sandbox.sandboxsetting": {"delete_selected": ADMINS},
    "sandbox.sandboxwebhookdelivery": {"delete_selected": ADMINS},
    "sync.crossreference": {"delete_selected": NOBODY},
    "sync.delivery": {"delete_selected": NOBODY},
    "sync.filedrop": {"delete_selected": NOBODY},
    "sync.message": {"delete_selected": NOBODY, "replay_messages": ADMINS},
    "sync.pollcursor": {"delete_selected": NOBODY},
    "sync.pollschedule": {"delete_selected": ADMINS, "run_now": ADMINS},
    "sync.route": {"delete_selected": ADMINS},
    "workflows.clientdirectoryentry": {"delete_selected": NOBODY},
    "workflows.financenotification": {"delete_selected": NOBODY},
    "workflows.milestonebillingrun": {"delete_selected": NOBODY},
    "workflows.resourcelink": {"delete_selected": CONFIG_EDITORS},
    "workflows.timeexpenseposting": {"delete_selected": NOBODY},
    "workflows.workflowrun": {"delete_selected": NOBODY},
}


def registered_admins() -> list[tuple[str, admin.ModelAdmin]]:
    return sorted(
        ((model._meta.label_lower, model_admin) for model, model_admin in admin.site._registry.items()),
        key=lambda pair: pair[0],
    )


def declared_actions(model_admin: admin.ModelAdmin) -> dict[str, object]:
    # Every action the model admin declares (the site-wide ones included), before any permission filter.
    return {name: func for func, name, _description in model_admin._get_base_actions()}


def test_every_registered_admin_action_is_classified():
    # given every model registered in the admin and the actions each declares
    declared = {label: set(declared_actions(model_admin)) for label, model_admin in registered_admins()}
    # then the matrix names exactly those models and actions: a new one must be classified first
    assert declared == {label: set(actions) for label, actions in EXPECTED_ACTIONS.items()}


def test_every_admin_action_declares_the_permissions_it_needs():
    # given every action of every registered model admin
    undeclared = [
        f"{label}.{name}"
        for label, model_admin in registered_admins()
        for name, func in declared_actions(model_admin).items()
        if not getattr(func, "allowed_permissions", None)
    ]
    # then each is restricted by `permissions=` (an action without it is offered to every staff user)
    assert undeclared == []


@pytest.mark.parametrize("role", ROLE_USERS)
def test_each_role_gets_exactly_the_admin_actions_it_is_entitled_to(make_role_user, rf, role):
    # given a staff user in the role (a demo-like login)
    user = make_role_user(role, username=f"{role}-actions")
    got: dict[str, set[str]] = {}
    expected: dict[str, set[str]] = {}
    # when each registered model's list page builds its action menu for that user
    for label, model_admin in registered_admins():
        app_label, model_name = label.split(".")
        request = rf.get(f"/admin/{app_label}/{model_name}/")
        request.user = user
        got[label] = set(model_admin.get_actions(request))
        expected[label] = {name for name, allowed in EXPECTED_ACTIONS.get(label, {}).items() if role in allowed}
    # then it offers exactly the actions the role is entitled to, nothing more
    assert got == expected


@pytest.mark.parametrize("role", [roles.AUDITOR, roles.LEADER])
def test_read_only_roles_get_no_action_that_changes_anything(role):
    # given the matrix above, then a read-only role gets at most the exports
    offered = {
        f"{label}.{name}" for label, actions in EXPECTED_ACTIONS.items() for name, who in actions.items() if role in who
    }
    assert offered <= {"integrationhub.auditevent.export_csv", "mappings.mappingset.export_json"}
