"""Fault injection: every switch of SandboxFaultProfile, deterministic counting, and the _faults control API."""

from __future__ import annotations

import random
import time

import httpx
import pytest
from django.test import Client

from sandbox import services
from sandbox.choices import SandboxSystem
from sandbox.models import SandboxFaultProfile, SandboxRecord
from sandbox.tests.conftest import CONTROL_TOKEN, ERP_KEY, set_faults

HEALTH = "/sandbox/erp/health"


def statuses(client: Client, count: int, url: str = HEALTH) -> list[int]:
    return [client.get(url).status_code for _ in range(count)]


def time_entry_body(client: Client) -> dict:
    """A PSA user and project to post time against (made while the PSA behaves)."""
    user = client.post(
        "/sandbox/psa/v2/users",
        {"first_name": "A", "last_name": "B", "email": "a@b.c"},
        content_type="application/json",
    ).json()
    customer = client.post("/sandbox/psa/v2/clients", {"name": "C"}, content_type="application/json").json()
    project = client.post(
        "/sandbox/psa/v2/projects", {"client_id": customer["id"], "name": "P"}, content_type="application/json"
    ).json()
    return {"user_id": user["id"], "project_id": project["id"], "spent_date": "2025-01-01", "hours": 1}


def test_a_disabled_profile_changes_nothing(db):
    set_faults(SandboxSystem.ERP, error_every_nth=1)
    profile = SandboxFaultProfile.objects.get(system=SandboxSystem.ERP)
    profile.enabled = False
    services.fault_profile_save(profile=profile)
    assert statuses(Client(), 3) == [200, 200, 200]


def test_latency_is_added_to_every_answer(db):
    set_faults(SandboxSystem.ERP, latency_ms=300)
    started = time.monotonic()
    response = Client().get(HEALTH)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed >= 0.3


def test_every_nth_request_gets_the_error_status(db):
    set_faults(SandboxSystem.ERP, error_every_nth=3, error_status=500)
    answers = [Client().get(HEALTH) for _ in range(6)]
    assert [a.status_code for a in answers] == [200, 200, 500, 200, 200, 500]
    assert answers[2]["X-Sandbox-Fault"] == "error" and answers[2].json()["fault"] == "error"


def test_error_rate_is_deterministic_for_a_seed(db):
    # given a 50% error rate with seed 7
    set_faults(SandboxSystem.ERP, error_rate=0.5, seed=7, error_status=502)
    first_run = statuses(Client(), 20)
    # when the same profile is saved again (counting restarts) and the same requests are made
    set_faults(SandboxSystem.ERP, error_rate=0.5, seed=7, error_status=502)
    second_run = statuses(Client(), 20)
    # then the same requests fail, exactly those the seeded generator picks
    expected = [502 if random.Random(f"7:{n}").random() < 0.5 else 200 for n in range(1, 21)]
    assert first_run == second_run == expected
    assert 0 < first_run.count(502) < 20


def test_every_nth_request_is_rate_limited_with_retry_after(db):
    set_faults(SandboxSystem.ERP, rate_limit_every_nth=2, retry_after_seconds=7)
    answers = [Client().get(HEALTH) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 429, 200, 429]
    assert answers[1]["Retry-After"] == "7"


