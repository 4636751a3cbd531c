"""The period pull: the ERPs' accounting periods read through the transport into the period calendar, against the
sandbox ERP over real HTTP (live_server) and, marked `tryton`, the real local Tryton."""

from __future__ import annotations

import datetime
import os
import uuid
from pathlib import Path

import pytest
from django_celery_beat.models import PeriodicTask

from connectors.choices import SystemRole
from connectors.services import connected_system_create
from connectors.tests.tryton_fixtures import *  # noqa: F403
from governance.choices import ErpPeriodState, PeriodStatus
from governance.models import AccountingPeriod, LegalEntity
from governance.period_pull import accounting_periods_pull, accounting_periods_pull_all
from governance.selectors import accounting_period_is_open
from governance.services import accounting_period_save
from sync.choices import AttemptOutcome
from sync.models import DeliveryAttempt


def _us01() -> LegalEntity:
    entity, _ = LegalEntity.objects.get_or_create(
        code="US01",
        defaults={
            "name": "Firm US",
            "country": "US",
            "base_currency": "USD",
            "tax_jurisdiction": "US-NY",
            "region": "americas",
        },
    )
    return entity


def _pull_attempts(system) -> list[DeliveryAttempt]:
    return list(
        DeliveryAttempt.objects.filter(
            system=system, delivery__isnull=True, request_summary__operation="accounting_periods"
        )
    )


def _last_change(period: AccountingPeriod):
    return period.history.order_by("-history_date", "-history_id").first()


# --- the sandbox ERP ------------------------------------------------------------------------------------------


@pytest.fixture
def sandbox_erp(live_server):
    from sandbox.services import sandbox_demo_seed

    demo = sandbox_demo_seed()
    return connected_system_create(
        name=f"ERP {uuid.uuid4().hex[:6]}",
        slug=f"erp-{uuid.uuid4().hex[:8]}",
        role=SystemRole.ERP,
        connector_type="sandbox_erp",
        base_url=f"{live_server.url}/sandbox/erp/api",
        settings={"company_code": "US01", "page_size": 2, "timeout_seconds": 30},
        credentials={"api_key": demo["erp"]["api_token"]},
        legal_entities=[_us01()],
        reason="test",
    )


def _erp_period(month: int, status: str = "open", legal_entity: str = "US01"):
    from sandbox.services import record_create

    start = datetime.date(2031, month, 1)
    end = (start + datetime.timedelta(days=32)).replace(day=1) - datetime.timedelta(days=1)
    record, _ = record_create(
        system="erp",
        object_type="periods",
        data={
            "name": start.strftime("%Y-%m"),
            "legal_entity": legal_entity,
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
            "status": status,
        },
    )
    return record


@pytest.mark.django_db(transaction=True)
def test_the_pull_from_the_sandbox_erp_creates_the_calendar_and_follows_a_period_the_erp_closes(sandbox_erp):
    # given the sandbox ERP with three periods of US01 (over two pages), one already closed, and one of an
    # entity the system does not serve
    from sandbox.services import record_update

    january, february = _erp_period(1, "closed"), _erp_period(2)
    march = _erp_period(3)
    _erp_period(4, legal_entity="UK01")

    # when the period pull runs
    result = accounting_periods_pull(system=sandbox_erp)

    # then the hub's calendar holds the three periods with the ERP's states, from that ERP
    assert (result.read, result.created, len(result.skipped)) == (4, 3, 1)
    assert "UK01" in result.skipped[0]["reason"] and "add UK01" in result.skipped[0]["reason"]
    periods = {p.name: p for p in AccountingPeriod.objects.filter(source_system=sandbox_erp)}
    assert set(periods) == {"2031-01", "2031-02", "2031-03"}
    assert periods["2031-01"].status == PeriodStatus.CLOSED and periods["2031-01"].erp_state == ErpPeriodState.CLOSED
    assert periods["2031-02"].status == PeriodStatus.OPEN
    assert periods["2031-02"].external_id == february.external_id
    assert accounting_period_is_open(legal_entity="US01", on_date=datetime.date(2031, 2, 15))
    # and the call went through the transport: one attempt row, delivered
    [attempt] = _pull_attempts(sandbox_erp)
    assert attempt.outcome == AttemptOutcome.DELIVERED and attempt.request_summary["step"] == "period_pull"

    # when nothing changed in the ERP and the pull runs again
    histories = AccountingPeriod.history.count()
    again = accounting_periods_pull(system=sandbox_erp)

    # then nothing is written: no new row, no history (idempotent)
    assert (again.created, again.closed, again.reopened, again.updated, again.unchanged) == (0, 0, 0, 0, 3)
    assert AccountingPeriod.history.count() == histories
    assert AccountingPeriod.objects.filter(source_system=sandbox_erp).count() == 3

    # when finance closes February in the ERP and reopens January there
    record_update(record=february, changes={"status": "locked"})
    record_update(record=january, changes={"status": "open"})
    result = accounting_periods_pull(system=sandbox_erp)

    # then the hub's February is closed and January reopened, each change attributed to the pull (no user)
    assert (result.closed, result.reopened) == (1, 1)
    february_row = AccountingPeriod.objects.get(source_system=sandbox_erp, external_id=february.external_id)
    assert february_row.status == PeriodStatus.CLOSED and february_row.erp_state == ErpPeriodState.LOCKED
    assert not accounting_period_is_open(legal_entity="US01", on_date=datetime.date(2031, 2, 15))
    change = _last_change(february_row)
    assert change.history_user is None and change.history_change_reason.startswith(
        f"period pull from {sandbox_erp.slug}"
    )
    assert "closed" in change.history_change_reason
    assert accounting_period_is_open(legal_entity="US01", on_date=datetime.date(2031, 1, 15))
    assert len(_pull_attempts(sandbox_erp)) == 3
    assert march.external_id in set(AccountingPeriod.objects.values_list("external_id", flat=True))


