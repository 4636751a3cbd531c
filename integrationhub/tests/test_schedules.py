"""Beat entries and poll schedules: only integration admins (and superusers) change or run them, and every change
is in the audit log with who did it."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import PermissionDenied
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from connectors.tests.factories import ConnectedSystemFactory
from integrationhub.audit import AuditAction
from integrationhub.models import AuditEvent
from integrationhub.schedules import periodic_tasks_run, periodic_tasks_set_enabled, poll_schedules_run_now
from sync.models import PollSchedule
from sync.services import poll_schedule_save

CHANGELIST = "/admin/django_celery_beat/periodictask/"
POLL_CHANGELIST = "/admin/sync/pollschedule/"


@pytest.fixture
def beat_entries(db) -> list[PeriodicTask]:
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=60, period=IntervalSchedule.SECONDS)
    return [
        PeriodicTask.objects.create(
            name=f"housekeeping {n}", task="sync.poll_run_task", interval=every_minute, args=json.dumps([0])
        )
        for n in range(3)
    ]


@pytest.fixture
def poll_schedule(db) -> PollSchedule:
    return poll_schedule_save(schedule=PollSchedule(system=ConnectedSystemFactory(), entity="client", every_seconds=60))


def _action(client, url: str, action: str, objects) -> object:
    return client.post(url, {"action": action, "_selected_action": [obj.pk for obj in objects], "index": 0})


@pytest.mark.parametrize("role", ["auditor", "analyst", "finance_approver", "leader"])
@pytest.mark.parametrize("action", ["disable_tasks", "toggle_tasks", "run_tasks"])
def test_a_read_only_or_business_role_cannot_stop_or_run_beat_entries(client_as, beat_entries, role, action):
    # given enabled beat entries and a user of a role that does not run the hub
    client = client_as(role)
    # when it posts the action on the periodic-task list
    response = _action(client, CHANGELIST, action, beat_entries)
    # then nothing changed, nothing was run, and there is nothing to audit
    assert response.status_code in (200, 302, 403)
    assert PeriodicTask.objects.filter(pk__in=[t.pk for t in beat_entries], enabled=True).count() == len(beat_entries)
    assert not AuditEvent.objects.filter(object_type="django_celery_beat.periodictask").exists()


def test_an_integration_admin_disables_beat_entries_and_each_change_is_audited(client_as, beat_entries):
    # given an integration admin on the periodic-task list
    client = client_as("integration_admin")
    # when they disable two entries
    response = _action(client, CHANGELIST, "disable_tasks", beat_entries[:2])
    # then those two are disabled, the third still runs
    assert response.status_code == 302
    assert [t.enabled for t in PeriodicTask.objects.filter(pk__in=[t.pk for t in beat_entries]).order_by("pk")] == [
        False,
        False,
        True,
    ]
    # and each change is one audit event naming the admin and the entry
    events = AuditEvent.objects.filter(action=AuditAction.PERIODIC_TASK_DISABLED).order_by("object_id")
    assert [e.object_id for e in events] == [str(t.pk) for t in beat_entries[:2]]
    assert {e.actor_username for e in events} == {"integration_admin-user"}
    # when they toggle all three
    _action(client, CHANGELIST, "toggle_tasks", beat_entries)
    # then the two come back on and the third goes off, each audited
    assert [t.enabled for t in PeriodicTask.objects.filter(pk__in=[t.pk for t in beat_entries]).order_by("pk")] == [
        True,
        True,
        False,
    ]
    assert AuditEvent.objects.filter(action=AuditAction.PERIODIC_TASK_ENABLED).count() == 2
    assert AuditEvent.objects.filter(action=AuditAction.PERIODIC_TASK_DISABLED).count() == 3


def test_an_integration_admin_runs_a_beat_entry_once_after_commit_and_it_is_audited(
    make_role_user, beat_entries, django_capture_on_commit_callbacks
):
    # given an integration admin
    admin = make_role_user("integration_admin")
    # when they run one entry by hand
    with django_capture_on_commit_callbacks(execute=False) as published:
        count = periodic_tasks_run(tasks=beat_entries[:1], user=admin)
    # then one task is published once the transaction commits, and the run is audited
    assert count == 1 and len(published) == 1
    event = AuditEvent.objects.get(action=AuditAction.PERIODIC_TASK_RUN)
    assert (event.actor_username, event.object_id) == (admin.username, str(beat_entries[0].pk))


def test_running_an_unknown_task_queues_nothing(make_role_user, beat_entries, django_capture_on_commit_callbacks):
    from integrationhub.errors import HubValidationError

    # given an entry that names a task the workers do not know
    PeriodicTask.objects.filter(pk=beat_entries[1].pk).update(task="nowhere.no_such_task")
    # when an admin runs it with a valid one
    with django_capture_on_commit_callbacks(execute=False) as published, pytest.raises(HubValidationError):
        periodic_tasks_run(tasks=beat_entries[:2], user=make_role_user("integration_admin"))
    # then nothing is queued and nothing is audited
    assert published == []
    assert not AuditEvent.objects.filter(action=AuditAction.PERIODIC_TASK_RUN).exists()


@pytest.mark.parametrize("role", ["auditor", "analyst", "finance_approver", "leader"])
def test_the_schedule_services_refuse_a_user_without_the_change_permission(make_role_user, beat_entries, role):
    # given a user who may at most read the schedules
    user = make_role_user(role)
    # when a screen other than the admin calls the services for them, then they are refused and nothing changes
    with pytest.raises(PermissionDenied):
        periodic_tasks_set_enabled(tasks=beat_entries, enabled=False, user=user)
    with pytest.raises(PermissionDenied):
        periodic_tasks_run(tasks=beat_entries, user=user)
    assert PeriodicTask.objects.filter(enabled=False).count() == 0
    assert not AuditEvent.objects.filter(action__startswith="periodic_task").exists()


def test_an_admin_edit_of_a_beat_entry_is_audited_with_the_fields_it_changed(client_as, beat_entries):
    # given an integration admin on a beat entry's page
    client = client_as("integration_admin")
    task = beat_entries[0]
    form = {
        "name": "housekeeping renamed",
        "regtask": "sync.poll_run_task",
        "task": "",
        "enabled": "on",
        "description": "",
        "interval": task.interval_id,
        "args": task.args,
        "kwargs": "{}",
        "expire_seconds": "",
        "queue": "",
        "exchange": "",
        "routing_key": "",
        "priority": "",
        "headers": "{}",
        "start_time_0": "",
        "start_time_1": "",
    }
    # when they rename it
    response = client.post(f"{CHANGELIST}{task.pk}/change/", form)
    # then it is saved and the change is audited by field name
    assert response.status_code == 302, response.content[:3000]
    assert PeriodicTask.objects.get(pk=task.pk).name == "housekeeping renamed"
    event = AuditEvent.objects.get(action=AuditAction.PERIODIC_TASK_CHANGED)
    assert event.actor_username == "integration_admin-user" and "name" in event.details["fields"]


@pytest.mark.parametrize("role", ["auditor", "analyst", "finance_approver"])
def test_a_role_without_change_rights_cannot_run_a_poll_schedule_now(
    client_as, poll_schedule, role, django_capture_on_commit_callbacks
):
    # given a poll schedule and a user who can read it
    client = client_as(role)
    # when they post "run now"
    with django_capture_on_commit_callbacks(execute=False) as published:
        _action(client, POLL_CHANGELIST, "run_now", [poll_schedule])
    # then no pull is queued and nothing is audited
    assert published == []
    assert not AuditEvent.objects.filter(action=AuditAction.POLL_SCHEDULE_RUN).exists()


def test_an_integration_admin_runs_a_poll_schedule_now_and_it_is_audited(
    client_as, poll_schedule, django_capture_on_commit_callbacks
):
    # given an integration admin on the poll-schedule list
    client = client_as("integration_admin")
    # when they run the schedule now
    with django_capture_on_commit_callbacks(execute=False) as published:
        response = _action(client, POLL_CHANGELIST, "run_now", [poll_schedule])
    # then one pull is queued and the run is audited
    assert response.status_code == 302
    assert len(published) == 1
    event = AuditEvent.objects.get(action=AuditAction.POLL_SCHEDULE_RUN)
    assert (event.actor_username, event.object_id) == ("integration_admin-user", str(poll_schedule.pk))


def test_poll_schedule_run_now_service_refuses_an_auditor(make_role_user, poll_schedule):
    with pytest.raises(PermissionDenied):
        poll_schedules_run_now(schedules=[poll_schedule], user=make_role_user("auditor"))


def test_bulk_deleting_poll_schedules_removes_their_beat_entries_and_audits_each(client_as, poll_schedule):
    # given a poll schedule with its beat entry
    task_id = poll_schedule.periodic_task_id
    client = client_as("integration_admin")
    # when an integration admin deletes it with the list's bulk delete (confirmed)
    response = client.post(
        POLL_CHANGELIST, {"action": "delete_selected", "_selected_action": [poll_schedule.pk], "post": "yes"}
    )
    # then the schedule and its beat entry are gone, and the deletion is audited
    assert response.status_code == 302
    assert not PollSchedule.objects.filter(pk=poll_schedule.pk).exists()
    assert not PeriodicTask.objects.filter(pk=task_id).exists()
    event = AuditEvent.objects.get(action=AuditAction.POLL_SCHEDULE_DELETED)
    assert event.actor_username == "integration_admin-user"
