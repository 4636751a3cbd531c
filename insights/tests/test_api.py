"""GET /api/v1/kpis/: the dashboard's figures for machine clients with the kpis:read scope, and nobody else."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from connectors.tests.factories import ConnectedSystemFactory
from exception_queue.models import ExceptionItem
from insights.tests.factories import ExceptionItemFactory, MessageFactory
from integrationhub.models import AuditEvent
from sync.models import Message

pytestmark = pytest.mark.django_db

URL = "/api/v1/kpis/"


def seed() -> None:
    now = timezone.now()
    system = ConnectedSystemFactory()
    for seconds in (60, 120, 180):
        MessageFactory(
            system=system,
            source_timestamp=now - datetime.timedelta(hours=1),
            delivered_at=now - datetime.timedelta(hours=1) + datetime.timedelta(seconds=seconds),
        )
    ExceptionItemFactory(created_at=now - datetime.timedelta(minutes=5))


def test_a_key_with_kpis_read_reads_the_kpis(make_api_key, key_client):
    # given rows and a leader's key with the kpis:read scope
    seed()
    _, key = make_api_key("leader", scopes=["kpis:read"])
    # when it reads the last 24 hours
    response = key_client(key).get(URL, {"range": "24h"})
    # then it gets every figure, the latency percentiles of the three entries among them
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["range"]["key"] == "24h" and body["range"]["bucket"] == "hour"
    assert body["time_to_erp"] == {"count": 3, "p50_seconds": 120.0, "p95_seconds": 174.0}
    assert body["backlog"]["items_held"] == 1
    assert body["exception_rate"]["messages"] == 3 and body["exception_rate"]["items"] == 1
    assert {flow["flow"] for flow in body["throughput"]["flows"]} >= {"time_expense_to_erp", "milestone_billing"}
    assert len(body["project_activation"]["trend"]) in (24, 25)


def test_a_key_without_kpis_read_is_refused_and_changes_nothing(make_api_key, key_client):
    # given rows and an admin's key that may read messages but not KPIs
    seed()
    _, key = make_api_key("integration_admin", scopes=["messages:read", "exceptions:read"])
    before = (Message.objects.count(), ExceptionItem.objects.count())
    # when it asks for the KPIs
    response = key_client(key).get(URL)
    # then it is refused naming the missing scope, and no row changed
    assert response.status_code == 403
    assert "kpis:read" in response.json()["detail"]
    assert "time_to_erp" not in response.json()
    assert (Message.objects.count(), ExceptionItem.objects.count()) == before


def test_a_kpis_read_key_of_a_role_without_the_kpi_permission_is_refused(make_api_key, key_client):
    # given an analyst's key that carries kpis:read (the scope narrows the owner's role, never widens it)
    _, key = make_api_key("analyst", scopes=["kpis:read"])
    # when it asks for the KPIs, then the owner's missing permission refuses it
    response = key_client(key).get(URL)
    assert response.status_code == 403
    assert "view_kpis" in response.json()["detail"]


def test_no_credentials_is_a_401_naming_the_scheme(client):
    response = client.get(URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Api-Key"


def test_a_session_of_a_leader_reads_the_kpis_and_a_bad_custom_range_is_a_422(client_as):
    client = client_as("leader")
    assert client.get(URL, {"range": "7d"}).status_code == 200
    # a custom range without its end is refused with the field and the next step
    refused = client.get(URL, {"range": "custom", "start": "2026-01-01T00:00:00Z"})
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "range"
    unknown = client.get(URL, {"range": "1y"})
    assert unknown.status_code in (400, 422)


def test_the_openapi_schema_documents_the_kpi_response(client_as):
    # when the schema is read
    schema = client_as("superuser").get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    # then GET /api/v1/kpis/ answers KpiDashboard, whose parts are described field by field
    operation = schema["paths"]["/api/v1/kpis/"]["get"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/KpiDashboard")
    assert {parameter["name"] for parameter in operation["parameters"]} >= {"range", "start", "end"}
    components = schema["components"]["schemas"]
    assert set(components["KpiDashboard"]["properties"]) == {
        "range",
        "project_activation",
        "time_to_erp",
        "milestone_billing",
        "exception_rate",
        "backlog",
        "throughput",
        "delivery_success",
        "duplicate_suspects",
        "computed_at",
    }
    assert set(components["TimeToErp"]["properties"]) == {"count", "p50_seconds", "p95_seconds"}


def test_refused_keys_are_audited_and_leave_the_kpis_unread(make_api_key, key_client):
    # given a revoked-looking (unknown) key
    before = AuditEvent.objects.count()
    response = key_client("hk_unknown.notakey").get(URL)
    # then it is a 401 and the refusal is audited
    assert response.status_code == 401
    assert AuditEvent.objects.count() == before + 1
