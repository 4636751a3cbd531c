"""The Tryton connector's contract, milestone-invoice and expense records, against a real Tryton 8.2.

Each legal entity has its own Tryton company (tryton/setup_companies.py); these tests work in the UK one, which
books in GBP, through the non-admin `hub` user.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from connectors.choices import SystemRole
from connectors.http import TerminalConnectorError
from connectors.models import ConnectedSystem
from connectors.tests.tryton_fixtures import *  # noqa: F403
from connectors.tests.tryton_fixtures import TrytonServer
from connectors.tryton import TrytonConnector, sessions_clear

pytestmark = pytest.mark.tryton


@pytest.fixture
def uk(tryton_server: TrytonServer):
    """A connector of the UK legal entity's company (GBP), logged in as the `hub` user."""
    company = tryton_server.ids["companies"]["UK01"]
    system = ConnectedSystem(
        name="Tryton UK",
        slug=f"tryton-uk-{uuid.uuid4().hex[:6]}",
        role=SystemRole.ERP,
        connector_type="tryton_erp",
        base_url=tryton_server.url,
        settings={
            "database": tryton_server.database,
            "company_id": company["company"],
            "product_id": company["product"],
            "payment_term_id": company["payment_term"],
            "payment_method_id": company["payment_method"],
            "timeout_seconds": 30,
        },
    )
    connector = TrytonConnector(
        system=system, credentials={"user": tryton_server.hub_login, "password": tryton_server.hub_password}
    )
    yield connector, company
    sessions_clear()


def _contract(connector: TrytonConnector, **extra):
    run = uuid.uuid4().hex[:8]
    party = connector.upsert("client", {"name": f"Fabrikam UK {run}", "city": "Leeds"}, f"client:erp-uk:ACC-{run}")
    payload = {
        "name": f"UK01-P{run} Fabrikam - Data platform",
        "client_id": int(party.external_id),
        "code": f"UK01-P{run}",
        "contract_number": f"CTR-{run}",
        "opportunity_ref": f"OPP-{run}",
        "legal_entity": "UK01",
        "billing_type": "milestone",
        "contract_value": "76000.00",
        "currency": "GBP",
        "starts_on": "2026-01-01",
        "ends_on": "2027-06-30",
        "rate_card": "UK01 standard rates",
        "rates": [{"role": "Partner", "bill_rate": "520.00"}, {"role": "Manager", "bill_rate": "340.00"}],
        **extra,
    }
    return run, party, connector.upsert("project", payload, f"project:erp-uk:{run}")


def test_the_project_carries_the_contract_in_the_entity_company(uk):
    # given the UK company's connector
    connector, company = uk
    # when a contract's project is created, and sent again with the same key
    run, _, created = _contract(connector)
    again = connector.upsert(
        "project",
        {"name": f"UK01-P{run} Fabrikam - Data platform", "client_id": created.payload["id"], "currency": "GBP"}
        | {"code": f"UK01-P{run}"},
        f"project:erp-uk:{run}",
    )
    # then one project exists, in the UK company, with the contract's fields where Tryton has them
    assert created.created and not again.created and again.external_id == created.external_id
    project = connector.get("project", created.external_id)
    assert project["company"] == company["company"]
    assert project["currency"] == "GBP"
    assert (project["starts_on"], project["ends_on"]) == ("2026-01-01", "2027-06-30")
    assert project["project_invoice_method"] == "manual"  # milestones are invoiced by the hub, not from time
    # and the contract lines Tryton has no field for
    assert project["contract_value"] == "76000.00" and project["billing_type"] == "milestone"
    assert (project["code"], project["contract_number"], project["opportunity_ref"]) == (
        f"UK01-P{run}",
        f"CTR-{run}",
        f"OPP-{run}",
    )
    assert project["legal_entity"] == "UK01" and project["rate_card"] == "UK01 standard rates"
    # and one task per rate card role, billed at the role's rate
    tasks = connector.client.read("project.work", project["children"], ["name", "list_price"])
    assert {t["name"]: t["list_price"] for t in tasks} == {"Partner": Decimal("520.00"), "Manager": Decimal("340.00")}
    # and the project is found by its code
    assert connector.contract_find(f"UK01-P{run}")["id"] == int(created.external_id)
    assert connector.contract_find(f"UK01-P{run}X") is None


