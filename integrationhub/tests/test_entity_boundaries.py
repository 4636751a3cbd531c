"""Legal-entity boundaries on operational data, probed the way an attacker would: a user and an API key scoped to
UK01 walk every list, detail and action route of the URL configuration (the admin's, the hub's pages and
/api/v1/), found by iterating get_resolver(), so a route added later is walked too. Another entity's record answers
404 (exactly like a missing one), no list carries it whatever the filter, and no action touches it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from connectors.tests.factories import ConnectedSystemFactory
from exception_queue.choices import DecisionAction, ExceptionCategory, ExceptionState
from exception_queue.models import Decision, ExceptionItem
from governance.choices import Flow
from governance.tests.factories import LegalEntityFactory
from insights.models import BatchProgress
from integrationhub.apikeys import api_key_create
from integrationhub.audit import AuditAction, audit_record
from integrationhub.models import AuditEvent, UserLegalEntityScope
from integrationhub.scopes import ALL_SCOPES
from integrationhub.scoping import OPERATIONAL_SCOPE_PATHS
from sync.choices import AttemptOutcome, BatchKind, FileDropStatus, MessageStatus
from sync.models import CrossReference, Delivery, DeliveryAttempt, FileDrop, FollowUpEvent, Message, PollCursor
from workflows.choices import PostingKind
from workflows.models import (
    ClientDirectoryEntry,
    FinanceNotification,
    TimeExpensePosting,
    WorkflowRun,
    WorkflowStep,
)

pytestmark = pytest.mark.django_db

# Only US01's records carry it: a response that contains it leaked another entity's data.
MARK = "zzsecret"
OPERATIONAL_APPS = ("sync", "exception_queue", "workflows", "insights", "integrationhub", "reconciliation")
# Models of those apps that are configuration or the engine's own bookkeeping, not a legal entity's operational
# record (configuration is scoped by integrationhub.scoping's configuration rules, or is enterprise-level).
NOT_OPERATIONAL = {
    "sync.route",
    "sync.historicalroute",
    "sync.pollschedule",
    "sync.historicalpollschedule",
    "sync.orderingwatermark",
    "workflows.timeexpensesenderlease",
    "workflows.clientdirectorysource",
    "workflows.resourcelink",
    "workflows.historicalresourcelink",
    "integrationhub.apikey",
    "integrationhub.userlegalentityscope",
}
# URL parameters the walk knows how to fill (or a route it leaves to its own tests, with the reason).
RECORD_PARAMETERS = {"pk", "object_id"}
SKIPPED_PARAMETERS = {
    "format": "a format suffix of a route walked without it",
    "app_label": "the admin's app index lists models, not records",
    "system_slug": "the inbound webhook authenticates by the system's signature, not by a user",
    "event_type": "the inbound webhook",
    "url": "the admin's catch-all, which answers every unknown address alike",
    "id": "a user's password page (auth.user: people, not a legal entity's records)",
}
# Health probes report the process, not records (and readyz waits on the broker).
SKIPPED_ROUTES = {"healthz", "readyz", "admin/logout/"}
# Where the walk also tries filters that aim at US01: the API, the trace and the operational models' admin pages.
PROBED = re.compile(r"api/v1/|admin/trace/")


def _probed(route: Route) -> bool:
    admin_path = re.match(r"admin/(\w+)/(\w+)/", route.template)
    if admin_path and f"{admin_path.group(1)}.{admin_path.group(2)}" in OPERATIONAL_SCOPE_PATHS:
        return True
    return bool(PROBED.match(route.template)) or route.template.startswith("admin/reconciliation/")


SKIPPED_PREFIXES = ("sandbox/",)  # the simulated counterpart systems, not the hub


@dataclass
class World:
    uk: Any
    us: Any
    records: dict[str, dict[str, Any]]  # model label -> {"uk": row, "us": row}
    unknown_item: ExceptionItem


def _records(entity: Any, system: Any, target: Any, tag: str) -> dict[str, Any]:
    message = Message.objects.create(
        system=system,
        entity="time_entry",
        event_type=f"{tag}.approved",
        idempotency_key=f"{tag}-key",
        correlation_id=f"{tag}-corr",
        legal_entity=entity,
        raw_payload={"id": f"{tag}-ext", "note": tag},
        canonical_id=f"{tag}-ext",
        status=MessageStatus.FAILED,
        flow=Flow.TIME_EXPENSE_TO_ERP,
        last_error=f"{tag} failed",
    )
    delivery = Delivery.objects.create(
        message=message, target_system=target, idempotency_key=f"{tag}-dkey", external_id=f"{tag}-dext"
    )
    attempt = DeliveryAttempt.objects.create(
        delivery=delivery,
        number=1,
        outcome=AttemptOutcome.TERMINAL_ERROR,
        error=f"{tag} refused",
        correlation_id=message.correlation_id,
    )
    run = WorkflowRun.objects.create(
        flow=Flow.MILESTONE_BILLING,
        business_key=f"{tag}-run",
        legal_entity=entity,
        message=message,
        correlation_id=message.correlation_id,
        last_error=f"{tag} run",
    )
    step = WorkflowStep.objects.create(run=run, name="create_billing_event", position=1, error=f"{tag} step")
    item = ExceptionItem.objects.create(
        category=ExceptionCategory.VALIDATION,
        reason=f"{tag} reason",
        message=message,
        legal_entity=entity,
        system=system,
        external_id=f"{tag}-item",
        flow=Flow.TIME_EXPENSE_TO_ERP,
    )
    decision = Decision.objects.create(item=item, message=message, action=DecisionAction.REPLAY, reason=f"{tag} dec")
    posting = TimeExpensePosting.objects.create(
        entry_key=f"psa:time_entry:{tag}",
        entity="time_entry",
        version=1,
        kind=PostingKind.POST,
        target_system=target,
        message=message,
        source_version="1",
        project_ref=f"{tag}-proj",
        idempotency_key=f"{tag}-post",
        last_error=f"{tag} posting",
    )
    return {
        "sync.message": message,
        "sync.delivery": delivery,
        "sync.deliveryattempt": attempt,
        "sync.followupevent": FollowUpEvent.objects.create(name=f"{tag}.followed", message=message),
        "sync.crossreference": CrossReference.objects.create(
            system=system, entity="project", canonical_id=f"{tag}-canon", external_id=f"{tag}-xref"
        ),
        "sync.filedrop": FileDrop.objects.create(
            system=system,
            entity="time_entry",
            file_name=f"{tag}.csv",
            sha256=(tag * 8)[:64],
            status=FileDropStatus.ACCEPTED,
            correlation_id=f"{tag}-drop",
        ),
        "sync.pollcursor": PollCursor.objects.create(system=system, entity=f"{tag}"[:40]),
        "exception_queue.exceptionitem": item,
        "exception_queue.decision": decision,
        "workflows.workflowrun": run,
        "workflows.milestonebillingrun": run,
        "workflows.workflowstep": step,
        "workflows.timeexpenseposting": posting,
        "workflows.financenotification": FinanceNotification.objects.create(
            workflow_run=run, legal_entity=entity, subject=f"{tag} subject", body=f"{tag} body"
        ),
        "workflows.clientdirectoryentry": ClientDirectoryEntry.objects.create(
            source_key=f"{tag}-src",
            source="crm",
            name=f"{tag} client",
            name_key=tag,
            block_key=tag,
            legal_entity=entity,
            system=system,
        ),
        "insights.batchprogress": BatchProgress.objects.create(
            kind=BatchKind.POLL, system=system, entity="time_entry", label=f"{tag} batch"
        ),
        "insights.kpidashboard": None,  # a page, no rows of its own
        "integrationhub.auditevent": audit_record(
            action=AuditAction.EXCEPTION_REJECTED,
            object_type="exception_queue.exceptionitem",
            object_id=item.pk,
            summary=f"{tag} audited",
            legal_entity_id=entity.pk,
        ),
    }


@pytest.fixture
def world() -> World:
    uk, us = LegalEntityFactory(code="UK01"), LegalEntityFactory(code="US01", country="US", base_currency="USD")
    psa_uk, psa_us = ConnectedSystemFactory(slug="psa-uk"), ConnectedSystemFactory(slug="psa-us")
    psa_uk.legal_entities.set([uk])
    psa_us.legal_entities.set([us])
    erp_uk, erp_us = (
        ConnectedSystemFactory(slug="erp-uk", role="erp"),
        ConnectedSystemFactory(slug="erp-us", role="erp"),
    )
    erp_uk.legal_entities.set([uk])
    erp_us.legal_entities.set([us])
    uk_rows = _records(uk, psa_uk, erp_uk, "uk01-visible")
    us_rows = _records(us, psa_us, erp_us, f"us01-{MARK}")
    unknown = ExceptionItem.objects.create(
        category=ExceptionCategory.VALIDATION, reason=f"unknown-entity {MARK}", external_id=f"nobody-{MARK}"
    )
    records = {label: {"uk": uk_rows[label], "us": us_rows[label]} for label in uk_rows}
    # A model declared later (another app's rows) gets its rows built from its fields, so its routes are walked.
    for label in sorted(set(OPERATIONAL_SCOPE_PATHS) - set(records)):
        model = apps.get_model(label)
        records[label] = {
            "uk": _row_of(model, entity=uk, system=psa_uk, tag="uk01-visible", made=records, side="uk"),
            "us": _row_of(model, entity=us, system=psa_us, tag=f"us01-{MARK}", made=records, side="us"),
        }
    return World(uk=uk, us=us, records=records, unknown_item=unknown)


def _row_of(model: Any, *, entity: Any, system: Any, tag: str, made: dict[str, Any], side: str) -> Any:
    """A row of `model` with every required field filled: the legal entity, the system, a row of another model
    this world already made, the tag in text fields, the first choice, zero, today."""
    import datetime
    from decimal import Decimal

    from django.db import models as django_models

    values: dict[str, Any] = {}
    for field in model._meta.concrete_fields:
        if field.primary_key or field.has_default() or getattr(field, "auto_now", False):
            continue
        if field.null and not isinstance(field, django_models.ForeignKey):
            continue
        if isinstance(field, django_models.ForeignKey):
            target = field.related_model._meta.label_lower
            if target == "governance.legalentity":
                values[field.name] = entity
            elif target == "connectors.connectedsystem":
                values[field.name] = system
            elif target in made and made[target][side] is not None:
                values[field.name] = made[target][side]
            elif not field.null:
                values[field.name] = _row_of(
                    field.related_model, entity=entity, system=system, tag=tag, made=made, side=side
                )
        elif field.choices:
            values[field.name] = field.choices[0][0]
        elif isinstance(field, django_models.CharField | django_models.TextField):
            values[field.name] = tag[: field.max_length] if field.max_length else tag
        elif isinstance(field, django_models.DateTimeField):
            values[field.name] = datetime.datetime.now(tz=datetime.UTC)
        elif isinstance(field, django_models.DateField):
            values[field.name] = datetime.date.today()
        elif isinstance(field, django_models.DecimalField):
            values[field.name] = Decimal("0")
        elif isinstance(field, django_models.IntegerField | django_models.FloatField):
            values[field.name] = 0
        elif isinstance(field, django_models.JSONField):
            values[field.name] = {"note": tag}
    return model.objects.create(**values)


def _user_scoped_to(username: str, *entities: Any, permissions: bool = True) -> Any:
    """A staff user with every model permission (so only the legal-entity scope can refuse), scoped to `entities`."""
    user = get_user_model().objects.create_user(username=username, password="x-test-password-1", is_staff=True)
    if permissions:
        user.user_permissions.set(Permission.objects.all())
    scope = UserLegalEntityScope.objects.create(user=user)
    scope.legal_entities.set(entities)
    return get_user_model().objects.get(pk=user.pk)  # no cached permissions


@pytest.fixture
def uk_session(world: World) -> Client:
    client = Client()
    client.force_login(_user_scoped_to("uk-everything", world.uk))
    return client


@pytest.fixture
def uk_key_client(world: World) -> Client:
    """A key restricted to UK01 whose owner may do everything everywhere (a superuser): only the key narrows."""
    owner = get_user_model().objects.create_superuser(username="key-owner", password="x-test-password-1")
    created = api_key_create(name="uk key", owner=owner, scopes=list(ALL_SCOPES), legal_entity=world.uk)
    return Client(HTTP_AUTHORIZATION=f"Api-Key {created.key}")


# --- the walk ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    template: str  # "admin/sync/message/<path:object_id>/change/" or "api/v1/messages/(?P<pk>[^/.]+)/replay/"
    pattern: URLPattern
    parameters: frozenset[str]

    @property
    def is_api(self) -> bool:
        return self.template.startswith("api/v1/")

    def url(self, **values: Any) -> str:
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: str(values[m.group(1)]), self.template)
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), path)
        path = path.replace("^", "").replace("$", "").replace("/?", "/").replace("\\.", ".")
        return "/" + path


def _parameters(template: str) -> frozenset[str]:
    return frozenset(re.findall(r"\(\?P<(\w+)>", template)) | frozenset(re.findall(r"<(?:\w+:)?(\w+)>", template))


def routes(patterns: list[Any] | None = None, prefix: str = "") -> Iterator[Route]:
    """Every route of the URL configuration, with its full template (resolvers' prefixes joined)."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        template = prefix + str(entry.pattern).lstrip("^").removesuffix("$") if prefix else str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from routes(entry.url_patterns, template.removesuffix("$"))
        elif isinstance(entry, URLPattern):
            yield Route(template=template, pattern=entry, parameters=_parameters(template))


def _model_of(route: Route) -> type | None:
    """The model a record route is about: the admin's <app>/<model>/ prefix, or the viewset's queryset."""
    for parameter in route.parameters:
        if parameter.endswith("_id") and parameter != "object_id" and _model_named(route, parameter):
            return _model_named(route, parameter)
    admin_path = re.match(r"admin/(\w+)/(\w+)/", route.template)
    if admin_path:
        try:
            return apps.get_model(admin_path.group(1), admin_path.group(2))
        except LookupError:
            return None
    view_class = getattr(route.pattern.callback, "cls", None)
    if view_class is None:
        return None
    view = view_class(**getattr(route.pattern.callback, "initkwargs", {}))
    actions = getattr(route.pattern.callback, "actions", None) or {}
    view.action = next(iter(actions.values()), None)
    view.request, view.args, view.kwargs, view.format_kwarg = None, (), {}, None
    try:
        return view.get_queryset().model
    except Exception:  # noqa: BLE001 (a view whose queryset needs a real request is not a record route)
        return None


def _record_parameter(route: Route) -> tuple[str | None, str]:
    """The URL parameter naming a record (a viewset's lookup, the admin's object_id) and the field it holds."""
    view_class = getattr(route.pattern.callback, "cls", None)
    if view_class is not None:
        field = getattr(view_class, "lookup_field", "pk")
        name = getattr(view_class, "lookup_url_kwarg", None) or field
        return (name, field) if name in route.parameters else (None, "pk")
    found = route.parameters & RECORD_PARAMETERS
    if found:
        return next(iter(found)), "pk"
    named = [name for name in route.parameters if name.endswith("_id") and _model_named(route, name)]
    return (named[0], "pk") if len(named) == 1 else (None, "pk")


def _model_named(route: Route, parameter: str) -> type | None:
    """The operational model a page's "<thing>_id" parameter names ("row_id" → …row), preferring the app in the
    route's path: a hub page outside a model admin (admin/reconciliation/rows/<int:row_id>/) is walked too."""
    thing = parameter.removesuffix("_id").replace("_", "")
    candidates = [label for label in OPERATIONAL_SCOPE_PATHS if label.split(".")[1].endswith(thing)]
    in_path = [label for label in candidates if f"/{label.split('.')[0]}/" in f"/{route.template}"]
    chosen = in_path or candidates
    return apps.get_model(chosen[0]) if len(chosen) == 1 else None


def _same_answer(answer: Any, absent: Any, record_id: Any) -> bool:
    """Another entity's record is answered exactly as a missing one: the same refusal (404, or the 403/405 every
    record gets there), or the same redirect (the admin's "<id>/" to "<id>/change/", which then answers 404)."""
    if answer.status_code != absent.status_code:
        return False
    if 300 <= answer.status_code < 400:
        here = answer.get("Location", "").replace(str(record_id), "<id>")
        return here == absent.get("Location", "").replace("987654321", "<id>")
    return answer.status_code >= 400


def _post_methods(route: Route) -> bool:
    actions = getattr(route.pattern.callback, "actions", None)
    if actions is not None:
        return "post" in actions
    return route.template.startswith("admin/")


BODY = {"reason": "probing another entity", "payload": {"id": "x"}, "action": "reject", "inputs": {}}


def _call(client: Client, method: str, url: str) -> Any:
    if method == "get":
        return client.get(url)
    return client.post(url, BODY, content_type="application/json") if url.startswith("/api/") else client.post(url, {})


def test_every_operational_model_declares_its_path_to_a_legal_entity():
    # A new model of an operational app is either scoped (its path declared) or named here as configuration.
    undeclared = [
        model._meta.label_lower
        for app in OPERATIONAL_APPS
        if apps.is_installed(app)
        for model in apps.get_app_config(app).get_models()
        if model._meta.label_lower not in OPERATIONAL_SCOPE_PATHS and model._meta.label_lower not in NOT_OPERATIONAL
    ]
    assert undeclared == [], f"declare with integrationhub.scoping.operational_scope_register: {undeclared}"


def test_every_record_route_answers_404_for_another_entitys_record(world, uk_session, uk_key_client):
    refused: list[str] = []
    problems: list[str] = []
    for route in routes():
        if route.template.startswith(SKIPPED_PREFIXES) or route.parameters & set(SKIPPED_PARAMETERS):
            continue
        param, field = _record_parameter(route)
        unknown = route.parameters - {param, "content_type_id"}
        assert not unknown, f"{route.template}: teach this walk the parameter(s) {sorted(unknown)}"
        if param is None:
            continue
        model = _model_of(route)
        if model is None or model._meta.label_lower not in OPERATIONAL_SCOPE_PATHS:
            continue  # configuration: scoped by its own rules (test_scoping)
        label = model._meta.label_lower
        rows = world.records.get(label)
        assert rows and rows["us"] is not None, f"{route.template}: add a {label} row to this test's world"
        content_type = ContentType.objects.get_for_model(model, for_concrete_model=False).pk
        out_of_scope = route.url(**{param: getattr(rows["us"], field), "content_type_id": content_type})
        missing = route.url(**{param: 987654321, "content_type_id": content_type})
        mine = route.url(**{param: getattr(rows["uk"], field), "content_type_id": content_type})
        clients = [("session", uk_session)] + ([("key", uk_key_client)] if route.is_api else [])
        methods = ["get", "post"] if _post_methods(route) else ["get"]
        for who, client in clients:
            for method in methods:
                answer, absent = _call(client, method, out_of_scope), _call(client, method, missing)
                if not _same_answer(answer, absent, getattr(rows["us"], field)):
                    problems.append(
                        f"{who} {method.upper()} {out_of_scope}: {answer.status_code} (missing: {absent.status_code})"
                    )
                elif MARK in answer.content.decode(errors="replace").lower():
                    problems.append(f"{who} {method.upper()} {out_of_scope}: the answer shows the record")
                if method == "get" and answer.status_code == 404 and _call(client, "get", mine).status_code == 200:
                    refused.append(f"{who} {out_of_scope}")
    assert problems == [], "\n".join(problems)
    # The walk really reached the record pages: every operational admin page and API detail, read and refused.
    assert len(refused) >= 25, refused
    # And no action took effect on US01's records.
    us_item = world.records["exception_queue.exceptionitem"]["us"]
    us_item.refresh_from_db()
    assert us_item.state == ExceptionState.OPEN
    assert not Decision.objects.filter(item=us_item).exclude(pk=world.records["exception_queue.decision"]["us"].pk)
    assert not Decision.objects.filter(message=world.records["sync.message"]["us"], item__isnull=True).exists()


def test_no_list_route_shows_another_entitys_records_whatever_the_filter(world, uk_session, uk_key_client):
    us_message = world.records["sync.message"]["us"]
    probes = [
        ("legal_entity", "US01"),
        ("legal_entity__id__exact", str(world.us.pk)),
        ("correlation_id", us_message.correlation_id),
        ("q", us_message.correlation_id),
        ("external_id", us_message.canonical_id),
        ("message", str(us_message.pk)),
    ]
    problems: list[str] = []
    walked = 0
    for route in routes():
        if route.parameters or route.template.startswith(SKIPPED_PREFIXES) or route.template in SKIPPED_ROUTES:
            continue
        url = route.url()
        clients = [("session", uk_session)] + ([("key", uk_key_client)] if route.is_api else [])
        for who, client in clients:
            for name, value in [("", ""), *(probes if _probed(route) else [])]:
                answer = client.get(f"{url}?{name}={value}" if name else url)
                walked += 1
                if answer.status_code >= 500:
                    problems.append(f"{who} {url}?{name}: {answer.status_code}")
                    continue
                body = b"".join(answer.streaming_content) if answer.streaming else answer.content
                # The page may echo the query itself (a search box): only the records' own fields count.
                text = body.decode(errors="replace").replace(value, "").lower() if value else body.decode().lower()
                if MARK in text:
                    problems.append(f"{who} GET {url}?{name}={value}: shows another entity's record")
    assert problems == [], "\n".join(problems)
    assert walked > 200


# --- the finance user's own screens --------------------------------------------------------------------------


@pytest.fixture
def uk_finance(world: World, make_role_user) -> Client:
    user = make_role_user("finance_approver", username="uk-finance")
    # A finance lead: also reads the KPIs and the audit log, so every screen below is checked for one user.
    user.user_permissions.add(
        Permission.objects.get(codename="view_kpis"), Permission.objects.get(codename="view_auditevent")
    )
    scope = user.legal_entity_scope
    scope.all_entities = False
    scope.save()
    scope.legal_entities.set([world.uk])
    client = Client()
    client.force_login(user)
    return client


def test_a_uk_finance_user_sees_only_uk_items_in_the_queue_the_api_and_the_trace(world, uk_finance):
    queue = uk_finance.get("/admin/exception_queue/exceptionitem/").content.decode()
    api = uk_finance.get("/api/v1/exception-items/").json()
    filtered = uk_finance.get("/api/v1/exception-items/?legal_entity=US01").json()
    trace = uk_finance.get("/admin/trace/?q=us01-zzsecret-corr").content.decode()
    own_trace = uk_finance.get("/admin/trace/?q=uk01-visible-corr").content.decode()

    assert "uk01-visible reason" in queue and MARK not in queue.replace("us01-zzsecret-corr", "")
    assert [row["reason"] for row in api["results"]] == ["uk01-visible reason"]
    assert filtered["results"] == []
    assert "uk01-visible refused" in own_trace
    assert MARK not in trace.replace("us01-zzsecret-corr", "")


def test_a_uk_finance_user_cannot_decide_or_replay_us_work(world, uk_finance, make_role_user):
    us_item = world.records["exception_queue.exceptionitem"]["us"]
    us_message = world.records["sync.message"]["us"]
    reject = uk_finance.post(
        f"/api/v1/exception-items/{us_item.pk}/reject/", {"reason": "not mine"}, content_type="application/json"
    )
    # replaying a message is the integration admins' (finance is refused by role first): a UK01 admin then
    uk_admin = make_role_user("integration_admin", username="uk-admin")
    uk_admin.legal_entity_scope.all_entities = False
    uk_admin.legal_entity_scope.save()
    uk_admin.legal_entity_scope.legal_entities.set([world.uk])
    admin_client = Client()
    admin_client.force_login(uk_admin)
    replay = admin_client.post(
        f"/api/v1/messages/{us_message.pk}/replay/", {"reason": "not mine"}, content_type="application/json"
    )
    admin_replay = admin_client.post(
        "/admin/sync/message/", {"action": "replay_messages", "_selected_action": [us_message.pk]}
    )
    bulk = uk_finance.post(
        "/api/v1/exception-items/bulk-replay/",
        {"reason": "all of them", "legal_entity": "US01"},
        content_type="application/json",
    )
    page_action = uk_finance.post(
        f"/admin/exception_queue/exceptionitem/{us_item.pk}/act/", {"action": "reject", "reason": "not mine"}
    )
    admin_bulk = uk_finance.post(
        "/admin/exception_queue/exceptionitem/",
        {"action": "bulk_reject", "_selected_action": [us_item.pk], "confirm": "yes", "reason": "not mine"},
    )

    assert (reject.status_code, replay.status_code, page_action.status_code) == (404, 404, 404)
    assert bulk.status_code == 202 and bulk.json() == {"replayed": 0}
    assert admin_bulk.status_code in (200, 302) and admin_replay.status_code in (200, 302)
    assert not Decision.objects.filter(message=us_message, action=DecisionAction.REPLAY, item__isnull=True).exists()
    us_message.refresh_from_db()
    assert us_message.status == MessageStatus.FAILED
    us_item.refresh_from_db()
    assert us_item.state == ExceptionState.OPEN
    assert Decision.objects.filter(item=us_item).count() == 1  # the fixture's own


def test_the_kpis_count_only_the_uk_finance_users_entity(world, uk_finance, make_role_user, settings):
    settings.HUB_KPI_CACHE_SECONDS = 0  # figures computed for this test, not reused from another
    everyone = Client()
    everyone.force_login(make_role_user("superuser", username="root"))
    mine = uk_finance.get("/api/v1/kpis/?range=7d").json()
    all_of_it = everyone.get("/api/v1/kpis/?range=7d").json()
    page = uk_finance.get("/admin/insights/kpidashboard/?range=7d")
    assert page.status_code == 200, page.content[:300]

    # three open items exist (UK01, US01, unknown entity): the UK user's figures count their one
    assert all_of_it["backlog"]["items_held"] == 3
    assert mine["backlog"]["items_held"] == 1
    assert mine["exception_rate"]["items"] == 1 and all_of_it["exception_rate"]["items"] == 3
    attempts = {row["system"]: row["attempts"] for row in mine["delivery_success"]}
    assert set(attempts) == {world.records["sync.delivery"]["uk"].target_system.name}
    assert page.status_code == 200 and page.context["kpis"]["backlog"]["items_held"] == 1


def test_the_audit_csv_holds_only_the_uk_finance_users_entity(world, make_role_user):
    auditor = make_role_user("auditor", username="uk-auditor")
    auditor.legal_entity_scope.all_entities = False
    auditor.legal_entity_scope.save()
    auditor.legal_entity_scope.legal_entities.set([world.uk])
    client = Client()
    client.force_login(auditor)

    export = client.get("/api/v1/audit-events/export/")
    csv_text = b"".join(export.streaming_content).decode()
    admin_export = client.post(
        "/admin/integrationhub/auditevent/",
        {"action": "export_csv", "select_across": "1", "index": "0", "_selected_action": [0]},
    )
    admin_csv = b"".join(admin_export.streaming_content).decode()

    assert "uk01-visible audited" in csv_text and MARK not in csv_text
    assert "uk01-visible audited" in admin_csv and MARK not in admin_csv
    assert AuditEvent.objects.filter(summary__contains=MARK).exists()


# --- what a scope grants -------------------------------------------------------------------------------------


def test_a_scope_with_no_entities_grants_nothing_and_all_entities_includes_the_unknown(world):
    empty, everything = Client(), Client()
    empty.force_login(_user_scoped_to("nothing", permissions=True))
    wide = _user_scoped_to("wide")
    wide.legal_entity_scope.all_entities = True
    wide.legal_entity_scope.save()
    everything.force_login(wide)

    assert empty.get("/api/v1/exception-items/").json()["results"] == []
    assert empty.get("/api/v1/messages/").json()["results"] == []
    reasons = {row["reason"] for row in everything.get("/api/v1/exception-items/").json()["results"]}
    assert reasons == {"uk01-visible reason", f"us01-{MARK} reason", f"unknown-entity {MARK}"}


def test_a_key_with_neither_an_entity_nor_all_entities_reads_nothing(world, make_role_user):
    owner = make_role_user("integration_admin", username="admin-owner")
    bare = api_key_create(name="bare", owner=owner, scopes=["exceptions:read", "messages:read"])
    wide = api_key_create(name="wide", owner=owner, scopes=["exceptions:read"], all_entities=True, created_by=owner)

    bare_client = Client(HTTP_AUTHORIZATION=f"Api-Key {bare.key}")
    wide_client = Client(HTTP_AUTHORIZATION=f"Api-Key {wide.key}")

    assert bare_client.get("/api/v1/exception-items/").json()["results"] == []
    assert bare_client.get("/api/v1/messages/").json()["results"] == []
    assert len(wide_client.get("/api/v1/exception-items/").json()["results"]) == 3
    granted = AuditEvent.objects.get(action=AuditAction.ALL_ENTITIES_GRANTED, object_id=str(wide.api_key.pk))
    assert granted.actor_username == "admin-owner"
