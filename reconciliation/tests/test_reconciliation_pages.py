"""The reconciliation page, its CSV export, "run now" and the API: legal-entity scoping (a UK01 user or key sees
only UK01), permissions, audit, and the leakage figure on the KPI dashboard."""

from __future__ import annotations

import csv
import datetime
import io
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from connectors.models import ConnectedSystem
from governance.choices import Flow
from governance.models import LegalEntity
from integrationhub.apikeys import api_key_create
from integrationhub.audit import AuditAction
from integrationhub.models import AuditEvent, UserLegalEntityScope
from reconciliation.choices import RunStatus, RunTrigger
from reconciliation.models import ReconciliationRow, ReconciliationRun
from sync.models import Route

pytestmark = pytest.mark.django_db

PERIOD = "2026-11"


def _entity(code: str, currency: str) -> LegalEntity:
    return LegalEntity.objects.create(
        code=code, name=f"Firm {code}", country=code[:2], base_currency=currency, tax_jurisdiction=code[:2]
    )


def _run(entity: LegalEntity, *, project: str, unexplained: str, currency: str) -> ReconciliationRun:
    run = ReconciliationRun.objects.create(
        legal_entity=entity,
        period=PERIOD,
        period_start=datetime.date(2026, 11, 1),
        period_end=datetime.date(2026, 11, 30),
        status=RunStatus.SUCCEEDED,
        finished_at=timezone.now(),
        differences=1 if Decimal(unexplained) else 0,
        unexplained_amount=Decimal(unexplained),
        figures={"entries": 1},
    )
    ReconciliationRow.objects.create(
        run=run,
        legal_entity=entity,
        period=PERIOD,
        kind="time_entry",
        project=project,
        project_name=f"Project {project}",
        person="res-7",
        person_name="Diego Tester",
        currency=currency,
        approved_hours=Decimal("5"),
        approved_amount=Decimal("800"),
        posted_amount=Decimal("800") - Decimal(unexplained),
        unexplained_amount=Decimal(unexplained),
        entries=[
            {
                "key": f"psa:time_entry:{project}-1",
                "psa_id": f"{project}-1",
                "date": "2026-11-20",
                "approved_hours": "5.00",
                "approved_amount": "800.00",
                "unexplained_hours": "0.00",
                "unexplained_amount": f"{Decimal(unexplained):.2f}",
                "erp_lines": [],
                "queue": [],
                "correlation_id": "",
                "message_id": None,
            }
        ],
    )
    return run


@pytest.fixture
def books():
    us, uk = _entity("US01", "USD"), _entity("UK01", "GBP")
    return {
        "US01": _run(us, project="prj-us", unexplained="0", currency="USD"),
        "UK01": _run(uk, project="prj-uk", unexplained="160", currency="GBP"),
    }


def _uk_finance(make_role_user) -> Client:
    user = make_role_user("finance_approver", username="fiona.uk")
    UserLegalEntityScope.objects.filter(user=user).delete()  # narrowed from the default to exactly UK01
    scope = UserLegalEntityScope.objects.create(user=user)
    scope.legal_entities.add(LegalEntity.objects.get(code="UK01"))
    client = Client()
    client.force_login(user)
    return client


def test_a_uk01_user_sees_only_uk01_on_the_page_the_drill_down_and_the_csv(books, make_role_user):
    # given a finance approver scoped to UK01
    client = _uk_finance(make_role_user)

    # when they open the page
    page = client.get("/admin/reconciliation/")

    # then only UK01's result and rows are there
    assert page.status_code == 200
    body = page.content.decode()
    assert "prj-uk" in body and 'data-entity="UK01"' in body
    assert "prj-us" not in body and 'data-entity="US01"' not in body
    # and the drill-down of a US01 row answers 404, as a missing row would
    us_row = ReconciliationRow.objects.get(legal_entity__code="US01")
    uk_row = ReconciliationRow.objects.get(legal_entity__code="UK01")
    assert client.get(f"/admin/reconciliation/rows/{us_row.pk}/").status_code == 404
    assert "prj-uk-1" in client.get(f"/admin/reconciliation/rows/{uk_row.pk}/").content.decode()
    # and the CSV carries the same rows only, and the export is audited
    export = client.get("/admin/reconciliation/export.csv")
    rows = list(csv.DictReader(io.StringIO(export.content.decode())))
    assert [(row["legal_entity"], row["project"], row["unexplained_amount"]) for row in rows] == [
        ("UK01", "prj-uk", "160.00")
    ]
    assert AuditEvent.objects.filter(action=AuditAction.RECONCILIATION_EXPORTED).count() == 1


def test_the_filters_narrow_the_rows_to_differences_project_and_person(books, client_as):
    # given an auditor who sees every entity
    client = client_as("superuser")
    # when only differences are asked for, then only the UK row is listed
    body = client.get("/admin/reconciliation/?only_differences=on").content.decode()
    assert "prj-uk" in body and "prj-us" not in body
    # and a project filter by name keeps that project, a person filter that matches nobody keeps nothing
    assert "prj-us" in client.get("/admin/reconciliation/?project=Project+prj-us").content.decode()
    assert 'data-row-id="' not in client.get("/admin/reconciliation/?person=nobody").content.decode()