@pytest.mark.django_db(transaction=True)
def test_a_period_finance_closed_in_the_hub_stays_closed_and_cannot_be_reopened_past_the_erp(sandbox_erp, client_as):
    # given a period the pull brought open, closed by finance in the hub ahead of the ERP
    _erp_period(5)
    accounting_periods_pull(system=sandbox_erp)
    period = AccountingPeriod.objects.get(source_system=sandbox_erp)
    finance = client_as("finance_approver")
    form = {
        "legal_entity": period.legal_entity_id,
        "name": period.name,
        "start_date": period.start_date.isoformat(),
        "end_date": period.end_date.isoformat(),
        "notes": "",
    }
    response = finance.post(
        f"/admin/governance/accountingperiod/{period.pk}/change/",
        {**form, "status": PeriodStatus.CLOSED, "change_reason": "soft close for month end"},
    )
    assert response.status_code == 302

    # when the pull runs while the ERP still has it open
    accounting_periods_pull(system=sandbox_erp)

    # then finance's close stands, and the list shows who closed it
    period.refresh_from_db()
    assert period.status == PeriodStatus.CLOSED
    change = _last_change(period)
    assert change.history_user.username == "finance_approver-user"
    assert change.history_change_reason == "soft close for month end"
    listing = finance.get("/admin/governance/accountingperiod/", {"q": period.name}).content.decode()
    assert "finance_approver-user<br><small>soft close for month end</small>" in listing
    assert sandbox_erp.name in listing

    # when the ERP locks it and finance tries to reopen it in the hub
    from sandbox.models import SandboxRecord
    from sandbox.services import record_update

    record_update(record=SandboxRecord.objects.get(system="erp", object_type="periods"), changes={"status": "locked"})
    accounting_periods_pull(system=sandbox_erp)
    response = finance.post(
        f"/admin/governance/accountingperiod/{period.pk}/change/",
        {**form, "status": PeriodStatus.OPEN, "change_reason": "reopen"},
    )

    # then the form refuses it, saying to reopen it in the ERP first, and the period stays closed
    assert response.status_code == 200
    assert "reopen it in the ERP first" in response.content.decode()
    period.refresh_from_db()
    assert period.status == PeriodStatus.CLOSED
    # and the history page lists both the person's and the pull's changes
    history = finance.get(f"/admin/governance/accountingperiod/{period.pk}/history/").content.decode()
    assert "soft close for month end" in history and f"period pull from {sandbox_erp.slug}" in history


@pytest.mark.django_db(transaction=True)
def test_a_hand_kept_period_is_adopted_and_the_scheduled_pull_skips_a_paused_erp(sandbox_erp):
    # given a period finance keeps by hand with the same dates as the ERP's
    _erp_period(6)
    accounting_period_save(
        period=AccountingPeriod(
            legal_entity=_us01(), start_date=datetime.date(2031, 6, 1), end_date=datetime.date(2031, 6, 30)
        ),
        reason="test",
    )

    # when the scheduled pull runs (every ERP that reads periods)
    [result] = [r for r in accounting_periods_pull_all() if r.system == sandbox_erp.slug]

    # then the hand-kept row is linked to the ERP's period, not doubled
    assert (result.created, result.updated) == (0, 1)
    [period] = AccountingPeriod.objects.filter(start_date=datetime.date(2031, 6, 1))
    assert period.source_system == sandbox_erp and period.erp_state == ErpPeriodState.OPEN

    # when the ERP is paused
    from connectors.services import connected_system_pause

    connected_system_pause(system=sandbox_erp, reason="maintenance")
    attempts = len(_pull_attempts(sandbox_erp))

    # then the scheduled pull leaves it alone: no call
    assert sandbox_erp.slug not in {r.system for r in accounting_periods_pull_all()}
    assert len(_pull_attempts(sandbox_erp)) == attempts


