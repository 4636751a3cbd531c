"""Ledger lines reach the ERP through its outbound mapping: the linked employee and the PSA's description, and
an analyst's new mapping version changes what the ERP receives (sandbox PSA and ERP over real HTTP)."""

from __future__ import annotations

import pytest

from governance.choices import Trigger
from mappings.choices import Direction
from mappings.models import MappingSet
from mappings.runtime import mapping_cache_invalidate
from mappings.services import field_rule_save, mapping_set_create_draft, mapping_set_publish
from workflows.choices import PostingStatus
from workflows.models import TimeExpensePosting
from workflows.tests.time_expense_fixtures import build_world, run_until
from workflows.time_expense import time_expense_erp_mappings_install

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("live_celery_worker_db")]


def _posted(world) -> int:
    return TimeExpensePosting.objects.filter(target_system=world.erp, status=PostingStatus.POSTED).count()


def test_an_analysts_mapping_version_changes_the_employee_and_description_the_erp_receives(request, make_role_user):
    # given the sandbox ERP with its installed ledger-line mappings, and Diego linked to ERP employee EMP-41
    world = build_world(request, trigger=Trigger.EVENT)
    world.webhooks_on()
    world.link("diego", "EMP-41")
    analyst = make_role_user("analyst")
    time_expense_erp_mappings_install(system=world.erp, user=analyst)
    mapping_cache_invalidate()

    # when an entry with a note is approved
    first = world.time_entry(project="alpha", hours=2, notes="Data model review")
    world.approve(first)
    run_until(lambda: _posted(world) == 1)

    # then the ERP line carries the linked employee and the PSA's description, and no hub key in it
    (line,) = world.erp_lines()
    assert line.data["employee_id"] == "EMP-41"
    assert line.data["description"] == "Data model review"
    assert line.data["employee_ref"] == world.users["diego"].external_id

    # when the analyst publishes a version that puts the role before the description and sends the ERP employee
    # (not the PSA person) in employee_ref
    current = MappingSet.objects.get(system=world.erp, entity__name="time_entry", direction=Direction.OUTBOUND)
    draft = mapping_set_create_draft(mapping_set=current, user=analyst)
    description = draft.rules.get(target_path="description")
    description.source_paths = ["role", "description"]
    description.steps = [{"transform": "concat", "params": {"separator": " - "}}]
    field_rule_save(rule=description, user=analyst, reason="role first")
    employee = draft.rules.get(target_path="employee_ref")
    employee.source_paths = ["employee_id"]
    field_rule_save(rule=employee, user=analyst, reason="the ERP's employee")
    mapping_set_publish(mapping_set=draft, user=analyst, confirm=True)

    # and another entry of Diego's is approved
    second = world.time_entry(project="beta", hours=1.5, notes="Steering committee")
    world.approve(second)
    run_until(lambda: _posted(world) == 2)

    # then its ERP line follows the new version; the first line is untouched
    lines = {line.data["source_ref"].rsplit(":", 1)[-1]: line for line in world.erp_lines()}
    assert lines[second].data["description"] == "Consultant - Steering committee"
    assert lines[second].data["employee_ref"] == "EMP-41"
    assert lines[first].data["description"] == "Data model review"
