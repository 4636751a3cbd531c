"""Where each role lands after signing in: finance on the open exception queue, analysts on their mappings,
auditors on the change history, leaders on the KPI dashboard, integration admins (and superusers) on the admin index."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from integrationhub.roles import ANALYST, AUDITOR, FINANCE_APPROVER, INTEGRATION_ADMIN, LEADER

# First matching role wins, so a user in several groups lands on the most operational page.
ROLE_LANDINGS: tuple[tuple[str, str, str], ...] = (
    (INTEGRATION_ADMIN, "admin:index", ""),
    (FINANCE_APPROVER, "admin:exception_queue_exceptionitem_changelist", "?state__exact=open"),
    (ANALYST, "admin:mappings_mappingset_changelist", ""),
    (AUDITOR, "hub-change-history", ""),
    (LEADER, "admin:insights_kpidashboard_changelist", ""),
)


def role_landing_url(*, user: Any) -> str:
    """The page `user` starts on; the admin index for superusers and for users in no role."""
    if user.is_superuser:
        return reverse("admin:index")
    groups = set(user.groups.values_list("name", flat=True))
    for role, url_name, query in ROLE_LANDINGS:
        if role in groups:
            return reverse(url_name) + query
    return reverse("admin:index")
