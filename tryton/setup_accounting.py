"""Minimal accounting for the hub's Tryton template database, written after Tryton's own scenario tests.

Run by tryton/setup.sh with the Tryton venv's Python (proteus talks to trytond in-process, no server):

    .tryton/venv/bin/python tryton/setup_accounting.py DATABASE CONFIG HUB_PASSWORD_FILE IDS_JSON

It creates the USD currency, the company, a chart of accounts, fiscal years covering today (with move
and invoice sequences and monthly periods), the "Direct" payment term, a service product "Consulting
hour" (UoM hour, list price 100), an employee with an hourly cost price, the "Cash" payment method, an
example client and the non-admin user `hub`. The ids it created are written as JSON to IDS_JSON and
printed. It expects a freshly initialised database: setup.sh rebuilds rather than patches.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from decimal import Decimal
from pathlib import Path

from proteus import Model, Wizard
from proteus import config as proteus_config

# The groups the hub's user needs for the whole flow, including posting and paying invoices
# (measured in shared/reference/TRYTON.md). The admin user skips access checks, the hub user must not.
HUB_GROUPS = (
    "Project Administration",
    "Project Invoice",
    "Timesheet Administration",
    "Accounting",
    "Party Administration",
)
HUB_LOGIN = "hub"
PRODUCT_NAME = "Consulting hour"
LIST_PRICE = Decimal("100")
EMPLOYEE_COST_PRICE = Decimal("40")


def _one(model: str, domain: list) -> object:
    (record,) = Model.get(model).find(domain, limit=1)
    return record


def create_currency() -> object:
    Currency = Model.get("currency.currency")
    found = Currency.find([("code", "=", "USD")])
    if found:
        currency = found[0]
    else:
        currency = Currency(name="U.S. Dollar", symbol="$", code="USD", rounding=Decimal("0.01"))
        currency.save()
    if not currency.rates:
        currency.rates.new(date=dt.date(1970, 1, 1), rate=Decimal("1.0"))
        currency.save()
    return currency


def create_company(currency: object, cfg: object) -> object:
    Party = Model.get("party.party")
    User = Model.get("res.user")
    wizard = Wizard("company.company.config")
    wizard.execute("company")
    party = Party(name="Hub Consulting LLC")
    party.save()
    wizard.form.party = party
    wizard.form.currency = currency
    wizard.execute("add")
    # The wizard attached the company to every user; the context must follow for company-bound records.
    cfg._context = User.get_preferences(True, {})
    (company,) = Model.get("company.company").find([])
    return company


def create_chart(company: object, cfg: object) -> dict[str, object]:
    AccountTemplate = Model.get("account.account.template")
    ModelData = Model.get("ir.model.data")
    Account = Model.get("account.account")

    chart = Wizard("account.create_chart")
    chart.execute("account")
    chart.form.account_template = AccountTemplate(ModelData.get_id("account.account_template_root_en", cfg.context))
    chart.form.company = company
    chart.execute("create_account")

    accounts: dict[str, object] = {}
    for kind in ("receivable", "payable", "revenue", "expense"):
        accounts[kind] = Account.find(
            [(f"type.{kind}", "=", True), ("company", "=", company.id), ("closed", "!=", True)], limit=1
        )[0]
    accounts["cash"] = Account.find([("company", "=", company.id), ("code", "=", "1.1.1")], limit=1)[0]

    chart.form.account_receivable = accounts["receivable"]
    chart.form.account_payable = accounts["payable"]
    if hasattr(chart.form, "category_account_expense"):
        chart.form.category_account_expense = accounts["expense"]
    if hasattr(chart.form, "category_account_revenue"):
        chart.form.category_account_revenue = accounts["revenue"]
    chart.execute("create_properties")
    return accounts


def create_fiscal_years(company: object, today: dt.date) -> list[object]:
    """This calendar year and the next, so a template built in December still posts in January."""
    FiscalYear = Model.get("account.fiscalyear")
    SequenceStrict = Model.get("ir.sequence.strict")
    SequenceType = Model.get("ir.sequence.type")
    move_type = _one("ir.sequence.type", [("name", "=", "Account Move")])
    (invoice_type,) = SequenceType.find([("name", "=", "Invoice")], limit=1)

    years = []
    for year in (today.year, today.year + 1):
        fiscal_year = FiscalYear(name=str(year), company=company)
        fiscal_year.start_date = dt.date(year, 1, 1)
        fiscal_year.end_date = dt.date(year, 12, 31)
        move_sequence = SequenceStrict(name=f"Moves {year}", sequence_type=move_type, company=company)
        move_sequence.save()
        fiscal_year.move_sequence = move_sequence
        invoice_sequence = SequenceStrict(name=f"Invoices {year}", sequence_type=invoice_type, company=company)
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


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    database, config_file, hub_password_file, ids_path = argv[1:]
    cfg = proteus_config.set_trytond(database=database, config_file=config_file)
    today = dt.date.today()

    Party = Model.get("party.party")
    User = Model.get("res.user")
    Group = Model.get("res.group")

    currency = create_currency()
    company = create_company(currency, cfg)
    accounts = create_chart(company, cfg)
    fiscal_years = create_fiscal_years(company, today)

    PaymentTerm = Model.get("account.invoice.payment_term")
    payment_term = PaymentTerm(name="Direct")
    payment_term.lines.new(type="remainder")
    payment_term.save()

    category = Model.get("product.category")(name="Services", accounting=True)
    category.account_revenue = accounts["revenue"]
    category.account_expense = accounts["expense"]
    category.save()

    hour = _one("product.uom", [("name", "=", "Hour")])
    template = Model.get("product.template")(name=PRODUCT_NAME, type="service", default_uom=hour)
    template.list_price = LIST_PRICE
    template.account_category = category
    template.save()
    (product,) = template.products

    employee_party = Party(name="Hub Consultant")
    employee_party.save()
    employee = Model.get("company.employee")(party=employee_party, company=company)
    employee.cost_prices.new(cost_price=EMPLOYEE_COST_PRICE)
    employee.save()

    customer = Party(name="Example Client", customer_payment_term=payment_term)
    customer.addresses[0].street = "1 Main St"
    customer.addresses[0].city = "Springfield"
    customer.save()

    cash_journal = _one("account.journal", [("type", "=", "cash")])
    payment_method = Model.get("account.invoice.payment.method")(name="Cash", journal=cash_journal)
    payment_method.credit_account = accounts["cash"]
    payment_method.debit_account = accounts["cash"]
    payment_method.save()

    # Both users record time as the same employee: the hub posts approved time on behalf of people
    # the ERP may not know individually; one employee keeps the demo's cost figures predictable.
    admin = _one("res.user", [("login", "=", "admin")])
    admin.employees.append(Model.get("company.employee")(employee.id))
    admin.employee = Model.get("company.employee")(employee.id)
    admin.save()

    hub_password = Path(hub_password_file).read_text().strip()
    hub = User(name="Integration Hub", login=HUB_LOGIN)
    hub.password = hub_password
    for group in Group.find([("name", "in", list(HUB_GROUPS))]):
        hub.groups.append(group)
    hub.companies.append(Model.get("company.company")(company.id))
    hub.company = Model.get("company.company")(company.id)
    hub.employees.append(Model.get("company.employee")(employee.id))
    hub.employee = Model.get("company.employee")(employee.id)
    hub.save()
    missing = set(HUB_GROUPS) - {group.name for group in hub.groups}
    if missing:
        raise SystemExit(f"res.group not found: {sorted(missing)}")

    ids = {
        "database": database,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "currency": currency.id,
        "company": company.id,
        "company_party": company.party.id,
        "accounts": {name: account.id for name, account in accounts.items()},
        "fiscal_years": [fy.id for fy in fiscal_years],
        "fiscal_coverage": [str(fiscal_years[0].start_date), str(fiscal_years[-1].end_date)],
        "payment_term": payment_term.id,
        "product_category": category.id,
        "product_template": template.id,
        "product": product.id,
        "uom_hour": hour.id,
        "list_price": str(LIST_PRICE),
        "employee": employee.id,
        "employee_cost_price": str(EMPLOYEE_COST_PRICE),
        "customer": customer.id,
        "cash_journal": cash_journal.id,
        "payment_method": payment_method.id,
        "admin_user": admin.id,
        "hub_user": hub.id,
        "hub_login": HUB_LOGIN,
        "hub_groups": list(HUB_GROUPS),
    }
    text = json.dumps(ids, indent=2, sort_keys=True)
    Path(ids_path).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
