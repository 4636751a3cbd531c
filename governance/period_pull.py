"""The period pull: each ERP's accounting periods read through the transport into the period calendar.

A scheduled job (beat entry "governance: pull accounting period states from the ERPs", every 15 minutes) calls
every active ERP whose connector reads periods. The call goes through the transport like any other (pause,
circuit, rate budget, one attempt row); what the periods change in the calendar is
`governance.services.accounting_periods_apply`. This module is the only part of governance that calls out, kept
apart so the configuration records (and the exception queue that reads them) never import the engine.
"""

from __future__ import annotations

import logging
from operator import methodcaller
from typing import Any

from connectors.choices import SystemRole, SystemState
from connectors.models import ConnectedSystem
from connectors.registry import registry
from governance.services import PeriodPullResult, accounting_periods_apply
from integrationhub.errors import HubError
from sync.transport import connector_call

logger = logging.getLogger(__name__)

PERIOD_PULL_OPERATION = "accounting_periods"
PERIOD_PULL_ENTITY = "accounting_period"


def period_pull_systems() -> list[ConnectedSystem]:
    """The ERP systems not paused whose connector reads accounting periods (Tryton, the sandbox ERP)."""
    systems = []
    for system in ConnectedSystem.objects.filter(role=SystemRole.ERP).exclude(state=SystemState.PAUSED).order_by("pk"):
        try:
            connector_class = registry.get(system.connector_type)
        except HubError:
            continue
        if callable(getattr(connector_class, PERIOD_PULL_OPERATION, None)):
            systems.append(system)
    return systems


def accounting_periods_pull(*, system: Any) -> PeriodPullResult:
    """Read `system`'s accounting periods through the transport (one attempt row; the system's pause, circuit
    and rate budget apply) and bring the period calendar in step (`accounting_periods_apply`). A failed call
    raises its error, recorded on the attempt row."""
    periods = connector_call(
        system,
        PERIOD_PULL_OPERATION,
        methodcaller(PERIOD_PULL_OPERATION),
        entity=PERIOD_PULL_ENTITY,
        context={"step": "period_pull"},
    )
    return accounting_periods_apply(system=system, periods=periods)


def accounting_periods_pull_all() -> list[PeriodPullResult]:
    """The scheduled period pull: every ERP that reads periods, one after the other; an ERP that fails is
    reported (its attempt row says why) while the others are still read."""
    results = []
    for system in period_pull_systems():
        try:
            results.append(accounting_periods_pull(system=system))
        except HubError as exc:
            logger.warning("period pull failed", extra={"system": system.slug, "error": exc.detail})
            results.append(PeriodPullResult(system=system.slug, error=str(exc.detail)[:2000]))
    return results
