"""Workflow 2 against the real Tryton: each person's time is booked to their own employee with the PSA's
description; a person without an employee waits in the queue until they are linked, and is then posted once."""

from __future__ import annotations

import datetime
import uuid

import pytest
from django.urls import reverse

from connectors.tests.tryton_fixtures import *  # noqa: F403
from exception_queue.actions import item_actions_available
from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import Decision, ExceptionItem
from governance.choices import Trigger
from governance.services import sync_policy_run
from integrationhub.models import AuditEvent
from sync.choices import MessageStatus
from sync.models import Message
from sync.services import message_replay
from sync.transport import connector_call
from workflows.choices import PostingKind, PostingStatus
from workflows.models import ResourceLink, TimeExpensePosting
from workflows.resource_links import AUDIT_LINK_SAVED, erp_employees
from workflows.tests.test_time_expense_tryton import _key_of, _tryton_system
from workflows.tests.time_expense_fixtures import CONSULTANT_RATE, build_world, run_until

pytestmark = [
    pytest.mark.tryton,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("live_celery_worker_db"),
]


def _tryton_world(request, tryton_server, *, employees: list[str] | None, trigger: str = Trigger.SCHEDULE):
    tryton = _tryton_system(tryton_server)
    client_key = f"c-{uuid.uuid4().hex}"
    client = connector_call(
        tryton, "upsert", lambda c: c.upsert("client", {"name": f"Acme {uuid.uuid4().hex[:6]}"}, client_key)
    )
    projects: dict[str, str] = {}

    def make_project(key: str) -> str:
        payload = {"name": f"Project {key} {uuid.uuid4().hex[:6]}", "client_id": client.external_id}
        project_key = f"p-{uuid.uuid4().hex}"
        project = connector_call(tryton, "upsert", lambda c: c.upsert("project", payload, project_key))
        projects[key] = project.external_id
        return project.external_id

    world = build_world(request, trigger=trigger, erp=tryton, make_erp_project=make_project, erp_employees=employees)
    return world, projects


def _lines(world, projects: dict[str, str]) -> list[dict]:
    """Every timesheet line of the world's projects, with its project key."""

    def read(connector):
        works = {}
        for key, project_id in projects.items():
            (project,) = connector.client.read("project.work", [int(project_id)], ["timesheet_works"])
            works.update(dict.fromkeys(project["timesheet_works"], key))
        rows = connector.client.search_read(
            "timesheet.line",
            [("work", "in", list(works))],
            ["employee", "work", "date", "duration", "description"],
        )
        return [{**row, "project": works[row["work"]]} for row in rows]

    return connector_call(world.erp, "search_read", read)


def _posted(world) -> int:
    return TimeExpensePosting.objects.filter(target_system=world.erp, status=PostingStatus.POSTED).count()


def test_four_people_on_two_projects_each_get_their_own_line_then_a_correction_and_a_withdrawal(request, tryton_server):
    # given four PSA people, each linked to their own Tryton employee, on two Tryton projects
    people = tryton_server.ids["employees"][str(tryton_server.ids["company"])]
    world, projects = _tryton_world(
        request, tryton_server, employees=[str(people["Diego Alvarez"]), str(people["Ben Okafor"])]
    )
    world.person_add("chloe", first="Chloe", role="Consultant", rate=CONSULTANT_RATE, employee=people["Chloe Martin"])
    world.person_add("alice", first="Alice", role="Manager", rate=300.0, employee=people["Alice Hartley"])
    yesterday = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
    if yesterday[:7] != datetime.date.today().isoformat()[:7]:
        yesterday = datetime.date.today().isoformat()  # stay in the open period on the 1st of a month
    wanted = {
        "diego": ("alpha", 1.5, "Kick-off workshop", datetime.date.today().isoformat()),
        "ben": ("alpha", 2.0, "Review of the data model", yesterday),
        "chloe": ("beta", 3.0, "Build of the ingestion", datetime.date.today().isoformat()),
        "alice": ("beta", 0.5, "Steering committee", yesterday),
    }
    entries = {
        person: world.time_entry(user=person, project=project, hours=hours, notes=note, spent_date=day)
        for person, (project, hours, note, day) in wanted.items()
    }
    for entry in entries.values():
        world.approve(entry)

    # when the scheduled run pulls them
    sync_policy_run(policy_id=world.policy.pk)
    run_until(lambda: _posted(world) == 4, timeout=120)

    # then Tryton holds one line per entry: the person's employee, the project's work, the date, the hours, and
    # the PSA's note as the description with the hub's key at its end
    lines = _lines(world, projects)
    assert len(lines) == 4
    keys = dict(TimeExpensePosting.objects.values_list("idempotency_key", "entry_key"))
    employees = {
        "diego": people["Diego Alvarez"],
        "ben": people["Ben Okafor"],
        "chloe": people["Chloe Martin"],
        "alice": people["Alice Hartley"],
    }
    by_entry = {keys[_key_of(line["description"])].rsplit(":", 1)[-1]: line for line in lines}
    for person, (project, hours, note, day) in wanted.items():
        line = by_entry[entries[person]]
        assert line["employee"] == employees[person], person
        assert line["project"] == project
        assert line["date"] == datetime.date.fromisoformat(day)
        assert line["duration"] == datetime.timedelta(hours=hours)
        assert line["description"].startswith(f"{note} [hub:hub-te-")

    # when Chloe's entry is corrected to 2 hours with another note, and Alice's is withdrawn
    world.unapprove(entries["chloe"])
    world.edit(entries["chloe"], hours=2.0, notes="Build of the ingestion (part 1)")
    world.approve(entries["chloe"])
    world.unapprove(entries["alice"])
    sync_policy_run(policy_id=world.policy.pk)
    run_until(
        lambda: (
            TimeExpensePosting.objects.filter(kind=PostingKind.REVERSAL, status=PostingStatus.POSTED).count() == 2
            and _posted(world) == 7
        ),
        timeout=120,
    )

    # then Chloe has one line of 2 hours with the new note, still hers; Alice's line is gone; the others are as
    # they were
    lines = _lines(world, projects)
    keys = dict(TimeExpensePosting.objects.values_list("idempotency_key", "entry_key"))
    by_entry = {keys[_key_of(line["description"])].rsplit(":", 1)[-1]: line for line in lines}
    assert sorted(by_entry) == sorted([entries["diego"], entries["ben"], entries["chloe"]])
    chloe = by_entry[entries["chloe"]]
    assert chloe["duration"] == datetime.timedelta(hours=2)
    assert chloe["employee"] == people["Chloe Martin"]
    assert chloe["description"].startswith("Build of the ingestion (part 1) [hub:")
    assert by_entry[entries["diego"]]["duration"] == datetime.timedelta(hours=1.5)


