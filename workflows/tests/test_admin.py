"""The workflow runs in the admin: read-only, with their steps inline, filtered and searched."""

from __future__ import annotations

import pytest

from governance.choices import Flow
from governance.models import LegalEntity
from workflows.choices import RunStatus
from workflows.services import workflow_run_hold, workflow_run_start, workflow_step_begin, workflow_step_done

pytestmark = pytest.mark.django_db


def _runs() -> tuple:
    entity = LegalEntity.objects.create(
        code="US01", name="Firm US", country="US", base_currency="USD", tax_jurisdiction="US-NY", region="americas"
    )
    done, _ = workflow_run_start(
        flow=Flow.OPPORTUNITY_TO_PROJECT,
        business_key="crm:opportunity:006DONE",
        legal_entity=entity,
        correlation_id="corr-done-1",
    )
    step = workflow_step_begin(run=done, name="validate", position=1)
    workflow_step_done(step=step, result={"project_number": "US01-P000001"})
    held, _ = workflow_run_start(flow=Flow.CLIENT_MASTER, business_key="crm:account:001HELD")
    workflow_run_hold(run=held, category="duplicate_suspect", reason="looks like Contoso", step="check_duplicates")
    return done, held


def test_an_auditor_sees_a_run_with_its_steps_inline_and_cannot_change_it(client_as):
    # given two runs
    done, _held = _runs()
    auditor = client_as("auditor")

    # when the auditor opens the list filtered by flow, status and legal entity, and searches a business key
    filtered = auditor.get(
        "/admin/workflows/workflowrun/",
        {
            "flow": Flow.OPPORTUNITY_TO_PROJECT,
            "status": RunStatus.RUNNING,
            "legal_entity__id__exact": done.legal_entity_id,
        },
    )
    searched = auditor.get("/admin/workflows/workflowrun/", {"q": "001HELD"})
    by_correlation = auditor.get("/admin/workflows/workflowrun/", {"q": "corr-done-1"})

    # then each shows the matching run only
    assert filtered.status_code == 200
    assert "006DONE" in filtered.text and "001HELD" not in filtered.text
    assert "001HELD" in searched.text and "006DONE" not in searched.text
    assert "006DONE" in by_correlation.text

    # when the auditor opens a run
    page = auditor.get(f"/admin/workflows/workflowrun/{done.pk}/change/")

    # then its steps are shown inline, read-only: no save button, and adding or deleting is refused
    assert page.status_code == 200
    assert "US01-P000001" in page.text and "validate" in page.text
    assert 'name="_save"' not in page.text
    assert auditor.get("/admin/workflows/workflowrun/add/").status_code == 403
    assert auditor.post(f"/admin/workflows/workflowrun/{done.pk}/delete/", {"post": "yes"}).status_code == 403


def test_even_an_integration_admin_cannot_edit_a_run(client_as):
    # given a run and an integration admin
    done, _ = _runs()
    ops = client_as("integration_admin")

    # when they post a change to it
    response = ops.post(f"/admin/workflows/workflowrun/{done.pk}/change/", {"status": RunStatus.COMPLETED})

    # then it is refused and the run is unchanged
    assert response.status_code == 403
    done.refresh_from_db()
    assert done.status == RunStatus.RUNNING