@pytest.mark.django_db
def test_the_period_pull_runs_every_15_minutes_on_the_housekeeping_queue():
    task = PeriodicTask.objects.get(task="governance.tasks.accounting_periods_pull_task")
    assert (task.queue, task.interval.every, task.interval.period, task.enabled) == (
        "housekeeping",
        900,
        "seconds",
        True,
    )
    from integrationhub.celery import app

    app.loader.import_default_modules()
    assert task.task in app.tasks


# --- the real local Tryton ----------------------------------------------------------------------------------------


def _tryton_admin_call(tryton_server, method: str, params: list) -> object:
    """A call as Tryton's admin (closing and reopening periods is finance's work in the ERP, not the hub's)."""
    import httpx

    home = Path(os.environ.get("TRYTON_HOME") or Path(__file__).resolve().parents[2] / ".tryton")
    password = (home / "admin.pass").read_text().strip()
    rpc = f"{tryton_server.url}/{tryton_server.database}/rpc/"
    login = httpx.post(
        rpc, json={"id": 1, "method": "common.db.login", "params": ["admin", {"password": password}, "en"]}, timeout=30
    ).json()["result"]
    import base64

    token = base64.b64encode(f"admin:{login[0]}:{login[1]}".encode()).decode()
    answer = httpx.post(
        rpc,
        json={"id": 2, "method": method, "params": params},
        headers={"Authorization": f"Session {token}"},
        timeout=30,
    ).json()
    assert "error" not in answer, answer
    return answer["result"]


@pytest.mark.tryton
@pytest.mark.django_db(transaction=True)
def test_the_pull_from_tryton_creates_the_calendar_and_a_period_closed_in_tryton_closes_the_hubs(tryton_server):
    # given the hub's Tryton system for US01, as the non-admin hub user
    ids = tryton_server.ids
    tryton = connected_system_create(
        name=f"Tryton {uuid.uuid4().hex[:6]}",
        slug=f"tryton-{uuid.uuid4().hex[:8]}",
        role=SystemRole.ERP,
        connector_type="tryton_erp",
        base_url=tryton_server.url,
        settings={"database": tryton_server.database, "company_id": ids["company"], "timeout_seconds": 30},
        credentials={"user": tryton_server.hub_login, "password": tryton_server.hub_password},
        legal_entities=[_us01()],
        reason="test",
    )

    # when the period pull runs
    result = accounting_periods_pull(system=tryton)

    # then every standard period of the company's fiscal years is in the hub's calendar, open as in Tryton
    first, last = (datetime.date.fromisoformat(day) for day in ids["fiscal_coverage"])
    periods = list(AccountingPeriod.objects.filter(source_system=tryton).order_by("start_date"))
    assert result.created == len(periods) == result.read and not result.skipped
    assert periods[0].start_date == first and periods[-1].end_date == last
    assert {p.legal_entity.code for p in periods} == {"US01"}
    june = next(p for p in periods if p.start_date == datetime.date(last.year, 6, 1))
    assert june.status == PeriodStatus.OPEN and june.erp_state == ErpPeriodState.OPEN
    assert _pull_attempts(tryton)[0].outcome == AttemptOutcome.DELIVERED

    # when finance closes that June in Tryton and the pull runs again
    ctx = {"company": ids["company"]}
    _tryton_admin_call(tryton_server, "model.account.period.close", [[int(june.external_id)], ctx])
    try:
        again = accounting_periods_pull(system=tryton)

        # then the hub's June is closed, by the pull, and nothing else changed
        june.refresh_from_db()
        assert june.status == PeriodStatus.CLOSED and june.erp_state == ErpPeriodState.CLOSED
        assert (again.created, again.closed, again.unchanged) == (0, 1, len(periods) - 1)
        change = _last_change(june)
        assert change.history_user is None and f"period pull from {tryton.slug}" in change.history_change_reason
        assert not accounting_period_is_open(legal_entity="US01", on_date=datetime.date(last.year, 6, 15))
    finally:
        _tryton_admin_call(tryton_server, "model.account.period.reopen", [[int(june.external_id)], ctx])

    # and once reopened in Tryton, the next pull reopens it in the hub
    accounting_periods_pull(system=tryton)
    june.refresh_from_db()
    assert june.status == PeriodStatus.OPEN and june.erp_state == ErpPeriodState.OPEN
    assert len(_pull_attempts(tryton)) == 3
