"""The five workflows on the demo firm: what `make run` seeds so a newcomer sees them work within a minute.

Runs after the demo firm exists (`integrationhub.demo.demo_data_load`). Each flow's own module configures
its routes, mappings, policies and schedules and makes sandbox records:
- billing (milestones and invoices): two milestones bill, one waits for finance, invoices reach the CRM and
  analytics;
- approved time and expense: entries post to the ERP, three wait in the queue as policy exceptions;
- opportunity to project and client master: opportunities won in the CRM activate, one is held at the
  workspace step, one waits on a duplicate-client suspect.
Every seeder is idempotent, so running the demo set-up again doubles nothing.
"""

from __future__ import annotations


def workflows_demo_seed(*, base_url: str | None = None) -> list[str]:
    """Seed the five workflows on the demo firm (its sandbox systems at `base_url`, the hub's public address by
    default); the lines say what each did."""
    from workflows.demo_billing import seed_billing_demo
    from workflows.demo_opportunity import seed_opportunity_and_client_demo
    from workflows.demo_time_expense import seed_time_expense_demo
    from workflows.demo_uk import seed_uk_tryton_demo

    billing = seed_billing_demo()
    lines = [
        f"milestone billing: {len(billing.milestones)} demo milestones on ERP project {billing.erp_project_id}",
        f"invoice status: routes {', '.join(billing.invoice_routes)}",
    ]
    lines += seed_time_expense_demo(base_url=base_url).summary
    # Last: winning the opportunities sends the CRM's closed-won webhooks, which the worker picks up at start.
    lines += seed_opportunity_and_client_demo()
    # The UK entity books in the local Tryton (when installed): its opportunity, then its time, expense and
    # milestone once the activation created the project there.
    lines += seed_uk_tryton_demo()
    return lines
