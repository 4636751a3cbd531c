"""One Tryton company per legal entity of the hub, added to a database setup_accounting.py prepared.

Run by tryton/setup.sh (and tryton/start.sh for a working database built before this step existed) with the
Tryton venv's Python, against a database no server is serving:

    .tryton/venv/bin/python tryton/setup_companies.py DATABASE CONFIG IDS_JSON_IN IDS_JSON_OUT

Additive and idempotent: a company, account, fiscal year, employee or payment method that exists (found by
name) is reused, never replaced, so running it again on a database that already has the companies changes
nothing. setup_accounting.py's company ("Hub Consulting LLC", USD) serves US01; this script adds the UK and DE
entities' companies in their own currencies, each with a chart of accounts, fiscal years covering today and next
year (with monthly periods and move and invoice sequences), the consulting product's list price, an employee
with an hourly cost price, a "Cash" payment method, and access for the hub's user and admin. The ids of every
entity's company land under "companies" in IDS_JSON_OUT (IDS_JSON_IN's content is kept).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from proteus import Model, Wizard
from proteus import config as proteus_config

# legal entity code, company name, currency code, currency name, symbol, hourly list price, employee cost price
ENTITIES = (
    ("UK01", "Northwind Advisory Ltd", "GBP", "Pound Sterling", "£", Decimal("195"), Decimal("78")),
    ("DE01", "Northwind Advisory GmbH", "EUR", "Euro", "€", Decimal("215"), Decimal("85")),
)
# The company setup_accounting.py made serves this entity (same currency, USD).
FIRST_COMPANY_ENTITY = "US01"
HUB_LOGIN = "hub"


def _find(model: str, domain: list) -> Any:
    found = Model.get(model).find(domain, limit=1)
    return found[0] if found else None


def _currency(code: str, name: str, symbol: str) -> Any:
    currency = _find("currency.currency", [("code", "=", code)])
    if currency is None:
        currency = Model.get("currency.currency")(name=name, symbol=symbol, code=code, rounding=Decimal("0.01"))
        currency.save()
    if not currency.rates:
        # Each company books in its own currency; a rate is only needed to convert, and 1.0 keeps that explicit.
        currency.rates.new(date=dt.date(1970, 1, 1), rate=Decimal("1.0"))
        currency.save()
    return currency


def _switch_company(cfg: Any, company: Any) -> None:
    """Make `company` the admin's current company (wizards such as the chart of accounts work in the user's
    company, and company-dependent values are written for the context's one), with the admin's employee there."""
    User = Model.get("res.user")
    admin = _find("res.user", [("login", "=", "admin")])
    if company.id not in [c.id for c in admin.companies]:
        admin.companies.append(Model.get("company.company")(company.id))
        admin.save()
    employee = next((e.id for e in admin.employees if e.company.id == company.id), None)
    # Plain writes, no on_change: the current employee is validated against the current company, so the
    # company changes first (without an employee), then the employee of that company is set.
    context = {**cfg.context, "company": company.id, "companies": [company.id], "employee": None}
    User._proxy.write([admin.id], {"company": company.id, "employee": None}, context)
    if employee is not None:
        User._proxy.write([admin.id], {"employee": employee}, context)
    cfg._context = User.get_preferences(True, {})


def _chart(company: Any, cfg: Any) -> dict[str, Any]:
    Account = Model.get("account.account")
    ModelData = Model.get("ir.model.data")
    if not Account.find([("company", "=", company.id)], limit=1):
        chart = Wizard("account.create_chart")
        chart.execute("account")
        chart.form.account_template = Model.get("account.account.template")(
            ModelData.get_id("account.account_template_root_en", cfg.context)
        )
        chart.form.company = company
        chart.execute("create_account")
        # The defaults must be accounts that take a party (the properties' domain).
        receivable, payable = (
            Account.find(
                [(f"type.{kind}", "=", True), ("party_required", "=", True), ("company", "=", company.id)], limit=1
            )[0]
            for kind in ("receivable", "payable")
        )
        chart.form.account_receivable = receivable
        chart.form.account_payable = payable
        chart.execute("create_properties")
    accounts: dict[str, Any] = {}
    for kind in ("receivable", "payable", "revenue", "expense"):
        domain = [(f"type.{kind}", "=", True), ("company", "=", company.id), ("closed", "!=", True)]
        if kind in ("receivable", "payable"):
            domain.append(("party_required", "=", True))
        accounts[kind] = Account.find(domain, limit=1)[0]
    accounts["cash"] = Account.find([("company", "=", company.id), ("code", "=", "1.1.1")], limit=1)[0]
    return accounts


def _fiscal_years(company: Any, today: dt.date) -> list[Any]:
    FiscalYear = Model.get("account.fiscalyear")
    SequenceStrict = Model.get("ir.sequence.strict")
    move_type = _find("ir.sequence.type", [("name", "=", "Account Move")])
    invoice_type = _find("ir.sequence.type", [("name", "=", "Invoice")])
    years = []
    for year in (today.year, today.year + 1):
        name = f"{year} {company.party.name}"
        found = FiscalYear.find([("company", "=", company.id), ("start_date", "=", dt.date(year, 1, 1))], limit=1)
        if found:
            years.append(found[0])
            continue
        fiscal_year = FiscalYear(name=name, company=company)
        fiscal_year.start_date = dt.date(year, 1, 1)
        fiscal_year.end_date = dt.date(year, 12, 31)
        move_sequence = SequenceStrict(name=f"Moves {name}", sequence_type=move_type, company=company)
        move_sequence.save()
        fiscal_year.move_sequence = move_sequence
        invoice_sequence = SequenceStrict(name=f"Invoices {name}", sequence_type=invoice_type, company=company)
        invoice_sequence.save()
        (sequences,) = fiscal_year.invoice_sequences
        sequences.out_invoice_sequence = invoice_sequence
        sequences.in_invoice_sequence = invoice_sequence
        sequences.out_credit_note_sequence = invoice_sequence
        sequences.in_credit_note_sequence = invoice_sequence
        fiscal_year.save()
        fiscal_year.click("create_period")
        years.append(fiscal_year)
    return years


def _company(entity: tuple, cfg: Any, base_ids: dict[str, Any], today: dt.date) -> dict[str, Any]:
    code, name, currency_code, currency_name, symbol, list_price, cost_price = entity
    currency = _currency(currency_code, currency_name, symbol)
    Party = Model.get("party.party")
    company = _find("company.company", [("party.name", "=", name)])
    if company is None:
        party = _find("party.party", [("name", "=", name)]) or Party(name=name)
        party.save()
        company = Model.get("company.company")(party=party, currency=currency)
        company.save()
    _switch_company(cfg, company)
    accounts = _chart(company, cfg)
    years = _fiscal_years(company, today)

    # Company-dependent values of the shared category and product: this company's accounts and price.
    category = Model.get("product.category")(base_ids["product_category"])
    if category.account_revenue is None or category.account_revenue.company.id != company.id:
        category.account_revenue = accounts["revenue"]
        category.account_expense = accounts["expense"]
        category.save()
    template = Model.get("product.template")(base_ids["product_template"])
    if template.list_price != list_price:
        template.list_price = list_price
        template.save()

    employee_name = f"Hub Consultant ({code})"
    employee = _find("company.employee", [("party.name", "=", employee_name), ("company", "=", company.id)])
    if employee is None:
        party = Party(name=employee_name)
        party.save()
        employee = Model.get("company.employee")(party=party, company=company)
        employee.cost_prices.new(cost_price=cost_price)
        employee.save()

    method = _find("account.invoice.payment.method", [("company", "=", company.id), ("name", "=", "Cash")])
    if method is None:
        journal = _find("account.journal", [("type", "=", "cash")])
        method = Model.get("account.invoice.payment.method")(name="Cash", journal=journal, company=company)
        method.credit_account = accounts["cash"]
        method.debit_account = accounts["cash"]
        method.save()

    hub = _find("res.user", [("login", "=", HUB_LOGIN)])
    changed = False
    if company.id not in [c.id for c in hub.companies]:
        hub.companies.append(Model.get("company.company")(company.id))
        changed = True
    if employee.id not in [e.id for e in hub.employees]:
        hub.employees.append(Model.get("company.employee")(employee.id))
        changed = True
    if changed:
        hub.save()
    return {
        "company": company.id,
        "company_name": name,
        "currency": currency.id,
        "currency_code": currency_code,
        "accounts": {kind: account.id for kind, account in accounts.items()},
        "fiscal_years": [year.id for year in years],
        "fiscal_coverage": [str(years[0].start_date), str(years[-1].end_date)],
        "employee": employee.id,
        "payment_method": method.id,
        "payment_term": base_ids["payment_term"],
        "product": base_ids["product"],
        "list_price": str(list_price),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    database, config_file, ids_in, ids_out = argv[1:]
    base_ids = json.loads(Path(ids_in).read_text())
    cfg = proteus_config.set_trytond(database=database, config_file=config_file)
    today = dt.date.today()
    first = Model.get("company.company")(base_ids["company"])
    companies: dict[str, Any] = {
        FIRST_COMPANY_ENTITY: {
            "company": first.id,
            "company_name": first.party.name,
            "currency": first.currency.id,
            "currency_code": first.currency.code,
            "accounts": base_ids["accounts"],
            "fiscal_years": base_ids["fiscal_years"],
            "fiscal_coverage": base_ids["fiscal_coverage"],
            "employee": base_ids["employee"],
            "payment_method": base_ids["payment_method"],
            "payment_term": base_ids["payment_term"],
            "product": base_ids["product"],
            "list_price": base_ids["list_price"],
        }
    }
    for entity in ENTITIES:
        companies[entity[0]] = _company(entity, cfg, base_ids, today)
    # Leave the admin in the first company, as setup_accounting.py did.
    _switch_company(cfg, first)
    ids = {**base_ids, "companies": companies}
    text = json.dumps(ids, indent=2, sort_keys=True)
    Path(ids_out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
