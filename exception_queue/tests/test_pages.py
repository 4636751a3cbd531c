"""The exception queue's pages: list filters, search, aging, query counts, the item page and who may act."""

from __future__ import annotations

import datetime
import json
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from connectors.tests.factories import ConnectedSystemFactory
from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import Decision, ExceptionItem
from exception_queue.services import exception_item_approve, exception_item_open
from governance.choices import Flow
from governance.tests.factories import LegalEntityFactory
from insights.tests.factories import MessageFactory
from integrationhub.models import AuditEvent
from sync.choices import MessageStatus
from sync.models import Message
from sync.services import message_process
from sync.tests.conftest import client_record, signed_post

pytestmark = pytest.mark.django_db

QUEUE = "/admin/exception_queue/exceptionitem/"


def item_url(item: ExceptionItem) -> str:
    return reverse("admin:exception_queue_exceptionitem_change", args=[item.pk])


def act_url(item: ExceptionItem) -> str:
    return reverse("admin:exception_queue_exceptionitem_act", args=[item.pk])


def listed_ids(page) -> set[int]:
    return {row.pk for row in page.context["cl"].result_list}


def make_item(**fields) -> ExceptionItem:
    defaults = {"category": ExceptionCategory.VALIDATION, "reason": "Name is required."}
    item = exception_item_open(**{**defaults, **fields})
    return item


@pytest.fixture
def queue_items():
    """Items across categories, systems, flows, entities, amounts and ages."""
    crm, erp = ConnectedSystemFactory(slug="crm-q"), ConnectedSystemFactory(slug="erp-q")
    uk, us = LegalEntityFactory(code="UK01"), LegalEntityFactory(code="US01")
    now = timezone.now()
    items = {
        # Replay needs a message to run again, so the item a mapping failed on holds one.
        "fresh_validation": make_item(
            system=crm,
            legal_entity=uk,
            flow=Flow.CLIENT_MASTER,
            external_id="ACC-1",
            message=MessageFactory(
                system=crm, entity="client", event_type="client.updated", status=MessageStatus.FAILED
            ),
        ),
        "big_approval": make_item(
            category=ExceptionCategory.APPROVAL_REQUIRED,
            system=erp,
            legal_entity=us,
            flow=Flow.MILESTONE_BILLING,
            amount=Decimal("120000"),
            currency="USD",
            required_approvals=2,
        ),
        "small_approval": make_item(
            category=ExceptionCategory.APPROVAL_REQUIRED,
            system=erp,
            legal_entity=uk,
            flow=Flow.TIME_EXPENSE_TO_ERP,
            amount=Decimal("1500"),
            currency="GBP",
        ),
        "old_dead": make_item(category=ExceptionCategory.DEAD_LETTER, system=crm, legal_entity=us),
        "rejected": make_item(system=crm, legal_entity=uk),
    }
    ExceptionItem.objects.filter(pk=items["old_dead"].pk).update(created_at=now - datetime.timedelta(days=5))
    ExceptionItem.objects.filter(pk=items["small_approval"].pk).update(created_at=now - datetime.timedelta(hours=13))
    ExceptionItem.objects.filter(pk=items["rejected"].pk).update(state=ExceptionState.REJECTED)
    return {name: ExceptionItem.objects.get(pk=item.pk) for name, item in items.items()}


def test_the_queue_filters_by_every_facet(client_as, queue_items):
    # given a finance approver and items of every kind
    client = client_as("finance_approver")
    ids = {name: item.pk for name, item in queue_items.items()}
    crm = queue_items["fresh_validation"].system
    uk = queue_items["fresh_validation"].legal_entity
    cases = {
        "category__exact=approval_required": {"big_approval", "small_approval"},
        f"system__id__exact={crm.pk}": {"fresh_validation", "old_dead", "rejected"},
        "flow__exact=milestone_billing": {"big_approval"},
        f"legal_entity__id__exact={uk.pk}": {"fresh_validation", "small_approval", "rejected"},
        "state__exact=open": {"fresh_validation", "big_approval", "small_approval", "old_dead"},
        "amount_range=gte100k": {"big_approval"},
        "amount__gte=1000&amount__lte=2000": {"small_approval"},
        "age=gt3d": {"old_dead"},
        "age=4h-1d": {"small_approval"},
        "age=overdue": {"old_dead"},
        "q=ACC-1": {"fresh_validation"},
        f"q=%23{ids['old_dead']}": {"old_dead"},
    }
    for query, expected in cases.items():
        # when the list is filtered
        page = client.get(f"{QUEUE}?{query}")
        # then exactly the matching items are listed
        assert page.status_code == 200, query
        assert listed_ids(page) == {ids[name] for name in expected}, query