def test_an_unlinked_person_waits_as_one_item_until_linked_then_every_held_entry_posts_once(
    request, tryton_server, make_role_user, client
):
    # given a Tryton ERP where nobody is linked to an employee yet
    people = tryton_server.ids["employees"][str(tryton_server.ids["company"])]
    world, projects = _tryton_world(request, tryton_server, employees=[], trigger=Trigger.EVENT)
    world.webhooks_on()
    first = world.time_entry(project="alpha", hours=2, notes="Workshop prep")
    second = world.time_entry(project="beta", hours=1, notes="Client call")

    # when Diego's two entries are approved (and the first one's webhook arrives twice)
    world.approve(first)
    world.approve(second)
    run_until(lambda: ExceptionItem.objects.filter(category=ExceptionCategory.UNKNOWN_RESOURCE).count() == 2)
    message = Message.objects.filter(system=world.psa, canonical_id=first).latest("pk")
    message_replay(message=message, use_original_mapping=True)
    run_until(lambda: Message.objects.get(pk=message.pk).status == MessageStatus.HELD)

    # then nothing is posted to Tryton, and each entry is one item naming the person and the ERP
    assert _lines(world, projects) == []
    assert not TimeExpensePosting.objects.exists()
    items = list(ExceptionItem.objects.filter(category=ExceptionCategory.UNKNOWN_RESOURCE).order_by("pk"))
    assert len(items) == 2
    person = world.users["diego"].external_id
    assert all(f"person {person} has no employee in {world.erp.slug}" in item.reason for item in items)
    analyst = make_role_user("analyst")
    assert DecisionAction.LINK_RESOURCE in [
        action.action for action in item_actions_available(item=items[0], user=analyst)
    ]
    # and the employees to choose from are read from Tryton
    choices = {row["name"]: row["id"] for row in erp_employees(erp_system=world.erp).employees}
    assert choices["Diego Alvarez"] == str(people["Diego Alvarez"])

    # when an analyst opens the first item: the link action offers Tryton's employees to pick from
    client.force_login(analyst)
    page = client.get(reverse("admin:exception_queue_exceptionitem_change", args=[items[0].pk])).content.decode()
    assert 'data-action="link_resource"' in page
    assert f'<option value="{choices["Diego Alvarez"]}">Diego Alvarez ({choices["Diego Alvarez"]})</option>' in page
    listed = client.get(f"/api/v1/exception-items/{items[0].pk}/actions/").json()
    (link_action,) = [row for row in listed if row["action"] == "link_resource"]
    assert {"value": choices["Diego Alvarez"], "label": f"Diego Alvarez ({choices['Diego Alvarez']})"} in (
        link_action["choices"]["employee"]
    )

    # and picks Diego's employee
    response = client.post(
        reverse("admin:exception_queue_exceptionitem_act", args=[items[0].pk]),
        {"action": "link_resource", "employee": choices["Diego Alvarez"], "reason": "Diego joined the UK team"},
    )
    assert response.status_code == 302
    run_until(lambda: _posted(world) == 2, timeout=90)

    # then the link is saved (audited), both items are closed with the decision, and each entry is posted once,
    # booked to Diego's employee
    link = ResourceLink.objects.get(psa_system=world.psa, person_ref=person, erp_system=world.erp)
    assert link.employee_ref == str(people["Diego Alvarez"]) and link.employee_name == "Diego Alvarez"
    assert AuditEvent.objects.filter(action=AUDIT_LINK_SAVED, object_id=str(link.pk), actor_id=analyst.pk).exists()
    assert set(ExceptionItem.objects.filter(pk__in=[i.pk for i in items]).values_list("state", flat=True)) == {
        ExceptionState.REPLAYED
    }
    assert Decision.objects.filter(action=DecisionAction.LINK_RESOURCE, user=analyst).count() == 2
    lines = _lines(world, projects)
    assert len(lines) == 2
    assert {line["employee"] for line in lines} == {people["Diego Alvarez"]}
    assert sorted(line["description"].split(" [hub:")[0] for line in lines) == ["Client call", "Workshop prep"]
    # and a later run posts nothing more
    run_until(lambda: all(m.status == MessageStatus.DELIVERED for m in Message.objects.filter(system=world.psa)))
    assert len(_lines(world, projects)) == 2
