"""The sandbox analytics warehouse: bearer auth, append-only events idempotent by key, listing, fault switches."""

from __future__ import annotations

import pytest
from django.test import Client

from sandbox import services
from sandbox.choices import SandboxSystem
from sandbox.models import SandboxRecord
from sandbox.tests.conftest import CONTROL_TOKEN

pytestmark = pytest.mark.django_db
EVENTS = "/sandbox/analytics/datasets/northwind/events"
TOKEN = "test-analytics-token"


@pytest.fixture
def analytics() -> Client:
    setting = services.sandbox_setting_ensure(system=SandboxSystem.ANALYTICS)
    setting.api_token = TOKEN
    services.sandbox_setting_save(setting=setting, reason="test")
    return Client(HTTP_AUTHORIZATION=f"Bearer {TOKEN}")


def _post(client: Client, body: dict, key: str = "", status: int = 201) -> dict:
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    response = client.post(EVENTS, body, content_type="application/json", **headers)
    assert response.status_code == status, response.content
    return response.json()


def test_without_the_token_nothing_is_stored(analytics):
    # when an event is posted with a wrong token
    response = Client(HTTP_AUTHORIZATION="Bearer nope").post(
        EVENTS, {"table": "hub_invoice", "record": {"id": "1"}}, content_type="application/json"
    )
    # then it is refused and nothing arrived
    assert response.status_code == 401
    assert not SandboxRecord.objects.filter(system=SandboxSystem.ANALYTICS).exists()


def test_an_event_posted_twice_with_one_key_is_stored_once_and_listed(analytics):
    # given an invoice event posted, then retried with the same key
    body = {"table": "hub_invoice", "record": {"id": "7", "status": "paid"}}
    first = _post(analytics, body, key="hub-1-2")
    again = _post(analytics, body, key="hub-1-2", status=200)
    other = _post(analytics, {"table": "hub_payment", "record": {"id": "8"}}, key="hub-1-3")
    # then it is one event, and the list filters by key, table and record id
    assert first["id"] == again["id"] != other["id"]
    assert SandboxRecord.objects.filter(system=SandboxSystem.ANALYTICS, object_type="northwind").count() == 2
    assert [e["id"] for e in analytics.get(EVENTS, {"idempotency_key": "hub-1-2"}).json()["results"]] == [first["id"]]
    assert [e["id"] for e in analytics.get(EVENTS, {"table": "hub_payment"}).json()["results"]] == [other["id"]]
    listed = analytics.get(EVENTS, {"record_id": "7"}).json()["results"]
    assert listed[0]["record"] == {"id": "7", "status": "paid"} and listed[0]["table"] == "hub_invoice"


def test_a_bad_event_is_refused_with_the_reason(analytics):
    # when the table name or the record is not valid, then 422 and nothing is stored
    assert _post(analytics, {"table": "drop table", "record": {}}, status=422)["error"] == "validation_error"
    assert _post(analytics, {"table": "hub_invoice", "record": [1]}, status=422)["error"] == "validation_error"
    assert not SandboxRecord.objects.filter(system=SandboxSystem.ANALYTICS).exists()


def test_the_fault_switches_make_the_warehouse_fail(analytics, monkeypatch):
    # given a 5xx burst switched on through the control API
    monkeypatch.setenv("SANDBOX_CONTROL_TOKEN", CONTROL_TOKEN)
    control = Client(HTTP_X_SANDBOX_CONTROL_TOKEN=CONTROL_TOKEN)
    response = control.put(
        "/sandbox/analytics/_faults", {"enabled": True, "burst_5xx": 1}, content_type="application/json"
    )
    assert response.status_code == 200 and response.json()["system"] == "analytics"
    # when an event is posted, then it fails and is not stored; the next one goes through
    failed = analytics.post(EVENTS, {"table": "t", "record": {}}, content_type="application/json")
    assert failed.status_code == 503
    assert not SandboxRecord.objects.filter(system=SandboxSystem.ANALYTICS).exists()
    _post(analytics, {"table": "t", "record": {}})
    assert analytics.get("/sandbox/analytics/whoami").json()["system"] == "analytics"
