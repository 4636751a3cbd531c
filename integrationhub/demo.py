"""Demo users for each role, used by `make run` and the tests."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction

from integrationhub import roles


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
    return list(DEMO_LOGINS)


@dataclass(frozen=True)
class DemoSetupResult:
    summary: list[str]
    logins: list[DemoLogin]


def demo_setup() -> DemoSetupResult:
    """Everything `make run` needs: demo records from each app, then the demo users."""
    summary: list[str] = []
    logins = demo_users_ensure()
    return DemoSetupResult(summary=summary, logins=logins)