def test_the_queue_searches_by_correlation_id_and_idempotency_key(client_as, queue_items):
    # given an item of a stored message
    system = queue_items["fresh_validation"].system
    message = Message.objects.create(
        system=system, entity="client", event_type="client.updated", idempotency_key="evt-77", correlation_id="c-77"
    )
    item = make_item(message=message, system=system)
    client = client_as("finance_approver")
    # when the queue is searched by either id
    for term in ("c-77", "evt-77"):
        page = client.get(f"{QUEUE}?q={term}")
        # then that item alone is found
        assert listed_ids(page) == {item.pk}


def test_the_queue_sorts_and_shows_aging_against_the_sla(client_as, queue_items, settings):
    # given an SLA of 10 hours
    settings.HUB_EXCEPTION_SLA_HOURS = 10
    client = client_as("finance_approver")
    # when the list is sorted by amount, descending (column 8)
    page = client.get(f"{QUEUE}?o=-8&state__exact=open")
    rows = [row.pk for row in page.context["cl"].result_list]
    # then the largest amount comes first
    assert rows[0] == queue_items["big_approval"].pk
    html = page.content.decode()
    # and the 13-hour-old item is overdue, the 5-minute-old one within the SLA, and "0 of 2" approvals show
    assert 'class="hub-badge age-overdue"' in html
    assert 'class="hub-badge age-ok"' in html
    assert "0 of 2" in html


def test_a_page_of_the_queue_costs_the_same_queries_for_5_or_40_items(client_as, queue_items):
    # given a finance approver and a first page of 5 items
    client = client_as("finance_approver")
    client.get(QUEUE)  # warm the session and content types
    with CaptureQueriesContext(connection) as few:
        assert client.get(QUEUE).status_code == 200
    # when 35 more items with messages, systems, entities and approvals are added
    system = queue_items["fresh_validation"].system
    for number in range(35):
        message = Message.objects.create(
            system=system,
            entity="client",
            event_type="client.updated",
            idempotency_key=f"k{number}",
            correlation_id=f"c{number}",
        )
        make_item(
            category=ExceptionCategory.APPROVAL_REQUIRED,
            message=message,
            system=system,
            legal_entity=queue_items["fresh_validation"].legal_entity,
            amount=Decimal(number),
            required_approvals=2,
        )
    with CaptureQueriesContext(connection) as many:
        page = client.get(QUEUE)
    # then the page lists them with the same number of queries
    assert len(page.context["cl"].result_list) == 40
    assert len(many.captured_queries) == len(few.captured_queries), [q["sql"] for q in many.captured_queries]


def test_an_auditor_reads_an_item_without_actions_and_a_forged_post_changes_nothing(client_as, queue_items):
    # given an open approval item and an auditor
    item = queue_items["big_approval"]
    client = client_as("auditor")
    # when the auditor opens it
    page = client.get(item_url(item))
    # then the page shows the item and offers no action
    assert page.status_code == 200
    html = page.content.decode()
    assert "0 of 2 approvals" in html
    assert 'id="actions"' not in html and "<button" not in html.split('id="content-main"')[1]
    # when the auditor forges an approval and a rejection
    for action in ("approve", "reject"):
        response = client.post(act_url(item), {"action": action, "reason": "forged"})
        # then both are refused and nothing changed
        assert response.status_code == 403
    item.refresh_from_db()
    assert item.state == ExceptionState.OPEN
    assert not Decision.objects.filter(item=item).exists()
    assert not AuditEvent.objects.filter(object_id=str(item.pk)).exists()
    # and the bulk actions are not offered either
    assert client.get(QUEUE).context["cl"].model_admin.get_actions(page.wsgi_request) == {}


