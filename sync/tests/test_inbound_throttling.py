"""Per-system inbound budgets: a system that sends more events than its rate gets 429 with Retry-After, and
the budget lives in the shared cache, so every web process spends from the same one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.test import Client

from integrationhub.apikeys import api_key_create
from integrationhub.tests.test_throttling import database_url_of_the_test_database
from sync.models import Message
from sync.tests.conftest import client_record, signed_post

SUBPROCESS_SCRIPT = textwrap.dedent(
    """
    import json, os, time, uuid, django
    django.setup()
    from django.test import Client
    from sandbox.webhooks import standard_webhook_headers
    client = Client()
    statuses = []
    for n in range(int(os.environ["PROBE_CALLS"])):
        body = json.dumps({"Id": f"P-{n}", "Name": "Probe", "Status": "active", "UpdatedAt": "2026-11-26T10:00:00Z"})
        msg_id = f"msg_{uuid.uuid4().hex}"
        headers = standard_webhook_headers(os.environ["PROBE_SECRET"], msg_id, int(time.time()), body)
        response = client.post(
            f"/api/v1/inbound/{os.environ['PROBE_SLUG']}/client.updated/",
            data=body, content_type="application/json", headers=headers,
        )
        statuses.append(response.status_code)
    print(json.dumps(statuses))
    """
)


@pytest.mark.django_db
def test_an_event_over_the_systems_rate_is_429_problem_json_with_retry_after_and_stores_nothing(client, make_flow):
    # given a system allowed 3 events an hour (an hour: no window boundary falls inside the test)
    flow = make_flow()
    flow.source.inbound_rate = "3/hour"
    flow.source.save()
    accepted = [signed_post(client, flow, client_record(f"C-{n}")).status_code for n in range(3)]
    assert accepted == [202, 202, 202]

    # when it sends a fourth
    response = signed_post(client, flow, client_record("C-over"))

    # then 429 problem+json with the seconds to wait, and the event is not stored
    assert response.status_code == 429
    assert response["Content-Type"] == "application/problem+json"
    assert 0 < int(response["Retry-After"]) <= 3600
    body = response.json()
    assert body["status"] == 429 and body["type"].endswith("/inbound_rate_limited")
    assert "3/hour" in body["detail"] and body["hint"]
    assert Message.objects.filter(system=flow.source).count() == 3
    assert not Message.objects.filter(raw_payload__Id="C-over").exists()

    # and another system still has its own budget
    other = make_flow()
    assert signed_post(client, other, client_record("C-other")).status_code == 202


@pytest.mark.django_db
def test_forged_events_do_not_spend_the_systems_budget(client, make_flow):
    # given a system allowed 2 events an hour
    flow = make_flow()
    flow.source.inbound_rate = "2/hour"
    flow.source.save()

    # when a sender without the secret posts five times
    forged = [signed_post(client, flow, client_record(), secret="whsec_" + "QUJD" * 8).status_code for _ in range(5)]

    # then each is refused as unsigned, and the real sender still gets its whole budget
    assert forged == [401] * 5
    assert [signed_post(client, flow, client_record(f"C-{n}")).status_code for n in range(2)] == [202, 202]
    assert signed_post(client, flow, client_record("C-3")).status_code == 429
    assert Message.objects.filter(system=flow.source).count() == 2


@pytest.mark.django_db
def test_a_system_without_its_own_rate_gets_the_hub_default(client, make_flow, settings):
    # given the hub default of 2 events an hour and a system with no rate of its own
    settings.HUB_INBOUND_RATE = "2/hour"
    flow = make_flow()
    assert flow.source.inbound_rate == ""

    # when it posts three events
    statuses = [signed_post(client, flow, client_record(f"C-{n}")).status_code for n in range(3)]

    # then the third waits
    assert statuses == [202, 202, 429]


@pytest.mark.django_db
def test_an_invalid_inbound_rate_is_refused_and_a_valid_change_is_kept_in_history(make_flow, make_role_user):
    # given a system and an integration admin's key
    flow = make_flow()
    system = flow.source
    owner = make_role_user("integration_admin", username="inbound-rate-admin")
    key = api_key_create(name="ops", owner=owner, scopes=["config:read", "config:write"]).key
    api = Client(HTTP_AUTHORIZATION=f"Api-Key {key}")

    # when the rate is not a rate
    system.inbound_rate = "lots"
    with pytest.raises(ValidationError, match="inbound_rate"):
        system.full_clean()
    refused = api.patch(
        f"/api/v1/systems/{system.slug}/",
        data=json.dumps({"inbound_rate": "fast"}),
        content_type="application/json",
        HTTP_X_CHANGE_REASON="try a bad rate",
    )

    # then the API refuses it with the field named and nothing changes
    assert refused.status_code in (400, 422), refused.content
    assert any(error["field"] == "inbound_rate" for error in refused.json()["errors"])
    system.refresh_from_db()
    assert system.inbound_rate == ""

    # when a valid rate is set through the API
    changed = api.patch(
        f"/api/v1/systems/{system.slug}/",
        data=json.dumps({"inbound_rate": "1200/min"}),
        content_type="application/json",
        HTTP_X_CHANGE_REASON="the CRM bulk update needs more",
    )

    # then it is stored and the history row says who changed it to what
    assert changed.status_code == 200, changed.content
    assert changed.json()["inbound_rate"] == "1200/min"
    latest = system.history.order_by("-history_id").first()
    assert latest.inbound_rate == "1200/min"
    assert latest.history_user is not None


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_systems_inbound_budget_spent_in_another_process_is_spent_here(make_flow):
    # given a system allowed 4 events an hour
    flow = make_flow()
    flow.source.inbound_rate = "4/hour"
    flow.source.save()

    # when another process, sharing only the cache and the database, sends 4 signed events
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "integrationhub.settings",
        "DATABASE_URL": database_url_of_the_test_database(),
        "PROBE_SECRET": flow.secret,
        "PROBE_SLUG": flow.source.slug,
        "PROBE_CALLS": "4",
    }
    result = subprocess.run(
        [sys.executable, "-c", SUBPROCESS_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=django_settings.BASE_DIR,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [202, 202, 202, 202]

    # then this process's next event from that system is refused, with Retry-After, and not stored
    response = signed_post(Client(), flow, client_record("C-late"))
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 3600
    assert Message.objects.filter(system=flow.source).count() == 4
    assert not Message.objects.filter(raw_payload__Id="C-late").exists()
