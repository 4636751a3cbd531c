"""The firm's people as employees of every company in the hub's Tryton template database (idempotent).

Run by tryton/setup.sh with the Tryton venv's Python after the template is built (proteus, in-process):

    .tryton/venv/bin/python tryton/setup_employees.py DATABASE CONFIG IDS_JSON "First Last" ...

Each named person gets a party and a company.employee (with the template's hourly cost price) in every
company that does not have them yet, so the hub books each person's time to their own employee (the hub's
resources link a PSA person to one). Their ids are merged into IDS_JSON as
{"employees": {"<company id>": {"<name>": <employee id>}}}. A second run creates nothing.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path

from proteus import Model
from proteus import config as proteus_config


def main(argv: list[str]) -> int:
    if len(argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    database, config_file, ids_path, *names = argv[1:]
    proteus_config.set_trytond(database=database, config_file=config_file)
    ids = json.loads(Path(ids_path).read_text())
    cost_price = Decimal(str(ids.get("employee_cost_price", "40")))
    Party = Model.get("party.party")
    Employee = Model.get("company.employee")
    employees: dict[str, dict[str, int]] = {}
    created = 0
    for company in Model.get("company.company").find([]):
        existing = {employee.party.name: employee.id for employee in Employee.find([("company", "=", company.id)])}
        for name in names:
            if name not in existing:
                party = Party(name=name)
                party.save()
                employee = Employee(party=party, company=company)
                employee.cost_prices.new(cost_price=cost_price)
                employee.save()
                existing[name] = employee.id
                created += 1
        employees[str(company.id)] = {name: existing[name] for name in names}
    ids["employees"] = employees
    Path(ids_path).write_text(json.dumps(ids, indent=2, sort_keys=True) + "\n")
    print(json.dumps({"created": created, "employees": employees}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
