"""A time and expense world (sandbox PSA and ERP over real HTTP) driven without a worker: the tests play beat and
the worker (pull, process, send) so each step happens when they say, and then reconcile."""

from __future__ import annotations

import datetime

from reconciliation.models import ReconciliationRun
from reconciliation.services import period_of, reconciliation_run_execute, reconciliation_run_start
from sandbox import services as sandbox_services
from sync.choices import MessageStatus
from sync.models import Message
from sync.pipeline import message_process
from sync.polling import poll_run
from workflows.tests.time_expense_fixtures import TODAY, TimeExpenseWorld
from workflows.time_expense import time_expense_postings_send

PERIOD = period_of(TODAY)


def pull_and_process(world: TimeExpenseWorld) -> None:
    """What beat and a worker do first: pull the PSA's changed entries and run each new message through the
    pipeline (its ERP lines then wait in the ledger)."""
    for entity in ("time_entry", "expense"):
        poll_run(system=world.psa, entity=entity)
    for message_id in Message.objects.filter(system=world.psa, status=MessageStatus.RECEIVED).values_list(
        "pk", flat=True
    ):
        message_process(message_id=message_id)


def pull_and_post(world: TimeExpenseWorld) -> None:
    """Pull, process, and send the ERP lines that are due."""
    pull_and_process(world)
    time_expense_postings_send(target_system_id=world.erp.pk)


def reconcile(world: TimeExpenseWorld, *, user=None, period: str = PERIOD) -> ReconciliationRun:
    """Queue a run (as the schedule, or as `user`) and carry it out here, as the worker would."""
    trigger = "manual" if user is not None else "schedule"
    run = reconciliation_run_start(legal_entity=world.entity, period=period, trigger=trigger, user=user)
    return reconciliation_run_execute(run_id=run.pk)


def yesterday_or_today() -> datetime.date:
    """A day of this period before today when there is one (entries dated in the period, never in the future)."""
    return TODAY - datetime.timedelta(days=1) if TODAY.day > 1 else TODAY


def faults_set(system: str, **values: object) -> None:
    """Switch a sandbox system's fault profile (no values: back to normal)."""
    profile = sandbox_services.fault_profile_ensure(system=system)
    profile.enabled = bool(values)
    for name, value in values.items():
        setattr(profile, name, value)
    sandbox_services.fault_profile_save(profile=profile, reason="test")
    sandbox_services.fault_profile_cache_clear()
