"""The roles and the model permissions each one holds.

Groups are created by a data migration; their permissions are brought in line with ROLE_RULES after
every migrate, so a model added later is covered without another data migration.
"""

from __future__ import annotations

from fnmatch import fnmatch
from typing import Any

from django.contrib.auth.models import Group, Permission
from django.db import transaction

INTEGRATION_ADMIN = "integration_admin"
ANALYST = "analyst"
FINANCE_APPROVER = "finance_approver"
AUDITOR = "auditor"
# Delivery and finance leads: the KPI dashboard, the KPI API and the batch progress, nothing else.
LEADER = "leader"
ROLES = (INTEGRATION_ADMIN, ANALYST, FINANCE_APPROVER, AUDITOR, LEADER)

HUB_APPS = (
    "governance",
    "connectors",
    "mappings",
    "sync",
    "workflows",
    "exception_queue",
    "insights",
    "sandbox",
    "reconciliation",
    "alerts",
    "django_celery_beat",
)
# The project app's own models (API keys, audit log, legal-entity scopes) get explicit rules below instead
# of the per-app wildcards: analysts and finance approvers do not see the audit log or the keys.
PERMISSION_APPS = (*HUB_APPS, "integrationhub")
ALL = frozenset({"*"})
VIEW = frozenset({"view"})
EDIT = frozenset({"add", "change", "delete", "view"})

# (pattern on "app_label.model", actions). The default actions are add/change/delete/view; a custom
# permission is matched by its whole codename (for example "decide_exceptionitem").
ROLE_RULES: dict[str, list[tuple[str, frozenset[str]]]] = {
    AUDITOR: [(f"{app}.*", VIEW) for app in HUB_APPS]
    + [
        ("integrationhub.auditevent", VIEW),
        ("integrationhub.apikey", VIEW),
        ("integrationhub.userlegalentityscope", VIEW),
        ("insights.batchprogress", frozenset({"view_kpis"})),
    ],
    LEADER: [("insights.batchprogress", frozenset({"view", "view_kpis"}))],
    ANALYST: [(f"{app}.*", VIEW) for app in HUB_APPS]
    + [
        ("mappings.*", EDIT),
        # Resources (PSA person ↔ ERP employee) are configuration analysts keep, like mappings.
        ("workflows.resourcelink", EDIT),
        ("governance.ownershiprule", EDIT),
        ("governance.ratecard", EDIT),
        ("governance.ratecardline", EDIT),
        ("governance.syncpolicy", EDIT),
        ("exception_queue.exceptionitem", frozenset({"fix_exceptionitem"})),
    ],
    FINANCE_APPROVER: [(f"{app}.*", VIEW) for app in HUB_APPS]
    + [
        ("exception_queue.exceptionitem", frozenset({"change", "decide_exceptionitem", "fix_exceptionitem"})),
        ("exception_queue.decision", frozenset({"add"})),
        # Finance opens and closes the accounting periods time and expenses post into (admins add them).
        ("governance.accountingperiod", frozenset({"change"})),
        # Finance starts a reconciliation by hand ("run now"); everyone else reads the result.
        ("reconciliation.reconciliationrun", frozenset({"add"})),
    ],
    # Segregation of duties: integration admins run the hub but do not decide on the exception queue (approve,
    # reject, fix, replay items, or workflow retries and compensations); finance does. They keep read access.
    INTEGRATION_ADMIN: [(f"{app}.*", ALL) for app in HUB_APPS if app != "exception_queue"]
    + [
        ("exception_queue.*", VIEW),
        ("integrationhub.apikey", ALL),
        ("integrationhub.auditevent", VIEW),
        ("integrationhub.userlegalentityscope", ALL),
    ],
}


def permission_action(codename: str, model: str) -> str:
    """Return "add"/"change"/"delete"/"view" for Django's default permissions, else the whole codename."""
    for action in ("add", "change", "delete", "view"):
        if codename == f"{action}_{model}":
            return action
    return codename


def role_grants(*, role: str, app_label: str, model: str, codename: str) -> bool:
    """Whether `role` holds the permission `app_label.codename` on `model`."""
    action = permission_action(codename, model)
    for pattern, actions in ROLE_RULES[role]:
        if fnmatch(f"{app_label}.{model}", pattern) and ("*" in actions or action in actions):
            return True
    return False


@transaction.atomic
def roles_sync() -> dict[str, int]:
    """Create the role groups if missing and set each one's permissions to exactly what ROLE_RULES grants."""
    permissions = list(
        Permission.objects.select_related("content_type").filter(content_type__app_label__in=PERMISSION_APPS)
    )
    counts: dict[str, int] = {}
    for role in ROLES:
        group, _ = Group.objects.get_or_create(name=role)
        granted = [
            permission
            for permission in permissions
            if role_grants(
                role=role,
                app_label=permission.content_type.app_label,
                model=permission.content_type.model,
                codename=permission.codename,
            )
        ]
        group.permissions.set(granted)
        counts[role] = len(granted)
    return counts


def roles_sync_after_migrate(**kwargs: Any) -> None:
    # Only on the real database: the historical `apps` passed to post_migrate is not needed here.
    roles_sync()