def test_a_uk01_api_key_sees_only_uk01_runs_and_rows(books, make_role_user):
    # given an API key narrowed to UK01 with the exceptions:read scope
    owner = make_role_user("superuser", username="root")
    created = api_key_create(
        name="uk reader",
        owner=owner,
        scopes=["exceptions:read"],
        legal_entity=LegalEntity.objects.get(code="UK01"),
    )
    client = Client(HTTP_AUTHORIZATION=f"Api-Key {created.key}")

    # when it lists runs and rows
    runs = client.get("/api/v1/reconciliation/runs/")
    rows = client.get("/api/v1/reconciliation/rows/", {"only_differences": "true"})

    # then only UK01's are there, and US01's run answers 404
    assert runs.status_code == 200, runs.content
    assert [run["legal_entity"] for run in runs.json()["results"]] == ["UK01"]
    assert [(row["legal_entity"], row["unexplained_amount"]) for row in rows.json()["results"]] == [("UK01", "160.00")]
    assert client.get(f"/api/v1/reconciliation/runs/{books['US01'].pk}/").status_code == 404
    # and the key cannot start a run: it lacks exceptions:decide
    start = client.post("/api/v1/reconciliation/runs/", {"legal_entity": "UK01", "period": PERIOD})
    assert start.status_code == 403
    assert ReconciliationRun.objects.count() == 2


def _routes_for(entity: LegalEntity) -> None:
    psa = ConnectedSystem.objects.create(
        name="PSA", slug="psa", role="psa", connector_type="harvest_psa", base_url="http://127.0.0.1:9/"
    )
    erp = ConnectedSystem.objects.create(
        name="ERP UK", slug="erp-uk", role="erp", connector_type="sandbox_erp", base_url="http://127.0.0.1:9/"
    )
    erp.legal_entities.add(entity)
    Route.objects.create(
        name="time", source_system=psa, entity="time_entry", target_system=erp, flow=Flow.TIME_EXPENSE_TO_ERP
    )


def test_run_now_queues_one_audited_run_and_the_api_answers_the_same_run(books, make_role_user):
    # given UK01 with a route of the time and expense flow, and a UK01 finance approver
    uk = LegalEntity.objects.get(code="UK01")
    _routes_for(uk)
    client = _uk_finance(make_role_user)

    # when they press "run now" for UK01's period
    answer = client.post("/admin/reconciliation/run/", {"legal_entity": uk.pk, "period": PERIOD})

    # then one run is queued, started by them, and the start is in the audit log
    assert answer.status_code == 302
    run = ReconciliationRun.objects.get(status=RunStatus.QUEUED)
    assert run.trigger == RunTrigger.MANUAL and run.started_by.username == "fiona.uk"
    event = AuditEvent.objects.get(action=AuditAction.RECONCILIATION_RUN_STARTED)
    assert event.object_id == str(run.pk)
    # and starting it again through the API answers that same queued run instead of a second one
    again = client.post(
        "/api/v1/reconciliation/runs/", {"legal_entity": "UK01", "period": PERIOD}, content_type="application/json"
    )
    assert again.status_code == 202, again.content
    assert again.json()["id"] == run.pk and again.json()["status"] == "queued"
    assert ReconciliationRun.objects.filter(status=RunStatus.QUEUED).count() == 1


def test_a_run_outside_the_scope_or_without_the_permission_is_refused_and_nothing_is_queued(books, make_role_user):
    # given routes for both entities, a UK01 finance approver and an auditor
    for code in ("US01",):
        _routes_for(LegalEntity.objects.get(code=code))
    finance = _uk_finance(make_role_user)
    auditor = Client()
    auditor.force_login(make_role_user("auditor", username="ada.auditor"))

    # when the UK01 user asks for US01 through the API, and the auditor presses "run now"
    refused = finance.post(
        "/api/v1/reconciliation/runs/", {"legal_entity": "US01", "period": PERIOD}, content_type="application/json"
    )
    forbidden = auditor.post("/admin/reconciliation/run/", {"legal_entity": 1, "period": PERIOD})
    bad_period = finance.post(
        "/api/v1/reconciliation/runs/", {"legal_entity": "UK01", "period": "2026-13"}, content_type="application/json"
    )

    # then the answers say why and no run is queued
    assert refused.status_code == 422 and "legal_entity" in refused.content.decode()
    assert forbidden.status_code == 403
    assert bad_period.status_code == 400 and "period" in bad_period.content.decode()
    assert not ReconciliationRun.objects.filter(status=RunStatus.QUEUED).exists()


def test_the_kpi_dashboard_shows_leakage_with_the_time_of_the_last_run(books, client_as):
    # given the runs above (UK01 has 160.00 GBP unexplained), when a leader opens the KPI dashboard
    body = client_as("leader").get("/admin/insights/kpidashboard/").content.decode()
    # then the leakage card shows the amount, the number of differences and when the last run finished
    assert 'id="kpi-leakage"' in body
    assert "160.00</strong> GBP" in body
    assert '<span id="kpi-leakage-count">1</span>' in body
    assert books["UK01"].finished_at.strftime("%Y-%m-%d") in body
