"""Workflow 2 against the real Tryton ERP: approved time from the sandbox PSA becomes timesheet lines, posted once
per project call; Tryton refuses negative durations, so a correction voids the line and posts the entry again."""

from __future__ import annotations

import datetime
import uuid

import pytest

from connectors.choices import SystemRole
from connectors.services import connected_system_create
from connectors.tests.tryton_fixtures import *  # noqa: F403
from governance.choices import Trigger
from governance.services import sync_policy_run
from sync.transport import connector_call
from workflows.choices import PostingKind, PostingStatus
from workflows.models import TimeExpensePosting
from workflows.tests.time_expense_fixtures import build_world, run_until

pytestmark = [
    pytest.mark.tryton,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("live_celery_worker_db"),
]


def _tryton_system(tryton_server):
    ids = tryton_server.ids
    return connected_system_create(
        name=f"Tryton {uuid.uuid4().hex[:6]}",
        slug=f"tryton-{uuid.uuid4().hex[:8]}",
        role=SystemRole.ERP,
        connector_type="tryton_erp",
        base_url=tryton_server.url,
        settings={
            "database": tryton_server.database,
            "company_id": ids["company"],
            "product_id": ids["product"],
            "timeout_seconds": 30,
        },
        credentials={"user": tryton_server.hub_login, "password": tryton_server.hub_password},
        reason="test",
    )


def _lines(tryton, project_id: str) -> list[dict]:
    return connector_call(tryton, "search_read", lambda connector: _timesheet_lines(connector, project_id))


def _timesheet_lines(connector, project_id: str) -> list[dict]:
    (project,) = connector.client.read("project.work", [int(project_id)], ["timesheet_works"])
    return connector.client.search_read(
        "timesheet.line", [("work", "in", project["timesheet_works"])], ["duration", "description", "date"]
    )


def _key_of(description: str) -> str:
    """The hub key at the end of a line's description: "<PSA description> [hub:<key>]"."""
    return description.rsplit(" [hub:", 1)[-1].removesuffix("]")


def _hours(lines: list[dict]) -> float:
    return sum(line["duration"].total_seconds() for line in lines) / 3600


def test_approved_time_reaches_tryton_once_and_a_correction_voids_and_reposts(request, tryton_server):
    # given the sandbox PSA routed to a real Tryton, with a Tryton project for each PSA project
    tryton = _tryton_system(tryton_server)
    client_key = f"c-{uuid.uuid4().hex}"
    client = connector_call(
        tryton,
        "upsert",
        lambda connector: connector.upsert("client", {"name": f"Acme {uuid.uuid4().hex[:6]}"}, client_key),
    )
    projects: dict[str, str] = {}

    def make_project(key: str) -> str:
        payload = {"name": f"Project {key} {uuid.uuid4().hex[:6]}", "client_id": client.external_id}
        project_key = f"p-{uuid.uuid4().hex}"
        project = connector_call(tryton, "upsert", lambda connector: connector.upsert("project", payload, project_key))
        projects[key] = project.external_id
        return project.external_id

    world = build_world(request, trigger=Trigger.SCHEDULE, erp=tryton, make_erp_project=make_project)
    alpha = [world.time_entry(project="alpha", hours=h) for h in (1.5, 2.5)]
    beta = world.time_entry(project="beta", hours=3)
    for entry in [*alpha, beta]:
        world.approve(entry)

    # when the scheduled run pulls them
    sync_policy_run(policy_id=world.policy.pk)
    run_until(lambda: TimeExpensePosting.objects.filter(status=PostingStatus.POSTED).count() == 3, timeout=90)

    # then Tryton holds one timesheet line per entry, on its project, tagged with the line's key
    assert _hours(_lines(tryton, projects["alpha"])) == 4.0
    assert _hours(_lines(tryton, projects["beta"])) == 3.0
    keys = set(TimeExpensePosting.objects.values_list("idempotency_key", flat=True))
    assert {_key_of(line["description"]) for line in _lines(tryton, projects["alpha"])} <= keys
    assert all(line["date"] == datetime.date.today() for line in _lines(tryton, projects["beta"]))

    # when the beta entry is corrected down to 1 hour (Tryton takes no negative line) and a run goes again
    world.unapprove(beta)
    world.edit(beta, hours=1.0)
    world.approve(beta)
    sync_policy_run(policy_id=world.policy.pk)
    run_until(
        lambda: (
            TimeExpensePosting.objects.filter(kind=PostingKind.REVERSAL, status=PostingStatus.POSTED).count() == 1
            and TimeExpensePosting.objects.filter(status=PostingStatus.POSTED).count() == 5
        ),
        timeout=90,
    )

    # then the old line is gone and the corrected one is there; alpha is untouched
    beta_lines = _lines(tryton, projects["beta"])
    assert len(beta_lines) == 1
    assert _hours(beta_lines) == 1.0
    assert _hours(_lines(tryton, projects["alpha"])) == 4.0

    # and a run with nothing changed posts nothing more
    sync_policy_run(policy_id=world.policy.pk)
    run_until(lambda: not TimeExpensePosting.objects.filter(status=PostingStatus.PENDING).exists())
    assert len(_lines(tryton, projects["beta"])) == 1
    assert TimeExpensePosting.objects.count() == 5
