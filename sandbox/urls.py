"""URLs of the sandbox systems, mounted under /sandbox/: crm/, psa/, collab/, erp/, analytics/.

Each system also answers GET <system>/health (no auth), GET <system>/whoami (the system's own auth)
and the control API <system>/_faults (GET/PUT/DELETE) and <system>/_settings (GET/PATCH).
Trailing slashes are optional, as the vendors' APIs accept both.
"""

from __future__ import annotations

from collections.abc import Callable

from django.urls import URLPattern, path, re_path

from sandbox.choices import CollabObject, ErpObject, PsaObject, SandboxSystem
from sandbox.faults import with_faults
from sandbox.views import analytics, collab, common, crm, erp, psa, ui

app_name = "sandbox"

ID = r"(?P<record_id>\d+)"
SF_ID = r"(?P<record_id>[A-Za-z0-9]{15,18})"
VERSION = r"(?P<version>v[\d.]+)"
GRAPH_ID = r"(?P<{}>[0-9a-fA-F-]{{36}})"


def route(regex: str, view: Callable, name: str | None = None) -> URLPattern:
    return re_path(rf"^{regex}/?$", view, name=name)


def system_urls(system: str, whoami: Callable) -> list[URLPattern]:
    return [
        route(f"{system}/health", with_faults(system)(common.health), name=f"{system}-health"),
        route(f"{system}/whoami", whoami, name=f"{system}-whoami"),
        route(f"{system}/_faults", common.control_faults_view(system), name=f"{system}-faults"),
        route(f"{system}/_settings", common.control_settings_view(system), name=f"{system}-settings"),
    ]


crm_data = rf"crm/services/data/{VERSION}"
crm_urls = [
    route("crm/services/oauth2/token", crm.token, name="crm-token"),
    route(f"{crm_data}/query", crm.query, name="crm-query"),
    route(f"{crm_data}/queryAll", crm.query_all, name="crm-query-all"),
    route(rf"{crm_data}/query/(?P<cursor>[A-Za-z0-9]+-\d+)", crm.query_more, name="crm-query-more"),
    route(rf"{crm_data}/sobjects/(?P<sobject>\w+)", crm.sobject_collection, name="crm-sobjects"),
    route(rf"{crm_data}/sobjects/(?P<sobject>\w+)/{SF_ID}", crm.sobject_detail, name="crm-sobject"),
    route(
        rf"{crm_data}/sobjects/(?P<sobject>\w+)/(?P<field>\w+)/(?P<value>[^/]+)",
        crm.sobject_by_external_id,
        name="crm-sobject-upsert",
    ),
    path("crm/ui/opportunities/", ui.crm_opportunities, name="crm-ui-opportunities"),
    path("crm/ui/opportunities/<str:record_id>/close-won", ui.crm_opportunity_close_won, name="crm-ui-close-won"),
]

psa_urls = [
    route("psa/v2/users/me", psa.whoami, name="psa-users-me"),
    route("psa/v2/company", psa.company, name="psa-company"),
    route(f"psa/v2/time_entries/{ID}/approve", psa.time_entry_approve, name="psa-time-entry-approve"),
    route(f"psa/v2/time_entries/{ID}/unapprove", psa.time_entry_unapprove, name="psa-time-entry-unapprove"),
    route(f"psa/v2/expenses/{ID}/approve", psa.expense_approve, name="psa-expense-approve"),
    route(f"psa/v2/expenses/{ID}/unapprove", psa.expense_unapprove, name="psa-expense-unapprove"),
    route(f"psa/v2/projects/{ID}/release_staffing", psa.project_release_staffing, name="psa-project-release-staffing"),
]
for resource in PsaObject.values:
    psa_urls += [
        route(f"psa/v2/{resource}", psa.collection(resource), name=f"psa-{resource}"),
        route(f"psa/v2/{resource}/{ID}", psa.detail(resource), name=f"psa-{resource}-detail"),
    ]

group_id = GRAPH_ID.format("group_id")
collab_urls = [
    route("collab/oauth2/v2.0/token", collab.token, name="collab-token"),
    route(r"collab/(?P<tenant>[\w.-]+)/oauth2/v2.0/token", collab.token, name="collab-tenant-token"),
    route("collab/v1.0/organization", collab.whoami, name="collab-organization"),
    route("collab/v1.0/groups", collab.collection(CollabObject.GROUP), name="collab-groups"),
    route(f"collab/v1.0/groups/{group_id}", collab.group_detail, name="collab-group"),
    route(f"collab/v1.0/groups/{group_id}/members", collab.group_members, name="collab-group-members"),
    route(rf"collab/v1.0/groups/{group_id}/members/\$ref", collab.group_members_ref, name="collab-group-members-ref"),
    route(
        rf"collab/v1.0/groups/{group_id}/members/(?P<user_id>[0-9a-fA-F-]{{36}})/\$ref",
        collab.group_member_remove,
        name="collab-group-member-remove",
    ),
    route("collab/v1.0/users", collab.collection(CollabObject.USER), name="collab-users"),
    route(r"collab/v1.0/users/(?P<user_id>[^/]+)", collab.user_detail, name="collab-user"),
    route(f"collab/v1.0/teams/{GRAPH_ID.format('team_id')}", collab.team_detail, name="collab-team"),
    route(f"collab/v1.0/teams/{GRAPH_ID.format('team_id')}/archive", collab.team_archive, name="collab-team-archive"),
    route(
        f"collab/v1.0/teams/{GRAPH_ID.format('team_id')}/unarchive", collab.team_unarchive, name="collab-team-unarchive"
    ),
]

erp_urls = [
    route(f"erp/api/invoices/{ID}/post", erp.invoice_post, name="erp-invoice-post"),
    route(f"erp/api/invoices/{ID}/pay", erp.invoice_pay, name="erp-invoice-pay"),
    route(f"erp/api/time-entries/{ID}/reverse", erp.time_entry_reverse, name="erp-time-entry-reverse"),
    route("erp/api/time-entries/batch", erp.time_entries_batch, name="erp-time-entries-batch"),
]
for resource in ErpObject.values:
    erp_urls += [
        route(f"erp/api/{resource}", erp.collection(resource), name=f"erp-{resource}"),
        route(f"erp/api/{resource}/{ID}", erp.detail(resource), name=f"erp-{resource}-detail"),
    ]

analytics_urls = [
    route(r"analytics/datasets/(?P<dataset>\w+)/events", analytics.events, name="analytics-events"),
]

urlpatterns = [
    *system_urls(SandboxSystem.CRM, crm.whoami),
    *system_urls(SandboxSystem.PSA, psa.whoami),
    *system_urls(SandboxSystem.COLLAB, collab.whoami),
    *system_urls(SandboxSystem.ERP, erp.whoami),
    *system_urls(SandboxSystem.ANALYTICS, analytics.whoami),
    *crm_urls,
    *psa_urls,
    *collab_urls,
    *erp_urls,
    *analytics_urls,
]
