"""What the billing flow tests share: the demo firm with the billing demo, served by the live server, and
helpers that make contracts and milestones in the sandbox PSA and ERP."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model

from connectors.models import ConnectedSystem
from integrationhub.demo import DEMO_BASE_URL, demo_data_load, demo_users_ensure
from sandbox import selectors as sandbox_selectors
from sandbox.choices import ErpObject, PsaObject, SandboxSystem
from sandbox.services import record_create
from workflows.demo_billing import seed_billing_demo

SLUGS = ("crm", "psa", "erp-us", "erp-de", "analytics")


def billing_world(live_server: Any) -> dict[str, ConnectedSystem]:
    """The demo firm with the billing demo seeded, its sandbox systems served by the live server."""
    demo_data_load()
    demo_users_ensure()
    for system in ConnectedSystem.objects.filter(slug__in=SLUGS):
        system.base_url = system.base_url.replace(DEMO_BASE_URL, live_server.url)
        system.rate_limit_per_second = Decimal("500")
        system.save(update_fields=["base_url", "rate_limit_per_second"])
    seed_billing_demo()
    return {s.slug: s for s in ConnectedSystem.objects.filter(slug__in=SLUGS)}


def user_named(username: str):
    return get_user_model().objects.get(username=username)


def contract_make(code: str, *, billing_type: str = "milestone", value: str = "1000000.00"):
    """A PSA project and its ERP project (the contract) with `code`, for Northwind."""
    psa_client = sandbox_selectors.record_by_idempotency_key(
        system=SandboxSystem.PSA, object_type=PsaObject.CLIENT, key="demo:client:ACC-1001"
    )
    erp_client = sandbox_selectors.record_by_idempotency_key(
        system=SandboxSystem.ERP, object_type=ErpObject.CLIENT, key="demo:client:ACC-1001"
    )
    erp_project, _ = record_create(
        system=SandboxSystem.ERP,
        object_type=ErpObject.PROJECT,
        data={
            "client_id": int(erp_client.external_id),
            "code": code,
            "name": f"Contract {code}",
            "legal_entity": "US01",
            "currency": "USD",
            "status": "active",
            "billing_type": billing_type,
            "contract_value": value,
        },
    )
    psa_project, _ = record_create(
        system=SandboxSystem.PSA,
        object_type=PsaObject.PROJECT,
        data={"client_id": int(psa_client.external_id), "name": f"Contract {code}", "code": code, "is_active": True},
    )
    return psa_project, erp_project


def milestone_make(psa_project, amount: float, *, accepted: bool = True):
    record, _ = record_create(
        system=SandboxSystem.PSA,
        object_type=PsaObject.MILESTONE,
        data={
            "project_id": int(psa_project.external_id),
            "name": f"Milestone of {amount}",
            "amount": amount,
            "currency": "USD",
            "status": "completed",
            "client_accepted": accepted,
            "completed_at": "2026-11-20T09:00:00+00:00",
        },
    )
    return record


def billing_events(business_key: str) -> list:
    return [
        row
        for row in sandbox_selectors.records(system=SandboxSystem.ERP, object_type=ErpObject.BILLING_EVENT)
        if row.data.get("milestone_ref") == business_key
    ]


def wait_for(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError("timed out waiting for the workers")


def runs_driven_by_the_test(monkeypatch: Any) -> list[tuple[Any, ...]]:
    """Keep the flow's tasks from being published, so the test (not a worker that may run in the session)
    carries each run forward by calling the service; returns what would have been published."""
    published: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        "workflows.milestone_billing.enqueue_on_commit", lambda task, *args, **kwargs: published.append(args)
    )
    return published


def deliveries_settled(message_ids: list[int]) -> None:
    """Wait until every delivery of the messages ended (a session worker may be sending some of them)."""
    from sync.choices import DELIVERY_DONE_STATUSES, DeliveryStatus
    from sync.models import Delivery

    ended = {*DELIVERY_DONE_STATUSES, DeliveryStatus.FAILED, DeliveryStatus.DEAD}
    wait_for(lambda: not Delivery.objects.filter(message_id__in=message_ids).exclude(status__in=ended).exists())
