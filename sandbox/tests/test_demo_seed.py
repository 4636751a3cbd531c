"""sandbox_demo_seed: realistic data in every system, known credentials that work, and nothing doubles on a rerun."""

from __future__ import annotations

import pytest
from django.test import Client

from sandbox.choices import SandboxSystem
from sandbox.models import SandboxRecord
from sandbox.services import sandbox_demo_seed

pytestmark = pytest.mark.django_db


def counts() -> dict[tuple[str, str], int]:
    return {
        (system, object_type): SandboxRecord.objects.filter(system=system, object_type=object_type).count()
        for system, object_type in SandboxRecord.objects.values_list("system", "object_type").distinct()
    }


def test_seed_is_idempotent_and_returns_the_credentials():
    # when the seed runs twice
    first = sandbox_demo_seed()
    before = counts()
    second = sandbox_demo_seed()
    # then the second run adds nothing and returns the same credentials
    assert counts() == before
    assert first == second
    assert set(first) == {"crm", "psa", "collab", "erp"}
    assert before[("psa", "users")] == 5 and before[("crm", "Opportunity")] == 3


def test_seeded_credentials_work_against_each_system():
    creds = sandbox_demo_seed(webhook_url="http://127.0.0.1:8000/hooks/crm")
    crm = creds["crm"]
    token = Client().post(
        crm["token_path"],
        {"grant_type": "client_credentials", "client_id": crm["client_id"], "client_secret": crm["client_secret"]},
    )
    assert token.status_code == 200
    bearer = f"Bearer {token.json()['access_token']}"
    assert Client(HTTP_AUTHORIZATION=bearer).get(crm["health_path"]).status_code == 200
    psa = creds["psa"]
    psa_client = Client(HTTP_AUTHORIZATION=f"Bearer {psa['api_token']}", HTTP_HARVEST_ACCOUNT_ID=psa["account_id"])
    assert psa_client.get(psa["health_path"]).status_code == 200
    assert (
        Client(HTTP_AUTHORIZATION=f"Bearer {creds['collab']['api_token']}")
        .get(creds["collab"]["health_path"])
        .status_code
        == 200
    )
    assert Client(HTTP_X_API_KEY=creds["erp"]["api_token"]).get(creds["erp"]["health_path"]).status_code == 200


def test_seeded_data_tells_the_demo_story():
    creds = sandbox_demo_seed()
    crm = Client()
    token = crm.post(
        creds["crm"]["token_path"],
        {
            "grant_type": "client_credentials",
            "client_id": creds["crm"]["client_id"],
            "client_secret": creds["crm"]["client_secret"],
        },
    ).json()["access_token"]
    won = (
        Client(HTTP_AUTHORIZATION=f"Bearer {token}")
        .get(
            "/sandbox/crm/services/data/v60.0/query",
            {"q": "SELECT Id, Name, Legal_Entity__c FROM Opportunity WHERE StageName = 'Closed Won'"},
        )
        .json()
    )
    assert won["totalSize"] == 1 and won["records"][0]["Legal_Entity__c"] == "US01"
    psa = Client(
        HTTP_AUTHORIZATION=f"Bearer {creds['psa']['api_token']}", HTTP_HARVEST_ACCOUNT_ID=creds["psa"]["account_id"]
    )
    roles = {user["roles"][0] for user in psa.get("/sandbox/psa/v2/users").json()["users"]}
    assert roles == {"Partner", "Manager", "Senior Consultant", "Consultant", "Analyst"}
    entries = psa.get("/sandbox/psa/v2/time_entries", {"approval_status": "approved"}).json()
    assert entries["total_entries"] == 25
    assert psa.get("/sandbox/psa/v2/milestones").json()["total_entries"] == 2
    erp = Client(HTTP_X_API_KEY=creds["erp"]["api_token"])
    assert {p["status"] for p in erp.get("/sandbox/erp/api/projects").json()["results"]} == {"active", "closed"}
    assert SandboxRecord.objects.filter(system=SandboxSystem.COLLAB, object_type="groups").count() == 1