def test_an_analyst_fixes_items_from_mappings_but_not_finance_items(client_as, queue_items):
    # given an analyst
    client = client_as("analyst")
    # when the analyst opens a validation item and an approval item
    validation = client.get(item_url(queue_items["fresh_validation"]))
    approval = client.get(item_url(queue_items["big_approval"]))
    # then replay and fix are offered on the validation item only
    assert {a.action for a in validation.context["actions"]} == {"replay", "fix_and_replay"}
    assert approval.context["actions"] == []
    # and approving or replaying a dead letter by POST is refused with nothing changed
    assert client.post(act_url(queue_items["big_approval"]), {"action": "approve", "reason": "x"}).status_code == 403
    assert client.post(act_url(queue_items["old_dead"]), {"action": "replay", "reason": "x"}).status_code == 403
    assert not Decision.objects.exists()


@pytest.fixture
def held_pair(client, make_flow, target):
    """A 5000 GBP credit limit held for approval through the pipeline; above 4000 two approvers are needed."""
    flow = make_flow(
        target.url,
        approval_threshold=Decimal("1000"),
        second_threshold=Decimal("4000"),
        rules=[("id", "Id"), ("name", "Name"), ("status", "Status"), ("credit_limit", "Limit")],
    )
    response = signed_post(client, flow, {**client_record(), "Limit": {"amount": "5000.00", "currency": "GBP"}})
    message = Message.objects.get(pk=response.json()["message_id"])
    message_process(message_id=message.pk)
    return message, ExceptionItem.objects.get(message=message)


def test_the_second_approval_by_the_same_person_is_refused_on_the_page(client_as, held_pair, make_role_user):
    # given a held item needing two approvers, approved once by a finance approver
    message, item = held_pair
    from django.test import Client

    first = make_role_user("finance_approver", "first-approver")
    exception_item_approve(item=item, user=first, reason="Within contract")
    client = Client()
    client.force_login(first)
    # when the same person approves again on the page
    response = client.post(act_url(item), {"action": "approve", "reason": "again"}, follow=True)
    # then the page says why, shows 1 of 2 and who approved, and nothing changed
    html = response.content.decode()
    assert "You already approved this item" in html
    assert "1 of 2 approvals" in html and "first-approver" in html
    item.refresh_from_db()
    message.refresh_from_db()
    assert item.state == ExceptionState.OPEN and message.status == MessageStatus.HELD
    assert item.decisions.count() == 1


def test_edit_and_replay_shows_the_diff_before_it_replays_and_records_it(client_as, make_flow, target, client):
    # given a client record whose blank status could not be mapped (the raw payload is what gets edited)
    flow = make_flow(target.url)
    response = signed_post(client, flow, {**client_record(), "Status": ""})
    message = Message.objects.get(pk=response.json()["message_id"])
    message_process(message_id=message.pk)
    item = ExceptionItem.objects.get(message=message)
    assert item.category == ExceptionCategory.VALIDATION and message.canonical_payload is None
    finance = client_as("finance_approver")
    corrected = {**message.raw_payload, "Status": "active"}
    form = {"action": "fix_and_replay", "reason": "Status was blank", "payload": json.dumps(corrected)}
    # when the corrected payload is submitted
    preview = finance.post(act_url(item), form)
    # then a diff of the one changed field is shown, and nothing is replayed yet
    assert preview.status_code == 200
    assert [(c["path"], c["before"], c["after"]) for c in preview.context["diff"]] == [("Status", "", "active")]
    item.refresh_from_db()
    assert item.state == ExceptionState.OPEN and not item.decisions.exists()
    # when it is confirmed
    done = finance.post(act_url(item), {**form, "confirm": "yes"})
    # then the item is replayed with the diff recorded, and the message runs again and is delivered
    assert done.status_code == 302
    item.refresh_from_db()
    decision = item.decisions.get()
    assert item.state == ExceptionState.REPLAYED
    assert decision.action == DecisionAction.FIX_AND_REPLAY
    assert decision.payload_diff[0]["path"] == "Status" and decision.payload_diff[0]["after"] == "active"
    assert message_process(message_id=message.pk) == MessageStatus.QUEUED