def test_a_request_budget_per_window_answers_429_beyond_it(db):
    set_faults(SandboxSystem.ERP, rate_limit_requests=3, rate_limit_window_seconds=3600)
    answers = [Client().get(HEALTH) for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert int(answers[3]["Retry-After"]) >= 1


def test_a_burst_of_503_then_recovery(db):
    set_faults(SandboxSystem.ERP, burst_5xx=3, retry_after_seconds=2)
    answers = [Client().get(HEALTH) for _ in range(5)]
    assert [a.status_code for a in answers] == [503, 503, 503, 200, 200]
    assert answers[0]["Retry-After"] == "2"


def test_timeout_sleeps_then_answers(db):
    set_faults(SandboxSystem.ERP, timeout_seconds=0.4)
    started = time.monotonic()
    assert Client().get(HEALTH).status_code == 200
    assert time.monotonic() - started >= 0.4


def test_timeout_beyond_the_client_timeout_is_a_client_timeout(live_server):
    # given a system that takes 2 s
    set_faults(SandboxSystem.ERP, timeout_seconds=2)
    # when a client that waits 0.5 s calls it over real HTTP
    # then the client times out
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{live_server.url}{HEALTH}", timeout=0.5)


def test_timeout_with_hang_up_drops_the_connection(live_server):
    set_faults(SandboxSystem.ERP, timeout_seconds=0.1, timeout_action="hang_up")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.get(f"{live_server.url}{HEALTH}", timeout=5)


def test_hang_up_without_a_socket_answers_502_under_the_test_client(db):
    set_faults(SandboxSystem.ERP, timeout_seconds=0.01, timeout_action="hang_up")
    response = Client().get(HEALTH)
    assert response.status_code == 502 and response["X-Sandbox-Fault"] == "timeout"


def test_accept_then_fail_stores_the_write_but_answers_502(psa_client):
    # given a PSA that fails every write's answer
    body = time_entry_body(psa_client)
    set_faults(SandboxSystem.PSA, accept_then_fail_every_nth=1)
    # when a time entry is posted
    response = psa_client.post(
        "/sandbox/psa/v2/time_entries", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="x"
    )
    # then the client sees 502 but the entry exists
    assert response.status_code == 502 and response["X-Sandbox-Fault"] == "accept_then_fail"
    assert SandboxRecord.objects.filter(object_type="time_entries", idempotency_key="x").count() == 1
    # and a retry with the same key finds the stored entry instead of posting twice (reads are not failed)
    services.fault_profile_reset(system=SandboxSystem.PSA)
    retry = psa_client.post(
        "/sandbox/psa/v2/time_entries", body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="x"
    )
    assert retry.status_code == 200
    assert SandboxRecord.objects.filter(object_type="time_entries", idempotency_key="x").count() == 1


def test_accept_then_fail_every_second_write_leaves_reads_alone(erp_client):
    set_faults(SandboxSystem.ERP, accept_then_fail_every_nth=2)
    codes = [
        erp_client.post(
            "/sandbox/erp/api/clients", {"name": f"c{i}", "legal_entity": "US01"}, content_type="application/json"
        ).status_code
        for i in range(4)
    ]
    assert codes == [201, 502, 201, 502]
    assert len(erp_client.get("/sandbox/erp/api/clients").json()["results"]) == 4


def test_accept_then_fail_with_drop_over_real_http(live_server, sandbox_credentials):
    set_faults(SandboxSystem.ERP, accept_then_fail_every_nth=1, accept_then_fail_mode="drop")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.post(
            f"{live_server.url}/sandbox/erp/api/clients",
            json={"name": "Dropped Ltd", "legal_entity": "US01"},
            headers={"X-API-Key": ERP_KEY},
            timeout=5,
        )
    assert SandboxRecord.objects.filter(system=SandboxSystem.ERP, data__name="Dropped Ltd").exists()


def test_faults_apply_to_authenticated_api_calls_too(psa_client):
    set_faults(SandboxSystem.PSA, burst_5xx=1)
    assert statuses(psa_client, 2, "/sandbox/psa/v2/users") == [503, 200]


# --- the control API ----------------------------------------------------------------------------------


def test_control_api_needs_the_control_token_or_an_admin(db, control_token, client_as):
    assert Client().get("/sandbox/crm/_faults").status_code == 401
    assert Client(HTTP_X_SANDBOX_CONTROL_TOKEN="wrong").get("/sandbox/crm/_faults").status_code == 403
    assert Client(HTTP_X_SANDBOX_CONTROL_TOKEN=CONTROL_TOKEN).get("/sandbox/crm/_faults").status_code == 200
    auditor = client_as("auditor")
    assert auditor.get("/sandbox/crm/_faults").status_code == 200
    assert auditor.put("/sandbox/crm/_faults", {"enabled": True}, content_type="application/json").status_code == 403
    admin = client_as("integration_admin")
    assert admin.put("/sandbox/crm/_faults", {"enabled": True}, content_type="application/json").status_code == 200


def test_put_replaces_the_profile_and_delete_resets_it(db, control_token):
    control = Client(HTTP_X_SANDBOX_CONTROL_TOKEN=CONTROL_TOKEN)
    # when faults are put
    response = control.put(
        "/sandbox/crm/_faults",
        {"enabled": True, "burst_5xx": 2, "reason": "chaos test"},
        content_type="application/json",
    )
    # then they are stored (with the reason in history) and applied at once
    assert response.status_code == 200 and response.json()["burst_5xx"] == 2
    profile = SandboxFaultProfile.objects.get(system="crm")
    assert profile.history.first().history_change_reason == "chaos test"
    assert statuses(Client(), 3, "/sandbox/crm/health") == [503, 503, 200]
    # when a second PUT leaves burst_5xx out, it goes back to its default
    assert (
        control.put("/sandbox/crm/_faults", {"enabled": True}, content_type="application/json").json()["burst_5xx"] == 0
    )
    # invalid values are refused
    bad = control.put("/sandbox/crm/_faults", {"error_rate": 2}, content_type="application/json")
    assert bad.status_code == 422 and "error_rate" in bad.json()["fields"]
    unknown = control.put("/sandbox/crm/_faults", {"explode": True}, content_type="application/json")
    assert unknown.status_code == 422
    # when deleted, everything is off
    reset = control.delete("/sandbox/crm/_faults").json()
    assert reset["enabled"] is False and reset["burst_5xx"] == 0


def test_settings_control_api_reads_and_patches(db, control_token):
    control = Client(HTTP_X_SANDBOX_CONTROL_TOKEN=CONTROL_TOKEN)
    patched = control.patch(
        "/sandbox/crm/_settings", {"webhook_url": "http://127.0.0.1:9/hook"}, content_type="application/json"
    )
    assert patched.status_code == 200 and patched.json()["webhook_url"] == "http://127.0.0.1:9/hook"
    assert control.get("/sandbox/crm/_settings").json()["client_secret"]