def test_a_contract_in_another_currency_than_the_company_is_refused(uk):
    # given the UK company (GBP)
    connector, _ = uk
    before = connector.client.execute("project.work", "search_count", [("company", "=", connector._company())])
    # when a EUR contract is sent to it, then it is refused naming both currencies, and nothing is created
    with pytest.raises(TerminalConnectorError, match=r"EUR but Tryton company \d+ books in GBP"):
        _contract(connector, currency="EUR")
    after = connector.client.execute("project.work", "search_count", [("company", "=", connector._company())])
    assert after == before


def test_a_milestone_invoice_is_created_once_and_posted_when_asked(uk):
    # given a project
    connector, _ = uk
    run, party, project = _contract(connector)
    payload = {
        "project_id": project.external_id,
        "amount": "12000.00",
        "currency": "GBP",
        "description": "Milestone: Design signed off",
        "milestone_ref": f"psa:milestone:{run}",
        "date": "2026-12-01",
    }
    # when the billing event is sent as a draft, then again with post
    draft = connector.upsert("billing_event", payload, f"hub-billing-{run}")
    posted = connector.upsert("billing_event", {**payload, "post": True}, f"hub-billing-{run}")
    # then one customer invoice exists, of the project's party, first in draft, then posted with a number
    assert draft.created and draft.payload["state"] == "draft" and draft.payload["total_amount"] == "12000.00"
    assert not posted.created and posted.external_id == draft.external_id and posted.payload["state"] == "posted"
    (invoice,) = connector.client.read("account.invoice", [int(draft.external_id)], ["type", "party", "number"])
    assert invoice["type"] == "out" and invoice["party"] == int(party.external_id) and invoice["number"]
    assert connector.billing_events(project.external_id) == [
        {
            "id": int(draft.external_id),
            "number": invoice["number"],
            "state": "posted",
            "amount": "12000.00",
            "milestone_ref": f"psa:milestone:{run}",
        }
    ]


def test_an_expense_posts_as_a_supplier_invoice_of_the_employee_once_and_is_withdrawn(uk):
    # given a project and the UK company's employee
    connector, company = uk
    run, _, project = _contract(connector)
    (employee,) = connector.client.read("company.employee", [company["employee"]], ["party"])
    expense = {
        "project_id": project.external_id,
        "employee_id": company["employee"],
        "date": "2026-12-03",
        "amount": "85.40",
        "currency": "GBP",
        "description": "Train London - Leeds",
        "cost_code": "TRAVEL",
        "source_ref": f"psa:expense:{run}",
        "kind": "expense",
    }
    # when the approved expense is posted twice in a batch and once alone
    first, repeated = connector.upsert_batch("expense", [(expense, f"exp-{run}"), (expense, f"exp-{run}")])
    alone = connector.upsert("expense", expense, f"exp-{run}")
    # then one draft supplier invoice of the employee's party holds it, on the company's expense account
    assert first.created and not repeated.created and not alone.created
    assert first.external_id == repeated.external_id == alone.external_id
    (invoice,) = connector.client.read(
        "account.invoice", [int(first.external_id)], ["type", "state", "party", "total_amount", "lines", "company"]
    )
    assert (invoice["type"], invoice["state"], invoice["party"]) == ("in", "draft", employee["party"])
    assert invoice["total_amount"] == Decimal("85.40") and invoice["company"] == company["company"]
    (line,) = connector.client.read("account.invoice.line", invoice["lines"], ["account", "description"])
    assert line["account"] == company["accounts"]["expense"] and line["description"] == "Train London - Leeds"
    # when it is corrected, then the same invoice holds the new amount
    connector.update("expense", first.external_id, {**expense, "amount": "91.00"})
    (invoice,) = connector.client.read("account.invoice", [int(first.external_id)], ["total_amount"])
    assert invoice["total_amount"] == Decimal("91.00")
    # when it is withdrawn, then the draft is gone and a second withdrawal is a no-op
    connector.void("expense", first.external_id)
    connector.void("expense", first.external_id)
    assert connector.find("expense", f"exp-{run}") is None
    # and an expense in another currency is refused per item, storing nothing
    (refused,) = connector.upsert_batch("expense", [({**expense, "currency": "EUR"}, f"exp-eur-{run}")])
    assert isinstance(refused, TerminalConnectorError) and "EUR" in str(refused.detail)
    assert connector.find("expense", f"exp-eur-{run}") is None