def test_invalid_json_is_refused_with_nothing_changed(client_as, queue_items):
    # given a validation item of a message
    system = queue_items["fresh_validation"].system
    message = Message.objects.create(
        system=system,
        entity="client",
        event_type="client.updated",
        idempotency_key="bad",
        correlation_id="bad",
        raw_payload={"Id": "1"},
    )
    item = make_item(message=message, system=system)
    # when a finance approver sends a payload that does not parse
    response = client_as("finance_approver").post(
        act_url(item), {"action": "fix_and_replay", "reason": "fix", "payload": "{not json"}
    )
    # then it is refused with the reason, and nothing changed
    assert response.status_code == 422
    assert "not valid JSON" in response.content.decode()
    item.refresh_from_db()
    assert item.state == ExceptionState.OPEN and not item.decisions.exists()


def test_bulk_reject_asks_for_confirmation_then_rejects_each_with_a_decision(client_as, queue_items):
    # given a finance approver selecting two open items
    client = client_as("finance_approver")
    chosen = [queue_items["fresh_validation"].pk, queue_items["old_dead"].pk]
    # when the bulk reject action is chosen
    confirm = client.post(QUEUE, {"action": "bulk_reject", "_selected_action": chosen, "index": 0})
    # then a confirmation page lists them and nothing changed yet
    assert confirm.status_code == 200
    assert {item.pk for item in confirm.context["items"]} == set(chosen)
    assert not Decision.objects.exists()
    # when confirmed with a reason
    done = client.post(
        QUEUE, {"action": "bulk_reject", "_selected_action": chosen, "confirm": "yes", "reason": "Duplicates"}
    )
    # then each is rejected with its own decision
    assert done.status_code == 302
    states = dict(ExceptionItem.objects.filter(pk__in=chosen).values_list("pk", "state"))
    assert set(states.values()) == {ExceptionState.REJECTED}
    assert Decision.objects.filter(item_id__in=chosen, action=DecisionAction.REJECT, reason="Duplicates").count() == 2


@pytest.fixture
def registered_retry():
    """A workflow's own action on held activations, registered the way the workflows do; removed afterwards."""
    from exception_queue import actions
    from exception_queue.services import PERM_DECIDE, decision_record, locked_open_item, require_reason

    saved = list(actions._ACTIONS)

    def retry_step(*, item, user, reason):
        reason = require_reason(reason)
        item = locked_open_item(item)
        decision_record(item=item, action=DecisionAction.RETRY_STEP, user=user, reason=reason)
        item.state = ExceptionState.RESOLVED
        item.save(update_fields=["state", "updated_at"])
        return item

    actions.register_item_action(
        actions.ItemAction(
            action=DecisionAction.RETRY_STEP,
            label="Retry the held step",
            permission=PERM_DECIDE,
            handler=retry_step,
            category=ExceptionCategory.ACTIVATION_HELD,
        )
    )
    yield
    actions._ACTIONS[:] = saved


def test_a_held_workflow_run_shows_its_steps_and_the_workflows_own_actions(client_as, registered_retry):
    # given an opportunity-to-project run held at its third step, with an item holding it
    from workflows.models import WorkflowRun, WorkflowStep

    started = timezone.now() - datetime.timedelta(minutes=5)
    run = WorkflowRun.objects.create(
        flow=Flow.OPPORTUNITY_TO_PROJECT,
        business_key="crm:opportunity:OPP-1",
        status="held",
        current_step="create_workspace",
        correlation_id="run-c-1",
    )
    for position, (name, status) in enumerate(
        [("create_erp_project", "done"), ("create_psa_project", "done"), ("create_workspace", "failed")], start=1
    ):
        WorkflowStep.objects.create(
            run=run,
            name=name,
            position=position,
            status=status,
            attempts=1,
            started_at=started + datetime.timedelta(seconds=position),
            finished_at=started + datetime.timedelta(seconds=position + 1),
            error="Graph answered 503" if status == "failed" else "",
        )
    item = make_item(
        category=ExceptionCategory.ACTIVATION_HELD,
        reason="The workspace could not be created.",
        workflow_run=run,
        step="create_workspace",
        flow=Flow.OPPORTUNITY_TO_PROJECT,
    )
    finance = client_as("finance_approver")
    # when finance opens the item
    page = finance.get(item_url(item))
    html = page.content.decode()
    # then the run, its steps and their trace are shown, and the workflow's action is offered with the engine's
    assert page.status_code == 200
    assert 'id="workflow-run"' in html and 'data-step="create_workspace"' in html and "Graph answered 503" in html
    assert [e.stage for e in page.context["detail"].trace] == ["workflow:done", "workflow:done", "workflow:failed"]
    assert {a.action for a in page.context["actions"]} == {"retry_step", "compensate", "cancel", "reject"}
    assert 'class="hub-action action-retry_step' in html
    # when finance retries the step from the page
    response = finance.post(act_url(item), {"action": "retry_step", "reason": "Graph is back"})
    # then the workflow's handler ran and recorded the decision
    assert response.status_code == 302
    item.refresh_from_db()
    assert item.state == ExceptionState.RESOLVED
    assert list(item.decisions.values_list("action", flat=True)) == [DecisionAction.RETRY_STEP]


def test_the_hub_bar_takes_each_role_to_its_part_of_the_queue(client_as, queue_items):
    # given the analyst's link to the items from mappings
    analyst = client_as("analyst")
    html = analyst.get("/admin/").content.decode()
    assert "category__in=validation,target_rejected" in html and ">Items to fix<" in html
    # when the analyst follows it
    page = analyst.get(f"{QUEUE}?state__exact=open&category__in=validation,target_rejected")
    # then only open validation and target-rejected items are listed
    assert listed_ids(page) == {queue_items["fresh_validation"].pk}
    # and finance's link is the whole open queue
    finance_home = client_as("finance_approver").get("/admin/").content.decode()
    assert f'href="{QUEUE}?state__exact=open">Exception queue<' in finance_home


def test_bulk_replay_asks_for_confirmation_then_replays_each_item_of_a_message(client_as, queue_items):
    # given two open validation items of stored messages
    system = queue_items["fresh_validation"].system
    items = []
    for number in range(2):
        message = Message.objects.create(
            system=system,
            entity="client",
            event_type="client.updated",
            idempotency_key=f"bulk-{number}",
            correlation_id=f"bulk-{number}",
            raw_payload={"Id": f"C-{number}"},
            status=MessageStatus.FAILED,
        )
        items.append(make_item(message=message, system=system))
    client = client_as("finance_approver")
    chosen = [item.pk for item in items] + [queue_items["big_approval"].pk]
    # when bulk replay is chosen, the confirmation page lists them and changes nothing
    confirm = client.post(QUEUE, {"action": "bulk_replay", "_selected_action": chosen, "index": 0})
    assert confirm.status_code == 200 and 'id="bulk-confirm"' in confirm.content.decode()
    assert not Decision.objects.exists()
    # when confirmed
    done = client.post(
        QUEUE,
        {"action": "bulk_replay", "_selected_action": chosen, "confirm": "yes", "reason": "Target fixed"},
        follow=True,
    )
    # then both messages are replayed with one decision each, and the approval item is skipped and named
    for item in items:
        item.refresh_from_db()
        item.message.refresh_from_db()
        assert item.state == ExceptionState.REPLAYED
        assert item.message.status == MessageStatus.RECEIVED and item.message.replay_count == 1
    assert Decision.objects.filter(action=DecisionAction.REPLAY, reason="Target fixed").count() == 2
    assert f"Item #{queue_items['big_approval'].pk} skipped" in done.content.decode()
    assert ExceptionItem.objects.get(pk=queue_items["big_approval"].pk).state == ExceptionState.OPEN
